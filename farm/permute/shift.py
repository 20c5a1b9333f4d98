"""Pitch shifting and time stretching of seamless loops (Rubber Band, in-process via pedalboard).

Both work in float32 on a *circularly padded* copy of the loop (its end before it, its start after
it), then cut exactly one period out of the middle: Rubber Band's start-up and run-out fall in the
padding, and the cut period joins onto itself as cleanly as the source did.

Labels follow: a shift of ``n`` semitones moves the key and every chord by the interval from the
old tonic to the new one, so names stay spelled in the new key (Am +1 -> Bbm, Dm7 -> Ebm7);
roman numerals do not change. A stretch changes ``bpm`` and the length in samples, which is
exactly ``loop_samples(bars, meter, new_bpm, sample_rate)``.
"""
from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

import numpy as np

from farm.errors import FarmError
from farm.model import MODES, ChordLabel, Key, Template, loop_samples
from farm.theory import music21_spelling, spell_name

DEFAULT_SEMITONES = 2  # shifts of -2, -1, +1, +2
DEFAULT_BPM_STEPS = 5  # stretches of -5 .. +5 BPM
PAD_SECONDS = 1.0  # circular padding each side: covers Rubber Band's start-up and run-out


# -- audio --------------------------------------------------------------------------------------
def _circular_pad(audio: np.ndarray, pad: int) -> np.ndarray:
    n = audio.shape[1]
    index = np.arange(-pad, n + pad) % n
    return np.ascontiguousarray(audio[:, index], dtype=np.float32)


def _rubberband(audio: np.ndarray, sample_rate: int, stretch: float, semitones: float,
                high_quality: bool) -> np.ndarray:
    from pedalboard import time_stretch

    return time_stretch(audio, float(sample_rate), stretch_factor=float(stretch),
                        pitch_shift_in_semitones=float(semitones), high_quality=high_quality)


def _one_period(processed: np.ndarray, start: int, length: int, sample_rate: int) -> np.ndarray:
    """``length`` samples from ``start``, with the seam crossfaded so the period loops cleanly.

    A sustained tone does not, in general, fit a whole number of cycles into the new period, so
    the period's end runs on (in the processed padding) into something other than its start. The
    seam gets the same short equal-power crossfade as a splice joint: from the material that
    follows the period's end into the material that leads into its start.
    """
    from farm.permute.splice import CROSSFADE_MS, equal_power_fades

    fade_out, fade_in, offsets = equal_power_fades(CROSSFADE_MS, sample_rate)
    need = start + length + offsets[-1] + 1
    if processed.shape[1] < need:  # Rubber Band came up a few samples short
        processed = np.pad(processed, ((0, 0), (0, need - processed.shape[1])))
    out = np.array(processed[:, start:start + length], dtype=np.float32)
    where = offsets % length
    out[:, where] = processed[:, start + length + offsets] * fade_out + processed[:, start + offsets] * fade_in
    return out


def pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float, *, high_quality: bool = True) -> np.ndarray:
    """Shift a seamless loop by ``semitones`` keeping its length (samples) and its seam.

    ``audio``: float32 ``(channels, n)``; returns float32 ``(channels, n)``.
    """
    audio = _as_loop(audio)
    n = audio.shape[1]
    pad = min(n, int(PAD_SECONDS * sample_rate))
    processed = _rubberband(_circular_pad(audio, pad), sample_rate, 1.0, semitones, high_quality)
    return _one_period(processed, pad, n, sample_rate)


def time_stretch(audio: np.ndarray, sample_rate: int, length: int, *, semitones: float = 0.0,
                 high_quality: bool = True) -> np.ndarray:
    """Stretch a seamless loop to exactly ``length`` samples, keeping its pitch and its seam.

    ``audio``: float32 ``(channels, n)``; returns float32 ``(channels, length)``. The stretch factor
    is ``n / length`` exactly, so one period of the input becomes one period of the output.
    """
    audio = _as_loop(audio)
    n = audio.shape[1]
    if length < 1:
        raise FarmError(f"cannot stretch a loop to {length} samples", field="length")
    pad = min(n, int(PAD_SECONDS * sample_rate))
    processed = _rubberband(_circular_pad(audio, pad), sample_rate, n / length, semitones, high_quality)
    return _one_period(processed, int(round(pad * length / n)), length, sample_rate)


