"""Review pictures (``farm plot``) and DAW exports (``farm export``) of a real, tiny catalog.

The catalog is made the way a night makes it: one lofi-hiphop template of 2 bars rendered
through a keys patch and a drum kit by ``run_batch``, plus the keys loop pitch-shifted +-1
semitone by ``farm.permute``. The pictures are checked for what they show (the per-bar chroma
of the audio against the chord labels); the exports are read back byte by byte with ``struct``
and through libsndfile, and compared sample for sample with the catalog's audio.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from PIL import Image

from farm.audio import chroma
from farm.batch import load_config, run_batch
from farm.catalog import review as review_loops
from farm.cli import main
from farm.export import acid_chunk, export, loop_beats, smpl_chunk
from farm.files import is_temp_name
from farm.model import Meter, loop_samples
from farm.review import CHROMA_TEXT_KEY, loop_review, plot_loop, plot_loops

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- the catalog ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from farm.permute import permute

    base = tmp_path_factory.mktemp("review")
    root = base / "library"
    config = base / "night.toml"
    config.write_text("\n".join([
        f'root = "{root}"', 'styles = ["lofi-hiphop"]', "templates_per_style = 1", "seed = 7", "bars = 2",
        'parts = ["chords", "drums"]', 'patches = ["warm-rhodes", "lofi-kit"]', "workers = 1",
        "timeout_s = 120"]) + "\n")
    summary = run_batch(load_config(config), progress=False)
    assert summary.failed == 0
    permute(root, where="part = 'chords'", ops=["pitch"], semitones=1, progress=False)
    return root


def rows(root: Path, sql: str, params=()) -> list[dict]:
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def loop_row(root: Path, where: str) -> dict:
    (row,) = rows(root, f"SELECT * FROM loops WHERE {where}")
    row["chords"] = rows(root, "SELECT * FROM chords WHERE loop_id = ? ORDER BY bar", [row["id"]])
    for c in row["chords"]:
        c["pitch_classes"] = json.loads(c["pitch_classes"])
    return row


def bar_spans(row: dict) -> list[tuple[int, int]]:
    """Each bar's samples, from the loop's own bpm and meter (units of farm.model)."""
    meter = Meter.parse(row["meter"])
    edges = [loop_samples(b, meter, row["bpm"], row["sample_rate"]) for b in range(row["bars"] + 1)]
    return list(zip(edges[:-1], edges[1:]))


def share(vector, pcs) -> float:
    return float(sum(vector[p % 12] for p in set(pcs)) / np.sum(vector))


def png_text(path: Path) -> dict:
    with Image.open(path) as image:
        image.load()
        return dict(image.text), image.size


# -- pictures ---------------------------------------------------------------------------------
def test_plot_draws_the_bar_chroma_of_the_audio_against_the_chord_labels(library):
    row = loop_row(library, "part = 'chords' AND operation = 'render'")
    path = plot_loop(library, row["id"])
    assert path == library / "plots" / f"{row['name']}.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    text, size = png_text(path)
    assert size[0] >= 1000 and size[1] >= 700
    assert text["Title"] == row["name"]

    drawn = json.loads(text[CHROMA_TEXT_KEY])
    audio, sr = soundfile.read(library / row["path"], dtype="float32", always_2d=True)
    assert [b["symbol"] for b in drawn["bars"]] == [c["symbol"] for c in row["chords"]]
    assert [b["pitch_classes"] for b in drawn["bars"]] == [c["pitch_classes"] for c in row["chords"]]
    for bar, (start, end), label in zip(drawn["bars"], bar_spans(row), row["chords"]):
        # The strip shows the audio of exactly this bar ...
        assert (bar["start_sample"], bar["end_sample"]) == (start, end)
        measured = chroma(audio.T, sr, start, end)
        np.testing.assert_allclose(bar["chroma"], measured, atol=1e-4)
        # ... and the audio carries the labelled chord: its tones hold most of the energy, more
        # than any transposition of the same chord would.
        labelled = share(measured, label["pitch_classes"])
        assert labelled > 0.7
        assert all(labelled > share(measured, [p + t for p in label["pitch_classes"]]) for t in range(1, 12))
        assert bar["fits"] is True and bar["chord_share"] == pytest.approx(labelled, abs=1e-4)


def test_plot_of_a_pitch_shift_fits_its_moved_labels_not_its_parents(library):
    parent = loop_row(library, "part = 'chords' AND operation = 'render'")
    child = loop_row(library, "operation = 'pitch' AND params = '{\"semitones\": 1}'")
    shifted = loop_review(library, child["id"])
    assert shifted.parent_name == parent["name"]
    for i, (mine, theirs) in enumerate(zip(child["chords"], parent["chords"])):
        assert shifted.best_fit[i]
        assert shifted.chord_share[i] > share(shifted.bar_chroma[i], theirs["pitch_classes"]) + 0.3

    (path,) = plot_loops(library, [child["id"][:8]], where=f"id = '{child['id']}'", out=library.parent / "elsewhere",
                         progress=False)
    assert path.parent == library.parent / "elsewhere"
    text, _ = png_text(path)
    # the title names the operation, its parameters and the parent
    assert "pitch" in text["Description"] and '"semitones": 1' in text["Description"]
    assert parent["name"] in text["Description"]


def test_farm_plot_cli_writes_one_png_per_loop_the_same_bytes_each_time(library):
    out = library.parent / "plots-cli"
    drums = loop_row(library, "part = 'drums'")
    where = "operation = 'pitch' AND params = '{\"semitones\": 1}'"
    result = CliRunner().invoke(main, ["plot", drums["id"][:10], "--where", where,
                                       "--root", str(library), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    written = sorted(out.iterdir())
    expected = [r["name"] + ".png" for r in rows(library, f"SELECT name FROM loops WHERE {where}")]
    assert [p.name for p in written] == sorted(expected + [drums["name"] + ".png"])
    assert result.stdout.split() == [str(out / p.name) for p in map(Path, result.stdout.split())]
    drum_text, _ = png_text(out / f"{drums['name']}.png")
    # drums are drawn, but never judged against the chord labels
    assert all(b["fits"] is None for b in json.loads(drum_text[CHROMA_TEXT_KEY])["bars"])
    first = {p.name: p.read_bytes() for p in written}
    again = CliRunner().invoke(main, ["plot", drums["id"], "--root", str(library), "--out", str(out),
                                      "--no-progress"])
    assert again.exit_code == 0
    assert (out / f"{drums['name']}.png").read_bytes() == first[f"{drums['name']}.png"]


@pytest.mark.parametrize("case", ["unknown id", "bad sql", "out inside a file"])
def test_farm_plot_bad_input_is_one_line_and_draws_nothing(library, tmp_path, case):
    out = tmp_path / "plots"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    drums = loop_row(library, "part = 'drums'")["id"]
    args, expected = {
        "unknown id": (["ffffffffff", "--out", str(out)], "catalog.db: ffffffffff: no loop has this id"),
        "bad sql": (["--where", "no_such_column = 1", "--out", str(out)],
                    "catalog.db: sql: no such column: no_such_column"),
        "out inside a file": ([drums, "--out", str(blocker / "plots")], f"{blocker / 'plots'}: --out: cannot write"),
    }[case]
    result = CliRunner().invoke(main, ["plot", *args, "--root", str(library)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["a-file"] and blocker.read_text() == "not a folder"


# -- exports ----------------------------------------------------------------------------------
def riff(path: Path) -> dict[bytes, bytes]:
    """Chunks of a WAV file, read with struct (independently of farm.export)."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    chunks, pos = {}, 12
    while pos < len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunks[cid] = data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    assert pos == len(data)
    return chunks


