"""``farm fingerprint``: give every catalogued loop made before fingerprints existed its fingerprint.

Each loop without one is read from the bytes the catalog hashed, fingerprinted as a new loop is
(``farm.fingerprint``), and its row and sidecar are updated together; the catalog's writer lock is
held, as by a night. Running it again finds nothing to do.
"""
from __future__ import annotations

import json
from pathlib import Path

from farm.catalog.lock import writer_lock
from farm.catalog.store import Catalog, read_loop_audio


def backfill_fingerprints(root: str | Path, progress: bool = False) -> int:
    """Fingerprint every loop of the catalog at ``root`` that has none; return how many were."""
    from farm.fingerprint import loop_fingerprint, pack
    from farm.progress import progress as progress_bar
    from farm.sidecar import sidecar_path, write_sidecar

    with Catalog(root, create=False) as cat, writer_lock(cat.root, "fingerprint"):
        rows = [dict(r) for r in cat.db.query(
            "SELECT id, path, sha256, bpm, meter, bars FROM loops WHERE fingerprint IS NULL ORDER BY id")]
        for row in progress_bar(rows, "fingerprint", "loop", disable=not progress or len(rows) < 2):
            audio, sample_rate = read_loop_audio(cat.root / row["path"], row["sha256"])
            data = loop_fingerprint(audio, sample_rate, row["bpm"], row["meter"], row["bars"])
            with cat.db.conn:
                cat.db.execute("UPDATE loops SET fingerprint = ?, fp_packed = ? WHERE id = ?",
                               [json.dumps(data), pack(data), row["id"]])
            sidecar = cat.row_sidecar(row["id"])
            write_sidecar(cat.root / sidecar_path(sidecar["path"]), sidecar)
        return len(rows)
