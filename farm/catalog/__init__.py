"""The loop catalog: one SQLite file (sqlite-utils, WAL mode) at the root of the loop library.

Layout of a catalog root::

    catalog.db                                   this catalog
    templates/<template id>/template.json        + <part>.mid, all.mid
    loops/<style>/LF_<bpm>_<part>_<patch>_<key>_<loop id>.flac   + .json sidecar beside it
    logs/<batch id>/worker-<n>.log               what the batch workers printed
    cache/                                       previews the review room makes (never catalogued)

``farm.catalog.store`` opens, migrates and writes it (the only writer's tools), with the rows
``farm.catalog.rows`` makes of a sidecar;
``farm.catalog.decisions`` approves, rejects and undoes; ``farm.catalog.health`` checks and reconciles files and rows; ``farm.catalog.queries`` holds
the saved queries and the functions the catalog commands wrap. Everything is importable from
``farm.catalog``; each module is loaded when one of its names is first asked for, so a command
that only opens the catalog (``farm match``) does not load the rest.
"""
import importlib

_EXPORTS = {
    "farm.catalog.health": ("CheckReport", "audio_files", "check", "reconcile", "temp_files"),
    "farm.catalog.queries": ("SQL_TIMEOUT_S", "SavedQuery", "bind_params", "catalog_stats", "check_catalog",
                             "format_rows", "parse_value", "review", "review_kits", "run_query", "run_sql",
                             "saved_queries", "show_loop", "sql_params", "undo"),
    "farm.catalog.decisions": ("ReviewResult", "default_reviewer"),
    "farm.catalog.store": ("ADDED_COLUMNS", "CACHE_DIR", "CATALOG_FILE", "KITS_DIR", "INDEXES_AFTER_COLUMNS",
                           "MACHINE_STATUS_SQL", "PROJECT_DIR", "QUERIES_DIR", "SCHEMA_PATH", "SCHEMA_VERSION",
                           "Catalog", "read_loop_audio"),
    "farm.catalog.rows": ("HARMONY_SQL", "LOOP_COLUMNS", "chord_rows", "harmony_text", "loop_row"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'farm.catalog' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))

