"""The Faust patch kind: a ``[faust]`` table naming a polyphonic ``.dsp`` instrument beside the TOML.

The instrument follows Faust's MIDI convention: each voice reads ``freq`` (Hz), ``gain`` (0-1,
from the velocity) and ``gate`` (1 while the key is down); ``declare options "[nvoices:N]"``
sets its polyphony. Its other sliders are the patch's parameters, set by label in
``[faust.params]`` and swept over the loop by ``[[faust.automation]]``::

    [faust]
    dsp = "acid-303.dsp"         # beside this TOML
    octave = -1
    [faust.params]
    cutoff = 420.0               # a slider's label: hslider("cutoff[unit:Hz]", ...)
    [[faust.automation]]
    param = "cutoff"
    from = 300.0
    to = 2400.0
    shape = "sine"
    cycles = 2

The ``.dsp`` is parsed by DawDreamer's libfaust when the patch loads (about 20 ms), so a syntax
error is one line naming the file and its line before anything renders.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from farm.errors import FarmError, unknown_name
from farm.patches.model import FaustSound, Slider

# How the embedded renderer plays a Faust instrument (farm.render.dawdreamer), hashed into every
# Faust patch's content hash, so a loop's id changes when the way it is played changes its bytes:
# 2 = one note per one-voice copy, released voices ringing out to -90 dB (1: libfaust's own host);
# 3 = a ringing release takes one of the instrument's [nvoices:N] until it is quiet or stolen.
FAUST_PLAYER = "faust player 3: one note per voice, released to -90 dB, nvoices counted with releases"
FAUST_KEYS = {"dsp", "voices", "octave", "velocity_curve", "note_length", "params", "automation"}
VOICE_CONTROLS = ("freq", "gain", "gate")  # set by each note, not by the patch
DAWDREAMER_HINT = "DawDreamer is not installed: pip install 'dawdreamer==0.9.0' (it compiles Faust patches)"

_SLIDER = re.compile(r'\b(hslider|vslider|nentry)\s*\(\s*"([^"]*)"\s*,\s*([^,()]+)\s*,\s*([^,()]+)\s*,\s*([^,()]+)\s*,')
_BUTTON = re.compile(r'\b(button|checkbox)\s*\(\s*"([^"]*)"\s*\)')
_VOICES = re.compile(r'\[nvoices:\s*(\d+)\s*\]')
_ERROR_LINE = re.compile(r"^[^:\n]*:(\d+)\s*:\s*ERROR\s*:\s*(.*)$", re.S)


def _label(text: str) -> str:
    """``"cutoff[unit:Hz][scale:log]"`` -> ``"cutoff"``; a path label keeps its last part."""
    return re.sub(r"\[[^\]]*\]", "", text).strip().split("/")[-1].strip()


def dsp_sliders(source: str) -> tuple[Slider, ...]:
    """The sliders written in a ``.dsp`` source (hslider, vslider, nentry with number arguments;
    buttons and checkboxes as 0..1), in order of appearance."""
    found: dict[str, Slider] = {}
    for _kind, label, init, lo, hi in _SLIDER.findall(source):
        try:
            found.setdefault(_label(label), Slider(_label(label), float(init), float(lo), float(hi)))
        except ValueError:  # an expression, not a number: the slider is still there, range unknown
            found.setdefault(_label(label), Slider(_label(label), 0.0, float("-inf"), float("inf")))
    for _kind, label in _BUTTON.findall(source):
        found.setdefault(_label(label), Slider(_label(label), 0.0, 0.0, 1.0))
    return tuple(found.values())


def dsp_voices(source: str, default: int = 8) -> int:
    """The ``[nvoices:N]`` a source declares, else ``default``."""
    m = _VOICES.search(source)
    return int(m.group(1)) if m else default


def check_dsp(path: Path) -> None:
    """Parse the ``.dsp`` with libfaust; a mistake is one FarmError naming ``file:line``."""
    st = path.stat()
    _check_dsp(str(path), st.st_mtime_ns, st.st_size)


def _parsed():
    """Sources libfaust has parsed without a mistake, kept between runs (``farm.memo``): the
    answer depends on the text and on DawDreamer's libfaust and libraries, nothing else."""
    from farm.memo import kept

    return kept("faust-parsed", packages=("dawdreamer",))


