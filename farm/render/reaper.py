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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from farm.errors import FarmError
from farm.files import read_toml
from farm.render import RenderJob, register_backend
from farm.rpp import DEFAULT_GAP_S, ProjectPlan, plan_project, plan_projects, write_project

ENV_REAPER = "FARM_REAPER"
ENV_RESOURCE = "FARM_REAPER_RESOURCE"
ENV_CONFIG = "FARM_CONFIG"
SILENCE_PEAK = 10 ** (-100 / 20)  # below -100 dBFS a render counts as silent
# Default time one REAPER run may take: start-up (measured reports: 7-8 s) with ample margin,
# plus a generous allowance per loop (a render takes ~0.15 s per extra region in those reports).
TIMEOUT_BASE_S, TIMEOUT_PER_LOOP_S = 60.0, 5.0
KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL this long after
VIA = ("process", "reapy")
# Files of a REAPER resource directory an instance needs: settings, plugin caches, licence.
_SEED_FILES = ("reaper.ini", "reaper-reginfo2.ini", "reaper-jsfx.ini", "reaper-fxtags.ini",
               "reaper-vstplugins64.ini", "reaper-vstplugins.ini", "reaper-vstplugins_arm64.ini",
               "reaper-clap-linux-x86_64.ini", "reaper-clap-win64.ini", "reaper-clap-macos-arm64.ini",
               "reaper-clap-macos-x86_64.ini", "reaper-auplugins64.ini", "reaper-auplugins_arm64.ini")
_SEED_DIRS = ("Effects", "FXChains", "UserPlugins", "Data", "Scripts")
_INSTALL_LOCATIONS = (
    "/opt/REAPER/reaper", "~/opt/REAPER/reaper", "~/REAPER/reaper", "/usr/local/bin/reaper",
    "/Applications/REAPER.app/Contents/MacOS/REAPER",
    r"C:\Program Files\REAPER (x64)\reaper.exe", r"C:\Program Files\REAPER\reaper.exe",
)


# -- finding REAPER -------------------------------------------------------------------------------
def config_file() -> Path | None:
    """The farm config file: ``$FARM_CONFIG``, else ``./farm.toml``, else ``~/.config/loop-farm/farm.toml``."""
    candidates = [os.environ.get(ENV_CONFIG), "farm.toml", "~/.config/loop-farm/farm.toml"]
    for c in candidates:
        if c and Path(c).expanduser().is_file():
            return Path(c).expanduser()
    return None


def reaper_config() -> dict:
    """The ``[reaper]`` table of the config file (``path``, ``resource_dir``), or ``{}``."""
    path = config_file()
    if path is None:
        return {}
    table = read_toml(path).get("reaper", {})
    if not isinstance(table, dict):
        raise FarmError("expected a table", file=path, field="reaper")
    return table


def find_reaper(explicit: str | Path | None = None) -> tuple[Path | None, str]:
    """``(path to the REAPER executable or None, where it came from)``.

    Order: ``explicit`` (``--reaper``), ``$FARM_REAPER``, the config file's ``[reaper] path``,
    ``reaper`` on ``PATH``, the usual install locations.
    """
    sources = [(explicit, "--reaper"), (os.environ.get(ENV_REAPER), f"${ENV_REAPER}")]
    cfg = config_file()
    if cfg is not None:
        sources.append((reaper_config().get("path"), f"{cfg} [reaper] path"))
    for value, origin in sources:
        if value:
            path = Path(str(value)).expanduser()
            if path.is_dir():
                path = path / ("reaper.exe" if sys.platform == "win32" else "reaper")
            if path.is_file() and os.access(path, os.X_OK):
                return path.resolve(), origin
            raise FarmError(f"REAPER executable not found or not executable: {path}", field=origin)
    on_path = shutil.which("reaper")
    if on_path:
        return Path(on_path).resolve(), "PATH"
    for location in _INSTALL_LOCATIONS:
        path = Path(location).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve(), "install location"
    return None, ""


def reaper_version(executable: str | Path) -> str | None:
    """REAPER's version from ``whatsnew.txt`` beside the executable (first ``vX.Y`` found), or None."""
    directory = Path(executable).resolve().parent
    for candidate in (directory / "whatsnew.txt", directory.parent / "Resources" / "whatsnew.txt"):
        if candidate.is_file():
            with open(candidate, encoding="utf-8", errors="replace") as f:
                for _, line in zip(range(20), f):
                    m = re.search(r"\bv?(\d+\.\d+[0-9a-z+.]*)", line)
                    if m:
                        return m.group(1)
    return None


def default_resource_dir(executable: Path | None = None) -> Path | None:
    """REAPER's resource directory to copy instance settings from (portable install first)."""
    configured = os.environ.get(ENV_RESOURCE) or reaper_config().get("resource_dir")
    if configured:
        return Path(configured).expanduser()
    if executable is not None and (Path(executable).parent / "reaper.ini").is_file():
        return Path(executable).parent
    if sys.platform == "darwin":
        path = Path("~/Library/Application Support/REAPER").expanduser()
    elif sys.platform == "win32":
        path = Path(os.environ.get("APPDATA", "~")).expanduser() / "REAPER"
    else:
        path = Path("~/.config/REAPER").expanduser()
    return path if path.is_dir() else None


