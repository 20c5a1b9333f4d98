"""Onset fingerprints: where the hits are, in which band, on a 12-steps-per-beat grid, from the audio."""
from __future__ import annotations

import numpy as np
import pytest

from farm.fingerprint import pack, unpack
from farm.match import STEPS_PER_BEAT, Fingerprint, fingerprint


def drum_loop(sr: int, bpm: float, beats: int = 8) -> np.ndarray:
    """Kicks (a 55 Hz thump) on every beat, hats (high noise) on every off-beat eighth."""
    n = int(round(beats * 60 / bpm * sr))
    out = np.zeros(n)
    rng = np.random.default_rng(3)
    beat = 60 / bpm * sr
    for b in range(beats):
        at = int(round(b * beat))
        t = np.arange(int(0.25 * sr)) / sr
        kick = np.sin(2 * np.pi * 55 * t) * np.exp(-t / 0.06)
        out[at:at + kick.size] += kick[:n - at]
        hat_at = int(round((b + 0.5) * beat))
        hat = np.diff(rng.normal(0, 1, int(0.03 * sr) + 1)) * np.exp(-np.arange(int(0.03 * sr)) / sr / 0.008) * 0.3
        out[hat_at:hat_at + hat.size] += hat[:n - hat_at]
    return np.stack([out, out]).astype(np.float32)


@pytest.mark.parametrize("sr, bpm", [(44100, 120.0), (48000, 97.0), (44100, 174.0)])
def test_kicks_land_on_the_beats_in_the_low_band_and_hats_on_the_offbeats_in_the_high(sr, bpm):
    fp = fingerprint(drum_loop(sr, bpm), sr, bpm, beats=8)
    assert fp.onsets.shape == (3, 8 * STEPS_PER_BEAT) and fp.onsets.dtype == np.float32
    low, _mid, high = fp.onsets
    beats = np.arange(8) * STEPS_PER_BEAT
    offbeats = beats + STEPS_PER_BEAT // 2
    assert set(np.argsort(low)[-8:]) == set(beats)
    assert set(np.argsort(high)[-8:]) == set(offbeats)
    assert low[beats].min() > 3 * np.delete(low, beats).max()
    assert fp.energy[0] > fp.energy[2] and abs(float(fp.energy.sum()) - 1) < 1e-5


def test_the_grid_does_not_depend_on_tempo_or_sample_rate():
    a = fingerprint(drum_loop(44100, 120.0), 44100, 120.0, beats=8)
    b = fingerprint(drum_loop(48000, 90.0), 48000, 90.0, beats=8)
    assert a.steps == b.steps
    for band in (0, 2):  # the kicks' and the hats' steps are the same ones
        assert set(np.argsort(a.onsets[band])[-8:]) == set(np.argsort(b.onsets[band])[-8:])


def test_a_hit_on_the_first_step_counts_round_the_loop_and_silence_has_no_onsets():
    fp = fingerprint(drum_loop(44100, 120.0), 44100, 120.0, beats=8)
    assert fp.onsets[0, 0] > 0.5  # the kick on beat 1 rises from the loop's quiet end
    silent = fingerprint(np.zeros((2, 44100 * 2), np.float32), 44100, 120.0, beats=4)
    assert not silent.onsets.any() and not silent.energy.any()


def test_a_fingerprint_survives_json_and_is_the_same_every_time():
    loop = drum_loop(44100, 120.0)
    fp = fingerprint(loop, 44100, 120.0, beats=8)
    again = Fingerprint.from_dict(fp.to_dict())
    assert np.allclose(again.onsets, fp.onsets, atol=5e-5) and again.steps_per_beat == STEPS_PER_BEAT
    assert fingerprint(loop, 44100, 120.0, beats=8).to_dict() == fp.to_dict()


def test_a_packed_fingerprint_keeps_the_energies_and_the_onsets_to_a_255th():
    fp = fingerprint(drum_loop(44100, 120.0), 44100, 120.0, beats=8)
    onsets, energy = unpack(pack(fp.to_dict()))
    assert onsets.shape == fp.onsets.shape and np.abs(onsets - fp.onsets).max() <= 0.5 / 255 + 1e-4
    assert np.allclose(energy, np.round(fp.energy, 4))
    assert len(pack(fp.to_dict())) == 2 + 12 + 3 * 8 * STEPS_PER_BEAT