def _as_loop(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise FarmError(f"audio must be (channels, samples), got {audio.shape}", field="audio")
    return audio


def stretch_to_bpm(audio: np.ndarray, template: Template, bpm: float, sample_rate: int, **kw) -> np.ndarray:
    """``template``'s loop at ``bpm``: exactly ``loop_samples(bars, meter, bpm, sample_rate)`` samples."""
    if not bpm > 0:
        raise FarmError(f"tempo must be positive, got {bpm}", field="bpm")
    return time_stretch(audio, sample_rate, loop_samples(template.bars, template.meter, bpm, sample_rate), **kw)


# -- labels -------------------------------------------------------------------------------------
_NOTE = re.compile(r"^[A-G](?:#+|b+)?$")


def transpose_key(k: Key, semitones: int) -> Key:
    """``k`` moved by ``semitones`` (:meth:`farm.model.Key.transposed`); FarmError for an unknown mode."""
    if k.mode not in MODES:
        raise FarmError(f"unknown mode {k.mode!r}", field="key.mode")
    return k.transposed(semitones)


def transpose_note_name(name: str, old_tonic: str, new_tonic: str) -> str:
    """Move a note name by the interval from ``old_tonic`` to ``new_tonic`` (D, A -> Bb: Eb)."""
    from music21 import pitch

    step = _interval(old_tonic, new_tonic)
    return spell_name(pitch.Pitch(music21_spelling(name)).transpose(step).name)


@lru_cache(maxsize=None)
def _interval(old_tonic: str, new_tonic: str):
    from music21 import interval, pitch

    return interval.Interval(noteStart=pitch.Pitch(music21_spelling(old_tonic) + "4"),
                             noteEnd=pitch.Pitch(music21_spelling(new_tonic) + "4"))


def transpose_symbol(symbol: str, old_tonic: str, new_tonic: str) -> str:
    """A chord symbol's root (and slash bass) moved from one key to another; the quality is kept.

    ``"Dm7"`` from A to Bb -> ``"Ebm7"``; ``"C/E"`` -> ``"Db/F"``; ``"C6/9"`` -> ``"Db6/9"``.
    """
    m = re.match(r"^([A-G](?:#+|b+)?)(.*)$", symbol)
    if not m:
        raise FarmError(f"chord symbol {symbol!r} does not start with a note name", field="chords.symbol")
    root, rest = m.groups()
    bass = ""
    if "/" in rest and _NOTE.match(rest.rsplit("/", 1)[1]):
        rest, bass = rest.rsplit("/", 1)
        bass = "/" + transpose_note_name(bass, old_tonic, new_tonic)
    return transpose_note_name(root, old_tonic, new_tonic) + rest + bass


def transpose_chord(chord: ChordLabel, old_key: Key, new_key: Key, semitones: int) -> ChordLabel:
    """``chord`` moved by ``semitones``: symbol respelled in ``new_key``, roman numeral kept.

    The chord is spelled again from its roman numeral in the new key (``farm.theory.spell_chord``,
    the same spelling the templates use); when that cannot spell it (a double accidental), its
    symbol is moved by the interval between the two tonics instead. Pitch classes are always the
    old ones moved by ``semitones``.
    """
    shift = semitones % 12
    moved = replace(
        chord,
        root_pc=(chord.root_pc + shift) % 12,
        pitch_classes=tuple((pc + shift) % 12 for pc in chord.pitch_classes),
        bass_pc=(chord.bass_pc + shift) % 12,
    )
    try:
        from farm.theory import SpellingError, spell_chord

        spelled = spell_chord(chord.roman, new_key.tonic, new_key.mode)
        if (spelled.root_pc, spelled.pitch_classes, spelled.bass_pc) == (moved.root_pc, moved.pitch_classes, moved.bass_pc):
            return replace(moved, symbol=spelled.symbol)
    except (ImportError, SpellingError):
        pass
    return replace(moved, symbol=transpose_symbol(chord.symbol, old_key.tonic, new_key.tonic))


def transpose_template(template: Template, semitones: int) -> Template:
    """The labels of ``template`` shifted by ``semitones`` (key, every chord); tempo and length unchanged."""
    from farm.permute.splice import derived_id

    if int(semitones) != semitones:
        raise FarmError(f"pitch shifts are whole semitones, got {semitones}", field="semitones")
    semitones = int(semitones)
    new_key = transpose_key(template.key, semitones)
    return replace(
        template,
        id=derived_id(template.id, "pitch", {"semitones": semitones}),
        key=new_key,
        chords=tuple(transpose_chord(c, template.key, new_key, semitones) for c in template.chords),
    )


def retempo_template(template: Template, bpm: float) -> Template:
    """The labels of ``template`` at ``bpm`` (quarter notes per minute); key and chords unchanged."""
    from farm.permute.splice import derived_id

    if not bpm > 0:
        raise FarmError(f"tempo must be positive, got {bpm}", field="bpm")
    return replace(template, id=derived_id(template.id, "stretch", {"bpm": float(bpm)}), bpm=float(bpm))
