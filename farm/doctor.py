"""``farm doctor``: what this machine can render, one line per check, each with its fix.

Checks: REAPER (where it was found and its version), xvfb-run (REAPER needs a display on Linux),
the FluidSynth library and a General MIDI SoundFont (the embedded renderer), DawDreamer (Faust and
plugin patches) and the instruments the plugin patches name, the render probe's digest (equal on
machines that render the same bytes), reapy reaching a running REAPER (informational), and free
disk space where the loops go.

``farm doctor`` exits 1 when the embedded renderer cannot run here (no FluidSynth library or no
SoundFont): every machine of the farm needs it. A missing REAPER is reported, not an error.
"""
from __future__ import annotations

import ctypes.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from farm.errors import FarmError

MIN_FREE_GB = 5.0  # a night of loops (FLAC + permutations) fits comfortably in a few GB
OK, MISSING, INFO = "ok", "missing", "info"


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ``ok``, ``missing`` or ``info``."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<7} {self.name:<11} {self.detail}"
        return f"{text}  -> {self.fix}" if self.fix and self.status != OK else text


def check_reaper(explicit: str | Path | None = None) -> Check:
    from farm.render.reaper_process import ENV_REAPER, find_reaper, reaper_version

    try:
        path, origin = find_reaper(explicit)
    except FarmError as err:
        return Check("reaper", MISSING, err.line(), f"fix the path given by {err.field}")
    if path is None:
        return Check("reaper", MISSING, "REAPER not found (only the embedded renderer is available)",
                     f"install REAPER from reaper.fm, then pass --reaper PATH, set ${ENV_REAPER}, or add "
                     f"[reaper] path to farm.toml")
    version = reaper_version(path)
    return Check("reaper", OK, f"{path} (from {origin}), version {version or 'unknown (no whatsnew.txt)'}")


def check_xvfb() -> Check:
    from farm.render.reaper_process import needs_xvfb

    path = shutil.which("xvfb-run")
    if path:
        return Check("xvfb-run", OK, path)
    if needs_xvfb():
        return Check("xvfb-run", MISSING, "no display and no xvfb-run: REAPER cannot start here",
                     "apt-get install xvfb (or run with DISPLAY set)")
    return Check("xvfb-run", INFO, "not installed; not needed while a display is set",
                 "apt-get install xvfb for headless REAPER renders")


def check_fluidsynth() -> Check:
    name = ctypes.util.find_library("fluidsynth")
    if name is None:
        return Check("fluidsynth", MISSING, "FluidSynth library not found (embedded renderer unavailable)",
                     "apt-get install libfluidsynth3")
    try:
        lib = ctypes.CDLL(name)
        lib.fluid_version_str.restype = ctypes.c_char_p
        version = lib.fluid_version_str().decode()
    except (OSError, AttributeError):
        return Check("fluidsynth", MISSING, f"{name} does not load", "apt-get install --reinstall libfluidsynth3")
    return Check("fluidsynth", OK, f"{name} {version}")


def check_soundfont() -> Check:
    from farm.patches import DEFAULT_SOUNDFONTS, default_soundfont

    try:
        path = default_soundfont()
    except FarmError as err:
        return Check("soundfont", MISSING, err.message, "apt-get install fluid-soundfont-gm")
    if path in [p.resolve() for p in DEFAULT_SOUNDFONTS if p.exists()]:
        return Check("soundfont", OK, f"{path} ({path.stat().st_size / 1e6:.0f} MB)")
    return Check("soundfont", INFO, f"only the small fallback {path.name} found",
                 "apt-get install fluid-soundfont-gm for the full General MIDI set")


def check_dawdreamer() -> Check:
    from farm.render.dawdreamer import dawdreamer_version

    version = dawdreamer_version()
    if version.endswith("absent"):
        return Check("dawdreamer", MISSING, "DawDreamer not installed: Faust and plugin patches cannot play",
                     "pip install 'dawdreamer==0.9.0' (the set-up installs it)")
    return Check("dawdreamer", OK, f"{version} (Faust patches, hosted plugins)")


def check_plugins(patches_dir: str | Path | None = None) -> Check:
    """Whether the instruments the plugin patches name are installed here."""
    from farm.patches import scan_patches
    from farm.patches.plugin import PluginMissing

    good, broken = scan_patches(patches_dir)
    playable = [p.name for p in good if p.kind == "plugin"]
    missing = [err for err in broken if isinstance(err, PluginMissing)]
    if missing:
        names = ", ".join(Path(err.file).stem for err in missing)
        return Check("plugins", MISSING, f"not installed for {names}: {missing[0].message}"
                     + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                     "install them, or nights over all patches skip those patches")
    return Check("plugins", OK if playable else INFO,
                 f"{len(playable)} plugin patches can play ({', '.join(playable)})" if playable
                 else "no plugin patches")


def check_reapy(api=None) -> Check:
    from farm.reaper_live import ReapySession

    try:
        session = ReapySession.connect(api)
        return Check("reapy", OK, f"running {session.version()} reachable (ports 2306/2307)")
    except FarmError:
        return Check("reapy", INFO, "no running REAPER reachable (needed only for `farm reaper` and "
                                    "--via reapy)", "start REAPER; first time: `farm reaper setup`, restart it")


def check_disk(directory: str | Path = ".", min_free_gb: float = MIN_FREE_GB) -> Check:
    path = Path(directory)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    free = usage.free / 1e9
    detail = f"{free:.1f} GB free of {usage.total / 1e9:.0f} GB at {path.resolve()}"
    if free < min_free_gb:
        return Check("disk", MISSING, detail, f"free space or choose another --dir (want >= {min_free_gb:g} GB)")
    return Check("disk", OK, detail)


def check_probe() -> Check:
    """This machine's render probe (``farm.batch.probe``): machines whose digests are equal render
    the same bytes, so a render node can be compared with the catalog machine at a glance."""
    from farm.batch.probe import machine_probe

    try:
        probe = machine_probe()
    except FarmError as err:
        return Check("probe", MISSING, err.line(), "the lines above say what the embedded renderer lacks")
    return Check("probe", OK, f"{probe.digest} (the same on every machine that renders the same bytes; "
                              f"`python -m farm.batch.probe` prints it part by part)")


def doctor(reaper: str | Path | None = None, directory: str | Path = ".", reapy_api=None,
           check_live: bool = True) -> list[Check]:
    """Every check, in the order ``farm doctor`` prints them."""
    checks = [check_reaper(reaper), check_xvfb(), check_fluidsynth(), check_soundfont(), check_dawdreamer(),
              check_plugins(), check_probe()]
    if check_live:
        checks.append(check_reapy(reapy_api))
    checks.append(check_disk(directory))
    return checks


def renderers(checks: list[Check]) -> list[str]:
    """The renderers ``checks`` say can run here: ``embedded`` and/or ``reaper``."""
    status = {c.name: c.status for c in checks}
    embedded = status.get("fluidsynth") == OK and status.get("soundfont") in (OK, INFO)
    reaper = status.get("reaper") == OK and (status.get("xvfb-run") != MISSING or sys.platform != "linux")
    return [name for name, ok in (("embedded", embedded), ("reaper", reaper)) if ok]


def exit_code(checks: list[Check]) -> int:
    """``farm doctor``'s exit code: 1 when the embedded renderer cannot run here, else 0."""
    return 0 if "embedded" in renderers(checks) else 1


def report(checks: list[Check]) -> str:
    """The report text: one line per check and a closing summary of what can render here."""
    lines = [c.line() for c in checks]
    lines.append(f"renderers available: {', '.join(renderers(checks)) or 'none'}")
    return "\n".join(lines)