def test_a_too_short_loop_is_refused():
    with pytest.raises(ValueError):
        fingerprint(np.zeros((2, 10), np.float32), 44100, 120.0, beats=4)


def test_a_rendered_drum_loop_shows_its_kicks_in_the_low_band(tmp_path):
    """kit-909 on a four-on-the-floor deep-house template: every step where the MIDI has a kick
    is among the low band's strongest onsets, and the hats' steps light up the high band."""
    import pretty_midi

    from farm.model import Template
    from farm.render.run import render_part
    from test_render import make_template

    tdir = make_template(tmp_path, "deep-house", 2, bars=4)
    template = Template.load(tdir)
    audio, sr = render_part(tdir, "drums", "kit-909")
    beats = template.bars * template.quarters_per_bar
    fp = fingerprint(audio, sr, template.bpm, beats)
    step_s = 60 / template.bpm / STEPS_PER_BEAT
    notes = [n for i in pretty_midi.PrettyMIDI(str(tdir / template.part("drums").midi)).instruments for n in i.notes]
    kicks = {int(round(n.start / step_s)) % fp.steps for n in notes if n.pitch == 36}
    hats = {int(round(n.start / step_s)) % fp.steps for n in notes if n.pitch == 42} - kicks
    assert kicks and hats
    assert set(np.argsort(fp.onsets[0])[-len(kicks):]) == kicks
    hits = {int(round(n.start / step_s)) % fp.steps for n in notes}
    quiet = np.delete(fp.onsets[2], sorted(hits))  # steps where nothing is struck
    assert np.median(fp.onsets[2, sorted(hats)]) > 4 * max(np.percentile(quiet, 90), 0.01)


def test_every_loop_of_a_night_has_its_fingerprint_and_old_loops_get_one(tmp_path):
    """A night fingerprints every loop it makes (renders and permutations), in its row and its
    sidecar. A catalog from before fingerprints (rows and sidecars without one) is filled by
    `farm fingerprint`, with exactly what a night would have stored, and stays clean for `farm check`."""
    import json
    import sqlite3

    from click.testing import CliRunner

    from farm.catalog import check_catalog
    from farm.cli import main
    from farm.sidecar import read_sidecar
    from farm.batch import load_config, run_batch
    from nights import write_night

    root = tmp_path / "library"
    config = write_night(tmp_path / "night.toml", root, parts=("chords", "bass"), patches=("warm-rhodes", "sub-bass"))
    config.write_text(config.read_text() + '[permute]\nops = ["pitch"]\nwhere = "part = \'chords\'"\nsemitones = 1\n')
    assert run_batch(load_config(config), progress=False).failed == 0
    db = sqlite3.connect(root / "catalog.db")
    rows = dict(db.execute("SELECT id, fingerprint FROM loops").fetchall())
    ops = {r[0] for r in db.execute("SELECT operation FROM loops")}
    assert ops == {"render", "pitch"} and all(rows.values())
    for loop_id, sidecar in db.execute("SELECT id, sidecar FROM loops"):
        fp = read_sidecar(root / sidecar)["fingerprint"]
        assert fp == json.loads(rows[loop_id]) and len(fp["onsets"]) == 3 and fp["steps_per_beat"] == STEPS_PER_BEAT
    # as an older Loop Farm left it: no fingerprint in rows or sidecars
    packed = dict(db.execute("SELECT id, fp_packed FROM loops").fetchall())
    assert all(packed[i] == pack(json.loads(rows[i])) for i in rows)  # farm match's copy of it
    with db:
        db.execute("UPDATE loops SET fingerprint = NULL, fp_packed = NULL")
    for (sidecar,) in db.execute("SELECT sidecar FROM loops"):
        data = json.loads((root / sidecar).read_text())
        del data["fingerprint"]
        (root / sidecar).write_text(json.dumps(data))
    assert check_catalog(root).ok
    result = CliRunner().invoke(main, ["fingerprint", "--root", str(root), "--no-progress"])
    assert result.exit_code == 0 and result.output.strip() == f"fingerprinted {len(rows)} loops"
    assert dict(db.execute("SELECT id, fingerprint FROM loops").fetchall()) == rows
    assert dict(db.execute("SELECT id, fp_packed FROM loops").fetchall()) == packed
    assert check_catalog(root).ok
    again = CliRunner().invoke(main, ["fingerprint", "--root", str(root), "--no-progress"])
    assert again.output.strip() == "fingerprinted 0 loops"
