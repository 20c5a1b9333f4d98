"""Saved queries and the functions the catalog commands wrap (``farm sql``, ``query``, ``show``,
``stats``, ``approve``/``reject``, ``undo``, ``check``).

A saved query is ``catalog/queries/<name>.sql``: its first comment line says what it answers,
``-- :name = value`` lines give example values for its ``:name`` parameters.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from farm.catalog.health import CheckReport
from farm.catalog.decisions import ReviewResult, _check_decision, default_reviewer
from farm.catalog.store import QUERIES_DIR, Catalog
from farm.errors import FarmError, unknown_name


@dataclass(frozen=True)
class SavedQuery:
    """``catalog/queries/<name>.sql``: its first comment line says what it answers."""

    name: str
    description: str
    sql: str
    params: tuple[str, ...]  # named :params, in order of first use
    defaults: dict  # from ``-- :name = value`` comment lines
    path: Path


_DEFAULT_LINE = re.compile(r"^--\s*:(\w+)\s*=\s*(.*?)\s*$")
_STRIP = re.compile(r"--[^\n]*|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", re.S)
_NUMBER = re.compile(r"[+-]?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")  # not an id like 0000000000000000
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def sql_params(sql: str) -> tuple[str, ...]:
    """Named ``:params`` of an SQL text (outside comments and string literals)."""
    return tuple(dict.fromkeys(_PARAM.findall(_STRIP.sub(" ", sql))))


def saved_queries(directory: str | Path | None = None) -> dict[str, SavedQuery]:
    """Every saved query by name."""
    out = {}
    for path in sorted(Path(directory or QUERIES_DIR).glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if not lines or not lines[0].startswith("--"):
            raise FarmError("the first line must be a `-- what it answers` comment", file=path)
        defaults = {m.group(1): m.group(2) for m in map(_DEFAULT_LINE.match, lines) if m}
        out[path.stem] = SavedQuery(path.stem, lines[0].lstrip("-").strip(), text, sql_params(text),
                                    defaults, path)
    return out


def parse_value(text: str):
    """A ``--param`` value: integer or number when it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def bind_params(query: SavedQuery, given: dict[str, str]) -> dict:
    """The parameters for ``query``: given values over the defaults; FarmError when one is missing."""
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        raise FarmError(f"unknown parameter (this query takes: {', '.join(query.params) or 'none'})",
                        file=query.path, field=unknown[0])
    values = {}
    for name in query.params:
        if name in given:
            values[name] = parse_value(given[name])
            # A number compared with text is never equal in SQLite: the query would quietly
            # match nothing, so a parameter whose default is a number takes only numbers.
            if (name in query.defaults and _NUMBER.fullmatch(query.defaults[name])
                    and isinstance(values[name], str)):
                raise FarmError(f"expects a number (default {query.defaults[name]}), got {given[name]!r}",
                                file=query.path, field=name)
        elif name in query.defaults:
            values[name] = parse_value(query.defaults[name])
        else:
            raise FarmError(f"needs --param {name}=VALUE", file=query.path, field=name)
    return values


# -- functions the CLI wraps ------------------------------------------------------------------
SQL_TIMEOUT_S = 30.0  # farm sql / farm query: a statement still running then is stopped


