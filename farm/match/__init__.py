"""Loops that fit together. The onset fingerprints they are matched by are made with every loop
(``farm.fingerprint``, kept in the catalog and each sidecar)."""
from farm.fingerprint import BANDS_HZ, STEPS_PER_BEAT, Fingerprint, fingerprint  # noqa: F401
