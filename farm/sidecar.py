"""The JSON sidecar beside every loop file: all its labels, checks and provenance.

A sidecar is flat: its fields are the ``loops`` columns of the catalog (plus ``chords``, one
entry per bar), so ``jq .key`` on a sidecar and ``SELECT key FROM loops`` read the same thing.
Paths are relative to the catalog root. Example (abridged)::

    {"id": "3f2a...", "name": "LF_120_chords_warm-rhodes_Am_3f2a...", "template_id": "9c1d...",
     "parent_id": null, "operation": "render", "params": {}, "style": "lofi", "part": "chords",
     "role": "keys", "patch": "warm-rhodes", "key": "Am", "key_tonic": "A", "key_mode": "minor",
     "tonic_pc": 9, "camelot": "8A", "bpm": 120.0, "meter": "4/4", "bars": 4,
     "progression": "Am7 Am7 Dm7 Cmaj7",
     "chords": [{"bar": 1, "symbol": "Am7", "roman": "i7", "root_pc": 9,
                 "pitch_classes": [9, 0, 4, 7], "bass_pc": 9, "start_s": 0.0, "end_s": 2.0}, ...],
     "renderer": "embedded", "renderer_version": "...", "format": "flac24", "sample_rate": 44100,
     "channels": 2, "samples": 352800, "duration_s": 8.0, "lufs": -16.0, "true_peak_db": -3.1,
     "rms_db": -19.2, "onsets": 16, "centroid_hz": 1480.5,
     "path": "loops/lofi/LF_120_chords_warm-rhodes_Am_3f2a....flac",
     "midi": "templates/9c1d.../chords.mid", "sha256": "...", "status": "pending",
     "reject_reason": null, "tags": ["lofi", "chords", "keys", ...],
     "created_at": "2024-06-01T02:00:00Z", "batch_id": "...", "sidecar_version": 1}
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from farm.errors import FarmError
from farm.files import atomic_write_text, safe_relative_path
from farm.model import Key, Template, canonical_json

SIDECAR_VERSION = 1
AUDIO_SUFFIXES = (".flac", ".wav")  # what farm.audio.write_audio writes
STATUSES = ("pending", "approved", "rejected")
OPERATIONS = ("render", "splice", "pitch", "stretch", "repatch")

# Every sidecar field and the JSON types it may hold (None = may be null).
FIELDS: dict[str, tuple] = {
    "id": (str,), "name": (str,), "template_id": (str, None), "parent_id": (str, None),
    "operation": (str,), "params": (dict,), "style": (str,), "part": (str,), "role": (str,),
    "patch": (str,), "patch_hash": (str, None), "key": (str,), "key_tonic": (str,),
    "key_mode": (str,), "tonic_pc": (int,), "camelot": (str,), "bpm": (int, float),
    "meter": (str,), "bars": (int,), "progression": (str,), "chords": (list,),
    "renderer": (str,), "renderer_version": (str,), "format": (str,), "sample_rate": (int,),
    "channels": (int,), "samples": (int,), "duration_s": (int, float),
    "lufs": (int, float, None), "true_peak_db": (int, float, None), "rms_db": (int, float, None),
    "onsets": (int, None), "centroid_hz": (int, float, None), "path": (str,), "midi": (str, None),
    "sha256": (str,), "status": (str,), "reject_reason": (str, None), "tags": (list,),
    "created_at": (str,), "batch_id": (str, None), "sidecar_version": (int,),
    "fingerprint": (dict, None),
}
# Fields a sidecar written before they existed may lack (read as null).
OPTIONAL_FIELDS = {"fingerprint"}
CHORD_FIELDS = ("bar", "symbol", "roman", "root_pc", "pitch_classes", "bass_pc", "start_s", "end_s")


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second: ``2024-06-01T02:00:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def camelot(key: Key) -> str:
    """The key's Camelot wheel code: ``8A`` = A minor, ``8B`` = C major, ``9A`` = E minor.

    Minor and harmonic minor read as their natural minor; dorian as the minor key with the
    same key signature (D dorian -> A minor -> 8A).
    """
    pc = key.tonic_pc
    if key.mode == "major":
        return f"{(7 * pc + 7) % 12 + 1}B"
    if key.mode == "dorian":
        pc = (pc + 7) % 12
    return f"{(7 * pc + 4) % 12 + 1}A"


def loop_path(style: str, name: str, fmt: str) -> str:
    """The audio file, relative to the catalog root: ``loops/<style>/<name>.flac`` for ``flac24``."""
    from farm.audio import FORMATS

    return f"loops/{style}/{name}{FORMATS[fmt][2]}"


def sidecar_path(audio_path: str | Path) -> Path:
    """The sidecar beside an audio file: same stem, ``.json``."""
    return Path(audio_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def template_labels(template: Template, sample_rate: int) -> dict:
    """The template's labels as sidecar fields: key, bpm, meter, bars, progression, chords.

    Each chord carries the bar's span in the loop in seconds, on the same sample rounding as
    the loop length.
    """
    chords = []
    for c in template.chords:
        d = c.to_dict()
        d["start_s"] = template.bar_start_sample(c.bar, sample_rate) / sample_rate
        d["end_s"] = template.bar_start_sample(c.bar + 1, sample_rate) / sample_rate
        chords.append(d)
    return {
        "style": template.style,
        "key": template.key.short,
        "key_tonic": template.key.tonic,
        "key_mode": template.key.mode,
        "tonic_pc": template.key.tonic_pc,
        "camelot": camelot(template.key),
        "bpm": template.bpm,
        "meter": str(template.meter),
        "bars": template.bars,
        "progression": " ".join(c.symbol for c in template.chords),
        "chords": chords,
    }


def make_sidecar(**fields) -> dict:
    """A complete sidecar from keyword fields; optional ones default, then it is validated."""
    data = {
        "parent_id": None, "operation": "render", "params": {}, "patch_hash": None, "midi": None,
        "status": "pending", "reject_reason": None, "tags": [], "batch_id": None,
        "lufs": None, "true_peak_db": None, "rms_db": None, "onsets": None, "centroid_hz": None,
        "created_at": utc_now(), "sidecar_version": SIDECAR_VERSION, "fingerprint": None,
    }
    data.update(fields)
    for name in ("lufs", "true_peak_db", "rms_db", "centroid_hz"):  # JSON has no -inf/NaN
        value = data.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            data[name] = None
    validate_sidecar(data)
    return data


def validate_sidecar(data: dict, file: str | Path | None = None) -> None:
    """Raise FarmError naming the first missing or mistyped field."""
    if not isinstance(data, dict):
        raise FarmError("a sidecar must be a JSON object", file=file)
    for name, types in FIELDS.items():
        if name not in data and name in OPTIONAL_FIELDS:
            continue
        if name not in data:
            raise FarmError("missing", file=file, field=name)
        value = data[name]
        ok = (value is None and None in types) or any(
            t is not None and isinstance(value, t) and not (isinstance(value, bool) and t is not bool)
            for t in types)
        if not ok:
            raise FarmError(f"unexpected value {value!r}", file=file, field=name)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise FarmError(f"unknown field (known: {', '.join(FIELDS)})", file=file, field=unknown[0])
    if data["status"] not in STATUSES:
        raise FarmError(f"{data['status']!r} is not one of {', '.join(STATUSES)}", file=file, field="status")
    if data["operation"] not in OPERATIONS:
        raise FarmError(f"{data['operation']!r} is not one of {', '.join(OPERATIONS)}", file=file,
                        field="operation")
    from farm.audio import FORMATS

    if data["format"] not in FORMATS:
        raise FarmError(f"{data['format']!r} is not one of {', '.join(FORMATS)}", file=file,
                        field="format")
    if Path(data["path"]).suffix != FORMATS[data["format"]][2]:
        raise FarmError(f"a {data['format']} file must end in {FORMATS[data['format']][2]}", file=file,
                        field="path")
    if (data["parent_id"] is None) != (data["operation"] == "render"):
        raise FarmError("a rendered loop has no parent; a permutation names its parent_id", file=file,
                        field="parent_id")
    if len(data["chords"]) != data["bars"]:
        raise FarmError(f"{len(data['chords'])} chords for {data['bars']} bars", file=file, field="chords")
    for i, chord in enumerate(data["chords"]):
        missing = [k for k in CHORD_FIELDS if k not in chord]
        if missing:
            raise FarmError("missing", file=file, field=f"chords[{i}].{missing[0]}")
        if chord["bar"] != i + 1:
            raise FarmError(f"bar {chord['bar']!r} out of order", file=file, field=f"chords[{i}].bar")
    _check_names(data, file)


# Names that become parts of file paths or reach SQL and HTML: checked before any is used.
LOOP_ID = re.compile(r"^[0-9a-f]{16}$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # style, part, role, patch
FILE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_#.+-]{0,199}$")  # LF_92.5_chords_warm-rhodes_F#m_<id>
KEY_NAME = re.compile(r"^[A-G](?:#|b)?(?:m|dor|hm)?$")
SAMPLE_RATES = (44100, 48000)


def _check_names(data: dict, file) -> None:
    """Every field a path, a query or a page is built from is what the farm itself writes."""
    def fail(field: str, message: str):
        raise FarmError(message, file=file, field=field)

    for field in ("id", "parent_id", "template_id"):
        if data[field] is not None and not LOOP_ID.match(data[field]):
            fail(field, f"{data[field]!r} is not a loop id (16 hex digits)")
    for field in ("style", "part", "role", "patch"):
        if not SAFE_NAME.match(data[field]):
            fail(field, f"{data[field]!r} is not a name (letters, digits, - and _)")
    if not FILE_STEM.match(data["name"]) or ".." in data["name"] or not data["name"].endswith("_" + data["id"]):
        fail("name", f"{data['name']!r} is not a loop file name ending in its id")
    if not KEY_NAME.match(data["key"]):
        fail("key", f"{data['key']!r} is not a key name")
    for field in ("path", "midi"):
        if data[field] is not None and not safe_relative_path(data[field]):
            fail(field, "must be relative to the catalog root and stay inside it")
    if Path(data["path"]).stem != data["name"]:
        fail("path", f"names {Path(data['path']).name!r}, not the loop's file {data['name']!r}")
    numbers = {"bpm": (1.0, 999.0), "bars": (1, 64), "samples": (1, 2**31), "channels": (1, 2)}
    for field, (low, high) in numbers.items():
        value = data[field]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            fail(field, f"{value!r} is outside {low}..{high}")
    if data["sample_rate"] not in SAMPLE_RATES:
        fail("sample_rate", f"{data['sample_rate']!r} is not one of {', '.join(map(str, SAMPLE_RATES))}")


def write_sidecar(path: str | Path, data: dict) -> None:
    """Write a sidecar atomically (temp name + rename), in the project's canonical JSON."""
    validate_sidecar(data, file=path)
    atomic_write_text(path, canonical_json(data))


