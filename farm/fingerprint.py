"""A loop's rhythm and spectrum in a few hundred numbers: an onset fingerprint.

The loop is cut into a grid of ``STEPS_PER_BEAT`` (12) steps per beat, exact to the sample (so
straight sixteenths and triplets both land on steps). In each step the energy of three bands is
measured (low: kick and bass, mid: snare, chords and voices, high: hats and air); the
fingerprint's onsets are the spectral flux of each band from one step to the next, counted round
the loop (the last step leads into the first), each band scaled so its strongest onset is 1; its
energy is each band's share of the loop's energy. Two loops on the same grid compare step by step,
whatever their tempo or sample rate: a bass that hits with the kick has low-band onsets where
the drums have theirs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STEPS_PER_BEAT = 12
BANDS_HZ = ((20.0, 150.0), (150.0, 2000.0), (2000.0, 16000.0))  # low, mid, high
_FLOOR = 1e-10  # energy below this (about -100 dB) counts as silence
RANGE_DB = 30.0  # how far under a band's loudest step a rise still counts


@dataclass(frozen=True)
class Fingerprint:
    """``onsets``: float32 ``(3, steps)``, spectral flux per band per grid step, 0-1 per band;
    ``energy``: float32 ``(3,)``, each band's share of the loop's energy (sums to 1, or zeros)."""

    onsets: np.ndarray
    energy: np.ndarray
    steps_per_beat: int = STEPS_PER_BEAT

    @property
    def steps(self) -> int:
        return int(self.onsets.shape[1])

    def to_dict(self) -> dict:
        """JSON-able, rounded to 4 decimals (what a sidecar and the catalog keep)."""
        return {"steps_per_beat": self.steps_per_beat, "bands_hz": [list(b) for b in BANDS_HZ],
                "onsets": [[round(float(v), 4) for v in band] for band in self.onsets],
                "energy": [round(float(v), 4) for v in self.energy]}

    @classmethod
    def from_dict(cls, data: dict) -> "Fingerprint":
        return cls(np.asarray(data["onsets"], dtype=np.float32), np.asarray(data["energy"], dtype=np.float32),
                   int(data["steps_per_beat"]))


def fingerprint(audio: np.ndarray, sample_rate: int, bpm: float, beats: float) -> Fingerprint:
    """The onset fingerprint of a loop ``(channels, samples)`` that lasts ``beats`` quarter notes
    at ``bpm`` (its samples are exactly ``beats * 60 / bpm * sample_rate``, as every loop's are)."""
    import scipy.fft  # here: `farm match` reads fingerprints and must start fast

    x = np.asarray(audio, dtype=np.float64)
    mono = x.mean(axis=0) if x.ndim == 2 else x
    n = mono.shape[0]
    steps = int(round(beats * STEPS_PER_BEAT))
    if steps < 2 or n < steps:
        raise ValueError(f"a loop of {beats:g} beats and {n} samples is too short for a fingerprint")
    # step k covers samples [edges[k], edges[k+1]): exact bar and beat positions, rounded once
    edges = np.rint(np.arange(steps + 1) * (n / steps)).astype(np.int64)
    width = int(edges[1:].__sub__(edges[:-1]).max())
    size = 1 << max(8, math.ceil(math.log2(width)))
    window = np.hanning(width + 2)[1:-1]
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    # every step windowed into one row (zero-padded to ``size``), all rows transformed at once
    frames = np.zeros((steps, size))
    for k in range(steps):
        seg = mono[edges[k]:edges[k + 1]]
        frames[k, :seg.shape[0]] = seg * window[:seg.shape[0]]
    spectrum = np.abs(scipy.fft.rfft(frames, axis=1, workers=1)) ** 2
    energy = np.stack([spectrum[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in BANDS_HZ])
    # levels in dB, floored 30 dB under each band's loudest step: a rise in a band that is nearly
    # silent there (a hat's faint low end between kicks) is not an onset of that band
    floor = np.maximum(energy.max(axis=1, keepdims=True) * 10 ** (-RANGE_DB / 10), _FLOOR)
    level = np.log10(np.maximum(energy, floor))
    flux = np.maximum(level - np.roll(level, 1, axis=1), 0.0)  # rises only; step 0 follows the last
    flux[energy.max(axis=1) < _FLOOR * 10] = 0.0  # a silent band has no onsets
    peaks = flux.max(axis=1, keepdims=True)
    onsets = np.divide(flux, peaks, out=np.zeros_like(flux), where=peaks > 0)
    total = energy.sum()
    shares = energy.sum(axis=1) / total if total > 0 else np.zeros(len(BANDS_HZ))
    return Fingerprint(onsets.astype(np.float32), shares.astype(np.float32))


def loop_fingerprint(audio: np.ndarray, sample_rate: int, bpm: float, meter: str, bars: int) -> dict:
    """A catalogued loop's fingerprint as its sidecar and row keep it (``Fingerprint.to_dict``)."""
    from farm.model import Meter

    beats = float(bars * Meter.parse(meter).quarters_per_bar)
    return fingerprint(audio, sample_rate, bpm, beats).to_dict()


PACK_VERSION = 1


def pack(data: dict) -> bytes:
    """A fingerprint (``Fingerprint.to_dict``) as the catalog's match index keeps it
    (``loops.fp_packed``): a version byte, the steps per beat, the three band energy shares as
    little-endian float32, then the onsets band by band as bytes (255 = 1)."""
    energy = np.asarray(data["energy"], dtype="<f4")
    onsets = np.rint(np.clip(np.asarray(data["onsets"], dtype=np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    return bytes([PACK_VERSION, int(data["steps_per_beat"])]) + energy.tobytes() + onsets.tobytes()


def unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(onsets float32 (3, steps), energy float32 (3,))`` of a packed fingerprint."""
    if not blob or blob[0] != PACK_VERSION:
        raise ValueError("not a packed fingerprint of this version")
    energy = np.frombuffer(blob, dtype="<f4", count=3, offset=2)
    onsets = np.frombuffer(blob, dtype=np.uint8, offset=14).reshape(len(BANDS_HZ), -1)
    return onsets.astype(np.float32) / 255.0, energy.astype(np.float32)


def pack_json(text: str | None) -> bytes | None:
    """``pack`` of a fingerprint kept as JSON text (a catalog row's), None for none."""
    import json

    return pack(json.loads(text)) if text else None
