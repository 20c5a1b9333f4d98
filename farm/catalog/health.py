"""The catalog's health: files and rows that agree, sidecars that follow, and what `farm check` reports.

``check`` compares every row with its audio file (sha256) and sidecar, and every audio file under
the root with a row; ``reconcile`` makes files and rows agree after an interrupted batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import sqlite3
from functools import lru_cache

from farm.catalog.store import ADDED_COLUMNS, ADDED_TABLES, CACHE_DIR, KITS_DIR, SCHEMA_PATH, SCHEMA_VERSION, Catalog
from farm.errors import FarmError
from farm.files import is_temp_name
from farm.sidecar import AUDIO_SUFFIXES, file_sha256, loop_path, read_sidecar, sidecar_path


# -- the verified stamp -----------------------------------------------------------------------
STAMP_FILE = ".catalog-verified"  # size and modification time of catalog.db as a writer left it


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def stamp_matches(path: Path) -> bool:
    """Whether ``catalog.db`` is as the last Loop Farm writer left it (no damage check needed)."""
    try:
        return (path.parent / STAMP_FILE).read_text(encoding="utf-8").strip() == _stamp(path)
    except (OSError, UnicodeDecodeError):
        return False


def write_stamp(path: Path) -> None:
    from farm.files import atomic_write_text

    try:
        atomic_write_text(path.parent / STAMP_FILE, _stamp(path) + "\n")
    except OSError:
        pass  # a read-only or full disk: the next open checks the file again, which is safe


# -- the file itself ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def schema_columns() -> dict[str, tuple[str, ...]]:
    """Every table of ``catalog/schema.sql`` and its columns, as SQLite makes them."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA_PATH.read_text(encoding="utf-8"))
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'loops_fts%' AND name NOT LIKE 'sqlite_%'")]
        return {t: tuple(r[1] for r in conn.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        conn.close()


def schema_problems(conn: sqlite3.Connection) -> list[str]:
    """What makes this database not a catalog this code can use: a newer schema version, a
    table or column the schema has and it lacks (columns added since its version excepted: the
    next write open adds them). Empty when all is well."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        have = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in schema_columns()}
    except sqlite3.DatabaseError as err:
        return [f"is damaged ({err}); run `farm check`, restore it from a backup"]
    if version > SCHEMA_VERSION:
        return [f"was made by a newer Loop Farm (schema {version}; this one knows {SCHEMA_VERSION}): update Loop Farm"]
    if version == 0 and not any(have.values()):
        return []  # a catalog still to be created
    for table, columns in schema_columns().items():
        if not have[table] and not (version < ADDED_TABLES.get(table, 0)):
            return [f"not a Loop Farm catalog (no {table} table)"]
        later = set(ADDED_COLUMNS.get(table, {})) if version < SCHEMA_VERSION else set()
        if not have[table]:
            continue  # a table added since this catalog's version
        missing = [c for c in columns if c not in have[table] and c not in later]
        if missing:
            return [f"not a Loop Farm catalog ({table} has no {missing[0]} column)"]
    return []


def damage(conn: sqlite3.Connection, quick: bool = False, limit: int = 20) -> list[str]:
    """SQLite's own check of every page and index (``quick``: without matching index entries to
    rows); one line per problem found, empty when the file is whole."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}({limit})")]
    except sqlite3.DatabaseError as err:
        rows = [str(err)]
    if rows == ["ok"]:
        return []
    return [f"is damaged ({rows[0]}{f'; {len(rows) - 1} more problems' if len(rows) > 1 else ''}); "
            "run `farm check`, restore it from a backup"] + rows[1:]


