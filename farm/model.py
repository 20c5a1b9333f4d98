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
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from farm.errors import FarmError, closest

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

    @property
    def sharps(self) -> int:
        """Sharps (negative: flats) in the key signature ("Eb" minor: -6); harmonic minor has
        minor's signature."""
        sharps = _LETTER_SHARPS[self.tonic[0]] + 7 * (self.tonic.count("#") - self.tonic.count("b"))
        return sharps + _MODE_SHARPS[_SIGNATURE_MODE[self.mode]]

    def transposed(self, semitones: int) -> "Key":
        """This key moved by ``semitones``, its tonic spelled for the key signature with fewest
        accidentals. Ties (six sharps or six flats) go to sharps in major and dorian (F#, G#dor)
        and to flats in minor (Ebm), as most loop libraries name them. Arithmetic on the circle
        of fifths (the tests check it against music21 for every key), so naming a transposed key
        does not load music21."""
        pc = (self.tonic_pc + semitones) % 12
        names = [name for name in (letter + accidental for letter in "CDEFGAB" for accidental in ("", "#", "b"))
                 if note_name_to_pc(name) == pc]
        flats = _SIGNATURE_MODE[self.mode] == "minor"

        def cost(name: str):
            sharps = Key(name, self.mode).sharps
            return abs(sharps), (sharps > 0) if flats else (sharps < 0), name

        return Key(min(names, key=cost), self.mode)


