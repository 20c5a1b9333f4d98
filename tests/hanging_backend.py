"""Renderer backends for the batch tests, loaded by a batch through its ``plugins`` config (this
directory on ``sys.path``). Both render with the embedded renderer and misbehave on purpose:

* ``hanging``: the very first render of a batch hangs forever (the batch must kill that worker
  and retry on a fresh one). Which render was first is decided by who creates
  ``<marker_dir>/hung`` first, across all worker processes. With ``hang_patch``, instead, every
  render of a loop through that patch hangs, on every attempt, each leaving
  ``<marker_dir>/hung-<pid>``. ``close()`` leaves ``<marker_dir>/closed-<pid>``.
* ``full-disk``: while the file ``full_flag`` exists, the disk is "full" for the worker: every
  atomic write of a file ending in ``full_suffix`` (the sidecar by default, written after its
  audio) fails with ENOSPC once its temporary file has been written, as a real full disk fails.
* ``flaky-node``: fails every render on a machine whose environment has ``FARM_TEST_BAD_NODE``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

import farm.files
from farm.render import get_backend, register_backend


@register_backend("hanging")
class HangingBackend:
    name = "hanging"

    def __init__(self, marker_dir: str, hang_patch: str | None = None, **options):
        self.inner = get_backend("embedded", **options)
        self.version = self.inner.version
        self.marker_dir = Path(marker_dir)
        self.marker = self.marker_dir / "hung"
        self.hang_patch = hang_patch

    def render_raw(self, jobs):
        if self.hang_patch is not None:
            if any(job.patch.name == self.hang_patch for job in jobs):
                (self.marker_dir / f"hung-{os.getpid()}").write_text(self.hang_patch)
                self._hang()
            return self.inner.render_raw(jobs)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.inner.render_raw(jobs)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        self._hang()

    @staticmethod
    def _hang():
        print("hanging on purpose", flush=True)
        while True:
            time.sleep(60)

    def close(self):
        with contextlib.suppress(OSError):
            (self.marker_dir / f"closed-{os.getpid()}").touch()
        self.inner.close()


@register_backend("full-disk")
class FullDiskBackend:
    name = "full-disk"

    def __init__(self, full_flag: str, full_suffix: str = ".json", **options):
        self.inner = get_backend("embedded", **options)
        self.version = self.inner.version
        self.full_flag, self.full_suffix = Path(full_flag), full_suffix

    def render_raw(self, jobs):
        # Installed here, in the worker process only (the batch's writer also makes a backend).
        if not getattr(farm.files.atomic_path, "full_disk", False):
            farm.files.atomic_path = _full_disk(farm.files.atomic_path, self.full_flag, self.full_suffix)
        return self.inner.render_raw(jobs)

    def close(self):
        self.inner.close()


@register_backend("flaky-node")
class FlakyNodeBackend:
    """Renders as the embedded renderer, except on a machine whose environment has
    ``FARM_TEST_BAD_NODE`` set: there every render fails at once (a node with a broken install)."""

    name = "flaky-node"

    def __init__(self, **options):
        self.inner = get_backend("embedded", **options)
        self.version = self.inner.version

    def render_raw(self, jobs):
        if os.environ.get("FARM_TEST_BAD_NODE"):
            raise RuntimeError("this node's renderer is broken on purpose")
        return self.inner.render_raw(jobs)

    def close(self):
        self.inner.close()


def _full_disk(atomic_path, flag: Path, suffix: str):
    @contextlib.contextmanager
    def full(path):
        with atomic_path(path) as tmp:
            yield tmp
            if flag.exists() and str(path).endswith(suffix):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    full.full_disk = True
    return full


def marking_task(params, worker):
    """A task that only leaves ``<marker_dir>/began-<n>`` when a worker begins it."""
    (Path(params["marker_dir"]) / f"began-{params['n']}").touch()
    print(f"marking {params['n']}", flush=True)
    return []
