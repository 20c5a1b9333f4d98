"""A running REAPER, driven through reapy: set-up, audition, patch pull, and ``--via reapy`` renders.

reapy talks to REAPER through its web interface (port 2307) and a socket server (port 2306):
fixed ports, so one reapy-driven REAPER per host. Every function takes ``api``: the ``reapy``
module by default, or any object with the same interface (the tests pass a recorder). Calls
from outside REAPER cost tens of milliseconds each, so related calls are batched inside
``api.inside_reaper()``.

Nothing here runs REAPER itself: when reapy cannot reach it, each function raises one FarmError
saying what to do.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Sequence

from farm.errors import FarmError, unknown_name
from farm.files import atomic_write_text
from farm.rpp import fxchain_for, fxchain_from_track_chunk, track_chunk

# Main-section actions: "File: Render project, using the most recent render settings,
# auto-close render dialog" (the project's own saved settings) and "Close current project tab".
# The project is saved before its tab is closed: a tab REAPER thinks modified asks whether to
# save, and that dialog would hold REAPER until the timeout.
ACTION_RENDER_AUTOCLOSE = 42230
ACTION_CLOSE_PROJECT_TAB = 40860
CHUNK_BYTES = 1 << 24  # room for a track state chunk with large plugin states
REAPER_SCRIPTS = Path(__file__).resolve().parent.parent / "reaper_scripts"
UNREACHABLE = ("REAPER is not reachable through reapy (ports 2306/2307): start REAPER; "
               "if this is the first time, run `farm reaper setup` and restart REAPER")


def reapy_module():
    """The ``reapy`` module, imported quietly (it warns at import when REAPER is not running)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import reapy
        except ImportError:
            raise FarmError("python-reapy is not installed: pip install python-reapy", field="reapy") from None
    return reapy


def _rpr(api):
    return api.reascript_api


@contextlib.contextmanager
def _talking_to_reaper(doing: str):
    """Turn a failure of reapy mid-way (REAPER closed, the connection dropped) into one line."""
    try:
        yield
    except FarmError:
        raise
    except Exception as err:  # reapy raises several kinds (socket, its own, missing API names)
        raise FarmError(f"lost REAPER while {doing} ({type(err).__name__}: {err}): is REAPER still running? "
                        f"`farm doctor` checks that reapy reaches it", field="reapy") from None


def _chunk_string(result) -> str:
    """reapy returns ReaScript out-parameters as a tuple: pick the chunk out of it."""
    if isinstance(result, str):
        return result
    for value in result:
        if isinstance(value, str) and value.lstrip().startswith("<TRACK"):
            return value
    raise FarmError("REAPER returned no track state chunk", field="track")


