"""Machine checks and audio features of a finished loop: plain functions over numpy arrays.

Audio is float32 ``(channels, samples)``. Levels are in dB relative to full scale (1.0);
times in seconds; frequencies in Hz. A loop that fails a check is kept and catalogued as
``rejected`` with the reason, so a person can still hear what went wrong.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Spectral analysis frame: 2048 samples (46 ms at 44.1 kHz), hop 512 (11.6 ms).
N_FFT = 2048
HOP = 512
MEL_BANDS = 64
# Spectral flux (mean rise of the mel-band levels, dB) of a clearly audible attack is 10-40 dB;
# a steady tone or a slow pad swell stays under 2 dB.
FLUX_FLOOR_DB = 10.0


@dataclass(frozen=True)
class QALimits:
    """When a loop is rejected by the machine (all overridable from the batch TOML ``[qa]``)."""

    silence_db: float = -60.0  # RMS below this (dBFS) is silence
    clip_level: float = 0.999  # |sample| at or above this is at full scale
    clip_samples: int = 3  # this many full-scale samples is clipping
    loudness_tolerance_lu: float = 3.0  # |LUFS - patch target| above this is "far from target"
    dc_offset: float = 0.005  # |mean| of a channel above this (full scale 1.0) is a DC offset


# What each limit may be: (low, high), inclusive. A NaN, an infinity or a value outside is refused.
QA_RANGES = {"silence_db": (-200.0, 0.0), "clip_level": (0.01, 1.0), "clip_samples": (1, 1_000_000),
             "loudness_tolerance_lu": (0.0, 60.0), "dc_offset": (0.0, 1.0)}


@dataclass(frozen=True)
class LoopFeatures:
    """What the catalog stores about a loop's sound."""

    channels: int
    samples: int  # frames per channel
    duration_s: float
    rms_db: float  # dBFS over all channels; -inf for digital silence
    peak_db: float  # sample peak, dBFS
    onsets: int  # spectral-flux onsets in the loop
    centroid_hz: float  # energy-weighted mean spectral centroid


def rms_db(audio: np.ndarray) -> float:
    """RMS level over every channel, dBFS (``-inf`` for digital silence)."""
    x = np.asarray(audio, dtype=np.float64)
    rms = math.sqrt(float(np.mean(x * x))) if x.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


