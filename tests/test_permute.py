"""Permutations: splices, pitch shifts, stretches and re-patches keep their labels exact."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from farm.errors import FarmError
from farm.model import ChordLabel, Key, Meter, PartInfo, Template, loop_samples
from farm.permute.shift import (pitch_shift, retempo_template, stretch_to_bpm, time_stretch,
                                transpose_key, transpose_template)
from farm.permute.splice import (DEFAULT_BLEED_THRESHOLD, bleed_verdict, measure_bleed, plan_splices, splice_audio,
                                 splice_template)

SR = 44100
NOTE_PCS = {"Am7": (9, 0, 4, 7), "Dm7": (2, 5, 9, 0), "Cmaj7": (0, 4, 7, 11), "E7": (4, 8, 11, 2)}
ROMANS = {"Am7": "i7", "Dm7": "iv7", "Cmaj7": "III7", "E7": "V7"}


def make_template(symbols=("Am7", "Am7", "Dm7", "Cmaj7"), bpm=120.0, key=Key("A", "minor"), meter="4/4"):
    chords = tuple(ChordLabel(bar=i + 1, symbol=s, roman=ROMANS[s], root_pc=NOTE_PCS[s][0],
                              pitch_classes=NOTE_PCS[s], bass_pc=NOTE_PCS[s][0]) for i, s in enumerate(symbols))
    return Template(id="t0", style="test", seed=1, key=key, bpm=bpm, meter=Meter.parse(meter), bars=len(chords),
                    ppq=480, chords=chords, parts=(PartInfo("chords", "chords.mid", 16),), generator_version="test")


def periodic_sine(freq, t, period_s):
    """A sine at the nearest frequency with a whole number of cycles per loop, so the loop is seamless."""
    return np.sin(2 * np.pi * round(freq * period_s) / period_s * t)


def chord_loop(template, sr=SR, tail=0.0, ramp_s=0.01):
    """A seamless loop of sines at each bar's chord tones (octave 4 and 3), phase running on across bars.

    ``tail``: how much of the previous bar's chord keeps ringing into the next bar (0: dry);
    it decays over the bar, as a long delay or reverb would.
    """
    n = template.loop_samples(sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    starts = [template.bar_start_sample(b, sr) for b in range(1, template.bars + 2)]
    for c in template.chords:
        lo, hi = starts[c.bar - 1], starts[c.bar]
        gain = np.zeros(n)
        ramp = int(ramp_s * sr)
        gain[lo:hi] = 1.0
        gain = uniform_filter1d(gain, ramp, mode="wrap")  # chords cross-fade over the bar line
        if tail:
            ring = np.arange(hi, hi + (hi - lo)) % n  # rings on through the next bar, then wraps
            decay = tail * np.exp(-np.arange(hi - lo) / (0.5 * sr))
            gain[ring] += decay * np.minimum(1, np.arange(hi - lo) / ramp)
        tone = sum(periodic_sine(440 * 2 ** ((pc - 9) / 12), t, n / sr)
                   + 0.5 * periodic_sine(220 * 2 ** ((pc - 9) / 12), t, n / sr) for pc in c.pitch_classes)
        out += gain * tone
    out *= 0.5 / np.max(np.abs(out))
    return np.stack([out, out]).astype(np.float32)


def max_step(x, lo, hi):
    return float(np.max(np.abs(np.diff(x[:, lo:hi], axis=1))))


def seam_step_ratio(loop):
    """Largest step across a loop's seam over the largest step anywhere else in it."""
    seam = np.concatenate([loop[:, -500:], loop[:, :500]], axis=1)
    return max_step(seam, 0, 1000) / max_step(loop, 500, loop.shape[1] - 500)


# -- splicing -----------------------------------------------------------------------------------
def test_plan_offers_vamps_of_each_chord_and_grammar_checked_recuts():
    tpl = make_template()
    allowed_romans = {("i7", "i7", "iv7", "iv7"), ("i7", "iv7", "i7", "iv7")}
    plans = plan_splices(tpl, is_valid=lambda romans: tuple(romans) in allowed_romans)
    by_order = {p.bar_order: p for p in plans}
    # one vamp per distinct chord, always allowed; Am7's vamp uses bar 2, which Am7 itself rings into
    vamps = [p for p in plans if p.name == "vamp"]
    assert sorted(p.symbols[0] for p in vamps) == ["Am7", "Cmaj7", "Dm7"]
    assert all(p.allowed for p in vamps) and by_order[(2, 2, 2, 2)].allowed
    assert by_order[(2, 2, 3, 3)].allowed and by_order[(2, 3, 2, 3)].allowed
    assert by_order[(2, 2, 3, 3)].symbols == ("Am7", "Am7", "Dm7", "Dm7")
    refused = [p for p in plans if not p.allowed]
    assert refused and all(tuple(p.romans) not in allowed_romans and p.name != "vamp" for p in refused)
    assert (1, 2, 3, 4) not in by_order  # the source itself is no permutation
    # without a grammar only vamps pass
    assert {p.name for p in plan_splices(tpl) if p.allowed} == {"vamp"}


def test_splice_labels_follow_bar_for_bar():
    tpl = make_template()
    out = splice_template(tpl, (3, 3, 1, 4))
    assert out.bars == 4 and out.key == tpl.key and out.bpm == tpl.bpm
    assert [c.bar for c in out.chords] == [1, 2, 3, 4]
    assert [c.symbol for c in out.chords] == ["Dm7", "Dm7", "Am7", "Cmaj7"]
    assert [c.pitch_classes for c in out.chords] == [NOTE_PCS[s] for s in ("Dm7", "Dm7", "Am7", "Cmaj7")]
    assert out.id != tpl.id and out.id == splice_template(tpl, (3, 3, 1, 4)).id
    with pytest.raises(FarmError, match="bar 5"):
        splice_template(tpl, (1, 5))


def generated(style, meter, bars):
    """The first template of ``style`` (seeds 0, 1, ...) in ``meter`` with ``bars`` bars, and its grammar."""
    from farm.templates import find_rules, generate_template, load_rules, progression_is_valid

    rules = load_rules(find_rules(style))
    for seed in range(100):
        tpl = generate_template(rules, seed, bars=bars).template
        if str(tpl.meter) == meter and len({c.symbol for c in tpl.chords}) >= 2:
            return tpl, lambda romans: progression_is_valid(rules, romans, looping=True, mode=tpl.key.mode)
    raise AssertionError(f"no {meter} {style} template")


