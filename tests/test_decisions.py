"""Decisions from the command line and the Python function the review room calls too.

A real night where the machine checks rejected some loops (one part checked against a silence
floor no loop reaches) and passed the others. `--where` never approves what the machine rejected
unless told; a decision that changes nothing writes no review row; ids with `--where` is refused;
`farm undo` takes a decision back, reason and all. A catalog made before decisions could be
undone (schema 1) is brought up to date on its next write open, its rows intact.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.batch import load_config, run_batch
from farm.catalog import SCHEMA_VERSION, Catalog, review, undo
from farm.cli import main
from farm.errors import FarmError
from nights import write_night


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    base = tmp_path_factory.mktemp("decisions")
    root = base / "library"
    passing = write_night(base / "pass.toml", root, seed=5, parts=("chords", "bass"), patches=("warm-rhodes", "sub-bass"))
    failing = write_night(base / "fail.toml", root, seed=5, parts=("drums",), patches=("lofi-kit",),
                          qa={"silence_db": -1.0})  # no loop is that loud: the machine rejects the drums
    assert run_batch(load_config(passing), progress=False).failed == 0
    assert run_batch(load_config(failing), progress=False).failed == 0
    return root


@pytest.fixture
def library(night, tmp_path):
    root = tmp_path / "library"
    shutil.copytree(night, root)
    return root


def rows(root: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_the_night_has_machine_rejected_and_passed_loops(library):
    got = dict(rows(library, "SELECT part, status || ' ' || machine_status FROM loops"))
    assert got == {"chords": "pending pending", "bass": "pending pending", "drums": "rejected rejected"}
    (reason,) = rows(library, "SELECT reject_reason FROM loops WHERE part = 'drums'")[0]
    assert "silence" in reason


def test_approve_where_leaves_machine_rejected_loops_unless_told(library):
    result = cli("approve", "--where", "1", "--reviewer", "ana", "--root", str(library))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "approved 2 loops"
    assert "left 1 loop the machine checks rejected as they are (--include-machine-rejected" in result.output
    assert dict(rows(library, "SELECT part, status FROM loops")) == {"chords": "approved", "bass": "approved",
                                                                    "drums": "rejected"}
    # again: nothing changes, so no review row is written
    result = cli("approve", "--where", "1", "--reviewer", "ana", "--root", str(library))
    assert result.output.splitlines()[0] == "approved 0 loops; 2 already approved"
    assert rows(library, "SELECT count(*) FROM reviews") == [(2,)]
    # said explicitly, the machine's rejection is overruled, once
    changed = review(library, where="part = 'drums'", status="approved", reviewer="ana",
                     include_machine_rejected=True)
    assert len(changed) == 1 and rows(library, "SELECT status FROM loops WHERE part = 'drums'") == [("approved",)]
    assert rows(library, "SELECT count(*) FROM reviews") == [(3,)]


def test_ids_with_where_is_refused_and_changes_nothing(library):
    (loop_id,) = rows(library, "SELECT id FROM loops WHERE part = 'bass'")[0]
    result = cli("approve", loop_id, "--where", "part = 'chords'", "--root", str(library))
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: where: name loop ids or give --where CONDITION, not both"
    assert rows(library, "SELECT count(*) FROM reviews") == [(0,)]
    with pytest.raises(FarmError, match="not both"):
        review(library, [loop_id], "1", status="rejected", reason="x", reviewer="ana")


def test_undo_restores_status_and_reason_and_keeps_the_row(library):
    (drums, reason) = rows(library, "SELECT id, reject_reason FROM loops WHERE part = 'drums'")[0]
    assert review(library, [drums], status="approved", reviewer="ana") == [drums]  # by id: a person's choice
    result = cli("undo", drums[:8], "--reviewer", "ben", "--root", str(library))
    assert result.exit_code == 0 and result.output.strip() == f"{drums}: rejected ({reason})"
    assert rows(library, "SELECT status, reject_reason FROM loops WHERE id = ?", [drums]) == [("rejected", reason)]
    assert rows(library, "SELECT status, previous_status, undone_by FROM reviews WHERE loop_id = ?", [drums]) == [
        ("approved", "rejected", "ben")]
    with Catalog(library, readonly=True) as cat:
        assert cat.loop_sidecar(drums)["status"] == "rejected" and cat.loop_sidecar(drums)["reject_reason"] == reason
    # nothing left to undo; and a decision changed since by someone else is not undone
    result = cli("undo", drums, "--root", str(library))
    assert result.exit_code == 2 and "has no decision to undo" in result.stderr
    (bass,) = rows(library, "SELECT id FROM loops WHERE part = 'bass'")[0]
    review(library, [bass], status="approved", reviewer="ana")
    with sqlite3.connect(library / "catalog.db") as conn:
        conn.execute("UPDATE loops SET status = 'rejected', reject_reason = 'x' WHERE id = ?", [bass])
    with pytest.raises(FarmError, match="changed since that decision"):
        undo(library, bass, reviewer="ana")


def test_a_schema_1_catalog_is_brought_up_to_date_with_its_rows(library):
    (drums,) = rows(library, "SELECT id FROM loops WHERE part = 'drums'")[0]
    review(library, [drums], status="approved", reviewer="ana")
    with sqlite3.connect(library / "catalog.db") as conn:  # as Loop Farm wrote catalogs before
        for index in [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                                 "(name LIKE 'loops_facet_%' OR name = 'loops_queue')")]:
            conn.execute(f"DROP INDEX {index}")
        for table, column in (("loops", "machine_status"), ("reviews", "previous_reason"),
                              ("reviews", "undone_by"), ("reviews", "undone_at")):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 1")
    before = rows(library, "SELECT id, status FROM loops ORDER BY id")
    Catalog(library).close()
    assert rows(library, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(library, "SELECT id, status FROM loops ORDER BY id") == before
    # the drums' machine verdict comes back from the first review row (it was rejected, then approved)
    assert dict(rows(library, "SELECT part, machine_status FROM loops")) == {
        "chords": "pending", "bass": "pending", "drums": "rejected"}
    assert {r[1] for r in rows(library, "PRAGMA table_info(reviews)")} >= {"previous_reason", "undone_by", "undone_at"}


# -- farm sql: bounded in time, and it creates nothing ---------------------------------------------
def test_farm_sql_stops_a_runaway_query_and_creates_no_file(library):
    import time

    from farm.catalog import run_sql

    Catalog(library).close()  # the last connection checkpoints: no -wal, no -shm left
    for extra in ("-wal", "-shm"):
        Path(f"{library / 'catalog.db'}{extra}").unlink(missing_ok=True)
    before = sorted(p.name for p in library.iterdir())
    forever = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    started = time.monotonic()
    result = cli("sql", forever, "--timeout", "1", "--root", str(library))
    assert result.exit_code == 2 and time.monotonic() - started < 30
    assert result.stderr.strip() == f"error: {library / 'catalog.db'}: sql: stopped after 1 s (--timeout SECONDS allows longer)"
    with pytest.raises(FarmError, match="stopped after 0.5 s"):
        run_sql(library, forever, timeout_s=0.5)
    result = cli("query", "review_queue", "--root", str(library), "--csv")
    assert result.exit_code == 0 and len(result.output.splitlines()) == 3  # header + the two pending loops
    assert run_sql(library, "SELECT count(*) FROM loops") == (["count(*)"], [(3,)])
    assert sorted(p.name for p in library.iterdir()) == before  # no catalog.db-wal or -shm appeared
    result = cli("sql", "SELECT 1", "--timeout", "0", "--root", str(library))
    assert result.exit_code == 2 and "--timeout" in result.stderr
