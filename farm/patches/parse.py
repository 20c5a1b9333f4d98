"""Checking a patch TOML field by field: every mistake is one FarmError naming the file and the field."""
from __future__ import annotations

import inspect
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from farm.errors import FarmError, unknown_name
from farm.render import SAMPLE_RATES
from farm.patches.model import (CC_SHAPES, DRUM_BANK, EFFECT_PLUGINS, EFFECT_RANGES, INTERPOLATIONS, NYQUIST_HZ,
                                 ROLES, Automation, CCAutomation, Chorus, Effect, EmbeddedSound, Patch, Reverb)
from farm.patches.soundfont import soundfont_presets


# -- validation -------------------------------------------------------------------------------
_TOP_KEYS = {"name", "roles", "description", "target_lufs", "tail_s", "embedded", "faust", "plugin", "effects",
             "reaper"}
_SOUND_TABLES = ("embedded", "faust", "plugin")
_EMBEDDED_KEYS = {"soundfont", "bank", "program", "gain", "interpolation", "polyphony", "reverb",
                  "chorus", "octave", "velocity_curve", "note_length", "cc"}
_REAPER_KEYS = {"fxchain", "instrument"}


class _Checker:
    """Typed reads from one TOML table, each failure naming ``file`` and the dotted field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field_name: str, message: str):
        raise FarmError(message, file=self.path, field=field_name)

    def unknown(self, table: dict, allowed: set[str], prefix: str):
        for key in table:
            if key not in allowed:
                self.fail(f"{prefix}{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def number(self, table: dict, key: str, prefix: str, default=None, lo=None, hi=None,
               integer=False):
        name = f"{prefix}{key}"
        if key not in table:
            if default is None:
                self.fail(name, "missing")
            return default
        value = table[key]
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            self.fail(name, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if not math.isfinite(value):  # NaN passes every range check, so it is refused first
            self.fail(name, f"{value!r} is not a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(name, f"{value!r} out of range {lo}..{hi}")
        return int(value) if integer else float(value)


    def automation(self, table: dict, prefix: str, bounds) -> tuple[Automation, ...]:
        """``[[<kind>.automation]]``: each sweep's parameter and range checked. ``bounds(name,
        field)`` returns the parameter's ``(name, lo, hi)`` or fails naming ``field``."""
        items = table.get("automation", [])
        if not isinstance(items, list):
            self.fail(prefix + "automation", f"expected an array of tables ([[{prefix}automation]])")
        sweeps = []
        for i, item in enumerate(items):
            q = f"{prefix}automation[{i}]."
            if not isinstance(item, dict):
                self.fail(q[:-1], "expected a table")
            self.unknown(item, {"param", "from", "to", "shape", "cycles"}, q)
            if not isinstance(item.get("param"), str):
                self.fail(q + "param", "expected a parameter name")
            name, lo, hi = bounds(item["param"], q + "param")
            shape = item.get("shape", "triangle")
            if shape not in CC_SHAPES:
                self.fail(q + "shape", f"{shape!r} is not one of {', '.join(CC_SHAPES)}")
            ends = [self.number(item, key, q) for key in ("from", "to")]
            for key, value in zip(("from", "to"), ends):
                if not lo <= value <= hi:
                    self.fail(q + key, f"{value!r} out of the parameter's range {lo:g}..{hi:g}")
            sweeps.append(Automation(name, ends[0], ends[1], shape,
                                     self.number(item, "cycles", q, default=1, lo=1, hi=64, integer=True)))
        names = [s.param for s in sweeps]
        if len(set(names)) != len(names):
            self.fail(prefix + "automation", "a parameter is swept twice")
        return tuple(sweeps)

    def shaping(self, table: dict, prefix: str, roles) -> dict:
        """The MIDI transforms every sound kind takes (octave, velocity curve, note length)."""
        return {"drums": "drums" in roles,
                "octave": self.number(table, "octave", prefix, default=0, lo=-4, hi=4, integer=True),
                "velocity_curve": self.number(table, "velocity_curve", prefix, default=1.0, lo=0.1, hi=4.0),
                "note_length": self.number(table, "note_length", prefix, default=1.0, lo=0.05, hi=4.0)}


