"""The REAPER backend: loops rendered by REAPER from generated RPP projects.

``render_raw(jobs)`` writes one project per chunk of loops (``farm.rpp``: one region per loop,
each loop's MIDI item on its patch's track, whose FX chain is the patch's ``.RfxChain``), has
REAPER render every region to its own 24-bit WAV, checks every file and returns float32
``(2, loop + tail)`` per job. The shared ``finish_loop`` then folds the tail and sets loudness,
exactly as for the embedded backend.

Two ways to drive REAPER:

* ``via="process"`` (default): ``reaper -renderproject chunk.rpp -nosplash -ignoreerrors
  -newinst -cfgfile <instance>/reaper.ini``, under ``xvfb-run -a`` on Linux without a display.
  ``instances`` processes run in parallel, each with its own resource directory, each in its own
  process group so a run that exceeds ``timeout_s`` is killed whole (REAPER, Xvfb, plugin
  bridges). REAPER's exit code is not trusted: the files are.
* ``via="reapy"``: the same projects rendered one after another by an already running REAPER
  (``farm.reaper_live``), for nodes that keep REAPER open or plugins that misbehave under
  ``-renderproject``.

Every expected file must exist, have exactly ``loop_samples + tail_samples`` frames at the
batch's sample rate, and not be silent. Loops that fail are rendered again, alone in a smaller
project, up to ``retries`` more times; then the backend raises ``ReaperRenderError`` naming them.
"""
from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from farm.errors import FarmError
from farm.render import FINISHING, RenderJob, register_backend
from farm.render.jsfx import write_jsfx
from farm.rpp import DEFAULT_GAP_S, ProjectPlan, plan_project, plan_projects, write_project

from farm.render.reaper_process import (ENV_REAPER, default_resource_dir, find_reaper, prepare_instance, reaper_command,
                                         reaper_version, run_reaper)

SILENCE_PEAK = 10 ** (-100 / 20)  # below -100 dBFS a render counts as silent
# Default time one REAPER run may take: start-up (measured reports: 7-8 s) with ample margin,
# plus a generous allowance per loop (a render takes ~0.15 s per extra region in those reports).
TIMEOUT_BASE_S, TIMEOUT_PER_LOOP_S = 60.0, 5.0
VIA = ("process", "reapy")


# -- checking the files ---------------------------------------------------------------------------
def check_render(path: Path, expected_samples: int, sample_rate: int) -> tuple[np.ndarray | None, str | None]:
    """``(float32 (2, n) audio, None)`` when ``path`` is the render REAPER owes us, else ``(None, why)``."""
    import soundfile

    if not path.is_file():
        return None, "file missing"
    try:
        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as err:
        return None, f"unreadable WAV ({err})"
    if sr != sample_rate:
        return None, f"sample rate {sr} Hz, expected {sample_rate} Hz"
    if data.shape[0] != expected_samples:
        return None, f"{data.shape[0]} samples, expected exactly {expected_samples}"
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if peak < SILENCE_PEAK:
        return None, "silent (peak below -100 dBFS): does the FX chain hold an instrument?"
    audio = np.ascontiguousarray(data.T)
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    return np.ascontiguousarray(audio[:2], dtype=np.float32), None


class ReaperRenderError(FarmError):
    """Some loops could not be rendered; ``failures`` maps job index -> reason."""

    def __init__(self, message: str, failures: dict[int, str], **where):
        super().__init__(message, **where)
        self.failures = failures


class ProjectsWritten(Exception):
    """Raised by ``render_raw`` in ``rpp_only`` mode: the projects are written, nothing rendered."""

    def __init__(self, paths: list[Path]):
        super().__init__(f"{len(paths)} REAPER project(s) written")
        self.paths = paths


def write_projects(jobs: Sequence[RenderJob], directory: str | Path, *, loops_per_project: int = 64,
                   gap_s: float = DEFAULT_GAP_S) -> list[Path]:
    """Write the chunk projects for ``jobs`` into ``directory`` (``--rpp-only``); return their paths.
    The JSFX of their Faust patches go to ``directory/Effects/LoopFarmFaust/``, to be copied into
    the render node's Effects folder (or installed there by ``farm reaper setup``)."""
    plans = plan_projects(jobs, directory, loops_per_project=loops_per_project, gap_s=gap_s)
    written = [write_project(plan) for plan in plans]
    write_jsfx({j.patch.name: j.patch for j in jobs}.values(), Path(directory) / "Effects")
    return written


