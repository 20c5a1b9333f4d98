"""Rendering: a template part through a synth patch becomes an exact, seamless, float32 loop.

Backends (``embedded``, ``reaper``) only turn MIDI into raw audio: float32, shape
``(2, n)`` with ``n >= loop_samples``, the loop starting at sample 0 and the release/effect
tail after it. Everything after that is shared here, so every backend's audio goes through the
same tail folding and loudness normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from farm.model import Template

SAMPLE_RATES = (44100, 48000)
TRUE_PEAK_CEILING_DBTP = -1.0
# What finish_loop does, as part of every backend's version (and so of every loop id): change it
# whenever finishing changes a loop's bytes.
FINISHING = "finishing 2 (fold, DC blocker 5 Hz, loudness, true peak)"


@dataclass(frozen=True)
class RenderJob:
    """One loop to render: ``part`` of the template in ``template_dir`` through ``patch``."""

    template: Template
    template_dir: Path
    part: str
    patch: "Patch"  # farm.patches.Patch
    sample_rate: int = 44100

    @property
    def midi_path(self) -> Path:
        return Path(self.template_dir) / self.template.part(self.part).midi

    @property
    def loop_samples(self) -> int:
        return self.template.loop_samples(self.sample_rate)


@dataclass
class RenderedLoop:
    """A finished loop: float32 ``(2, loop_samples)`` at ``sample_rate`` Hz, loudness-normalised."""

    job: RenderJob
    audio: np.ndarray
    sample_rate: int
    lufs: float  # integrated loudness after normalisation (LUFS)
    true_peak_db: float  # dBTP after normalisation
    renderer: str
    renderer_version: str


class Backend(Protocol):
    name: str
    version: str

    def render_raw(self, jobs: Sequence[RenderJob]) -> list[np.ndarray]:
        """Raw float32 ``(2, n >= job.loop_samples)`` per job, tail included."""

    def close(self) -> None: ...


BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str):
    """Class decorator: make a backend constructible by ``get_backend(name)``."""

    def decorate(factory):
        BACKENDS[name] = factory
        return factory

    return decorate


BUILTIN_BACKENDS = ("embedded", "reaper")


def get_backend(name: str = "embedded", **options) -> Backend:
    """A ready backend by name; imports the built-in ones on first use."""
    import importlib

    from farm.errors import FarmError

    if name not in BACKENDS and name in BUILTIN_BACKENDS:
        importlib.import_module(f"farm.render.{name}")
    if name not in BACKENDS:
        known = sorted(set(BACKENDS) | set(BUILTIN_BACKENDS))
        raise FarmError(f"unknown renderer backend {name!r}; known: {', '.join(known)}", field="backend")
    return BACKENDS[name](**options)


def finish_loop(job: RenderJob, raw: np.ndarray, renderer: str, renderer_version: str) -> RenderedLoop:
    """Fold the tail into the loop start, block DC, normalise loudness under a true-peak ceiling:
    the path every backend shares."""
    from farm.audio import fold_tail, normalise_loudness, remove_dc

    _require_finite(job, raw, renderer)
    looped = remove_dc(fold_tail(raw, job.loop_samples), job.sample_rate)
    audio, lufs, tp = normalise_loudness(looped, job.sample_rate, job.patch.target_lufs,
                                         ceiling_dbtp=TRUE_PEAK_CEILING_DBTP)
    audio, lufs, tp = _recentre(audio, lufs, tp)
    return RenderedLoop(job, audio, job.sample_rate, lufs, tp, renderer, renderer_version)


def _recentre(audio: np.ndarray, lufs: float, tp: float) -> tuple[np.ndarray, float, float]:
    """Take out the DC the limiter leaves when it presses one polarity's peaks harder than the
    other's (amsynth's square bass kept 0.007): subtract each channel's mean, and if a peak then
    pokes over the ceiling, lower the whole loop by that much (loudness moves by the same gain;
    its K-weighting never saw the DC)."""
    from farm.audio import true_peak_dbtp

    mean = audio.mean(axis=1, keepdims=True, dtype=np.float64)
    if not np.isfinite(lufs) or np.abs(mean).max() < 1e-4:
        return audio, lufs, tp
    audio = (audio - mean).astype(np.float32)
    tp = true_peak_dbtp(audio)
    if tp > TRUE_PEAK_CEILING_DBTP - 0.01:
        gain_db = TRUE_PEAK_CEILING_DBTP - 0.02 - tp
        audio = (audio * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
        lufs, tp = lufs + gain_db, tp + gain_db
    return audio, lufs, tp


def _require_finite(job: RenderJob, audio: np.ndarray, renderer: str) -> None:
    """Refuse NaN or infinite samples: no loop file may carry them, whatever the backend."""
    if not np.isfinite(audio).all():
        from farm.errors import FarmError

        raise FarmError(f"the {renderer} renderer made audio that is not finite (NaN or infinity) for "
                        f"part {job.part!r}; check the patch's gain and effect parameters",
                        file=getattr(job.patch, "path", None))


def render_loops(jobs: Sequence[RenderJob], backend: Backend) -> list[RenderedLoop]:
    """Render ``jobs`` with ``backend`` into finished loops, in order."""
    raws = backend.render_raw(jobs)
    return [finish_loop(job, raw, backend.name, backend.version) for job, raw in zip(jobs, raws)]