def libsndfile_loop_info(path: Path) -> tuple[tuple, tuple]:
    """What libsndfile reads from the acid and smpl chunks (SFC_GET_LOOP_INFO / SFC_GET_INSTRUMENT)."""
    from soundfile import _ffi, _snd

    with soundfile.SoundFile(str(path)) as f:
        loop = _ffi.new("char[]", 44)  # SF_LOOP_INFO
        assert _snd.sf_command(f._file, 0x10E0, loop, 44) == 1
        inst = _ffi.new("char[]", 272)  # SF_INSTRUMENT
        assert _snd.sf_command(f._file, 0x10D0, inst, 272) == 1
        num, den, _mode, beats, bpm, root = struct.unpack_from("<hhiifi", bytes(_ffi.buffer(loop)))
        raw = bytes(_ffi.buffer(inst))
        basenote = struct.unpack_from("<b", raw, 4)[0]
        loops = struct.unpack_from("<i", raw, 12)[0]
        start, end = struct.unpack_from("<II", raw, 20)
    return (num, den, beats, bpm, root), (basenote, loops, start, end)


@pytest.fixture(scope="module")
def approved(library):
    """Approve the rendered loops and one pitch shift; the other shift stays pending."""
    review_loops(library, where="operation = 'render' OR params = '{\"semitones\": 1}'", status="approved",
                 reviewer="test")
    return rows(library, "SELECT * FROM loops WHERE status = 'approved' ORDER BY id")