# Sharps in the signature of each tonic letter's major key (an accidental on the tonic moves it
# by seven); the other modes sit a fixed number of fifths below major.
_LETTER_SHARPS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_SIGNATURE_MODE = {"major": "major", "minor": "minor", "harmonic_minor": "minor", "dorian": "dorian"}
_MODE_SHARPS = {"major": 0, "minor": -3, "dorian": -2}


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
    def from_dict(cls, d: dict, *, file: str | Path | None = None) -> "Template":
        """A Template from its ``template.json`` data, every field checked first.

        A missing, unknown, mistyped or out-of-range value is a FarmError naming ``file`` and the
        field as a path (``bpm``, ``key.mode``, ``chords[2].pitch_classes``, ``parts[0].channel``).
        """
        check = _TemplateCheck(file)
        d = check.fields(d, "", _TEMPLATE_FIELDS)
        template_id = check.text(d["id"], "id")
        if not _ID.fullmatch(template_id):
            check.fail("id", f"{_show(template_id)} cannot name a folder or file (use letters, digits, - and _)")
        key = check.fields(d["key"], "key", ("tonic", "mode"))
        tonic, mode = check.text(key["tonic"], "key.tonic"), check.text(key["mode"], "key.mode")
        if not _NOTE_NAME.fullmatch(tonic):
            check.fail("key.tonic", f"{_show(tonic)} is not a note name like C, F# or Bb")
        if mode not in MODES:
            check.fail("key.mode", f"unknown mode {_show(mode)} (one of {', '.join(MODES)})")
        bpm = d["bpm"]
        if isinstance(bpm, bool) or not isinstance(bpm, (int, float)):
            check.fail("bpm", f"expected a number of quarter notes per minute, got {_got(bpm)}")
        if not BPM_RANGE[0] <= bpm <= BPM_RANGE[1]:  # NaN compares false too
            check.fail("bpm", f"{_show(bpm)} is not a tempo ({BPM_RANGE[0]} to {BPM_RANGE[1]} bpm)")
        meter_text = check.text(d["meter"], "meter")
        m = re.fullmatch(r"([0-9]+)/([0-9]+)", meter_text)
        if not m:
            check.fail("meter", f"{_show(meter_text)} is not a time signature like 4/4 or 6/8")
        num, den = int(m[1]), int(m[2])
        if num < 1 or den < 1 or den & (den - 1) or num > 32 or den > 32:
            check.fail("meter", f"{_show(meter_text)}: the numerator must be 1 to 32 and the "
                                "denominator a power of two up to 32 (1, 2, 4, 8, 16, 32)")
        bars = check.whole(d["bars"], "bars", 1, 64)  # 64 bars: twice the longest a rule set writes
        chords = []
        for i, c in enumerate(check.items(d["chords"], "chords")):
            at = f"chords[{i}]"
            c = check.fields(c, at, ("bar", "symbol", "roman", "root_pc", "pitch_classes", "bass_pc"))
            bar = check.whole(c["bar"], f"{at}.bar", 1)
            if bar > bars:
                check.fail(f"{at}.bar", f"bar {bar} is past the template's {bars} bars")
            pcs = check.items(c["pitch_classes"], f"{at}.pitch_classes")
            if not pcs:
                check.fail(f"{at}.pitch_classes", "empty (a chord has at least one pitch class)")
            chords.append(ChordLabel(
                bar=bar, symbol=check.text(c["symbol"], f"{at}.symbol"),
                roman=check.text(c["roman"], f"{at}.roman"),
                root_pc=check.pitch_class(c["root_pc"], f"{at}.root_pc"),
                pitch_classes=tuple(check.pitch_class(p, f"{at}.pitch_classes") for p in pcs),
                bass_pc=check.pitch_class(c["bass_pc"], f"{at}.bass_pc")))
        if not check.items(d["parts"], "parts"):
            check.fail("parts", "empty (a template has at least one part)")
        parts = []
        for i, p in enumerate(d["parts"]):
            at = f"parts[{i}]"
            p = check.fields(p, at, ("name", "midi", "notes"), optional=("channel",))
            name = check.text(p["name"], f"{at}.name")
            if name not in PART_ROLES:
                guess = closest(name, PART_ROLES) if isinstance(name, str) else None
                check.fail(f"{at}.name", f"unknown part {_show(name)}"
                           + (f"; did you mean {guess!r}?" if guess else "") + f" (one of {', '.join(PART_ROLES)})")
            if name in (q.name for q in parts):
                check.fail(f"{at}.name", f"part {_show(name)} is listed twice")
            midi = check.text(p["midi"], f"{at}.midi")
            if Path(midi).is_absolute() or ".." in Path(midi).parts or "\\" in midi:
                check.fail(f"{at}.midi", f"{_show(midi)}: a part's MIDI file lives inside the template folder")
            parts.append(PartInfo(name=name, midi=midi, notes=check.whole(p["notes"], f"{at}.notes", 0),
                                  channel=check.whole(p.get("channel", 0), f"{at}.channel", 0, 15)))
        return cls(
            id=template_id,
            style=check.text(d["style"], "style"),
            seed=check.whole(d["seed"], "seed"),
            key=Key(tonic, mode),
            bpm=float(bpm),
            meter=Meter(num, den),
            bars=bars,
            ppq=check.whole(d["ppq"], "ppq", 1, 32767),  # a MIDI file's ticks per quarter fit 15 bits
            chords=tuple(chords),
            parts=tuple(parts),
            generator_version=check.text(d["generator_version"], "generator_version", empty=True),
        )

    @classmethod
    def load(cls, directory: str | Path) -> "Template":
        """Read ``directory/template.json``: a template lives in a folder named by its ``id``.

        A missing folder or file, invalid JSON, a bad field or an ``id`` that is not the folder's
        name is a FarmError naming the file and the field.
        """
        folder = Path(directory)
        path = folder / "template.json"
        if not folder.exists():
            raise FarmError("no such template folder", file=folder, field="template")
        if not folder.is_dir():
            raise FarmError("not a template folder (give the folder that holds template.json)",
                            file=folder, field="template")
        if not path.is_file():
            raise FarmError("no template.json here", file=path, field="template")
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise FarmError("not UTF-8 text", file=path, field="json") from None
        except json.JSONDecodeError as err:
            raise FarmError(f"invalid JSON: {err}", file=path, field="json") from None
        except OSError as err:
            raise FarmError(f"cannot read: {err.strerror or err}", file=path, field="template") from None
        template = cls.from_dict(data, file=path)
        name = folder.resolve().name
        if template.id != name:
            raise FarmError(f"{_show(template.id)} is not this folder's name {_show(name)} "
                            "(a template lives in a folder named by its id)", file=path, field="id")
        return template


# What template.json holds, and what it may hold (see Template.from_dict).
_TEMPLATE_FIELDS = ("id", "style", "seed", "key", "bpm", "meter", "bars", "ppq", "chords", "parts",
                    "generator_version")
BPM_RANGE = (1, 1000)  # quarter notes per minute a template may carry
_NOTE_NAME = re.compile(r"[A-G](##?|bb?|--?)?")  # spellings music21 reads: F#, Bb, B-, Cbb
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # it names the folder and every loop file


