"""The catalog store: one SQLite file (sqlite-utils, WAL mode) at the root of the loop library.

Layout of a catalog root::

    catalog.db                                   this catalog
    templates/<template id>/template.json        + <part>.mid, all.mid
    loops/<style>/LF_<bpm>_<part>_<patch>_<key>_<loop id>.flac   + .json sidecar beside it
    logs/<batch id>/worker-<n>.log               what the batch workers printed
    kits/LFK_<bpm>_<key>_<kit id>/               kits: stems/, midi/, mix.wav, kit.json, kit.png

Every path stored in a row or a sidecar is relative to the root. ``catalog/schema.sql`` is the
schema; ``catalog/queries/*.sql`` are the saved queries. Only the batch writer (or a person
reviewing) writes; ``farm sql`` and the saved queries read through a read-only connection.
"""
from __future__ import annotations


import json
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from farm.errors import FarmError
if TYPE_CHECKING:
    from farm.catalog.decisions import ReviewResult

from farm.catalog.rows import HARMONY_SQL, LOOP_COLUMNS, chord_rows, loop_row  # noqa: F401 (LOOP_COLUMNS: farm.catalog)
from farm.sidecar import FIELDS, file_sha256, read_sidecar, utc_now, validate_sidecar

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
SCHEMA_PATH = PROJECT_DIR / "catalog" / "schema.sql"
QUERIES_DIR = PROJECT_DIR / "catalog" / "queries"
CATALOG_FILE = "catalog.db"
# Indexes on columns ADDED_COLUMNS may have just added: the review queue's counts per filter read
# only these (one covering index per filter column), and its order is an index too.
INDEXES_AFTER_COLUMNS = "\n".join(
    [f"CREATE INDEX IF NOT EXISTS loops_facet_{c} ON loops({c}, status, bpm);"
     for c in ("style", "part", "role", "patch", "key", "operation", "batch_id", "machine_status")]
    + ["CREATE INDEX IF NOT EXISTS loops_queue ON loops("
       "(CASE status WHEN 'pending' THEN 0 WHEN 'rejected' THEN 1 ELSE 2 END), created_at);"]
    # farm match's candidates: every column it reads is in the index, so a query reads the index's
    # pages in order and never the rows (a row's fingerprint JSON spans overflow pages, and
    # reaching fp_packed behind it walked them: 4x slower over 10,000 candidates).
    + ["CREATE INDEX IF NOT EXISTS loops_candidates ON loops(meter, bars, sample_rate, bpm, id, part, role, "
       "style, operation, status, parent_id, params, harmony, fp_packed);"])
CACHE_DIR = "cache"  # under the root: previews the review room makes on demand, never catalogued
KITS_DIR = "kits"  # under the root: kit folders (farm kit), catalogued in kits, not loops
SCHEMA_VERSION = 5  # PRAGMA user_version once schema.sql is applied (2: reviews can be undone; 3: fingerprints; 4: kits;
# 5: loops.harmony and farm match's covering index)
# Columns added to a table after version 1: a catalog made before gets them on its next write open.
ADDED_COLUMNS = {"reviews": {"previous_reason": "TEXT", "undone_by": "TEXT", "undone_at": "TEXT"},
                 "loops": {"machine_status": "TEXT", "fingerprint": "TEXT", "fp_packed": "BLOB",
                           "harmony": "TEXT"}}
# Tables added after version 1 (with the version that added them): made on the next write open.
ADDED_TABLES = {"kits": 4, "kit_members": 4, "kit_reviews": 4}
# A loop's status when it was catalogued (before any person decided): the machine checks' verdict,
# "rejected" or "pending". Kept in loops.machine_status; for a row catalogued before that column,
# the first review row's previous status, or without one the status now.
MACHINE_STATUS_SQL = ("coalesce(loops.machine_status, (SELECT r.previous_status FROM reviews r "
                      "WHERE r.loop_id = loops.id ORDER BY r.id LIMIT 1), loops.status)")

