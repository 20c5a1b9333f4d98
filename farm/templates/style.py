"""A rule set in memory: its parts, grammar and rhythms as small data classes, and the rhythm grid
they share (``farm.templates.rules`` reads and checks the TOML into these)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from farm.model import Meter
from farm.theory import SpellingError, label_roman, readable_roman


#: The rule sets shipped with the project; ``FARM_TEMPLATES_DIR`` points elsewhere.
DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
TEMPLATES_DIR = Path(os.environ.get("FARM_TEMPLATES_DIR") or DEFAULT_TEMPLATES_DIR)

PART_NAMES = ("chords", "bass", "arp", "melody", "drums")
TEMPO_LIMITS = (20, 400)  # bpm a rule set may ask for
MAX_BARS = 32
_NOTE = re.compile(r"^[A-G](#|b)?$")


def templates_dir() -> Path:
    """The rule-set folder: ``$FARM_TEMPLATES_DIR`` if set (read now), else the project's ``templates/``."""
    return Path(os.environ.get("FARM_TEMPLATES_DIR") or DEFAULT_TEMPLATES_DIR)


# -- grid and rhythm ----------------------------------------------------------------------------

def steps_per_bar(meter: Meter) -> int:
    """Sixteenth-note steps in one bar (4/4 -> 16, 3/4 -> 12, 6/8 -> 12)."""
    return meter.numerator * 16 // meter.denominator


def beat_steps(meter: Meter) -> int:
    """Sixteenths per felt beat: a quarter in x/4, a dotted quarter in compound x/8 (6/8, 9/8, 12/8)."""
    if meter.denominator == 8 and meter.numerator % 3 == 0:
        return 6
    return 16 // meter.denominator


NAMED_RHYTHMS = ("whole", "halves", "beats", "eighths", "pushes")


def rhythm_onsets(rhythm: str, meter: Meter) -> tuple[int, ...]:
    """Onset steps (sixteenths from the bar start) of a named rhythm or an ``x.`` grid string."""
    s, b = steps_per_bar(meter), beat_steps(meter)
    if rhythm == "whole":
        return (0,)
    if rhythm == "halves":
        half = s // 2
        return (0, half) if half % b == 0 else (0,)
    if rhythm == "beats":
        return tuple(range(0, s, b))
    if rhythm == "eighths":
        return tuple(range(0, s, 2))
    if rhythm == "pushes":
        # the chord is struck again just before beats: 3+3+2 in x/4, the last eighth of each beat in 6/8
        if b == 6:
            return tuple(sorted({0} | {i - 2 for i in range(b, s, b)} | {s - 2}))
        return tuple(i for i in (0, 6, 12 if s >= 16 else s - 2) if i < s)
    return tuple(i for i, c in enumerate(rhythm) if c == "x")


# -- dataclasses --------------------------------------------------------------------------------

Range = tuple[float, float]


@dataclass(frozen=True)
class ChordsPart:
    program: int = 4
    register: tuple[int, int] = (48, 72)
    voices: int = 4
    rhythm: tuple[str, ...] = ("whole",)
    velocity: int = 80


@dataclass(frozen=True)
class BassPart:
    program: int = 33
    register: tuple[int, int] = (28, 52)
    tones: dict[str, float] = field(default_factory=lambda: {"root": 4.0, "fifth": 1.0, "octave": 1.0})
    approach: float = 0.5  # chance of an approach note into a new chord, when the kick allows one
    rhythm: tuple[str, ...] = ("kick",)  # "kick" follows the drums' kick; otherwise rhythms as chords
    velocity: int = 96


@dataclass(frozen=True)
class ArpPart:
    program: int = 81
    register: tuple[int, int] = (60, 84)
    rate: int = 2  # sixteenths per note
    patterns: tuple[str, ...] = ("up",)
    octaves: int = 1
    gate: float = 0.8
    velocity: int = 70


@dataclass(frozen=True)
class MelodyPart:
    program: int = 0
    register: tuple[int, int] = (67, 86)
    density: Range = (0.4, 0.4)  # chance a weak eighth gets a note
    rest: float = 0.15  # chance a strong beat (not a phrase start) is silent
    phrase_bars: int = 2
    subdivision: int = 2  # sixteenths per weak position: 2 = eighths, 1 = sixteenths
    velocity: int = 90


@dataclass(frozen=True)
class DrumsPart:
    kick_density: Range = (0.4, 0.4)
    hat_density: Range = (0.6, 0.6)
    perc_density: Range = (0.0, 0.0)
    kick: str | None = None  # a named rhythm or grid: overrides the density knob
    snare: str = "backbeat"  # "backbeat", "none", or a grid
    cymbal: str = "hat"  # what hat_density plays: closed/open hi-hat, or ride
    clap: bool = False
    open_hat: float = 0.0
    fill: float = 0.0  # chance the loop's last bar ends with a snare fill
    velocity: int = 100


PART_TYPES = {"chords": ChordsPart, "bass": BassPart, "arp": ArpPart, "melody": MelodyPart, "drums": DrumsPart}


@dataclass(frozen=True)
class Grammar:
    """Chord functions with weighted transitions, cadence rules, and the chords of each function.

    ``chords[mode][function]`` maps a roman numeral in the form labels write it (``Vsus4`` not
    ``V[no3][add4]``, ``IIImaj7`` not ``III7`` in minor; see :func:`farm.theory.label_roman`) to its
    weight. ``first``: the functions bar 1 may take
    (weighted); ``last``: those the last bar may take. Loops wrap, so the transition from the last
    bar back to bar 1 must be allowed too. ``written[mode][roman]`` is the key as the rule file
    spells it, for error messages.
    """

    functions: tuple[str, ...]
    transitions: dict[str, dict[str, float]]
    first: dict[str, float]
    last: frozenset[str]
    chords: dict[str, dict[str, dict[str, float]]]
    written: dict[str, dict[str, str]] = field(default_factory=dict)

    def function_of(self, mode: str, roman: str) -> str | None:
        """The function of a roman numeral in ``mode`` (label form, music21 figure, or a major seventh
        written without ``maj``: ``IIImaj7``, ``III7``), or None."""
        figure = _grammar_roman(roman, mode)
        for func, table in self.chords.get(mode, {}).items():
            if figure in table:
                return func
        return None


def _grammar_roman(roman: str, mode: str) -> str:
    """``roman`` as labels in ``mode`` write it; as written (readable shorthand) when it cannot spell,
    so the rule-set check can name it."""
    try:
        return label_roman(roman, mode)
    except SpellingError:
        return readable_roman(roman)


@dataclass(frozen=True)
class Rules:
    """A style: which keys, tempi, meters, lengths, harmony and parts its templates may have."""

    name: str
    description: str
    path: Path
    tonics: tuple[str, ...]
    modes: tuple[str, ...]
    tempo: tuple[int, int]  # bpm, inclusive
    meters: tuple[Meter, ...]
    bars: tuple[int, ...]
    swing: Range
    grammar: Grammar
    parts: dict[str, Any]  # part name -> ChordsPart | BassPart | ArpPart | MelodyPart | DrumsPart

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p for p in PART_NAMES if p in self.parts)


