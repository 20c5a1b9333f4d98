"""Synth patches: how a part sounds, as a TOML file in ``patches/``.

A patch names the roles it can play (``chords``, ``pad``, ``keys``, ``bass``, ``lead``, ``arp``,
``drums``), the embedded sound (a General MIDI SoundFont program played by FluidSynth, with MIDI
transforms), an ordered chain of pedalboard effects, a loudness target and the tail to render
past the loop end. An optional ``[reaper]`` table names the ``.RfxChain`` the REAPER backend uses.

Example::

    name = "warm-rhodes"
    roles = ["keys", "chords"]
    target_lufs = -16.0          # integrated loudness, LUFS (ITU-R BS.1770)
    tail_s = 2.5                 # seconds rendered past the loop end, folded into its start

    [embedded]
    soundfont = "default"        # the General MIDI SoundFont, or a path (relative to this file)
    program = 4                  # 0-127; drum kits are programs of bank 128
    velocity_curve = 0.8         # exponent: out = 127 * (in / 127) ** curve
    reverb = { room_size = 0.4, level = 0.5 }

    [[embedded.cc]]              # a controller swept once per loop (filter sweep)
    number = 74
    from = 40
    to = 100
    shape = "triangle"

    [[effects]]
    plugin = "Reverb"
    room_size = 0.4

    [reaper]
    fxchain = "warm-rhodes.RfxChain"

``reaper_fxchain`` keeps the path the ``[reaper]`` table names even when the file is not there yet:
embedded rendering never reads it, and the REAPER backend says clearly when it is missing.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
import struct
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from farm.errors import FarmError, closest, unknown_name
from farm.files import read_toml
from farm.model import PART_ROLES
from farm.quiet import import_quietly
from farm.render import SAMPLE_RATES

ROLES = ("chords", "pad", "keys", "bass", "lead", "arp", "drums")
INTERPOLATIONS = {"none": 0, "linear": 1, "4th": 4, "7th": 7}
CC_SHAPES = ("ramp", "triangle", "sine")
DRUM_BANK = 128

PATCHES_DIR = Path(os.environ.get("FARM_PATCHES_DIR") or Path(__file__).resolve().parent.parent / "patches")

# General MIDI SoundFonts, best first; pretty_midi's small TimGM6mb is the last resort.
DEFAULT_SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
)

# pedalboard plugins a patch may use: built in, deterministic, need no external files.
EFFECT_PLUGINS = (
    "Bitcrush", "Chorus", "Clipping", "Compressor", "Delay", "Distortion", "Gain",
    "HighShelfFilter", "HighpassFilter", "Invert", "LadderFilter", "Limiter", "LowShelfFilter",
    "LowpassFilter", "NoiseGate", "PeakFilter", "Phaser", "Reverb",
)

# Effect parameters pedalboard accepts but that make no sense (or render NaN): frequencies must lie
# between 0 Hz and the Nyquist frequency of the lowest sample rate the farm renders at; times are
# not negative; a feedback loop stays within -1..1; a gate's ratio is at least 1; levels stay
# within a range a patch can mean. ``(lo, hi, open)``: ``open`` excludes both ends.
NYQUIST_HZ = min(SAMPLE_RATES) / 2
_FREQUENCY = (0.0, NYQUIST_HZ, True)
_TIME_MS = (0.0, 10_000.0, False)
_LEVEL_DB = (-60.0, 60.0, False)
_THRESHOLD_DB = (-100.0, 0.0, False)
_UNIT = (0.0, 1.0, False)
EFFECT_RANGES: dict[str, tuple[float, float, bool]] = {
    "cutoff_frequency_hz": _FREQUENCY,    # the five biquad filters
    "cutoff_hz": _FREQUENCY,              # LadderFilter
    "centre_frequency_hz": _FREQUENCY,    # Phaser
    "attack_ms": _TIME_MS, "release_ms": _TIME_MS,
    "centre_delay_ms": (0.0, 100.0, False),  # Chorus: JUCE's delay line holds 100 ms
    "rate_hz": (0.0, 100.0, False),       # Chorus, Phaser LFOs
    "gain_db": _LEVEL_DB, "drive_db": _LEVEL_DB,
    "threshold_db": _THRESHOLD_DB,
    "feedback": (-1.0, 1.0, False),       # Chorus, Phaser (Delay's own check keeps it 0..1)
    "depth": _UNIT, "mix": _UNIT,
    "ratio": (1.0, 100.0, False),         # Compressor, NoiseGate
}


# -- dataclasses ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reverb:
    """FluidSynth's built-in reverb (all 0-1 except ``width`` 0-100); ``send`` is CC91, 0-127."""

    room_size: float = 0.2
    damping: float = 0.0
    width: float = 0.5
    level: float = 0.9
    send: int = 40


