"""A Faust patch in REAPER: its ``.dsp`` as a JSFX instrument and an FX chain that plays it.

DawDreamer's libfaust has a JSFX backend (Debian's ``faust`` 2.54 has none): the same source that
the embedded renderer compiles becomes a polyphonic JSFX (``[midi:on][nvoices:N]``), its sliders
in the order libfaust writes them. The chain sets each slider to the patch's value
(``[faust.params]``, else the slider's default) and, when ``[reaper] fxchain`` names a chain saved
from REAPER, appends its effects: the patch's pedalboard ``[[effects]]`` have no exact REAPER
twin, so in REAPER the effects are the ones captured there. Automation is not carried over.

The JSFX live under ``Effects/LoopFarmFaust/<patch>.jsfx`` of a REAPER resource folder:
``farm reaper setup`` installs them, each REAPER instance the backend starts gets them, and
``farm batch --rpp-only DIR`` writes them to ``DIR/Effects/LoopFarmFaust/``. Nothing here has been
run in REAPER: the files are checked with an RPP parser and against the JSFX the compiler wrote.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from farm.errors import FarmError

FOLDER = "LoopFarmFaust"  # under REAPER's Effects/
JS_SLIDERS = 64  # a JS entry in an FX chain lists 64 slider values ("-" for none)
_SLIDER = re.compile(r"^slider(\d+):\w+=([^<\s]+)<[^>]*>(hslider|vslider|nentry|checkbox|button)_(\S+)\s*$", re.M)


def jsfx_name(patch) -> str:
    """Where the chain finds the patch's JSFX, relative to REAPER's Effects folder."""
    return f"{FOLDER}/{patch.name}.jsfx"


def faust_jsfx(patch) -> str:
    """The patch's ``.dsp`` compiled to JSFX source by DawDreamer's libfaust (UTF-8 text)."""
    from farm.patches.faust import dsp_error
    from farm.render.dawdreamer import _dawdreamer

    _dawdreamer()
    from dawdreamer.faust import createLibContext, destroyLibContext
    from dawdreamer.faust.box import boxFromDSP, boxToSource

    source = patch.faust.dsp.read_text(encoding="utf-8")
    createLibContext()  # a fresh context per compile: re-using one hit an internal assert
    try:
        code = boxToSource(boxFromDSP(source), "jsfx", patch.name.replace("-", "_"))
    except RuntimeError as err:
        raise dsp_error(patch.faust.dsp, str(err)) from None
    finally:
        destroyLibContext()
    return code


def slider_values(patch, code: str) -> list[str]:
    """The JS entry's 64 slider values for ``code``: the patch's parameter where it sets one, else
    the slider's default; ``-`` past the last slider."""
    labels = sorted((s.label for s in patch.faust.sliders), key=len, reverse=True)
    params = dict(patch.faust.params)
    values = ["-"] * JS_SLIDERS
    for number, default, _kind, mangled in _SLIDER.findall(code):
        # libfaust writes "<kind>_<label><n>": find the label it starts with
        label = next((lab for lab in labels if re.fullmatch(re.escape(lab) + r"\d*", mangled)), None)
        value = params.get(label, float(default))
        values[int(number) - 1] = f"{value:g}"
    return values


def faust_fxchain(patch) -> str:
    """The FX chain text (``.RfxChain`` format) for a Faust patch: its JSFX, then any effects of the
    chain its ``[reaper] fxchain`` names."""
    from farm.rpp import load_fxchain

    values = slider_values(patch, faust_jsfx(patch))
    guid = hashlib.sha256(f"loopfarm:{patch.name}".encode()).hexdigest().upper()
    fxid = f"{{{guid[:8]}-{guid[8:12]}-{guid[12:16]}-{guid[16:20]}-{guid[20:32]}}}"
    chain = (f"BYPASS 0 0 0\n<JS {jsfx_name(patch)} \"{patch.name}\"\n  {' '.join(values)}\n>\n"
             f"FLOATPOS 0 0 0 0\nFXID {fxid}\nWAK 0 0\n")
    if patch.reaper_fxchain is not None and Path(patch.reaper_fxchain).is_file():
        chain += load_fxchain(patch.reaper_fxchain, patch_file=patch.path)
    return chain


def write_jsfx(patches: Iterable, effects_dir: str | Path) -> list[Path]:
    """Write the JSFX of every Faust patch in ``patches`` under ``effects_dir/LoopFarmFaust/``
    (each to a temporary name, then renamed); returns the paths written."""
    from farm.files import atomic_write_text

    written = []
    for patch in patches:
        if getattr(patch, "kind", None) != "faust":
            continue
        target = Path(effects_dir) / jsfx_name(patch)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, faust_jsfx(patch))
        except OSError as err:
            raise FarmError(f"cannot write: {err.strerror or err}", file=target) from None
        written.append(target)
    return written