def needs_xvfb() -> bool:
    """REAPER needs a display: on Linux without ``$DISPLAY`` (or Wayland) it runs under Xvfb."""
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def reaper_command(executable: str | Path, project: str | Path, cfgfile: str | Path, *,
                   xvfb: bool | None = None, splashlog: str | Path | None = None) -> list[str]:
    """The argv that renders ``project`` with the render settings saved in it, then exits."""
    cmd = [str(executable), "-renderproject", str(project), "-nosplash", "-ignoreerrors",
           "-newinst", "-cfgfile", str(cfgfile)]
    if splashlog is not None:
        cmd += ["-splashlog", str(splashlog)]
    if needs_xvfb() if xvfb is None else xvfb:
        xvfb_run = shutil.which("xvfb-run")
        if xvfb_run is None:
            raise FarmError("REAPER needs a display and xvfb-run is not installed: apt-get install xvfb "
                            "(or set DISPLAY)", field="xvfb-run")
        cmd = [xvfb_run, "-a"] + cmd
    return cmd


# -- one REAPER run -------------------------------------------------------------------------------
@dataclass
class RunResult:
    """How one REAPER process ended."""

    returncode: int | None
    timed_out: bool
    seconds: float
    log: Path

    def describe(self) -> str:
        if self.timed_out:
            return f"REAPER timed out after {self.seconds:.0f} s and was killed (log: {self.log})"
        return f"REAPER exited with code {self.returncode} (log: {self.log})"


def kill_group(pgid: int, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left after ``grace_s``."""
    if sys.platform == "win32":  # pragma: no cover - no process groups; taskkill the tree
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pgid)], capture_output=True)
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)


def run_reaper(cmd: Sequence[str], *, timeout_s: float, log: Path, env: dict | None = None) -> RunResult:
    """Run ``cmd`` in a new session (its own process group); kill the group on timeout.

    The group is also cleared after a normal exit, so nothing REAPER started outlives it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        except OSError as err:
            raise FarmError(f"cannot start REAPER: {err}", file=cmd[0], field="reaper") from None
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        kill_group(proc.pid, grace_s=KILL_GRACE_S if timed_out else 0.2)
        proc.wait()
    return RunResult(None if timed_out else proc.returncode, timed_out, time.monotonic() - start, log)


def prepare_instance(directory: Path, resource_dir: Path | None) -> Path:
    """A resource directory for one REAPER instance; returns its ``reaper.ini`` (``-cfgfile``).

    Settings, plugin caches and the licence are copied from ``resource_dir`` (the user's REAPER
    set-up); JSFX, FX chains and extensions are linked, so every instance sees the same plugins
    without sharing one ``reaper.ini`` that parallel instances would fight over. Control surfaces
    are left out of the copy: reapy's web interface listens on a fixed port.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ini = directory / "reaper.ini"
    if resource_dir is not None and Path(resource_dir).is_dir():
        for name in _SEED_FILES:
            source = Path(resource_dir) / name
            if source.is_file() and not (directory / name).exists():
                shutil.copy2(source, directory / name)
        if ini.is_file():  # control surfaces (reapy's web interface on its fixed port) stay with the user's REAPER
            text = ini.read_text(encoding="utf-8", errors="surrogateescape")
            text = re.sub(r"(?m)^csurf_\d+=.*\n?", "", text)
            text = re.sub(r"(?m)^csurf_cnt=\d+", "csurf_cnt=0", text)
            ini.write_text(text, encoding="utf-8", errors="surrogateescape")
        for name in _SEED_DIRS:
            source = Path(resource_dir) / name
            target = directory / name
            if source.is_dir() and not target.exists():
                try:
                    target.symlink_to(source.resolve(), target_is_directory=True)
                except OSError:
                    shutil.copytree(source, target)
    if not ini.exists():
        ini.write_text("[REAPER]\n", encoding="utf-8")
    return ini


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
    """Write the chunk projects for ``jobs`` into ``directory`` (``--rpp-only``); return their paths."""
    plans = plan_projects(jobs, directory, loops_per_project=loops_per_project, gap_s=gap_s)
    return [write_project(plan) for plan in plans]


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

    # -- public ---------------------------------------------------------------------------------
    def render_raw(self, jobs: Sequence[RenderJob]) -> list[np.ndarray]:
        """Raw float32 ``(2, loop + tail)`` per job, in order (see the module docstring)."""
        jobs = list(jobs)
        if not jobs:
            return []
        if self._own_workdir and not self.workdir.is_dir():
            self.workdir = Path(tempfile.mkdtemp(prefix="farm-reaper-"))
            self._instances_dir = None
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
