"""How well two loops fit: harmony bar by bar, rhythm from their onset fingerprints, spectrum from
their band energies. Plain functions over labels and numpy arrays; :mod:`farm.match.search` runs
them over a catalog.

* **harmony** (0-1, the mean over bars): a bar scores 1 when both loops hold the same chord (the
  same pitch classes), else ``0.5 + 0.5 * shared tones / all tones`` when every tone of both
  chords is in the first loop's key (they sit together in it), else ``0.5 * shared / all``.
  A drum loop has no chords: its harmony with anything is not scored (``None``).
* **rhythm** (0-1): a bass with drums *locks*: the cosine of their low-band onsets (the bass on
  the kick). Any other pair should *leave room*: one minus the cosine of their mid+high onset
  envelopes (an arp's busy steps against the hats', two chord parts' stabs).
* **spectrum** (0-1): one minus the overlap of the band energy shares (two basses fill the same
  band and mask each other; a bass and hats do not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

WEIGHTS = {"harmony": 0.5, "rhythm": 0.3, "spectrum": 0.2}
UNSCORED = 0.5  # what a score that cannot be measured (no fingerprint) counts for


@dataclass(frozen=True)
class Bar:
    """The chord of one bar, as 12-bit masks: bit ``pc`` set for each pitch class (C = 0)."""

    tones: int
    bass_pc: int


def mask(pitch_classes) -> int:
    out = 0
    for pc in pitch_classes:
        out |= 1 << (int(pc) % 12)
    return out


def transpose_mask(tones: int, semitones: int) -> int:
    """The chord ``tones`` moved by ``semitones`` (a rotation of the 12-bit mask)."""
    s = semitones % 12
    return ((tones << s) | (tones >> (12 - s))) & 0xFFF


def _bits(x: int) -> int:
    return bin(x).count("1")


@lru_cache(maxsize=65536)
def bar_fit(a: int, b: int, scale: int) -> float:
    """The fit of chords ``a`` and ``b`` (masks) in a key whose scale is the mask ``scale``."""
    if a == b:
        return 1.0
    shared = _bits(a & b) / max(1, _bits(a | b))
    return 0.5 + 0.5 * shared if (a | b) & ~scale == 0 else 0.5 * shared


def harmony(query: tuple[Bar, ...], other: tuple[Bar, ...], scale: int, semitones: int = 0) -> float:
    """Mean ``bar_fit`` of ``other`` moved by ``semitones`` against ``query``, bar by bar (equal bar counts)."""
    if len(query) != len(other) or not query:
        raise ValueError(f"{len(query)} bars against {len(other)}")
    return sum(bar_fit(q.tones, transpose_mask(o.tones, semitones), scale) for q, o in zip(query, other)) / len(query)


def same_chords(query: tuple[Bar, ...], other: tuple[Bar, ...], semitones: int = 0) -> bool:
    """Every bar holds the same chord with the same bass after moving ``other`` by ``semitones``."""
    return len(query) == len(other) and all(
        q.tones == transpose_mask(o.tones, semitones) and q.bass_pc == (o.bass_pc + semitones) % 12
        for q, o in zip(query, other))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else 0.0


def locks(part_a: str, part_b: str) -> bool:
    """A pair whose low-band onsets should coincide: bass with drums."""
    return {part_a, part_b} == {"bass", "drums"}


def rhythm(part_a: str, onsets_a: np.ndarray, part_b: str, onsets_b: np.ndarray) -> float:
    """Rhythmic complementarity of two fingerprints' onsets ``(3, steps)`` on the same grid."""
    if onsets_a.shape != onsets_b.shape:
        raise ValueError(f"fingerprints of {onsets_a.shape[1]} and {onsets_b.shape[1]} steps")
    if locks(part_a, part_b):
        return max(0.0, _cosine(onsets_a[0], onsets_b[0]))
    return 1.0 - max(0.0, _cosine(onsets_a[1] + onsets_a[2], onsets_b[1] + onsets_b[2]))


def spectrum(energy_a: np.ndarray, energy_b: np.ndarray) -> float:
    """One minus the overlap of two loops' band energy shares (each sums to 1)."""
    return float(1.0 - np.minimum(energy_a, energy_b).sum())


@dataclass
class Fit:
    """A candidate's scores against a query loop and what it takes to play them together:
    ``semitones`` to move it, ``bpm`` to play it at (its own when unchanged)."""

    harmony: float | None
    rhythm: float | None
    spectrum: float | None
    semitones: int = 0
    bpm: float | None = None
    why: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        parts = {"harmony": self.harmony, "rhythm": self.rhythm, "spectrum": self.spectrum}
        if self.harmony is None:  # drums: rhythm and spectrum decide
            parts.pop("harmony")
        total = sum(WEIGHTS[k] for k in parts)
        return sum(WEIGHTS[k] * (UNSCORED if v is None else v) for k, v in parts.items()) / total


def best_transposition(query: tuple[Bar, ...], other: tuple[Bar, ...], scale: int,
                       shifts: tuple[int, ...]) -> tuple[int, float]:
    """``(semitones, harmony)`` of the best of ``shifts`` (ties: the smallest move, then upward)."""
    best = None
    for s in sorted(shifts, key=lambda s: (abs(s), -s)):
        h = harmony(query, other, scale, s)
        if best is None or h > best[1] + 1e-12:
            best = (s, h)
    return best
