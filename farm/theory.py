"""Music theory helpers: roman numerals to spelled chords, scales, chord symbols, voice leading.

music21 does the theory (roman numerals in a key, note spelling, scales); this module turns its
answers into the project's labels and caches them, because the same (roman, key) pairs come up
thousands of times in a batch and music21 objects are slow to build.

Conventions:

* A roman numeral is read by music21 in the key, with music21's rules: the case of the numeral
  gives the quality, accidentals are relative to the key's own scale (in a minor key ``VII`` is
  the major chord on the lowered seventh, ``viio7`` the raised leading-tone chord), figured-bass
  numbers give inversions (``I6``, ``IV64``, ``V65``). Harmonic minor is read as music21's minor key.
* Suspended and added-note chords are written as musicians write them: ``Vsus4``, ``Isus2``,
  ``iadd9``, ``V7sus4``. music21 has no such shorthand (it reads ``Vsus4`` as G C), so
  :func:`music21_figure` rewrites them to its bracket figures (``V[no3][add4]``, ``I[no3][add2]``,
  ``i[add9]``, ``V7[no3][add4]``) and :func:`readable_roman` turns a bracket figure back.
  Labels carry the readable form; ``spell_chord(label.roman, tonic, mode)`` gives back exactly the
  label, and ``music21.roman.RomanNumeral(music21_figure(label.roman), key)`` the same pitches.
* A chord with a major seventh says so: ``maj`` goes before the figure (``IIImaj7``, ``VImaj7``,
  ``IVmaj9``; inversions keep their figured-bass numbers: ``IVmaj65``, ``IVmaj43``, ``IVmaj42``;
  the minor-major seventh ``i7[#7]`` is ``imaj7[#7]``). music21 reads ``7`` as the key's own
  seventh, so in G minor ``III7`` is Bbmaj7 while ``V7`` is D7; a producer reads ``III7`` as a
  dominant seventh. ``maj`` changes nothing in music21's reading (:func:`music21_figure` drops
  it, and music21 itself ignores it), so it only ever marks a seventh the key already makes major:
  a ``maj`` roman whose chord has no major seventh (``Vmaj7`` in C) is a :class:`SpellingError`.
  Dominant, minor, half-diminished (``iiø7``) and diminished (``viio7``) sevenths keep ``7``.
  Old labels without ``maj`` (``III7``) still spell to the same chord; :func:`label_roman` gives
  the form a label writes.
* Note names use ``b`` and ``#`` (never music21's ``-``).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

from farm.model import MODES, PITCH_CLASS_NAMES, note_name_to_pc

#: Chord qualities by their intervals above the root: (symbol suffix, chord-tone order from the root).
#: The order is how musicians stack the chord (root, third, fifth, seventh, ninth ...).
QUALITIES: dict[frozenset[int], tuple[str, tuple[int, ...]]] = {
    frozenset(iv): (suffix, iv)
    for suffix, iv in (
        ("", (0, 4, 7)),
        ("m", (0, 3, 7)),
        ("dim", (0, 3, 6)),
        ("aug", (0, 4, 8)),
        ("sus2", (0, 2, 7)),
        ("sus4", (0, 5, 7)),
        ("6", (0, 4, 7, 9)),
        ("m6", (0, 3, 7, 9)),
        ("7", (0, 4, 7, 10)),
        ("maj7", (0, 4, 7, 11)),
        ("m7", (0, 3, 7, 10)),
        ("m(maj7)", (0, 3, 7, 11)),
        ("m7b5", (0, 3, 6, 10)),
        ("dim7", (0, 3, 6, 9)),
        ("7sus4", (0, 5, 7, 10)),
        ("add9", (0, 4, 7, 2)),
        ("madd9", (0, 3, 7, 2)),
        ("9", (0, 4, 7, 10, 2)),
        ("maj9", (0, 4, 7, 11, 2)),
        ("m9", (0, 3, 7, 10, 2)),
    )
}

# music21 has no "sus"/"add" shorthand for roman numerals; its bracket figures do the same job.
_SHORTHAND = re.compile(r"^(?P<head>.*?)(?P<kind>sus4|sus2|add9)$")
_SHORTHAND_FIGURES = {"sus4": "[no3][add4]", "sus2": "[no3][add2]", "add9": "[add9]"}
_BRACKETS = re.compile(r"^(?P<head>.*?)(?P<figure>\[no3\]\[add4\]|\[no3\]\[add2\]|\[add9\])$")
_BRACKET_SHORTHAND = {figure: kind for kind, figure in _SHORTHAND_FIGURES.items()}

# The numeral and its quality mark, where a figure (7, 65, 43, 42, 9, #7 ...) may follow.
_NUMERAL = r"[b#]*(?:VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(?:o|°|ø|/o|\+)?"
_MAJ = re.compile(rf"^(?P<head>{_NUMERAL})maj(?=[#b]?\d)")
_FIGURE_START = re.compile(rf"^(?P<head>{_NUMERAL})(?=[#b]?\d)")
#: Symbol qualities with a major seventh above the root: their romans carry ``maj``.
MAJOR_SEVENTH_QUALITIES = frozenset({"maj7", "maj9", "m(maj7)"})


class SpellingError(ValueError):
    """A roman numeral that cannot become a labelled chord in a key (says why in one line)."""


@dataclass(frozen=True)
class ChordSpelling:
    """One roman numeral realised in one key: everything a :class:`farm.model.ChordLabel` needs.

    ``roman`` is the readable form (``Vsus4``, ``iadd9``; see :func:`readable_roman`).

    ``names`` are the spelled chord tones in the same order as ``pitch_classes`` (root first).
    """

    roman: str
    symbol: str
    root_pc: int
    pitch_classes: tuple[int, ...]
    bass_pc: int
    names: tuple[str, ...]
    bass_name: str


def spell_name(music21_name: str) -> str:
    """music21 note name to a musician's: "B-" -> "Bb", "F#" -> "F#", "E--" -> "Ebb"."""
    return music21_name.replace("-", "b")


