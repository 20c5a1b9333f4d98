"""`farm export` never deletes or replaces a file it did not write, and mirrors the catalog as it is.

The audit's data loss: `farm export --status any --out ''` run beside `library/` took the
current folder as the export folder, found the library's sidecars there and removed them. Each
case here hashes the library (and the export folder where nothing may change) before and after.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.catalog import review as review_loops
from farm.cli import main
from nights import make_night
from farm.errors import FarmError
from farm.export import MANIFEST_NAME, export


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return make_night(tmp_path_factory.mktemp("export-safety"), seed=3, parts=("chords", "bass"),
                      patches=("warm-rhodes", "sub-bass"))


@pytest.fixture
def library(night, tmp_path):
    """A private copy of the night, beside which the test runs."""
    root = tmp_path / "library"
    shutil.copytree(night, root)
    review_loops(root, where="1", status="approved", reviewer="test")
    return root


def tree_hash(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(args, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, args)
    finally:
        os.chdir(old)


@pytest.mark.parametrize("out, expected", [
    ("", "--out: is empty"),
    (".", "--out: holds the catalog root"),
    ("library", "--out: is the catalog root"),
    ("library/", "--out: is the catalog root"),
    ("library/loops", "--out: is inside the catalog root"),
    ("library/../library/x", "--out: is inside the catalog root"),
])
def test_an_export_folder_that_is_holds_or_lies_in_the_catalog_root_is_refused(library, out, expected):
    before = tree_hash(library.parent)
    result = run(["export", "--status", "any", "--out", out, "--root", "library", "--no-progress"], library.parent)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert tree_hash(library.parent) == before  # nothing in the library or beside it changed
    with pytest.raises(FarmError, match="catalog root|empty"):
        export(library.parent / "library", library.parent / out if out else "", status="any")
    assert tree_hash(library.parent) == before


def test_a_link_to_the_catalog_root_is_the_catalog_root(library, tmp_path):
    link = tmp_path / "alias"
    link.symlink_to(library, target_is_directory=True)
    before = tree_hash(library)
    with pytest.raises(FarmError, match="is the catalog root"):
        export(library, link, status="any")
    assert tree_hash(library) == before


def test_a_file_the_export_did_not_write_is_never_replaced(library, tmp_path):
    out = tmp_path / "pack"
    first = export(library, out)
    mine = out / "catalog.csv"
    # a folder the user filled by hand: the same names as the export's files, no manifest
    theirs = tmp_path / "theirs"
    shutil.copytree(out, theirs)
    (theirs / MANIFEST_NAME).unlink()
    before = tree_hash(theirs)
    result = CliRunner().invoke(main, ["export", "--out", str(theirs), "--root", str(library), "--no-progress"])
    assert result.exit_code == 2 and "is in the way: farm export did not write it" in result.stderr
    assert tree_hash(theirs) == before
    # an exported file the user edited is in the way too
    mine.write_text("my notes\n")
    before = tree_hash(out)
    with pytest.raises(FarmError, match="is in the way"):
        export(library, out, fmt="flac24")
    assert tree_hash(out) == before and len(first) == len(list(out.rglob("*.wav")))


def test_re_export_after_a_rejection_removes_the_loop_and_says_so(library, tmp_path):
    out = tmp_path / "pack"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.json").write_text('{"keep": true}')  # not the export's: never touched
    paths = export(library, out)
    assert len(paths) >= 2
    gone = json.loads(paths[0].with_suffix(".json").read_text())
    review_loops(library, [gone["id"]], status="rejected", reviewer="test", reason="thin")
    result = CliRunner().invoke(main, ["export", "--out", str(out), "--root", str(library), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"exported {len(paths) - 1} loop" in result.stdout and "files removed (no longer selected" in result.stdout
    assert not paths[0].exists() and not paths[0].with_suffix(".json").exists()
    assert not paths[0].with_suffix(".mid").exists()
    with open(out / "catalog.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert gone["id"] not in {r["id"] for r in table} and {r["status"] for r in table} == {"approved"}
    assert (out / "mine" / "notes.json").read_text() == '{"keep": true}'
    # nothing selected at all: the folder keeps only what the export did not write
    review_loops(library, where="1", status="rejected", reviewer="test", reason="thin")
    export(library, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        MANIFEST_NAME, "catalog.csv", "mine/notes.json"]


def test_an_exported_file_changed_since_is_kept_when_its_loop_leaves(library, tmp_path):
    out = tmp_path / "pack"
    paths = export(library, out)
    edited = paths[0]
    edited.write_bytes(edited.read_bytes() + b"\0\0")  # the user trimmed or tagged it in an editor
    loop_id = json.loads(edited.with_suffix(".json").read_text())["id"]
    review_loops(library, [loop_id], status="rejected", reviewer="test", reason="thin")
    result = export(library, out)
    assert edited.exists() and not edited.with_suffix(".json").exists()
    assert result.kept == [edited.relative_to(out).as_posix()]


# -- escapes: names that would lead a write outside its folder -----------------------------------
def sidecar_of(root: Path, part: str) -> tuple[Path, dict]:
    from farm.catalog import Catalog

    with Catalog(root, readonly=True) as cat:
        (loop_id, sidecar) = cat.db.execute("SELECT id, sidecar FROM loops WHERE part = ?", [part]).fetchone()
    return root / sidecar, json.loads((root / sidecar).read_text())


@pytest.mark.parametrize("field, value", [
    ("style", "../../evil"), ("name", "../../evil_0123456789abcdef"), ("path", "../outside.flac"),
    ("path", "/tmp/abs.flac"), ("midi", "../../etc/passwd"), ("patch", "a/b"), ("id", "../0123456789ab"),
    ("part", "chords/.."), ("key", "Am/../x"), ("path", "loops\\\\x.flac"),
])
def test_a_sidecar_whose_names_leave_their_folder_is_refused(library, field, value):
    from farm.sidecar import validate_sidecar

    _, data = sidecar_of(library, "bass")
    with pytest.raises(FarmError, match=field):
        validate_sidecar(dict(data, **{field: value}))


def test_a_planted_sidecar_is_never_adopted_and_nothing_escapes(library, tmp_path):
    from farm.catalog import Catalog

    path, data = sidecar_of(library, "bass")
    audio = library / data["path"]
    # a copy of a real loop under a new id, its style pointing out of the library, dropped beside it
    evil = dict(data, id="0123456789abcdef", name="LF_85_bass_sub-bass_Gm_0123456789abcdef", style="../../evil")
    evil["path"] = f"loops/{data['style']}/{evil['name']}.flac"
    (library / evil["path"]).write_bytes(audio.read_bytes())
    (library / evil["path"]).with_suffix(".json").write_text(json.dumps(evil))
    # and one whose names are fine but which does not stand where the farm would have written it
    moved = dict(data, id="fedcba9876543210", name="LF_85_bass_sub-bass_Gm_fedcba9876543210")
    moved["path"] = f"loops/elsewhere/{moved['name']}.flac"
    (library / "loops" / "elsewhere").mkdir()
    (library / moved["path"]).write_bytes(audio.read_bytes())
    (library / moved["path"]).with_suffix(".json").write_text(json.dumps(dict(moved, style=data["style"])))
    outside = sorted(p.name for p in library.parent.iterdir())
    with Catalog(library) as cat:
        adopted, removed = cat.reconcile()
        assert adopted == [] and cat.db.execute("SELECT count(*) FROM loops WHERE id IN (?, ?)",
                                                [evil["id"], moved["id"]]).fetchone() == (0,)
    assert evil["path"] in removed and moved["path"] in removed
    assert sorted(p.name for p in library.parent.iterdir()) == outside


def test_export_refuses_a_catalog_row_whose_name_leaves_the_folder(library, tmp_path):
    import sqlite3

    _, data = sidecar_of(library, "bass")
    with sqlite3.connect(library / "catalog.db") as conn:  # a catalog written before names were checked
        conn.execute("UPDATE loops SET name = '../../../escaped' WHERE id = ?", [data["id"]])
    out = tmp_path / "a" / "b" / "pack"
    beside = lambda: sorted(p for p in tmp_path.rglob("*") if library not in (p, *p.parents))  # noqa: E731
    before = beside()
    with pytest.raises(FarmError, match="would lead outside"):
        export(library, out, ids=[data["id"]])
    assert beside() == before and not (tmp_path / "a").exists()


# -- farm check knows more, and --repair restores ---------------------------------------------------
def test_check_reports_a_sidecar_that_disagrees_and_repair_restores_files_byte_for_byte(library, tmp_path):
    from farm.permute import permute
    from farm.repair import repair

    permute(library, where="part = 'chords'", ops=["pitch", "splice"], semitones=1, progress=False)
    rows = {}
    import sqlite3

    conn = sqlite3.connect(library / "catalog.db")
    for loop_id, path, sha, op, sidecar in conn.execute("SELECT id, path, sha256, operation, sidecar FROM loops"):
        rows[loop_id] = (path, sha, op, sidecar)
    conn.close()
    render = next(i for i, r in rows.items() if r[2] == "render")
    child = next(i for i, r in rows.items() if r[2] == "pitch")
    splice = next((i for i, r in rows.items() if r[2] == "splice"), None)
    # a sidecar left pending after an approve: check said ok before; now it says what differs
    sidecar = library / rows[render][3]
    data = json.loads(sidecar.read_text())
    data["status"], data["bpm"] = "pending", 99.0
    sidecar.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["check", "--no-progress", "--root", str(library)])
    assert result.exit_code == 1
    assert f"sidecar disagrees (farm check --repair rewrites it): {render} {rows[render][3]} (bpm, status differ" in result.output
    # audio deleted and damaged: made again from the content address, the same bytes
    (library / rows[render][0]).unlink()
    (library / rows[child][0]).write_bytes(b"not audio")
    if splice:
        (library / rows[splice][0]).unlink()
    result = CliRunner().invoke(main, ["check", "--repair", "--no-progress", "--root", str(library)])
    assert result.exit_code == 0, result.output
    assert f"restored: {render} {rows[render][0]}" in result.output
    assert f"restored: {child} {rows[child][0]}" in result.output
    assert result.output.strip().endswith("ok")
    for loop_id in [render, child] + ([splice] if splice else []):
        path, sha = rows[loop_id][:2]
        assert hashlib.sha256((library / path).read_bytes()).hexdigest() == sha
    assert json.loads(sidecar.read_text())["status"] == "approved"
    again = repair(library)
    assert again.restored == [] and again.sidecars == [] and again.failed == []


def test_repair_leaves_a_loop_whose_patch_changed_and_says_why(library, tmp_path, monkeypatch):
    import sqlite3

    from farm.repair import repair

    conn = sqlite3.connect(library / "catalog.db")
    loop_id, path = conn.execute("SELECT id, path FROM loops WHERE part = 'bass'").fetchone()
    conn.close()
    (library / path).unlink()
    patches = tmp_path / "patches"
    shutil.copytree(Path(__file__).resolve().parent.parent / "patches", patches)
    toml = patches / "sub-bass.toml"
    toml.write_text(toml.read_text().replace("target_lufs = -14.0", "target_lufs = -15.0"))
    monkeypatch.setattr("farm.patches.load.PATCHES_DIR", patches)  # where patches are looked up by name
    report = repair(library)
    assert report.failed == [f"{loop_id} {path}: patch sub-bass was edited since the loop was rendered"]
    assert not (library / path).exists()
