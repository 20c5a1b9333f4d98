"""The review queue: which loops a person hears next, filtered, counted and paged.

Plain SQL over the catalog (``farm.catalog.Catalog``), for the review room and for scripts alike.
A filter is a ``Filters`` of column values; every value reaches SQLite as a bound parameter, and
column names come only from ``FILTER_COLUMNS``. Pending loops come first, oldest first (the order
a night made them), then rejected, then approved.

``machine`` is the machine checks' verdict: ``rejected`` when the loop was catalogued rejected
(silence, clipping, loudness far from target, splice bleed ...), ``passed`` otherwise, whatever a
person decided since (``farm.catalog.MACHINE_STATUS_SQL``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from farm.catalog import MACHINE_STATUS_SQL, Catalog
from farm.errors import FarmError

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Filters that pick one value of a column, and the column each one reads.
FILTER_COLUMNS = {"style": "style", "part": "part", "role": "role", "patch": "patch", "key": "key",
                  "operation": "operation", "status": "status", "batch": "batch_id",
                  "machine": MACHINE_STATUS_SQL}
MACHINE_VALUES = {"passed": "pending", "rejected": "rejected"}  # the verdict -> status at cataloguing
# The queue order; the same expression as the catalog's loops_queue index, so a page is an index walk.
STATUS_ORDER = "(CASE status WHEN 'pending' THEN 0 WHEN 'rejected' THEN 1 ELSE 2 END)"
QUEUE_COLUMNS = ("id", "name", "style", "part", "role", "patch", "key", "bpm", "meter", "bars", "progression",
                 "operation", "parent_id", "template_id", "status", "reject_reason", "lufs", "duration_s",
                 "batch_id", "created_at")


@dataclass(frozen=True)
class Filters:
    """What the reviewer narrowed the queue to; None = any. ``bpm_min``/``bpm_max`` in quarter
    notes per minute, inclusive."""

    style: str | None = None
    part: str | None = None
    role: str | None = None
    patch: str | None = None
    key: str | None = None
    operation: str | None = None
    status: str | None = None
    machine: str | None = None  # passed | rejected
    batch: str | None = None
    bpm_min: float | None = None
    bpm_max: float | None = None

    @classmethod
    def from_query(cls, query: dict) -> "Filters":
        """Filters from request or command-line strings; empty strings mean any. A FarmError names
        a bad field (an unknown name, a bpm that is not a number)."""
        known = {f.name for f in fields(cls)}
        values = {}
        for name, text in query.items():
            if name not in known:
                continue
            text = str(text).strip()
            if not text:
                continue
            if name.startswith("bpm_"):
                try:
                    value = float(text)
                except ValueError:
                    raise FarmError(f"{text!r} is not a tempo in bpm", field=name) from None
                if not 1.0 <= value <= 999.0:
                    raise FarmError(f"{value:g} is outside 1..999 bpm", field=name)
                values[name] = value
            else:
                if len(text) > 200:
                    raise FarmError("is longer than 200 characters", field=name)
                if name == "machine" and text not in MACHINE_VALUES:
                    raise FarmError(f"{text!r} is not passed or rejected", field=name)
                values[name] = text
        return cls(**values)

    def where(self, leave_out: str | None = None) -> tuple[str, list]:
        """``(SQL condition, parameters)``; ``leave_out`` skips one filter (a facet's own counts
        show what choosing another value of it would give)."""
        clauses, params = [], []
        for name, column in FILTER_COLUMNS.items():
            value = getattr(self, name)
            if value is None or name == leave_out:
                continue
            clauses.append(f"{column} = ?")
            params.append(MACHINE_VALUES[value] if name == "machine" else value)
        if self.bpm_min is not None and leave_out != "bpm":
            clauses.append("bpm >= ?")
            params.append(self.bpm_min)
        if self.bpm_max is not None and leave_out != "bpm":
            clauses.append("bpm <= ?")
            params.append(self.bpm_max)
        return (" AND ".join(clauses) or "1"), params

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class QueuePage:
    """One page of the queue: ``loops`` (dicts of ``QUEUE_COLUMNS`` plus ``machine``), ``total``
    matching loops, and the ``offset`` of the first."""

    loops: list[dict]
    total: int
    offset: int
    limit: int


def queue_page(cat: Catalog, filters: Filters = Filters(), offset: int = 0, limit: int = PAGE_SIZE) -> QueuePage:
    """Loops matching ``filters``: pending first, then rejected, then approved; oldest first."""
    if not 0 <= offset <= 10**9:
        raise FarmError(f"{offset} is not a page offset", field="offset")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise FarmError(f"{limit} is outside 1..{MAX_PAGE_SIZE}", field="limit")
    condition, params = filters.where()
    total = cat.db.execute(f"SELECT count(*) FROM loops WHERE {condition}", params).fetchone()[0]
    columns = ", ".join(QUEUE_COLUMNS)
    rows = cat.db.execute(
        f"SELECT {columns}, {MACHINE_STATUS_SQL} FROM loops WHERE {condition} "
        f"ORDER BY {STATUS_ORDER}, created_at, rowid LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
    loops = []
    for row in rows:
        loop = dict(zip(QUEUE_COLUMNS, row[:-1]))
        loop["machine"] = "rejected" if row[-1] == "rejected" else "passed"
        loops.append(loop)
    return QueuePage(loops, total, offset, limit)


def queue_counts(cat: Catalog, filters: Filters = Filters()) -> dict[str, dict[str, int]]:
    """For each filter, how many loops each of its values would give with the other filters kept:
    ``{"style": {"lofi-hiphop": 16, ...}, "machine": {"passed": 120, "rejected": 12}, ...}``."""
    out = {}
    for name, column in FILTER_COLUMNS.items():
        condition, params = filters.where(leave_out=name)
        rows = cat.db.execute(f"SELECT {column} AS value, count(*) FROM loops WHERE {condition} "
                              f"GROUP BY value ORDER BY value", params).fetchall()
        if name == "machine":
            rows = [("rejected" if v == "rejected" else "passed", n) for v, n in rows]
            merged: dict[str, int] = {}
            for v, n in rows:
                merged[v] = merged.get(v, 0) + n
            rows = sorted(merged.items())
        out[name] = {str(v): n for v, n in rows if v is not None}
    condition, params = filters.where(leave_out="bpm")
    low, high = cat.db.execute(f"SELECT min(bpm), max(bpm) FROM loops WHERE {condition}", params).fetchone()
    out["bpm"] = {"min": low, "max": high}
    return out


def matching_ids(cat: Catalog, filters: Filters) -> list[str]:
    """Every loop id the filters select, in queue order (what a bulk decision acts on)."""
    condition, params = filters.where()
    return [r[0] for r in cat.db.execute(
        f"SELECT id FROM loops WHERE {condition} ORDER BY {STATUS_ORDER}, created_at, rowid", params)]


def review_queue(root: str | Path, filters: Filters = Filters(), offset: int = 0,
                 limit: int = PAGE_SIZE) -> QueuePage:
    """One page of the review queue of the catalog at ``root``."""
    with Catalog(root, readonly=True) as cat:
        return queue_page(cat, filters, offset, limit)
