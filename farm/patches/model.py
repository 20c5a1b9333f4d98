"""What a patch is: its roles, embedded sound, effects and REAPER table, as small data classes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from farm.model import PART_ROLES
from farm.render import SAMPLE_RATES


ROLES = ("chords", "pad", "keys", "bass", "lead", "arp", "drums")
# What makes a patch's sound: a SoundFont preset played by FluidSynth ([embedded]), a Faust
# instrument compiled by DawDreamer ([faust]), or a hosted VST2/VST3/LV2 instrument ([plugin]).
PATCH_KINDS = ("soundfont", "faust", "plugin")
INTERPOLATIONS = {"none": 0, "linear": 1, "4th": 4, "7th": 7}
CC_SHAPES = ("ramp", "triangle", "sine")
DRUM_BANK = 128

PATCHES_DIR = Path(os.environ.get("FARM_PATCHES_DIR") or Path(__file__).resolve().parent.parent.parent / "patches")

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
class Automation:
    """An instrument parameter swept between ``start`` and ``end`` (its own units), ``cycles``
    times per loop, with the shapes of :class:`CCAutomation` (``triangle`` and ``sine`` join
    seamlessly at the loop point)."""

    param: str
    start: float
    end: float
    shape: str = "triangle"
    cycles: int = 1

    def values(self, samples: int, loop_samples: int) -> np.ndarray:
        """float32 value at every sample of a render ``samples`` long, periodic over the loop
        (read-only: one array per sweep and length, made once per process)."""
        return _automation_values(self, samples, loop_samples)

    def _values(self, samples: int, loop_samples: int) -> np.ndarray:
        p = (np.arange(samples, dtype=np.float64) % loop_samples) / loop_samples * self.cycles % 1.0
        if self.shape == "ramp":
            x = p
        elif self.shape == "triangle":
            x = 1.0 - np.abs(2.0 * p - 1.0)
        else:
            x = 0.5 - 0.5 * np.cos(2.0 * np.pi * p)
        return (self.start + (self.end - self.start) * x).astype(np.float32)


@lru_cache(maxsize=32)
def _automation_values(sweep: Automation, samples: int, loop_samples: int) -> np.ndarray:
    values = sweep._values(samples, loop_samples)  # a sweep over every sample of a loop: not made per loop
    values.flags.writeable = False
    return values


@dataclass(frozen=True)
class Slider:
    """One control of an instrument: its label, default and range."""

    label: str
    init: float
    lo: float
    hi: float


@dataclass(frozen=True, kw_only=True)
class Shaping:
    """The MIDI transforms every kind of sound takes before playing: ``octave`` (12 semitones per
    step), ``velocity_curve`` (an exponent: ``out = 127 * (in/127) ** curve``), ``note_length``
    (a factor on every note's duration), ``cc`` (controllers swept over the loop: SoundFonts only;
    a synthesizer's sliders are swept by its ``automation``)."""

    drums: bool = False
    octave: int = 0
    velocity_curve: float = 1.0
    note_length: float = 1.0
    cc: tuple[CCAutomation, ...] = ()

    @property
    def is_drum_kit(self) -> bool:
        return self.drums


@dataclass(frozen=True)
class FaustSound(Shaping):
    """A polyphonic Faust instrument (``freq``/``gain``/``gate`` per voice) from a ``.dsp`` file,
    compiled in-process by DawDreamer; ``params`` set its sliders by label, ``automation`` sweeps
    them over the loop. The MIDI transforms are those of :class:`EmbeddedSound`."""

    dsp: Path
    voices: int = 8
    params: tuple[tuple[str, float], ...] = ()
    automation: tuple[Automation, ...] = ()
    sliders: tuple[Slider, ...] = ()


@dataclass(frozen=True)
class PluginSound(Shaping):
    """A hosted instrument plugin (VST2 ``.so``, VST3 or an LV2 URI) loaded by DawDreamer, with
    its preset (kept beside the patch) and parameters set by name: ``params`` holds the preset's
    values, then the patch's own, in the order they are set."""

    plugin: str  # a path to a .so/.vst3, or an LV2 URI
    preset: Path | None = None
    params: tuple[tuple[str, float], ...] = ()
    from_preset: int = 0  # how many of ``params`` (the first) come from the preset
    automation: tuple[Automation, ...] = ()


@dataclass(frozen=True)
class EmbeddedSound(Shaping):
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

    @property
    def is_drum_kit(self) -> bool:  # a General MIDI drum kit is a program of bank 128
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
            from farm.patches.parse import _coerce_param

            setattr(plugin, key, _coerce_param(plugin, key, value))
        return plugin


@dataclass(frozen=True)
class Patch:
    """A synth patch as loaded from ``path`` (see the module docstring for the TOML)."""

    name: str
    roles: tuple[str, ...]
    embedded: EmbeddedSound | None
    effects: tuple[Effect, ...]
    target_lufs: float
    tail_s: float
    reaper_fxchain: Path | None
    reaper: dict
    path: Path
    description: str = ""
    digest: str = field(default="", repr=False)  # see content_hash
    faust: FaustSound | None = None
    plugin: PluginSound | None = None

    @property
    def kind(self) -> str:
        """``soundfont``, ``faust`` or ``plugin``: what makes the sound (``PATCH_KINDS``)."""
        return "faust" if self.faust else "plugin" if self.plugin else "soundfont"

    @property
    def sound(self) -> EmbeddedSound | FaustSound | PluginSound:
        """The patch's sound, whatever its kind: it carries the MIDI transforms every kind shares
        (``octave``, ``velocity_curve``, ``note_length``, ``cc``, ``is_drum_kit``)."""
        return self.faust or self.plugin or self.embedded

    @property
    def sources(self) -> tuple[Path, ...]:
        """The files beside the TOML that make the sound (a ``.dsp``, a plugin preset)."""
        if self.faust:
            return (self.faust.dsp,)
        if self.plugin and self.plugin.preset:
            return (self.plugin.preset,)
        return ()

    def __hash__(self) -> int:
        return hash((self.name, self.content_hash))

    @property
    def content_hash(self) -> str:
        """sha256 of the TOML bytes, plus the ``.RfxChain`` bytes when that file exists and the
        bytes of its ``sources``, as they were when the patch was loaded (loop ids depend on it)."""
        from farm.patches.load import patch_digest

        return self.digest or patch_digest(self.path, self.reaper_fxchain, self.sources)

    def fits(self, part_name: str) -> bool:
        """True when one of this patch's roles may play ``part_name`` (see ``PART_ROLES``)."""
        return bool(set(self.roles) & set(PART_ROLES.get(part_name, ())))


