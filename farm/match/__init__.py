"""Loops that fit together: onset fingerprints (``fingerprint``), and in time matching and kits."""
from farm.match.fingerprint import BANDS_HZ, STEPS_PER_BEAT, Fingerprint, fingerprint  # noqa: F401
