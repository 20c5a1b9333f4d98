"""Templates: rule sets -> labelled MIDI. The labels are checked against the written MIDI."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner

from farm.cli import main as farm_cli
from farm.errors import FarmError
from farm.model import Template, canonical_json, note_name_to_pc
from farm.templates import (TEMPLATES_DIR, beat_steps, find_rules, generate, generate_template, list_styles,
                            load_rules, merge_parts, midi_bytes, progression_is_valid, steps_per_bar,
                            template_id, write_template)
from farm.theory import (SpellingError, key_spelling, label_roman, music21_figure, readable_roman, spell_chord,
                          voicing_candidates, voicing_cost)

ROOT = Path(__file__).resolve().parents[1]
STYLES = sorted(p.stem for p in TEMPLATES_DIR.glob("*.toml"))


# -- helpers ------------------------------------------------------------------------------------

def read_notes(data: bytes) -> list[list[tuple[int, int, int, int, int]]]:
    """Per track: (start tick, end tick, pitch, channel, velocity), read with mido."""
    tracks = []
    for track in mido.MidiFile(file=io.BytesIO(data)).tracks:
        now, open_, notes = 0, {}, []
        for msg in track:
            now += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                open_[(msg.channel, msg.note)] = (now, msg.velocity)
            elif msg.type in ("note_off", "note_on"):
                start, vel = open_.pop((msg.channel, msg.note))
                notes.append((start, now, msg.note, msg.channel, vel))
        assert not open_, "a note is never released"
        tracks.append(sorted(notes))
    return tracks


def part_notes(generated, name: str):
    tracks = read_notes(generated.midi[name])
    assert len(tracks) == 2  # tempo/meter track + the part
    return tracks[1]


# Readable sus/add shorthand and the music21 bracket figure each stands for, written out here so the
# check does not lean on the code it checks. A major seventh's "maj" (IIImaj7) is dropped: music21
# takes the seventh from the key.
BRACKET_FIGURES = {"sus4": "[no3][add4]", "sus2": "[no3][add2]", "add9": "[add9]"}


def bracket_figure(roman: str) -> str:
    roman = roman.replace("maj", "", 1)
    for short, figure in BRACKET_FIGURES.items():
        if roman.endswith(short) and len(roman) > len(short):
            return roman[: -len(short)] + figure
    return roman


def chord_kinds(label) -> set[str]:
    """What a labelled chord is, from its pitch classes: triad, seventh, sus2, sus4, add9, inversion."""
    iv = {(pc - label.root_pc) % 12 for pc in label.pitch_classes}
    third = bool(iv & {3, 4})
    seventh = bool(iv & {10, 11}) or iv == {0, 3, 6, 9}
    kinds = set()
    if third and len(iv) == 3:
        kinds.add("triad")
    if third and seventh:
        kinds.add("seventh")
    if not third and 2 in iv:
        kinds.add("sus2")
    if not third and 5 in iv:
        kinds.add("sus4")
    if third and 2 in iv and not seventh:
        kinds.add("add9")
    if label.bass_pc != label.root_pc:
        kinds.add("inversion")
    return kinds


def music21_key(key):
    from music21 import key as m21key

    return m21key.Key(key.tonic.replace("b", "-") if len(key.tonic) > 1 else key.tonic,
                      {"harmonic_minor": "minor"}.get(key.mode, key.mode))


def music21_scale_pcs(key) -> set[int]:
    from music21 import scale

    cls = {"major": scale.MajorScale, "minor": scale.MinorScale, "harmonic_minor": scale.HarmonicMinorScale,
           "dorian": scale.DorianScale}[key.mode]
    tonic = key.tonic.replace("b", "-") if len(key.tonic) > 1 else key.tonic
    return {p.pitchClass for p in cls(tonic).getPitches(f"{tonic}3", f"{tonic}5")}


def samples(style: str, n: int = 3):
    """A few templates of the style, covering each of its meters."""
    rules = load_rules(find_rules(style))
    out, meters = [], set()
    for seed in range(40):
        g = generate_template(rules, seed)
        if len(out) < n or str(g.template.meter) not in meters:
            out.append(g)
            meters.add(str(g.template.meter))
        if len(out) >= n and meters == {str(m) for m in rules.meters}:
            break
    assert meters == {str(m) for m in rules.meters}
    return rules, out


@pytest.fixture(scope="module")
def style_samples():
    return {s: samples(s) for s in STYLES}


SEEDS = 50


@pytest.fixture(scope="module")
def many_seeds():
    """Seeds 0..49 of every style, as `farm generate --count 50` writes them: {style: (rules, templates)}."""
    out = {}
    for style in STYLES:
        rules = load_rules(find_rules(style))
        out[style] = (rules, [generate_template(rules, seed) for seed in range(SEEDS)])
    return out


MINI = """
name = "mini"
description = "test rules"
tonics = ["C", "A"]
modes = ["major"]
tempo = [100, 110]
meters = ["4/4"]
bars = [4]

[grammar]
first = ["T"]
last = ["D"]
[grammar.transitions]
T = { T = 0, S = 1, D = 1 }
S = { T = 0, S = 0, D = 1 }
D = { T = 1, S = 0 }

[grammar.chords.major]
T = { I = 1, vi = 1 }
S = { IV = 1, ii7 = 1 }
D = { V = 1, Vsus4 = 1 }

[parts.chords]
register = [48, 72]

[parts.bass]

