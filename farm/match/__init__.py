"""Stage 4: loops that fit together, and the construction kits made of them.

* ``farm.fingerprint``: each loop's onset fingerprint (made with every loop, kept in the catalog
  and its sidecar);
* :mod:`farm.match.fit`: harmony, rhythm and spectrum scores of two loops;
* :mod:`farm.match.search`: ``match``, the catalogued loops that fit one, each with why;
* :mod:`farm.match.kit` / :mod:`farm.match.kit_files`: ``build_kit``, one loop per role with the
  same chords, made into a folder of stems, a mix, MIDI, labels and a picture, and a catalog row.
"""
from __future__ import annotations

from pathlib import Path

from farm.fingerprint import BANDS_HZ, STEPS_PER_BEAT, Fingerprint, fingerprint  # noqa: F401
from farm.match.kit import KIT_ROLES, PARTS, KitUnmet, build_kit, plan_kit  # noqa: F401
from farm.match.search import Match, find_matches, match  # noqa: F401


def list_kits(catalog_root: str | Path, *, status: str | None = None, loop_id: str | None = None,
              kit_id: str | None = None) -> list[dict]:
    """``farm kits``: every catalogued kit (newest first), with its members; only those with
    ``status``, holding the loop ``loop_id``, or the kit ``kit_id`` when given."""
    from farm.catalog import Catalog
    from farm.match.kit_files import kit_record

    with Catalog(catalog_root, readonly=True, verify=False) as cat:
        if not cat.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'kits'").fetchone():
            return []  # a catalog from before kits
        where, params = [], []
        for sql, value in (("status = ?", status), ("id = ?", kit_id),
                           ("id IN (SELECT kit_id FROM kit_members WHERE loop_id = ?)", loop_id)):
            if value is not None:
                where.append(sql)
                params.append(value)
        sql = "SELECT id FROM kits" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY created_at DESC, id"
        return [kit_record(cat, r[0]) for r in cat.db.execute(sql, params)]
