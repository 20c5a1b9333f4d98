"""From a rule set and a seed to a labelled template in memory, then to a directory on disk."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

from farm.errors import FarmError
from farm.files import atomic_dir
from farm.model import ChordLabel, Key, PartInfo, Template, canonical_json, content_id
from farm.templates.grammar import feasible_starts, sample_progression
from farm.templates.midi import DRUM_CHANNEL, Note, Track, merge_parts, midi_bytes
from farm.templates.parts import (Timing, chord_voicings, make_groove, write_arp, write_bass, write_chords,
                                  write_drums, write_melody)
from farm.templates.rules import MAX_BARS, Rules, find_rules, load_rules

MAX_COUNT = 100_000  # templates in one `farm generate`: a night's worth many times over
from farm.theory import chord_scale, key_spelling, spell_chord

GENERATOR_VERSION = "farm.templates 3"  # 2: readable sus/add9 romans; 3: maj7/maj9 romans say maj
PPQ = 480


@dataclass(frozen=True)
class GeneratedTemplate:
    """A template in memory: its labels and the Standard MIDI File bytes of each part and of "all"."""

    template: Template
    midi: dict[str, bytes]


def _rng(seed: int, purpose: str) -> random.Random:
    """An independent, reproducible random stream per purpose, so one part's choices never shift another's."""
    return random.Random(f"{seed}/{purpose}")


def _knob(rng: random.Random, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return lo if lo == hi else round(rng.uniform(lo, hi), 3)


def generate_template(rules: Rules, seed: int, *, bars: int | None = None) -> GeneratedTemplate:
    """Write one template in memory (no I/O). ``seed`` drives every choice: key, mode, bpm, meter,
    bar count (unless ``bars`` is given), progression, voicings, rhythms and notes."""
    if bars is not None and (isinstance(bars, bool) or not isinstance(bars, int) or not 1 <= bars <= MAX_BARS):
        raise FarmError(f"bars must be a whole number 1..{MAX_BARS}, got {bars!r}", field="bars")
    rng = _rng(seed, "song")
    mode = rng.choice(rules.modes)
    tonic = key_spelling(rng.choice(rules.tonics), mode)
    bpm = rng.randint(*rules.tempo)
    meter = rng.choice(rules.meters)
    n_bars = rng.choice(rules.bars)
    if bars is not None:
        n_bars = bars
    swing = _knob(rng, rules.swing)
    try:
        romans = sample_progression(rules.grammar, mode, n_bars, _rng(seed, "progression"))
    except ValueError as err:  # only for a forced bar count the style does not list
        raise FarmError(f"{err} for {n_bars} bars", file=rules.path, field="grammar") from None
    chords = [spell_chord(r, tonic, mode) for r in romans]
    timing = Timing(meter=meter, ppq=PPQ, swing=swing)

    scales = [chord_scale(r, tonic, mode) for r in romans]
    tonic_triad = spell_chord("i" if mode in ("minor", "harmonic_minor", "dorian") else "I", tonic, mode).pitch_classes

    written: dict[str, tuple[int, bool, list[Note]]] = {}
    groove = None
    if "drums" in rules.parts:
        d = rules.parts["drums"]
        drng = _rng(seed, "drums")
        knobs = {k: _knob(drng, getattr(d, k)) for k in ("kick_density", "hat_density", "perc_density")}
        groove = make_groove(d, timing, drng, knobs)
    for name in rules.part_names:
        part = rules.parts[name]
        prng = _rng(seed, name)
        if name == "chords":
            voicings = chord_voicings(chords, part)
            written[name] = (part.program, False, write_chords(voicings, part, timing, prng))
        elif name == "bass":
            written[name] = (part.program, False, write_bass(chords, scales, part, groove, timing, prng))
        elif name == "arp":
            written[name] = (part.program, False, write_arp(chords, part, timing, prng))
        elif name == "melody":
            density = _knob(prng, part.density)
            written[name] = (part.program, False,
                             write_melody(chords, scales, tonic_triad, part, timing, prng, density))
        elif name == "drums":
            written[name] = (0, True, write_drums(groove, n_bars, rules.parts["drums"], timing, _rng(seed, "drum-hits")))

    midi: dict[str, bytes] = {}
    for name, (program, is_drum, notes) in written.items():
        midi[name] = midi_bytes([Track(name, program, is_drum, notes)], bpm, meter, PPQ)
    midi["all"] = merge_parts([(midi[name], is_drum) for name, (_, is_drum, _) in written.items()])

    labels = tuple(
        ChordLabel(bar=i + 1, symbol=c.symbol, roman=c.roman, root_pc=c.root_pc,
                   pitch_classes=c.pitch_classes, bass_pc=c.bass_pc)
        for i, c in enumerate(chords))
    parts = tuple(PartInfo(name=n, midi=f"{n}.mid", notes=len(notes), channel=DRUM_CHANNEL if is_drum else 0)
                  for n, (_, is_drum, notes) in written.items())
    template = Template(id="", style=rules.name, seed=seed, key=Key(tonic, mode), bpm=float(bpm), meter=meter,
                        bars=n_bars, ppq=PPQ, chords=labels, parts=parts, generator_version=GENERATOR_VERSION)
    return GeneratedTemplate(template=replace(template, id=template_id(template, midi)), midi=midi)


def template_id(template: Template, midi: dict[str, bytes]) -> str:
    """Content address: the canonical JSON without ``id`` plus every MIDI file's bytes, by name."""
    d = template.to_dict()
    d.pop("id")
    return content_id(canonical_json(d), *(f"{k}\0".encode() + midi[k] for k in sorted(midi)))


