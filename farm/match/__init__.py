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


def list_kits(catalog_root: str | Path, *, status: str | None = None) -> list[dict]:
    """``farm kits``: every catalogued kit (newest first), with its members."""
    from farm.catalog import Catalog
    from farm.match.kit_files import kit_record

    with Catalog(catalog_root, readonly=True) as cat:
        if not cat.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'kits'").fetchone():
            return []  # a catalog from before kits
        sql = "SELECT id FROM kits" + (" WHERE status = ?" if status else "") + " ORDER BY created_at DESC, id"
        return [kit_record(cat, r[0]) for r in cat.db.execute(sql, [status] if status else [])]
