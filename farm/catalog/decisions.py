"""Decisions: a person approves, rejects or takes back a decision; the catalog and the sidecars follow.

``review`` and ``undo`` are what `farm approve`, `farm reject`, `farm undo` and the review room
call (through ``Catalog.review``/``Catalog.undo`` or ``farm.catalog.review``/``undo``).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from typing import Sequence

from farm.catalog.store import MACHINE_STATUS_SQL, Catalog
from farm.errors import FarmError
from farm.sidecar import utc_now


def review(cat: Catalog, ids: Sequence[str] = (), where: str | None = None, *, status: str,
           reason: str | None = None, reviewer: str, include_machine_rejected: bool = False,
           params: Sequence | None = None) -> "ReviewResult":
    """Approve or reject loops by id (or unique prefix), or by an SQL ``where`` condition.

    Every decision that changes a loop is a ``reviews`` row (reviewer, time, status and
    reason before and after); the loop's status and the ``status``/``reject_reason`` of its
    sidecar follow. A decision that changes nothing (approving an approved loop) writes no
    row. ``where`` never approves a loop the machine checks rejected unless
    ``include_machine_rejected``; a loop named by id is a person's explicit choice. Nothing
    is deleted. All or nothing: an unknown id or a bad condition changes nothing.
    ``params`` binds the ``?`` of ``where``.
    """
    _check_decision(status, reason)
    if not reviewer:
        raise FarmError("who is reviewing? (--reviewer NAME)", field="reviewer")
    if not ids and not where:
        raise FarmError("name loop ids or give --where CONDITION", field="ids")
    if ids and where:
        raise FarmError("name loop ids or give --where CONDITION, not both", field="where")
    chosen = cat.resolve_ids(ids)
    machine_rejected = []
    if where:
        _, rows = cat.sql(f"SELECT id, status = 'rejected' AND {MACHINE_STATUS_SQL} = 'rejected' "
                           f"FROM loops WHERE ({where}) ORDER BY id", params)
        for loop_id, held_back in rows:
            if held_back and status == "approved" and not include_machine_rejected:
                machine_rejected.append(loop_id)
            else:
                chosen.append(loop_id)
    chosen = list(dict.fromkeys(chosen))
    reason = reason if status == "rejected" else None
    before = {loop_id: cat.db.execute("SELECT status, reject_reason FROM loops WHERE id = ?",
                                       [loop_id]).fetchone() for loop_id in chosen}
    changing = [loop_id for loop_id in chosen if tuple(before[loop_id]) != (status, reason)]
    for loop_id in changing:  # a sidecar that could not follow the decision stops it first
        cat.loop_sidecar(loop_id)
    now = utc_now()
    with writing(cat):
        with cat.db.atomic():
            for loop_id in changing:
                previous, previous_reason = before[loop_id]
                cat.db.execute("UPDATE loops SET status = ?, reject_reason = ? WHERE id = ?",
                                [status, reason, loop_id])
                cat.db["reviews"].insert({
                    "loop_id": loop_id, "status": status, "previous_status": previous,
                    "previous_reason": previous_reason, "reason": reason, "reviewer": reviewer,
                    "reviewed_at": now})
    sync_sidecars(cat, changing)
    return ReviewResult(changing, status=status, unchanged=len(chosen) - len(changing),
                        machine_rejected=machine_rejected)

def undo(cat: Catalog, loop_id: str, *, reviewer: str) -> dict:
    """Take back the latest decision on a loop that is still in force: its status and reject
    reason return to what they were, the review row is kept and marked undone (by whom,
    when), and the sidecar follows. Returns ``{"id", "status", "reject_reason", "undone"}``
    (``undone``: the review row taken back)."""
    if not reviewer:
        raise FarmError("who is reviewing? (--reviewer NAME)", field="reviewer")
    (loop_id,) = cat.resolve_ids([loop_id])
    row = cat.db.execute(
        "SELECT id, status, previous_status, previous_reason, reason FROM reviews "
        "WHERE loop_id = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1", [loop_id]).fetchone()
    if row is None:
        raise FarmError("has no decision to undo", file=cat.path, field=loop_id)
    review_id, status, previous, previous_reason, reason = row
    now_status, now_reason = cat.db.execute(
        "SELECT status, reject_reason FROM loops WHERE id = ?", [loop_id]).fetchone()
    if (now_status, now_reason) != (status, reason):
        raise FarmError(f"changed since that decision (it is {now_status} now); nothing undone",
                        file=cat.path, field=loop_id)
    cat.loop_sidecar(loop_id)
    with writing(cat):
        with cat.db.atomic():
            cat.db.execute("UPDATE loops SET status = ?, reject_reason = ? WHERE id = ?",
                            [previous, previous_reason, loop_id])
            cat.db.execute("UPDATE reviews SET undone_by = ?, undone_at = ? WHERE id = ?",
                            [reviewer, utc_now(), review_id])
    sync_sidecars(cat, [loop_id])
    return {"id": loop_id, "status": previous, "reject_reason": previous_reason, "undone": review_id}

def review_kits(cat: Catalog, ids: Sequence[str], *, status: str, reason: str | None = None,
                reviewer: str) -> ReviewResult:
    """Approve or reject kits by id (or unique prefix of at least 6 characters): each change is a
    ``kit_reviews`` row; a kit already in that state is left alone. All or nothing."""
    _check_decision(status, reason)
    if not reviewer:
        raise FarmError("who is reviewing? (--reviewer NAME)", field="reviewer")
    if not ids:
        raise FarmError("name kit ids", field="ids")
    has_kits = cat.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'kits'").fetchone()
    chosen = []
    for given in ids:
        found = [r[0] for r in cat.db.execute(
            "SELECT id FROM kits WHERE id >= ? AND id < ? ORDER BY id LIMIT 2", [given, given + "\uffff"])
        ] if has_kits and len(given) >= 6 else []
        if len(found) != 1 and given not in found:
            problem = ("give at least 6 characters of the id" if len(given) < 6 else
                       "no kit has this id" if not found else "more than one kit starts with this id")
            raise FarmError(problem, file=cat.path, field=given)
        chosen.append(given if given in found else found[0])
    chosen = list(dict.fromkeys(chosen))
    reason = reason if status == "rejected" else None
    before = {k: tuple(cat.db.execute("SELECT status, reject_reason FROM kits WHERE id = ?", [k]).fetchone())
              for k in chosen}
    changing = [k for k in chosen if before[k] != (status, reason)]
    now = utc_now()
    with writing(cat):
        with cat.db.atomic():
            for kit_id in changing:
                cat.db.execute("UPDATE kits SET status = ?, reject_reason = ? WHERE id = ?", [status, reason, kit_id])
                cat.db["kit_reviews"].insert({"kit_id": kit_id, "status": status, "previous_status": before[kit_id][0],
                                              "reason": reason, "reviewer": reviewer, "reviewed_at": now})
    return ReviewResult(changing, status=status, unchanged=len(chosen) - len(changing), noun="kit")

@contextlib.contextmanager
def writing(cat: Catalog):
    """A write the disk refuses (full, read-only) is one FarmError; SQLite has rolled it back."""
    try:
        yield
    except sqlite3.OperationalError as err:
        raise FarmError(f"cannot write: {err}; nothing was changed (free space, or make the catalog "
                        "root writable)", file=cat.path) from None

def sync_sidecars(cat: Catalog, loop_ids: Sequence[str]) -> None:
    """After a committed decision, its sidecars follow; one that cannot be written is one
    FarmError saying the catalog holds the decision and how to bring the sidecar along."""
    for loop_id in loop_ids:
        try:
            _sync_sidecar(cat, loop_id)
        except OSError as err:
            raise FarmError(f"cannot write: {err.strerror or err}; the catalog holds the decision, its "
                            "sidecars will follow with `farm check --repair` once that is fixed",
                            file=cat.root / "loops") from None

def _sync_sidecar(cat: Catalog, loop_id: str) -> None:
    from farm.files import atomic_write_text
    from farm.model import canonical_json

    status, reason, sidecar = cat.db.execute(
        "SELECT status, reject_reason, sidecar FROM loops WHERE id = ?", [loop_id]).fetchone()
    path = cat.root / sidecar
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # `farm check` reports a missing or broken sidecar
    if not isinstance(data, dict):
        return  # broken since review() read it: `farm check` reports it
    if data.get("status") != status or data.get("reject_reason") != reason:
        data["status"], data["reject_reason"] = status, reason
        atomic_write_text(path, canonical_json(data))


class ReviewResult(list):
    """The loop ids a review changed (``list[str]``), with what it left alone."""

    def __init__(self, changed=(), *, status: str, unchanged: int = 0, machine_rejected: Sequence[str] = (),
                 noun: str = "loop"):
        super().__init__(changed)
        self.noun = noun
        self.status = status
        self.unchanged = unchanged  # chosen loops already in that state: no review row
        self.machine_rejected = list(machine_rejected)  # held back from an approve --where

    def lines(self) -> list[str]:
        """What ``farm approve`` / ``farm reject`` print."""
        out = [f"{self.status} {len(self)} {self.noun}{'s' if len(self) != 1 else ''}"
               + (f"; {self.unchanged} already {self.status}" if self.unchanged else "")]
        out += [f"  {loop_id}" for loop_id in self[:20]]
        if len(self) > 20:
            out.append(f"  ... and {len(self) - 20} more")
        if self.machine_rejected:
            n = len(self.machine_rejected)
            out.append(f"left {n} loop{'s' if n != 1 else ''} the machine checks rejected as they are "
                       "(--include-machine-rejected approves them too)")
        return out


def _check_decision(status: str, reason: str | None) -> None:
    if status not in ("approved", "rejected"):
        raise FarmError(f"{status!r} is not approved or rejected", field="status")
    if status == "rejected" and not (reason and reason.strip()):
        raise FarmError("a rejection needs a reason (--reason TEXT)", field="reason")


def default_reviewer() -> str:
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