def audio_files(cat: Catalog) -> list[Path]:
    """Every loop's audio file under the root (temporary files, the review room's ``cache/`` of
    previews, which it makes again on demand, and ``kits/``, the kits' stems, excluded), sorted."""
    out = []
    for dirpath, dirs, files in os.walk(cat.root):
        if Path(dirpath) == cat.root:
            dirs[:] = [d for d in dirs if d not in (CACHE_DIR, KITS_DIR)]
        for name in files:
            if os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES and not is_temp_name(name):
                out.append(Path(dirpath) / name)
    return sorted(out)

def temp_files(cat: Catalog) -> list[Path]:
    """Half-written files left by an interrupted write (temporary names, never catalogued)."""
    out = []
    for dirpath, dirs, files in os.walk(cat.root):
        out += [Path(dirpath) / n for n in files + dirs if is_temp_name(n)]
    return sorted(out)

def check(cat: Catalog, progress: bool = False) -> "CheckReport":
    """Every row's file exists with its sha256 and its sidecar reads; every audio file has a row;
    no leftovers."""
    from farm.progress import progress as progress_bar

    report = CheckReport()
    rows = cat.db.execute("SELECT id, path, sha256, sidecar FROM loops ORDER BY path").fetchall()
    known = set()
    for loop_id, path, sha, sidecar in progress_bar(rows, "check", "loop", disable=not progress,
                                                    leave=False):
        known.add(path)
        audio = cat.root / path
        if not audio.is_file():
            report.missing.append(f"{loop_id} {path}")
        elif file_sha256(audio) != sha:
            report.mismatched.append(f"{loop_id} {path}")
        if not (cat.root / sidecar).exists():
            report.missing_sidecars.append(f"{loop_id} {sidecar}")
            continue
        try:
            data = cat.loop_sidecar(loop_id)
        except FarmError as err:
            report.broken_sidecars.append(
                f"{loop_id} {sidecar} ({': '.join(x for x in (err.field, err.message) if x)})")
            continue
        expected = cat.row_sidecar(loop_id)
        differing = [k for k in expected if k != "created_at" and data.get(k) != expected[k]]
        if differing:  # e.g. left pending after an approve, or labels edited by hand
            report.disagreeing.append(f"{loop_id} {sidecar} ({', '.join(differing)} differ from the catalog)")
    report.rows = len(rows)
    report.duplicates = [f"{ids} ({sha[:12]})" for sha, ids in cat.db.execute(
        "SELECT sha256, group_concat(id, ' ') FROM loops GROUP BY sha256 HAVING count(*) > 1 ORDER BY sha256")]
    files = cat.audio_files()
    report.files = len(files)
    report.orphans = [str(f.relative_to(cat.root)) for f in files
                      if f.relative_to(cat.root).as_posix() not in known]
    report.temp_files = [str(f.relative_to(cat.root)) for f in cat.temp_files()]
    report.broken_kits = _kit_problems(cat)
    return report


def _kit_problems(cat: Catalog) -> list[str]:
    """Kits whose folder lacks kit.json or a stem the catalog lists (a catalog from before kits has none)."""
    if not cat.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'kits'").fetchone():
        return []
    out = []
    for kit_id, path in cat.db.execute("SELECT id, path FROM kits ORDER BY id").fetchall():
        folder = cat.root / path  # an absolute path (a kit written outside the root) stays itself
        wanted = ["kit.json", "mix.wav"] + [r[0] for r in cat.db.execute(
            "SELECT stem FROM kit_members WHERE kit_id = ? ORDER BY stem", [kit_id])]
        gone = [w for w in wanted if not (folder / w).is_file()]
        if gone:
            out.append(f"{kit_id} {path} ({', '.join(gone)} missing)")
    return out

