"""The worker pool: ``-j N`` worker processes, each task with its timeout, retries on a fresh
worker, and the log excerpt of a failed one."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import multiprocessing
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from farm.errors import FarmError
from farm.qa import QALimits
from farm.batch.config import LOG_EXCERPT_CHARS, WORKER_START_TIMEOUT_S
from farm.batch.worker import RootNotWritable, _worker_main


# glibc's allocator in workers: no mmap (and no trim) below 256 MB, 64 MB of heap to spare.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
                 "MALLOC_TOP_PAD_": str(64 << 20)}
AFFINITY_WINDOW = 256  # queued tasks a free worker looks through for one it is warm for
WARM_KEYS = 64  # what a worker is remembered to have warm (its compiled patches, its parents)


def affinity(task: "Task") -> str | None:
    """What a worker keeps warm for ``task`` and would rather not make again: the patch of a
    render (a compiled Faust instrument, a loaded plugin) or the parent of a permutation (its
    decoded audio and onsets). Any worker makes the same bytes; this only saves the work."""
    loops = task.params.get("loops")
    if loops:
        return loops[0].get("patch_hash")
    parent = task.params.get("parent")
    return parent.get("id") if isinstance(parent, dict) else None


class TaskQueue:
    """Tasks waiting for a worker, read from ``tasks`` only as they are needed: a night of a
    million tasks keeps ``ahead`` of them in memory (and any retries, put back in front)."""

    def __init__(self, tasks: Iterable["Task"], ahead: int = 2 * AFFINITY_WINDOW):
        self._source = iter(tasks)
        self._ahead = ahead
        self.items: deque = deque()

    def fill(self) -> None:
        while len(self.items) < self._ahead:
            task = next(self._source, None)
            if task is None:
                return
            self.items.append(task)

    def __bool__(self) -> bool:
        self.fill()
        return bool(self.items)

    def popleft(self) -> "Task":
        self.fill()
        return self.items.popleft()

    def appendleft(self, task: "Task") -> None:
        self.items.appendleft(task)


# -- the pool ---------------------------------------------------------------------------------
@dataclass
class Task:
    """A task row as the pool sees it."""

    id: int
    stage: str
    output_id: str
    function: str
    params: dict
    attempts: int = 0

    @property
    def size(self) -> int:
        """Loops the task makes (a render task of a chunking backend makes many)."""
        return max(1, len(self.params.get("loops", ())))


@dataclass
class _Slot:
    process: Any
    conn: Any
    log_path: Path
    ready: bool = False
    task: Task | None = None
    timeout_s: float = 0.0
    started: float = 0.0
    deadline: float = math.inf
    log_offset: int = 0
    warm: dict = dataclasses.field(default_factory=dict)  # affinity keys, oldest first

    @property
    def pid(self) -> int:
        return self.process.pid


class WorkerPool:
    """``size`` worker processes with per-task deadlines (``timeout_s`` per loop of the task).

    concurrent.futures cannot kill one hung task; here each worker runs one task at a time over
    its own pipe, so a task past its deadline is stopped by killing exactly its worker (its
    process group), and a fresh worker takes the slot.
    """

    def __init__(self, size: int, *, root: Path, backend: str, backend_options: dict,
                 plugins: Sequence[str], qa: QALimits, log_dir: Path, timeout_s: float):
        self.size = size
        self.timeout_s = timeout_s
        self.log_dir = log_dir
        self._args = (str(root.resolve()), backend, dict(backend_options), tuple(plugins),
                      dataclasses.asdict(qa))
        # spawn: a fresh interpreter per worker, never a fork of the writer's SQLite connection.
        self._ctx = multiprocessing.get_context("spawn")
        # One worker per core: single-threaded BLAS/OpenMP in each, so -j N does not ask for
        # N x cores threads (the workers inherit this environment; the writer's is loaded already).
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        # Loop-sized arrays (a few MB each, made and freed for every loop) come from the heap
        # and are reused, instead of glibc mapping fresh zeroed pages for each: a night spent
        # 12 % of its CPU in the kernel doing that. A worker then keeps its largest working set.
        for var, value in WORKER_MALLOC.items():
            os.environ.setdefault(var, value)
        self._count = 0
        self.slots: list[_Slot] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(size):
            self.slots.append(self._spawn())

    def _spawn(self) -> _Slot:
        self._count += 1
        log_path = self.log_dir / f"worker-{self._count}.log"
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child, os.getpid(), str(log_path), *self._args),
                                    daemon=True, name=f"farm-worker-{self._count}")
        process.start()
        child.close()
        return _Slot(process, parent, log_path, started=time.monotonic(),
                     deadline=time.monotonic() + max(WORKER_START_TIMEOUT_S, self.timeout_s))

    def _kill(self, slot: _Slot) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(slot.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            slot.process.kill()
        slot.process.join(5)
        slot.conn.close()

    def _log_excerpt(self, slot: _Slot) -> str:
        try:
            with open(slot.log_path, "rb") as f:
                f.seek(slot.log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text[-LOG_EXCERPT_CHARS:]

    def run(self, tasks: Iterable[Task], *, max_attempts: int,
            on_start: Callable[[Task, int], None],
            on_done: Callable[[Task, list, str, float], None],
            on_error: Callable[[Task, str, str, float, bool], None]) -> None:
        """Run every task; the callbacks (in this process) record what happens.

        ``on_error(task, error, log, seconds, final)``: ``final`` when the task has used its
        ``max_attempts`` and is given up.
        """
        queue = TaskQueue(tasks)
        while queue or any(s.task for s in self.slots):
            now = time.monotonic()
            for slot in self.slots:
                if slot.ready and slot.task is None and queue:
                    task = self._next_task(queue, slot)
                    task.attempts += 1
                    on_start(task, slot.pid)
                    slot.task, slot.started = task, now
                    slot.timeout_s = self.timeout_s * task.size
                    slot.deadline = now + slot.timeout_s
                    slot.log_offset = slot.log_path.stat().st_size if slot.log_path.exists() else 0
                    try:
                        slot.conn.send((task.id, task.function, task.params))
                    except OSError:  # the idle worker died: a fresh one takes the task, no attempt lost
                        task.attempts -= 1
                        queue.appendleft(task)
                        self._kill(slot)
                        self.slots[self.slots.index(slot)] = self._spawn()
            busy = [s for s in self.slots if s.task or not s.ready]
            timeout = max(0.0, min(s.deadline for s in busy) - time.monotonic()) if busy else None
            ready = wait_for([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout)
            for index, slot in enumerate(list(self.slots)):
                problem = None
                if slot.conn in ready or slot.process.sentinel in ready:
                    try:
                        kind, task_id, payload = slot.conn.recv() if slot.conn.poll() else (None, None, None)
                    except (EOFError, OSError):
                        kind = None
                    if kind == "ready":
                        slot.ready = True
                        slot.deadline = math.inf
                        continue
                    if kind == "init_error":
                        self.close()
                        raise FarmError(f"a worker could not start: {payload}", field="backend")
                    if kind in ("done", "error", "stop") and slot.task and task_id == slot.task.id:
                        task, seconds = slot.task, time.monotonic() - slot.started
                        log = self._log_excerpt(slot)
                        slot.task, slot.deadline = None, math.inf
                        if kind == "stop":
                            raise RootNotWritable(task, payload, log, seconds)
                        if kind == "done":
                            on_done(task, payload, log, seconds)
                        else:
                            self._failed(task, payload, log, seconds, max_attempts, queue, on_error)
                        continue
                    if not slot.process.is_alive():
                        problem = f"worker {slot.pid} died (exit code {slot.process.exitcode})"
                if problem is None and time.monotonic() >= slot.deadline:
                    problem = (f"timed out after {slot.timeout_s:g} s: worker {slot.pid} killed"
                               if slot.task else f"worker {slot.pid} did not start within "
                                                 f"{max(WORKER_START_TIMEOUT_S, self.timeout_s):g} s")
                if problem is None:
                    continue
                if not slot.ready and slot.task is None:  # a worker that cannot even start
                    self.close()
                    raise FarmError(problem, field="backend")
                task, seconds, log = slot.task, time.monotonic() - slot.started, self._log_excerpt(slot)
                self._kill(slot)
                self.slots[index] = self._spawn()
                if task is not None:
                    self._failed(task, problem, log, seconds, max_attempts, queue, on_error)

    def _next_task(self, queue: TaskQueue, slot: _Slot) -> Task:
        """The first queued task (within ``AFFINITY_WINDOW``) this worker is warm for, else the
        first no other worker is warm for, else the first."""
        queue.fill()
        items = queue.items
        others = [s.warm for s in self.slots if s is not slot]
        fallback = None
        for i, task in enumerate(itertools.islice(items, AFFINITY_WINDOW)):
            key = affinity(task)
            if key is not None and key in slot.warm:
                fallback = i
                break
            if fallback is None and (key is None or not any(key in warm for warm in others)):
                fallback = i
        i = fallback or 0
        task = items[i]
        del items[i]
        key = affinity(task)
        if key is not None:
            slot.warm.pop(key, None)
            slot.warm[key] = True
            if len(slot.warm) > WARM_KEYS:
                slot.warm.pop(next(iter(slot.warm)))
        return task

    @staticmethod
    def _failed(task, error, log, seconds, max_attempts, queue, on_error) -> None:
        final = task.attempts >= max_attempts
        on_error(task, error, log, seconds, final)
        if not final:
            queue.appendleft(task)  # retried next, on whichever worker is free (a fresh one after a kill)

    def close(self) -> None:
        """Stop every worker: idle ones are asked to finish, busy ones (interrupted) are killed."""
        for slot in self.slots:
            if slot.task is not None:
                self._kill(slot)
                continue
            with contextlib.suppress(Exception):
                slot.conn.send(None)
        deadline = time.monotonic() + 5
        for slot in self.slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                self._kill(slot)
            with contextlib.suppress(Exception):
                slot.conn.close()
        self.slots = []


