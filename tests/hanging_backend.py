"""A renderer backend for the batch tests: the embedded renderer, except that the very first
render of a batch hangs forever (the batch must kill that worker and retry on a fresh one).

Loaded by a batch through its ``plugins`` config (this directory on ``sys.path``); which render
was first is decided by who creates ``<marker_dir>/hung`` first, across all worker processes.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from farm.render import get_backend, register_backend


@register_backend("hanging")
class HangingBackend:
    name = "hanging"

    def __init__(self, marker_dir: str, **options):
        self.inner = get_backend("embedded", **options)
        self.version = self.inner.version
        self.marker = Path(marker_dir) / "hung"

    def render_raw(self, jobs):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.inner.render_raw(jobs)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        print("hanging on purpose", flush=True)
        while True:
            time.sleep(60)

    def close(self):
        self.inner.close()
