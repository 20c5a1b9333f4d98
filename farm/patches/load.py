"""Finding and loading patches (by name from ``patches/`` or by path), their content hash, and the
effects chain they build."""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from farm.errors import FarmError, closest
from farm.files import read_toml
from farm.quiet import import_quietly
from farm.patches.model import DEFAULT_SOUNDFONTS, PATCHES_DIR, Patch
from farm.patches.parse import _parse_patch


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
    return replace(patch, digest=patch_digest(patch.path, patch.reaper_fxchain, patch.sources))


def patch_digest(toml_path: Path, fxchain: Path | None, sources: Iterable[Path] = ()) -> str:
    """sha256 of a patch's TOML bytes, then its ``.RfxChain`` bytes if that file exists, then each
    source file's name and bytes (a Faust ``.dsp``, a plugin state); for a ``.dsp``, then how it
    is played (``FAUST_PLAYER``), so only Faust loops change ids when that changes."""
    from farm.patches.faust import FAUST_PLAYER

    h = hashlib.sha256(Path(toml_path).read_bytes())
    if fxchain is not None and Path(fxchain).is_file():
        h.update(b"\0RfxChain\0")
        h.update(Path(fxchain).read_bytes())
    for source in sources:
        h.update(b"\0" + Path(source).name.encode() + b"\0")
        h.update(Path(source).read_bytes())
        if Path(source).suffix == ".dsp":
            h.update(b"\0" + FAUST_PLAYER.encode())
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


def apply_effects(patch: Patch, audio, sample_rate: int):
    """``audio`` (float32 ``(channels, samples)``) through the patch's effect chain, from a reset
    state; unchanged when the patch has none."""
    if not patch.effects:
        return audio
    return build_effects(patch)(audio, sample_rate, reset=True)