def music21_spelling(name: str) -> str:
    """A musician's note name to music21's: "Bb" -> "B-", "F#" -> "F#", "B" -> "B" (the inverse of
    :func:`spell_name`; a lone "b" is the note B)."""
    return name.replace("b", "-") if len(name) > 1 else name


def lead_sheet_name(music21_name: str) -> str:
    """A note name for a chord symbol: single accidentals only ("F##" -> "G", "B--" -> "A")."""
    if "##" in music21_name or "--" in music21_name:
        from music21 import pitch as m21pitch

        return spell_name(m21pitch.Pitch(music21_name).simplifyEnharmonic(mostCommon=True).name)
    return spell_name(music21_name)


def music21_figure(roman: str) -> str:
    """The music21 figure for a roman numeral, rewriting ``sus2``/``sus4``/``add9`` shorthand and
    dropping the ``maj`` of a major seventh (``IIImaj7`` -> ``III7``, ``IVmaj65`` -> ``IV65``): music21
    reads the seventh from the key."""
    roman = roman.strip()
    m = _SHORTHAND.match(roman)
    if m and m.group("head"):
        roman = m.group("head") + _SHORTHAND_FIGURES[m.group("kind")]
    return _MAJ.sub(r"\g<head>", roman)


def says_major_seventh(roman: str) -> bool:
    """True when the roman numeral is written with ``maj`` before its figure (``IVmaj7``, ``IVmaj65``)."""
    return _MAJ.match(roman.strip()) is not None


def readable_roman(roman: str) -> str:
    """The musician's shorthand for music21's bracket figures: ``V[no3][add4]`` -> ``Vsus4``,
    ``i[add9]`` -> ``iadd9``, ``V7[no3][add4]`` -> ``V7sus4``; anything else as given (a ``maj`` stays
    as written). The inverse of :func:`music21_figure` up to ``maj``, which needs the chord:
    :func:`label_roman` and :func:`spell_chord` add it."""
    roman = roman.strip()
    m = _BRACKETS.match(roman)
    if m and m.group("head"):
        return m.group("head") + _BRACKET_SHORTHAND[m.group("figure")]
    return roman


