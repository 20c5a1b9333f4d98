"""The catalog in Datasette: metadata made from ``catalog/`` and ``farm datasette``.

``datasette_metadata()`` turns the project's own catalog description into Datasette's metadata:

* every saved query (``catalog/queries/*.sql``) becomes a canned query with its parameters; its
  first comment line is the title, its ``-- :name = value`` lines are listed as example values;
* the comments in ``catalog/schema.sql`` become table and column descriptions;
* the plugin in ``farm/datasette_plugins/`` links ``loops.patch_hash`` to its ``patches`` row
  (the column names the patch as rendered; SQLite cannot add that foreign key to a catalog
  already made, so the link is drawn where Datasette shows the cell).

Datasette opens the catalog read-only (``--immutable`` is not used: a night may be writing).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from farm.catalog import CATALOG_FILE, SCHEMA_PATH, Catalog, saved_queries

PLUGINS_DIR = Path(__file__).parent / "datasette_plugins"
DATABASE = Path(CATALOG_FILE).stem  # Datasette names a database by its file's stem
_TABLE = re.compile(r"CREATE (?:VIRTUAL )?TABLE IF NOT EXISTS (\w+)")
_VIEW = re.compile(r"CREATE VIEW IF NOT EXISTS (\w+)")
_COLUMN = re.compile(r"^\s+(\w+)\s+[A-Z][^-]*?--\s*(.+?)\s*$")


def schema_descriptions(schema: str | None = None) -> dict[str, dict]:
    """``{table: {"description": ..., "columns": {column: comment}}}`` from the schema's comments:
    the comment lines right above a ``CREATE TABLE``/``VIEW`` describe it, a trailing ``--``
    comment describes a column."""
    text = schema if schema is not None else SCHEMA_PATH.read_text(encoding="utf-8")
    tables: dict[str, dict] = {}
    above: list[str] = []
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        match = _TABLE.match(stripped) or _VIEW.match(stripped)
        if match:
            current = match.group(1)
            tables[current] = {"description": " ".join(above), "columns": {}}
            above = []
            continue
        if stripped.startswith("--"):
            above.append(stripped.lstrip("-").strip())
            continue
        if not stripped:
            above = []
        column = _COLUMN.match(line)
        if current and column and column.group(1).upper() not in ("PRIMARY", "UNIQUE", "CHECK"):
            tables[current]["columns"][column.group(1)] = column.group(2)
        if stripped.startswith(")") or stripped.endswith(";"):
            current = None if stripped.startswith(")") else current
    return {name: t for name, t in tables.items() if t["description"] or t["columns"]}


def datasette_metadata() -> dict:
    """Datasette metadata for a Loop Farm catalog (see the module docstring)."""
    queries = {}
    for name, query in saved_queries().items():
        examples = ", ".join(f":{k} = {v}" for k, v in query.defaults.items())
        queries[name] = {"title": query.description, "sql": query.sql.strip(), "params": list(query.params),
                         "description": f"farm query {name}" + (f" (for example {examples})" if examples else "")}
    tables = {}
    for table, info in schema_descriptions().items():
        entry = {"description": info["description"]} if info["description"] else {}
        if info["columns"]:
            entry["columns"] = info["columns"]
        tables[table] = entry
    return {"title": "Loop Farm catalog", "description": "Every loop, its labels, its checks and its reviews.",
            "databases": {DATABASE: {"tables": tables, "queries": queries}}}


def write_metadata(path: str | Path) -> Path:
    """Write the metadata as JSON to ``path`` (atomically)."""
    from farm.files import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(datasette_metadata(), indent=2, ensure_ascii=False) + "\n")
    return path


def datasette_command(root: str | Path, metadata: str | Path, host: str = "127.0.0.1", port: int = 8001) -> list[str]:
    """The ``datasette serve`` command line for the catalog at ``root``."""
    import sys

    with Catalog(root, readonly=True) as cat:  # a missing or foreign catalog is one line here
        path = cat.path
    return [sys.executable, "-m", "datasette", "serve", str(path), "--metadata", str(metadata), "--plugins-dir",
            str(PLUGINS_DIR), "--host", host, "--port", str(port)]