[parts.drums]
kick_density = KICK
hat_density = HAT
"""


def mini(tmp_path: Path, text: str | None = None, kick="0.5", hat="0.5", name="mini.toml") -> Path:
    p = tmp_path / name
    p.write_text((text or MINI).replace("KICK", kick).replace("HAT", hat))
    return p


# -- rule sets ----------------------------------------------------------------------------------

def test_every_style_declares_triads_sevenths_sus_add9_and_inversions():
    """Each rule set's chord tables, spelled in every key it allows, hold the whole vocabulary."""
    rules = list_styles()
    assert len(rules) >= 6
    assert {m for r in rules for m in r.modes} >= {"major", "minor", "harmonic_minor", "dorian"}
    meters = {str(m) for r in rules for m in r.meters}
    assert "4/4" in meters and {"3/4", "6/8"} <= meters
    assert all(set(r.bars) >= {2, 4, 8} for r in rules)
    assert all(r.tempo[0] < r.tempo[1] for r in rules)
    sus = set()
    for r in rules:
        kinds = set()
        for mode, table in r.grammar.chords.items():
            for tonic in r.tonics:
                for romans in table.values():
                    for roman in romans:
                        kinds |= chord_kinds(spell_chord(roman, key_spelling(tonic, mode), mode))
        assert {"triad", "seventh", "add9", "inversion"} <= kinds and kinds & {"sus2", "sus4"}, (r.name, kinds)
        sus |= kinds
    assert {"sus2", "sus4"} <= sus
    drums = [r.parts["drums"] for r in rules if "drums" in r.parts]
    assert drums and all(0 <= k <= 1 for d in drums for k in d.kick_density + d.hat_density)


def test_every_style_writes_its_vocabulary_in_every_mode_meter_and_length(many_seeds):
    """What the templates really hold, across 50 seeds per style: triads, sevenths, sus and add9
    chords and inversions in every style; every mode, meter and bar count the style declares."""
    modes, meters, kinds_all = set(), set(), Counter()
    for style, (rules, gens) in many_seeds.items():
        kinds, seen = Counter(), defaultdict(set)
        for g in gens:
            t = g.template
            for label in t.chords:
                kinds.update(chord_kinds(label))
            seen["mode"].add(t.key.mode)
            seen["meter"].add(t.meter)
            seen["bars"].add(t.bars)
        assert all(kinds[k] for k in ("triad", "seventh", "add9", "inversion")), (style, kinds)
        assert kinds["sus2"] + kinds["sus4"] > 0, (style, kinds)
        assert seen["mode"] == set(rules.modes) and seen["meter"] == set(rules.meters)
        assert seen["bars"] == set(rules.bars) >= {2, 4, 8}
        modes |= seen["mode"]
        meters |= {str(m) for m in seen["meter"]}
        kinds_all.update(kinds)
    assert modes == {"major", "minor", "harmonic_minor", "dorian"}
    assert meters == {"4/4", "3/4", "6/8"}
    assert kinds_all["sus2"] and kinds_all["sus4"]


def test_every_chord_of_every_style_spells_back_from_its_readable_roman():
    """Labels carry readable romans (Vsus4, iadd9, V7sus4). For every chord of every style in every key
    it allows, farm.theory turns the roman back into the label, and music21 reading the bracket figure
    it stands for finds the same root, bass and pitch classes."""
    from music21 import roman

    from farm.model import Key

    checked = 0
    for r in list_styles():
        for mode, table in r.grammar.chords.items():
            for tonic in r.tonics:
                tonic = key_spelling(tonic, mode)
                k = music21_key(Key(tonic, mode))
                for romans in table.values():
                    for written in romans:
                        chord = spell_chord(written, tonic, mode)
                        assert chord.roman == written and "[" not in chord.roman
                        rn = roman.RomanNumeral(bracket_figure(chord.roman), k)
                        assert {p.pitchClass for p in rn.pitches} == set(chord.pitch_classes)
                        assert len(chord.pitch_classes) == len(set(chord.pitch_classes))
                        assert rn.root().pitchClass == chord.root_pc and rn.bass().pitchClass == chord.bass_pc
                        # either spelling of the roman is the same chord, and they convert into each other
                        assert music21_figure(chord.roman) == bracket_figure(chord.roman)
                        assert label_roman(music21_figure(chord.roman), mode) == chord.roman
                        assert readable_roman(music21_figure(chord.roman)) == chord.roman.replace("maj", "", 1)
                        assert spell_chord(music21_figure(chord.roman), tonic, mode) == chord
                        checked += 1
    assert checked > 500


def test_rule_files_may_use_music21_bracket_figures_and_labels_stay_readable(tmp_path):
    rules = load_rules(mini(tmp_path, MINI.replace("Vsus4 = 1", '"V[no3][add4]" = 1')))
    assert set(rules.grammar.chords["major"]["D"]) == {"V", "Vsus4"}
    romans = {c.roman for seed in range(12) for c in generate_template(rules, seed).template.chords}
    assert "Vsus4" in romans and not any("[" in r for r in romans)
    # the same chord twice, and an error in a bracket figure: the field is the key as written
    with pytest.raises(FarmError) as err:
        load_rules(mini(tmp_path, MINI.replace("Vsus4 = 1", 'Vsus4 = 1, "V[no3][add4]" = 2'), name="twice.toml"))
    assert err.value.field == "grammar.chords.major.D.V[no3][add4]" and "already" in err.value.message
    with pytest.raises(FarmError) as err:
        load_rules(mini(tmp_path, MINI.replace("vi = 1", '"Q[add9]" = 1'), name="unread.toml"))
    assert err.value.field == "grammar.chords.major.T.Q[add9]"


# -- sevenths: a major seventh says maj -----------------------------------------------------------

def seventh_kind(pitch_classes, root_pc) -> str | None:
    """The seventh a chord has, from its intervals above the root (independent of the labels)."""
    iv = {(pc - root_pc) % 12 for pc in pitch_classes}
    if not iv & {3, 4}:
        return None  # sus chords: no third
    if 11 in iv:
        return "major"  # maj7, maj9, m(maj7)
    if iv >= {4, 10}:
        return "dominant"
    if iv >= {3, 10}:
        return "half-diminished" if 6 in iv else "minor"
    if iv == {0, 3, 6, 9}:
        return "diminished"
    return None


FIGURES = ("7", "65", "43", "42", "9")
NUMERALS = ("I", "II", "III", "IV", "V", "VI", "VII", "bII", "bIII", "bVI", "bVII")


