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


@contextlib.contextmanager
def native_output_discarded():
    """Discard what native code writes to file descriptors 1 and 2 (libfaust's polyphony prints
    "Steal playing voice ..." and compile notes with printf): our stdout is data, stderr is for
    our one-line errors. Python-level writes are flushed first, so nothing of ours is lost."""
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    saved = []
    try:
        with open(os.devnull, "wb") as null:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(null.fileno(), fd)
                except OSError:
                    pass
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
