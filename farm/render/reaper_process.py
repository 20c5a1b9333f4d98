"""Finding REAPER and running it: the executable, its resource directory, one headless run in
its own process group (killed whole on timeout), and a private resource directory per instance.

Used by the REAPER backend (``farm.render.reaper``) and by ``farm doctor``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from farm.errors import FarmError
from farm.files import read_toml

ENV_REAPER = "FARM_REAPER"
ENV_RESOURCE = "FARM_REAPER_RESOURCE"
ENV_CONFIG = "FARM_CONFIG"
KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL this long after
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


def _link_entries(source: Path, target: Path) -> None:
    """``target/`` holding a link to every entry of ``source/`` but LoopFarmFaust (written per run)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name == "LoopFarmFaust":
            continue
        try:
            (target / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        except OSError:
            if entry.is_dir():
                shutil.copytree(entry, target / entry.name)
            else:
                shutil.copy2(entry, target / entry.name)


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
        effects = Path(resource_dir) / "Effects"
        if effects.is_dir() and not (directory / "Effects").exists():
            _link_entries(effects, directory / "Effects")
        for name in _SEED_DIRS:
            source = Path(resource_dir) / name
            target = directory / name
            if name != "Effects" and source.is_dir() and not target.exists():
                try:
                    target.symlink_to(source.resolve(), target_is_directory=True)
                except OSError:
                    shutil.copytree(source, target)
    if not ini.exists():
        ini.write_text("[REAPER]\n", encoding="utf-8")
    return ini