def test_major_sevenths_say_maj_in_every_inversion_and_every_other_seventh_keeps_its_figure():
    """Every numeral (both cases) with every seventh figure, in every mode and a sharp, a flat and a
    plain key: when music21 builds a chord with a major seventh, the label is the numeral, maj, then
    the figure (IIImaj7, IVmaj65, Imaj42, VImaj9); dominant, minor, half-diminished and diminished
    sevenths keep the figure as written (V7, ii65, iiø7, viio7). Either way spell_chord of the label
    gives the label back, and music21 reads the label (maj and all) as the same root, pitch classes
    and bass."""
    from music21 import key as m21key
    from music21 import roman

    kinds = Counter()
    for mode in ("major", "minor", "harmonic_minor", "dorian"):
        for tonic in ("C", "F#", "Eb"):
            k = m21key.Key(tonic.replace("b", "-") if len(tonic) > 1 else tonic,
                           {"harmonic_minor": "minor"}.get(mode, mode))
            numerals = [n for up in NUMERALS for n in (up, up[:-len(up.lstrip("b"))] + up.lstrip("b").lower())]
            figures = [n + f for n in numerals for f in FIGURES] + ["iiø7", "iiø65", "viio7", "viio43"]
            for written in figures:
                rn = roman.RomanNumeral(written, k)
                kind = seventh_kind([p.pitchClass for p in rn.pitches], rn.root().pitchClass)
                try:
                    chord = spell_chord(written, tonic, mode)
                except SpellingError:
                    continue  # no chord symbol for it (e.g. an augmented seventh)
                kinds[kind] += 1
                if kind == "major":
                    head = written.rstrip("0123456789")
                    assert chord.roman == head + "maj" + written[len(head):], (written, tonic, mode, chord)
                    assert chord.symbol.split("/")[0].endswith(("maj7", "maj9", "m(maj7)")), chord
                else:
                    assert chord.roman == written and "maj" not in chord.symbol, (written, tonic, mode, chord)
                assert spell_chord(chord.roman, tonic, mode) == chord
                for fig in (chord.roman, music21_figure(chord.roman)):
                    again = roman.RomanNumeral(fig, k)
                    assert {p.pitchClass for p in again.pitches} == set(chord.pitch_classes), (fig, chord)
                    assert (again.root().pitchClass, again.bass().pitchClass) == (chord.root_pc, chord.bass_pc)
    assert kinds["major"] > 50 and kinds["dominant"] > 50
    assert kinds["minor"] and kinds["half-diminished"] and kinds["diminished"]


def test_every_major_seventh_in_fifty_seeds_per_style_says_maj_and_no_dominant_seventh_does(many_seeds):
    """What producers read: across 50 seeds of every style, each chord with a major seventh (its
    symbol maj7/maj9) has maj in its roman and spells back exactly from it; no dominant seventh
    ever does; a major seventh written the old way (III7) is the same chord and the same function."""
    counts = Counter()
    for style, (rules, gens) in many_seeds.items():
        for g in gens:
            t = g.template
            old = []
            for label in t.chords:
                kind = seventh_kind(label.pitch_classes, label.root_pc)
                counts[kind] += 1
                quality = label.symbol.split("/")[0]
                if kind == "major":
                    counts[style] += 1
                    assert "maj" in label.roman and quality.endswith(("maj7", "maj9")), (style, t.seed, label)
                    assert not label.roman.startswith(("ii", "iii", "vi", "vii", "iv", "v", "i"))
                else:
                    assert "maj" not in label.roman and "maj" not in quality, (style, t.seed, label)
                if kind == "dominant":
                    assert quality.endswith(("7", "9")) and "maj" not in quality and "m" not in quality[1:]
                back = spell_chord(label.roman, t.key.tonic, t.key.mode)
                assert (back.roman, back.symbol, back.root_pc, back.pitch_classes, back.bass_pc) == (
                    label.roman, label.symbol, label.root_pc, label.pitch_classes, label.bass_pc)
                plain = label.roman.replace("maj", "")
                assert spell_chord(plain, t.key.tonic, t.key.mode) == back
                old.append(plain)
            assert progression_is_valid(rules, old, mode=t.key.mode)
            assert progression_is_valid(rules, [c.roman for c in t.chords], mode=t.key.mode)
    assert counts["major"] > 50 and counts["dominant"] > 50, counts
    # the styles whose vocabulary holds major sevenths really write them
    assert all(counts[s] for s in ("deep-house", "jazz-ii-V-I", "lofi-hiphop", "synthwave")), counts


