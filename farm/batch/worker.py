"""The worker side: a process with a warm renderer that runs tasks (``render_task``) and says
when the catalog root cannot be written."""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import re
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from farm.errors import FarmError
from farm.model import Template, loop_content_id
from farm.qa import QALimits
from farm.sidecar import loop_tags, utc_now
from farm.batch.plan import _resolve

if TYPE_CHECKING:
    from farm.batch.pool import Task


TEMPLATES_KEPT = 64  # templates a worker keeps loaded: a night's memory does not grow with its length

# -- the worker side --------------------------------------------------------------------------
@dataclass
class Worker:
    """What a worker process keeps between tasks: the catalog root and a warm renderer."""

    root: Path
    backend_name: str
    backend_options: dict
    qa: QALimits
    _backend: Any = None
    _templates: dict = field(default_factory=dict)

    @property
    def backend(self):
        if self._backend is None:
            from farm.render import get_backend

            self._backend = get_backend(self.backend_name, **self.backend_options)
        return self._backend

    def template(self, rel: str) -> Template:
        """The template at ``rel``, kept for the next tasks (the last ``TEMPLATES_KEPT``)."""
        if rel in self._templates:
            self._templates[rel] = self._templates.pop(rel)  # most recent last
        else:
            self._templates[rel] = Template.load(self.root / rel)
            if len(self._templates) > TEMPLATES_KEPT:
                self._templates.pop(next(iter(self._templates)))
        return self._templates[rel]


def render_task(params: dict, worker: Worker) -> list[dict]:
    """Render a task's loops (one call to the backend, whatever templates they come from),
    check each, write its audio then its sidecar (``farm.sidecar.write_loop``); return the sidecars.
    """
    from farm.model import loop_name
    from farm.patches import load_patch
    from farm.qa import machine_check
    from farm.render import RenderJob, render_loops
    from farm.sidecar import loop_path, template_labels, write_loop

    root = worker.root
    jobs = []
    for spec in params["loops"]:
        template_dir = spec.get("template_dir", params.get("template_dir"))  # per task in older plans
        patch = load_patch(spec["patch_path"])
        if patch.content_hash != spec["patch_hash"]:
            raise FarmError("the patch changed since the batch was planned; start a new batch",
                            file=patch.path, field="content_hash")
        jobs.append(RenderJob(template=worker.template(template_dir), template_dir=root / template_dir,
                              part=spec["part"], patch=patch, sample_rate=params["sample_rate"]))
    sidecars = []
    for spec, loop in zip(params["loops"], render_loops(jobs, worker.backend)):
        job, patch, sr = loop.job, loop.job.patch, loop.sample_rate
        template, template_dir = job.template, spec.get("template_dir", params.get("template_dir"))
        loop_id = loop_content_id(template.id, job.part, patch.content_hash, loop.renderer,
                                  loop.renderer_version, sr, params["format"])
        if loop_id != spec["id"]:  # another renderer version than the batch was planned for
            raise FarmError(f"renderer is {loop.renderer} {loop.renderer_version!r}, the batch was planned "
                            f"for {params['renderer']} {params['renderer_version']!r}", field="renderer")
        reason = machine_check(loop.audio, sr, expected_samples=job.loop_samples,
                               target_lufs=patch.target_lufs, lufs=loop.lufs, limits=worker.qa)
        labels = template_labels(template, sr)
        name = loop_name(template.bpm, job.part, patch.name, labels["key"], loop_id)
        rel = loop_path(template.style, name, params["format"])
        sidecar = write_loop(
            root, rel, loop.audio, sr, params["format"],
            id=loop_id, name=name, template_id=template.id, part=job.part, role=spec["role"],
            patch=patch.name, patch_hash=patch.content_hash, renderer=loop.renderer,
            renderer_version=loop.renderer_version, lufs=float(loop.lufs), true_peak_db=float(loop.true_peak_db),
            midi=f"{template_dir}/{template.part(job.part).midi}",
            status="rejected" if reason else "pending", reject_reason=reason,
            tags=loop_tags(template, job.part, spec["role"], patch.name, patch.roles),
            batch_id=params["batch_id"], **labels)
        print(f"wrote {rel} ({'rejected: ' + reason if reason else 'pending'})", flush=True)
        sidecars.append(sidecar)
    return sidecars


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the writer dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(conn, parent_pid: int, log_path: str, root: str, backend: str, options: dict,
                 plugins: Sequence[str], qa: dict) -> None:
    """A worker process: warm up, then run tasks from ``conn`` until told to stop."""
    os.setpgrp()  # its own process group, so a timeout kills whatever it started too
    _die_with_parent()
    if os.getppid() != parent_pid:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the writer decides what Ctrl-C means
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)  # C libraries (FluidSynth ...) print here too
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    try:
        for module in plugins:
            importlib.import_module(module)
        worker = Worker(Path(root), backend, options, QALimits(**qa))
        worker.backend  # warm: the renderer is ready before the first task
    except BaseException as err:  # noqa: BLE001 - reported to the writer, which stops the batch
        traceback.print_exc()
        conn.send(("init_error", None, _one_line(err)))
        return
    print(f"worker {os.getpid()} ready: {backend} {getattr(worker.backend, 'version', '')}", flush=True)
    conn.send(("ready", None, os.getpid()))
    try:
        _serve(conn, worker)
    finally:
        # A worker told to stop (or left by its writer) lets its backend clean up after itself:
        # REAPER's work and instance directories. A worker killed for a timeout cannot; the
        # backends keep nothing there that matters.
        with contextlib.suppress(Exception):
            worker.backend.close()
        print(f"worker {os.getpid()} stopped", flush=True)