@pytest.mark.parametrize("bars", [2, 4, 8])
@pytest.mark.parametrize("style,meter", [("lofi-hiphop", "4/4"), ("pop-ballad", "3/4"), ("cinematic-minor", "6/8")])
def test_every_pattern_is_planned_on_2_4_and_8_bar_loops_in_any_meter(style, meter, bars):
    tpl, grammar = generated(style, meter, bars)
    patterns = ("AABB", "ABAB", "AAAA")
    plans = plan_splices(tpl, grammar, patterns)

    def chord(bar):
        return tpl.chords[bar - 1].symbol, tpl.chords[bar - 1].pitch_classes

    distinct = {chord(b) for b in range(1, bars + 1)}
    # one vamp (AAAA of a chord) per distinct chord, always allowed; AAAA plans nothing more
    vamps = [p for p in plans if p.name == "vamp"]
    assert sorted(chord(p.bar_order[0]) for p in vamps) == sorted(distinct)
    assert all(p.allowed and p.bar_order == (p.bar_order[0],) * bars for p in vamps)
    assert "AAAA" not in {p.name for p in plans}
    orders = [p.bar_order for p in plans]
    assert len(set(orders)) == len(orders) and tuple(range(1, bars + 1)) not in orders
    for p in plans:
        assert len(p.bar_order) == bars and all(1 <= b <= bars for b in p.bar_order)
        assert p.romans == tuple(tpl.chords[b - 1].roman for b in p.bar_order)
        assert p.allowed == (len({chord(b) for b in p.bar_order}) == 1 or grammar(p.romans)), p
        if p.name != "vamp":  # the pattern tiled over the bars: same letter <-> same chord
            letters = [p.name[k % len(p.name)] for k in range(bars)]
            assert all((letters[i] == letters[j]) == (chord(p.bar_order[i]) == chord(p.bar_order[j]))
                       for i in range(bars) for j in range(bars)), p
    # every two-chord pattern that fits the loop's length is planned for every pair of chords
    # (AABB on 2 bars is AA: a vamp)
    pairs = len(distinct) * (len(distinct) - 1)
    assert sum(p.name == "ABAB" for p in plans) == pairs - (bars == 2 and len(distinct) == 2)
    assert sum(p.name == "AABB" for p in plans) == (pairs if bars >= 4 else 0)
    # labels follow bar for bar, in the source's meter, at exact bar lengths
    for p in plans:
        new = splice_template(tpl, p.bar_order)
        assert (new.meter, new.bpm, new.key, new.bars) == (tpl.meter, tpl.bpm, tpl.key, bars)
        assert [(c.bar, c.symbol, c.roman, c.pitch_classes) for c in new.chords] == [
            (k, *(getattr(tpl.chords[b - 1], f) for f in ("symbol", "roman", "pitch_classes")))
            for k, b in enumerate(p.bar_order, start=1)]
        assert new.loop_samples(SR) == tpl.loop_samples(SR)


@pytest.mark.parametrize("meter,bpm,symbols,order", [
    ("4/4", 120.0, ("Am7", "Am7", "Dm7", "Cmaj7"), (3, 1, 1, 4)),
    ("3/4", 97.0, ("Am7", "Am7", "Dm7", "Cmaj7"), (3, 1, 1, 4)),
    ("6/8", 133.3, ("Am7", "Am7", "Dm7", "Cmaj7"), (3, 1, 1, 4)),
    ("3/4", 101.0, ("Am7", "Dm7"), (1, 1)),  # a 2-bar loop's vamp
    ("6/8", 127.0, ("Am7", "Am7", "Dm7", "Cmaj7", "Am7", "E7", "Dm7", "E7"), (3, 3, 6, 6, 3, 3, 6, 6)),  # AABB, 8 bars
])
def test_splice_audio_cuts_at_exact_bars_and_is_click_free(meter, bpm, symbols, order):
    tpl = make_template(symbols, bpm=bpm, meter=meter)
    src = chord_loop(tpl)
    out = splice_audio(src, tpl, order, SR)
    new = splice_template(tpl, order)
    assert out.dtype == np.float32 and out.shape == (2, new.loop_samples(SR))
    # away from the joints every new bar is its source bar, sample for sample
    for k, bar in enumerate(order, start=1):
        lo, hi = new.bar_start_sample(k, SR), new.bar_start_sample(k + 1, SR)
        s = tpl.bar_start_sample(bar, SR)
        np.testing.assert_array_equal(out[:, lo + 200:hi - 200], src[:, s + 200:s + hi - lo - 200])
    # steps across each joint (and across the loop's own seam) no bigger than the source's own steps
    # (the largest neighbouring-sample step anywhere in it; an equal-power fade of two phases of the
    # same tones can raise the level, and so the slope, by up to sqrt(2))
    typical = 1.5 * float(np.max(np.abs(np.diff(src, axis=1))))
    looped = np.concatenate([out, out[:, :1000]], axis=1)
    naive = np.concatenate([src[:, tpl.bar_start_sample(b, SR):tpl.bar_start_sample(b + 1, SR)] for b in order], axis=1)
    naive_steps = []
    for k in range(1, len(order) + 1):
        at = new.bar_start_sample(k, SR) if k > 1 else new.loop_samples(SR)
        assert max_step(looped, at - 400, at + 400) <= typical
        if k > 1:
            naive_steps.append(max_step(naive, at - 400, at + 400))
    # uncrossfaded, the same joints click (not on a 2-bar loop: every sine of the synthetic loop,
    # whole cycles per loop, crosses zero at both of its bar lines, so a hard cut there steps little)
    if len(order) > 2:
        assert min(naive_steps) > 1.3 * typical


def test_splice_rejects_audio_of_the_wrong_length():
    tpl = make_template()
    with pytest.raises(FarmError, match="expected"):
        splice_audio(np.zeros((2, 1000), np.float32), tpl, (1, 1, 1, 1), SR)


# -- pitch and stretch labels -------------------------------------------------------------------
@pytest.mark.parametrize("key,n,expected", [
    (Key("A", "minor"), 1, "Bbm"), (Key("A", "minor"), 2, "Bm"), (Key("A", "minor"), -1, "G#m"),
    (Key("C", "major"), 1, "Db"), (Key("C", "major"), -1, "B"), (Key("E", "minor"), -1, "Ebm"),
    (Key("D", "dorian"), 2, "Edor"), (Key("F", "major"), 1, "F#"), (Key("A", "harmonic_minor"), 1, "Bbm"),
])
def test_transposed_key_is_spelled_with_fewest_accidentals(key, n, expected):
    assert transpose_key(key, n).short == expected


