"""Rule sets: one TOML file per style, read into small dataclasses and checked whole on load.

Everything that can be wrong with a rule file is found by :func:`load_rules`, before anything is
generated or written, and reported as one :class:`FarmError` naming the file and the field
(dotted TOML path, e.g. ``grammar.chords.minor.D``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from farm.errors import FarmError, unknown_name
from farm.model import MODES, Meter
from farm.theory import SpellingError, key_spelling, spell_chord

from farm.templates.style import (  # noqa: F401 (the data classes stay importable from here)
    _grammar_roman, _NOTE, ArpPart, BassPart, beat_steps, ChordsPart, DEFAULT_TEMPLATES_DIR, DrumsPart,
    Grammar, MAX_BARS, MelodyPart, NAMED_RHYTHMS, PART_NAMES, PART_TYPES, Range, rhythm_onsets, Rules,
    steps_per_bar, TEMPLATES_DIR, templates_dir, TEMPO_LIMITS)


# -- loading ------------------------------------------------------------------------------------

class _Reader:
    """Typed access to a TOML table that raises FarmError(file, field) on anything unexpected."""

    def __init__(self, path: Path, data: dict, prefix: str = ""):
        self.path, self.data, self.prefix = path, data, prefix

    def where(self, key: str) -> str:
        return f"{self.prefix}{key}" if self.prefix else key

    def fail(self, key: str, message: str):
        raise FarmError(message, file=self.path, field=self.where(key))

    def table(self, key: str, required: bool = False) -> "_Reader":
        v = self.data.get(key)
        if v is None:
            if required:
                self.fail(key, "missing table")
            v = {}
        if not isinstance(v, dict):
            self.fail(key, f"expected a table, got {type(v).__name__}")
        return _Reader(self.path, v, self.where(key) + ".")

    def get(self, key: str, kind, default=None, required: bool = False):
        if key not in self.data:
            if required:
                self.fail(key, "missing")
            return default
        v = self.data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            self.fail(key, f"expected {getattr(kind, '__name__', kind)}, got {v!r}")
        return v

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self.get(key, float, default)
        if not lo <= v <= hi:
            self.fail(key, f"{v} is outside {lo}..{hi}")
        return v

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        v = self.get(key, int, default)
        if not lo <= v <= hi:
            self.fail(key, f"{v} is outside {lo}..{hi}")
        return v

    def knob(self, key: str, default: float) -> Range:
        """A 0..1 knob: a number, or ``[low, high]`` for the seed to pick from."""
        v = self.data.get(key, default)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v, v]
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            self.fail(key, f"expected a number 0..1 or [low, high], got {v!r}")
        lo, hi = float(v[0]), float(v[1])
        if not (0.0 <= lo <= hi <= 1.0):
            self.fail(key, f"{v!r} is not within 0..1 with low <= high")
        return (lo, hi)

    def register(self, key: str, default: tuple[int, int]) -> tuple[int, int]:
        v = self.data.get(key, list(default))
        if (not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, int) for x in v)
                or not 0 <= v[0] < v[1] <= 127 or v[1] - v[0] < 12):
            self.fail(key, f"expected [low, high] MIDI notes 0..127 at least an octave apart, got {v!r}")
        return (v[0], v[1])

    def strings(self, key: str, default=None, required: bool = False) -> tuple[str, ...]:
        if key not in self.data:
            if required:
                self.fail(key, "missing")
            return tuple(default or ())
        v = self.data[key]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            self.fail(key, f"expected a non-empty list of strings, got {v!r}")
        return tuple(v)

    def weights(self, key: str, value, allowed: tuple[str, ...] | None = None) -> dict[str, float]:
        """A list (equal weights) or a table name -> weight >= 0 with at least one weight > 0."""
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            value = {x: 1.0 for x in value}
        if not isinstance(value, dict) or not value:
            self.fail(key, f"expected a table of weights or a list of names, got {value!r}")
        out = {}
        for name, w in value.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                self.fail(f"{key}.{name}", f"weight must be a number >= 0, got {w!r}")
            if allowed is not None and name not in allowed:
                self.fail(f"{key}.{name}", f"unknown name {name!r} (one of {', '.join(allowed)})")
            out[name] = float(w)
        if not any(w > 0 for w in out.values()):
            self.fail(key, "every weight is 0")
        return out


def load_rules(path: str | Path) -> Rules:
    """Read and check a rule-set TOML file; raises FarmError(file=path, field=...) on bad input.

    Beyond types and ranges it checks the music: every roman numeral spells in every allowed
    key (music21), every chord's register holds a voicing, and for every allowed bar count some
    progression satisfies the cadence rules.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FarmError("no such rule file", file=path) from None
    except OSError as err:
        raise FarmError(f"cannot read: {err.strerror}", file=path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FarmError("not UTF-8 text", file=path, field="toml") from None
    except tomllib.TOMLDecodeError as err:
        raise FarmError(f"invalid TOML: {err}", file=path, field="toml") from None
    except RecursionError:
        raise FarmError("invalid TOML: nested too deeply", file=path, field="toml") from None
    r = _Reader(path, data)

    known = {"name", "description", "tonics", "modes", "tempo", "meters", "bars", "swing", "grammar", "parts"}
    for k in data:
        if k not in known:
            r.fail(k, f"unknown key (known: {', '.join(sorted(known))})")

    name = r.get("name", str, path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        r.fail("name", f"{name!r}: use letters, digits, - and _")
    description = r.get("description", str, "")

    tonics = r.strings("tonics", required=True)
    for t in tonics:
        if not _NOTE.match(t):
            r.fail("tonics", f"{t!r} is not a note name like C, F# or Bb")
    modes = r.strings("modes", required=True)
    for m in modes:
        if m not in MODES:
            r.fail("modes", f"unknown mode {m!r} (one of {', '.join(MODES)})")
    tonics = tuple(dict.fromkeys(tonics))
    modes = tuple(dict.fromkeys(modes))

    tempo_v = data.get("tempo")
    if (not isinstance(tempo_v, list) or len(tempo_v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in tempo_v)):
        r.fail("tempo", f"expected [min, max] whole bpm, got {tempo_v!r}")
    lo, hi = tempo_v
    if lo > hi:
        r.fail("tempo", f"impossible range: min {lo} bpm is above max {hi} bpm")
    if lo < TEMPO_LIMITS[0] or hi > TEMPO_LIMITS[1]:
        r.fail("tempo", f"[{lo}, {hi}] bpm is outside the playable {TEMPO_LIMITS[0]}..{TEMPO_LIMITS[1]} bpm")

    meters = []
    for text in r.strings("meters", ["4/4"]):
        try:
            m = Meter.parse(text)
        except ValueError:
            r.fail("meters", f"{text!r} is not a meter like 4/4 or 6/8")
        if m.denominator not in (4, 8) or not 1 <= m.numerator <= 16 or (m.numerator * 16) % m.denominator:
            r.fail("meters", f"{text!r}: only x/4 and x/8 meters are supported")
        meters.append(m)
    meters = tuple(dict.fromkeys(meters))

    bars_v = data.get("bars", [4])
    if (not isinstance(bars_v, list) or not bars_v
            or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BARS for b in bars_v)):
        r.fail("bars", f"expected a list of bar counts 1..{MAX_BARS}, got {bars_v!r}")
    bars = tuple(dict.fromkeys(bars_v))
    swing = r.knob("swing", 0.0)

    grammar = _load_grammar(r, modes)
    parts = _load_parts(r, meters)

    rules = Rules(name=name, description=description, path=path, tonics=tonics, modes=modes,
                  tempo=(lo, hi), meters=meters, bars=bars, swing=swing, grammar=grammar, parts=parts)
    _check_music(r, rules)
    return rules


def _load_grammar(r: _Reader, modes: tuple[str, ...]) -> Grammar:
    g = r.table("grammar", required=True)
    known = {"functions", "transitions", "first", "last", "chords"}
    for k in g.data:
        if k not in known:
            g.fail(k, f"unknown key (known: {', '.join(sorted(known))})")
    t = g.table("transitions", required=True)
    functions = g.strings("functions", list(t.data))
    transitions = {}
    for f in functions:
        if f not in t.data:
            t.fail(f, "missing: every function needs its transitions")
        transitions[f] = t.weights(f, t.data[f], functions)
    for f in t.data:
        if f not in functions:
            t.fail(f, f"unknown function {f!r} (one of {', '.join(functions)})")
    first = g.weights("first", g.data.get("first", list(functions)), functions)
    last = frozenset(k for k, w in g.weights("last", g.data.get("last", list(functions)), functions).items() if w > 0)

    c = g.table("chords", required=True)
    chords: dict[str, dict[str, dict[str, float]]] = {}
    written: dict[str, dict[str, str]] = {}
    for mode in modes:
        if mode not in c.data:
            c.fail(mode, f"missing: mode {mode!r} is allowed but has no chords")
    for mode in c.data:
        if mode not in modes:
            c.fail(mode, f"mode {mode!r} is not in modes ({', '.join(modes)})")
        mt = c.table(mode)
        table: dict[str, dict[str, float]] = {}
        seen: dict[str, str] = {}
        written[mode] = {}
        for f in functions:
            if f not in mt.data:
                mt.fail(f, f"missing: function {f!r} has no chords in {mode}")
            w = mt.weights(f, mt.data[f])
            figures = {}
            for roman, weight in w.items():
                fig = _grammar_roman(roman, mode)  # Vsus4 and V[no3][add4], III7 and IIImaj7 are one chord
                if fig in seen:
                    mt.fail(f"{f}.{roman}", f"{roman!r} is already a {seen[fig]} chord; a chord has one function")
                seen[fig] = f
                written[mode][fig] = roman
                figures[fig] = weight
            table[f] = figures
        for f in mt.data:
            if f not in functions:
                mt.fail(f, f"unknown function {f!r} (one of {', '.join(functions)})")
        chords[mode] = table
    return Grammar(functions=functions, transitions=transitions, first=first, last=last, chords=chords,
                   written=written)


def _grid(reader: _Reader, key: str, value: str, meters: tuple[Meter, ...]) -> str:
    if not re.fullmatch(r"[x.]+", value):
        reader.fail(key, f"{value!r}: a rhythm is one of {', '.join(NAMED_RHYTHMS)} or a grid of x and .")
    for m in meters:
        if len(value) != steps_per_bar(m):
            reader.fail(key, f"grid {value!r} has {len(value)} steps; a {m} bar has {steps_per_bar(m)} sixteenths")
    return value


def _rhythms(reader: _Reader, key: str, default, meters, extra=()) -> tuple[str, ...]:
    out = []
    for v in reader.strings(key, default):
        if v not in NAMED_RHYTHMS and v not in extra:
            v = _grid(reader, key, v, meters)
            if v[0] != "x":
                reader.fail(key, f"grid {v!r} must strike on the downbeat (start with x)")
        out.append(v)
    return tuple(out)


def _load_parts(r: _Reader, meters: tuple[Meter, ...]) -> dict[str, Any]:
    p = r.table("parts", required=True)
    if not p.data:
        p.fail("parts", "no parts to write")
    parts: dict[str, Any] = {}
    for name in p.data:
        if name not in PART_TYPES:
            p.fail(name, f"unknown part (one of {', '.join(PART_NAMES)})")
    for name in PART_NAMES:
        if name not in p.data:
            continue
        t = p.table(name)
        fields = set(PART_TYPES[name].__dataclass_fields__)
        for k in t.data:
            if k not in fields:
                t.fail(k, f"unknown key (known: {', '.join(sorted(fields))})")
        d = PART_TYPES[name]()
        if name == "chords":
            parts[name] = ChordsPart(
                program=t.integer("program", d.program, 0, 127),
                register=t.register("register", d.register),
                voices=t.integer("voices", d.voices, 3, 6),
                rhythm=_rhythms(t, "rhythm", d.rhythm, meters),
                velocity=t.integer("velocity", d.velocity, 1, 127))
        elif name == "bass":
            tones = t.weights("tones", t.data.get("tones", d.tones), ("root", "fifth", "octave"))
            parts[name] = BassPart(
                program=t.integer("program", d.program, 0, 127),
                register=t.register("register", d.register),
                tones=tones,
                approach=t.number("approach", d.approach, 0.0, 1.0),
                rhythm=_rhythms(t, "rhythm", d.rhythm, meters, extra=("kick",)),
                velocity=t.integer("velocity", d.velocity, 1, 127))
        elif name == "arp":
            rate = t.get("rate", str, "8th")
            if rate not in ("8th", "16th"):
                t.fail("rate", f"{rate!r}: one of 8th, 16th")
            patterns = t.strings("patterns", d.patterns)
            for pat in patterns:
                if pat not in ("up", "down", "updown", "random"):
                    t.fail("patterns", f"{pat!r}: one of up, down, updown, random")
            parts[name] = ArpPart(
                program=t.integer("program", d.program, 0, 127),
                register=t.register("register", d.register),
                rate={"8th": 2, "16th": 1}[rate],
                patterns=patterns,
                octaves=t.integer("octaves", d.octaves, 1, 3),
                gate=t.number("gate", d.gate, 0.1, 1.0),
                velocity=t.integer("velocity", d.velocity, 1, 127))
        elif name == "melody":
            sub = t.get("subdivision", str, "8th")
            if sub not in ("8th", "16th"):
                t.fail("subdivision", f"{sub!r}: one of 8th, 16th")
            parts[name] = MelodyPart(
                program=t.integer("program", d.program, 0, 127),
                register=t.register("register", d.register),
                density=t.knob("density", d.density[0]),
                rest=t.number("rest", d.rest, 0.0, 0.9),
                phrase_bars=t.integer("phrase_bars", d.phrase_bars, 1, MAX_BARS),
                subdivision={"8th": 2, "16th": 1}[sub],
                velocity=t.integer("velocity", d.velocity, 1, 127))
        elif name == "drums":
            kick = t.get("kick", str, None)
            if kick is not None and kick not in NAMED_RHYTHMS:
                kick = _grid(t, "kick", kick, meters)
                if kick[0] != "x":
                    t.fail("kick", f"grid {kick!r} must have a kick on the downbeat (the bass starts there)")
            cymbal = t.get("cymbal", str, d.cymbal)
            if cymbal not in ("hat", "ride"):
                t.fail("cymbal", f"{cymbal!r}: one of hat, ride")
            snare = t.get("snare", str, d.snare)
            if snare not in ("backbeat", "none"):
                snare = _grid(t, "snare", snare, meters)
            parts[name] = DrumsPart(
                kick_density=t.knob("kick_density", d.kick_density[0]),
                hat_density=t.knob("hat_density", d.hat_density[0]),
                perc_density=t.knob("perc_density", d.perc_density[0]),
                kick=kick, snare=snare, cymbal=cymbal,
                clap=t.get("clap", bool, d.clap),
                open_hat=t.number("open_hat", d.open_hat, 0.0, 1.0),
                fill=t.number("fill", d.fill, 0.0, 1.0),
                velocity=t.integer("velocity", d.velocity, 1, 127))
    if "bass" in parts and "kick" in parts["bass"].rhythm and "drums" not in parts:
        p.fail("bass.rhythm", "follows the kick, but the style writes no drums part")
    return parts


def _check_music(r: _Reader, rules: Rules) -> None:
    """Every chord spells in every key, fits the chords register, and every length has a progression."""
    from farm.templates.grammar import feasible_starts

    g = rules.grammar
    chords_part = rules.parts.get("chords")
    for mode in rules.modes:
        for tonic in rules.tonics:
            spelled_tonic = key_spelling(tonic, mode)
            for func, table in g.chords[mode].items():
                for figure in table:
                    field = f"grammar.chords.{mode}.{func}.{g.written.get(mode, {}).get(figure, figure)}"
                    try:
                        ch = spell_chord(figure, spelled_tonic, mode)
                    except SpellingError as err:
                        raise FarmError(f"cannot spell in {spelled_tonic} {mode}: {err}", file=rules.path,
                                        field=field) from None
                    if chords_part is not None:
                        from farm.theory import voicing_candidates
                        lo, hi = chords_part.register
                        if not voicing_candidates(ch.pitch_classes, ch.bass_pc, lo, hi, chords_part.voices):
                            raise FarmError(f"{ch.symbol} has no {chords_part.voices}-voice voicing in "
                                            f"parts.chords.register {lo}-{hi}", file=rules.path, field=field)
    for n in rules.bars:
        if not feasible_starts(g, n, looping=True):
            r.fail("grammar", f"no {n}-bar progression meets the cadence rules (first {sorted(g.first)}, "
                              f"last {sorted(g.last)}, wrapping back to bar 1)")


def find_rules(style: str) -> Path:
    """The rule file of a style name: ``<templates dir>/<style>.toml``; FarmError if there is none."""
    d = templates_dir()
    path = d / f"{style}.toml"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", style or "") or not path.is_file():
        known = sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []
        raise FarmError(unknown_name("style", style, known), file=d, field="style")
    return path


def list_styles(rules_dir: str | Path | None = None) -> list[Rules]:
    """Every rule set in ``rules_dir`` (default: the templates folder), loaded and checked, by name."""
    d = Path(rules_dir) if rules_dir is not None else templates_dir()
    return sorted((load_rules(p) for p in sorted(d.glob("*.toml"))), key=lambda r: r.name)