def _parse_patch(data: dict, path: Path) -> Patch:
    c = _Checker(path)
    c.unknown(data, _TOP_KEYS, "")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        c.fail("name", "missing or not a string")
    if name != path.stem:
        c.fail("name", f"{name!r} must match the file name {path.stem!r}")
    roles = data.get("roles")
    if not isinstance(roles, list) or not roles:
        c.fail("roles", f"expected a non-empty list of roles ({', '.join(ROLES)})")
    for i, role in enumerate(roles):
        if role not in ROLES:
            c.fail(f"roles[{i}]", unknown_name("role", role, ROLES))
        if role in roles[:i]:
            c.fail("roles", f"{role!r} is listed twice (roles[{roles.index(role)}] and roles[{i}])")
    description = data.get("description", "")
    if not isinstance(description, str):
        c.fail("description", "expected a string")
    target_lufs = c.number(data, "target_lufs", "", lo=-40.0, hi=-6.0)
    tail_s = c.number(data, "tail_s", "", default=2.0, lo=0.0, hi=30.0)

    sounds = [k for k in _SOUND_TABLES if k in data]
    if len(sounds) != 1:
        c.fail(sounds[1] if len(sounds) > 1 else "embedded",
               "a patch has exactly one sound: an [embedded] SoundFont preset, a [faust] instrument or a "
               "hosted [plugin]" + (f" (this one has {' and '.join(f'[{s}]' for s in sounds)})" if sounds else ""))
    [kind] = sounds
    if not isinstance(data[kind], dict):
        c.fail(kind, f"expected a [{kind}] table")
    embedded = faust = plugin = None
    if kind == "embedded":
        embedded = _parse_embedded(data["embedded"], c, roles)
    elif kind == "faust":
        from farm.patches.faust import parse_faust

        faust = parse_faust(data["faust"], c, roles)
    else:
        from farm.patches.plugin import parse_plugin

        plugin = parse_plugin(data["plugin"], c, roles)

    effects_data = data.get("effects", [])
    if not isinstance(effects_data, list):
        c.fail("effects", "expected an array of tables ([[effects]])")
    effects = tuple(_parse_effect(e, i, c) for i, e in enumerate(effects_data))

    reaper = data.get("reaper", {})
    if not isinstance(reaper, dict):
        c.fail("reaper", "expected a table")
    c.unknown(reaper, _REAPER_KEYS, "reaper.")
    fxchain = None
    if "fxchain" in reaper:
        if not isinstance(reaper["fxchain"], str) or not reaper["fxchain"].endswith(".RfxChain"):
            c.fail("reaper.fxchain", "expected a file name ending in .RfxChain")
        fxchain = (path.parent / reaper["fxchain"]).resolve()
    if "instrument" in reaper and not isinstance(reaper["instrument"], str):
        c.fail("reaper.instrument", "expected a string")

    return Patch(name=name, roles=tuple(roles), embedded=embedded, effects=effects,
                 target_lufs=target_lufs, tail_s=tail_s, reaper_fxchain=fxchain, reaper=dict(reaper),
                 path=path, description=description, faust=faust, plugin=plugin)


def _parse_embedded(e: dict, c: _Checker, roles: Sequence[str]) -> EmbeddedSound:
    p = "embedded."
    c.unknown(e, _EMBEDDED_KEYS, p)
    sf_text = e.get("soundfont", "default")
    if not isinstance(sf_text, str):
        c.fail(p + "soundfont", "expected \"default\" or a path")
    if sf_text == "default":
        from farm.patches.load import default_soundfont

        soundfont = default_soundfont()
    else:
        soundfont = (c.path.parent / os.path.expanduser(sf_text)).resolve()
        if soundfont.is_dir():
            c.fail(p + "soundfont", f"{soundfont} is a folder, not a SoundFont file")
        if not soundfont.is_file():
            c.fail(p + "soundfont", f"SoundFont not found: {soundfont}")
    drums = "drums" in roles
    bank = c.number(e, "bank", p, default=DRUM_BANK if drums else 0, lo=0, hi=128, integer=True)
    program = c.number(e, "program", p, lo=0, hi=127, integer=True)
    try:
        presets = soundfont_presets(soundfont)
    except FarmError as err:
        c.fail(p + "soundfont", err.message)
    if (bank, program) not in presets:
        c.fail(p + "program", f"bank {bank} program {program} is not in {soundfont.name}")
    interpolation = e.get("interpolation", "4th")
    if interpolation not in INTERPOLATIONS:
        c.fail(p + "interpolation", f"{interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")

    reverb = _parse_fx_table(e, "reverb", Reverb, c, {
        "room_size": (0.0, 1.0), "damping": (0.0, 1.0), "width": (0.0, 100.0), "level": (0.0, 1.0),
        "send": (0, 127)})
    chorus = _parse_fx_table(e, "chorus", Chorus, c, {
        "voices": (0, 99), "level": (0.0, 10.0), "speed_hz": (0.1, 5.0), "depth_ms": (0.0, 21.0),
        "send": (0, 127)})

    cc_data = e.get("cc", [])
    if not isinstance(cc_data, list):
        c.fail(p + "cc", "expected an array of tables ([[embedded.cc]])")
    ccs = []
    for i, item in enumerate(cc_data):
        q = f"{p}cc[{i}]."
        if not isinstance(item, dict):
            c.fail(q[:-1], "expected a table")
        c.unknown(item, {"number", "from", "to", "shape", "cycles"}, q)
        shape = item.get("shape", "triangle")
        if shape not in CC_SHAPES:
            c.fail(q + "shape", f"{shape!r} is not one of {', '.join(CC_SHAPES)}")
        ccs.append(CCAutomation(
            number=c.number(item, "number", q, lo=0, hi=119, integer=True),
            start=c.number(item, "from", q, lo=0, hi=127, integer=True),
            end=c.number(item, "to", q, lo=0, hi=127, integer=True),
            shape=shape,
            cycles=c.number(item, "cycles", q, default=1, lo=1, hi=64, integer=True)))

    return EmbeddedSound(
        soundfont=soundfont, bank=bank, program=program,
        gain=c.number(e, "gain", p, default=0.5, lo=0.0, hi=10.0),
        interpolation=interpolation,
        polyphony=c.number(e, "polyphony", p, default=128, lo=1, hi=1024, integer=True),
        reverb=reverb, chorus=chorus, cc=tuple(ccs), **c.shaping(e, p, roles))


