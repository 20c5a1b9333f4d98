"""The worker pool: ``-j N`` worker processes, each task with its timeout, retries on a fresh
worker, and the log excerpt of a failed one. A worker holds its next task in its pipe while it
runs one, so it never waits on the writer between tasks."""
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
from farm.batch.worker import TASK_MARK, RootNotWritable, _worker_main


# glibc's allocator in workers: no mmap (and no trim) below 256 MB, 64 MB of heap to spare.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
                 "MALLOC_TOP_PAD_": str(64 << 20)}
AFFINITY_WINDOW = 256  # queued tasks a free worker looks through for one it is warm for
WARM_KEYS = 64  # what a worker is remembered to have warm (its compiled patches, its parents)
# Tasks a worker holds: the one it runs and the next, already in its pipe, so it starts that
# the moment it finishes instead of idling while the writer catalogues its result and answers.
AHEAD_PER_WORKER = 2


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
    tasks: deque = dataclasses.field(default_factory=deque)  # sent to it: the first runs, the rest wait
    timeout_s: float = 0.0
    started: float = 0.0
    deadline: float = math.inf
    log_offset: int = 0
    warm: dict = dataclasses.field(default_factory=dict)  # affinity keys, oldest first

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def task(self) -> Task | None:
        """The task the worker is running (its deadline, start and log are this one's)."""
        return self.tasks[0] if self.tasks else None


class WorkerPool:
    """``size`` worker processes with per-task deadlines (``timeout_s`` per loop of the task).

    concurrent.futures cannot kill one hung task; here each worker runs one task at a time over
    its own pipe, so a task past its deadline is stopped by killing exactly its worker (its
    process group), and a fresh worker takes the slot. The task waiting behind it in the pipe
    goes back to the queue, never begun: no attempt counted.
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

    def _log_excerpt(self, slot: _Slot, after: Task | None = None) -> str:
        """What the worker logged since its running task began; with ``after`` (the task it
        went on to), only up to that task's first line, and the log offset moves there."""
        try:
            with open(slot.log_path, "rb") as f:
                f.seek(slot.log_offset)
                data = f.read()
        except OSError:
            return ""
        end = len(data)
        if after is not None:
            at = data.find(TASK_MARK.format(after.id).encode())
            if at >= 0:
                end = data.rfind(b"\n", 0, at) + 1
            slot.log_offset += end
        return data[:end].decode("utf-8", "replace")[-LOG_EXCERPT_CHARS:]

    def _begin(self, slot: _Slot, task: Task, now: float, on_start: Callable[[Task, int], None]) -> None:
        """``task``, first in the worker's pipe, is the one it runs now: an attempt, a deadline."""
        task.attempts += 1
        on_start(task, slot.pid)
        slot.started = now
        slot.timeout_s = self.timeout_s * task.size
        slot.deadline = now + slot.timeout_s

    def _hand_out(self, queue: TaskQueue, on_start: Callable[[Task, int], None]) -> None:
        """Fill every ready worker's pipe: the task to run, and the next while plenty are queued
        (near the end of a stage a second task would only wait behind the first)."""
        for index, slot in enumerate(list(self.slots)):
            while slot.ready and queue and (not slot.tasks or (
                    len(slot.tasks) < AHEAD_PER_WORKER and len(queue.items) >= len(self.slots))):
                task = self._next_task(queue, slot)
                now = time.monotonic()
                if not slot.tasks:
                    slot.log_offset = slot.log_path.stat().st_size if slot.log_path.exists() else 0
                try:
                    slot.conn.send((task.id, task.function, task.params))
                except OSError:  # the worker died: the task goes back, no attempt counted
                    queue.appendleft(task)
                    if not slot.tasks:  # an idle worker: a fresh one takes its place now
                        self._kill(slot)
                        self.slots[index] = self._spawn()
                    break  # a busy one is reported dead by its process sentinel
                slot.tasks.append(task)
                if len(slot.tasks) == 1:
                    self._begin(slot, task, now, on_start)

    def run(self, tasks: Iterable[Task], *, max_attempts: int,
            on_start: Callable[[Task, int], None],
            on_done: Callable[[Task, list, str, float], None],
            on_error: Callable[[Task, str, str, float, bool], None]) -> None:
        """Run every task; the callbacks (in this process) record what happens.

        ``on_start(task, pid)`` when a worker begins a task (not when it is queued in the
        worker's pipe behind another); ``on_error(task, error, log, seconds, final)``: ``final``
        when the task has used its ``max_attempts`` and is given up.
        """
        queue = TaskQueue(tasks)
        while queue or any(s.tasks for s in self.slots):
            self._hand_out(queue, on_start)
            busy = [s for s in self.slots if s.tasks or not s.ready]
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
                        task, now = slot.tasks.popleft(), time.monotonic()
                        seconds = now - slot.started
                        log = self._log_excerpt(slot, after=slot.task)
                        if kind == "stop":  # the next in its pipe stays pending, unbegun
                            raise RootNotWritable(task, payload, log, seconds)
                        if slot.task:  # the worker went straight on to the next in its pipe
                            self._begin(slot, slot.task, now, on_start)
                        else:
                            slot.deadline = math.inf
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
                for waiting in reversed(list(slot.tasks)[1:]):  # never begun: back in front, as they were
                    queue.appendleft(waiting)
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