def test_rule_files_may_write_a_major_seventh_with_or_without_maj(tmp_path):
    """A rule file may keep writing III7 (music21's figure): the grammar holds it as IIImaj7, templates
    label it IIImaj7, and the progression check takes either form. Both forms at once is one chord
    twice, and maj on a chord the key gives no major seventh is an error; each names the key as written."""
    minor = (MINI.replace('modes = ["major"]', 'modes = ["minor"]').replace("[grammar.chords.major]", "[grammar.chords.minor]")
             .replace("T = { I = 1, vi = 1 }", "T = { i7 = 1, III7 = 1 }").replace("S = { IV = 1, ii7 = 1 }", "S = { iv7 = 1, VI7 = 1 }")
             .replace("D = { V = 1, Vsus4 = 1 }", "D = { V7 = 1, v7 = 1 }"))
    rules = load_rules(mini(tmp_path, minor, name="old.toml"))
    assert set(rules.grammar.chords["minor"]["T"]) == {"i7", "IIImaj7"}
    assert set(rules.grammar.chords["minor"]["S"]) == {"iv7", "VImaj7"}
    assert set(rules.grammar.chords["minor"]["D"]) == {"V7", "v7"}
    romans = {c.roman for seed in range(20) for c in generate_template(rules, seed).template.chords}
    assert romans >= {"IIImaj7", "i7", "V7"} and "III7" not in romans
    for progression in (["IIImaj7", "VImaj7", "V7"], ["III7", "VI7", "V7"], ["III7", "VImaj7", "V7"]):
        assert progression_is_valid(rules, progression, mode="minor")
        assert rules.grammar.function_of("minor", progression[1]) == "S"
    assert rules.grammar.function_of("minor", "VImaj7[add9]") is None and rules.grammar.function_of("minor", "Vmaj7") is None

    with pytest.raises(FarmError) as err:
        load_rules(mini(tmp_path, minor.replace("III7 = 1", "III7 = 1, IIImaj7 = 2"), name="twice.toml"))
    assert err.value.field == "grammar.chords.minor.T.IIImaj7" and "already" in err.value.message
    with pytest.raises(FarmError) as err:
        load_rules(mini(tmp_path, minor.replace("V7 = 1", "Vmaj7 = 1"), name="dominant.toml"))
    assert err.value.field == "grammar.chords.minor.D.Vmaj7" and "no major seventh" in err.value.message
    result = CliRunner().invoke(farm_cli, ["generate", "--rules", str(tmp_path / "dominant.toml"),
                                           "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'dominant.toml'}: grammar.chords.minor.D.Vmaj7: ")
    assert not (tmp_path / "out").exists()


def test_templates_dir_env_override(tmp_path, monkeypatch):
    mini(tmp_path, name="house-rules.toml")
    monkeypatch.setenv("FARM_TEMPLATES_DIR", str(tmp_path))
    assert find_rules("house-rules") == tmp_path / "house-rules.toml"
    assert [r.name for r in list_styles()] == ["mini"]
    result = CliRunner().invoke(farm_cli, ["styles"])
    assert result.exit_code == 0 and "mini" in result.stdout and "lofi-hiphop" not in result.stdout


def test_farm_styles_lists_every_rule_set():
    result = CliRunner().invoke(farm_cli, ["styles"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for r in list_styles():
        row = next(line for line in lines if line.startswith(r.name + " "))
        assert ",".join(r.modes) in row and f"{r.tempo[0]}-{r.tempo[1]}" in row


# -- labels against the MIDI --------------------------------------------------------------------

@pytest.mark.parametrize("style", STYLES)
def test_chord_labels_equal_music21_chordify_of_the_chords_part(style, style_samples, tmp_path):
    """An independent analysis: music21 reads the written chords MIDI, chordifies it, and every bar
    sounds exactly the labelled pitch classes from its first beat to its last, lowest note bass_pc."""
    from music21 import converter, roman

    _, gens = style_samples[style]
    for g in gens:
        t = g.template
        path = tmp_path / f"{t.id}.mid"
        path.write_bytes(g.midi["chords"])
        qpb = float(t.quarters_per_bar)
        flat = converter.parse(path, quantizePost=False).chordify().flatten()
        found, covered, lowest = defaultdict(set), defaultdict(float), {}
        for c in flat.getElementsByClass("Chord"):
            off, dur = float(c.offset), float(c.quarterLength)
            bar = int(off // qpb + 1e-9)
            assert off + dur <= (bar + 1) * qpb + 1e-6, "a chord rings into the next bar"
            found[bar + 1] |= {p.pitchClass for p in c.pitches}
            covered[bar + 1] += dur
            low = min(c.pitches, key=lambda p: p.ps)
            lowest.setdefault(bar + 1, set()).add(low.pitchClass)
        assert sorted(found) == list(range(1, t.bars + 1))
        k = music21_key(t.key)
        for label in t.chords:
            assert found[label.bar] == set(label.pitch_classes), (t.id, label)
            assert covered[label.bar] == pytest.approx(qpb), "the chord does not sound the whole bar"
            assert lowest[label.bar] == {label.bass_pc}
            assert "[" not in label.roman  # readable: Vsus4, iadd9, never music21's bracket figures
            # the label's roman numeral means the same chord to music21
            rn = roman.RomanNumeral(bracket_figure(label.roman), k)
            assert {p.pitchClass for p in rn.pitches} == set(label.pitch_classes)
            assert rn.root().pitchClass == label.root_pc == label.pitch_classes[0]
            assert rn.bass().pitchClass == label.bass_pc
            root, _, bass = label.symbol.partition("/")
            name = root[:2] if len(root) > 1 and root[1] in "#b" else root[:1]
            assert note_name_to_pc(name) == label.root_pc
            assert note_name_to_pc(bass or name) == label.bass_pc
            assert "-" not in label.symbol


@pytest.mark.parametrize("style", STYLES)
def test_bass_starts_every_bar_on_bass_pc_and_keeps_it_strongest(style, style_samples):
    rules, gens = style_samples[style]
    for g in gens:
        t = g.template
        if "bass" not in g.midi:
            continue
        tpb = t.ticks_per_bar
        notes = part_notes(g, "bass")
        lo, hi = rules.parts["bass"].register
        assert all(lo <= p <= hi for _, _, p, _, _ in notes)
        for label in t.chords:
            b0, b1 = (label.bar - 1) * tpb, label.bar * tpb
            in_bar = [n for n in notes if b0 <= n[0] < b1]
            assert [p % 12 for s, _, p, _, _ in in_bar if s == b0] == [label.bass_pc]
            sounding = Counter()
            for s, e, p, _, _ in in_bar:
                sounding[p % 12] += min(e, b1) - s
            others = sum(v for pc, v in sounding.items() if pc != label.bass_pc)
            assert sounding[label.bass_pc] >= 2 * others
        if "kick" in rules.parts["bass"].rhythm and "drums" in g.midi:
            kicks = {s for s, _, p, _, _ in part_notes(g, "drums") if p == 36}
            assert {s for s, *_ in notes} <= kicks, "the bass plays off the kick's rhythm"


def test_bass_plays_roots_octaves_fifths_and_approach_notes_and_drums_play_every_kit_piece(many_seeds):
    """Across 50 seeds per style the bass repeats the bar's bass note, jumps octaves, plays fifths and
    approach notes into the next bar (those at most an eighth long); the drums play kick, snare,
    hats or ride and percussion, all on channel 10."""
    kit = Counter()
    for style, (rules, gens) in many_seeds.items():
        used = Counter()
        for g in gens:
            t, tpb = g.template, g.template.ticks_per_bar
            notes = part_notes(g, "bass")
            downbeat = {s // tpb: p for s, _, p, _, _ in notes if s % tpb == 0}
            assert sorted(downbeat) == list(range(t.bars))
            for label in t.chords:
                in_bar = [n for n in notes if (label.bar - 1) * tpb <= n[0] < label.bar * tpb]
                first, nxt = downbeat[label.bar - 1], downbeat[label.bar % t.bars]
                for i, (s, e, p, _, _) in enumerate(in_bar[1:], start=1):
                    if p == first:
                        used["root"] += 1
                    elif p % 12 == label.bass_pc:
                        used["octave"] += 1
                    elif i == len(in_bar) - 1 and 1 <= abs(p - nxt) <= 2:
                        used["approach"] += 1
                        assert e - s <= t.ppq // 2
                    elif (p - first) % 12 == 7:
                        used["fifth"] += 1
                        assert e - s <= t.ppq // 2
            drums = read_notes(g.midi["drums"])[1]
            assert {c for *_, c, _ in drums} == {9}
            kit.update({36: "kick", 38: "snare", 42: "hats", 46: "hats", 51: "ride", 39: "perc", 54: "perc",
                        70: "perc"}.get(p, str(p)) for _, _, p, _, _ in drums)
        assert all(used[k] for k in ("root", "octave", "fifth", "approach")), (style, used)
    assert {"kick", "snare", "hats", "ride", "perc"} <= set(kit), kit


@pytest.mark.parametrize("style", STYLES)
def test_melody_chord_tones_on_beats_scale_tones_between_stable_end(style, style_samples):
    from music21 import roman

    rules, gens = style_samples[style]
    for g in gens:
        t = g.template
        if "melody" not in g.midi:
            continue
        tpb, beat = t.ticks_per_bar, beat_steps(t.meter) * t.ppq // 4
        notes = part_notes(g, "melody")
        scale = music21_scale_pcs(t.key)
        strong = 0
        for label in t.chords:
            b0, b1 = (label.bar - 1) * tpb, label.bar * tpb
            for s, e, p, _, _ in notes:
                if not b0 <= s < b1:
                    continue
                assert e <= b1
                if (s - b0) % beat == 0:
                    strong += 1
                    assert p % 12 in label.pitch_classes, (t.id, label.bar, s, p)
                else:
                    assert p % 12 in scale | set(label.pitch_classes)
                    assert not any(s < b0 + k * beat < e for k in range(1, 13)), "a passing tone held over a beat"
        assert strong >= t.bars
        tonic_triad = {p.pitchClass for p in roman.RomanNumeral("I" if t.key.mode == "major" else "i",
                                                                   music21_key(t.key)).pitches}
        phrase = rules.parts["melody"].phrase_bars
        for label in t.chords:
            if label.bar % phrase and label.bar != t.bars:
                continue
            b0, b1 = (label.bar - 1) * tpb, label.bar * tpb
            last = max(n for n in notes if b0 <= n[0] < b1)  # the phrase's last note: a stable tone on a beat
            stable = [pc for pc in label.pitch_classes if pc in tonic_triad] or [label.root_pc]
            assert (last[0] - b0) % beat == 0 and last[2] % 12 in stable, (t.id, label.bar)
            assert last[1] == b1


@pytest.mark.parametrize("style", STYLES)
def test_files_tempo_meter_channels_and_bar_lengths(style, style_samples):
    _, gens = style_samples[style]
    for g in gens:
        t = g.template
        tpb = t.ticks_per_bar
        assert tpb == t.meter.numerator * 4 * t.ppq // t.meter.denominator
        assert set(g.midi) == {p.name for p in t.parts} | {"all"}
        for part in t.parts:
            mf = mido.MidiFile(file=io.BytesIO(g.midi[part.name]))
            assert mf.ticks_per_beat == t.ppq
            metas = [m for m in mf.tracks[0] if m.is_meta]
            tempo = next(m.tempo for m in metas if m.type == "set_tempo")
            assert mido.tempo2bpm(tempo) == pytest.approx(t.bpm, abs=1e-3)
            ts = next(m for m in metas if m.type == "time_signature")
            assert (ts.numerator, ts.denominator) == (t.meter.numerator, t.meter.denominator)
            notes = read_notes(g.midi[part.name])[1]
            assert len(notes) == part.notes > 0
            assert all(0 <= s < e <= t.bars * tpb for s, e, *_ in notes)
            assert {c for *_, c, _ in notes} == {part.channel}
            assert (part.channel == 9) == (part.name == "drums")
        if "chords" in g.midi:
            assert max(e for _, e, *_ in part_notes(g, "chords")) == t.bars * tpb
        all_tracks = read_notes(g.midi["all"])[1:]
        assert [len(n) for n in all_tracks] == [p.notes for p in t.parts]
        for part, notes in zip(t.parts, all_tracks):
            channels = {c for *_, c, _ in notes}
            assert (channels == {9}) if part.name == "drums" else (9 not in channels and len(channels) == 1)


def test_three_four_and_six_eight_bars_have_the_right_length_in_ticks():
    seen = {}
    for style in STYLES:
        rules = load_rules(find_rules(style))
        for seed in range(30):
            g = generate_template(rules, seed, bars=2)
            m = str(g.template.meter)
            if m in ("3/4", "6/8") and m not in seen:
                seen[m] = g
    assert set(seen) == {"3/4", "6/8"}
    for m, g in seen.items():
        t = g.template
        assert t.ticks_per_bar == 1440  # 3 quarter notes at 480 ppq, in both meters
        assert t.duration_s == pytest.approx(2 * 3 * 60 / t.bpm)
        chords = part_notes(g, "chords")
        assert max(e for _, e, *_ in chords) == 2 * 1440
        assert {s for s, *_ in chords} >= {0, 1440}
        kicks = sorted({s for s, _, p, _, _ in part_notes(g, "drums") if p == 36})
        assert 0 in kicks and 1440 in kicks and all(k < 2880 for k in kicks)


def test_voicings_move_as_little_as_possible_within_the_register(style_samples):
    for style in STYLES:
        rules, gens = style_samples[style]
        part = rules.parts["chords"]
        for g in gens:
            notes = part_notes(g, "chords")
            tpb = g.template.ticks_per_bar
            voicings = [tuple(sorted({p for s, _, p, _, _ in notes if s == bar * tpb})) for bar in range(g.template.bars)]
            assert all(part.register[0] <= p <= part.register[1] for v in voicings for p in v)
            for prev, cur, label in zip(voicings, voicings[1:], g.template.chords[1:]):
                options = voicing_candidates(label.pitch_classes, label.bass_pc, *part.register, part.voices)
                assert voicing_cost(prev, cur) == min(voicing_cost(prev, o) for o in options)


def test_drum_knobs_shape_the_groove(tmp_path):
    def groove(kick, hat):
        rules = load_rules(mini(tmp_path, kick=kick, hat=hat))
        g = generate_template(rules, 3)
        drums = part_notes(g, "drums")
        per_bar = g.template.bars
        return (sum(1 for n in drums if n[2] == 36) / per_bar, sum(1 for n in drums if n[2] in (42, 46)) / per_bar)

    assert groove("0.0", "0.0") == (1, 0)  # downbeat kick only, no hats
    assert groove("0.0", "0.3")[1] == 4  # hats on the beats
    assert groove("0.0", "0.6")[1] == 8  # eighths
    assert groove("0.0", "1.0")[1] == 16  # sixteenths
    assert groove("1.0", "0.0")[0] > groove("0.5", "0.0")[0] > groove("0.0", "0.0")[0]


# -- grammar ------------------------------------------------------------------------------------

def test_progression_is_valid_follows_the_grammar(tmp_path):
    rules = load_rules(mini(tmp_path))
    assert progression_is_valid(rules, ["I", "IV", "V", "Vsus4"]) is False  # D -> D has weight 0
    assert progression_is_valid(rules, ["I", "IV", "ii7", "V"]) is False  # S -> S has weight 0
    assert progression_is_valid(rules, ["I", "ii7", "V", "V[no3][add4]"]) is False
    assert progression_is_valid(rules, ["I", "IV", "V"]) is True
    assert progression_is_valid(rules, ["vi", "ii7", "Vsus4"]) is True  # shorthand for V[no3][add4]
    assert progression_is_valid(rules, ["vi", "ii7", "V[no3][add4]"]) is True
    assert progression_is_valid(rules, ["IV", "V", "I", "V"]) is False  # bar 1 must be a tonic
    assert progression_is_valid(rules, ["I", "V", "I", "IV"]) is False  # the last bar must be a dominant
    assert progression_is_valid(rules, ["I", "V", "vi", "V"]) is True
    assert progression_is_valid(rules, ["I", "iii", "V"]) is False  # not in the vocabulary
    assert progression_is_valid(rules, []) is False
    # re-cutting to one chord: T -> T has weight 0 and V is no tonic
    assert progression_is_valid(rules, ["I", "I", "I", "I"]) is False
    # the wrap from the last bar to bar 1 only counts for loops
    wrap = MINI.replace("D = { T = 1, S = 0 }", "D = { T = 0, S = 1 }")
    wrap = wrap.replace('first = ["T"]', 'first = ["T", "S"]')
    r2 = load_rules(mini(tmp_path, wrap, name="wrap.toml"))
    assert progression_is_valid(r2, ["I", "V", "IV", "V"], looping=True) is False  # V -> I wrap has weight 0
    assert progression_is_valid(r2, ["I", "V", "IV", "V"], looping=False) is True
    assert progression_is_valid(r2, ["IV", "V", "IV", "V"], looping=True) is True


def test_generated_progressions_are_valid_and_seed_drives_key_tempo_meter_bars(many_seeds):
    for style, (rules, gens) in many_seeds.items():
        seen = defaultdict(set)
        for g in gens:
            t = g.template
            assert progression_is_valid(rules, [c.roman for c in t.chords], mode=t.key.mode)
            assert rules.tempo[0] <= t.bpm <= rules.tempo[1] and t.bpm == int(t.bpm)
            assert t.key.mode in rules.modes and t.bars in rules.bars and t.meter in rules.meters
            for k, v in (("key", t.key), ("bpm", t.bpm), ("bars", t.bars), ("meter", t.meter)):
                seen[k].add(v)
        assert len(seen["key"]) > 2 and len(seen["bpm"]) > 2 and len(seen["bars"]) == len(rules.bars)
        assert len(seen["meter"]) == len(rules.meters)
        assert generate_template(rules, 7, bars=2).template.bars == 2


# -- outputs, ids, determinism ------------------------------------------------------------------

def test_write_template_is_content_addressed_and_round_trips(tmp_path):
    rules = load_rules(find_rules("synthwave"))
    g = generate_template(rules, 11)
    t = g.template
    assert t.id == template_id(t, g.midi) and len(t.id) == 16
    path = write_template(g, tmp_path)
    assert path == tmp_path / t.id
    assert sorted(p.name for p in path.iterdir()) == sorted([f"{n}.mid" for n in g.midi] + ["template.json"])
    assert Template.load(path) == t
    data = json.loads((path / "template.json").read_text())
    assert (path / "template.json").read_text() == canonical_json(data)
    assert set(data) == {"id", "style", "seed", "key", "bpm", "meter", "bars", "ppq", "chords", "parts",
                         "generator_version"}
    assert data["style"] == "synthwave" and data["seed"] == 11 and data["ppq"] == 480
    assert [c["bar"] for c in data["chords"]] == list(range(1, t.bars + 1))
    for p in t.parts:
        assert (path / p.midi).read_bytes() == g.midi[p.name]
    mtime = (path / "template.json").stat().st_mtime_ns
    assert write_template(generate_template(rules, 11), tmp_path) == path
    assert (path / "template.json").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert generate_template(rules, 12).template.id != t.id


def test_all_mid_is_what_pretty_midi_writes_for_every_part_at_once():
    from farm.templates.midi import Track
    from farm.templates import build

    for style in STYLES:
        g = generate_template(load_rules(find_rules(style)), 5)
        t = g.template
        rules = load_rules(find_rules(style))
        tracks = []
        for p in t.parts:
            notes = part_notes(g, p.name)
            from farm.templates.midi import Note
            program = 0 if p.name == "drums" else rules.parts[p.name].program
            tracks.append(Track(p.name, program, p.name == "drums", [Note(n[2], n[0], n[1], n[4]) for n in notes]))
        assert midi_bytes(tracks, t.bpm, t.meter, t.ppq) == g.midi["all"]
        assert merge_parts([(g.midi[p.name], p.name == "drums") for p in t.parts]) == g.midi["all"]
        assert build.PPQ == t.ppq


DIGEST = """
import hashlib, sys
from farm.templates import find_rules, load_rules, generate_template
for style in sys.argv[1:]:
    rules = load_rules(find_rules(style))
    for seed in (0, 1):
        g = generate_template(rules, seed)
        h = hashlib.sha256(g.template.id.encode())
        for k in sorted(g.midi):
            h.update(g.midi[k])
        print(style, seed, h.hexdigest())
"""


def test_same_rules_and_seed_give_the_same_bytes_in_a_fresh_process(tmp_path):
    def digest_here():
        lines = []
        for style in STYLES:
            rules = load_rules(find_rules(style))
            for seed in (0, 1):
                g = generate_template(rules, seed)
                h = hashlib.sha256(g.template.id.encode())
                for k in sorted(g.midi):
                    h.update(g.midi[k])
                lines.append(f"{style} {seed} {h.hexdigest()}")
        return lines

    env = dict(os.environ, PYTHONHASHSEED="12345", CI="true")  # CI: pyfluidsynth talks on stdout there
    out = subprocess.run([sys.executable, "-c", DIGEST, *STYLES], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout.split("\n")
    assert [line for line in out if line] == digest_here()

    # and through the command line, twice, in two processes: identical trees
    farm = str(Path(sys.executable).parent / "farm")
    for name, hashseed in (("a", "1"), ("b", "2")):
        subprocess.run([farm, "generate", "--style", "cinematic-minor", "--count", "2", "--seed", "40",
                        "--out", str(tmp_path / name), "-q"], check=True, capture_output=True,
                       env=dict(os.environ, PYTHONHASHSEED=hashseed))
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2 * 7
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


def test_music21_answers_kept_on_disk_make_the_same_templates_and_labels(tmp_path):
    """music21's spellings are kept between runs (farm.memo). A fresh process reading them makes
    the very templates music21 makes (a template's id hashes every label: symbol, roman, pitch
    classes, bass) without importing music21; a damaged cache file, or an entry of the wrong shape, is passed over."""
    script = DIGEST + "print('music21', 'music21' in sys.modules)\n"

    def run(cache) -> tuple[list[str], bool]:
        env = dict(os.environ, FARM_CACHE_DIR=str(cache), CI="true")
        out = subprocess.run([sys.executable, "-c", script, *STYLES], capture_output=True, text=True, env=env,
                             cwd=ROOT, check=True).stdout.splitlines()
        return out[:-1], out[-1] == "music21 True"

    by_music21, imported = run("off")
    assert imported and len(by_music21) == 2 * len(STYLES)
    cache = tmp_path / "cache"
    assert run(cache) == (by_music21, True)  # asked music21, kept its answers
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["spellings"]
    assert run(cache) == (by_music21, False)  # read them back: music21 not even imported
    kept = next(cache.iterdir())
    entries = json.loads(kept.read_text(encoding="utf-8"))
    kept.write_text(json.dumps({key: {"roman": 5} for key in entries}), encoding="utf-8")  # the wrong shapes
    assert run(cache) == (by_music21, True)
    kept.write_text("{damaged", encoding="utf-8")
    assert run(cache) == (by_music21, True)


def test_generate_function_and_cli_write_count_templates_from_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_PROGRESS", "always")  # the bar, as on a terminal
    rules = load_rules(find_rules("pop-ballad"))
    paths = generate(style="pop-ballad", count=3, seed=20, out=tmp_path / "py", progress=False)
    assert [p.name for p in paths] == [generate_template(rules, 20 + i).template.id for i in range(3)]
    result = CliRunner().invoke(farm_cli, ["generate", "--style", "pop-ballad", "--count", "3", "--seed", "20",
                                           "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [Path(line.split()[0]).name for line in lines] == [p.name for p in paths]
    for line, p in zip(lines, paths):
        t = Template.load(p)
        assert t.key.short in line and " ".join(c.symbol for c in t.chords) in line
        assert (tmp_path / "cli" / p.name / "template.json").read_bytes() == (p / "template.json").read_bytes()
    assert "100%" in result.stderr  # the progress bar
    by_file = generate(rules=find_rules("pop-ballad"), count=1, seed=20, out=tmp_path / "py", progress=False)
    assert by_file == paths[:1]


# -- bad input ----------------------------------------------------------------------------------

BAD_CASES = {
    "invalid-toml": (lambda s: s.replace('name = "mini"', 'name = "mini'), "toml"),
    "unreadable-chord": (lambda s: s.replace("vi = 1", "Qx7 = 1"), "grammar.chords.major.T.Qx7"),
    "unspellable-chord": (lambda s: s.replace("ii7 = 1", "It6 = 1"), "grammar.chords.major.S.It6"),
    "impossible-tempo": (lambda s: s.replace("tempo = [100, 110]", "tempo = [140, 90]"), "tempo"),
    "tempo-out-of-range": (lambda s: s.replace("tempo = [100, 110]", "tempo = [0, 90]"), "tempo"),
    "dead-grammar": (lambda s: s.replace("D = { T = 1, S = 0 }", "D = { T = 0, S = 0, D = 0 }"), "grammar.transitions.D"),
    "no-cadence": (lambda s: s.replace('last = ["D"]', 'last = ["S"]'), "grammar"),
    "bad-meter": (lambda s: s.replace('meters = ["4/4"]', 'meters = ["4/3"]'), "meters"),
    "bad-knob": (lambda s: s.replace("kick_density = KICK", "kick_density = 1.5"), "parts.drums.kick_density"),
    "narrow-register": (lambda s: s.replace("register = [48, 72]", "register = [60, 63]"), "parts.chords.register"),
    "maj-on-a-dominant": (lambda s: s.replace("D = { V = 1", "D = { Vmaj7 = 1"), "grammar.chords.major.D.Vmaj7"),
    "major-seventh-twice": (lambda s: s.replace("T = { I = 1, vi = 1 }", "T = { I = 1, vi = 1, I7 = 1, Imaj7 = 1 }"),
                            "grammar.chords.major.T.Imaj7"),
}

# Bad arguments: (Python keyword arguments, CLI arguments, file named in the error, field). A path of
# "RULES" is a valid rule file written for the case.
BAD_ARGS = {
    "count-zero": (dict(style="lofi-hiphop", count=0), ["--style", "lofi-hiphop", "--count", "0"], None, "count"),
    "count-negative": (dict(style="lofi-hiphop", count=-3), ["--style", "lofi-hiphop", "--count", "-3"], None,
                       "count"),
    "count-not-a-number": (dict(style="lofi-hiphop", count="two"), ["--style", "lofi-hiphop", "--count", "two"],
                           None, "count"),
    "unknown-style": (dict(style="polka-core"), ["--style", "polka-core"], TEMPLATES_DIR, "style"),
    "style-and-rules": (dict(style="lofi-hiphop", rules="RULES"), ["--style", "lofi-hiphop", "--rules", "RULES"],
                        None, "style/rules"),
    "neither-style-nor-rules": (dict(), [], None, "style/rules"),
    "missing-rule-file": (dict(rules="MISSING"), ["--rules", "MISSING"], "MISSING", None),
    "bars-zero": (dict(rules="RULES", bars=0), ["--rules", "RULES", "--bars", "0"], None, "bars"),
    "seed-negative": (dict(style="lofi-hiphop", seed=-1), ["--style", "lofi-hiphop", "--seed", "-1"], None, "seed"),
    "bars-no-progression": (dict(rules="RULES", bars=1), ["--rules", "RULES", "--bars", "1"], "RULES", "grammar"),
}


def tree(d: Path) -> dict:
    """Everything under ``d``: path -> bytes (None for a folder), and the folder's own mtime."""
    return {"mtime": d.stat().st_mtime_ns,
            **{str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}}


@pytest.mark.parametrize("case", sorted(BAD_CASES) + sorted(BAD_ARGS))
def test_bad_input_fails_with_one_line_naming_file_and_field_and_writes_nothing(case, tmp_path):
    """Python and CLI alike: FarmError naming the file and the field; exit code 2 with one error line
    and nothing on stdout; an output folder already holding a template is left exactly as it was,
    and a new one is never created."""
    good = mini(tmp_path, name="good.toml")
    if case in BAD_CASES:
        mutate, field = BAD_CASES[case]
        path = tmp_path / f"{case}.toml"
        path.write_text(mutate(MINI).replace("KICK", "0.5").replace("HAT", "0.5"))
        kwargs, args, file = dict(rules=path, count=2), ["--rules", str(path), "--count", "2"], path
    else:
        kwargs, args, file, field = BAD_ARGS[case]
        swap = {"RULES": str(good), "MISSING": str(tmp_path / "missing.toml")}
        kwargs = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
        args = [swap.get(a, a) for a in args]
        file = swap.get(file, file) if isinstance(file, str) else file
    out = tmp_path / "library"
    write_template(generate_template(load_rules(good), 0), out)  # last night's template
    before = tree(out)

    with pytest.raises(FarmError) as err:
        generate(**kwargs, out=out, progress=False)
    assert err.value.file == (str(file) if file is not None else None) and err.value.field == field
    assert tree(out) == before

    prefix = "error: " + "".join(f"{x}: " for x in (file, field) if x is not None)
    for target in (out, tmp_path / "new"):
        result = CliRunner().invoke(farm_cli, ["generate", *args, "--out", str(target)])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(prefix) and result.stderr.count("\n") == 1, result.stderr
        assert len(result.stderr) > len(prefix) + 10  # says what is wrong
        assert result.stdout == ""
    assert tree(out) == before and not (tmp_path / "new").exists()


def test_shipped_rule_files_load_with_their_file_names():
    for p in sorted(TEMPLATES_DIR.glob("*.toml")):
        assert load_rules(p).name == p.stem
    assert steps_per_bar(load_rules(find_rules("cinematic-minor")).meters[0]) == 12


def test_plot_draws_a_piano_roll_beside_the_midi_without_changing_the_template(tmp_path):
    import matplotlib.image

    plain = generate(style="deep-house", count=1, seed=2, out=tmp_path / "a", progress=False)[0]
    result = CliRunner().invoke(farm_cli, ["generate", "--style", "deep-house", "--seed", "2", "--plot", "-q",
                                           "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    drawn = tmp_path / "b" / plain.name
    assert sorted(p.name for p in drawn.iterdir()) == sorted([p.name for p in plain.iterdir()] + ["piano_roll.png"])
    image = matplotlib.image.imread(drawn / "piano_roll.png")
    t = Template.load(drawn)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert (image[..., :3].std(axis=2) > 0.1).mean() > 0.001  # coloured note bars, not a blank canvas
    # asking for the picture later adds it to the folder that is already there
    again = generate(style="deep-house", count=1, seed=2, out=tmp_path / "a", progress=False, plot=True)[0]
    assert again == plain and (plain / "piano_roll.png").is_file() and Template.load(plain) == t


def test_pitch_class_names_spell_every_chord_root_as_its_symbol_does(many_seeds):
    """The names `farm plot` puts on its pitch-class axis follow the key: every chord's root is
    named as its symbol writes it (Db in Ab major, F# for V in G minor), in every style and seed."""
    from farm.theory import pitch_class_names

    for _, gens in many_seeds.values():
        for g in gens:
            t = g.template
            names = pitch_class_names(t.key.tonic, t.key.mode)
            assert sorted(note_name_to_pc(n) for n in names) == list(range(12))
            assert all(len(n) <= 2 for n in names)  # never a double sharp or flat
            for c in t.chords:
                root = c.symbol.split("/")[0]
                root = root[:2] if len(root) > 1 and root[1] in "#b" else root[:1]
                assert names[c.root_pc] == root, (t.key.short, c.symbol)
