"""Loops that fit and construction kits: the matches say why, and a kit's mix holds its labels.

One small real night (lofi-hiphop, four parts, Faust patches) with pitch and stretch permutations
of its chords: kits built on those need the other parts moved, which the kit makes on demand.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile

from farm.audio import chroma, true_peak_dbtp
from farm.errors import FarmError
from farm.match import KitUnmet, build_kit, list_kits, match
from farm.match.fit import Bar, bar_fit, harmony, mask, rhythm, transpose_mask
from farm.model import Meter, loop_samples
from farm.permute import permute
from nights import make_night

FARM = str(Path(sys.executable).with_name("farm"))
PATCHES = ("analog-pad", "fm-bass", "pwm-lead", "kit-909")


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("kits")
    root = make_night(base, style="lofi-hiphop", bars=4, parts=("drums", "bass", "chords", "melody"),
                      patches=PATCHES, workers=2)
    permute(root, "part = 'chords'", ["pitch", "stretch"], semitones=1, bpm_steps=2, progress=False)
    return root


@pytest.fixture
def library(night, tmp_path) -> Path:
    """A copy of the night to build kits in."""
    return Path(shutil.copytree(night, tmp_path / "library"))


def rows(root: Path, sql: str, params=()) -> list[tuple]:
    with sqlite3.connect(root / "catalog.db") as conn:
        return conn.execute(sql, params).fetchall()


def one(root: Path, sql: str, params=()):
    return rows(root, sql, params)[0][0]


def farm(*args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([FARM, *args], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def chords_render(root: Path) -> str:
    return one(root, "SELECT id FROM loops WHERE part = 'chords' AND operation = 'render'")


def chords_permutation(root: Path, operation: str, param: str, value) -> str:
    return one(root, f"SELECT id FROM loops WHERE part = 'chords' AND operation = ? AND "
                     f"json_extract(params, '$.{param}') = ?", (operation, value))


# -- scores -------------------------------------------------------------------------------------
def test_chords_fit_by_shared_tones_in_the_key():
    c_major = mask([0, 2, 4, 5, 7, 9, 11])
    am, c, f_sharp = mask([9, 0, 4]), mask([0, 4, 7]), mask([6, 10, 1])
    assert bar_fit(am, am, c_major) == 1.0
    assert bar_fit(am, c, c_major) == 0.5 + 0.5 * 2 / 4  # two shared tones of four, all in C major
    assert bar_fit(am, f_sharp, c_major) == 0.0  # nothing shared, out of the key
    assert transpose_mask(mask([9, 0, 4]), 2) == mask([11, 2, 6])  # Am up a tone is Bm
    bars = (Bar(am, 9), Bar(c, 0))
    moved = (Bar(transpose_mask(am, -1), 8), Bar(transpose_mask(c, -1), 11))
    assert harmony(bars, moved, c_major, 1) == 1.0 and harmony(bars, moved, c_major, 0) < 0.5


def test_the_bass_locks_with_the_kick_more_than_with_the_kick_half_a_beat_late(night):
    bass, drums = (json.loads(one(night, "SELECT fingerprint FROM loops WHERE part = ? AND operation = 'render'",
                                  (part,)))["onsets"] for part in ("bass", "drums"))
    bass, drums = np.asarray(bass), np.asarray(drums)
    assert rhythm("bass", bass, "drums", drums) > rhythm("bass", bass, "drums", np.roll(drums, 6, axis=1)) + 0.1


# -- farm match ---------------------------------------------------------------------------------
def test_match_ranks_the_other_parts_and_says_why(night):
    found = match(night, chords_render(night))
    assert {m.part for m in found} == {"bass", "melody", "drums"}
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)
    for m in found:
        assert len(m.fit.why) == 3 and m.transform is None
        assert m.fit.why[0].startswith("harmony" if m.part != "drums" else "harmony: not scored")
        assert m.fit.why[1].startswith(f"rhythm {m.fit.rhythm:.2f}") and m.fit.why[2].startswith("spectrum")
    assert next(m for m in found if m.part == "bass").fit.harmony == 1.0  # the same template: the same chords
    cli = json.loads(farm("match", chords_render(night)[:8], "--json", "--root", str(night)).stdout)
    assert cli == [m.to_dict() for m in found]


def test_a_catalog_from_before_loops_harmony_matches_the_same_and_gains_it_on_its_next_write_open(library):
    """loops.harmony (schema 5) copies each loop's chords for farm match; a schema 4 catalog read
    as it is gives the same matches, and the next write open fills the column in from the chords."""
    from farm.catalog import Catalog
    from farm.catalog.rows import harmony_text
    from farm.sidecar import read_sidecar

    query = chords_render(library)
    before = [m.to_dict() for m in match(library, query)]
    with sqlite3.connect(library / "catalog.db") as conn:  # as Loop Farm left catalogs at schema 4
        conn.execute("DROP INDEX loops_candidates")
        conn.execute("ALTER TABLE loops DROP COLUMN harmony")
        conn.execute("CREATE INDEX loops_match ON loops(meter, bars, sample_rate, bpm)")
        conn.execute("PRAGMA user_version = 4")
    assert [m.to_dict() for m in match(library, query)] == before
    Catalog(library).close()
    assert one(library, "PRAGMA user_version") == 5
    indexes = {r[0] for r in rows(library, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "loops_candidates" in indexes and "loops_match" not in indexes
    for loop_id, harmony, sidecar in rows(library, "SELECT id, harmony, sidecar FROM loops"):
        assert harmony == harmony_text(read_sidecar(library / sidecar)["chords"]), loop_id
        bars = rows(library, "SELECT pitch_classes, bass_pc FROM chords WHERE loop_id = ? ORDER BY bar", [loop_id])
        assert harmony == (";".join(f"{pcs}|{bass}" for pcs, bass in bars) or None)
    assert [m.to_dict() for m in match(library, query)] == before


def test_a_transposed_loop_is_matched_by_the_pitch_permutation_that_moves_the_others(night):
    up = chords_permutation(night, "pitch", "semitones", 1)
    key = one(night, "SELECT key FROM loops WHERE id = ?", (up,))
    [bass] = match(night, up, role="bass")
    assert bass.transform["operation"] == "pitch" and bass.transform["params"] == {"semitones": 1}
    assert bass.transform["exists"] is False and bass.key == key and bass.fit.harmony == 1.0
    assert any("transpose +1 semitones" in line and "made on demand" in line for line in bass.fit.why)
    table = farm("match", up, "--role", "bass", "--root", str(night)).stdout
    assert "pitch +1 (to make)" in table


def test_a_faster_loop_is_matched_by_stretching_the_others(night):
    fast = chords_permutation(night, "stretch", "bpm", one(night, "SELECT bpm FROM templates") + 2)
    found = match(night, fast)
    assert {m.part for m in found} == {"bass", "melody", "drums"}
    for m in found:
        assert m.transform["operation"] == "stretch" and m.bpm == one(night, "SELECT bpm FROM loops WHERE id = ?",
                                                                      (fast,))


# -- kits: label truth --------------------------------------------------------------------------
def assert_kit_holds_its_labels(folder: Path) -> dict:
    """The mix and stems, read back from the files, against kit.json."""
    kit = json.loads((folder / "kit.json").read_text())
    mix, sr = soundfile.read(folder / "mix.wav", dtype="float32", always_2d=True)
    mix = mix.T
    samples = loop_samples(kit["bars"], Meter.parse(kit["meter"]), kit["bpm"], sr)
    assert mix.shape == (2, samples) and kit["samples"] == samples and sr == kit["sample_rate"]
    total = np.zeros(mix.shape)
    for stem in kit["stems"]:
        audio, stem_sr = soundfile.read(folder / stem["file"], dtype="float32", always_2d=True)
        assert audio.T.shape == mix.shape and stem_sr == sr, stem["role"]
        assert np.sqrt(np.mean(audio ** 2)) > 0.003, f"{stem['role']} is silent"
        total += audio.T
    assert np.abs(total - mix).max() < 1e-6  # the stems sum to the mix
    assert true_peak_dbtp(mix, sr) <= -1.0
    assert np.abs(mix.mean(axis=1)).max() < 0.005
    beat = round(60 / kit["bpm"] * 4 / Meter.parse(kit["meter"]).denominator * sr)
    for chord in kit["chords"]:
        start = loop_samples(chord["bar"] - 1, Meter.parse(kit["meter"]), kit["bpm"], sr)
        end = loop_samples(chord["bar"], Meter.parse(kit["meter"]), kit["bpm"], sr)
        share = chroma(mix, sr, start, end)[chord["pitch_classes"]].sum()
        assert share >= 0.60, f"bar {chord['bar']} {chord['symbol']}: {share:.2f}"
        low = chroma(mix, sr, start, start + beat, fmax=300.0)
        assert int(np.argmax(low)) == chord["bass_pc"], f"bar {chord['bar']} {chord['symbol']}"
    return kit


def midi_notes(path: Path) -> list[tuple[int, int, int]]:
    """``(start tick, pitch, channel)`` of every note of a MIDI file."""
    out, midi = [], mido.MidiFile(path)
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                out.append((tick, msg.note, msg.channel))
    return out


def test_a_kit_on_a_transposed_loop_moves_the_other_parts_and_its_mix_holds_the_new_chords(library):
    up = chords_permutation(library, "pitch", "semitones", 1)
    loops_before = one(library, "SELECT count(*) FROM loops")
    record = build_kit(library, from_loop=up)
    assert record["new"] and record["status"] == "pending"
    folder = Path(record["folder"])
    kit = assert_kit_holds_its_labels(folder)
    assert kit["key"] == one(library, "SELECT key FROM loops WHERE id = ?", (up,))
    assert kit["progression"] == one(library, "SELECT progression FROM loops WHERE id = ?", (up,))
    by_role = {s["role"]: s for s in kit["stems"]}
    assert by_role["chords"]["loop_id"] == up and by_role["chords"]["transform"] is None
    for role in ("bass", "melody"):  # made a semitone up, and catalogued as permutations of their renders
        assert by_role[role]["transform"] == {"operation": "pitch", "params": {"semitones": 1}}
        assert rows(library, "SELECT operation, parent_id, status FROM loops WHERE id = ?",
                    (by_role[role]["loop_id"],)) == [("pitch", by_role[role]["source_id"], "pending")]
    assert by_role["drums"]["transform"] is None
    assert one(library, "SELECT count(*) FROM loops") == loops_before + 2
    # the MIDI moved with the audio: the bass starts each bar on the kit's labelled bass
    ticks = mido.MidiFile(folder / by_role["bass"]["midi"]).ticks_per_beat * 4 * Meter.parse(kit["meter"]).numerator \
        // Meter.parse(kit["meter"]).denominator
    notes = midi_notes(folder / by_role["bass"]["midi"])
    for chord in kit["chords"]:
        first = min(n for n in notes if n[0] >= (chord["bar"] - 1) * ticks)
        assert first[0] == (chord["bar"] - 1) * ticks and first[1] % 12 == chord["bass_pc"]
    for tick, pitch, _ in midi_notes(folder / by_role["chords"]["midi"]) if by_role["chords"]["midi"] else []:
        assert pitch % 12 in kit["chords"][tick // ticks]["pitch_classes"]
    assert sorted(p.name for p in folder.iterdir()) == ["kit.json", "kit.png", "midi", "mix.wav", "stems"]
    assert (folder / "kit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert farm("check", "--root", str(library), "--no-progress").stdout.strip().endswith("ok")


def test_a_kit_on_a_faster_loop_stretches_every_other_part_to_its_tempo(library):
    bpm = one(library, "SELECT bpm FROM templates") + 2
    fast = chords_permutation(library, "stretch", "bpm", bpm)
    record = build_kit(library, from_loop=fast)
    kit = assert_kit_holds_its_labels(Path(record["folder"]))
    assert kit["bpm"] == bpm
    for stem in kit["stems"]:
        if stem["loop_id"] != fast:
            assert stem["transform"] == {"operation": "stretch", "params": {"bpm": bpm}}
        if stem["midi"]:
            tempo = [m.tempo for t in mido.MidiFile(Path(record["folder"]) / stem["midi"]).tracks for m in t
                     if m.type == "set_tempo"]
            assert tempo and all(abs(mido.tempo2bpm(t) - bpm) < 1e-3 for t in tempo)


def test_the_same_kit_is_the_same_bytes_in_a_fresh_process_and_is_made_once(library, tmp_path):
    other = Path(shutil.copytree(library, tmp_path / "other"))
    up = chords_permutation(library, "pitch", "semitones", -1)
    here = build_kit(library, from_loop=up, seed=0)
    out = json.loads(farm("kit", "--from", up, "--root", str(other), "--json").stdout)
    assert out["id"] == here["id"] and out["new"] is True
    a, b = Path(here["folder"]), Path(out["folder"])
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    mtimes = {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    again = build_kit(library, from_loop=up, seed=0)
    assert again["id"] == here["id"] and again["new"] is False
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == mtimes
    assert one(library, "SELECT count(*) FROM kits") == 1


def test_kits_are_catalogued_reviewed_and_exported_as_construction_kit_folders(library, tmp_path):
    record = build_kit(library, seed=1)
    assert [k["id"] for k in list_kits(library)] == [record["id"]]
    assert rows(library, "SELECT role, gain_db IS NOT NULL FROM kit_members WHERE kit_id = ? ORDER BY role",
                (record["id"],)) == [(r, 1) for r in sorted(("drums", "bass", "chords", "melody"))]
    listed = json.loads(farm("kits", "--json", "--root", str(library)).stdout)
    assert [k["id"] for k in listed] == [record["id"]] and listed[0]["status"] == "pending"
    farm("approve", "--kits", record["id"][:8], "--reviewer", "ana", "--root", str(library))
    assert rows(library, "SELECT status FROM kits") == [("approved",)]
    assert rows(library, "SELECT previous_status, status, reviewer FROM kit_reviews") == [("pending", "approved", "ana")]
    out = tmp_path / "export"
    printed = farm("export", "--kits", "--out", str(out), "--root", str(library)).stdout
    assert printed.startswith("exported 1 kit to")
    folder = out / record["name"]
    exported = json.loads((folder / "kit.json").read_text())
    for stem in exported["stems"]:
        info = soundfile.info(folder / stem["file"])
        assert info.subtype == "PCM_24" and info.frames == exported["samples"]
        assert (folder / stem["midi"]).is_file()
    assert soundfile.info(folder / exported["mix"]).frames == exported["samples"]
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    farm("export", "--kits", "--out", str(out), "--root", str(library))
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes
    farm("reject", "--kits", record["id"], "--reason", "thin mix", "--root", str(library))
    assert rows(library, "SELECT status, reject_reason FROM kits") == [("rejected", "thin mix")]


def test_a_kit_can_be_written_outside_the_catalog_root_but_not_among_its_loops(library, tmp_path):
    record = build_kit(library, seed=2, out=tmp_path / "my kits")
    folder = Path(record["folder"])
    assert folder.parent == (tmp_path / "my kits").resolve() and (folder / "kit.json").is_file()
    assert record["path"] == str(folder)  # outside the root: kept as an absolute path
    assert farm("check", "--root", str(library), "--no-progress").stdout.strip().endswith("ok")
    out = farm("kit", "--seed", "3", "--out", str(library / "loops"), "--root", str(library), check=False)
    assert out.returncode == 2 and "is inside the catalog root; kits go in" in out.stderr
    assert one(library, "SELECT count(*) FROM kits") == 1


# -- bad input ----------------------------------------------------------------------------------
def test_an_unknown_loop_is_one_line_and_exit_2(night):
    for args in (["match", "0123456789abcdef"], ["kit", "--from", "0123456789abcdef"]):
        out = farm(*args, "--root", str(night), check=False)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and "0123456789abcdef: no loop has this id" in out.stderr


def test_a_role_without_candidates_is_one_line_and_exit_2(night):
    out = farm("match", chords_render(night), "--role", "arp", "--root", str(night), check=False)
    assert out.returncode == 2 and out.stderr.strip().endswith("no catalogued loop has the part or role 'arp'")


@pytest.mark.parametrize("args, message", [
    (["--roles", "chords,arp"], "no arp loop fits the kit on"),
    (["--roles", "chords,chords"], "roles: chords, chords names a role twice"),
    (["--roles", "chords,xylo"], "roles: unknown role 'xylo'"),
])
def test_a_kit_that_cannot_be_built_is_one_line_exit_2_and_writes_nothing(library, args, message):
    before = sorted(p.relative_to(library) for p in library.rglob("*") if ".catalog" not in p.name)
    loops = one(library, "SELECT count(*) FROM loops")
    out = farm("kit", *args, "--root", str(library), check=False)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1 and message in out.stderr
    assert one(library, "SELECT count(*) FROM loops") == loops and one(library, "SELECT count(*) FROM kits") == 0
    after = sorted(p.relative_to(library) for p in library.rglob("*") if ".catalog" not in p.name)
    assert [p for p in after if p not in before and not str(p).startswith("catalog.db")] == []


def test_a_kit_whose_roles_all_were_rejected_is_refused(library):
    farm("reject", "--where", "part = 'bass'", "--reason", "muddy", "--root", str(library))
    with pytest.raises(KitUnmet, match="no bass loop fits the kit on"):
        build_kit(library, from_loop=chords_render(library))
    with pytest.raises(FarmError, match="no bass loop fits"):
        match(library, chords_render(library), role="bass")
    assert not (library / "kits").exists() or not any((library / "kits").iterdir())