def test_transposed_keys_agree_with_music21_for_every_key_and_shift():
    """transpose_key counts key signatures on the circle of fifths; music21 counts them its own way."""
    from music21 import pitch

    from farm.theory import music21_key, spell_name

    for mode in ("major", "minor", "harmonic_minor", "dorian"):
        for tonic in ("C", "C#", "Db", "D", "Eb", "E", "F", "F#", "Gb", "G", "Ab", "A", "Bb", "B"):
            assert Key(tonic, mode).sharps == music21_key(tonic, mode).sharps, (tonic, mode)
            for n in range(-6, 7):
                pc = (Key(tonic, mode).tonic_pc + n) % 12
                first = pitch.Pitch(pc)
                names = {spell_name(p.name) for p in [first, *first.getAllCommonEnharmonics()] if len(p.name) <= 2}
                flats = mode in ("minor", "harmonic_minor")
                expected = min(names, key=lambda name: (abs(s := music21_key(name, mode).sharps),
                                                        (s > 0) if flats else (s < 0), name))
                assert transpose_key(Key(tonic, mode), n).tonic == expected, (tonic, mode, n)


def test_transposed_labels_move_every_chord_and_keep_romans():
    tpl = make_template(("Am7", "Dm7", "E7", "Cmaj7"))
    up = transpose_template(tpl, 1)
    assert up.key == Key("Bb", "minor")
    assert [c.symbol for c in up.chords] == ["Bbm7", "Ebm7", "F7", "Dbmaj7"]
    assert [c.roman for c in up.chords] == [c.roman for c in tpl.chords]
    assert [c.pitch_classes for c in up.chords] == [tuple((p + 1) % 12 for p in c.pitch_classes) for c in tpl.chords]
    down = transpose_template(tpl, -2)
    assert [c.symbol for c in down.chords] == ["Gm7", "Cm7", "D7", "Bbmaj7"]
    assert down.bpm == tpl.bpm and down.bars == tpl.bars


def test_the_reference_example_shifted_up_two():
    # Am7 Am7 Dm7 Cmaj7 up 2 semitones is Bm7 Bm7 Em7 Dmaj7, in B minor
    up = transpose_template(make_template(("Am7", "Am7", "Dm7", "Cmaj7")), 2)
    assert up.key == Key("B", "minor") and [c.symbol for c in up.chords] == ["Bm7", "Bm7", "Em7", "Dmaj7"]


def parse_symbol(symbol):
    """``"F#m7/C#"`` -> ``("F#", "m7", "C#")``; no slash bass -> bass ``None``."""
    import re

    root, rest = re.match(r"^([A-G][#b]?)(.*)$", symbol).groups()
    bass = None
    if re.search(r"/[A-G][#b]?$", rest):
        rest, bass = rest.rsplit("/", 1)
    return root, rest, bass


def test_shifted_labels_are_exact_in_every_rule_sets_keys_and_shift_back():
    """Every chord of generated templates of every rule set (keys with sharps and with flats, every
    mode), shifted by -6..+6 semitones: the key's tonic moves by the shift; every chord keeps its
    roman numeral and bar, its pitch classes, root and bass move by the shift; its symbol names
    exactly those pitch classes (root note, quality from the intervals, slash bass) and spells the
    root as music21 spells the roman numeral in the new key; shifting back gives the labels back."""
    from music21 import roman as m21roman

    from farm.model import note_name_to_pc
    from farm.templates import generate_template, list_styles
    from farm.theory import QUALITIES, music21_figure, music21_key

    keys = set()
    for rules in list_styles():
        for seed in range(3):
            tpl = generate_template(rules, seed, bars=4).template
            for n in [n for n in range(-6, 7) if n]:
                new = transpose_template(tpl, n)
                keys |= {tpl.key.tonic, new.key.tonic}
                assert new.key.mode == tpl.key.mode and new.key.tonic_pc == (tpl.key.tonic_pc + n) % 12
                assert abs(music21_key(new.key.tonic, new.key.mode).sharps) <= 6
                assert (new.bpm, new.meter, new.bars) == (tpl.bpm, tpl.meter, tpl.bars)
                for old, moved in zip(tpl.chords, new.chords, strict=True):
                    assert (moved.bar, moved.roman) == (old.bar, old.roman)
                    assert moved.pitch_classes == tuple((pc + n) % 12 for pc in old.pitch_classes)
                    assert (moved.root_pc, moved.bass_pc) == ((old.root_pc + n) % 12, (old.bass_pc + n) % 12)
                    root, quality, bass = parse_symbol(moved.symbol)
                    assert note_name_to_pc(root) == moved.root_pc, moved
                    intervals = frozenset((pc - moved.root_pc) % 12 for pc in moved.pitch_classes)
                    assert quality == QUALITIES[intervals][0], moved
                    assert note_name_to_pc(bass or root) == moved.bass_pc, moved
                    rn = m21roman.RomanNumeral(music21_figure(moved.roman), music21_key(new.key.tonic, new.key.mode))
                    assert {p.pitchClass for p in rn.pitches} == set(moved.pitch_classes), moved
                    if "##" not in rn.root().name and "--" not in rn.root().name:  # symbols use single accidentals
                        assert root == rn.root().name.replace("-", "b"), (new.key, moved)
                back = transpose_template(new, -n)
                assert (back.key, back.chords) == (tpl.key, tpl.chords), (tpl.key, n)
    assert any("#" in k for k in keys) and any("b" in k for k in keys)


def test_retempo_changes_bpm_and_exact_length():
    tpl = make_template(bpm=120.0)
    fast = retempo_template(tpl, 125.0)
    assert fast.bpm == 125.0 and fast.chords == tpl.chords
    assert fast.loop_samples(SR) == loop_samples(4, Meter(4, 4), 125.0, SR)