def label_roman(roman: str, mode: str) -> str:
    """The roman numeral as a label in ``mode`` writes it, in any key: readable shorthand and ``maj``
    on a major seventh (minor: ``III7`` -> ``IIImaj7``, ``VI[add9]`` -> ``VIadd9``; ``V7`` stays).
    Raises :class:`SpellingError` like :func:`spell_chord`."""
    # which seventh a figure gets depends on the mode, not the tonic: any tonic gives the same answer
    return spell_chord(roman, "C", mode).roman


def _with_maj(readable: str, roman: str) -> str:
    """``readable`` with ``maj`` before its figure (``III7`` -> ``IIImaj7``); SpellingError if it has none."""
    if _MAJ.match(readable):
        return readable
    m = _FIGURE_START.match(readable)
    if not m:
        raise SpellingError(f"roman numeral {roman!r} is a major seventh chord but has no figure to write "
                            f"maj before (write it with a 7, 65, 43, 42 or 9)")
    return m.group("head") + "maj" + readable[m.end():]


_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")


def pitch_class_names(tonic: str, mode: str) -> tuple[str, ...]:
    """The 12 pitch classes (C = 0) named as the key writes them, like its chord symbols: its scale's
    own spellings (Db in Ab major, C# in A major, F# in G minor for V), the others with the
    accidental of its key signature; never a double sharp or flat."""
    k = music21_key(tonic, mode)
    names = list(_SHARP_NAMES if k.sharps > 0 else _FLAT_NAMES if k.sharps < 0 else PITCH_CLASS_NAMES)
    pitches = k.getPitches()
    if mode in ("minor", "harmonic_minor"):  # the raised seventh of V and viio7: F# in G minor, not Gb
        pitches.append(k.pitchFromDegree(7).transpose("A1"))
    for p in pitches:
        if abs(p.alter) < 2:  # F## in G# minor stays G, as its chord symbols write it
            names[p.pitchClass] = spell_name(p.name)
    return tuple(names)


def music21_key(tonic: str, mode: str):
    """The music21 key for a project key; harmonic minor is music21's minor (V and viio by case)."""
    if mode not in MODES:
        raise SpellingError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    m21mode = {"harmonic_minor": "minor"}.get(mode, mode)
    return _cached_key(music21_spelling(tonic), m21mode)


@lru_cache(maxsize=256)
def _cached_key(tonic: str, mode: str):
    from music21 import key as m21key

    return m21key.Key(tonic, mode)


def key_spelling(tonic: str, mode: str) -> str:
    """The tonic as a musician would spell it in ``mode``: the fewer-accidental enharmonic when the
    written one needs more than six sharps or flats ("Db" minor -> "C#", "A#" major -> "Bb")."""
    return _key_spelling(tonic, mode)


@lru_cache(maxsize=256)
def _key_spelling(tonic: str, mode: str) -> str:
    return _remembered(f"key\t{tonic}\t{mode}", lambda: _music21_key_spelling(tonic, mode), _name)


def _music21_key_spelling(tonic: str, mode: str) -> str:
    from music21 import pitch as m21pitch

    sharps = music21_key(tonic, mode).sharps
    if abs(sharps) <= 6:
        return tonic
    p = m21pitch.Pitch(music21_spelling(tonic))
    alt = p.getEnharmonic()
    alt_name = spell_name(alt.name)
    if abs(music21_key(alt_name, mode).sharps) < abs(sharps):
        return alt_name
    return tonic


def _spellings():
    """music21's answers kept between runs (``farm.memo``), for this theory code and this music21."""
    from pathlib import Path

    from farm.memo import kept

    here = Path(__file__).resolve().parent
    return kept("spellings", (here / "theory.py", here / "model.py"), ("music21",))


def _remembered(key: str, ask, from_kept, to_kept=lambda answer: answer):
    """music21's answer for ``key``: the one kept from an earlier run when there is one (checked
    back into its type: an entry of the wrong shape is asked again), else ``ask()``, then kept."""
    known = _spellings().get(key)
    if known is not None:
        try:
            return from_kept(known)
        except (TypeError, KeyError, ValueError):
            pass
    answer = ask()
    _spellings().put(key, to_kept(answer))
    return answer


def _name(value) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def _pc(value) -> int:
    if not isinstance(value, int) or not 0 <= value < 12:
        raise ValueError(value)
    return value


