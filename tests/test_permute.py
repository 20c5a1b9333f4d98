"""Permutations: splices, pitch shifts, stretches and re-patches keep their labels exact."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from farm.errors import FarmError
from farm.model import ChordLabel, Key, Meter, PartInfo, Template, loop_samples
from farm.permute.shift import (pitch_shift, retempo_template, stretch_to_bpm, time_stretch,
                                transpose_key, transpose_template)
from farm.permute.splice import (plan_splices, splice_audio, splice_template)

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


@pytest.mark.parametrize("meter,bpm", [("4/4", 120.0), ("3/4", 97.0), ("6/8", 133.3)])
def test_splice_audio_cuts_at_exact_bars_and_is_click_free(meter, bpm):
    tpl = make_template(bpm=bpm, meter=meter)
    src = chord_loop(tpl)
    order = (3, 1, 1, 4)
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
    assert min(naive_steps) > 1.3 * typical  # uncrossfaded, the same joints click


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
