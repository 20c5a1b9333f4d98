"""Standard MIDI Files from the project's note lists, written with pretty_midi.

Each part is written once by pretty_midi. ``all.mid`` is then put together from those files'
track chunks with each part moved to the channel pretty_midi would have given it: the same
bytes pretty_midi writes for all parts at once (a test holds this), for half the work.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Sequence

from farm.model import Meter
from farm.quiet import import_quietly

DRUM_CHANNEL = 9  # GM channel 10, 0-based


@dataclass(frozen=True)
class Note:
    """One note: MIDI ``pitch``, ``start``/``end`` in ticks from the loop start, ``velocity`` 1-127."""

    pitch: int
    start: int
    end: int
    velocity: int


@dataclass(frozen=True)
class Track:
    """A part to write: its name (the MIDI track name), GM program, whether it is drums, its notes."""

    name: str
    program: int
    is_drum: bool
    notes: Sequence[Note]


def fixed_tempo_midi(bpm: float, ppq: int):
    """A pretty_midi object for one constant tempo.

    pretty_midi's general ``time_to_tick`` searches a numpy tempo map once per event, most of the
    cost of writing a small file; with a single tempo it reduces to one division, which gives the
    same ticks (pretty_midi itself computes ``round(time / tick_scale)`` past its tempo map).
    """
    pretty_midi = import_quietly("pretty_midi")

    class FixedTempoMIDI(pretty_midi.PrettyMIDI):
        def time_to_tick(self, time):
            return int(round(time / self._tick_scales[-1][1]))

    return FixedTempoMIDI(resolution=ppq, initial_tempo=float(bpm))


def midi_bytes(tracks: Sequence[Track], bpm: float, meter: Meter, ppq: int) -> bytes:
    """A format-1 Standard MIDI File: tempo and time signature in track 0, one track per part.

    Note times go through seconds at exactly the file's tick scale, so pretty_midi writes back the
    same ticks.
    """
    pretty_midi = import_quietly("pretty_midi")

    pm = fixed_tempo_midi(bpm, ppq)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(meter.numerator, meter.denominator, 0.0))
    tick = 60.0 / (float(bpm) * ppq)
    for t in tracks:
        inst = pretty_midi.Instrument(program=t.program, is_drum=t.is_drum, name=t.name)
        inst.notes = [pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.start * tick, end=n.end * tick)
                      for n in sorted(t.notes, key=lambda n: (n.start, n.pitch, n.end))]
        pm.instruments.append(inst)
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def pretty_midi_channel(index: int, is_drum: bool) -> int:
    """The channel pretty_midi gives the ``index``-th instrument of a file: 9 for drums, otherwise
    0-15 skipping 9, counted over all instruments."""
    if is_drum:
        return DRUM_CHANNEL
    channels = [c for c in range(16) if c != DRUM_CHANNEL]
    return channels[index % len(channels)]


def _chunks(smf: bytes) -> tuple[bytes, list[bytes]]:
    """(MThd data, [whole MTrk chunks]) of a Standard MIDI File."""
    if smf[:4] != b"MThd":
        raise ValueError("not a Standard MIDI File")
    (hlen,) = struct.unpack(">I", smf[4:8])
    header, pos, tracks = smf[8:8 + hlen], 8 + hlen, []
    while pos < len(smf):
        (length,) = struct.unpack(">I", smf[pos + 4:pos + 8])
        tracks.append(smf[pos:pos + 8 + length])
        pos += 8 + length
    return header, tracks


def _varint(data: bytearray, i: int) -> tuple[int, int]:
    value = 0
    while True:
        b = data[i]
        i += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, i


def set_channel(track_chunk: bytes, channel: int) -> bytes:
    """An MTrk chunk with every channel message moved to ``channel`` (running status kept)."""
    data = bytearray(track_chunk[8:])
    i, status = 0, 0
    while i < len(data):
        _, i = _varint(data, i)  # delta time
        b = data[i]
        if b == 0xFF:  # meta: type, length, data
            length, j = _varint(data, i + 2)
            i = j + length
            status = 0
        elif b in (0xF0, 0xF7):  # sysex
            length, j = _varint(data, i + 1)
            i = j + length
            status = 0
        else:
            if b & 0x80:
                status = b
                data[i] = (b & 0xF0) | channel
                i += 1
            i += 1 if (status & 0xF0) in (0xC0, 0xD0) else 2
    return track_chunk[:8] + bytes(data)


def merge_parts(part_files: Sequence[tuple[bytes, bool]]) -> bytes:
    """One file with every part, from single-part files written by :func:`midi_bytes` with the
    same tempo and meter: ``part_files`` is [(bytes, is_drum)] in track order."""
    header, tracks = _chunks(part_files[0][0])
    fmt, _, division = struct.unpack(">hhh", header)
    out = [b"MThd", struct.pack(">I", 6), struct.pack(">hhh", fmt, 1 + len(part_files), division), tracks[0]]
    for index, (smf, is_drum) in enumerate(part_files):
        _, part_tracks = _chunks(smf)
        if part_tracks[0] != tracks[0]:
            raise ValueError("parts differ in tempo or meter")
        out.append(set_channel(part_tracks[1], pretty_midi_channel(index, is_drum)))
    return b"".join(out)
