"""Audio helpers shared by every stage: plain functions over float32 arrays.

Audio is ``np.ndarray`` of float32 shaped ``(channels, samples)`` (as pedalboard and librosa use
it); sample rates are in Hz; levels in LUFS (integrated loudness, ITU-R BS.1770) and dBTP
(true peak, 8x oversampled). A loop is treated as circular wherever that matters (true peak,
limiting), because it will be played over and over.
"""
from __future__ import annotations


from functools import lru_cache
from pathlib import Path

import math

import numpy as np

from farm.errors import FarmError
from farm.files import atomic_path

FORMATS = {
    # name: (libsndfile format, subtype, file suffix)
    "flac24": ("FLAC", "PCM_24", ".flac"),
    "wav24": ("WAV", "PCM_24", ".wav"),
    "wav32f": ("WAV", "FLOAT", ".wav"),
}
OVERSAMPLING = 8  # true peak: BS.1770-4 Annex 2 asks for 4x at least; 8x also reads bright drums and noise right
_SILENCE_LUFS = -70.0  # BS.1770 absolute gate


# -- loops ------------------------------------------------------------------------------------
def fold_tail(raw: np.ndarray, loop_samples: int, fade_samples: int = 1024) -> np.ndarray:
    """Sum everything past ``loop_samples`` back into the loop start, wrapping as often as needed.

    ``raw`` is the loop rendered from sample 0 with its release/effect tail after it. Summing the
    tail into the start gives exactly what a listener hears once the loop has repeated a few
    times, so the loop joins itself without a click. The last ``fade_samples`` of the tail are
    faded out (raised cosine) so a tail cut short leaves no step inside the loop. Mono becomes
    stereo. Returns float32 ``(2, loop_samples)``.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim == 1:
        raw = raw[None, :]
    if raw.shape[0] == 1:
        raw = np.repeat(raw, 2, axis=0)
    if raw.shape[0] != 2:
        raise ValueError(f"expected mono or stereo audio, got {raw.shape[0]} channels")
    if loop_samples <= 0:
        raise ValueError("loop_samples must be positive")
    n = raw.shape[1]
    out = np.zeros((2, loop_samples), dtype=np.float32)
    if n <= loop_samples:
        out[:, :n] = raw
        return out
    out[:] = raw[:, :loop_samples]
    tail = raw[:, loop_samples:].copy()  # only the tail is faded, so only the tail is copied
    fade = min(fade_samples, tail.shape[1])
    if fade > 0:
        ramp = (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade, dtype=np.float64))).astype(np.float32)
        tail[:, tail.shape[1] - fade:] *= ramp
    for start in range(0, tail.shape[1], loop_samples):
        chunk = tail[:, start:start + loop_samples]
        out[:, :chunk.shape[1]] += chunk
    return out


DC_CUTOFF_HZ = 5.0  # below every bass note (E0 is 20.6 Hz); removes offsets and slow drift


def remove_dc(loop: np.ndarray, sample_rate: int, cutoff_hz: float = DC_CUTOFF_HZ) -> np.ndarray:
    """A one-pole DC blocker (``y[n] = x[n] - x[n-1] + R y[n-1]``) run around the loop.

    The filter starts in the state it would have after the loop had played forever (its
    periodic steady state), so the result joins itself exactly like its input, and its mean over
    the loop is zero: a periodic signal's DC is its mean, and the filter passes none of it.
    ``loop`` is ``(channels, samples)``; returns float32 of the same shape.
    """
    from scipy.signal import lfilter

    x = np.asarray(loop, dtype=np.float64)
    r = math.exp(-2.0 * math.pi * cutoff_hz / sample_rate)
    b, a = [1.0, -1.0], [1.0, -r]
    # The filter's one state variable moves by r per sample: from zero it ends at ``zf``, so the
    # state that repeats itself after one pass is zf / (1 - r**n).
    _, zf = lfilter(b, a, x, axis=-1, zi=np.zeros((x.shape[0], 1)))
    zi = zf / (1.0 - r ** x.shape[-1])
    y, _ = lfilter(b, a, x, axis=-1, zi=zi)
    return y.astype(np.float32)


def dc_offset(audio: np.ndarray) -> float:
    """The largest absolute mean of any channel (full scale = 1.0)."""
    a = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    return float(np.abs(a.mean(axis=-1)).max()) if a.size else 0.0


# -- levels -----------------------------------------------------------------------------------
_BLOCK_S, _BLOCK_STEP = 0.4, 0.25  # BS.1770-4 gating blocks: 400 ms, 75 % overlap
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs


@lru_cache(maxsize=8)
def _k_weighting(sample_rate: int) -> np.ndarray:
    """The BS.1770 K-weighting filter at ``sample_rate`` as second-order sections: the high shelf
    (+4 dB above ~1.5 kHz, the head) then the high pass (~38 Hz), with pyloudnorm's coefficients."""
    from pyloudnorm import IIRfilter

    stages = (IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf"),
              IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass"))
    return np.array([np.concatenate([s.passband_gain * np.asarray(s.b) / s.a[0], np.asarray(s.a) / s.a[0]])
                     for s in stages])


def _k_weighted_power(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The square of ``audio`` (``(channels, samples)``) through the K-weighting filter, float64.

    An offset of 1e-20 (-400 dB) goes in with the audio: through silence the filter state would
    decay into subnormal floats, which the CPU handles many times slower (a drum loop with gaps
    took 8x longer than noise); the high pass removes it, and gated blocks are above -70 LUFS.
    A stereo pair goes through as one complex signal (left + i right): the coefficients are real,
    so each part sees exactly the arithmetic of its own real filter (the same bits), and the two
    channels' recursions run side by side instead of one after the other.
    """
    from scipy.signal import sosfilt

    sos = _k_weighting(sample_rate)
    if audio.shape[0] != 2:
        weighted = sosfilt(sos, np.add(audio, 1e-20, dtype=np.float64), axis=1)
        return np.square(weighted, out=weighted)
    pair = np.empty(audio.shape[1], dtype=np.complex128)
    np.add(audio[0], 1e-20, out=pair.real, dtype=np.float64)
    np.add(audio[1], 1e-20, out=pair.imag, dtype=np.float64)
    pair = sosfilt(sos, pair)
    power = np.empty(audio.shape, dtype=np.float64)
    np.square(pair.real, out=power[0])
    np.square(pair.imag, out=power[1])
    return power


def integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4); ``-inf`` for silence.

    pyloudnorm's algorithm, vectorised: K-weighting (one ``sosfilt`` over all channels), the mean
    square of every 400 ms block with 75 % overlap from one pass of sums between block edges,
    then the absolute (-70 LUFS) and relative (-10 LU) gates. Filter coefficients and block edges
    are pyloudnorm's, so the two agree to float rounding (about 1e-13 LU), in under half the time.
    Audio shorter than one 400 ms gating block is measured as a loop repeated to 1 s.
    """
    audio = _as_2d(audio)
    n = audio.shape[1]
    if n == 0:
        return float("-inf")
    if n < int(_BLOCK_S * sample_rate) + 1:
        audio = np.tile(audio, (1, int(np.ceil(sample_rate / n))))
        n = audio.shape[1]
    power = _k_weighted_power(audio, sample_rate)
    blocks = int(np.round((n / sample_rate - _BLOCK_S) / (_BLOCK_S * _BLOCK_STEP))) + 1
    j = np.arange(blocks)
    lo = (_BLOCK_S * (j * _BLOCK_STEP) * sample_rate).astype(np.int64)  # pyloudnorm's int() truncation
    hi = np.minimum((_BLOCK_S * (j * _BLOCK_STEP + 1) * sample_rate).astype(np.int64), n)
    # energy up to every block edge: one pass summing the squares between edges, then a short cumsum
    edges = np.unique(np.concatenate([[0], lo, hi]))
    starts = edges[edges < n]
    energy = np.zeros((power.shape[0], starts.size + 1))
    np.cumsum(np.add.reduceat(power, starts, axis=1), axis=1, out=energy[:, 1:])
    at = np.searchsorted(edges, np.stack([lo, hi]))  # edge n, if present, is the last: the total
    z = (energy[:, at[1]] - energy[:, at[0]]) / (_BLOCK_S * sample_rate)  # (channels, blocks) mean squares
    weights = np.array(_CHANNEL_WEIGHTS[:z.shape[0]])[:, None]
    block_lufs = -0.691 + 10.0 * _log10((weights * z).sum(axis=0))
    above = block_lufs >= _SILENCE_LUFS
    if not above.any():
        return float("-inf")
    relative = -0.691 + 10.0 * _log10((weights[:, 0] * z[:, above].mean(axis=1)).sum()) - 10.0
    gated = (block_lufs > relative) & (block_lufs > _SILENCE_LUFS)
    if not gated.any():
        return float("-inf")
    return float(-0.691 + 10.0 * _log10((weights[:, 0] * z[:, gated].mean(axis=1)).sum()))


def _log10(x):
    """log10 of a number or an array (``-inf`` for 0) by the C library's ``log10``. numpy's own
    picks its routines for the CPU: with AVX-512 they differ from its others in the last bit, and
    a loop's loudness and true-peak figures must be the same on every render node."""
    if np.ndim(x) == 0:
        return math.log10(x) if x > 0 else float("-inf")
    return np.array([math.log10(v) if v > 0 else float("-inf") for v in np.asarray(x).tolist()])


def true_peak_dbtp(audio: np.ndarray, sample_rate: int | None = None) -> float:
    """True peak in dBTP: the largest magnitude of the 8x oversampled signal (BS.1770-4 Annex 2).

    The loop end is joined to its start, so a peak across the seam is found too. The result does
    not depend on ``sample_rate`` (oversampling is relative); it is accepted for symmetry.
    """
    peak = float(oversampled_peak(_as_2d(audio)).max(initial=0.0))
    return 20.0 * _log10(peak)


def _interpolation_phases() -> np.ndarray:
    """Polyphase taps of the true-peak interpolator, shape ``(OVERSAMPLING, _TAPS)``.

    Row ``q`` interpolates the point ``(q + 0.5) / OVERSAMPLING`` of the way from ``x[n]`` to
    ``x[n+1]`` from ``x[n-7 .. n+8]``: a 128-tap interpolation low-pass in the manner of BS.1770-4
    Annex 2 (Kaiser window, cut-off at the original Nyquist frequency: within 0.02 dB up to
    0.4 x the sample rate, images 50 dB down). A 4x meter read the noisy hats of the synthesised
    drum kits 0.2-0.3 dB low; at 8x the points fall close enough to the peaks between samples,
    and limiting still leaves headroom for content right at Nyquist.
    """
    from scipy.signal import firwin

    half = _TAPS // 2
    h = firwin(OVERSAMPLING * _TAPS, 1.0 / OVERSAMPLING, window=("kaiser", 5.0)) * OVERSAMPLING
    return np.array([[h[OVERSAMPLING * (half - k) + q] for k in range(1 - half, half + 1)]
                     for q in range(OVERSAMPLING)], dtype=np.float32)


_TAPS = 16
@lru_cache(maxsize=1)
def _filter() -> tuple[np.ndarray, np.ndarray]:
    """The interpolation phases and their tap bound (sum(bound * |x|) bounds every interpolated
    point); made on first use, so importing this module does not import scipy.signal."""
    phases = _interpolation_phases()
    return phases, np.abs(phases).max(axis=0)

_NEAR = np.arange(_TAPS // 2 - 2, _TAPS // 2 + 2)  # the taps on x[n-1 .. n+2], which carry most weight
_OFFSETS = np.arange(1 - _TAPS // 2, _TAPS // 2 + 1)  # tap k reads x[n + _OFFSETS[k]]


def _points_after(audio: np.ndarray, candidates: np.ndarray, taps: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Largest magnitude over channels and phases of the interpolated points between each of
    ``candidates`` and the sample after it, from only the ``taps`` given (all 16 by default)."""
    at = candidates[None, :] + _OFFSETS[taps, None]  # (taps, k); take() wraps round the loop
    phases = _filter()[0][:, taps]
    out = None
    for channel in audio:
        # einsum rather than BLAS: a small product that BLAS threads would only spin on
        y = np.abs(np.einsum("pt,tk->pk", phases, channel.take(at, mode="wrap")))  # (phases, k)
        out = y.max(axis=0) if out is None else np.maximum(out, y.max(axis=0), out=out)
    return out


def oversampled_peak(audio: np.ndarray, floor: float | None = None) -> np.ndarray:
    """Per-sample peak of the 8x oversampled loop, all channels linked: shape ``(samples,)``.

    Sample ``n`` gets the largest magnitude among itself and the interpolated points on either
    side of it. Bounds show where an interpolated point could exceed ``floor`` (default: the
    sample peak): a cheap one first (one filter of the magnitudes instead of one per phase), then
    where that leaves many, a tighter one (the four nearest taps computed exactly, the cheap bound
    for the other twelve). Only those points are computed, so the envelope is exact wherever it
    exceeds ``floor``; everywhere else the value returned is the sample magnitude, at most
    ``floor``. Circular: the end joins the start.
    """
    from scipy.ndimage import correlate1d

    audio = _as_2d(audio).astype(np.float32, copy=False)
    n = audio.shape[1]
    env = np.abs(audio).max(axis=0)
    if n == 0:
        return env
    if floor is None:
        floor = float(env.max())
    if floor <= 0.0:
        candidates = np.arange(n)
    else:
        # bound on the points between n and n+1, from the magnitudes of x[n-7 .. n+8]
        floor *= 1.0 - 1e-5  # float rounding: a bound is never trusted to the last bit
        bound = correlate1d(env, _filter()[1], mode="wrap", origin=-1)
        candidates = np.nonzero(bound > floor)[0]
        if candidates.size > n // 20:
            near_env = env.take(candidates[None, :] + _OFFSETS[_NEAR, None], mode="wrap")  # (4, k)
            far = bound[candidates] - np.einsum("t,tk->k", _filter()[1][_NEAR], near_env)
            candidates = candidates[_points_after(audio, candidates, _NEAR) + far > floor]
    if candidates.size == 0:
        return env
    if candidates.size > n // 4:  # dense: filter the whole loop, phase by phase (circularly)
        points = np.zeros(n, dtype=np.float32)
        for phase in _filter()[0]:
            y = correlate1d(audio, phase, axis=1, mode="wrap", origin=-1)
            np.maximum(points, np.abs(y).max(axis=0), out=points)
        env = np.maximum(env, points)
        return np.maximum(env, np.roll(points, 1))
    points = _points_after(audio, candidates)
    env[candidates] = np.maximum(env[candidates], points)
    after = (candidates + 1) % n
    env[after] = np.maximum(env[after], points)
    return env


def limit_circular(audio: np.ndarray, sample_rate: int, ceiling_dbtp: float = -1.0,
                   lookahead_s: float = 0.01, envelope: np.ndarray | None = None) -> np.ndarray:
    """A look-ahead, true-peak-aware, stereo-linked limiter over a loop treated as circular.

    The gain needed at each sample (ceiling / oversampled peak) is spread by a running minimum
    over +-``lookahead_s`` and smoothed by a moving average of the same width: the smoothed gain
    never exceeds the needed gain, so no peak passes, and it changes over ~2 x ``lookahead_s``
    seconds rather than sample by sample (no clicks, little distortion). Both filters wrap
    around the loop end, which is what processing ``[loop, loop]`` and keeping the second copy
    would give, so the seam stays clean. ``envelope`` is ``oversampled_peak(audio)`` when the
    caller already has it.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    audio = _as_2d(audio)
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    peak = oversampled_peak(audio, floor=ceiling) if envelope is None else envelope
    needed = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    if needed.min() >= 1.0:
        return audio.astype(np.float32, copy=True)
    width = 2 * max(1, int(round(lookahead_s * sample_rate))) + 1
    width = min(width, audio.shape[1] | 1)
    gain = minimum_filter1d(needed, size=width, mode="wrap")
    gain = uniform_filter1d(gain, size=width, mode="wrap")
    gain = np.minimum(gain, needed)  # guards float rounding in the moving average
    return (audio * gain[None, :]).astype(np.float32)


def normalise_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float,
                       ceiling_dbtp: float = -1.0, tolerance_lu: float = 0.2,
                       max_iterations: int = 16) -> tuple[np.ndarray, float, float]:
    """Bring a loop to ``target_lufs`` integrated loudness with its true peak under the ceiling.

    Gain first. Integrated loudness and true peak both move exactly with a gain, so when the
    gained loop stays under ``ceiling_dbtp`` that is the answer. Otherwise the circular limiter
    takes the peaks down and the gain is corrected for the loudness the limiter removed (the
    loudness of the limited loop rises with the gain, so the right gain is bracketed and closed
    in on), until loudness is within ``tolerance_lu`` and the true peak under the ceiling.
    Returns ``(audio float32, integrated LUFS, true peak dBTP)`` of the returned audio.
    Silence is returned unchanged with ``-inf`` figures.
    """
    audio = _as_2d(audio).astype(np.float32)
    lufs = integrated_lufs(audio, sample_rate)
    if not np.isfinite(lufs) or lufs < _SILENCE_LUFS:
        return audio, lufs, true_peak_dbtp(audio)
    gain_db = target_lufs - lufs
    sample_peak = float(np.abs(audio).max())
    # Interpolated points are computed only where they could cross the ceiling after the gain:
    # the envelope is exact above ``floor`` (and the sample magnitude, known to be below, elsewhere).
    floor = min(sample_peak, 10.0 ** ((ceiling_dbtp - 0.01 - gain_db) / 20.0))
    envelope = oversampled_peak(audio, floor=floor)
    peak = 20.0 * _log10(float(envelope.max()))
    if peak + gain_db <= ceiling_dbtp - 0.01:
        return _gain(audio, gain_db), lufs + gain_db, peak + gain_db

    # Loudness after limiting rises monotonically with the gain: bracket the target, then close in
    # by regula falsi (bisection when that stalls). The oversampled envelope scales with the gain,
    # so it is computed once; the true peak is measured again on the result.
    limit_at = ceiling_dbtp - 0.2  # headroom: meters with other interpolation filters read a little higher
    low = high = None  # (gain dB, loudness) below and above the target
    lookahead_s = 0.005
    out, tp = audio, peak
    for _ in range(max_iterations):
        g = np.float32(10.0 ** (gain_db / 20.0))
        # The limiter needs the envelope exact wherever the gained loop reaches its threshold; it
        # is exact above ``floor``, so recompute it (with 6 dB to spare) when the gain has grown.
        reach = 10.0 ** ((limit_at - gain_db) / 20.0)
        if reach < floor:
            floor = 0.5 * reach
            envelope = oversampled_peak(audio, floor=floor)
        out = limit_circular(audio * g, sample_rate, limit_at, lookahead_s, envelope * g)
        lufs = integrated_lufs(out, sample_rate)
        if abs(lufs - target_lufs) <= tolerance_lu:
            tp = true_peak_dbtp(out)
            if tp <= ceiling_dbtp - 0.05:
                break
            limit_at -= tp - ceiling_dbtp + 0.07  # a peak slipped between samples: limit harder
            continue
        if lufs >= target_lufs:
            high = (gain_db, lufs)
        elif high is not None:
            low = (gain_db, lufs)
        if high is None:
            if low is not None and lufs - low[1] < 0.25 * (gain_db - low[0]) and lookahead_s > 0.0015:
                # more gain no longer makes it louder: the limiter's slow envelope flattens every
                # transient to the same shape. A quicker one lets the body of each hit come up.
                lookahead_s /= 2
                low = None
                continue
            low = (gain_db, lufs)
            gain_db += 1.5 * (target_lufs - lufs) + 0.2  # still below: step out further
            continue
        if low is None:
            gain_db -= 1.5 * (lufs - target_lufs) + 0.2
            continue
        (g0, l0), (g1, l1) = low, high
        step = g0 + (target_lufs - l0) * (g1 - g0) / (l1 - l0) if l1 != l0 else (g0 + g1) / 2
        gain_db = step if g0 + 0.1 * (g1 - g0) < step < g1 - 0.1 * (g1 - g0) else (g0 + g1) / 2
    else:
        tp = true_peak_dbtp(out)
    return out.astype(np.float32, copy=False), lufs, tp


def _gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    return (audio * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


# -- files ------------------------------------------------------------------------------------
def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, fmt: str = "flac24",
                labels: dict | None = None) -> Path:
    """Write ``audio`` (float32 ``(channels, samples)``) atomically as FLAC 24-bit (default),
    WAV 24-bit or WAV 32-bit float, carrying ``labels`` (a sidecar's fields) where DAWs read
    them (``farm.tags``). Quantisation to integers happens only here."""
    from farm.tags import encode

    if fmt not in FORMATS:
        raise FarmError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", field="format")
    path = Path(path)
    # Encoded in memory, then written as bytes: a full disk is an OSError with its errno
    # (libsndfile writing the file itself only says "System error").
    data = encode(audio, sample_rate, fmt, labels)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def file_frames(audio: np.ndarray, fmt: str) -> np.ndarray:
    """``audio`` (``(channels, samples)``) as libsndfile takes it for ``fmt``: float32
    ``(samples, channels)``, contiguous, clipped to [-1, 1] unless the format stores floats."""
    data = _as_2d(audio).T
    if FORMATS[fmt][1] != "FLOAT":
        data = np.clip(data, -1.0, 1.0)  # libsndfile wraps integer overflow instead of clipping
    return np.ascontiguousarray(data, dtype=np.float32)


def pcm24_frames(audio: np.ndarray) -> np.ndarray:
    """``audio`` (``(channels, samples)``) as the 24-bit integers libsndfile would store, left
    aligned in int32 ``(samples, channels)`` (libsndfile's int input for a 24-bit file).

    libsndfile's float to 24-bit FLAC is ``x * 2^23``, rounded to nearest (ties to even) and
    clipped to the 24-bit range; done here with numpy it gives the same integers, and libFLAC gets
    them without libsndfile's per-sample float conversion (a 24-bit FLAC is written about 12 % faster).
    """
    scaled = np.multiply(_as_2d(audio).T, np.float32(1 << 23), dtype=np.float32)  # exact: a power of 2
    np.rint(scaled, out=scaled)
    np.clip(scaled, -(1 << 23), (1 << 23) - 1, out=scaled)
    frames = np.ascontiguousarray(scaled, dtype=np.int32)
    frames <<= 8
    return frames


def read_audio(path: str | Path, data: bytes | None = None) -> tuple[np.ndarray, int]:
    """``(float32 (channels, samples), sample_rate)``; a corrupt file is a FarmError naming it.

    ``data``: the file's bytes, when the caller has already read them (to check their hash):
    they are decoded from memory and ``path`` only names the file in errors.
    """
    import io

    import soundfile

    try:
        source = io.BytesIO(data) if data is not None else str(path)
        frames, sr = soundfile.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as err:
        raise FarmError(f"cannot read audio: {err}", file=path, field="audio") from None
    return np.ascontiguousarray(frames.T), int(sr)


# -- pitch ------------------------------------------------------------------------------------
def chroma(audio: np.ndarray, sample_rate: int, start: int = 0, stop: int | None = None,
           fmin: float = 25.0, fmax: float = 4000.0) -> np.ndarray:
    """Share of spectral energy per pitch class (C = 0) in samples ``[start, stop)``, shape (12,).

    One FFT of the mono mix under a Tukey window (flat, with 10% cosine tapers): every moment of
    the span counts equally, so notes on the downbeat weigh as much as notes mid-bar (a Hann window
    over a whole bar would all but ignore them). Each bin between ``fmin`` and ``fmax`` Hz goes to
    its nearest equal-tempered pitch class (A4 = 440 Hz). Sums to 1, or all zeros for silence.
    """
    from scipy.signal.windows import tukey

    audio = _as_2d(audio)
    segment = audio[:, start:stop].mean(axis=0, dtype=np.float64)
    n = segment.shape[0]
    out = np.zeros(12)
    if n < 16:
        return out
    spectrum = np.abs(np.fft.rfft(segment * tukey(n, 0.1))) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    keep = (freqs >= fmin) & (freqs <= fmax)
    pcs = (np.rint(12.0 * np.log2(freqs[keep] / 440.0)).astype(int) + 9) % 12
    np.add.at(out, pcs, spectrum[keep])
    total = out.sum()
    return out / total if total > 0 else out


def bar_chroma(audio: np.ndarray, sample_rate: int, template, **kwargs) -> np.ndarray:
    """``chroma`` of every bar of ``template`` (exact bar starts in samples), shape (bars, 12)."""
    return np.stack([
        chroma(audio, sample_rate, template.bar_start_sample(bar, sample_rate),
               template.bar_start_sample(bar + 1, sample_rate), **kwargs)
        for bar in range(1, template.bars + 1)])


def _as_2d(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    return audio[None, :] if audio.ndim == 1 else audio