# -- opening ----------------------------------------------------------------------------------
class Catalog:
    """A catalog root and its open SQLite connection (``conn``; ``db``: the same connection as a
    ``sqlite_utils.Database``, made on first use, so that a command that only reads, such as
    ``farm match``, does not spend ~50 ms importing sqlite-utils).

    ``readonly=True`` opens ``catalog.db`` with ``mode=ro`` (no write is possible);
    ``create=False`` refuses to create a catalog that is not there yet; ``untouched=True`` (with
    ``readonly``) also leaves no ``-wal``/``-shm`` file behind.

    Every open refuses, with one FarmError line and before anything is written, a file that is
    not a Loop Farm catalog, one whose tables lack a column the schema has, one of a schema
    version newer than this code, and one SQLite finds damaged. The damage check
    (``PRAGMA quick_check``) reads the whole file, so it runs only when ``catalog.db`` changed
    since a Loop Farm writer last closed it (``.catalog-verified`` beside it records that), or
    always with ``verify="always"``; ``verify=False`` skips it (the review room checks once).
    """

    def __init__(self, root: str | Path = "library", *, readonly: bool = False, create: bool = True,
                 untouched: bool = False, verify: bool | str = True):
        self.root = Path(root)
        self.path = self.root / CATALOG_FILE
        self.readonly = readonly
        self.verify = verify
        exists = self.path.is_file()
        if (readonly or not create) and not exists:
            raise FarmError("no catalog here; `farm batch` creates it", file=self.path)
        if readonly:
            # untouched: with no write under way (no -wal file) the file is opened immutable, so
            # reading it creates no -wal or -shm beside it; with a writer, its -wal exists already.
            # A library on a read-only disk is read the same way: nothing could be written there.
            wal = Path(str(self.path) + "-wal")
            no_wal = not wal.exists() or wal.stat().st_size == 0
            immutable = (untouched or not _writable(self.root)) and no_wal
            self._open_readonly(immutable)
            try:
                self._check_is_catalog(empty_ok=False)
            except FarmError:
                if immutable or not no_wal:
                    raise
                # A full disk leaves no room for SQLite's -shm file; with nothing in a -wal,
                # the catalog reads as well immutable.
                self._open_readonly(True)
                self._check_is_catalog(empty_ok=False)
            conn = self.conn
            self._check_health()
            conn.execute("PRAGMA query_only = ON")
            # mode=ro keeps catalog.db unchanged, but ATTACH (and VACUUM INTO, which attaches)
            # would still create other files: a read-only catalog creates nothing.
            conn.set_authorizer(_read_only_authorizer)
            return
        if exists and not (_writable(self.root) and _writable(self.path)):
            raise _cannot_write(self.path, OSError(0, _why_not_writable(self.root)))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path)
            self.conn.execute("PRAGMA busy_timeout = 10000")
        except (OSError, sqlite3.Error) as err:
            raise _cannot_write(self.path, err) from None
        if exists:  # an existing file is written only once it reads as a catalog
            self._check_is_catalog(empty_ok=create)
            self._check_health()
        try:
            self._setup()
        except (OSError, sqlite3.Error) as err:
            self.conn.close()
            if _disk_full(self.root):
                err = OSError(0, "no space left on device")
            raise _cannot_write(self.path, err) from None

    _db = None

    @property
    def db(self):
        """The connection as a ``sqlite_utils.Database``."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def query(self, sql: str, params: Sequence | dict = ()):
        """Rows of ``sql`` as dicts (what ``sqlite_utils.Database.query`` gives)."""
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(names, row))

    def _open_readonly(self, immutable: bool) -> None:
        conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro" + ("&immutable=1" if immutable else ""),
                               uri=True)
        conn.execute("PRAGMA busy_timeout = 10000")
        self.conn, self._db = conn, None

    def _check_is_catalog(self, empty_ok: bool) -> None:
        """FarmError (the connection closed) unless ``catalog.db`` is SQLite with a ``loops`` table.

        ``empty_ok``: an empty database (a zero-byte file, or no table yet) is a catalog still to
        be created, which only a caller that creates catalogs may fill in.
        """
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.OperationalError as err:  # "unable to open database file": not a verdict on the file
            self.conn.close()
            if _disk_full(self.root):
                raise _cannot_write(self.path, OSError(0, "no space left on device")) from None
            raise FarmError(f"cannot open: {err}", file=self.path) from None
        except sqlite3.DatabaseError as err:
            reason = str(err)  # "file is not a database", "database disk image is malformed"
        else:
            if "loops" in tables or (empty_ok and not tables):
                return
            reason = ("an empty file" if self.path.stat().st_size == 0
                      else "an SQLite database without a loops table")
        self.conn.close()
        raise FarmError(f"not a Loop Farm catalog ({reason})", file=self.path)

    def _check_health(self) -> None:
        """FarmError (the connection closed) for a foreign schema, a newer version, or damage."""
        from farm.catalog.health import damage, schema_problems, stamp_matches

        problems = schema_problems(self.conn)
        if not problems and self.verify and (self.verify == "always" or not stamp_matches(self.path)):
            problems = damage(self.conn, quick=True)
        if problems:
            self.conn.close()
            raise FarmError(problems[0], file=self.path)

    def _setup(self) -> None:
        conn = self.conn
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL survives any crash of the process; a power cut may lose the last commits,
        # whose files `farm batch --resume` adopts again from their sidecars.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            conn.executescript(SCHEMA_PATH.read_text(encoding="utf-8"))
            for table, columns in ADDED_COLUMNS.items():
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            conn.execute(f"UPDATE loops SET machine_status = {MACHINE_STATUS_SQL} WHERE machine_status IS NULL")
            from farm.fingerprint import pack_json

            conn.create_function("fp_pack", 1, pack_json, deterministic=True)
            conn.execute("UPDATE loops SET fp_packed = fp_pack(fingerprint) WHERE fp_packed IS NULL "
                         "AND fingerprint IS NOT NULL")
            conn.execute(f"UPDATE loops SET harmony = {HARMONY_SQL} WHERE harmony IS NULL")
            conn.execute("DROP INDEX IF EXISTS loops_match")  # schema 4's, which the covering index replaces
            conn.executescript(INDEXES_AFTER_COLUMNS)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.commit()  # the UPDATE opened a transaction: the schema change is whole or not at all

    def close(self) -> None:
        self.conn.close()
        if not self.readonly and self.path.is_file():
            from farm.catalog.health import write_stamp

            write_stamp(self.path)  # this writer leaves the catalog as SQLite found it: whole

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def ingest_loop(self, sidecar: dict, *, task_id: int | None = None) -> bool:
        """Insert a loop and its chord rows from its sidecar, in one transaction.

        Idempotent on the loop id: a loop already catalogued is left as it is and False is
        returned. ``task_id`` (a ``tasks`` row) is marked done in the same transaction, so a
        task is done exactly when its loop has a row.
        """
        validate_sidecar(sidecar)
        with self.db.atomic():
            inserted = self.conn.execute("SELECT 1 FROM loops WHERE id = ?", [sidecar["id"]]).fetchone() is None
            if inserted:
                self.db["loops"].insert(loop_row(sidecar))
                self.db["chords"].insert_all(chord_rows(sidecar))
            if task_id is not None:
                self.conn.execute(
                    "UPDATE tasks SET status = 'done', finished_at = ? WHERE id = ?",
                    [utc_now(), task_id])
        return inserted

    def add_template(self, template, path: str, batch_id: str | None = None) -> None:
        """Record a template (``farm.model.Template``) written under ``path`` (relative); idempotent."""
        self.db["templates"].insert({
            "id": template.id, "style": template.style, "seed": template.seed,
            "key": template.key.short, "key_tonic": template.key.tonic, "key_mode": template.key.mode,
            "bpm": template.bpm, "meter": str(template.meter), "bars": template.bars,
            "ppq": template.ppq,
            "progression": " ".join(c.symbol for c in template.chords),
            "romans": " ".join(c.roman for c in template.chords),
            "parts": json.dumps([p.name for p in template.parts]),
            "path": path, "generator_version": template.generator_version,
            "created_at": utc_now(), "batch_id": batch_id,
        }, ignore=True)

    def add_patch(self, patch) -> None:
        """Record a patch (``farm.patches.Patch``) as it is now; idempotent on its content hash."""
        self.db["patches"].insert({
            "content_hash": patch.content_hash, "name": patch.name,
            "roles": json.dumps(list(patch.roles)), "target_lufs": patch.target_lufs,
            "description": getattr(patch, "description", "") or None, "first_seen": utc_now(),
        }, ignore=True)

    # -- reading ------------------------------------------------------------------------------
    def has_loop(self, loop_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM loops WHERE id = ?", [loop_id]).fetchone() is not None

    def resolve_ids(self, ids: Iterable[str]) -> list[str]:
        """Full loop ids from ids or unique prefixes (at least 6 characters); FarmError otherwise."""
        out = []
        for given in ids:
            found = [r[0] for r in self.conn.execute(
                "SELECT id FROM loops WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                [given, given + "\uffff"])] if len(given) >= 6 else []
            if given in found:
                found = [given]
            if len(found) != 1:
                problem = "no loop has this id" if not found else "more than one loop starts with this id"
                if len(given) < 6:
                    problem = "give at least 6 characters of the id"
                raise FarmError(problem, file=self.path, field=given)
            out.append(found[0])
        return out

    def sql(self, query: str, params: dict | Sequence | None = None, *, source: str | Path | None = None
            ) -> tuple[list[str], list[tuple]]:
        """Run one SQL statement; ``(column names, rows)``. Errors become one FarmError line,
        which quotes the statement, or names ``source`` (the file it came from) when given."""
        try:
            cursor = self.conn.execute(query, params or {})
            rows = cursor.fetchall()
        except sqlite3.ProgrammingError as err:
            raise FarmError(str(err), file=self.path, field="sql") from None
        except sqlite3.Error as err:
            message = str(err)
            if self.readonly and ("not authorized" in message or "authorization denied" in message):
                message = "a read-only connection attaches no other database"
            where = source if source is not None else " ".join(query.split())[:120]
            raise FarmError(f"{message} (in: {where})", file=self.path, field="sql") from None
        columns = [d[0] for d in cursor.description] if cursor.description else []
        return columns, rows

    def loop(self, loop_id: str) -> dict:
        """Everything about one loop: its row, chords, reviews, children, and the state of its
        audio file (``file``) and sidecar (``sidecar_file``)."""
        (loop_id,) = self.resolve_ids([loop_id])
        row = next(self.query("SELECT * FROM loops WHERE id = ?", [loop_id]))
        row.pop("fp_packed", None)  # farm match's binary copy of the fingerprint, which the row holds as JSON
        row.pop("harmony", None)  # farm match's copy of the chords, shown as chords
        row["params"] = json.loads(row["params"]) if row["params"] else {}
        row["chords"] = self.loop_chords(loop_id)
        row["reviews"] = list(self.query(
            "SELECT status, previous_status, reason, reviewer, reviewed_at FROM reviews "
            "WHERE loop_id = ? ORDER BY id", [loop_id]))
        row["children"] = [r["id"] for r in self.query(
            "SELECT id FROM loops WHERE parent_id = ? ORDER BY id", [loop_id])]
        audio = self.root / row["path"]
        row["file"] = ("missing" if not audio.is_file()
                       else "ok" if file_sha256(audio) == row["sha256"] else "sha256 mismatch")
        try:
            row["sidecar_file"] = "ok" if self.loop_sidecar(loop_id) is not None else "missing"
        except FarmError as err:
            row["sidecar_file"] = "broken: " + ": ".join(x for x in (err.field, err.message) if x)
        return row

    def row_sidecar(self, loop_id: str) -> dict:
        """The sidecar a loop's catalog row says it has (the catalog is the truth): every sidecar
        field from the row and its chord rows."""
        from farm.sidecar import SIDECAR_VERSION

        row = next(self.query("SELECT * FROM loops WHERE id = ?", [loop_id]))
        data = {k: row[k] for k in FIELDS if k in row}
        data["params"] = json.loads(row["params"]) if row["params"] else {}
        data["tags"] = row["tags"].split()
        data["fingerprint"] = json.loads(row["fingerprint"]) if row.get("fingerprint") else None
        data["chords"] = self.loop_chords(loop_id)
        data["sidecar_version"] = SIDECAR_VERSION
        return data

    def loop_chords(self, loop_id: str) -> list[dict]:
        """A loop's chord rows bar by bar, as its sidecar holds them (``pitch_classes`` a list)."""
        return [dict(c, pitch_classes=json.loads(c["pitch_classes"])) for c in self.query(
            "SELECT bar, symbol, roman, root_pc, pitch_classes, bass_pc, start_s, end_s "
            "FROM chords WHERE loop_id = ? ORDER BY bar", [loop_id])]

    def stats(self) -> dict:
        """Counts a person wants before reviewing: loops by status, style, part, key; batches."""
        one = lambda q: self.conn.execute(q).fetchone()  # noqa: E731
        groups = lambda col: dict(self.conn.execute(  # noqa: E731
            f"SELECT {col}, count(*) FROM loops GROUP BY {col} ORDER BY count(*) DESC, {col}").fetchall())
        total, seconds = one("SELECT count(*), coalesce(sum(duration_s), 0) FROM loops")
        out = {
            "loops": total,
            "hours_of_audio": round(seconds / 3600.0, 3),
            "templates": one("SELECT count(*) FROM templates")[0],
            "patches": one("SELECT count(DISTINCT name) FROM patches")[0],
            "by_status": groups("status"),
            "by_style": groups("style"),
            "by_part": groups("part"),
            "by_operation": groups("operation"),
            "by_key": groups("key"),
            "reject_reasons": dict(self.conn.execute(
                "SELECT substr(reject_reason, 1, instr(reject_reason || ':', ':') - 1) AS reason, "
                "count(*) FROM loops WHERE status = 'rejected' GROUP BY reason "
                "ORDER BY count(*) DESC").fetchall()),
            "reviews": one("SELECT count(*) FROM reviews")[0],
            "batches": [],
        }
        for batch in self.query("SELECT id, status, started_at, finished_at FROM batches "
                                   "ORDER BY started_at DESC, id DESC LIMIT 5"):
            batch["tasks"] = dict(self.conn.execute(
                "SELECT status, count(*) FROM tasks WHERE batch_id = ? GROUP BY status ORDER BY status",
                [batch["id"]]).fetchall())
            out["batches"].append(batch)
        return out

    # -- reviewing ----------------------------------------------------------------------------
    def review(self, ids: Sequence[str] = (), where: str | None = None, *, status: str,
               reason: str | None = None, reviewer: str, include_machine_rejected: bool = False,
               params: Sequence | None = None) -> "ReviewResult":
        """Approve or reject loops (``farm.catalog.decisions.review``)."""
        from farm.catalog.decisions import review

        return review(self, ids, where, status=status, reason=reason, reviewer=reviewer,
                      include_machine_rejected=include_machine_rejected, params=params)

    def undo(self, loop_id: str, *, reviewer: str) -> dict:
        """Take back a loop's latest decision (``farm.catalog.decisions.undo``)."""
        from farm.catalog.decisions import undo

        return undo(self, loop_id, reviewer=reviewer)

    def loop_sidecar(self, loop_id: str) -> dict | None:
        """A loop's sidecar, read and validated; None when the file is missing (``farm check``
        reports that). A sidecar that cannot be read, is not a valid sidecar or names another
        loop is a FarmError naming the file."""
        (sidecar,) = self.conn.execute("SELECT sidecar FROM loops WHERE id = ?", [loop_id]).fetchone()
        path = self.root / sidecar
        if not path.exists():
            return None
        data = read_sidecar(path)
        if data["id"] != loop_id:
            raise FarmError(f"names loop {data['id']}, not {loop_id}", file=path, field="id")
        return data

    # -- integrity (farm.catalog.health) ------------------------------------------------------
    def audio_files(self) -> list[Path]:
        """Every audio file under the root (see ``farm.catalog.health.audio_files``)."""
        from farm.catalog.health import audio_files

        return audio_files(self)

    def temp_files(self) -> list[Path]:
        from farm.catalog.health import temp_files

        return temp_files(self)

    def check(self, progress: bool = False):
        """``farm check``'s report (``farm.catalog.health.check``)."""
        from farm.catalog.health import check

        return check(self, progress)

    def reconcile(self, progress: bool = False) -> tuple[list[str], list[str]]:
        """Make files and rows agree after an interrupted batch (``farm.catalog.health.reconcile``)."""
        from farm.catalog.health import reconcile

        return reconcile(self, progress)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _disk_full(path: Path) -> bool:
    import shutil

    try:
        return shutil.disk_usage(path).free < (1 << 20)
    except OSError:
        return False


def _why_not_writable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def _cannot_write(path: Path, err: Exception) -> FarmError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return FarmError(f"cannot write the catalog here ({reason}); is the catalog root writable, with space left?",
                     file=path)


def _read_only_authorizer(action: int, *_args) -> int:
    """sqlite3 authorizer of a read-only connection: no ATTACH or DETACH (no new files)."""
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK


def read_loop_audio(path: str | Path, sha256: str):
    """A catalogued loop's audio, float32 ``(channels, samples)``, and its sample rate, decoded from
    the bytes checked against the catalog's ``sha256`` (a changed file would be read under labels
    that are not its own). A missing, changed or undecodable file is one FarmError pointing to
    ``farm check``."""
    import hashlib

    from farm.audio import read_audio

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FarmError("audio file is missing (run `farm check`)", file=path, field="audio") from None
    except OSError as err:
        raise FarmError(f"cannot read: {err.strerror or err} (run `farm check`)", file=path, field="audio") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise FarmError("does not match the catalog's sha256 (run `farm check`)", file=path, field="sha256")
    try:
        return read_audio(path, data)
    except FarmError as err:
        raise FarmError(f"{err.message} (run `farm check`)", file=err.file, field=err.field) from None


