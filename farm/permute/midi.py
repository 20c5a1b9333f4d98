"""The MIDI of a permutation: its parent part's MIDI moved the way its audio was.

A permutation's audio no longer plays its parent's MIDI file, but a kit (or a producer) still
wants the notes: ``pitch`` moves every pitched note, ``stretch`` rewrites the tempo (the ticks are
the same beats), ``splice`` re-cuts the bars in the splice's order (a note is cut at the end of its
bar, as the audio's bar is). Drum notes (channel 10) never move.
"""
from __future__ import annotations

import io
from typing import Sequence

from farm.errors import FarmError
from farm.templates.midi import DRUM_CHANNEL


def _read(data: bytes, what: str):
    import mido

    try:
        return mido.MidiFile(file=io.BytesIO(data))
    except (OSError, ValueError, EOFError, KeyError, IndexError) as err:
        raise FarmError(f"cannot read MIDI: {err}", file=what, field="midi") from None


def _write(midi) -> bytes:
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


def transpose_midi(data: bytes, semitones: int, what: str = "midi") -> bytes:
    """Every note off the drum channel moved by ``semitones`` (a note that would leave 0-127 is refused)."""
    midi = _read(data, what)
    for track in midi.tracks:
        for i, msg in enumerate(track):
            if msg.type in ("note_on", "note_off") and msg.channel != DRUM_CHANNEL:
                note = msg.note + semitones
                if not 0 <= note <= 127:
                    raise FarmError(f"note {msg.note} moved {semitones:+d} leaves the MIDI range", file=what,
                                    field="semitones")
                track[i] = msg.copy(note=note)
    return _write(midi)


def retempo_midi(data: bytes, bpm: float, what: str = "midi") -> bytes:
    """Every tempo event set to ``bpm`` (quarter notes per minute; MIDI keeps whole microseconds)."""
    import mido

    midi = _read(data, what)
    tempo = int(round(mido.bpm2tempo(bpm)))
    for track in midi.tracks:
        for i, msg in enumerate(track):
            if msg.type == "set_tempo":
                track[i] = msg.copy(tempo=tempo)
    return _write(midi)


def splice_midi(data: bytes, bar_order: Sequence[int], ticks_per_bar: int, what: str = "midi") -> bytes:
    """Bar ``k`` of the result holds the notes that start in source bar ``bar_order[k-1]`` (1-based),
    each cut at its bar's end; other events (names, tempo, meter) stay where they were in bar 1."""
    import mido

    midi = _read(data, what)
    for t, track in enumerate(midi.tracks):
        tick, held, notes, others = 0, {}, [], []
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                held.setdefault((msg.channel, msg.note), []).append((tick, msg))
            elif msg.type in ("note_on", "note_off"):
                starts = held.get((msg.channel, msg.note))
                if starts:
                    start, on = starts.pop(0)
                    notes.append((start, tick, on))
            elif msg.type != "end_of_track":
                others.append((tick, msg))
        events = [(tick, 1, i, msg) for i, (tick, msg) in enumerate(others) if tick < ticks_per_bar]
        for k, bar in enumerate(bar_order):
            lo, hi = (bar - 1) * ticks_per_bar, bar * ticks_per_bar
            shift = k * ticks_per_bar - lo
            for start, end, on in notes:
                if lo <= start < hi:
                    # offs sort before ons at the same tick, so a note repeated across a cut restrikes
                    events.append((start + shift, 2, len(events), on))
                    events.append((min(end, hi) + shift, 0, len(events), mido.Message(
                        "note_off", channel=on.channel, note=on.note, velocity=0)))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        new, last = mido.MidiTrack(), 0
        for tick, _kind, _i, msg in events:
            new.append(msg.copy(time=tick - last))
            last = tick
        new.append(mido.MetaMessage("end_of_track", time=max(0, len(bar_order) * ticks_per_bar - last)))
        midi.tracks[t] = new
    return _write(midi)


def permuted_midi(parent_midi: bytes, operation: str, params: dict, *, ticks_per_bar: int,
                  what: str = "midi") -> bytes:
    """The MIDI of a permutation ``operation`` with ``params`` of a loop whose part MIDI is ``parent_midi``."""
    if operation in ("render", "repatch"):
        return parent_midi
    if operation == "pitch":
        return transpose_midi(parent_midi, int(params["semitones"]), what)
    if operation == "stretch":
        return retempo_midi(parent_midi, float(params["bpm"]), what)
    if operation == "splice":
        return splice_midi(parent_midi, params["bars"], ticks_per_bar, what)
    raise FarmError(f"unknown operation {operation!r}", file=what, field="operation")