@dataclass(frozen=True)
class Chorus:
    """FluidSynth's built-in chorus: ``voices`` 0-99, ``level`` 0-10, ``speed_hz``, ``depth_ms``;
    ``send`` is CC93, 0-127."""

    voices: int = 3
    level: float = 2.0
    speed_hz: float = 0.3
    depth_ms: float = 8.0
    send: int = 40


@dataclass(frozen=True)
class CCAutomation:
    """A MIDI controller swept between ``start`` and ``end`` (0-127), ``cycles`` times per loop.

    ``ramp`` rises from ``start`` to ``end`` and jumps back at each cycle; ``triangle`` and ``sine``
    go there and back, so they join seamlessly at the loop point. CC74 is brightness (filter
    cutoff), CC1 the mod wheel (vibrato), CC11 expression.
    """

    number: int
    start: int
    end: int
    shape: str = "triangle"
    cycles: int = 1

    def value(self, phase: float) -> int:
        """Controller value at ``phase`` (0-1) through the loop."""
        import math

        p = (phase * self.cycles) % 1.0
        if self.shape == "ramp":
            x = p
        elif self.shape == "triangle":
            x = 1.0 - abs(2.0 * p - 1.0)
        else:  # sine, starting at ``start``
            x = 0.5 - 0.5 * math.cos(2.0 * math.pi * p)
        return int(round(self.start + (self.end - self.start) * x))


@dataclass(frozen=True)
class EmbeddedSound:
    """The FluidSynth side of a patch, and the MIDI transforms applied before playing.

    ``octave`` shifts every note by 12 semitones per step; ``velocity_curve`` is an exponent
    (``out = 127 * (in/127) ** curve``: below 1 lifts soft notes, above 1 deepens dynamics);
    ``note_length`` scales every note's duration (0.5 staccato, 1.5 legato).
    """

    soundfont: Path
    bank: int = 0
    program: int = 0
    gain: float = 0.5
    interpolation: str = "4th"
    polyphony: int = 128
    reverb: Reverb | None = None
    chorus: Chorus | None = None
    octave: int = 0
    velocity_curve: float = 1.0
    note_length: float = 1.0
    cc: tuple[CCAutomation, ...] = ()

    @property
    def is_drum_kit(self) -> bool:
        return self.bank == DRUM_BANK


@dataclass(frozen=True)
class Effect:
    """One pedalboard plugin by class name, with its parameters (pedalboard's attribute names)."""

    plugin: str
    params: dict = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.plugin, tuple(sorted((k, str(v)) for k, v in self.params.items()))))

    def build(self):
        """A fresh pedalboard plugin with these parameters."""
        import pedalboard

        plugin = getattr(pedalboard, self.plugin)()
        for key, value in self.params.items():
            setattr(plugin, key, _coerce_param(plugin, key, value))
        return plugin


@dataclass(frozen=True)
class Patch:
    """A synth patch as loaded from ``path`` (see the module docstring for the TOML)."""

    name: str
    roles: tuple[str, ...]
    embedded: EmbeddedSound
    effects: tuple[Effect, ...]
    target_lufs: float
    tail_s: float
    reaper_fxchain: Path | None
    reaper: dict
    path: Path
    description: str = ""
    digest: str = field(default="", repr=False)  # see content_hash

    def __hash__(self) -> int:
        return hash((self.name, self.content_hash))

    @property
    def content_hash(self) -> str:
        """sha256 of the TOML bytes, plus the ``.RfxChain`` bytes when that file exists, as they
        were when the patch was loaded (loop ids depend on it)."""
        return self.digest or patch_digest(self.path, self.reaper_fxchain)

    def fits(self, part_name: str) -> bool:
        """True when one of this patch's roles may play ``part_name`` (see ``PART_ROLES``)."""
        return bool(set(self.roles) & set(PART_ROLES.get(part_name, ())))


# -- loading ----------------------------------------------------------------------------------
def default_soundfont() -> Path:
    """The General MIDI SoundFont ``soundfont = "default"`` means."""
    for candidate in DEFAULT_SOUNDFONTS:
        if candidate.is_file():
            return candidate.resolve()
    pretty_midi = import_quietly("pretty_midi")

    fallback = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if fallback.is_file():
        return fallback
    raise FarmError("no General MIDI SoundFont found; apt-get install fluid-soundfont-gm",
                    field="soundfont")