def write_loop(root: str | Path, path: str, audio, sample_rate: int, fmt: str, **fields) -> dict:
    """Write a loop's audio file, then its sidecar (each atomically); return the sidecar.

    ``path`` is relative to the catalog ``root``; the sidecar gets the file's measured features
    (samples, level, onsets, centroid, onset fingerprint) and sha256 besides ``fields``. The sidecar is written last:
    a sidecar on disk means its audio is complete, which ``--resume`` relies on. If the sidecar
    cannot be written the audio file goes too, so no file is ever left without its row.
    """
    from farm.audio import write_audio
    from farm.fingerprint import loop_fingerprint
    from farm.qa import loop_features

    root = Path(root)
    features = loop_features(audio, sample_rate)
    if "fingerprint" not in fields:
        fields["fingerprint"] = loop_fingerprint(audio, sample_rate, fields["bpm"], fields["meter"], fields["bars"])
    write_audio(root / path, audio, sample_rate, fmt, labels=file_labels(fields))
    try:
        data = make_sidecar(
            path=path, format=fmt, sample_rate=sample_rate, channels=features.channels,
            samples=features.samples, duration_s=features.duration_s, rms_db=features.rms_db,
            onsets=features.onsets, centroid_hz=round(features.centroid_hz, 1),
            sha256=file_sha256(root / path), **fields)
        write_sidecar(root / sidecar_path(path), data)
    except BaseException:
        (root / path).unlink(missing_ok=True)
        raise
    return data


