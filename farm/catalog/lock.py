"""One writer at a time: the lock `farm batch` and `farm permute` take on a catalog root.

A batch's reconcile after a crash and a permute stage both add rows and remove leftover files;
run together they could race (a permutation's files taken for leftovers). The lock is an
``flock`` on ``<root>/.batch.lock``: the kernel drops it when its holder dies, even by SIGKILL,
so a killed night never leaves the catalog locked. The file holds the holder's pid and verb.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from farm.errors import FarmError

LOCK_FILE = ".batch.lock"


@contextlib.contextmanager
def writer_lock(root: str | Path, verb: str = "batch"):
    """Hold the catalog's writer lock for ``verb`` (batch, permute); FarmError at once when another
    process holds it."""
    root = Path(root)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split()
            pid = holder[0] if holder else "?"
            what = holder[1] if len(holder) > 1 else "batch"
            raise FarmError(f"another {what} is running on this catalog (pid {pid}); wait for it to finish",
                            file=root, field="lock") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {verb}".encode(), 0)
        yield
    finally:
        os.close(fd)