def patch_path(name_or_path: str | Path, patches_dir: str | Path | None = None) -> Path:
    """``"warm-rhodes"`` -> ``patches/warm-rhodes.toml``; a path to a ``.toml`` is kept as is."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return Path(text)
    return Path(patches_dir or PATCHES_DIR) / f"{text}.toml"


def load_patch(name_or_path: str | Path, patches_dir: str | Path | None = None) -> Patch:
    """Read and validate one patch; every problem is a FarmError naming the file and field."""
    path = patch_path(name_or_path, patches_dir)
    looks_like_path = str(name_or_path).endswith(".toml") or os.sep in str(name_or_path)
    if path.is_dir():
        raise FarmError("is a folder, not a patch file (a .toml)", file=path.absolute(), field="name")
    if not path.is_file() and looks_like_path:
        raise FarmError("patch file not found", file=path.absolute(), field="name")
    if not path.is_file():
        known = [p.stem for p in sorted(Path(patches_dir or PATCHES_DIR).glob("*.toml"))]
        guess = closest(str(name_or_path), known)
        raise FarmError(f"no such patch{f'; did you mean {guess!r}?' if guess else ''} (known: {', '.join(known) or 'none'})",
                        file=path, field="name")
    patch = _load_patch_file(path.resolve(), path.stat().st_mtime_ns, path.stat().st_size)
    return replace(patch, digest=patch_digest(patch.path, patch.reaper_fxchain))


def patch_digest(toml_path: Path, fxchain: Path | None) -> str:
    """sha256 of a patch's TOML bytes, then its ``.RfxChain`` bytes if that file exists."""
    h = hashlib.sha256(Path(toml_path).read_bytes())
    if fxchain is not None and Path(fxchain).is_file():
        h.update(b"\0RfxChain\0")
        h.update(Path(fxchain).read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=256)
def _load_patch_file(path: Path, _mtime_ns: int, _size: int) -> Patch:
    return _parse_patch(read_toml(path), path)


def list_patches(patches_dir: str | Path | None = None) -> list[Patch]:
    """Every patch in ``patches_dir`` (default ``PATCHES_DIR``), sorted by name."""
    directory = Path(patches_dir or PATCHES_DIR)
    return [load_patch(p) for p in sorted(directory.glob("*.toml"))]


def scan_patches(patches_dir: str | Path | None = None) -> tuple[list[Patch], list[FarmError]]:
    """Every patch in ``patches_dir`` that loads, and the error of each one that does not (one
    broken file does not hide the others), both sorted by file name."""
    directory = Path(patches_dir or PATCHES_DIR)
    good, broken = [], []
    for path in sorted(directory.glob("*.toml")):
        try:
            good.append(load_patch(path))
        except FarmError as err:
            broken.append(err)
    return good, broken


def patches_for_part(part_name: str, patches: Iterable[Patch] | None = None) -> list[Patch]:
    """The patches whose roles may play ``part_name`` (``PART_ROLES``), in the given order (by
    default every patch that loads)."""
    if patches is None:
        patches = scan_patches()[0]
    return [p for p in patches if p.fits(part_name)]


def build_effects(patch: Patch):
    """A fresh ``pedalboard.Pedalboard`` for the patch's effect chain, in order."""
    import pedalboard

    return pedalboard.Pedalboard([effect.build() for effect in patch.effects])


# -- validation -------------------------------------------------------------------------------
_TOP_KEYS = {"name", "roles", "description", "target_lufs", "tail_s", "embedded", "effects", "reaper"}
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

    if not isinstance(data.get("embedded"), dict):
        c.fail("embedded", "missing [embedded] table")
    embedded = _parse_embedded(data["embedded"], c, roles)

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
                 path=path, description=description)


def _parse_embedded(e: dict, c: _Checker, roles: Sequence[str]) -> EmbeddedSound:
    p = "embedded."
    c.unknown(e, _EMBEDDED_KEYS, p)
    sf_text = e.get("soundfont", "default")
    if not isinstance(sf_text, str):
        c.fail(p + "soundfont", "expected \"default\" or a path")
    if sf_text == "default":
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
        reverb=reverb, chorus=chorus,
        octave=c.number(e, "octave", p, default=0, lo=-4, hi=4, integer=True),
        velocity_curve=c.number(e, "velocity_curve", p, default=1.0, lo=0.1, hi=4.0),
        note_length=c.number(e, "note_length", p, default=1.0, lo=0.05, hi=4.0),
        cc=tuple(ccs))


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


