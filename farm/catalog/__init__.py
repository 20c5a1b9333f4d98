"""The loop catalog: one SQLite file (sqlite-utils, WAL mode) at the root of the loop library.

Layout of a catalog root::

    catalog.db                                   this catalog
    templates/<template id>/template.json        + <part>.mid, all.mid
    loops/<style>/LF_<bpm>_<part>_<patch>_<key>_<loop id>.flac   + .json sidecar beside it
    logs/<batch id>/worker-<n>.log               what the batch workers printed
    cache/                                       previews the review room makes (never catalogued)

``farm.catalog.store`` opens, migrates and writes it (the only writer's tools);
``farm.catalog.decisions`` approves, rejects and undoes; ``farm.catalog.health`` checks and reconciles files and rows; ``farm.catalog.queries`` holds
the saved queries and the functions the catalog commands wrap. Everything is importable from
``farm.catalog``.
"""
from farm.catalog.health import CheckReport, audio_files, check, reconcile, temp_files  # noqa: F401
from farm.catalog.queries import (SQL_TIMEOUT_S, SavedQuery, bind_params, catalog_stats, check_catalog,  # noqa: F401
                                  format_rows, parse_value, review, review_kits, run_query, run_sql, saved_queries,
                                  show_loop, sql_params, undo)
from farm.catalog.decisions import ReviewResult, default_reviewer  # noqa: F401
from farm.catalog.store import (ADDED_COLUMNS, CACHE_DIR, CATALOG_FILE, KITS_DIR, INDEXES_AFTER_COLUMNS,  # noqa: F401
                                LOOP_COLUMNS, MACHINE_STATUS_SQL, PROJECT_DIR, QUERIES_DIR, SCHEMA_PATH,
                                SCHEMA_VERSION, Catalog, chord_rows, loop_row, read_loop_audio)