def _names(values, count: int | None = None) -> tuple[str, ...]:
    if not isinstance(values, list) or (count is not None and len(values) != count):
        raise ValueError(values)
    return tuple(_name(v) for v in values)


def _scale(values) -> tuple[str, ...]:
    return _names(values, 7)


def _chord_spelling(kept: dict) -> ChordSpelling:
    pcs = kept["pitch_classes"]
    if not isinstance(pcs, list) or not pcs:
        raise ValueError(pcs)
    return ChordSpelling(roman=_name(kept["roman"]), symbol=_name(kept["symbol"]), root_pc=_pc(kept["root_pc"]),
                         pitch_classes=tuple(_pc(v) for v in pcs), bass_pc=_pc(kept["bass_pc"]),
                         names=_names(kept["names"], len(pcs)), bass_name=_name(kept["bass_name"]))


@lru_cache(maxsize=8192)
def spell_chord(roman: str, tonic: str, mode: str) -> ChordSpelling:
    """Realise ``roman`` in the key ``tonic`` ``mode`` with music21 and label it.

    ``roman`` is readable shorthand (``Vsus4``, ``IIImaj7``) or a music21 figure (``V[no3][add4]``,
    ``III7``); the spelling's ``roman`` is always the readable form, with ``maj`` when the chord has a
    major seventh, so a label's roman spells back to the label. Raises :class:`SpellingError` when
    music21 cannot read the figure, when the chord's intervals are not a quality this project can
    name with a symbol, or when a ``maj`` roman's chord has no major seventh.
    """
    return _remembered(f"{roman}\t{tonic}\t{mode}", lambda: _spell_chord(roman, tonic, mode), _chord_spelling,
                       dataclasses.asdict)


def _spell_chord(roman: str, tonic: str, mode: str) -> ChordSpelling:
    from music21 import roman as m21roman

    figure = music21_figure(roman)
    k = music21_key(tonic, mode)
    try:
        rn = m21roman.RomanNumeral(figure, k)
        pitches = list(rn.pitches)
        root = rn.root()
        bass = rn.bass()
    except Exception as err:  # music21 raises several exception types for unreadable figures
        raise SpellingError(f"music21 cannot read roman numeral {roman!r}: {err}") from None
    if not pitches or root is None:
        raise SpellingError(f"roman numeral {roman!r} gives no chord")
    root_pc = root.pitchClass
    intervals = frozenset((p.pitchClass - root_pc) % 12 for p in pitches)
    if intervals not in QUALITIES:
        names = " ".join(spell_name(p.name) for p in pitches)
        raise SpellingError(f"roman numeral {roman!r} in {tonic} {mode} is {names}: not a chord quality with a symbol")
    suffix, order = QUALITIES[intervals]
    readable = readable_roman(figure)
    if suffix in MAJOR_SEVENTH_QUALITIES:
        readable = _with_maj(readable, roman)
    elif says_major_seventh(roman):
        names = " ".join(spell_name(p.name) for p in pitches)
        raise SpellingError(f"roman numeral {roman!r} in {tonic} {mode} is {names}: no major seventh "
                            f"(music21 takes the seventh from the key; raise it with [#7])")
    by_interval = {(p.pitchClass - root_pc) % 12: spell_name(p.name) for p in pitches}
    # lead sheets never put a double accidental in a chord symbol: F##dim7 in G# minor reads Gdim7
    root_name, bass_name = lead_sheet_name(root.name), lead_sheet_name(bass.name)
    symbol = root_name + suffix + (f"/{bass_name}" if bass.pitchClass != root_pc else "")
    return ChordSpelling(
        roman=readable,
        symbol=symbol,
        root_pc=root_pc,
        pitch_classes=tuple((root_pc + i) % 12 for i in order),
        bass_pc=bass.pitchClass,
        names=tuple(by_interval[i] for i in order),
        bass_name=bass_name,
    )


@lru_cache(maxsize=256)
def scale_names(tonic: str, mode: str) -> tuple[str, ...]:
    """The seven spelled notes of the scale of ``mode`` on ``tonic`` (music21 scales)."""
    return _remembered(f"scale\t{tonic}\t{mode}", lambda: _music21_scale_names(tonic, mode), _scale, list)