# -- SoundFont presets --------------------------------------------------------------------------
def soundfont_presets(path: str | Path) -> dict[tuple[int, int], str]:
    """``{(bank, program): preset name}`` read from an SF2 file's ``phdr`` chunk (no synth needed)."""
    p = Path(path)
    st = p.stat()
    return _soundfont_presets(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _soundfont_presets(path: str, _size: int, _mtime: int) -> dict[tuple[int, int], str]:
    def bad(msg):
        return FarmError(f"not a readable SoundFont: {msg}", file=path)

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise bad("missing RIFF sfbk header")
        end = 8 + struct.unpack("<I", head[4:8])[0]
        pos = 12
        while pos + 8 <= end:
            f.seek(pos)
            chunk = f.read(12)
            if len(chunk) < 8:
                break
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if cid == b"LIST" and chunk[8:12] == b"pdta":
                sub, sub_end = pos + 12, pos + 8 + size
                while sub + 8 <= sub_end:
                    f.seek(sub)
                    sid, ssize = f.read(4), struct.unpack("<I", f.read(4))[0]
                    if sid == b"phdr":
                        raw = f.read(ssize)
                        presets = {}
                        for i in range(0, len(raw) - 38, 38):  # the last record is the EOP marker
                            name, program, bank = struct.unpack("<20sHH", raw[i:i + 24])
                            presets[(bank, program)] = name.split(b"\0")[0].decode("latin-1").strip()
                        return presets
                    sub += 8 + ssize + (ssize & 1)
            pos += 8 + size + (size & 1)
    raise bad("no preset headers (pdta/phdr)")


# -- describing -------------------------------------------------------------------------------
def preset_name(patch: Patch) -> str:
    """The SoundFont's name for the patch's bank and program ("Rhodes EP")."""
    e = patch.embedded
    return soundfont_presets(e.soundfont).get((e.bank, e.program), "?")


def patch_summary(patch: Patch) -> dict[str, str]:
    """One row for ``farm patches``: name, roles, sound, effects, loudness target, tail."""
    return {
        "name": patch.name,
        "roles": ", ".join(patch.roles),
        "sound": preset_name(patch),
        "effects": " > ".join(e.plugin for e in patch.effects) or "-",
        "target LUFS": f"{patch.target_lufs:.1f}",
        "tail s": f"{patch.tail_s:.1f}",
    }


def patch_table(patches: Sequence[Patch]) -> str:
    """``patch_summary`` rows as an aligned text table (numbers right-aligned), header first."""
    rows = [patch_summary(p) for p in patches]
    if not rows:
        return ""
    columns = list(rows[0])
    numeric = {"target LUFS", "tail s"}
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}

    def line(cells: dict) -> str:
        return "  ".join(cells[c].rjust(widths[c]) if c in numeric else cells[c].ljust(widths[c])
                         for c in columns).rstrip()

    return "\n".join([line({c: c for c in columns})] + [line(r) for r in rows])


def describe_patch(patch: Patch) -> str:
    """A patch spelled out in full, as ``farm patches NAME`` prints it."""
    e = patch.embedded
    lines = [
        f"name:        {patch.name}",
        f"file:        {patch.path}",
        f"hash:        {patch.content_hash[:16]}",
        f"roles:       {', '.join(patch.roles)}",
    ]
    if patch.description:
        lines.append(f"description: {patch.description}")
    lines += [
        f"loudness:    {patch.target_lufs:g} LUFS integrated, true peak under -1 dBTP",
        f"tail:        {patch.tail_s:g} s rendered past the loop end and folded into its start",
        f"soundfont:   {e.soundfont} ({e.soundfont.stat().st_size} bytes)",
        f"preset:      bank {e.bank} program {e.program} \"{preset_name(patch)}\"",
        f"synth:       gain {e.gain:g}, {e.interpolation} interpolation, polyphony {e.polyphony}",
        f"reverb:      {_fields(e.reverb) if e.reverb else 'off'}",
        f"chorus:      {_fields(e.chorus) if e.chorus else 'off'}",
        f"midi:        octave {e.octave:+d}, velocity curve {e.velocity_curve:g}, "
        f"note length x{e.note_length:g}",
    ]
    for auto in e.cc:
        lines.append(f"automation:  CC{auto.number} {auto.start}->{auto.end} {auto.shape}, "
                     f"{auto.cycles} per loop")
    for i, effect in enumerate(patch.effects, 1):
        params = ", ".join(f"{k}={v}" for k, v in effect.params.items())
        lines.append(f"effect {i}:    {effect.plugin}({params})")
    if patch.reaper_fxchain is not None:
        state = "present" if patch.reaper_fxchain.is_file() else "not created yet"
        lines.append(f"reaper:      {patch.reaper_fxchain.name} ({state})"
                     + (f", instrument {patch.reaper['instrument']}" if "instrument" in patch.reaper else ""))
    return "\n".join(lines)


def _fields(obj) -> str:
    from dataclasses import asdict

    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in asdict(obj).items())