# -- pitch and stretch audio --------------------------------------------------------------------
def test_stretched_loop_is_exactly_its_bars_at_the_new_tempo_and_seamless():
    tpl = make_template(("Am7", "Am7", "Am7", "Am7"), bpm=120.0)
    src = chord_loop(tpl)
    for bpm in (117.0, 123.0):
        out = stretch_to_bpm(src, tpl, bpm, SR, high_quality=False)
        assert out.dtype == np.float32
        assert out.shape == (2, loop_samples(4, Meter(4, 4), bpm, SR))
        assert seam_step_ratio(out) <= 1.5
        # level kept: Rubber Band neither dropped nor doubled the signal
        assert 0.5 < np.sqrt(np.mean(out ** 2)) / np.sqrt(np.mean(src ** 2)) < 2


def test_shift_and_stretch_refuse_bad_input():
    loop = chord_loop(make_template())
    with pytest.raises(FarmError, match="0 samples"):
        time_stretch(loop, SR, 0)
    with pytest.raises(FarmError, match="channels, samples"):
        pitch_shift(loop[0], SR, 1)
    with pytest.raises(FarmError, match="whole semitones"):
        transpose_template(make_template(), 0.5)
    with pytest.raises(FarmError, match="positive"):
        retempo_template(make_template(), 0)


def test_pitch_shift_keeps_length_and_seam_and_moves_every_tone():
    tpl = make_template(("Am7", "Am7", "Am7", "Am7"))
    src = chord_loop(tpl)
    out = pitch_shift(src, SR, 2)
    assert out.shape == src.shape and out.dtype == np.float32
    assert seam_step_ratio(out) <= 1.5
    spectrum = np.abs(np.fft.rfft(out[0])) ** 2
    freqs = np.fft.rfftfreq(out.shape[1], 1 / SR)

    def energy(f):
        return spectrum[np.abs(freqs - f) <= 1.5].sum()

    tones = [base * 2 ** ((pc - 9) / 12) for pc in NOTE_PCS["Am7"] for base in (220, 440)]
    moved = [f * 2 ** (2 / 12) for f in tones]
    gone = [f for f in tones if min(abs(f - m) for m in moved) > 5]  # tones the shift leaves nowhere
    assert min(energy(f) for f in moved) > 100 * max(energy(f) for f in gone)


# -- bleed on synthetic audio -------------------------------------------------------------------
def test_bleed_measure_passes_a_dry_loop_and_catches_a_ringing_tail():
    tpl = make_template(("Am7", "Dm7", "E7", "Cmaj7"))
    # each bar's chord rings on into the next as loud as it was, dying away over ~0.5 s (long delay)
    dry, wet = chord_loop(tpl), chord_loop(tpl, tail=1.0)
    caught = [(2, 2, 2, 2), (3, 3, 3, 3), (4, 4, 4, 4), (1, 1, 3, 3), (2, 1, 4, 3)]
    for order in caught + [(1, 1, 1, 1)]:
        cuts = measure_bleed(dry, splice_audio(dry, tpl, order, SR), tpl, order, SR)
        assert cuts and all(c.bleed < 0.02 for c in cuts)
        assert bleed_verdict(cuts)[0]
    for order in caught:
        cuts = measure_bleed(wet, splice_audio(wet, tpl, order, SR), tpl, order, SR)
        passed, reason = bleed_verdict(cuts)
        worst = max(c.bleed for c in cuts)
        assert not passed and worst > DEFAULT_BLEED_THRESHOLD
        assert f"bleed {worst:.3f}" in reason and "threshold 0.100" in reason
    # Cmaj7 ringing into an Am7 vamp brings one foreign tone (B) of four: measured, and smaller
    cuts = measure_bleed(wet, splice_audio(wet, tpl, (1, 1, 1, 1), SR), tpl, (1, 1, 1, 1), SR)
    assert 0.03 < max(c.bleed for c in cuts) < DEFAULT_BLEED_THRESHOLD
    # source neighbours are no cut: nothing is measured there
    assert [c.bar for c in measure_bleed(wet, splice_audio(wet, tpl, (1, 2, 3, 3), SR), tpl, (1, 2, 3, 3), SR)] == [1, 4]


def test_bleed_measure_discounts_the_chords_own_partials():
    """A tone outside the chord that sounds all through the bar (a partial, a drone, a drum) is
    the chord's own sound, not bleed: the baseline at the end of the bar holds it too."""
    tpl = make_template(("Am7", "Am7", "Dm7", "Dm7"))
    src = chord_loop(tpl)
    t = np.arange(src.shape[1]) / SR
    drone = 0.15 * periodic_sine(440 * 2 ** (2 / 12), t, src.shape[1] / SR)  # B, foreign to both chords
    src = (src + drone.astype(np.float32)).astype(np.float32)
    order = (3, 3, 1, 1)
    cuts = measure_bleed(src, splice_audio(src, tpl, order, SR), tpl, order, SR)
    assert min(c.share for c in cuts) > 0.05  # the drone is foreign energy right after the cut ...
    assert all(c.bleed < 0.02 for c in cuts)  # ... but not brought in by the cut


def test_bleed_threshold_is_configurable():
    tpl = make_template(("Am7", "Dm7", "E7", "Cmaj7"))
    wet = chord_loop(tpl, tail=1.0)
    order = (3, 3, 3, 3)
    cuts = measure_bleed(wet, splice_audio(wet, tpl, order, SR), tpl, order, SR)
    worst = max(c.bleed for c in cuts)
    assert not bleed_verdict(cuts, worst - 0.01)[0]
    assert bleed_verdict(cuts, worst + 0.01)[0]


# -- on rendered loops (FluidSynth + pedalboard) --------------------------------------------------
PROGRESSION = ("i7", "iv7", "V7", "VI7")  # Am7 Dm7 E7 Fmaj7 in A minor


