"""The plugin patch kind: a ``[plugin]`` table naming a hosted instrument DawDreamer loads on Linux.

A VST2 ``.so`` or VST3 bundle by path, or an LV2 plugin by URI (DawDreamer finds LV2 plugins by
URI only), with an optional preset beside the patch and parameters set by name (DawDreamer's
normalised 0-1 values)::

    [plugin]
    path = "/usr/lib/vst/amsynth_vst.so"   # or: lv2 = "http://synthv1.sourceforge.net/lv2"
    package = "amsynth"                    # the Debian package that installs it (for the hint)
    preset = "amsynth-bass.preset.json"    # beside this TOML: every parameter, by name
    [plugin.params]                        # set after the preset: the knobs being tweaked
    filter_cutoff = 0.35

The preset is every parameter of the plugin by name (``{"plugin": ..., "parameters": {name:
value}}``, written by ``farm.render.plugin.save_preset``), not the plugin's own state blob:
DawDreamer's ``load_state`` made amsynth reopen its GTK editor (and exit without a display) and
crashed synthv1, while parameters set by name load the same sound every time and read as a diff.

A plugin that is not installed is a :class:`PluginMissing` error: a night over ``patches = "all"``
skips its patch with one line saying what to install.
"""
from __future__ import annotations

import os
from pathlib import Path

from farm.errors import FarmError
from farm.patches.model import PluginSound

PLUGIN_KEYS = {"path", "lv2", "package", "preset", "params", "automation", "octave", "velocity_curve", "note_length"}
PLUGIN_SUFFIXES = (".so", ".vst3")
LV2_DIRS = ("~/.lv2", "/usr/local/lib/lv2", "/usr/lib/lv2", "/usr/lib/x86_64-linux-gnu/lv2")


class PluginMissing(FarmError):
    """The instrument a plugin patch names is not installed on this machine."""


def lv2_installed(uri: str) -> bool:
    """True when a bundle on the LV2 path (``$LV2_PATH`` or the usual folders) declares ``uri``."""
    dirs = os.environ.get("LV2_PATH", "").split(":") if os.environ.get("LV2_PATH") else list(LV2_DIRS)
    needle = f"<{uri}>".encode()
    for d in dirs:
        for manifest in Path(d).expanduser().glob("*.lv2/manifest.ttl"):
            try:
                if needle in manifest.read_bytes():
                    return True
            except OSError:
                continue
    return False


def parse_plugin(table: dict, c, roles) -> PluginSound:
    """The ``[plugin]`` table of a patch, checked field by field (``c`` is the patch's checker)."""
    p = "plugin."
    c.unknown(table, PLUGIN_KEYS, p)
    package = table.get("package")
    if package is not None and (not isinstance(package, str) or not package.replace("-", "").isalnum()):
        c.fail(p + "package", "expected a Debian package name")
    hint = f" (on Debian: apt-get install {package})" if package else ""
    if ("path" in table) == ("lv2" in table):
        c.fail(p + "path", "name the instrument by path (a VST2 .so or a .vst3) or by lv2 URI, one of the two")
    if "path" in table:
        text = table["path"]
        if not isinstance(text, str) or not text.endswith(PLUGIN_SUFFIXES):
            c.fail(p + "path", "expected the path of a VST2 .so or a .vst3 bundle")
        location = Path(os.path.expanduser(text))
        if not location.is_absolute():
            location = (c.path.parent / location).resolve()
        if not location.exists():
            raise PluginMissing(f"plugin not installed: {location}{hint}", file=c.path, field=p + "path")
        plugin = str(location)
    else:
        uri = table["lv2"]
        if not isinstance(uri, str) or "://" not in uri:
            c.fail(p + "lv2", "expected an LV2 plugin URI (\"http://...\")")
        if not lv2_installed(uri):
            raise PluginMissing(f"LV2 plugin not installed: {uri}{hint}", file=c.path, field=p + "lv2")
        plugin = uri

    preset = None
    preset_params: tuple = ()
    if "preset" in table:
        name = table["preset"]
        if (not isinstance(name, str) or not name.endswith(".json") or "/" in name or "\\" in name
                or name.startswith(".")):
            c.fail(p + "preset", "expected the name of a .json preset beside the patch")
        preset = (c.path.parent / name).resolve()
        if not preset.is_file():
            c.fail(p + "preset", f"preset not found: {preset}")
        preset_params = read_preset(preset, c)

    params_table = table.get("params", {})
    if not isinstance(params_table, dict):
        c.fail(p + "params", "expected a table of parameter name = value (0-1)")
    params = preset_params + tuple((name, c.number(params_table, name, p + "params.", lo=0.0, hi=1.0))
                                   for name in params_table)
    automation = c.automation(table, p, lambda name, field_name: (name, 0.0, 1.0))  # names checked on load
    return PluginSound(
        plugin=plugin, preset=preset, params=params, from_preset=len(preset_params), automation=automation,
        **c.shaping(table, p, roles))


def read_preset(path: Path, c) -> tuple[tuple[str, float], ...]:
    """A preset's ``(name, value)`` pairs, each value a finite number 0-1."""
    import json
    import math

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FarmError(f"unreadable preset: {err}", file=path, field="parameters") from None
    values = data.get("parameters") if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise FarmError("expected an object with \"parameters\": {name: value}", file=path, field="parameters")
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= value <= 1.0:
            raise FarmError(f"{value!r} is not a number 0-1", file=path, field=f"parameters.{name}")
    return tuple((str(k), float(v)) for k, v in values.items())