def _parse_fx_table(e: dict, key: str, cls, c: _Checker, ranges: dict):
    """``reverb = false`` (off), ``true`` (defaults) or a table of ``ranges``' fields."""
    name = f"embedded.{key}"
    value = e.get(key, False)
    if value is False:
        return None
    if value is True:
        return cls()
    if not isinstance(value, dict):
        c.fail(name, "expected false, true or a table")
    c.unknown(value, set(ranges), name + ".")
    kwargs = {}
    for field_name, (lo, hi) in ranges.items():
        if field_name in value:
            kwargs[field_name] = c.number(value, field_name, name + ".", lo=lo, hi=hi,
                                          integer=isinstance(lo, int) and isinstance(hi, int))
    return cls(**kwargs)


def _parse_effect(item: Any, i: int, c: _Checker) -> Effect:
    p = f"effects[{i}]"
    if not isinstance(item, dict):
        c.fail(p, "expected a table")
    if "plugin" not in item:
        c.fail(f"{p}.plugin", f"missing: every [[effects]] table names its plugin "
                              f"(one of {', '.join(EFFECT_PLUGINS)})")
    plugin = item.get("plugin")
    if plugin not in EFFECT_PLUGINS:
        c.fail(f"{p}.plugin", unknown_name("effect", plugin, EFFECT_PLUGINS))
    params = {k: v for k, v in item.items() if k != "plugin"}
    allowed = effect_parameters(plugin)
    import pedalboard

    instance = getattr(pedalboard, plugin)()
    for key, value in params.items():
        if key not in allowed:
            c.fail(f"{p}.{key}", f"{plugin} has no parameter {key!r} "
                                 f"(known: {', '.join(allowed) or 'none'})")
        if isinstance(value, float) and not math.isfinite(value):
            c.fail(f"{p}.{key}", f"{value!r} is not a finite number")
        if key in EFFECT_RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi, open_ = EFFECT_RANGES[key]
            if (value <= lo or value >= hi) if open_ else (value < lo or value > hi):
                c.fail(f"{p}.{key}", f"{value!r} out of range: {_describe_range(key, lo, hi, open_)}")
        try:
            setattr(instance, key, _coerce_param(instance, key, value))
        except (TypeError, ValueError, KeyError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            c.fail(f"{p}.{key}", f"bad value {value!r}: {message}")
    return Effect(plugin=plugin, params=params)


def _describe_range(key: str, lo: float, hi: float, open_: bool) -> str:
    unit = next((u for suffix, u in (("_hz", " Hz"), ("_ms", " ms"), ("_db", " dB")) if key.endswith(suffix)), "")
    if open_:
        why = f" (the Nyquist frequency at {min(SAMPLE_RATES)} Hz)" if hi == NYQUIST_HZ else ""
        return f"must be above {lo:g}{unit} and below {hi:g}{unit}{why}"
    return f"must be {lo:g}..{hi:g}{unit}"


@lru_cache(maxsize=None)
def effect_parameters(plugin: str) -> tuple[str, ...]:
    """The settable parameters of a pedalboard plugin class, by attribute name."""
    import pedalboard

    cls = getattr(pedalboard, plugin)
    return tuple(k for k, v in inspect.getmembers(cls)
                 if isinstance(v, property) and not k.startswith("_") and v.fset is not None
                 and k not in ("is_effect", "is_instrument"))


def _coerce_param(instance, key: str, value):
    """TOML values to pedalboard's: enum members by name (``mode = "LPF24"``), bools as is."""
    current = getattr(instance, key)
    members = getattr(type(current), "__members__", None)
    if members is not None:
        if not isinstance(value, str) or value not in members:
            raise ValueError(f"expected one of {', '.join(members)}")
        return members[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    return type(current)(value) if isinstance(current, (int, float)) and not isinstance(current, bool) \
        else value