LABEL_FIELDS = ("id", "name", "style", "part", "key", "key_mode", "tonic_pc", "bpm", "meter", "bars", "progression")


def file_labels(fields: dict) -> dict:
    """What a loop's audio file carries of its labels (``farm.tags``): from its sidecar fields.
    ``farm check --repair`` makes the same bytes again from the catalog's row."""
    return {k: fields[k] for k in LABEL_FIELDS}


def read_sidecar(path: str | Path) -> dict:
    """Read and validate a sidecar."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FarmError(f"unreadable sidecar: {err}", file=path) from None
    validate_sidecar(data, file=path)
    return data


def loop_tags(template: Template, part: str, role: str, patch_name: str,
              patch_roles: tuple[str, ...] = ()) -> list[str]:
    """Words to find a loop by: style, part, roles, patch, key, mode, meter, tempo.

    Built from the loop's own labels, so a pitch-shifted or stretched loop is tagged with its new
    key and tempo, not its parent's.
    """
    keyed = part != "drums"  # a drum loop has no key to be found by
    words = [template.style, part, role, *patch_roles, patch_name, template.key.short if keyed else "",
             template.key.mode if keyed else "", str(template.meter), f"{template.bpm:g}bpm"]
    return list(dict.fromkeys(w for w in words if w))
