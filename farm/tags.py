"""Labels inside audio files, where DAWs and sample browsers read them: one encoder for the
library's files, `farm render`'s and the exports'.

WAV files carry what DAWs read for tempo and key, written with ``struct`` because libsndfile
reads but cannot write them:

* a RIFF ``acid`` chunk (24 bytes, little-endian): flags (0x04 stretch; 0x02 root note set,
  except for drums; never 0x01 one-shot), root note (0x30 + tonic pitch class: C..B are
  0x30..0x3B), 0x8000, 0.0, number of beats (quarter notes: bars x quarter notes per bar,
  matching the tempo, which counts quarter notes), meter denominator, meter numerator, tempo;
* a ``smpl`` chunk: MIDI unity note 60 + tonic pitch class (C4..B4; 60 for drums), the sample
  period in nanoseconds, and one forward loop over the whole file (start 0, end the last sample,
  inclusive as the chunk counts it);
* a ``LIST/INFO`` chunk: title (the loop name), comment (key, bpm, meter, bars, chords), genre
  (the style), product "Loop Farm".

FLAC files carry Vorbis comments (mutagen): TITLE, ALBUM, GENRE, BPM, KEY and INITIALKEY in the
spelling DAWs use (``Am``, ``F#m``, ``Bb``), MODE (major, minor, harmonic_minor, dorian), METER,
BARS, CHORDS, COMMENT, LOOPFARM_ID. A drum loop has no key: no KEY, no MODE, no acid root.

Everything is encoded in memory: the same labels and samples give the same bytes.
"""
from __future__ import annotations

import io
import struct
from typing import Sequence

import numpy as np

from farm.model import Meter, daw_key_name, format_bpm

ACID_ONE_SHOT, ACID_ROOT_SET, ACID_STRETCH, ACID_DISK_BASED = 0x01, 0x02, 0x04, 0x08
ACID_ROOT_BASE = 0x30  # the acid chunk's root note: C..B are 0x30..0x3B
ACID_FORMAT = "<IHHfIHHf"  # flags, root, 0x8000, 0.0, beats, meter denominator, numerator, tempo
SMPL_UNITY_BASE = 60  # smpl unity note of the tonic: C4 (60) .. B4 (71)
SMPL_FORMAT = "<9I"  # manufacturer, product, period ns, unity note, fraction, SMPTE x2, loops, data
SMPL_LOOP_FORMAT = "<6I"  # cue id, type (0 forward), start, end (inclusive), fraction, play count


# -- chunks -----------------------------------------------------------------------------------
def loop_beats(bars: int, meter: str | Meter) -> int:
    """Quarter notes in ``bars`` of ``meter`` (the acid chunk's number of beats).

    A loop whose length is not a whole number of quarter notes (odd bars of 5/8, 7/8 ...) gets
    the nearest whole number; its tempo is still exact.
    """
    meter = Meter.parse(meter) if isinstance(meter, str) else meter
    return int(round(bars * meter.quarters_per_bar))


def acid_chunk(bpm: float, beats: int, meter: str | Meter, root_pc: int | None) -> bytes:
    """The 24-byte body of a RIFF ``acid`` chunk for a loop (``root_pc`` None: no root note)."""
    meter = Meter.parse(meter) if isinstance(meter, str) else meter
    flags = ACID_STRETCH | (ACID_ROOT_SET if root_pc is not None else 0)
    root = ACID_ROOT_BASE + root_pc % 12 if root_pc is not None else 0
    return struct.pack(ACID_FORMAT, flags, root, 0x8000, 0.0, beats, meter.denominator, meter.numerator, bpm)


def smpl_chunk(sample_rate: int, samples: int, unity_note: int) -> bytes:
    """The body of a RIFF ``smpl`` chunk: unity note and one forward loop over all ``samples``."""
    period_ns = int(round(1e9 / sample_rate))
    return (struct.pack(SMPL_FORMAT, 0, 0, period_ns, unity_note, 0, 0, 0, 1, 0)
            + struct.pack(SMPL_LOOP_FORMAT, 0, 0, 0, samples - 1, 0, 0))


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(chunk id, body)`` of every chunk of a RIFF/WAVE file's bytes, in order."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    out, pos = [], 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        out.append((cid, data[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return out