# -- the backend ----------------------------------------------------------------------------------
@register_backend("reaper")
class ReaperBackend:
    """REAPER renders RPP chunk projects; see the module docstring.

    Options: ``reaper`` (executable; else ``$FARM_REAPER``, config, ``PATH``), ``via``
    (``"process"`` or ``"reapy"``), ``instances`` (parallel REAPER processes), ``timeout_s``
    (seconds one project may take; default 60 s + 5 s per loop), ``retries`` (extra attempts for
    failed loops), ``loops_per_project``, ``rpp_only`` (a directory: write the projects there and
    stop), ``workdir`` (projects, renders and logs; a temporary directory by default), ``gap_s``
    (silence between regions, seconds), ``xvfb`` (None = when there is no display),
    ``resource_dir`` (REAPER settings to copy into each instance), ``keep_files`` (keep projects
    and renders that succeeded; failed ones are always kept), ``progress``, ``reapy_api`` (the
    ``reapy`` module or a stand-in with its interface).

    ``version`` is fixed when the backend is made (``whatsnew.txt`` beside the executable, or the
    running REAPER for ``via="reapy"``), so every process of a batch reports the same one.
    """

    name = "reaper"
    renders_in_chunks = True  # give it many loops per call: one project, one REAPER start-up

    def __init__(self, reaper: str | Path | None = None, via: str = "process", instances: int = 1,
                 timeout_s: float | None = None, retries: int = 2, loops_per_project: int = 64,
                 rpp_only: str | Path | None = None, workdir: str | Path | None = None,
                 gap_s: float = DEFAULT_GAP_S, xvfb: bool | None = None,
                 resource_dir: str | Path | None = None, keep_files: bool = False, progress: bool = True,
                 reapy_api=None, **unknown):
        if unknown:
            raise FarmError(f"unknown REAPER backend option(s) {', '.join(sorted(unknown))} (known: reaper, via, "
                            f"instances, timeout_s, retries, loops_per_project, rpp_only, workdir, gap_s, xvfb, "
                            f"resource_dir, keep_files, progress)", field="backend_options")
        if via not in VIA:
            raise FarmError(f"{via!r} is not one of {', '.join(VIA)}", field="via")
        if int(instances) < 1:
            raise FarmError("must be at least 1", field="instances")
        if int(retries) < 0:
            raise FarmError("must be 0 or more", field="retries")
        if timeout_s is not None and float(timeout_s) <= 0:
            raise FarmError("must be positive", field="timeout_s")
        self.via = via
        self.instances = int(instances) if via == "process" else 1
        self.timeout_s = float(timeout_s) if timeout_s is not None else None
        self.keep_files = bool(keep_files)
        self.retries = int(retries)
        self.loops_per_project = int(loops_per_project)
        self.rpp_only = Path(rpp_only) if rpp_only else None
        self.gap_s = float(gap_s)
        self.xvfb = xvfb
        self.progress = progress
        self.reapy_api = reapy_api
        self._session = None
        self.executable: Path | None = None
        self.version = "REAPER (version unknown)"
        if via == "process" and self.rpp_only is None:
            self.executable, _origin = find_reaper(reaper)
            if self.executable is None:
                raise FarmError(f"REAPER not found: pass --reaper PATH, set ${ENV_REAPER}, or add "
                                f"[reaper] path to farm.toml (`farm doctor` checks this machine)",
                                field="reaper")
            found = reaper_version(self.executable)
            if found:
                self.version = f"REAPER {found}"
            self.resource_dir = Path(resource_dir) if resource_dir else default_resource_dir(self.executable)
        else:
            self.resource_dir = Path(resource_dir) if resource_dir else None
        if via == "reapy" and self.rpp_only is None:
            from farm.reaper_live import ReapySession

            self._session = ReapySession.connect(reapy_api)
            self.version = self._session.version()
        self.version = f"{self.version}; {FINISHING}"
        # A temporary work directory is made per render_raw call and removed after it unless a
        # loop failed (then it holds the projects and logs the error names): a batch worker never
        # calls close(), and nothing may pile up in /tmp night after night.
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="farm-reaper-"))
        # Batch workers may share one workdir: each backend gets its own instance directories, so
        # two REAPERs never share a reaper.ini.
        self._instances_dir: Path | None = None
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.instances):
            self._slots.put(slot)
        self._lock = threading.Lock()
        self._faust: list = []  # Faust patches of the current render_raw call: their JSFX go to each instance

    # -- public ---------------------------------------------------------------------------------
    def render_raw(self, jobs: Sequence[RenderJob]) -> list[np.ndarray]:
        """Raw float32 ``(2, loop + tail)`` per job, in order (see the module docstring)."""
        jobs = list(jobs)
        if not jobs:
            return []
        if self._own_workdir and not self.workdir.is_dir():
            self.workdir = Path(tempfile.mkdtemp(prefix="farm-reaper-"))
            self._instances_dir = None
        self._faust = list({j.patch.name: j.patch for j in jobs if j.patch.kind == "faust"}.values())
        if self.rpp_only is not None:
            raise ProjectsWritten(write_projects(jobs, self.rpp_only, loops_per_project=self.loops_per_project,
                                                 gap_s=self.gap_s))
        plans = plan_projects(jobs, self.workdir / "projects", loops_per_project=self.loops_per_project,
                              gap_s=self.gap_s)
        results: dict[int, np.ndarray] = {}
        failures: dict[int, str] = {}
        last_project: dict[int, Path] = {}
        bar = _progress(len(jobs), self.progress)
        try:
            def one_chunk(plan: ProjectPlan):
                done, failed, last = self._render_chunk(jobs, plan, bar.update)
                with self._lock:
                    results.update(done)
                    failures.update(failed)
                    last_project.update({i: last for i in failed})

            if self.instances > 1 and len(plans) > 1:
                with ThreadPoolExecutor(max_workers=self.instances) as pool:
                    for future in [pool.submit(one_chunk, plan) for plan in plans]:
                        future.result()
            else:
                for plan in plans:
                    one_chunk(plan)
        finally:
            bar.close()
            if not failures:
                self._tidy()
        if failures:
            first = min(failures)
            names = {r.job_index: r.name for p in plans for r in p.regions}
            raise ReaperRenderError(
                f"{len(failures)} of {len(jobs)} loops failed after {self.retries + 1} attempt(s); "
                f"first: {names[first]}: {failures[first]}",
                failures, file=last_project[first], field="reaper")
        return [results[i] for i in range(len(jobs))]

    def close(self) -> None:
        """Remove the temporary work directory unless it holds a failed run (a given one is kept)."""
        self._session = None
        self._tidy()

    def _tidy(self) -> None:
        """Remove this backend's instance directories, and its own work directory when no failed
        project is left in it."""
        with self._lock:
            if self._instances_dir is not None:
                shutil.rmtree(self._instances_dir, ignore_errors=True)
                self._instances_dir = None
        if self._own_workdir and not any(self.workdir.glob("projects/*.rpp")):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def project_timeout(self, plan: ProjectPlan) -> float:
        """Seconds one REAPER run of ``plan`` may take before it is killed."""
        if self.timeout_s is not None:
            return self.timeout_s
        return TIMEOUT_BASE_S + TIMEOUT_PER_LOOP_S * len(plan.regions)

    # -- internals ------------------------------------------------------------------------------
    def _render_chunk(self, jobs, plan: ProjectPlan, advance: Callable[[int], object]):
        """Render one chunk, re-rendering failed loops alone up to ``retries`` times."""
        done: dict[int, np.ndarray] = {}
        failed: dict[int, str] = {}
        pending = [r.job_index for r in plan.regions]
        current = plan
        attempted = []
        for attempt in range(self.retries + 1):
            if attempt:
                current = plan_project(jobs, pending, plan.path.parent, gap_s=self.gap_s,
                                       name=f"{plan.path.stem.split('_')[0]}-retry{attempt}")
            attempted.append((current, attempt))
            write_project(current)
            _clear_renders(current)
            outcome = self._run(current, attempt)
            failed = {}
            for region in current.regions:
                audio, why = check_render(current.render_dir / region.file_name, region.samples,
                                          current.sample_rate)
                if audio is None:
                    failed[region.job_index] = why if outcome is None else f"{why}; {outcome}"
                else:
                    done[region.job_index] = audio
                    advance(1)
            pending = sorted(failed)
            if not pending:
                break
        if not failed and not self.keep_files:  # everything read back: the files are no longer needed
            for tried, attempt in attempted:
                shutil.rmtree(tried.render_dir, ignore_errors=True)
                tried.path.unlink(missing_ok=True)
                tried.path.with_suffix(".rpp-bak").unlink(missing_ok=True)  # REAPER's backup on save (reapy)
                _attempt_log(tried, attempt).unlink(missing_ok=True)
        return done, failed, current.path

    def _run(self, plan: ProjectPlan, attempt: int) -> str | None:
        """Have REAPER render ``plan``; return a note on how the run went wrong, or None."""
        if self.via == "reapy":
            from farm.reaper_live import ReapySession

            if self._session is None:
                self._session = ReapySession.connect(self.reapy_api)
            return self._session.render(plan.path, list(plan.expected_files().values()),
                                        self.project_timeout(plan))
        slot = self._slots.get()
        try:
            with self._lock:
                if self._instances_dir is None:
                    (self.workdir / "instances").mkdir(parents=True, exist_ok=True)
                    self._instances_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-",
                                                                dir=self.workdir / "instances"))
            instance = self._instances_dir / str(slot)
            cfgfile = prepare_instance(instance, self.resource_dir)
            write_jsfx(self._faust, instance / "Effects")
            splash = instance / "splash.log"
            cmd = reaper_command(self.executable, plan.path, cfgfile, xvfb=self.xvfb, splashlog=splash)
            result = run_reaper(cmd, timeout_s=self.project_timeout(plan), log=_attempt_log(plan, attempt))
        finally:
            self._slots.put(slot)
        if result.timed_out or result.returncode != 0:
            return result.describe()
        return None



def _attempt_log(plan: ProjectPlan, attempt: int) -> Path:
    """Where REAPER's output for one attempt at ``plan`` goes."""
    return plan.render_dir.with_name(f"{plan.render_dir.name}.attempt{attempt}.log")


def _clear_renders(plan: ProjectPlan) -> None:
    """Remove renders a previous run left, so only this run's files are judged."""
    for path in plan.expected_files().values():
        path.unlink(missing_ok=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    from farm.progress import shown

    return tqdm(total=total, desc="REAPER", unit="loop", file=sys.stderr, leave=False, disable=not shown())