def write_template(generated: GeneratedTemplate, out_dir: str | Path, *, plot: bool = False) -> Path:
    """Write ``out_dir/<id>/`` with ``template.json``, ``<part>.mid`` per part and ``all.mid``,
    atomically. A directory already there with this id holds the same content and is left as is.
    ``plot`` adds ``piano_roll.png`` (a picture, not part of the id) when it is missing."""
    t = generated.template
    target = Path(out_dir) / t.id
    if not target.exists():
        with atomic_dir(target) as tmp:
            tmp.chmod(0o777 & ~_umask())  # a temporary directory is private; the template is not
            for name, data in generated.midi.items():
                (tmp / f"{name}.mid").write_bytes(data)
            (tmp / "template.json").write_text(canonical_json(t.to_dict()), encoding="utf-8")
    if plot and not (target / "piano_roll.png").exists():
        from farm.templates.plot import piano_roll_png

        piano_roll_png(t, generated.midi, target / "piano_roll.png")  # written atomically
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def generate(*, style: str | None = None, rules: str | Path | Rules | None = None, count: int = 1,
             seed: int = 0, out: str | Path = "out/templates", bars: int | None = None,
             progress: bool = True, plot: bool = False) -> list[Path]:
    """``farm generate``: write ``count`` templates of one style to ``out``; template i uses seed
    ``seed + i``. Every input is checked before anything is written. Returns the directories.
    ``plot`` also draws each template's ``piano_roll.png``."""
    if (style is None) == (rules is None):
        raise FarmError("give exactly one of a style name or a rule file", field="style/rules")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise FarmError(f"must be a whole number 1..{MAX_COUNT}, got {count!r}", field="count")
    if bars is not None and (isinstance(bars, bool) or not isinstance(bars, int) or not 1 <= bars <= MAX_BARS):
        raise FarmError(f"must be a whole number 1..{MAX_BARS}, got {bars!r}", field="bars")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1 - count:
        # the batch config's range, so a seed means the same template in both
        raise FarmError(f"must be a whole number 0..{2**31 - 1 - count}, got {seed!r}", field="seed")
    if isinstance(rules, Rules):
        r = rules
    else:
        r = load_rules(find_rules(style) if style is not None else Path(rules))
    if bars is not None and not feasible_starts(r.grammar, bars):
        raise FarmError(f"no {bars}-bar progression meets the cadence rules", file=r.path, field="grammar")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FarmError("exists and is not a directory", file=out, field="out")
    from farm.files import check_writable_dir
    from farm.progress import progress as progress_bar

    check_writable_dir(out, "out")  # a folder that cannot be written is one line, before any work

    paths = []
    for i in progress_bar(range(count), f"generate {r.name}", "template", disable=not progress):
        paths.append(write_template(generate_template(r, seed + i, bars=bars), out, plot=plot))
    return paths
