"""A render node: a Dask worker that runs a night's tasks with a warm renderer (``farm node``).

The node runs each task the way the local pool does, in a renderer process of its own that it
kills when the task passes its timeout (``farm.batch.pool.WorkerPool``, one per Dask thread, kept
warm between tasks). It works in a scratch root of its own: the writer sends each task's
templates, patches and parent audio with it, and the node sends back each loop's sidecar and
file bytes, then forgets them. With a shared folder (``[cluster] shared_root = true``) it renders
straight into the catalog root, as a local worker does, and sends back the sidecars.

    farm node tcp://127.0.0.1:8786 --nthreads 2
"""
from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

from farm.errors import FarmError

PLUGIN = "farm-node"
SCRATCH_ENV = "FARM_NODE_SCRATCH"


class FarmNode(WorkerPlugin):
    """The node's state: its scratch root and warm renderer processes, by batch settings."""

    def __init__(self, scratch: str | None = None):
        self.scratch = Path(scratch or os.environ.get(SCRATCH_ENV) or tempfile.mkdtemp(prefix="farm-node-"))
        self._pools: dict[tuple, queue.Queue] = {}
        self._lock = threading.Lock()
        self.nthreads = 1

    def setup(self, worker) -> None:
        self.nthreads = worker.state.nthreads
        self.scratch.mkdir(parents=True, exist_ok=True)
        # warm: the renderer of a default night starts now, not with the first task
        import dataclasses

        from farm.qa import QALimits

        self.pool(self.scratch, "embedded", {}, (), dataclasses.asdict(QALimits()), 300.0)

    def teardown(self, worker) -> None:
        for pools in self._pools.values():
            while not pools.empty():
                pools.get().close()

    def pool(self, root: Path, backend: str, options: dict, plugins: tuple, qa: dict, timeout_s: float) -> queue.Queue:
        """The queue of one-process pools for these settings (one per Dask thread), made on first use."""
        import json

        from farm.batch.pool import WorkerPool
        from farm.qa import QALimits

        key = (str(root), backend, json.dumps(options, sort_keys=True), tuple(plugins),
               json.dumps(qa, sort_keys=True), float(timeout_s))
        with self._lock:
            if key not in self._pools:
                pools = queue.Queue()
                for i in range(self.nthreads):
                    pools.put(WorkerPool(1, root=Path(root), backend=backend, backend_options=options,
                                         plugins=plugins, qa=QALimits(**qa), log_dir=self.scratch / "logs",
                                         timeout_s=timeout_s))
                self._pools[key] = pools
            return self._pools[key]


def dask_setup(worker) -> None:
    """``--preload farm.batch.node``: the worker gets its FarmNode plugin before its first task."""
    import asyncio

    return asyncio.ensure_future(worker.plugin_add(FarmNode(), name=PLUGIN, catch_errors=False))


def run_on_node(function: str, params: dict, batch: dict) -> dict:
    """Run one task on this node; what the writer needs back (never raises for a task's failure:
    the writer decides where it is retried).

    ``batch``: ``shared_root`` (the catalog root, when nodes share it) or ``files`` (path relative
    to the root -> bytes) to lay down first; ``backend``, ``backend_options``, ``plugins``, ``qa``,
    ``timeout_s``; ``task_id``.
    """
    import time

    from distributed import get_worker

    from farm.batch.pool import Task
    from farm.files import atomic_write_bytes, inside

    worker = get_worker()
    node = worker.plugins[PLUGIN]
    shared = batch.get("shared_root")
    root = Path(shared) if shared else node.scratch
    out = {"node": worker.address, "status": "error", "sidecars": [], "files": {}, "log": "", "error": "",
           "seconds": 0.0}
    started = time.monotonic()
    try:
        for rel, data in (batch.get("files") or {}).items():
            target = inside(root, rel, "files")
            if not target.is_file() or target.read_bytes() != data:
                atomic_write_bytes(target, data)
    except (OSError, FarmError) as err:
        out["error"] = f"cannot lay down the task's files: {err}"
        return out
    for spec in params.get("loops", ()):  # patch files sent with the task live in this root
        if not Path(spec["patch_path"]).is_absolute():
            spec["patch_path"] = str(root / spec["patch_path"])
    pools = node.pool(root, batch["backend"], batch["backend_options"], tuple(batch["plugins"]), batch["qa"],
                      batch["timeout_s"])
    pool = pools.get()
    try:
        def done(task, sidecars, log, seconds):
            out.update(status="done", sidecars=sidecars, log=log, seconds=seconds)

        def failed(task, error, log, seconds, final):
            out.update(status="error", error=error, log=log, seconds=seconds)

        pool.run([Task(batch["task_id"], batch.get("stage", "render"), "", function, params)], max_attempts=1,
                 on_start=lambda task, pid: None, on_done=done, on_error=failed)
    except FarmError as err:  # the renderer could not even start here
        out["error"] = err.line()
    except Exception as err:  # noqa: BLE001 - a root that cannot be written, a pool that broke: said, not raised
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        pools.put(pool)
    if out["status"] == "done" and not shared:
        try:
            for sidecar in out["sidecars"]:
                from farm.sidecar import sidecar_path

                for rel in (sidecar["path"], sidecar_path(sidecar["path"]).as_posix()):
                    path = inside(root, rel, "path")
                    out["files"][rel] = path.read_bytes()
                    path.unlink()
        except (OSError, FarmError) as err:
            out.update(status="error", error=f"cannot read back what the task wrote: {err}", files={})
    out["seconds"] = out["seconds"] or time.monotonic() - started
    return out


def probe_on_node() -> dict:
    """This node's render probe (``farm.batch.probe``), as JSON, or the line saying why it failed."""
    from farm.batch.probe import machine_probe

    try:
        return {"probe": machine_probe().to_json()}
    except FarmError as err:
        return {"error": err.line()}


def start_node(address: str, *, nthreads: int = 1, nworkers: int = 1, resources: str | None = None,
               scratch: str | None = None, name: str | None = None) -> None:
    """``farm node``: become a Dask worker of the scheduler at ``address`` (this process is replaced).

    It advertises ``resources`` (default: ``embedded`` for each thread), and runs tasks in renderer
    processes of its own (so Dask's worker processes are not daemons).
    """
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    if dask is None:
        raise FarmError("the dask command is missing; install Loop Farm again (pip install -e .)", field="node")
    if not address or any(c.isspace() for c in address):
        raise FarmError(f"expected a scheduler address such as tcp://127.0.0.1:8786, got {address!r}",
                        field="address")
    resources = resources or f"embedded={nthreads}"
    for item in resources.split(","):
        key, _, value = item.strip().partition("=")
        if not key or not value.replace(".", "", 1).isdigit():
            raise FarmError(f"expected NAME=COUNT[,NAME=COUNT], got {resources!r}", field="resources")
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    if scratch:
        env[SCRATCH_ENV] = str(Path(scratch).resolve())
    args = [dask, "worker", address, "--nthreads", str(nthreads), "--nworkers", str(nworkers),
            "--resources", resources, "--preload", "farm.batch.node"]
    if nworkers == 1:
        args.append("--no-nanny")  # one process: killing it kills the node, as a lost machine would
    if name:
        args += ["--name", name]
    os.execve(dask, args, env)