def peak_db(audio: np.ndarray) -> float:
    """Sample peak over every channel, dBFS."""
    peak = float(np.max(np.abs(audio))) if np.size(audio) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def _mono(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    return a if a.ndim == 1 else a.mean(axis=0)


def magnitude_spectrogram(audio: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """|STFT| of the mono mix, shape ``(n_fft // 2 + 1, frames)``, Hann window.

    Frame ``t`` is centred on sample ``t * hop``. The loop is treated as circular (it repeats),
    so the frames at its ends wrap around: an attack on the downbeat is seen at frame 0.
    """
    mono = _mono(audio)
    n = mono.shape[0]
    if n == 0:
        return np.zeros((n_fft // 2 + 1, 0), dtype=np.float32)
    frames = max(1, math.ceil(n / hop))
    half = n_fft // 2
    ring = np.resize(mono, max(n, n_fft))  # a loop shorter than a frame repeats to fill it
    padded = np.concatenate([ring[-half:], mono, ring[:n_fft]])
    frames_view = sliding_window_view(padded, n_fft)[::hop][:frames]  # no copy until the window
    window = np.hanning(n_fft).astype(np.float32)
    # scipy's FFT: it transforms many frames at once, 3-4x faster than numpy's here (same to float32 rounding).
    # Imported here: a night's writer reads this module's limits and should not wait for scipy.
    import scipy.fft

    return np.abs(scipy.fft.rfft(frames_view * window, axis=1, workers=1)).T  # float32: the frames are float32


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int = N_FFT, bands: int = MEL_BANDS, fmin: float = 30.0) -> np.ndarray:
    """Triangular mel-spaced filters (``bands``, ``n_fft // 2 + 1``) from ``fmin`` to Nyquist."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(sample_rate / 2.0), bands + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def onset_strength(audio: np.ndarray, sample_rate: int, n_fft: int = N_FFT, hop: int = HOP,
                   spectrogram: np.ndarray | None = None) -> np.ndarray:
    """Spectral flux per frame, in dB: the mean rise of mel-band level since the previous frame.

    Band levels are floored 80 dB below the loop's loudest band, so noise in silent bands does
    not count. Circular: frame 0 follows the last frame.
    """
    mag = spectrogram if spectrogram is not None else magnitude_spectrogram(audio, n_fft, hop)
    power = np.square(mag.astype(np.float64, copy=False))
    if power.shape[1] < 2:
        return np.zeros(power.shape[1])
    bands = mel_filterbank(sample_rate, n_fft) @ power
    level = 10.0 * np.log10(np.maximum(bands, 1e-20))
    level = np.maximum(level, level.max() - 80.0)
    return np.maximum(0.0, level - np.roll(level, 1, axis=1)).mean(axis=0)


def onset_times(audio: np.ndarray, sample_rate: int, *, delta: float = 0.07, wait_s: float = 0.03,
                n_fft: int = N_FFT, hop: int = HOP, spectrogram: np.ndarray | None = None) -> np.ndarray:
    """Onset times in seconds by spectral-flux peak picking.

    A frame is an onset when its flux is the local maximum within ±30 ms, exceeds the mean of
    the surrounding ±100 ms by ``delta`` (flux normalised to 0-1), and comes at least ``wait_s``
    after the previous onset. Times are frame centres; an attack is seen a hop or two (12-25 ms
    at 44.1 kHz) before it lands, as the window's leading edge reaches it.
    """
    flux = onset_strength(audio, sample_rate, n_fft, hop, spectrogram)
    if flux.size == 0:
        return np.zeros(0)
    # Normalise by the loudest onset, but never by less than FLUX_FLOOR_DB: the small
    # frame-to-frame wobble of a steady tone or a pad must not be blown up into onsets.
    flux = flux / max(float(flux.max()), FLUX_FLOOR_DB)
    frame_s = hop / sample_rate
    pre_max = max(1, int(round(0.03 / frame_s)))
    avg = max(1, int(round(0.1 / frame_s)))
    from scipy.ndimage import maximum_filter1d, uniform_filter1d

    local_max = maximum_filter1d(flux, size=2 * pre_max + 1, mode="wrap")
    local_mean = uniform_filter1d(flux, size=2 * avg + 1, mode="wrap")
    candidates = np.flatnonzero((flux >= local_max) & (flux >= local_mean + delta))
    wait = max(1, int(round(wait_s / frame_s)))
    picked: list[int] = []
    for frame in candidates:
        if not picked or frame - picked[-1] >= wait:
            picked.append(int(frame))
    return np.asarray(picked, dtype=np.float64) * frame_s


def spectral_centroid_hz(audio: np.ndarray, sample_rate: int, n_fft: int = N_FFT, hop: int = HOP,
                         spectrogram: np.ndarray | None = None) -> float:
    """Mean spectral centroid in Hz, each frame weighted by its magnitude (silence counts for nothing)."""
    spec = spectrogram if spectrogram is not None else magnitude_spectrogram(audio, n_fft, hop)
    spec = spec.astype(np.float64, copy=False)
    total = float(spec.sum())
    if total <= 0.0:
        return 0.0
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    return float((freqs[:, None] * spec).sum() / total)


def loop_features(audio: np.ndarray, sample_rate: int) -> LoopFeatures:
    """Level, onset count and brightness of a loop ``(channels, samples)`` at ``sample_rate`` Hz."""
    a = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    finite = a if np.isfinite(a).all() else np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    spec = magnitude_spectrogram(finite).astype(np.float64)  # onsets and centroid both read it in float64
    return LoopFeatures(
        channels=int(a.shape[0]),
        samples=int(a.shape[1]),
        duration_s=a.shape[1] / sample_rate,
        rms_db=rms_db(finite),
        peak_db=peak_db(finite),
        onsets=int(onset_times(finite, sample_rate, spectrogram=spec).size),
        centroid_hz=spectral_centroid_hz(finite, sample_rate, spectrogram=spec),
    )


def machine_check(audio: np.ndarray, sample_rate: int, *, expected_samples: int,
                  target_lufs: float | None = None, lufs: float | None = None,
                  expected_channels: int = 2, limits: QALimits = QALimits()) -> str | None:
    """The reason to reject a loop, or None when it passes.

    Checks, in order: NaN/inf samples, shape (channels and exact length in samples), silence,
    clipping, DC offset, and integrated loudness (``lufs``, measured when not given) against the patch's
    ``target_lufs``.
    """
    a = np.asarray(audio)
    if not np.all(np.isfinite(a)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        return f"NaN: {bad} samples are NaN or infinite"
    if a.ndim != 2 or a.shape[0] != expected_channels:
        return f"wrong length: shape {a.shape}, expected ({expected_channels}, {expected_samples})"
    if a.shape[1] != expected_samples:
        return f"wrong length: {a.shape[1]} samples, expected {expected_samples}"
    level = rms_db(a)
    if level < limits.silence_db:
        return f"silence: RMS {level:.1f} dBFS is below {limits.silence_db:g} dBFS"
    clipped = int(np.count_nonzero(np.abs(a) >= limits.clip_level))
    if clipped >= limits.clip_samples:
        return f"clipping: {clipped} samples at full scale"
    means = np.abs(a.astype(np.float64).mean(axis=1))
    if means.max() > limits.dc_offset:
        channel = "LR"[int(means.argmax())] if a.shape[0] == 2 else str(int(means.argmax()))
        return f"DC offset: {means.max():.4f} on channel {channel} is above {limits.dc_offset:g}"
    if target_lufs is not None:
        if lufs is None:
            from farm.audio import integrated_lufs

            lufs = integrated_lufs(a, sample_rate)
        if not math.isfinite(lufs) or abs(lufs - target_lufs) > limits.loudness_tolerance_lu:
            return (f"loudness: {lufs:.1f} LUFS is more than {limits.loudness_tolerance_lu:g} LU "
                    f"from the target {target_lufs:g} LUFS")
    return None
