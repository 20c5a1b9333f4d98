"""The labels every stage reads: keys, meters, chords and templates.

Units, once for the whole project:

* ``bpm`` counts quarter notes per minute, as DAWs (and REAPER's ``TEMPO``) do, in every meter.
* A bar of ``n/d`` lasts ``n * 4 / d`` quarter notes: 4/4 -> 4, 3/4 -> 3, 6/8 -> 3.
* Bars are numbered from 1, as musicians count them.
* Pitch classes are integers 0-11 with C = 0.
* A loop lasts ``round(bars * quarters_per_bar * 60 / bpm * sample_rate)`` samples: rounded
  once, from the exact duration, never summed bar by bar.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor", "harmonic_minor", "dorian")


@dataclass(frozen=True)
class Key:
    """A key: ``tonic`` spelled as a musician would ("A", "F#", "Bb"); ``mode`` one of MODES."""

    tonic: str
    mode: str

    @property
    def tonic_pc(self) -> int:
        return note_name_to_pc(self.tonic)

    @property
    def short(self) -> str:
        """Splice-style key name: "Am", "C", "Ddor", "Ahm"."""
        suffix = {"major": "", "minor": "m", "harmonic_minor": "m", "dorian": "dor"}[self.mode]
        return self.tonic + suffix


@dataclass(frozen=True)
class Meter:
    """A time signature, ``numerator/denominator``."""

    numerator: int
    denominator: int

    @classmethod
    def parse(cls, text: str) -> "Meter":
        num, den = text.split("/")
        return cls(int(num), int(den))

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"

    @property
    def quarters_per_bar(self) -> Fraction:
        """Length of one bar in quarter notes (beats of ``bpm``)."""
        return Fraction(self.numerator * 4, self.denominator)


@dataclass(frozen=True)
class ChordLabel:
    """The chord sounding through one bar.

    ``pitch_classes`` are in chord-tone order from the root (root, third, fifth, seventh, ...);
    ``bass_pc`` is the lowest sounding pitch class (differs from ``root_pc`` in inversions).
    """

    bar: int
    symbol: str
    roman: str
    root_pc: int
    pitch_classes: tuple[int, ...]
    bass_pc: int

    @classmethod
    def from_dict(cls, d: dict) -> "ChordLabel":
        return cls(
            bar=int(d["bar"]),
            symbol=d["symbol"],
            roman=d["roman"],
            root_pc=int(d["root_pc"]),
            pitch_classes=tuple(int(p) for p in d["pitch_classes"]),
            bass_pc=int(d["bass_pc"]),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pitch_classes"] = list(self.pitch_classes)
        return d


@dataclass(frozen=True)
class PartInfo:
    """One written part: ``midi`` is relative to the template directory."""

    name: str
    midi: str
    notes: int
    channel: int = 0  # 0-based MIDI channel; drums are on 9 (GM channel 10)

    @property
    def is_drum(self) -> bool:
        return self.channel == 9


# Which patch roles may play which part.
PART_ROLES: dict[str, tuple[str, ...]] = {
    "chords": ("chords", "pad", "keys"),
    "bass": ("bass",),
    "arp": ("arp",),
    "melody": ("lead",),
    "drums": ("drums",),
}


@dataclass(frozen=True)
class Template:
    """A labelled MIDI template, as stored in ``template.json``."""

    id: str
    style: str
    seed: int
    key: Key
    bpm: float
    meter: Meter
    bars: int
    ppq: int
    chords: tuple[ChordLabel, ...]
    parts: tuple[PartInfo, ...]
    generator_version: str

    # -- time -------------------------------------------------------------------------------
    @property
    def quarters_per_bar(self) -> Fraction:
        return self.meter.quarters_per_bar

    @property
    def seconds_per_bar(self) -> float:
        return float(self.quarters_per_bar) * 60.0 / self.bpm

    @property
    def duration_s(self) -> float:
        """Exact loop length in seconds."""
        return self.bars * self.seconds_per_bar

    @property
    def ticks_per_bar(self) -> int:
        return int(self.quarters_per_bar * self.ppq)

    def loop_samples(self, sample_rate: int) -> int:
        """Loop length in samples, rounded once from the exact duration."""
        return loop_samples(self.bars, self.meter, self.bpm, sample_rate)

    def bar_start_sample(self, bar: int, sample_rate: int) -> int:
        """First sample of ``bar`` (1-based), on the same rounding as ``loop_samples``."""
        return loop_samples(bar - 1, self.meter, self.bpm, sample_rate)

    def part(self, name: str) -> PartInfo:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(name)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "style": self.style,
            "seed": self.seed,
            "key": {"tonic": self.key.tonic, "mode": self.key.mode},
            "bpm": self.bpm,
            "meter": str(self.meter),
            "bars": self.bars,
            "ppq": self.ppq,
            "chords": [c.to_dict() for c in self.chords],
            "parts": [asdict(p) for p in self.parts],
            "generator_version": self.generator_version,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Template":
        return cls(
            id=d["id"],
            style=d["style"],
            seed=int(d["seed"]),
            key=Key(**d["key"]),
            bpm=float(d["bpm"]),
            meter=Meter.parse(d["meter"]),
            bars=int(d["bars"]),
            ppq=int(d["ppq"]),
            chords=tuple(ChordLabel.from_dict(c) for c in d["chords"]),
            parts=tuple(PartInfo(**p) for p in d["parts"]),
            generator_version=d["generator_version"],
        )

    @classmethod
    def load(cls, directory: str | Path) -> "Template":
        """Read ``directory/template.json``."""
        path = Path(directory) / "template.json"
        return cls.from_dict(json.loads(path.read_text()))


def loop_samples(bars: int, meter: Meter, bpm: float, sample_rate: int) -> int:
    """``bars`` of ``meter`` at ``bpm`` in samples, rounded once (half away from zero)."""
    exact = Fraction(bars) * meter.quarters_per_bar * 60 * sample_rate / Fraction(bpm).limit_denominator(10**6)
    return int(exact + Fraction(1, 2))


def format_bpm(bpm: float) -> str:
    """``120.0`` -> ``"120"``, ``92.5`` -> ``"92.5"`` (for file names and tags)."""
    return f"{bpm:g}"


def loop_name(bpm: float, part: str, patch: str, key_short: str, loop_id: str) -> str:
    """Splice-style file stem: ``LF_120_chords_warm-rhodes_Am_<id>``; ``farm render`` and the
    catalog name files by this one rule (``<id>`` is the template's id or the loop's)."""
    return f"LF_{format_bpm(bpm)}_{part}_{patch}_{key_short}_{loop_id}"


def note_name_to_pc(name: str) -> int:
    """"A" -> 9, "F#" -> 6, "Bb" -> 10, "B-" (music21 flat) -> 10."""
    base = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[name[0].upper()]
    for accidental in name[1:]:
        base += {"#": 1, "b": -1, "-": -1}[accidental]
    return base % 12


def canonical_json(data: dict) -> str:
    """The one JSON spelling used for hashing and for files: sorted keys, fixed separators."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def content_id(*parts: bytes | str, length: int = 16) -> str:
    """A short hex content address (sha256) of the given bytes/strings."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:length]