def write_chord_template(directory, romans=PROGRESSION, tonic="A", mode="minor", bpm=120.0, meter="4/4"):
    """A template whose chords part strikes each bar's chord on its downbeat and half-way through
    the bar (block chords over the bass note), labelled with the project's own spelling (farm.theory)."""
    import pretty_midi

    from farm.theory import spell_chord

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm, resolution=480)
    inst = pretty_midi.Instrument(program=0, name="chords")
    bar_s = float(Meter.parse(meter).quarters_per_bar) * 60.0 / bpm
    chords = []
    for i, roman in enumerate(romans):
        s = spell_chord(roman, tonic, mode)
        chords.append(ChordLabel(i + 1, s.symbol, s.roman, s.root_pc, s.pitch_classes, s.bass_pc))
        for pitch in [48 + s.bass_pc] + [60 + pc for pc in s.pitch_classes]:
            for half in (0.0, 0.5):
                start = (i + half) * bar_s
                inst.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=start, end=start + bar_s / 2))
    pm.instruments.append(inst)
    directory.mkdir(parents=True, exist_ok=True)
    pm.write(str(directory / "chords.mid"))
    return Template(id="rendered", style="lofi-hiphop", seed=0, key=Key(tonic, mode), bpm=bpm, meter=Meter.parse(meter),
                    bars=len(romans), ppq=480, chords=tuple(chords),
                    parts=(PartInfo("chords", "chords.mid", len(inst.notes)),), generator_version="test")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The same chords part rendered through a dry patch, a dry distorted organ (whose own partials
    fall outside the chord) and a long delay/reverb patch."""
    from farm.patches import load_patch
    from farm.render import RenderJob, get_backend, render_loops

    directory = tmp_path_factory.mktemp("template")
    tpl = write_chord_template(directory)
    backend = get_backend("embedded")
    names = ("dry-piano-chords", "dub-delay-keys", "organ-stabs")
    dry, wet, stabs = render_loops([RenderJob(tpl, directory, "chords", load_patch(name)) for name in names], backend)
    return tpl, dry.audio, wet.audio, stabs.audio


def chord_tone_share(audio, template):
    """Per bar, the share of chroma energy at the bar's labelled pitch classes."""
    from farm.audio import bar_chroma

    chroma = bar_chroma(audio, SR, template)
    return [float(chroma[i][list(c.pitch_classes)].sum()) for i, c in enumerate(template.chords)]


SPLICES = [(1, 1, 1, 1), (2, 2, 2, 2), (3, 3, 3, 3), (4, 4, 4, 4), (1, 1, 2, 2), (1, 2, 1, 2), (3, 3, 4, 4),
           (2, 1, 4, 3)]


def test_rendered_dry_splices_pass_and_delay_splices_are_caught(rendered):
    tpl, dry, wet, stabs = rendered
    for audio in (dry, stabs):
        for order in SPLICES:
            passed, reason = bleed_verdict(measure_bleed(audio, splice_audio(audio, tpl, order, SR), tpl, order, SR))
            assert passed, (order, reason)
    caught = 0
    for order in SPLICES:
        cuts = measure_bleed(wet, splice_audio(wet, tpl, order, SR), tpl, order, SR)
        passed, reason = bleed_verdict(cuts)
        # a cut that brings in a chord with two or more tones foreign to the new bar must be caught
        loud = [c for c in cuts if len(set(tpl.chords[(c.to_bar - 2) % 4].pitch_classes)
                                       - set(tpl.chords[c.to_bar - 1].pitch_classes)) >= 2]
        if loud:
            assert not passed and "> threshold" in reason, (order, reason)
        caught += not passed
    assert caught >= len(SPLICES) - 2


def test_rendered_splice_joints_are_click_free(rendered):
    tpl, dry, wet, _ = rendered
    for audio in (dry, wet):
        largest = float(np.max(np.abs(np.diff(audio, axis=1))))
        for order in [(3, 1, 1, 4), (2, 2, 2, 2)]:
            out = splice_audio(audio, tpl, order, SR)
            new = splice_template(tpl, order)
            looped = np.concatenate([out[:, -300:], out, out[:, :300]], axis=1)
            for k in range(1, 5):
                at = new.bar_start_sample(k, SR) + 300
                assert max_step(looped, at - 300, at + 300) <= largest


@pytest.mark.parametrize("meter,bpm", [("3/4", 100.0), ("6/8", 131.0)])
def test_rendered_splices_in_3_4_and_6_8_cut_on_the_bar_lines(tmp_path, meter, bpm):
    """A rendered loop in 3/4 or 6/8, spliced: every new bar is its source bar sample for sample,
    its chord's attack lands on the new bar line, and its chroma matches its new label."""
    from farm.patches import load_patch
    from farm.qa import HOP, onset_times
    from farm.render import RenderJob, get_backend, render_loops

    tpl = write_chord_template(tmp_path, bpm=bpm, meter=meter)
    [loop] = render_loops([RenderJob(tpl, tmp_path, "chords", load_patch("dry-piano-chords"))], get_backend("embedded"))
    src = loop.audio
    assert src.shape[1] == tpl.loop_samples(SR)
    for order in [(2, 2, 1, 1), (3, 3, 3, 3), (4, 2, 4, 2)]:
        out = splice_audio(src, tpl, order, SR)
        new = splice_template(tpl, order)
        assert out.shape == (2, new.loop_samples(SR))
        bar_lines = [new.bar_start_sample(k, SR) for k in range(1, 6)]
        for k, bar in enumerate(order):
            lo, hi, at = bar_lines[k], bar_lines[k + 1], tpl.bar_start_sample(bar, SR)
            np.testing.assert_array_equal(out[:, lo + 100:hi - 100], src[:, at + 100:at + hi - lo - 100])
        # an attack is seen by the onset detector one or two hops before it lands (the loop's
        # first downbeat at its end: the detector reads the loop circularly)
        onsets = np.round(onset_times(out, SR) * SR)
        for line in bar_lines[:4]:
            early = (line - onsets) % bar_lines[4]
            assert np.any((early <= 2.5 * HOP) | (early >= bar_lines[4] - 0.5 * HOP)), (order, line, onsets)
        assert min(chord_tone_share(out, new)) >= 0.7


def test_pitch_shifted_loops_pass_the_chroma_test_against_their_new_labels(rendered):
    tpl, dry, _, _ = rendered
    assert min(chord_tone_share(dry, tpl)) >= 0.7  # the source passes it against its own labels
    for n in (-2, -1, 1, 2):
        shifted = pitch_shift(dry, SR, n)
        labels = transpose_template(tpl, n)
        shares = chord_tone_share(shifted, labels)
        assert min(shares) >= 0.7, (n, shares)
        assert seam_step_ratio(shifted) <= 1.0
        # and fails against the old labels: the test can tell
        assert min(chord_tone_share(shifted, tpl)) < 0.5


def test_rendered_stretch_has_the_exact_new_length(rendered):
    tpl, _, wet, _ = rendered
    for bpm in (115.0, 125.0):
        out = stretch_to_bpm(wet, tpl, bpm, SR)
        new = retempo_template(tpl, bpm)
        assert out.shape == (2, new.loop_samples(SR)) == (2, loop_samples(4, Meter(4, 4), bpm, SR))
        assert min(chord_tone_share(out, new)) >= 0.7
        assert seam_step_ratio(out) <= 1.0  # the seam steps no more than the loop does anywhere