def run_sql(root: str | Path, sql: str, params: dict | None = None, *, source: str | Path | None = None,
            timeout_s: float = SQL_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
    """``farm sql``: one statement on a read-only connection to ``root/catalog.db`` that creates
    no file (``source``: the file the statement came from, for errors). A statement still running
    after ``timeout_s`` seconds is stopped: a FarmError naming ``--timeout``."""
    import time

    if not 0 < timeout_s <= 86400:
        raise FarmError(f"{timeout_s:g} is outside 0..86400 seconds", field="--timeout")
    deadline = time.monotonic() + timeout_s
    with Catalog(root, readonly=True, untouched=True) as cat:
        # SQLite calls this every 10,000 virtual machine steps; non-zero interrupts the statement.
        cat.db.conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            return cat.sql(sql, params, source=source)
        except FarmError as err:
            if "interrupted" in err.message and time.monotonic() > deadline:
                raise FarmError(f"stopped after {timeout_s:g} s (--timeout SECONDS allows longer)",
                                file=cat.path, field="sql") from None
            raise


def run_query(root: str | Path, name: str, params: dict[str, str] | None = None, *,
              timeout_s: float = SQL_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
    """``farm query``: a saved query by name, its ``:params`` bound from ``params`` and defaults."""
    queries = saved_queries()
    if name not in queries:
        raise FarmError(unknown_name("saved query", name, queries), field="name")
    query = queries[name]
    return run_sql(root, query.sql, bind_params(query, params or {}), source=query.path, timeout_s=timeout_s)


def show_loop(root: str | Path, loop_id: str) -> dict:
    """``farm show``: everything about one loop."""
    with Catalog(root, readonly=True) as cat:
        return cat.loop(loop_id)


def catalog_stats(root: str | Path) -> dict:
    """``farm stats``."""
    with Catalog(root, readonly=True) as cat:
        return cat.stats()


def review(root: str | Path, ids: Sequence[str] = (), where: str | None = None, *, status: str,
           reason: str | None = None, reviewer: str | None = None,
           include_machine_rejected: bool = False) -> ReviewResult:
    """``farm approve`` / ``farm reject``: the ids changed (see ``Catalog.review``)."""
    _check_decision(status, reason)
    with Catalog(root, create=False) as cat:
        return cat.review(ids, where, status=status, reason=reason, reviewer=reviewer or default_reviewer(),
                          include_machine_rejected=include_machine_rejected)


def review_kits(root: str | Path, ids: Sequence[str], *, status: str, reason: str | None = None,
                reviewer: str | None = None) -> ReviewResult:
    """``farm approve --kits`` / ``farm reject --kits``: the kit ids changed."""
    from farm.catalog.decisions import review_kits as decide

    with Catalog(root, create=False) as cat:
        return decide(cat, ids, status=status, reason=reason, reviewer=reviewer or default_reviewer())


def undo(root: str | Path, loop_id: str, reviewer: str | None = None) -> dict:
    """``farm undo``: take back the latest decision on a loop (see ``Catalog.undo``)."""
    with Catalog(root, create=False) as cat:
        return cat.undo(loop_id, reviewer=reviewer or default_reviewer())


def check_catalog(root: str | Path, progress: bool = False) -> CheckReport:
    """``farm check``: SQLite's full integrity check of ``catalog.db``, then every row against its
    files. A damaged catalog is reported (its files are not read through it); a foreign or newer
    one is refused like everywhere else."""
    from farm.catalog.health import damage

    with Catalog(root, readonly=True, verify=False) as cat:
        problems = damage(cat.db.conn)
        if problems:
            return CheckReport(damage=problems)
        return cat.check(progress=progress)


def format_rows(columns: Sequence[str], rows: Sequence[Sequence], fmt: str = "table") -> str:
    """Rows as an aligned ``table``, ``csv`` or ``json`` (a list of objects)."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, r)) for r in rows], indent=2, ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    if _plain(columns) and all(_plain(r) for r in rows):
        return _plain_table(columns, rows)
    from tabulate import tabulate

    return tabulate(rows, headers=list(columns), tablefmt="simple", disable_numparse=True)


def _plain(cells: Sequence) -> bool:
    return all(isinstance(c, str) and c.isascii() and c.isprintable() for c in cells)


def _plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """tabulate's "simple" table for one-line ASCII text cells, character for character (the tests
    compare them), without importing tabulate, which takes a quarter of `farm match`'s start-up."""
    cells = [list(columns)] + [[c.strip() for c in r] for r in rows]
    widths = [max([len(cells[0][i]) + 2] + [len(r[i]) for r in cells[1:]]) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