# A task's first line in the worker log, after its time stamp: the pool cuts each task's log
# excerpt where the next task's begins.
TASK_MARK = "] task {}: "


def _serve(conn, worker: Worker) -> None:
    """Run tasks from ``conn`` until told to stop (``None``) or the writer is gone."""
    functions: dict[str, Callable] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, task_fn, params = message
        loops = params.get("loops") or []
        what = (f"{loops[0].get('template_id', params.get('template_id', ''))} {loops[0]['part']} "
                f"{loops[0]['patch']}" if len(loops) == 1 else f"{len(loops)} loops" if loops else "")
        print(f"[{utc_now()}{TASK_MARK.format(task_id)}{task_fn} {what}", flush=True)
        try:
            if task_fn not in functions:
                functions[task_fn] = _resolve(task_fn)
            result = functions[task_fn](params, worker)
        except Exception as err:  # noqa: BLE001 - one task's failure is recorded, the worker lives on
            traceback.print_exc()
            sys.stdout.flush()
            problem = write_problem(err, worker.root)
            if problem:  # the root cannot be written: no retry helps, the writer stops the batch
                conn.send(("stop", task_id, problem))
            else:
                conn.send(("error", task_id, _one_line(err)))
        else:
            conn.send(("done", task_id, result))


# The disk, not the task: a full or read-only file system, a quota. Permission errors count
# only inside the catalog root (elsewhere they are about an input, and the task fails alone).
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
_NO_PERMISSION = {errno.EACCES, errno.EPERM}
# farm.files writes to ".<stem>.<8 random characters>.part<suffix>" beside the target.
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[A-Za-z0-9_]{8}\.part(?P<suffix>\.[^.]*)?$")


def write_problem(err: BaseException, root: Path) -> dict | None:
    """``{"file", "message"}`` when ``err`` (or what caused it) says the catalog root cannot be
    written; None for any other error. A temporary name is reported as the file it was for."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            name = os.fsdecode(err.filename) if err.filename is not None else None
            inside = name is not None and Path(os.path.abspath(name)).is_relative_to(os.path.abspath(root))
            if err.errno in _NO_ROOM or (err.errno in _NO_PERMISSION and inside):
                if name is not None:
                    match = _TEMP_NAME.match(Path(name).name)
                    if match:
                        name = str(Path(name).with_name(match["stem"] + (match["suffix"] or "")))
                return {"file": name or str(root), "message": f"cannot write: {err.strerror or os.strerror(err.errno)}"}
        err = err.__cause__ or err.__context__
    return None


class RootNotWritable(Exception):
    """A worker could not write into the catalog root; the batch must stop."""

    def __init__(self, task: "Task", problem: dict, log: str, seconds: float):
        super().__init__(problem["message"])
        self.task, self.problem, self.log, self.seconds = task, problem, log, seconds


def _one_line(err: BaseException) -> str:
    text = err.line() if isinstance(err, FarmError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())[:500]