# -- the stage: catalog rows, lineage, idempotence, CLI -------------------------------------------
BATCH_TOML = """
root = "{root}"
styles = ["lofi-hiphop"]
templates_per_style = 1
seed = 5
bars = 2
parts = ["chords"]
patches = ["dry-piano-chords"]
workers = 1
{extra}
"""


def run_night(tmp_path, extra=""):
    from farm.batch import load_config, run_batch

    root = tmp_path / "library"
    config = tmp_path / "night.toml"
    config.write_text(BATCH_TOML.format(root=root, extra=extra))
    run_batch(load_config(config), progress=False)
    return root


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A catalog holding one rendered chords loop (made by a real batch)."""
    return run_night(tmp_path_factory.mktemp("night"))


@pytest.fixture()
def catalog_copy(library, tmp_path):
    import shutil

    root = tmp_path / "library"
    shutil.copytree(library, root)
    return root


def rows(root, sql, params=()):
    import sqlite3

    con = sqlite3.connect(root / "catalog.db")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def test_farm_permute_catalogues_labelled_permutations_with_lineage_once(catalog_copy):
    import json

    from click.testing import CliRunner

    from farm.audio import integrated_lufs, read_audio, true_peak_dbtp
    from farm.catalog import check_catalog
    from farm.cli import main
    from farm.model import loop_content_id
    from farm.permute import derived_id

    root = catalog_copy
    [parent] = rows(root, "SELECT * FROM loops")
    parent_tpl = Template.load(root / "templates" / parent["template_id"])
    args = ["permute", "--root", str(root), "--where", "part = 'chords'", "--ops", "splice,pitch,stretch,repatch",
            "--semitones", "1", "--bpm-steps", "1", "--pattern", "AABB", "--patch", "dub-delay-keys",
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "1 parent loops" in result.output
    children = rows(root, "SELECT * FROM loops WHERE parent_id IS NOT NULL")
    ops = sorted({c["operation"] for c in children})
    assert ops == ["pitch", "repatch", "splice", "stretch"]
    for child in children:
        params = json.loads(child["params"])
        assert child["parent_id"] == parent["id"]
        if child["operation"] == "repatch":  # the render of the part through that patch: the render's id
            assert child["id"] == loop_content_id(parent["template_id"], parent["part"], params["patch_hash"],
                                                  parent["renderer"], parent["renderer_version"],
                                                  parent["sample_rate"], parent["format"])
        else:
            assert child["id"] == derived_id(parent["id"], child["operation"], params)
        assert child["status"] in ("pending", "rejected") and (child["status"] == "pending") == (child["reject_reason"] is None)
        chords = rows(root, "SELECT * FROM chords WHERE loop_id = ? ORDER BY bar", [child["id"]])
        audio, sr = read_audio(root / child["path"])
        assert audio.shape == (2, child["samples"]) and sr == parent["sample_rate"]
        # the loudness and true peak the catalog keeps are the written file's
        assert child["lufs"] == pytest.approx(integrated_lufs(audio, sr), abs=1e-3)
        assert child["true_peak_db"] == pytest.approx(true_peak_dbtp(audio), abs=1e-3)
        # the words a loop is found by follow its own labels, not its parent's
        tags = child["tags"].split()
        assert {child["key"], f"{child['bpm']:g}bpm", child["patch"], child["operation"]} <= set(tags)
        if child["key"] != parent["key"]:
            assert parent["key"] not in tags
        if child["bpm"] != parent["bpm"]:
            assert f"{parent['bpm']:g}bpm" not in tags
        if child["operation"] == "pitch":
            expected = transpose_template(parent_tpl, params["semitones"])
            assert child["key"] == expected.key.short and child["bpm"] == parent["bpm"]
            assert [c["symbol"] for c in chords] == [c.symbol for c in expected.chords]
            assert [json.loads(c["pitch_classes"]) for c in chords] == [list(c.pitch_classes) for c in expected.chords]
            assert child["samples"] == parent["samples"] and child["midi"] is None
        elif child["operation"] == "stretch":
            assert abs(child["bpm"] - parent["bpm"]) == 1 and child["bpm"] == params["bpm"]
            assert child["samples"] == loop_samples(parent["bars"], Meter.parse(parent["meter"]), params["bpm"], sr)
            assert child["key"] == parent["key"] and [c["symbol"] for c in chords] == parent["progression"].split()
            assert chords[-1]["end_s"] == pytest.approx(child["samples"] / sr)
            assert child["duration_s"] == pytest.approx(child["samples"] / sr) != parent["duration_s"]
        elif child["operation"] == "splice":
            source = parent["progression"].split()
            assert child["progression"].split() == [source[b - 1] for b in params["bars"]]
            assert [c["bar"] for c in chords] == list(range(1, parent["bars"] + 1))
            assert child["status"] == "pending" or child["reject_reason"].startswith("splice bleed: bleed ")
        else:  # repatch: the same MIDI through another patch of the role, exactly a render
            from farm.patches import load_patch
            from farm.render import RenderJob, get_backend, render_loops

            assert child["patch"] == "dub-delay-keys" and child["midi"] == parent["midi"]
            assert child["progression"] == parent["progression"] and child["key"] == parent["key"]
            job = RenderJob(parent_tpl, root / "templates" / parent["template_id"], "chords",
                            load_patch("dub-delay-keys"), sr)
            [direct] = render_loops([job], get_backend("embedded"))
            assert np.max(np.abs(audio - direct.audio)) < 2.0 ** -22  # the same, to 24-bit FLAC precision
    assert check_catalog(root).ok  # every row has its file and sidecar, no leftovers
    # the same again makes nothing new
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and f"already catalogued: {len(children)}" in again.output
    assert len(rows(root, "SELECT id FROM loops")) == len(children) + 1


def test_permute_function_is_what_the_cli_runs(catalog_copy):
    from farm.permute import permute

    report = permute(catalog_copy, "1", ["stretch"], bpm_steps=1, progress=False)
    assert report.parents == 1 and report.made == {"stretch": 2} and report.skipped == 0
    made = rows(catalog_copy, "SELECT id, bpm FROM loops WHERE operation = 'stretch' ORDER BY bpm")
    assert [r["id"] for r in made] == sorted(report.ids, key=lambda i: [r["id"] for r in made].index(i))
    assert permute(catalog_copy, "1", ["stretch"], bpm_steps=1, progress=False).skipped == 2


def test_defaults_shift_two_semitones_and_stretch_five_bpm_each_way(catalog_copy, monkeypatch):
    """`farm permute` with no options, and a batch [permute] table that leaves them out, plan
    every operation, pitch shifts of -2, -1, +1, +2 semitones and stretches of -5..-1, +1..+5 BPM."""
    from click.testing import CliRunner

    from farm.cli import main
    from farm.permute import pipeline

    planned = []

    def plan_only(cat, settings, progress=True):
        planned.append((settings, pipeline.plan_tasks(cat, settings)))
        return pipeline.PermuteReport(parents=1)

    monkeypatch.setattr(pipeline, "run_stage", plan_only)
    result = CliRunner().invoke(main, ["permute", "--root", str(catalog_copy), "--no-progress"])
    assert result.exit_code == 0, result.output
    [(settings, tasks)] = planned
    assert settings == pipeline.PermuteSettings.from_table({"where": "1"})
    [parent] = rows(catalog_copy, "SELECT * FROM loops")
    by_op = {}
    for _, task in tasks:
        assert task["parent"]["id"] == parent["id"]
        by_op.setdefault(task["operation"], []).append(task["params"])
    assert set(by_op) == {"splice", "pitch", "stretch", "repatch"}
    assert sorted(p["semitones"] for p in by_op["pitch"]) == [-2, -1, 1, 2]
    steps = sorted(p["bpm"] - parent["bpm"] for p in by_op["stretch"])
    assert steps == pytest.approx([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5])
    assert settings.bleed_threshold == DEFAULT_BLEED_THRESHOLD == 0.10


def test_machine_checks_run_on_every_permutation(catalog_copy):
    """A permutation is checked like a render, with the batch's [qa] limits: it lands pending when
    it passes and rejected with the check's reason when it fails."""
    from farm.batch import Worker
    from farm.catalog import Catalog
    from farm.permute import PermuteSettings, permutation_task, plan_tasks
    from farm.qa import QALimits

    with Catalog(catalog_copy, create=False) as cat:
        [(loop_id, task)] = plan_tasks(cat, PermuteSettings(ops=("stretch",), bpm_steps=1, high_quality=False))[1:]
    [passed] = permutation_task(task, Worker(catalog_copy, "embedded", {}, QALimits()))
    assert passed["id"] == loop_id and passed["status"] == "pending" and passed["reject_reason"] is None
    strict = QALimits(silence_db=0.0)  # every loop is quieter than full scale
    [failed] = permutation_task(task, Worker(catalog_copy, "embedded", {}, strict))
    assert failed["status"] == "rejected" and failed["reject_reason"].startswith("silence: RMS ")
    assert failed["samples"] == passed["samples"] == loop_samples(
        passed["bars"], Meter.parse(passed["meter"]), passed["bpm"], passed["sample_rate"])