def riff_bytes(chunks: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A RIFF/WAVE file from ``(chunk id, body)`` pairs."""
    parts = [b"WAVE"]
    for cid, body in chunks:
        parts += [cid, struct.pack("<I", len(body)), body, b"\0" * (len(body) & 1)]
    payload = b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


# -- encoding ---------------------------------------------------------------------------------
def _loop_pitch(loop: dict) -> int | None:
    """The tonic pitch class a DAW should call the loop's root; None for drums (no key)."""
    return None if loop["part"] == "drums" else int(loop["tonic_pc"])


def _comment(loop: dict) -> str:
    key = "" if loop["part"] == "drums" else f"{daw_key_name(loop['key'])}, "
    return f"{key}{loop['bpm']:g} bpm, {loop['meter']}, {loop['bars']} bars: {loop['progression']}"


def wav_bytes(audio: np.ndarray, sample_rate: int, fmt: str, loop: dict) -> bytes:
    """``audio`` (float32 ``(channels, samples)``) as a WAV file with acid, smpl and INFO chunks.

    libsndfile quantises and writes ``fmt`` and data (and ``fact`` for float); its PEAK chunk
    is dropped (it holds a time stamp: the same loop must give the same bytes).
    """
    import soundfile

    from farm.audio import FORMATS, file_frames  # the same stage: imported when used

    container, subtype, _ = FORMATS[fmt]
    data = file_frames(audio, fmt)
    buf = io.BytesIO()
    with soundfile.SoundFile(buf, "w", int(sample_rate), data.shape[1], subtype, format=container) as f:
        f.title, f.comment, f.genre, f.album = loop["name"], _comment(loop), loop["style"], "Loop Farm"
        f.write(data)
    chunks = {cid: body for cid, body in riff_chunks(buf.getvalue())}
    pitch = _loop_pitch(loop)
    ordered = [(b"fmt ", chunks[b"fmt "])]
    if b"fact" in chunks:
        ordered.append((b"fact", chunks[b"fact"]))
    ordered += [
        (b"acid", acid_chunk(loop["bpm"], loop_beats(loop["bars"], loop["meter"]), loop["meter"], pitch)),
        (b"smpl", smpl_chunk(sample_rate, audio.shape[1], SMPL_UNITY_BASE + (pitch or 0))),
    ]
    if b"LIST" in chunks:
        ordered.append((b"LIST", chunks[b"LIST"]))
    ordered.append((b"data", chunks[b"data"]))
    return riff_bytes(ordered)


def vorbis_tags(loop: dict) -> dict[str, str]:
    """The Vorbis comments of a loop's FLAC (no key for drums)."""
    tags = {"TITLE": loop["name"], "ALBUM": "Loop Farm", "GENRE": loop["style"], "BPM": format_bpm(loop["bpm"])}
    if loop["part"] != "drums":
        key = daw_key_name(loop["key"])
        tags.update({"KEY": key, "INITIALKEY": key, "MODE": loop["key_mode"]})
    tags.update({"METER": loop["meter"], "BARS": str(loop["bars"]), "CHORDS": loop["progression"],
                 "COMMENT": _comment(loop), "LOOPFARM_ID": loop["id"]})
    return tags


def flac_bytes(audio: np.ndarray, sample_rate: int, loop: dict | None = None) -> bytes:
    """``audio`` as 24-bit FLAC, with the loop's Vorbis comments when ``loop`` is given."""
    import soundfile
    from mutagen.flac import FLAC

    from farm.audio import pcm24_frames

    buffer = io.BytesIO()
    soundfile.write(buffer, pcm24_frames(audio), int(sample_rate), format="FLAC", subtype="PCM_24")
    if loop is not None:
        buffer.seek(0)
        tagged = FLAC(buffer)
        for name, value in vorbis_tags(loop).items():
            tagged[name] = value
        buffer.seek(0)
        tagged.save(buffer)
    return buffer.getvalue()


def encode(audio: np.ndarray, sample_rate: int, fmt: str, loop: dict | None = None) -> bytes:
    """``audio`` (float32 ``(channels, samples)``) as a file of ``fmt`` (flac24, wav24, wav32f),
    carrying ``loop``'s labels (a sidecar's fields: name, style, part, key, key_mode, tonic_pc,
    bpm, meter, bars, progression, id) when given; plain otherwise."""
    import soundfile

    from farm.audio import FORMATS, file_frames

    if fmt == "flac24":
        return flac_bytes(audio, sample_rate, loop)
    if loop is not None:
        return wav_bytes(audio, sample_rate, fmt, loop)
    container, subtype, _ = FORMATS[fmt]
    buffer = io.BytesIO()
    soundfile.write(buffer, file_frames(audio, fmt), int(sample_rate), format=container, subtype=subtype)
    # libsndfile's PEAK chunk (float WAV) holds a time stamp: dropped, so the same audio is the same bytes
    return riff_bytes([(cid, body) for cid, body in riff_chunks(buffer.getvalue()) if cid != b"PEAK"])