def _music21_scale_names(tonic: str, mode: str) -> tuple[str, ...]:
    from music21 import scale as m21scale

    cls = {
        "major": m21scale.MajorScale,
        "minor": m21scale.MinorScale,
        "harmonic_minor": m21scale.HarmonicMinorScale,
        "dorian": m21scale.DorianScale,
    }[mode]
    t = music21_spelling(tonic)
    return tuple(spell_name(p.name) for p in cls(t).getPitches(f"{t}4", f"{t}5")[:7])


def scale_pcs(tonic: str, mode: str) -> tuple[int, ...]:
    """Pitch classes of the scale of ``mode`` on ``tonic``, from the tonic up."""
    return tuple(note_name_to_pc(n) for n in scale_names(tonic, mode))


@lru_cache(maxsize=8192)
def chord_scale(roman: str, tonic: str, mode: str) -> tuple[int, ...]:
    """The key's scale with the chord's altered tones in place of the notes of the same letter.

    Over ``V7`` in A natural minor the G becomes G#, so passing tones never clash with the chord.
    Sorted pitch classes.
    """
    chord = spell_chord(roman, tonic, mode)
    letters = {n[0]: note_name_to_pc(n) for n in chord.names}
    out = set()
    for n in scale_names(tonic, mode):
        out.add(letters.get(n[0], note_name_to_pc(n)))
    return tuple(sorted(out))


# -- voice leading ------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def voicing_candidates(pitch_classes: tuple[int, ...], bass_pc: int, low: int, high: int,
                       voices: int) -> tuple[tuple[int, ...], ...]:
    """Every voicing of the chord in MIDI notes ``low..high`` (inclusive): ``voices`` notes (at least
    one per chord tone; extra voices double chord tones), ``bass_pc`` lowest, upper voices within
    an octave and a half so the chord stays a chord."""
    pcset = frozenset(pitch_classes)
    voices = max(voices, len(pcset))
    out = []
    for bass in range(low, min(high, low + 11) + 1):
        if bass % 12 != bass_pc:
            continue
        uppers = [n for n in range(bass + 1, high + 1) if n % 12 in pcset]
        for combo in combinations(uppers, voices - 1):
            if combo[-1] - combo[0] > 18:
                continue
            if {n % 12 for n in combo} | {bass_pc} != pcset:
                continue
            out.append((bass,) + combo)
    return tuple(out)


def voicing_cost(prev: tuple[int, ...], cur: tuple[int, ...]) -> int:
    """Total semitones moved from ``prev`` to ``cur``, voices matched from the bottom up."""
    if len(prev) == len(cur):
        return sum(abs(a - b) for a, b in zip(prev, cur))
    # different sizes: each note of the smaller chord to its nearest in the larger
    small, big = (prev, cur) if len(prev) < len(cur) else (cur, prev)
    return sum(min(abs(a - b) for b in big) for a in small) + sum(min(abs(a - b) for a in small) for b in big)


@lru_cache(maxsize=16384)
def voice_lead(prev: tuple[int, ...] | None, pitch_classes: tuple[int, ...], bass_pc: int,
               low: int, high: int, voices: int) -> tuple[int, ...]:
    """The voicing of the chord with the smallest total movement from ``prev`` inside ``low..high``.

    With no previous chord, the voicing centred in the register. Ties break towards fewer doubled
    non-root tones, fewer close intervals low down (mud), the register centre, then the lowest
    notes, so the answer is deterministic. Raises ``SpellingError`` when the register cannot hold
    the chord.
    """
    candidates = voicing_candidates(pitch_classes, bass_pc, low, high, voices)
    if not candidates:
        raise SpellingError(f"no voicing of pitch classes {list(pitch_classes)} over bass {bass_pc} fits MIDI notes {low}-{high}")
    centre = (low + high) / 2
    root = pitch_classes[0]

    def cost(v: tuple[int, ...]):
        uppers = [n % 12 for n in v if n % 12 != root]
        doubled_non_root = len(uppers) - len(set(uppers))
        mud = sum(1 for a, b in zip(v, v[1:]) if a < 52 and b - a < 5)
        middle = abs(sum(v) / len(v) - centre)
        move = voicing_cost(prev, v) if prev else middle
        return (move, doubled_non_root, mud, middle, v)

    return min(candidates, key=cost)
