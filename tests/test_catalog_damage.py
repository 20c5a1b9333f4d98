"""A damaged catalog root: a catalog.db that is not a catalog, broken sidecars, damaged audio,
saved-query parameters of the wrong kind, selections that match nothing. Each is one error line
naming the file (exit 2) and changes nothing, or, for an empty selection, one line and no folder.

The catalog is tiny and made without rendering (loops synthesised from their chord tones, as in
test_catalog.py): one template, its chords and bass loops.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from farm.catalog import (Catalog, bind_params, check_catalog, review, run_query, run_sql, saved_queries,
                          show_loop)
from farm.cli import main
from farm.errors import FarmError
from farm.export import MANIFEST_NAME, export
from farm.review import plot_loops
from farm.sidecar import sidecar_path
from test_catalog import STYLES, add_loop


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from farm.templates import find_rules, generate_template, load_rules, write_template

    root = tmp_path_factory.mktemp("damage") / "library"
    with Catalog(root) as cat:
        gen = generate_template(load_rules(find_rules(STYLES[0])), 11, bars=2)
        write_template(gen, root / "templates")
        rel = f"templates/{gen.template.id}"
        cat.add_template(gen.template, rel)
        sidecars = [add_loop(cat, gen.template, rel, "chords", "test-keys", "keys"),
                    add_loop(cat, gen.template, rel, "bass", "test-bass", "bass", octave=2)]
    return root, sorted(sidecars, key=lambda s: s["id"])


@pytest.fixture
def lib(library, tmp_path):
    root, sidecars = library
    shutil.copytree(root, tmp_path / "library")
    return tmp_path / "library", sidecars


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return result.stderr.strip()


# -- a catalog.db that is not a catalog ---------------------------------------------------------
DAMAGE = {
    "random bytes": ("file is not a database", lambda p: p.write_bytes(np.random.default_rng(0).bytes(8192))),
    "zero bytes": ("an empty file", lambda p: p.write_bytes(b"")),
    "another database": ("an SQLite database without a loops table",
                         lambda p: sqlite3.connect(p).executescript("CREATE TABLE notes (x); INSERT INTO notes VALUES (1);")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_catalog_db_that_is_not_a_catalog_is_one_line_and_stays_untouched(lib, tmp_path, damage):
    root, sidecars = lib
    loop_id = sidecars[0]["id"]
    db = root / "catalog.db"
    for extra in root.glob("catalog.db-*"):
        extra.unlink()
    db.unlink()
    reason, make = DAMAGE[damage]
    make(db)
    before, listing = digest(db), sorted(p.name for p in root.iterdir())
    expected = f"error: {db}: not a Loop Farm catalog ({reason})"
    commands = [["check", "--no-progress"], ["show", loop_id], ["stats"], ["query", "key"],
                ["sql", "SELECT 1"], ["approve", loop_id], ["reject", loop_id, "--reason", "thin"],
                ["plot", loop_id, "--out", str(tmp_path / "plots")],
                ["export", loop_id, "--status", "any", "--out", str(tmp_path / "pack")],
                ["permute", "--where", "1", "--ops", "pitch", "--no-progress"]]
    for args in commands:
        result = CliRunner().invoke(main, [*args, "--root", str(root)])
        assert one_error_line(result) == expected, args
    for call in (lambda: check_catalog(root), lambda: show_loop(root, loop_id), lambda: run_sql(root, "SELECT 1"),
                 lambda: review(root, [loop_id], status="approved", reviewer="ana"),
                 lambda: Catalog(root, create=False)):
        with pytest.raises(FarmError) as err:
            call()
        assert err.value.file == str(db) and err.value.line() == expected.removeprefix("error: ")
    if damage != "zero bytes":  # a batch (which creates catalogs) refuses a file that is something else
        with pytest.raises(FarmError, match="not a Loop Farm catalog"):
            Catalog(root)
    assert digest(db) == before
    assert sorted(p.name for p in root.iterdir()) == listing  # nothing beside it appeared either
    assert {"catalog.db", "loops", "templates"} <= set(listing)
    assert not (tmp_path / "plots").exists() and not (tmp_path / "pack").exists()


def test_a_zero_byte_catalog_db_is_filled_only_by_a_caller_that_creates_catalogs(tmp_path):
    db = tmp_path / "library" / "catalog.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    with pytest.raises(FarmError, match="an empty file"):
        Catalog(db.parent, create=False)
    assert db.stat().st_size == 0
    with Catalog(db.parent) as cat:  # `farm batch` on an empty file: the new catalog goes in it
        assert cat.db.execute("SELECT count(*) FROM loops").fetchone() == (0,)
    assert check_catalog(db.parent).ok


# -- saved queries ----------------------------------------------------------------------------
def test_a_saved_query_that_fails_names_its_file_not_its_comment(lib, tmp_path, monkeypatch):
    root, _ = lib
    (tmp_path / "key.sql").write_text("-- Loops in a key, written for a column that is not there\n"
                                      "SELECT id FROM loops WHERE tonality = :key;\n")
    monkeypatch.setattr("farm.catalog.queries.QUERIES_DIR", tmp_path)
    query = saved_queries()["key"]
    with pytest.raises(FarmError) as err:
        run_query(root, "key", {"key": "Am"})
    assert err.value.field == "sql" and err.value.message.endswith(f"(in: {query.path})")
    assert query.description not in err.value.message
    line = one_error_line(CliRunner().invoke(main, ["query", "key", "-p", "key=Am", "--root", str(root)]))
    assert line == f"error: {root / 'catalog.db'}: sql: no such column: tonality (in: {query.path})"


def test_a_parameter_whose_default_is_a_number_takes_only_numbers(lib):
    root, sidecars = lib
    bpm_range = saved_queries()["bpm_range"]
    with pytest.raises(FarmError) as err:
        bind_params(bpm_range, {"min_bpm": "abc", "max_bpm": "90"})
    assert (err.value.file, err.value.field) == (str(bpm_range.path), "min_bpm")
    result = CliRunner().invoke(main, ["query", "bpm_range", "--param", "min_bpm=abc", "--param", "max_bpm=90",
                                       "--root", str(root)])
    assert one_error_line(result) == (f"error: {bpm_range.path}: min_bpm: expects a number (default "
                                      f"{bpm_range.defaults['min_bpm']}), got 'abc'")
    # numbers of either kind still bind, and find the loops in the range
    bpm = sidecars[0]["bpm"]
    values = bind_params(bpm_range, {"min_bpm": str(bpm - 0.5), "max_bpm": str(int(bpm) + 1)})
    assert values["min_bpm"] == bpm - 0.5 and values["max_bpm"] == int(bpm) + 1
    _, rows = run_query(root, "bpm_range", {"min_bpm": str(bpm - 0.5), "max_bpm": str(int(bpm) + 1)})
    assert sorted(r[0] for r in rows) == [s["id"] for s in sidecars]
    # a default that is an id made of digits is not a number: a loop id binds as text
    permutations = saved_queries()["permutations"]
    assert permutations.defaults["parent_id"].isdigit()
    assert bind_params(permutations, {"parent_id": sidecars[0]["id"]})["parent_id"] == sidecars[0]["id"]


# -- broken sidecars --------------------------------------------------------------------------
BROKEN = {
    "not JSON": ('{"id": "x", "key": \n', "unreadable sidecar: Expecting value"),
    "a list": ("[]\n", "a sidecar must be a JSON object"),
    "a field missing": (None, "missing"),
    "another loop's": (None, "names loop"),
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_broken_sidecar_is_reported_by_check_and_stops_a_review_before_any_change(lib, broken, monkeypatch):
    root, sidecars = lib
    monkeypatch.setenv("USER", "ana")
    target, other = sidecars
    path = root / sidecar_path(target["path"])
    text, message = BROKEN[broken]
    if broken == "a field missing":
        text = json.dumps({k: v for k, v in target.items() if k != "chords"})
    elif broken == "another loop's":
        text = (root / sidecar_path(other["path"])).read_text()
    path.write_text(text)
    other_path = root / sidecar_path(other["path"])
    before = {p: p.read_bytes() for p in (path, other_path)}

    report = check_catalog(root)
    assert not report.ok and report.missing_sidecars == []
    assert len(report.broken_sidecars) == 1
    assert report.broken_sidecars[0].startswith(f"{target['id']} {sidecar_path(target['path']).as_posix()} (")
    assert message in report.broken_sidecars[0]
    result = CliRunner().invoke(main, ["check", "--root", str(root), "--no-progress"])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("broken sidecar: ")] == [
        f"broken sidecar: {report.broken_sidecars[0]}"]
    assert result.output.splitlines()[-1] == "FAILED"
    assert show_loop(root, target["id"])["sidecar_file"].startswith("broken: ")
    assert show_loop(root, other["id"])["sidecar_file"] == "ok"

    # Every decision names the broken file in one line and changes nothing: no status, no review
    # row, no sidecar written (the loop with a good sidecar in the same command included).
    for args in (["approve", target["id"], other["id"]], ["reject", "--where", "1", "--reason", "thin"],
                 ["approve", target["id"][:8]]):
        line = one_error_line(CliRunner().invoke(main, [*args, "--root", str(root)]))
        assert line.startswith(f"error: {path}: ") and message in line
    with pytest.raises(FarmError) as err:
        review(root, [other["id"], target["id"]], status="approved", reviewer="ana")
    assert err.value.file == str(path)
    assert run_sql(root, "SELECT DISTINCT status FROM loops")[1] == [("pending",)]
    assert run_sql(root, "SELECT count(*) FROM reviews")[1] == [(0,)]
    assert {p: p.read_bytes() for p in before} == before

    # Mended, the same decision goes through and the sidecar follows the catalog.
    path.write_text(json.dumps(target))
    assert review(root, [target["id"]], status="rejected", reason="thin", reviewer="ana") == [target["id"]]
    assert json.loads(path.read_text())["status"] == "rejected"
    assert check_catalog(root).ok


def test_a_missing_sidecar_is_reported_apart_and_does_not_stop_a_review(lib):
    root, sidecars = lib
    (root / sidecar_path(sidecars[0]["path"])).unlink()
    report = check_catalog(root)
    assert report.missing_sidecars == [f"{sidecars[0]['id']} {sidecar_path(sidecars[0]['path']).as_posix()}"]
    assert report.broken_sidecars == [] and show_loop(root, sidecars[0]["id"])["sidecar_file"] == "missing"
    assert review(root, [sidecars[0]["id"]], status="approved", reviewer="ana") == [sidecars[0]["id"]]


# -- empty selections and damaged audio: no folder left behind -------------------------------------
def test_plot_of_nothing_says_so_and_makes_no_folder_like_an_empty_export(lib, tmp_path):
    root, _ = lib
    out = tmp_path / "plots" / "none"
    assert plot_loops(root, where="1 = 0", out=out, progress=False) == []
    result = CliRunner().invoke(main, ["plot", "--where", "1 = 0", "--out", str(out), "--root", str(root)])
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "no loop matches; nothing drawn\n"
    empty_export = CliRunner().invoke(main, ["export", "--where", "1 = 0", "--out", str(tmp_path / "pack"),
                                             "--root", str(root)])
    assert empty_export.exit_code == result.exit_code
    assert not (tmp_path / "plots").exists() and not (tmp_path / "pack").exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def test_plot_of_damaged_audio_points_to_farm_check_and_leaves_no_folder(lib, tmp_path):
    root, sidecars = lib
    audio = root / sidecars[0]["path"]
    truncate(audio)
    out = tmp_path / "plots" / "night"
    result = CliRunner().invoke(main, ["plot", sidecars[0]["id"], "--out", str(out), "--root", str(root)])
    assert one_error_line(result) == (f"error: {audio}: sha256: does not match the catalog's sha256 "
                                      "(run `farm check`)")
    with pytest.raises(FarmError, match="run `farm check`"):
        plot_loops(root, [sidecars[0]["id"]], out=out, progress=False)
    assert not (tmp_path / "plots").exists()


def test_export_stopped_by_damaged_audio_leaves_no_empty_folder(lib, tmp_path):
    root, (first, second) = lib
    truncate(root / first["path"])
    out = tmp_path / "packs" / "night"
    result = CliRunner().invoke(main, ["export", first["id"], "--status", "any", "--out", str(out),
                                       "--root", str(root), "--no-progress"])
    assert one_error_line(result).endswith("sha256: does not match the catalog's sha256 (run `farm check`)")
    assert not (tmp_path / "packs").exists()
    # The loop exported before the damaged one stays whole; the damaged one's group folder goes.
    with pytest.raises(FarmError, match="sha256"):
        export(root, out, status="any", group_by="part", ids=[second["id"], first["id"]])
    assert first["part"] != second["part"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert written == [MANIFEST_NAME, second["part"]] + sorted(f"{second['part']}/{second['name']}{suffix}"
                                                               for suffix in (".json", ".mid", ".wav"))


# -- damage inside an SQLite file, a missing column, a newer schema ---------------------------------
def garble(db: Path, offset: int = 8192, size: int = 8192) -> None:
    """What the audit did: 8 KiB of garbage written into the middle of catalog.db."""
    data = bytearray(db.read_bytes())
    data[offset:offset + size] = np.random.default_rng(1).bytes(size)
    db.write_bytes(bytes(data))


def catalog_commands(loop_id: str, tmp_path: Path) -> list[list[str]]:
    return [["show", loop_id], ["stats"], ["query", "key"], ["sql", "SELECT count(*) FROM loops"],
            ["approve", loop_id], ["reject", loop_id, "--reason", "thin"], ["undo", loop_id],
            ["plot", loop_id, "--out", str(tmp_path / "plots")],
            ["export", loop_id, "--status", "any", "--out", str(tmp_path / "pack")],
            ["permute", "--where", "1", "--ops", "pitch", "--no-progress"], ["review", "--port", "0"]]


@pytest.mark.parametrize("harm, expected", [
    ("garbage", "is damaged ("),
    ("missing column", "not a Loop Farm catalog (loops has no centroid_hz column)"),
    ("missing table", "not a Loop Farm catalog (no reviews table)"),
    ("newer schema", "was made by a newer Loop Farm (schema 99; this one knows"),
])
def test_a_damaged_or_foreign_catalog_is_refused_by_every_command_and_stays_untouched(lib, tmp_path, harm, expected):
    root, sidecars = lib
    loop_id = sidecars[0]["id"]
    db = root / "catalog.db"
    Catalog(root).close()  # checkpointed: everything is in catalog.db
    for extra in root.glob("catalog.db-*"):
        extra.unlink()
    if harm == "garbage":
        garble(db)
    else:
        conn = sqlite3.connect(db)
        with conn:
            if harm == "missing column":
                conn.execute("ALTER TABLE loops DROP COLUMN centroid_hz")
            elif harm == "missing table":
                conn.execute("DROP TABLE reviews")
            else:
                conn.execute("PRAGMA user_version = 99")
        conn.close()
    before, listing = digest(db), sorted(p.name for p in root.iterdir())
    for args in catalog_commands(loop_id, tmp_path):
        line = one_error_line(CliRunner().invoke(main, [*args, "--root", str(root)]))
        assert line.startswith(f"error: {db}: {expected}"), (args, line)
    for call in (lambda: show_loop(root, loop_id), lambda: run_sql(root, "SELECT 1"),
                 lambda: review(root, [loop_id], status="approved", reviewer="ana"), lambda: Catalog(root)):
        with pytest.raises(FarmError, match="damaged|not a Loop Farm catalog|newer Loop Farm"):
            call()
    assert digest(db) == before and sorted(p.name for p in root.iterdir()) == listing
    assert not (tmp_path / "plots").exists() and not (tmp_path / "pack").exists()
    result = CliRunner().invoke(main, ["check", "--no-progress", "--root", str(root)])
    if harm == "garbage":  # farm check runs SQLite's integrity check and says what it found
        assert result.exit_code == 1 and result.output.startswith("catalog.db is damaged (")
        assert result.output.strip().endswith("FAILED")
    else:
        assert one_error_line(result).startswith(f"error: {db}: {expected}")
    assert digest(db) == before


def test_a_catalog_changed_behind_the_farms_back_is_checked_again(lib):
    root, _ = lib
    Catalog(root).close()
    db = root / "catalog.db"
    from farm.catalog.health import stamp_matches

    assert stamp_matches(db)  # as the last writer left it: no full read on open
    conn = sqlite3.connect(db)  # another program writes it (or a disk error does)
    with conn:
        conn.execute("CREATE TABLE notes (x)")
    conn.close()
    assert not stamp_matches(db)
    with Catalog(root, readonly=True) as cat:  # checked (whole) and read
        assert cat.db.execute("SELECT count(*) FROM loops").fetchone()[0] == 2
    Catalog(root).close()
    assert stamp_matches(db)
