"""What the review room plays besides a catalogued file: a loop locked to the project's key and
tempo, and the other parts of its template through the patches the reviewer picks.

Both are made on demand, in this process, and cached under ``<root>/cache/`` as 32-bit float
WAV (no quantisation: a preview is heard, never catalogued; `farm check` ignores the folder).
Cache names are built only from checked values (a loop id from the catalog, whole semitones, a
bpm, a patch name from ``farm.patches``), never from a request's text.

Key lock moves a pitched loop by the fewest semitones (-6..+5) that bring its tonic to the
project's, or to the project key's relative major or minor when the modes differ (an A minor
loop in a C major project stays put); drums are never transposed. Tempo lock stretches every
loop to the project bpm with Rubber Band (pedalboard), one pass for both, to exactly
``loop_samples(bars, meter, bpm)`` samples. The labels shown follow exactly
(``farm.permute.shift``: key and every chord respelled, roman numerals kept).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from farm.catalog import CACHE_DIR, read_loop_audio
from farm.errors import FarmError
from farm.model import ChordLabel, Key, Meter, format_bpm, loop_samples

MINOR_FAMILY = ("minor", "harmonic_minor", "dorian")
PROJECT_KEY = re.compile(r"^([A-G](?:#|b)?)(m?)$")
BPM_RANGE = (40.0, 240.0)
# One render or stretch at a time: FluidSynth and Rubber Band are CPU-bound on 2 cores, and two
# requests for the same preview must not both write it.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Lock:
    """A project key and tempo to preview loops in; either may be None (not locked)."""

    key: Key | None = None
    bpm: float | None = None

    @classmethod
    def parse(cls, key: str | None, bpm: str | float | None) -> "Lock":
        """From the page's fields: ``key`` like ``Am``, ``F#``, ``Bb`` (empty: none), ``bpm`` a
        number in 40..240 (empty: none). A FarmError names the bad field."""
        parsed_key = None
        if key:
            m = PROJECT_KEY.match(str(key).strip())
            if not m:
                raise FarmError(f"{key!r} is not a key like Am, F#m, C or Bb", field="key")
            parsed_key = Key(m.group(1), "minor" if m.group(2) else "major")
        parsed_bpm = None
        if bpm not in (None, ""):
            try:
                parsed_bpm = float(bpm)
            except (TypeError, ValueError):
                raise FarmError(f"{bpm!r} is not a tempo in bpm", field="bpm") from None
            if not BPM_RANGE[0] <= parsed_bpm <= BPM_RANGE[1]:
                raise FarmError(f"{parsed_bpm:g} is outside {BPM_RANGE[0]:g}..{BPM_RANGE[1]:g} bpm", field="bpm")
            parsed_bpm = round(parsed_bpm, 2)
        return cls(parsed_key, parsed_bpm)


def semitones_to(loop: dict, key: Key | None) -> int:
    """Semitones (-6..+5) that put ``loop`` (a catalog row) in ``key``; 0 for drums or no key."""
    if key is None or loop["part"] == "drums":
        return 0
    target = key.tonic_pc
    loop_minor, key_minor = loop["key_mode"] in MINOR_FAMILY, key.mode in MINOR_FAMILY
    if loop_minor and not key_minor:
        target = (target + 9) % 12  # the relative minor of a major project key
    elif key_minor and not loop_minor:
        target = (target + 3) % 12  # the relative major of a minor project key
    return (target - int(loop["tonic_pc"]) + 6) % 12 - 6


def locked_labels(loop: dict, lock: Lock) -> dict:
    """``loop``'s labels as the preview plays them: key, bpm, and each bar's chord (symbol, roman,
    pitch classes, bass), moved exactly as the audio is."""
    from farm.permute.shift import transpose_chord, transpose_key

    semitones = semitones_to(loop, lock.key)
    old_key = Key(loop["key_tonic"], loop["key_mode"])
    new_key = transpose_key(old_key, semitones) if semitones else old_key
    chords = []
    for c in loop["chords"]:
        label = ChordLabel.from_dict(c)
        if semitones:
            label = transpose_chord(label, old_key, new_key, semitones)
        chords.append(label.to_dict())
    return {"key": new_key.short, "bpm": lock.bpm or loop["bpm"], "semitones": semitones, "chords": chords}


def _cache(root: Path, *parts: str) -> Path:
    path = Path(root, CACHE_DIR, *parts)
    if not path.resolve().is_relative_to(Path(root, CACHE_DIR).resolve()):
        raise FarmError("a cache path left the cache folder", file=path)  # names are checked: never
    return path


def locked_audio(root: str | Path, loop: dict, lock: Lock) -> Path:
    """The catalogued file of ``loop`` (a catalog row) when the lock changes nothing; otherwise a
    cached float WAV of it moved to the lock's key and stretched to its bpm (exactly the loop's
    bars at that bpm). The catalogued bytes are checked against their sha256 first."""
    root = Path(root)
    return locked_file(root, root / loop["path"], loop, lock, sha256=loop["sha256"])


def locked_file(root: str | Path, source: Path, loop: dict, lock: Lock, *, sha256: str | None = None) -> Path:
    """``source`` (the audio of ``loop``: its ``id``, ``part``, key, ``bpm``, ``bars``, ``meter``)
    under ``lock``: ``source`` itself when nothing moves, else a cached float WAV."""
    from farm.audio import read_audio, write_audio
    from farm.permute.shift import pitch_shift, time_stretch

    semitones = semitones_to(loop, lock.key)
    bpm = lock.bpm if lock.bpm is not None else float(loop["bpm"])
    if semitones == 0 and abs(bpm - loop["bpm"]) < 1e-9:
        return source
    path = _cache(Path(root), "preview", f"{loop['id']}_{semitones:+d}_{format_bpm(bpm)}.wav")
    with _LOCK:
        if not path.is_file():
            audio, sr = read_loop_audio(source, sha256) if sha256 else read_audio(source)
            if abs(bpm - loop["bpm"]) < 1e-9:
                moved = pitch_shift(audio, sr, semitones, high_quality=False)
            else:
                length = loop_samples(int(loop["bars"]), Meter.parse(loop["meter"]), bpm, sr)
                moved = time_stretch(audio, sr, length, semitones=semitones, high_quality=False)
            write_audio(path, np.asarray(moved, dtype=np.float32), sr, "wav32f")
    return path


def context_audio(root: str | Path, template_path: str, template_id: str, part: str, patch_name: str) -> Path:
    """``part`` of the template at ``root/template_path`` rendered through the patch
    ``patch_name`` (a finished loop: tail folded, loudness normalised), cached as float WAV."""
    from farm.audio import write_audio
    from farm.patches import patches_for_part
    from farm.render.run import load_template, render_part

    root = Path(root)
    template_dir = root / template_path
    template = load_template(template_dir)
    if template.id != template_id:
        raise FarmError(f"holds template {template.id}, not {template_id}", file=template_dir)
    if part not in {p.name for p in template.parts}:
        raise FarmError(f"the template has no part {part!r}", file=template_dir, field="part")
    fitting = {p.name: p for p in patches_for_part(part)}
    if patch_name not in fitting:
        raise FarmError(f"{patch_name!r} does not play {part}; fitting: {', '.join(sorted(fitting))}",
                        field="patch")
    patch = fitting[patch_name]
    path = _cache(root, "context", template_id, f"{part}_{patch_name}_{patch.content_hash[:12]}.wav")
    with _LOCK:
        if not path.is_file():
            audio, sr = render_part(template_dir, part, patch)
            write_audio(path, audio, sr, "wav32f")
    return path


def fitting_patches(part: str) -> list[str]:
    """Names of the patches whose roles can play ``part``."""
    from farm.patches import patches_for_part

    return sorted(p.name for p in patches_for_part(part))