class ReapySession:
    """A connection to the REAPER running on this host."""

    def __init__(self, api):
        self.api = api
        self.broken: str | None = None

    @classmethod
    def connect(cls, api=None) -> "ReapySession":
        """Connect, or raise one FarmError saying how to make REAPER reachable."""
        api = api if api is not None else reapy_module()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enabled = api.dist_api_is_enabled()
            if not enabled:
                try:
                    api.reconnect()
                except Exception:  # reapy raises several kinds when nothing listens
                    pass
                enabled = api.dist_api_is_enabled()
        if not enabled:
            raise FarmError(UNREACHABLE, field="reapy")
        return cls(api)

    def version(self) -> str:
        return f"REAPER {self.api.get_reaper_version()}"

    def render(self, project: Path, expected: Sequence[Path], timeout_s: float) -> str | None:
        """Open ``project`` in a new tab, render it with its saved settings, close the tab.

        The render action blocks REAPER until it is done, so it runs on a helper thread and the
        files are awaited here with ``timeout_s``. Returns a note when the run went wrong (the
        caller checks every file either way), or None.
        """
        if self.broken:
            return self.broken
        outcome: dict = {}

        def work():
            try:
                with self.api.inside_reaper():
                    opened = self.api.open_project(str(project), in_new_tab=True)
                    opened.perform_action(ACTION_RENDER_AUTOCLOSE)
                    _rpr(self.api).Main_SaveProject(opened.id, False)
                    opened.perform_action(ACTION_CLOSE_PROJECT_TAB)
            except Exception as err:  # reported, then the files are judged
                outcome["error"] = f"reapy call failed: {type(err).__name__}: {err}"

        start = time.monotonic()
        worker = threading.Thread(target=work, name="reapy-render", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            self.broken = (f"REAPER (through reapy) did not finish {Path(project).name} within "
                           f"{timeout_s:.0f} s; it may be showing a dialog")
            return self.broken
        remaining = max(0.0, timeout_s - (time.monotonic() - start))
        if not wait_for_files(expected, remaining):
            return outcome.get("error") or f"files still missing {timeout_s:.0f} s after the render started"
        return outcome.get("error")


def wait_for_files(paths: Sequence[Path], timeout_s: float, poll_s: float = 0.1) -> bool:
    """True once every path exists with a size that held still for one poll, False on timeout."""
    deadline = time.monotonic() + timeout_s
    last: dict[Path, int] = {}
    while True:
        sizes = {p: p.stat().st_size for p in map(Path, paths) if p.is_file()}
        if len(sizes) == len(paths) and sizes == last:
            return True
        last = sizes
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


# -- farm reaper setup ----------------------------------------------------------------------------
def setup(api=None, resource_dir: str | Path | None = None) -> list[str]:
    """Configure REAPER for reapy and install the farm's JSFX and ReaScripts; return what was done.

    reapy's configuration step edits ``reaper.ini``/``reaper-kb.ini`` (Python ReaScripts on, a web
    interface on port 2307, the action that starts reapy's server): REAPER must be restarted.
    """
    api = api if api is not None else reapy_module()
    if resource_dir is None:
        get_resource_path = api.config.resource_path.get_resource_path
        found = None
        for detect in (True, False):
            try:
                found = get_resource_path(detect_portable_install=detect)
            except (RuntimeError, OSError):
                continue
            if found:
                break
        if not found:
            raise FarmError("REAPER's resource directory not found (no reaper.ini): start REAPER once, "
                            "or pass --resource-dir", field="resource_dir")
        resource_dir = found
    resource = Path(resource_dir)
    if not (resource / "reaper.ini").is_file():
        raise FarmError("not a REAPER resource directory (no reaper.ini)", file=resource, field="resource_dir")
    try:
        api.config.configure_reaper(str(resource))
    except (RuntimeError, OSError, ValueError) as err:
        raise FarmError(f"reapy could not configure REAPER: {err}", file=resource, field="reapy") from None
    done = [f"configured REAPER for reapy in {resource} (Python ReaScripts, web interface on port 2307, "
            f"reapy server action)"]
    done += install_reaper_files(resource)
    done.append("restart REAPER now; then `farm reaper audition` and `farm patch pull` can reach it")
    return done


def install_reaper_files(resource: Path) -> list[str]:
    """Copy the farm's JSFX into ``Effects/`` (with one made from each Faust patch, under
    ``Effects/LoopFarmFaust/``) and its ReaScripts into ``Scripts/LoopFarm/``."""
    done = []
    effects = REAPER_SCRIPTS / "Effects"
    if effects.is_dir():
        for source in sorted(effects.rglob("*.jsfx")):
            target = resource / "Effects" / source.relative_to(effects)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            done.append(f"installed JSFX {target}")
    from farm.patches import scan_patches
    from farm.render.jsfx import write_jsfx

    for target in write_jsfx(scan_patches()[0], resource / "Effects"):
        done.append(f"installed JSFX {target} (made from its Faust patch)")
    scripts = sorted(REAPER_SCRIPTS.glob("*.lua"))
    if scripts:
        target_dir = resource / "Scripts" / "LoopFarm"
        target_dir.mkdir(parents=True, exist_ok=True)
        for source in scripts:
            shutil.copy2(source, target_dir / source.name)
        done.append(f"copied {len(scripts)} ReaScripts to {target_dir} (Actions > Show action list > "
                    f"New action > Load ReaScript... to add them)")
    return done


# -- farm reaper audition -------------------------------------------------------------------------
def audition(template_dir: str | Path, patch_name: str, api=None,
             patches_dir=None) -> tuple[list[tuple[int, str]], str | None]:
    """Put the template's parts that ``patch_name`` can play on new tracks of the open project.

    The project tempo and meter become the template's, each part's MIDI file becomes an item at
    the start, on a track carrying the patch's FX chain, and the loop is selected with repeat on.
    A patch with no usable chain yet (a Vital or Surge patch before its first pull) gets empty
    tracks to put the instrument on. Returns ``([(track number, name)], note or None)``.
    """
    from farm.model import Template
    from farm.patches import load_patch

    template_dir = Path(template_dir)
    if not (template_dir / "template.json").is_file():
        raise FarmError("not a template directory (no template.json)", file=template_dir, field="template")
    template = Template.load(template_dir)
    patch = load_patch(patch_name, patches_dir)
    parts = [p for p in template.parts if patch.fits(p.name)]
    if not parts:
        raise FarmError(f"patch {patch.name!r} plays {', '.join(patch.roles)}; the template's parts are "
                        f"{', '.join(p.name for p in template.parts)}", file=patch.path, field="roles")
    try:
        chain, note = fxchain_for(patch), None
    except FarmError as err:
        chain = ""
        note = (f"no usable FX chain yet ({err.message.split(' (')[0]}): put the instrument on the track, "
                f"then `farm patch pull {patch.name} --track N`")
    session = ReapySession.connect(api)
    api = session.api
    rpr = _rpr(api)
    added = []
    with _talking_to_reaper("adding tracks"), api.inside_reaper():
        project = api.Project()
        rpr.SetTempoTimeSigMarker(project.id, -1, 0.0, -1, -1, float(template.bpm),
                                  template.meter.numerator, template.meter.denominator, False)
        for part in parts:
            name = f"{template.id} {part.name} ({patch.name})"
            track = project.add_track(index=project.n_tracks, name=name)
            midi = (template_dir / part.midi).resolve()
            chunk = track_chunk(name, chain, [(0.0, template.duration_s, midi, f"{part.name}",
                                               template.bars * template.quarters_per_bar)])
            rpr.SetTrackStateChunk(track.id, chunk, False)
            added.append((project.n_tracks, name))
        project.time_selection = (0.0, template.duration_s)
        rpr.GetSetRepeat(1)
    return added, note


# -- farm patch pull ------------------------------------------------------------------------------
NEW_PATCH_TOML = """\
# Patch pulled from REAPER: its sound is {name}.RfxChain (the FX chain of a REAPER track).
# [embedded] is the General MIDI stand-in used on machines without REAPER; adjust to taste.
name = "{name}"
roles = [{roles}]
target_lufs = -16.0
tail_s = {tail_s}

[embedded]
soundfont = "default"
program = {program}

[reaper]
fxchain = "{name}.RfxChain"
"""


def pull_patch(name: str, track_number: int, api=None, patches_dir: str | Path | None = None,
               roles: Sequence[str] = ()) -> tuple[Path, Path]:
    """Save the FX chain of track ``track_number`` (1-based) as ``patches/NAME.RfxChain``.

    The patch TOML gets (or keeps) ``[reaper] fxchain = "NAME.RfxChain"``; a new patch needs
    ``roles``. The patch's content hash covers the chain file, so the next batch renders with it.
    Returns ``(chain path, TOML path)``.
    """
    from farm.patches import PATCHES_DIR, ROLES, load_patch

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise FarmError("patch names use letters, digits, '.', '_' and '-'", field="name")
    directory = Path(patches_dir or PATCHES_DIR)
    toml_path = directory / f"{name}.toml"
    if not toml_path.is_file():
        if not roles:
            raise FarmError(f"new patch: say which roles it plays with --role ({', '.join(ROLES)})",
                            file=toml_path, field="roles")
        for role in roles:
            if role not in ROLES:
                raise FarmError(unknown_name("role", role, ROLES), field="roles")
    session = ReapySession.connect(api)
    api = session.api
    with _talking_to_reaper(f"reading track {track_number}"), api.inside_reaper():
        project = api.Project()
        count = project.n_tracks
        if not 1 <= int(track_number) <= count:
            raise FarmError(f"track {track_number} does not exist (the project has {count} tracks)",
                            field="track")
        track = project.tracks[int(track_number) - 1]
        chunk = _chunk_string(_rpr(api).GetTrackStateChunk(track.id, "", CHUNK_BYTES, False))
    chain = fxchain_from_track_chunk(chunk)
    chain_path = directory / f"{name}.RfxChain"
    atomic_write_text(chain_path, chain)
    if toml_path.is_file():
        text = toml_path.read_text(encoding="utf-8")
        updated = with_reaper_fxchain(text, f"{name}.RfxChain")
        if updated != text:
            atomic_write_text(toml_path, updated)
    else:
        drums = "drums" in roles
        atomic_write_text(toml_path, NEW_PATCH_TOML.format(
            name=name, roles=", ".join(f'"{r}"' for r in roles), tail_s="1.0" if drums else "2.0",
            program=0))
    load_patch(toml_path)  # the result must be a valid patch
    return chain_path, toml_path


def with_reaper_fxchain(toml_text: str, chain_name: str) -> str:
    """``toml_text`` with ``[reaper] fxchain = "chain_name"``, touching nothing else."""
    line = f'fxchain = "{chain_name}"'
    lines = toml_text.splitlines()
    header = next((i for i, text in enumerate(lines) if text.strip() == "[reaper]"), None)
    if header is None:
        return toml_text.rstrip("\n") + f"\n\n[reaper]\n{line}\n"
    end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for i in range(header + 1, end):
        if re.match(r"\s*fxchain\s*=", lines[i]):
            if lines[i].strip() == line:
                return toml_text
            lines[i] = line
            return "\n".join(lines) + "\n"
    lines.insert(header + 1, line)
    return "\n".join(lines) + "\n"