@lru_cache(maxsize=128)
def _check_dsp(path: str, _mtime: int, _size: int) -> None:
    import hashlib

    source = Path(path).read_text(encoding="utf-8")
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    if _parsed().get(digest) is True:
        return
    try:
        from dawdreamer.faust import createLibContext, destroyLibContext
        from dawdreamer.faust.box import boxFromDSP
    except ImportError:
        raise FarmError(DAWDREAMER_HINT, file=path, field="faust.dsp") from None
    createLibContext()  # a fresh context per parse: libfaust keeps global state between them
    try:
        boxFromDSP(source)
    except RuntimeError as err:
        raise dsp_error(path, str(err)) from None
    finally:
        destroyLibContext()
    _parsed().put(digest, True)


def dsp_error(path: str | Path, message: str, line_offset: int = 1) -> FarmError:
    """libfaust's ``name:LINE : ERROR : text`` as ``<path>:<line>: faust: <text>``, on one line;
    ``line_offset``: how many lines libfaust counts above the file (1 when parsing, 3 when compiling)."""
    text = message.strip()
    text = text.split("FaustProcessor::compile(): ", 1)[-1]
    m = _ERROR_LINE.match(text.split(". Check the faustlibraries path")[0])
    if m:
        line = int(m.group(1)) - line_offset
        detail = " ".join(m.group(2).split())
        return FarmError(detail, file=f"{path}:{line}", field="faust")
    return FarmError(" ".join(text.split()) or "libfaust refused it", file=path, field="faust")


def parse_faust(table: dict, c, roles) -> FaustSound:
    """The ``[faust]`` table of a patch, checked field by field (``c`` is the patch's checker)."""
    p = "faust."
    c.unknown(table, FAUST_KEYS, p)
    name = table.get("dsp")
    if not isinstance(name, str) or not name.endswith(".dsp") or "/" in name or "\\" in name or name.startswith("."):
        c.fail(p + "dsp", "expected the name of a .dsp file beside the patch (\"my-synth.dsp\")")
    dsp = (c.path.parent / name).resolve()
    if not dsp.is_file():
        c.fail(p + "dsp", f"Faust file not found: {dsp}")
    try:
        source = dsp.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        c.fail(p + "dsp", f"cannot read {dsp.name}: {err}")
    check_dsp(dsp)
    sliders = dsp_sliders(source)
    missing = [v for v in ("freq", "gate") if v not in {s.label for s in sliders}]
    if missing:
        c.fail(p + "dsp", f"{dsp.name} is not a polyphonic instrument: it has no {' or '.join(missing)} control "
                          "(the MIDI convention: freq, gain and gate per voice)")
    by_label = {s.label: s for s in sliders if s.label not in VOICE_CONTROLS}

    def param(label, field_name):
        if label not in by_label:
            c.fail(field_name, unknown_name(f"parameter of {dsp.name}", label, by_label))
        return by_label[label]

    def in_range(slider, value, field_name):
        if not slider.lo <= value <= slider.hi:
            c.fail(field_name, f"{value!r} out of the slider's range {slider.lo:g}..{slider.hi:g}")
        return value

    params_table = table.get("params", {})
    if not isinstance(params_table, dict):
        c.fail(p + "params", "expected a table of slider label = value")
    params = []
    for label, value in params_table.items():
        slider = param(label, f"{p}params.{label}")
        params.append((label, in_range(slider, c.number(params_table, label, p + "params."), f"{p}params.{label}")))

    def bounds(label, field_name):
        slider = param(label, field_name)
        return slider.label, slider.lo, slider.hi

    automation = c.automation(table, p, bounds)
    return FaustSound(
        dsp=dsp, voices=c.number(table, "voices", p, default=dsp_voices(source), lo=1, hi=64, integer=True),
        params=tuple(params), automation=automation, sliders=sliders, **c.shaping(table, p, roles))