def reconcile(cat: Catalog, progress: bool = False) -> tuple[list[str], list[str]]:
    """Make files and rows agree after an interrupted batch: ``(adopted ids, removed paths)``.

    An audio file without a row is adopted when its sidecar is complete and the sidecar's
    sha256 matches the file (the worker wrote both, the writer never inserted the row); its
    task is marked done. An audio file without a valid sidecar, a sidecar without its audio,
    and temporary files are the unfinished writes of a task that will run again: removed.
    Call it only when no worker is writing (the batch holds its lock).
    """
    adopted, removed = [], []
    known = {r[0] for r in cat.db.execute("SELECT path FROM loops")}
    for audio in cat.audio_files():
        rel = audio.relative_to(cat.root).as_posix()
        if rel in known:
            continue
        sidecar = sidecar_path(audio)
        try:
            data = read_sidecar(sidecar)
            # adopted only where the farm itself would have written it, whole
            expected = loop_path(data["style"], data["name"], data["format"])
            ok = data["path"] == rel == expected and data["sha256"] == file_sha256(audio)
        except FarmError:
            ok = False
        if ok:
            task = cat.db.execute(
                "SELECT id FROM tasks WHERE output_id = ? AND status IN ('pending', 'running') "
                "ORDER BY id DESC LIMIT 1", [data["id"]]).fetchone()
            cat.ingest_loop(data, task_id=task[0] if task else None)
            adopted.append(data["id"])
        else:
            for p in (audio, sidecar):
                if p.exists():
                    p.unlink()
                    removed.append(p.relative_to(cat.root).as_posix())
    sidecars = {r[0] for r in cat.db.execute("SELECT sidecar FROM loops")}
    loops_dir = cat.root / "loops"
    for sidecar in sorted(loops_dir.rglob("*.json")) if loops_dir.is_dir() else []:
        rel = sidecar.relative_to(cat.root).as_posix()
        if rel not in sidecars and not is_temp_name(sidecar.name) and not any(
                sidecar.with_suffix(suffix).exists() for suffix in AUDIO_SUFFIXES):
            sidecar.unlink()
            removed.append(rel)
    for temp in cat.temp_files():
        if temp.is_dir():
            import shutil

            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        removed.append(temp.relative_to(cat.root).as_posix())
    return adopted, removed


@dataclass
class CheckReport:
    """What ``Catalog.check`` found; ``ok`` when every list is empty."""

    rows: int = 0
    files: int = 0
    missing: list[str] = field(default_factory=list)  # rows whose audio file is gone
    mismatched: list[str] = field(default_factory=list)  # rows whose file's sha256 differs
    missing_sidecars: list[str] = field(default_factory=list)
    broken_sidecars: list[str] = field(default_factory=list)  # unreadable, invalid or another loop's
    orphans: list[str] = field(default_factory=list)  # audio files with no row
    temp_files: list[str] = field(default_factory=list)  # half-written files
    damage: list[str] = field(default_factory=list)  # SQLite's integrity check of catalog.db
    disagreeing: list[str] = field(default_factory=list)  # sidecars whose fields differ from the row
    duplicates: list[str] = field(default_factory=list)  # rows holding the same audio bytes: one sound, two ids
    broken_kits: list[str] = field(default_factory=list)  # kits whose folder lacks a file

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.missing_sidecars or self.broken_sidecars
                    or self.orphans or self.temp_files or self.damage or self.disagreeing or self.duplicates
                    or self.broken_kits)

    def lines(self) -> list[str]:
        if self.damage:
            return [f"catalog.db {self.damage[0]}", *(f"  {line}" for line in self.damage[1:]), "FAILED"]
        out = [f"{self.rows} rows, {self.files} audio files"]
        for title, items in (("missing file", self.missing), ("sha256 mismatch", self.mismatched),
                             ("missing sidecar", self.missing_sidecars),
                             ("broken sidecar", self.broken_sidecars),
                             ("sidecar disagrees (farm check --repair rewrites it)", self.disagreeing),
                             ("file without a row", self.orphans),
                             ("same audio under two ids", self.duplicates),
                             ("kit folder incomplete", self.broken_kits),
                             ("temporary file (run `farm batch --resume`)", self.temp_files)):
            out += [f"{title}: {item}" for item in items]
        out.append("ok" if self.ok else "FAILED")
        return out


