"""Answers that depend only on their inputs, kept on disk between runs.

music21 takes about a millisecond to realise one roman numeral in a key, and checking every rule
set before a night asks it several hundred times: most of the second a night spends before its
first render. The answers never change while the code that computes them and music21 stay the
same, so they are kept in one JSON file per question, named for a hash of exactly that (a new
music21 or an edited ``farm/theory.py`` starts a new file). Errors are never kept: a figure
music21 cannot read is asked again and fails again.

The folder is ``$FARM_CACHE_DIR`` if set (``off``: keep nothing on disk), else
``$XDG_CACHE_HOME/loopfarm`` or ``~/.cache/loopfarm``. It is only ever a shortcut: a folder
that cannot be read or written is passed over, and deleting it is always safe.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

ENV = "FARM_CACHE_DIR"
FORMAT = 1  # bump when the file layout changes


def cache_dir() -> Path | None:
    """Where answers are kept, or None when ``$FARM_CACHE_DIR`` is ``off``."""
    value = os.environ.get(ENV, "").strip()
    if value == "off":
        return None
    if value:
        return Path(value)
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loopfarm"
    except RuntimeError:  # no home to find: keep nothing
        return None


def version_of(*sources: Path, packages: tuple[str, ...] = ()) -> str:
    """A short hash of the ``sources``' bytes and the installed ``packages``' versions: what a
    question's answers depend on."""
    digest = hashlib.sha256(f"memo {FORMAT}\n".encode())
    for source in sources:
        digest.update(source.read_bytes())
    for name in packages:
        try:
            digest.update(f"{name} {metadata.version(name)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} absent\n".encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def kept(name: str, sources: tuple[Path, ...] = (), packages: tuple[str, ...] = ()) -> "DiskMemo":
    """This process's memo of one question, ``name``, whose answers depend on the ``sources``'
    bytes and the ``packages``' versions (one per process: what it learns is written at exit)."""
    return DiskMemo(name, version_of(*sources, packages=packages))


class DiskMemo:
    """A ``str -> JSON value`` map for one question, read from disk on first use and written back
    (merged with what other processes added meanwhile) when the process exits."""

    def __init__(self, name: str, version: str):
        self.name, self.version = name, version
        self._known: dict | None = None
        self._new: dict = {}

    @property
    def path(self) -> Path | None:
        folder = cache_dir()
        return None if folder is None else folder / f"{self.name}-{self.version}.json"

    def _read(self) -> dict:
        path = self.path
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str):
        if self._known is None:
            self._known = self._read()
        return self._new.get(key, self._known.get(key))

    def put(self, key: str, value) -> None:
        if not self._new:
            atexit.register(self.save)
        self._new[key] = value

    def save(self) -> None:
        """Write what this process learnt, atomically; a folder that cannot be written is passed over."""
        path = self.path
        if not self._new or path is None:
            return
        merged = {**self._read(), **self._new}
        try:
            from farm.files import atomic_write_text

            atomic_write_text(path, json.dumps(merged, sort_keys=True))
        except OSError:
            return
        self._known, self._new = merged, {}