def test_export_wav_carries_tempo_key_and_loop_points_and_the_catalogs_samples(library, approved, tmp_path):
    out = tmp_path / "pack"
    paths = export(library, out)
    assert sorted(p.name for p in paths) == sorted(f"{r['name']}.wav" for r in approved)
    assert paths.written == len(approved) and paths.unchanged == 0
    for path, row in zip(sorted(paths, key=lambda p: p.name), sorted(approved, key=lambda r: r["name"] + ".wav")):
        # splice-style name in the style's folder
        key = "" if row["part"] == "drums" else f"_{row['key']}"  # drum loops carry no key
        assert path == out / row["style"] / f"LF_{row['bpm']:g}_{row['part']}_{row['patch']}{key}_{row['id']}.wav"
        chunks = riff(path)
        meter = Meter.parse(row["meter"])
        pitched = row["part"] != "drums"
        flags, root, _, _, beats, den, num, tempo = struct.unpack("<IHHfIHHf", chunks[b"acid"])
        assert beats == row["bars"] * meter.numerator * 4 // meter.denominator
        assert beats * 60.0 / tempo == pytest.approx(row["duration_s"], abs=1e-4)
        assert (den, num) == (meter.denominator, meter.numerator)
        assert tempo == pytest.approx(row["bpm"])
        assert not flags & 0x01 and flags & 0x04  # a loop, stretchable
        assert bool(flags & 0x02) == pitched
        if pitched:
            assert (root - 0x30) % 12 == row["tonic_pc"]
        head = struct.unpack_from("<9I", chunks[b"smpl"])
        unity, n_loops = head[3], head[7]
        cue, kind, start, end, _, count = struct.unpack_from("<6I", chunks[b"smpl"], 36)
        assert n_loops == 1 and kind == 0 and count == 0
        assert (start, end + 1) == (0, row["samples"])  # the end is the last sample, inclusive
        assert unity % 12 == (row["tonic_pc"] if pitched else 0)
        # libsndfile (what many hosts build on) reads the same
        (l_num, l_den, l_beats, l_bpm, l_root), (base, loops, l_start, l_end) = libsndfile_loop_info(path)
        assert (l_num, l_den, l_beats, l_bpm) == (num, den, beats, tempo)
        assert l_root == (root if pitched else -1) and (base, loops, l_start, l_end) == (unity, 1, 0, row["samples"])
        # the samples: exactly the catalog's 24-bit FLAC, sample for sample
        mine, sr = soundfile.read(path, dtype="int32")
        theirs, sr_catalog = soundfile.read(library / row["path"], dtype="int32")
        assert soundfile.info(str(path)).subtype == "PCM_24" and sr == sr_catalog == row["sample_rate"]
        assert mine.shape == (row["samples"], row["channels"])
        np.testing.assert_array_equal(mine, theirs)
        # the sidecar beside it: the catalog's labels, paths relative to the export folder
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["id"] == row["id"] and sidecar["path"] == path.relative_to(out).as_posix()
        assert (sidecar["key"], sidecar["bpm"], sidecar["meter"], sidecar["bars"]) == (
            row["key"], row["bpm"], row["meter"], row["bars"])
        assert [c["symbol"] for c in sidecar["chords"]] == row["progression"].split()
        assert sidecar["format"] == "wav24" and sidecar["status"] == "approved"
        if row["midi"]:
            assert (out / sidecar["midi"]).read_bytes() == (library / row["midi"]).read_bytes()
    with open(out / "catalog.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert sorted((r["id"], r["file"], float(r["bpm"]), r["key"], r["progression"]) for r in table) == sorted(
        (r["id"], f"{r['style']}/{r['name']}.wav", r["bpm"], r["key"], r["progression"]) for r in approved)

    # Again: nothing is written, nothing added.
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    again = export(library, out)
    assert sorted(again) == sorted(paths) and again.written == 0 and again.unchanged == len(approved)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before