def test_a_permutation_whose_sidecar_cannot_be_written_leaves_no_audio_behind(catalog_copy, monkeypatch):
    """A full disk while writing the sidecar: the error reaches the caller and the audio written a
    moment before is removed, so no file is ever left without its row."""
    import errno

    import farm.sidecar
    from farm.batch import Worker
    from farm.catalog import Catalog
    from farm.permute import PermuteSettings, permutation_task, plan_tasks
    from farm.qa import QALimits

    with Catalog(catalog_copy, create=False) as cat:
        [(loop_id, task)] = plan_tasks(cat, PermuteSettings(ops=("stretch",), bpm_steps=1, high_quality=False))[1:]
    audio_before = sorted(p for p in (catalog_copy / "loops").rglob("*.flac"))

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(farm.sidecar, "write_sidecar", full_disk)
    with pytest.raises(OSError):
        permutation_task(task, Worker(catalog_copy, "embedded", {}, QALimits()))
    assert sorted(p for p in (catalog_copy / "loops").rglob("*.flac")) == audio_before
    assert not [p for p in (catalog_copy / "loops").rglob("*") if loop_id in p.name]


@pytest.mark.parametrize("args,field", [
    (["--ops", "splice,reverse"], "ops"),
    (["--semitones", "13"], "semitones"),
    (["--bleed-threshold", "1.5"], "bleed_threshold"),
    (["--where", "no_such_column = 1"], "where"),
    (["--where", "bpm >"], "where"),
    (["--pattern", "aabb"], "patterns"),
])
def test_bad_permute_input_is_one_error_line_and_changes_nothing(catalog_copy, args, field):
    from click.testing import CliRunner

    from farm.cli import main

    before = rows(catalog_copy, "SELECT count(*) AS n FROM loops")[0]["n"]
    result = CliRunner().invoke(main, ["permute", "--root", str(catalog_copy), "--no-progress", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{field}:" in lines[0], result.output
    assert rows(catalog_copy, "SELECT count(*) AS n FROM loops")[0]["n"] == before


def test_permute_without_a_catalog_says_so(tmp_path):
    from click.testing import CliRunner

    from farm.cli import main

    result = CliRunner().invoke(main, ["permute", "--root", str(tmp_path / "nowhere"), "--no-progress"])
    assert result.exit_code == 2 and "catalog.db" in result.output and not (tmp_path / "nowhere").exists()


def test_batch_permute_stage_runs_from_the_batch_toml(tmp_path):
    import json

    root = run_night(tmp_path, extra='[permute]\nops = ["splice", "pitch"]\nsemitones = 1\npatterns = []\n'
                                      'bleed_threshold = 0.2\nwhere = "part = \'chords\'"\n')
    [parent] = rows(root, "SELECT * FROM loops WHERE operation = 'render'")
    children = rows(root, "SELECT * FROM loops WHERE parent_id = ?", [parent["id"]])
    assert sorted(json.loads(c["params"]).get("semitones", 0) for c in children if c["operation"] == "pitch") == [-1, 1]
    assert {c["operation"] for c in children} == {"splice", "pitch"}
    assert all(c["batch_id"] == parent["batch_id"] for c in children)
    tasks = rows(root, "SELECT status FROM tasks WHERE stage = 'permute'")
    assert len(tasks) == len(children) and {t["status"] for t in tasks} == {"done"}
    # the same night again: every permutation is already catalogued
    run_night(tmp_path, extra='[permute]\nops = ["splice", "pitch"]\nsemitones = 1\npatterns = []\n'
                              'bleed_threshold = 0.2\nwhere = "part = \'chords\'"\n')
    assert len(rows(root, "SELECT id FROM loops")) == len(children) + 1


def test_batch_toml_permute_table_is_checked(tmp_path):
    from farm.batch import load_config

    config = tmp_path / "night.toml"
    config.write_text(BATCH_TOML.format(root=tmp_path / "library", extra="[permute]\nbleed_treshold = 0.2\n"))
    with pytest.raises(FarmError) as err:
        load_config(config)
    assert err.value.file == str(config) and err.value.field == "permute.bleed_treshold"
    config.write_text(BATCH_TOML.format(root=tmp_path / "library", extra="[permute]\nops = [\"reverse\"]\n"))
    with pytest.raises(FarmError, match="unknown operation 'reverse'"):
        load_config(config)


def test_permutations_are_the_same_bytes_in_a_fresh_process(library, tmp_path):
    import shutil
    import subprocess

    from farm.permute import permute

    here, there = tmp_path / "here", tmp_path / "there"
    shutil.copytree(library, here)
    shutil.copytree(library, there)
    permute(here, "1", ["splice", "stretch"], bpm_steps=1, progress=False)
    farm = Path(sys.executable).parent / "farm"
    subprocess.run([str(farm), "permute", "--root", str(there), "--ops", "splice,stretch", "--bpm-steps", "1",
                    "--no-progress"], check=True, capture_output=True)
    query = "SELECT id, sha256 FROM loops WHERE parent_id IS NOT NULL ORDER BY id"
    made = rows(here, query)
    assert len(made) >= 4 and made == rows(there, query)


def test_a_damaged_parent_file_is_one_line_pointing_to_farm_check(catalog_copy):
    """A catalogued loop cut short on disk: permute names the file, points to `farm check`, adds no row."""
    from click.testing import CliRunner

    from farm.cli import main

    [parent] = rows(catalog_copy, "SELECT path FROM loops WHERE operation = 'render'")
    path = catalog_copy / parent["path"]
    path.write_bytes(path.read_bytes()[:2000])
    before = rows(catalog_copy, "SELECT count(*) AS n FROM loops")[0]["n"]
    result = CliRunner().invoke(main, ["permute", "--root", str(catalog_copy), "--ops", "pitch", "--no-progress"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: {path}: ") and line.endswith("(run `farm check`)")
    assert rows(catalog_copy, "SELECT count(*) AS n FROM loops")[0]["n"] == before


def test_one_sound_has_one_id_a_repatch_is_the_render_it_equals(tmp_path):
    """A part repatched from two parents through the same patch, and rendered through that patch by
    a night, is one row: no two rows of a catalog hold the same audio."""
    from farm.batch import load_config, run_batch
    from farm.permute import permute

    root = tmp_path / "library"
    config = tmp_path / "night.toml"
    config.write_text("\n".join([
        f'root = "{root}"', 'styles = ["lofi-hiphop"]', "templates_per_style = 1", "seed = 4", "bars = 2",
        'parts = ["chords"]', 'patches = ["warm-rhodes", "mallet-keys"]', "workers = 1"]) + "\n")
    assert run_batch(load_config(config), progress=False).failed == 0
    report = permute(root, where="1", ops=["repatch"], patches=("dub-delay-keys",), progress=False)
    # two parents (warm-rhodes, mallet-keys) reach dub-delay-keys: one new loop
    assert len(rows(root, "SELECT id FROM loops WHERE operation = 'repatch'")) == 1
    # and a night rendering the part through dub-delay-keys finds it catalogued
    config.write_text(config.read_text().replace('"mallet-keys"]', '"mallet-keys", "dub-delay-keys"]'))
    again = run_batch(load_config(config), progress=False)
    assert again.new_loops == 0 and again.failed == 0
    duplicates = rows(root, "SELECT sha256, count(*) FROM loops GROUP BY sha256 HAVING count(*) > 1")
    assert duplicates == [] and report is not None


def test_permute_and_a_batch_never_write_a_catalog_together(catalog_copy):
    from click.testing import CliRunner

    from farm.catalog.lock import writer_lock
    from farm.cli import main
    from farm.permute import permute

    before = rows(catalog_copy, "SELECT id FROM loops")
    with writer_lock(catalog_copy, "batch"):  # a night (or its --resume reconcile) is writing
        with pytest.raises(FarmError, match=r"another batch is running on this catalog \(pid \d+\)"):
            permute(catalog_copy, where="1", ops=["pitch"], progress=False)
        result = CliRunner().invoke(main, ["permute", "--root", str(catalog_copy), "--ops", "pitch", "--no-progress"])
        assert result.exit_code == 2 and "another batch is running" in result.stderr
    assert rows(catalog_copy, "SELECT id FROM loops") == before
    with writer_lock(catalog_copy, "permute"):
        result = CliRunner().invoke(main, ["batch", "--resume", "--root", str(catalog_copy), "--no-progress"])
        assert result.exit_code == 2 and "another permute is running" in result.stderr


def test_a_nights_parents_do_not_depend_on_which_worker_finished_first(tmp_path):
    """Parents are taken newest batch first and by id inside a batch: rows written in another
    order (workers finishing in another order) give the same parents, so a night repeats."""
    import sqlite3

    from farm.catalog import Catalog
    from farm.permute.pipeline import PermuteSettings, select_parents
    from nights import make_night

    root = make_night(tmp_path, parts=("chords", "bass"), patches=("warm-rhodes", "dry-piano-chords", "sub-bass"))
    settings = PermuteSettings(where="1", limit=2)
    with Catalog(root) as cat:
        before = [row["id"] for row in select_parents(cat, settings)]
    with sqlite3.connect(root / "catalog.db") as db:  # the opposite insertion times
        ids = [r[0] for r in db.execute("SELECT id FROM loops ORDER BY id")]
        for i, loop_id in enumerate(ids):
            db.execute("UPDATE loops SET created_at = ? WHERE id = ?", (f"2026-01-01T00:00:{59 - i:02d}Z", loop_id))
    with Catalog(root) as cat:
        assert [row["id"] for row in select_parents(cat, settings)] == before == sorted(ids)[:2]