def _show(value: Any) -> str:
    """A value as it is written in JSON, shortened: ``"two"``, ``null``, ``NaN``, ``[1, 2]``."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _got(value: Any) -> str:
    """What a wrong value is, for a message: ``the string "two"``, ``null``, ``2.5``, ``a list [7]``."""
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, (list, dict)):
        return f"{'a list' if isinstance(value, list) else 'an object'} {_show(value)}"
    return _show(value)


class _TemplateCheck:
    """Field checks for ``Template.from_dict``: each failure is a FarmError naming the field."""

    def __init__(self, file: str | Path | None):
        self.file = file

    def fail(self, field: str, message: str):
        raise FarmError(message, file=self.file, field=field or "template")

    def fields(self, value: Any, at: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        """``value`` as an object holding every ``required`` key, and no key but these."""
        if not isinstance(value, dict):
            self.fail(at, f"expected an object, got {_got(value)}")
        prefix = f"{at}." if at else ""
        for k in value:
            if k not in required and k not in optional:
                known = ", ".join(sorted(required + optional))
                self.fail(f"{prefix}{k}", f"unknown field (known: {known})")
        for k in required:
            if k not in value:
                self.fail(f"{prefix}{k}", "missing")
        return value

    def items(self, value: Any, at: str) -> list:
        if not isinstance(value, list):
            self.fail(at, f"expected a list, got {_got(value)}")
        return value

    def text(self, value: Any, at: str, empty: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(at, f"expected a string, got {_got(value)}")
        if not empty and not value.strip():
            self.fail(at, "empty")
        return value

    def whole(self, value: Any, at: str, lo: int | None = None, hi: int | None = None) -> int:
        """A whole number from ``lo`` to ``hi`` (either end open when None)."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(at, f"expected a whole number, got {_got(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = (f"{lo} to {hi}" if hi is not None else f"{lo} or more") if lo is not None else f"at most {hi}"
            self.fail(at, f"{value} is out of range ({span})")
        return value

    def pitch_class(self, value: Any, at: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 11:
            self.fail(at, f"{_show(value)} is not a pitch class (a whole number 0-11, C = 0)")
        return value


def loop_samples(bars: int, meter: Meter, bpm: float, sample_rate: int) -> int:
    """``bars`` of ``meter`` at ``bpm`` in samples, rounded once (half away from zero)."""
    exact = Fraction(bars) * meter.quarters_per_bar * 60 * sample_rate / Fraction(bpm).limit_denominator(10**6)
    return int(exact + Fraction(1, 2))


def format_bpm(bpm: float) -> str:
    """``120.0`` -> ``"120"``, ``92.5`` -> ``"92.5"`` (for file names and tags)."""
    return f"{bpm:g}"


def daw_key_name(key_short: str) -> str:
    """A key as DAWs and sample sites spell it in file names and tags: ``Am``, ``F#m``, ``Bb``. A
    mode beyond major and minor is named by its major or minor family (``Ddor`` and ``Dhm`` are
    ``Dm``); the mode itself stays in the sidecar and the MODE tag."""
    for suffix in ("dor", "hm"):
        if key_short.endswith(suffix):
            return key_short[: -len(suffix)] + "m"
    return key_short


def loop_name(bpm: float, part: str, patch: str, key_short: str, loop_id: str) -> str:
    """Splice-style file stem: ``LF_120_chords_warm-rhodes_Am_<id>``, the key spelled as DAWs do
    (``daw_key_name``), and none for drums: ``LF_120_drums_lofi-kit_<id>``. ``farm render`` and
    the catalog name files by this one rule (``<id>`` is the template's id or the loop's)."""
    key = "" if part == "drums" else f"_{daw_key_name(key_short)}"
    return f"LF_{format_bpm(bpm)}_{part}_{patch}{key}_{loop_id}"


def loop_content_id(template_id: str, part: str, patch_hash: str, renderer: str, renderer_version: str,
                    sample_rate: int, fmt: str) -> str:
    """A rendered loop's id: the content address of everything that decides its bytes. A repatch
    (a loop's part played through another patch) is that render too, and has its id."""
    return content_id(template_id, part, patch_hash, renderer, renderer_version, str(sample_rate), fmt)


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