def test_acid_and_smpl_chunks_follow_the_meter_and_the_sample_count():
    # 6/8: a bar is 3 quarter notes; beats count quarter notes, as the tempo does.
    assert loop_beats(4, "6/8") == 4 * 3
    assert loop_beats(2, "3/4") == 2 * 3
    flags, root, unknown, _, beats, den, num, tempo = struct.unpack("<IHHfIHHf", acid_chunk(92.5, 12, "6/8", 9))
    assert (flags, root, beats, den, num, tempo) == (0x02 | 0x04, 0x30 + 9, 12, 8, 6, 92.5)
    assert struct.unpack("<IHHfIHHf", acid_chunk(120, 16, "4/4", None))[:2] == (0x04, 0)
    body = smpl_chunk(48000, 96001, 69)
    assert len(body) == 36 + 24
    assert struct.unpack_from("<9I", body)[2:4] == (round(1e9 / 48000), 69)
    assert struct.unpack_from("<6I", body, 36)[2:4] == (0, 96000)


def test_farm_export_flac_by_key_replaces_the_wav_copy_and_tags_bpm_and_key(library, approved, tmp_path):
    from mutagen.flac import FLAC

    out = tmp_path / "pack"
    runner = CliRunner()
    first = runner.invoke(main, ["export", "--out", str(out), "--root", str(library), "--no-progress"])
    assert first.exit_code == 0, first.output
    assert f"exported {len(approved)} loops" in first.stdout
    result = runner.invoke(main, ["export", "--out", str(out), "--root", str(library), "--format", "flac24",
                                  "--group-by", "key", "--no-progress"])
    assert result.exit_code == 0, result.output
    audio = sorted(p for p in out.rglob("*") if p.suffix in (".wav", ".flac"))
    assert [p.suffix for p in audio] == [".flac"] * len(approved)  # one copy per loop, in the new format
    assert not any(p.is_dir() and not any(p.iterdir()) for p in out.rglob("*"))  # no emptied folders left
    by_id = {r["id"]: r for r in approved}
    for path in audio:
        sidecar = json.loads(path.with_suffix(".json").read_text())
        row = by_id[sidecar["id"]]
        tags = FLAC(path)
        assert tags["BPM"] == [f"{row['bpm']:g}"]
        if row["part"] == "drums":  # no key: in the drums folder, no KEY tag
            assert path.parent.name == "drums" and "KEY" not in tags and "MODE" not in tags
        else:
            assert path.parent.name == f"{int(row['camelot'][:-1]):02d}{row['camelot'][-1]}-{row['key']}"
            assert tags["KEY"] == [row["key"]] and tags["MODE"] == [row["key_mode"]]
        assert tags["CHORDS"] == [row["progression"]] and tags["LOOPFARM_ID"] == [row["id"]]
        mine = soundfile.read(path, dtype="int32")[0]
        np.testing.assert_array_equal(mine, soundfile.read(library / row["path"], dtype="int32")[0])
    with open(out / "catalog.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert sorted(r["file"] for r in table) == sorted(p.relative_to(out).as_posix() for p in audio)
    assert {r["format"] for r in table} == {"flac24"}


def test_export_wav32f_is_the_catalogs_audio_as_float(library, approved, tmp_path):
    row = next(r for r in approved if r["part"] == "chords")
    (path,) = export(library, tmp_path / "f", where=f"id = '{row['id']}'", fmt="wav32f")
    assert soundfile.info(str(path)).subtype == "FLOAT" and b"PEAK" not in riff(path)
    mine = soundfile.read(path, dtype="float32")[0]
    np.testing.assert_array_equal(mine, soundfile.read(library / row["path"], dtype="float32")[0])


def test_interrupted_export_is_completed_by_running_it_again(library, approved, tmp_path, monkeypatch):
    import farm.export as exporting

    out = tmp_path / "pack"
    real = exporting._export_one
    calls = []

    def dies_on_the_second_loop(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(exporting, "_export_one", dies_on_the_second_loop)
    with pytest.raises(KeyboardInterrupt):
        export(library, out)
    monkeypatch.setattr(exporting, "_export_one", real)
    done = [p for p in out.rglob("*") if p.is_file()]
    assert done and not any(is_temp_name(p.name) for p in done)  # whole files or none
    result = export(library, out)
    assert result.unchanged == 1 and result.written == len(approved) - 1
    audio = sorted(p.name for p in out.rglob("*.wav"))
    assert audio == sorted(f"{r['name']}.wav" for r in approved)
    with open(out / "catalog.csv", newline="") as f:
        assert sorted(r["id"] for r in csv.DictReader(f)) == sorted(r["id"] for r in approved)


def test_export_checks_the_catalogs_audio_against_its_sha256(library, approved, tmp_path):
    copy = tmp_path / "library"
    shutil.copytree(library, copy)
    row = approved[0]
    data = bytearray((copy / row["path"]).read_bytes())
    data[-1] ^= 0xFF
    (copy / row["path"]).write_bytes(bytes(data))
    out = tmp_path / "pack"
    result = CliRunner().invoke(main, ["export", row["id"], "--out", str(out), "--root", str(copy)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {copy / row['path']}: sha256: does not match the catalog's sha256 (run `farm check`)"
    assert not list(out.rglob("*.wav"))


@pytest.mark.parametrize("case", ["unknown id", "bad sql", "out inside a file", "out is a file", "pending loop",
                                  "out inside the catalog"])
def test_farm_export_bad_input_is_one_line_exit_2_and_writes_nothing(library, approved, tmp_path, case):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    pending = rows(library, "SELECT id FROM loops WHERE status = 'pending'")[0]["id"]
    out = tmp_path / "pack"
    args, expected = {
        "unknown id": (["0123456789ab", "--out", str(out)], "catalog.db: 0123456789ab: no loop has this id"),
        "bad sql": (["--where", "bpm >", "--out", str(out)], 'catalog.db: sql: near ")": syntax error'),
        "out inside a file": (["--out", str(blocker / "pack")], f"{blocker / 'pack'}: --out: cannot write here"),
        "out is a file": (["--out", str(blocker)], f"{blocker}: --out: exists and is not a folder"),
        "pending loop": ([pending, "--out", str(out)], f"{pending}: is pending, not approved"),
        "out inside the catalog": (["--out", str(library / "export")], "export: --out: is inside the catalog root"),
    }[case]
    result = CliRunner().invoke(main, ["export", *args, "--root", str(library)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert not out.exists() and blocker.read_text() == "not a folder"
    assert sorted(os.listdir(tmp_path)) == ["a-file"] and not (library / "export").exists()
