"""The five parts, written as note lists in ticks from the progression and the style's part rules.

Every part sees the same bar grid: sixteenth-note steps (``steps_per_bar``), felt beats every
``beat_steps`` steps, and one :class:`Timing` that turns (bar, step) into ticks, swing included.
The labels constrain the writing:

* ``chords`` sounds exactly the labelled pitch classes from the first tick of the bar to the last
  (re-strikes are legato, each hit held to the next);
* ``bass`` starts every bar on ``bass_pc`` and keeps it the longest-sounding pitch class: other
  tones (fifths, approach notes) are at most an eighth long and together at most a quarter bar;
* ``melody`` puts chord tones on the felt beats and scale tones between them, and ends each phrase
  on a stable tone;
* ``drums`` are General MIDI percussion (channel 10).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

from farm.model import Meter
from farm.templates.midi import Note
from farm.templates.rules import (ArpPart, BassPart, ChordsPart, DrumsPart, MelodyPart, beat_steps,
                                  rhythm_onsets, steps_per_bar)
from farm.theory import ChordSpelling, voice_lead

# General MIDI percussion keys
KICK, RIM, SNARE, CLAP, CLOSED_HAT, OPEN_HAT, RIDE, TAMBOURINE, SHAKER = 36, 37, 38, 39, 42, 46, 51, 54, 70


@dataclass(frozen=True)
class Timing:
    """Bar grid to ticks. ``swing`` 0..1 delays off-beat eighths by up to a triplet's worth
    (``ppq/6`` ticks) and off-beat sixteenths by half that; only in x/4 meters."""

    meter: Meter
    ppq: int
    swing: float = 0.0

    @property
    def steps(self) -> int:
        return steps_per_bar(self.meter)

    @property
    def beat(self) -> int:
        return beat_steps(self.meter)

    @cached_property
    def ticks_per_bar(self) -> int:
        return int(self.meter.quarters_per_bar * self.ppq)

    def tick(self, bar: int, step: int) -> int:
        """Tick of ``step`` (sixteenths, may equal ``steps`` = next bar's start) in 0-based ``bar``."""
        t = bar * self.ticks_per_bar + step * self.ppq // 4
        if self.swing and self.beat == 4 and step < self.steps:
            if step % 4 == 2:
                t += round(self.swing * self.ppq / 6)
            elif step % 2 == 1:
                t += round(self.swing * self.ppq / 12)
        return t


def _vel(rng: random.Random, base: int, spread: int = 6) -> int:
    return max(1, min(127, base + rng.randint(-spread, spread)))


def _level(step: int, timing: Timing) -> int:
    """Metrical level of a step: 0 downbeat, 1 felt beat, 2 eighth, 3 sixteenth."""
    if step == 0:
        return 0
    if step % timing.beat == 0:
        return 1
    return 2 if step % 2 == 0 else 3


# -- chords -------------------------------------------------------------------------------------

def chord_voicings(chords: Sequence[ChordSpelling], part: ChordsPart) -> list[tuple[int, ...]]:
    """Voice-led voicings, one per bar: each the smallest total movement from the bar before."""
    lo, hi = part.register
    out: list[tuple[int, ...]] = []
    prev = None
    for ch in chords:
        prev = voice_lead(prev, ch.pitch_classes, ch.bass_pc, lo, hi, part.voices)
        out.append(prev)
    return out


def write_chords(voicings: Sequence[tuple[int, ...]], part: ChordsPart, timing: Timing,
                 rng: random.Random) -> list[Note]:
    rhythm = rng.choice(part.rhythm)
    onsets = rhythm_onsets(rhythm, timing.meter)
    notes = []
    for bar, voicing in enumerate(voicings):
        for i, step in enumerate(onsets):
            start = timing.tick(bar, step)
            end = timing.tick(bar, onsets[i + 1]) if i + 1 < len(onsets) else timing.tick(bar + 1, 0)
            accent = part.velocity if step == 0 else part.velocity - 12
            v = _vel(rng, accent, 4)
            notes.extend(Note(p, start, end, v) for p in voicing)
    return notes


# -- drums --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Groove:
    """One bar of drums as steps; the same groove plays every bar (the last may get a fill)."""

    kick: tuple[int, ...]
    snare: tuple[int, ...]
    hats: tuple[tuple[int, bool], ...]  # (step, open)
    perc: tuple[tuple[int, int], ...]  # (step, GM key)
    clap: bool
    fill: bool


def backbeat(timing: Timing) -> tuple[int, ...]:
    """Snare steps: beats 2 and 4 in 4/4, beat 3 in 3/4, the second dotted quarter in 6/8."""
    beats = list(range(0, timing.steps, timing.beat))
    if len(beats) == 1:
        return (timing.steps // 2,) if timing.steps % 4 == 0 else ()
    if len(beats) % 2:
        return (beats[-1],)
    return tuple(b for i, b in enumerate(beats) if i % 2 == 1)


def make_groove(part: DrumsPart, timing: Timing, rng: random.Random, knobs: dict[str, float]) -> Groove:
    """A groove shaped by ``kick_density`` (0: downbeat only; 1: ``steps/4 + 1`` more kicks, strong
    positions first) and ``hat_density`` (0: no hats; from 0.27 every beat, from 0.6 every eighth,
    from 0.94 every sixteenth; in between, some of the next level)."""
    s = timing.steps
    if part.snare == "backbeat":
        snare = backbeat(timing)
    elif part.snare == "none":
        snare = ()
    else:
        snare = rhythm_onsets(part.snare, timing.meter)
    if part.kick:
        kick = rhythm_onsets(part.kick, timing.meter)
    else:
        candidates = [i for i in range(1, s) if i not in snare]
        weight = {1: 1.0, 2: 0.7, 3: 0.3}
        w = [weight[_level(i, timing)] * (1.6 if (i + 2) % s in snare or i == s // 2 else 1.0) for i in candidates]
        n_extra = round(knobs["kick_density"] * (s // 4 + 1))
        chosen = {0}
        for _ in range(min(n_extra, len(candidates))):
            pick = rng.choices(range(len(candidates)), weights=w)[0]
            chosen.add(candidates[pick])
            w[pick] = 0.0
            if not any(w):
                break
        kick = tuple(sorted(chosen))
    h = knobs["hat_density"]
    hats = []
    for i in range(s):
        lvl = {0: 0, 1: 0, 2: 1, 3: 2}[_level(i, timing)]  # beats, eighths, sixteenths
        # each third of the knob fills one level: a level is full 0.8 of the way through its third
        if rng.random() < min(1.0, max(0.0, (h * 3 - lvl) / 0.8)):
            is_open = _level(i, timing) == 2 and rng.random() < part.open_hat
            hats.append((i, is_open))
    p = knobs["perc_density"]
    perc = []
    for i in range(0, s):
        if _level(i, timing) >= 2 and rng.random() < p * (1.0 if i % 2 == 0 else 0.5):
            perc.append((i, SHAKER))
    if p > 0.5:
        perc.extend((i, TAMBOURINE) for i in snare)
    return Groove(kick=kick, snare=tuple(snare), hats=tuple(hats), perc=tuple(sorted(perc)),
                  clap=part.clap, fill=rng.random() < part.fill)


def write_drums(groove: Groove, bars: int, part: DrumsPart, timing: Timing, rng: random.Random) -> list[Note]:
    notes = []
    length = timing.ppq // 8  # a 32nd: shorter than any swung gap, so hits on one key never overlap
    for bar in range(bars):
        def hit(step: int, key: int, vel: int) -> None:
            start = timing.tick(bar, step)
            notes.append(Note(key, start, start + length, _vel(rng, vel)))

        for step in groove.kick:
            hit(step, KICK, part.velocity if step % timing.beat == 0 else part.velocity - 15)
        for step in groove.snare:
            hit(step, SNARE, part.velocity - 5)
            if groove.clap:
                hit(step, CLAP, part.velocity - 15)
        for step, is_open in groove.hats:
            key = RIDE if part.cymbal == "ride" else (OPEN_HAT if is_open else CLOSED_HAT)
            hit(step, key, {0: 85, 1: 78, 2: 66, 3: 52}[_level(step, timing)])
        for step, key in groove.perc:
            hit(step, key, 55)
        if groove.fill and bar == bars - 1:
            start = timing.steps - timing.beat
            for k, step in enumerate(range(start, timing.steps)):
                if step not in groove.snare:
                    hit(step, SNARE, 60 + 8 * k)
    return notes


# -- bass ---------------------------------------------------------------------------------------

def _nearest(pc: int, target: float, lo: int, hi: int) -> int:
    """The MIDI note of pitch class ``pc`` in ``lo..hi`` nearest to ``target``."""
    options = [n for n in range(lo, hi + 1) if n % 12 == pc]
    return min(options, key=lambda n: (abs(n - target), n))


def write_bass(chords: Sequence[ChordSpelling], scale_pcs: Sequence[Sequence[int]], part: BassPart,
               groove: Groove | None, timing: Timing, rng: random.Random) -> list[Note]:
    """Bass on the kick's rhythm: ``bass_pc`` on every downbeat, then roots/fifths/octaves per the
    style's weights, and an approach note into a new chord on the last kick of a bar."""
    lo, hi = part.register
    s, step_ticks = timing.steps, timing.ppq // 4
    rhythm = rng.choice(part.rhythm)
    onsets = groove.kick if rhythm == "kick" and groove is not None else rhythm_onsets(
        "beats" if rhythm == "kick" else rhythm, timing.meter)
    notes: list[Note] = []
    prev = lo + 7
    n_bars = len(chords)
    for bar, ch in enumerate(chords):
        base = _nearest(ch.bass_pc, prev, lo, min(hi, lo + 19))
        prev = base
        nxt = chords[(bar + 1) % n_bars]
        budget = s // 4  # sixteenths of non-bass_pc tones allowed in this bar
        bar_notes: list[tuple[Note, int]] = []  # (note, tick its slot ends)
        for i, step in enumerate(onsets):
            end_step = onsets[i + 1] if i + 1 < len(onsets) else s
            pitch = base
            short = False
            last = i == len(onsets) - 1
            if i > 0:
                if (last and nxt.bass_pc != ch.bass_pc and step >= s - timing.beat
                        and rng.random() < part.approach and budget >= min(2, end_step - step)):
                    target = _nearest(nxt.bass_pc, base, lo, min(hi, lo + 19))
                    above = target + 2 if (target + 2) % 12 in scale_pcs[(bar + 1) % n_bars] else target + 1
                    pitch = rng.choice([target - 1, above])
                    if not lo <= pitch <= hi or pitch % 12 == ch.bass_pc:
                        pitch = base
                    short = pitch != base
                else:
                    tone = rng.choices(list(part.tones), weights=list(part.tones.values()))[0]
                    if tone == "octave":
                        pitch = base + 12 if base + 12 <= hi else (base - 12 if base - 12 >= lo else base)
                    elif tone == "fifth" and budget >= min(2, end_step - step):
                        others = [pc for pc in ch.pitch_classes if pc != ch.bass_pc]
                        fifth = min(others, key=lambda pc: (abs(((pc - ch.bass_pc) % 12) - 7), pc))
                        pitch = base - ((ch.bass_pc - fifth) % 12)
                        if pitch < lo:
                            pitch += 12
                        short = True
            start = timing.tick(bar, step)
            if short:
                length = min(2, end_step - step)
                budget -= length
                end = min(start + length * step_ticks, timing.tick(bar, end_step))
            else:
                end = timing.tick(bar, end_step)
            vel = part.velocity if step % timing.beat == 0 else part.velocity - 10
            bar_notes.append((Note(pitch, start, end, _vel(rng, vel, 4)), timing.tick(bar, end_step)))
        # bass_pc must sound at least twice as long as every other tone together, or they all give way
        own = sum(n.end - n.start for n, _ in bar_notes if n.pitch % 12 == ch.bass_pc)
        other = sum(n.end - n.start for n, _ in bar_notes if n.pitch % 12 != ch.bass_pc)
        if own < 2 * other:
            bar_notes = [(n if n.pitch % 12 == ch.bass_pc else Note(base, n.start, slot_end, n.velocity), slot_end)
                         for n, slot_end in bar_notes]
        notes.extend(n for n, _ in bar_notes)
    return notes


# -- arp ----------------------------------------------------------------------------------------

def write_arp(chords: Sequence[ChordSpelling], part: ArpPart, timing: Timing, rng: random.Random) -> list[Note]:
    """Chord tones, one every ``rate`` sixteenths, walked up/down/up-down/at random per bar."""
    lo, hi = part.register
    pattern = rng.choice(part.patterns)
    notes = []
    length = max(1, int(part.gate * part.rate * timing.ppq // 4))
    for bar, ch in enumerate(chords):
        top = min(hi, lo + 12 * part.octaves)
        pool = [n for n in range(lo, top + 1) if n % 12 in ch.pitch_classes]
        if pattern == "down":
            seq = pool[::-1]
        elif pattern == "updown":
            seq = pool + pool[-2:0:-1]
        else:
            seq = pool
        prev = None
        for k, step in enumerate(range(0, timing.steps, part.rate)):
            if pattern == "random":
                pitch = rng.choice([n for n in pool if n != prev] or pool)
            else:
                pitch = seq[k % len(seq)]
            prev = pitch
            start = timing.tick(bar, step)
            end = min(start + length, timing.tick(bar + 1, 0))
            notes.append(Note(pitch, start, end, _vel(rng, part.velocity if step % timing.beat == 0 else part.velocity - 10)))
    return notes


# -- melody -------------------------------------------------------------------------------------

def stable_tones(ch: ChordSpelling, tonic_triad: Sequence[int]) -> list[int]:
    """Where a phrase may end: the chord tones that belong to the tonic triad, else the chord's root."""
    return [pc for pc in ch.pitch_classes if pc in tonic_triad] or [ch.root_pc]


def write_melody(chords: Sequence[ChordSpelling], scales: Sequence[Sequence[int]], tonic_triad: Sequence[int],
                 part: MelodyPart, timing: Timing, rng: random.Random, density: float) -> list[Note]:
    """Chord tones on the felt beats, scale passing/neighbour tones between them (never held over
    a beat), and every phrase's last note a stable tone on a beat, held to the bar's end."""
    lo, hi = part.register
    s, b, sub = timing.steps, timing.beat, part.subdivision
    notes: list[Note] = []
    prev = (lo + hi) // 2
    n_bars = len(chords)
    for bar, ch in enumerate(chords):
        phrase_start = bar % part.phrase_bars == 0
        phrase_end = (bar + 1) % part.phrase_bars == 0 or bar == n_bars - 1
        beats = list(range(0, s, b))
        end_step = beats[len(beats) // 2] if phrase_end and len(beats) > 1 else (0 if phrase_end else s)
        onsets: list[int] = []
        for step in range(0, s, sub):
            if phrase_end and step > end_step:
                break
            if step % b == 0:
                if step == end_step or (step == 0 and phrase_start) or rng.random() >= part.rest:
                    onsets.append(step)
            elif rng.random() < density:
                onsets.append(step)
        chord_notes = [n for n in range(lo, hi + 1) if n % 12 in ch.pitch_classes]
        scale_notes = [n for n in range(lo, hi + 1) if n % 12 in scales[bar]]
        # strong notes first: each a chord tone near the one before (stepwise-ish, some leaps)
        strong: dict[int, int] = {}
        ref = prev
        for step in onsets:
            if step % b:
                continue
            if phrase_end and step == end_step:
                pool = [n for n in chord_notes if n % 12 in stable_tones(ch, tonic_triad)]
            else:
                pool = chord_notes
            near = sorted(pool, key=lambda n: (abs(n - ref), n))[:3]
            ref = strong[step] = rng.choices(near, weights=[3, 2, 1][:len(near)])[0]
        # weak notes: step from the note before towards the next strong note
        pitches: list[int] = []
        last = prev
        for step in onsets:
            if step in strong:
                pitch = strong[step]
            else:
                target = next((strong[t] for t in onsets if t > step and t in strong), last)
                if target > last:
                    cands = [n for n in scale_notes if last < n <= target] or [n for n in scale_notes if n > last]
                    pitch = min(cands) if cands else last
                elif target < last:
                    cands = [n for n in scale_notes if target <= n < last] or [n for n in scale_notes if n < last]
                    pitch = max(cands) if cands else last
                else:
                    up = [n for n in scale_notes if n > last]
                    down = [n for n in scale_notes if n < last]
                    options = ([min(up)] if up else []) + ([max(down)] if down else [])
                    pitch = rng.choice(options) if options else last
                if pitch % 12 not in scales[bar]:
                    pitch = min(scale_notes, key=lambda n: (abs(n - last), n))
            pitches.append(pitch)
            last = pitch
        prev = last
        for i, (step, pitch) in enumerate(zip(onsets, pitches)):
            start = timing.tick(bar, step)
            if i + 1 < len(onsets):
                nxt = onsets[i + 1]
                if step % b:  # a weak note stops at the next beat: it never sounds over one
                    nxt = min(nxt, (step // b + 1) * b)
                end = timing.tick(bar, nxt)
                end = start + max(1, int((end - start) * 0.92))
            else:
                end = timing.tick(bar, s) if (phrase_end or step % b == 0) else timing.tick(bar, min(s, (step // b + 1) * b))
            vel = part.velocity if step % b == 0 else part.velocity - 12
            notes.append(Note(pitch, start, end, _vel(rng, vel, 5)))
    return notes
