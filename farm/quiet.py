"""Imports of libraries that talk on stdout.

pyfluidsynth prints where it found libfluidsynth when the ``CI`` variable is set, and pretty_midi
imports pyfluidsynth. Our commands' stdout is data (ids, JSON, SQL results), so that line must not
reach it.
"""

import contextlib
import importlib
import io
from types import ModuleType


def import_quietly(name: str) -> ModuleType:
    """``import name`` with anything the import prints to stdout discarded."""
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module(name)
