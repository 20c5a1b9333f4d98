"""The catalog rows of a loop's sidecar: its ``loops`` row and its ``chords`` rows, as the one
writer inserts them (``farm.catalog.store``)."""
from __future__ import annotations

import json
from typing import Sequence

from farm.fingerprint import pack
from farm.sidecar import FIELDS, sidecar_path

# A loop's chords as one text ("[9, 0, 4]|9;[2, 5, 9]|2": pitch classes and bass, bar by bar), what
# loops.harmony holds: farm match reads it with the candidates instead of a subquery per row.
HARMONY_SQL = ("(SELECT group_concat(x, ';') FROM (SELECT pitch_classes || '|' || bass_pc AS x FROM chords "
               "WHERE loop_id = loops.id ORDER BY bar))")

# Sidecar fields that are not loops columns, and loops columns that are not sidecar fields.
_SIDECAR_ONLY = {"chords", "sidecar_version"}
LOOP_COLUMNS = tuple(k for k in FIELDS if k not in _SIDECAR_ONLY) + ("sidecar",)


def loop_row(sidecar: dict) -> dict:
    """The ``loops`` row of a sidecar (JSON fields as JSON text, tags space separated)."""
    row = {k: sidecar.get(k) for k in LOOP_COLUMNS if k != "sidecar"}
    row["params"] = json.dumps(sidecar["params"], sort_keys=True)
    row["tags"] = " ".join(sidecar["tags"])
    row["fingerprint"] = json.dumps(sidecar["fingerprint"]) if sidecar.get("fingerprint") else None
    row["fp_packed"] = pack(sidecar["fingerprint"]) if sidecar.get("fingerprint") else None
    row["harmony"] = harmony_text(sidecar["chords"])
    row["sidecar"] = sidecar_path(sidecar["path"]).as_posix()
    # The machine checks' verdict as catalogued (a sidecar adopted after a person's decision
    # no longer tells it: its loop counts as passed unless it is rejected).
    row["machine_status"] = "rejected" if sidecar["status"] == "rejected" else "pending"
    return row


def harmony_text(chords: Sequence[dict]) -> str | None:
    """``loops.harmony`` of a sidecar's chords: what :data:`HARMONY_SQL` makes of its chord rows."""
    bars = sorted(chords, key=lambda c: c["bar"])
    return ";".join(f"{json.dumps(list(c['pitch_classes']))}|{c['bass_pc']}" for c in bars) or None


def chord_rows(sidecar: dict) -> list[dict]:
    """One ``chords`` row per bar of a sidecar."""
    return [{"loop_id": sidecar["id"], "bar": c["bar"], "symbol": c["symbol"], "roman": c["roman"],
             "root_pc": c["root_pc"], "bass_pc": c["bass_pc"],
             "pitch_classes": json.dumps(list(c["pitch_classes"])),
             "start_s": c["start_s"], "end_s": c["end_s"]} for c in sidecar["chords"]]
