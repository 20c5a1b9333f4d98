"""The writer: the one process that holds the catalog, runs a night's stages in order, inserts
what the workers return and finishes an interrupted night (``run_batch``)."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import itertools
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from farm.catalog import Catalog
from farm.errors import FarmError
from farm.model import content_id
from farm.catalog.lock import writer_lock
from farm.progress import shown
from farm.sidecar import utc_now
from farm.batch.config import LOG_EXCERPT_CHARS, BatchConfig, load_config
from farm.batch.plan import (BatchRun, Stage, TaskSpec, _from_config, _loops_per_task, _patches, _styles,
                             check_patches, stages)
from farm.batch.pool import Task, WorkerPool
from farm.batch.worker import RootNotWritable, write_problem


# -- the writer -------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    """What a batch did."""

    batch_id: str
    root: Path
    new_loops: int = 0
    rejected: int = 0
    skipped: int = 0
    failed: int = 0
    adopted: int = 0
    removed: int = 0
    resumed: bool = False
    earlier: int = 0  # loops of a resumed batch made before it was interrupted
    seconds: float = 0.0
    tasks: dict = field(default_factory=dict)  # status -> count
    refused_nodes: dict = field(default_factory=dict)  # render node -> why it got none of the night

    def lines(self) -> list[str]:
        earlier = f"{self.earlier} made before the interruption, " if self.resumed else ""
        out = [f"batch {self.batch_id}{' (resumed)' if self.resumed else ''}: {_loops(self.new_loops, 'new ')}"
               f"({self.rejected} rejected by the machine checks), {earlier}{self.skipped} already catalogued, "
               f"{self.failed} failed, in {self.seconds:.1f} s"]
        if self.adopted or self.removed:
            out.append(f"recovered from the interruption: {self.adopted} loops adopted from their "
                       f"sidecars, {self.removed} unfinished files removed")
        out += [f"render node {node} not used: {why}" for node, why in sorted(self.refused_nodes.items())]
        out.append(f"catalog: {self.root / 'catalog.db'}")
        return out


def _loops(n: int, adjective: str = "") -> str:
    return f"{n} {adjective}loop{'' if n == 1 else 's'} "


def _state_file() -> Path:
    """Where the root of the last batch started is remembered (per user, outside any library)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "loopfarm" / "last-batch-root"


def remember_batch_root(root: Path) -> None:
    """Note ``root`` as the last batch's, so a `--resume` elsewhere can say where it is."""
    from farm.files import atomic_write_text

    with contextlib.suppress(OSError):
        atomic_write_text(_state_file(), str(Path(root).resolve()) + "\n")


def last_batch_root() -> Path | None:
    try:
        text = _state_file().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Path(text) if text else None


def run_batch(config: BatchConfig | None = None, *, resume: bool = False, root: str | Path | None = None,
              workers: int | None = None, progress: bool = True, cluster: str | None = None) -> BatchSummary:
    """Run a batch (``farm batch``), or finish the unfinished one (``resume=True``).

    Everything is validated before anything is written. With ``resume``, the batch's own stored
    configuration is used (``root`` picks the catalog; ``workers`` may change). ``cluster``: the
    Dask scheduler whose render nodes run the tasks (else ``[cluster] address``, else the local pool).
    """
    config = config or load_config()
    root = Path(root) if root is not None else config.root
    started = time.monotonic()
    for module in config.plugins:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise FarmError(f"cannot import plugin: {err}", file=config.source, field="plugins") from None

    if resume:
        if not (root / "catalog.db").is_file():
            last = last_batch_root()
            hint = (f"; the last batch ran in {last}: `farm batch --resume --root {last}`"
                    if last is not None and last != root.resolve() and (last / "catalog.db").is_file()
                    else "; name the batch's root: `farm batch --resume --root DIR` (or --config FILE)")
            raise FarmError("no catalog here, nothing to resume" + hint, file=root / "catalog.db")
        catalog = Catalog(root)
        unfinished = catalog.db.execute(
            "SELECT id, config FROM batches WHERE status = 'running' ORDER BY started_at DESC, id DESC "
            "LIMIT 1").fetchone()
        if unfinished is None:
            with writer_lock(root, "batch"):
                adopted, removed = catalog.reconcile()
            catalog.close()
            summary = BatchSummary("(none)", root, adopted=len(adopted), removed=len(removed),
                                   resumed=True, seconds=time.monotonic() - started)
            return summary
        batch_id = unfinished[0]
        config = dataclasses.replace(BatchConfig.from_dict(json.loads(unfinished[1])), root=root)
        catalog.close()
    config = dataclasses.replace(config, root=root, workers=workers or config.workers)
    if cluster:
        config = dataclasses.replace(config, cluster={**config.cluster, "address": cluster})
    for module in config.plugins:
        importlib.import_module(module)

    # Validate everything before the first byte is written.
    from farm.render import get_backend

    _from_config(config, "styles", lambda: _styles(config))
    patches = _from_config(config, "patches", lambda: _patches(config))
    backend = _from_config(config, "backend", lambda: get_backend(config.backend, **config.backend_options))
    try:
        renderer, renderer_version = backend.name, backend.version
        loops_per_task = _loops_per_task(backend)
        check_patches(config, patches, backend)
    finally:
        with contextlib.suppress(Exception):
            backend.close()

    if config.cluster.get("address"):  # the scheduler answers, with a node for this renderer
        from farm.batch.cluster import check_cluster

        check_cluster(config.cluster["address"], config.backend)
    catalog = Catalog(root)  # FarmError when the root cannot be written; nothing is created then
    remember_batch_root(root)
    try:
        with writer_lock(root, "batch"):
            summary = _run(catalog, config, patches, (renderer, renderer_version, loops_per_task),
                           batch_id if resume else None, progress)
    except OSError as err:  # the writer's own files (templates, logs): one line, as for the workers
        problem = write_problem(err, root) or {"file": err.filename or root, "message": str(err.strerror or err)}
        raise FarmError(f"{problem['message']}; the batch stopped: `farm batch --resume` finishes it once "
                        f"this is fixed", file=problem["file"]) from None
    except sqlite3.OperationalError as err:  # e.g. "database or disk is full": the transaction rolled back
        raise FarmError(f"{err}; the batch stopped: `farm batch --resume` finishes it once this is fixed",
                        file=catalog.path) from None
    finally:
        catalog.close()
    summary.seconds = time.monotonic() - started
    return summary


def _local_pool(catalog: Catalog, config: BatchConfig, batch_id: str) -> WorkerPool:
    return WorkerPool(config.workers, root=catalog.root, backend=config.backend,
                      backend_options=config.backend_options, plugins=config.plugins, qa=config.qa,
                      log_dir=catalog.root / "logs" / batch_id, timeout_s=config.timeout_s)


def _run(catalog: Catalog, config: BatchConfig, patches, renderer: tuple[str, str, int],
         resume_id: str | None, progress: bool) -> BatchSummary:
    db = catalog.db
    if resume_id is None:
        running = db.execute("SELECT id FROM batches WHERE status = 'running' LIMIT 1").fetchone()
        if running:
            raise FarmError(f"batch {running[0]} did not finish; `farm batch --resume` finishes it",
                            file=catalog.path, field="batches")
        batch_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + content_id(
            json.dumps(config.to_dict(), sort_keys=True), str(time.time_ns()), length=6)
        db["batches"].insert({
            "id": batch_id, "status": "running", "config": json.dumps(config.to_dict(), sort_keys=True),
            "config_file": config.source, "backend": config.backend, "workers": config.workers,
            "started_at": utc_now(), "finished_at": None, "resumed": 0})
    else:
        batch_id = resume_id
        db.execute("UPDATE batches SET resumed = resumed + 1 WHERE id = ?", [batch_id])
    summary = BatchSummary(batch_id, catalog.root, resumed=resume_id is not None)
    if resume_id is not None:
        adopted, removed = catalog.reconcile()
        summary.adopted, summary.removed = len(adopted), len(removed)
        db.execute("UPDATE tasks SET status = 'pending' WHERE batch_id = ? AND status = 'running'", [batch_id])
    made_before = db.execute("SELECT count(*), coalesce(sum(status = 'rejected'), 0) FROM loops WHERE batch_id = ?",
                             [batch_id]).fetchone()  # adopted loops included: they were made before
    summary.earlier = made_before[0]

    run = BatchRun(config, catalog, batch_id, renderer[0], renderer[1], patches=patches,
                   loops_per_task=renderer[2])
    with db.atomic():
        for patch in patches:
            catalog.add_patch(patch)
    pool: WorkerPool | None = None
    try:
        if resume_id is None and not config.cluster.get("address"):
            # A new night has loops to make: the workers start (interpreter, imports, warm
            # renderer) while this process writes the templates, not after.
            pool = _local_pool(catalog, config, batch_id)
        for stage in stages():
            planned = stage.task is not None and db.execute(
                "SELECT 1 FROM tasks WHERE batch_id = ? AND stage = ? LIMIT 1", [batch_id, stage.name]).fetchone()
            # A stage planned before an interruption is not planned again: the batch finishes
            # exactly that plan, even if templates, patches or code changed since (a changed
            # patch fails its task, clearly).
            if not planned:
                specs = _peek(stage.plan(run))  # stored as planned: a long night's plan is never held whole
                if specs is None or stage.task is None:
                    continue
                _add_tasks(catalog, batch_id, stage, specs)
            _skip_catalogued(catalog, batch_id, stage)
            todo = _peek(_leave_out_catalogued(catalog, _pending(catalog, batch_id, stage)))
            if todo and pool is None and config.cluster.get("address"):
                from farm.batch.cluster import ClusterPool

                pool = ClusterPool(config.cluster["address"], root=catalog.root, backend=config.backend,
                                   backend_options=config.backend_options, plugins=config.plugins,
                                   qa=config.qa, timeout_s=config.timeout_s,
                                   shared_root=bool(config.cluster.get("shared_root")))
            elif todo and pool is None:
                pool = _local_pool(catalog, config, batch_id)
            _run_stage(catalog, pool, config, batch_id, stage, todo, summary, progress)
    except KeyboardInterrupt:
        raise FarmError("interrupted; `farm batch --resume` finishes the batch", field="batch") from None
    except RootNotWritable as stop:
        pool.close()
        pool = None
        # Loops written whole by other workers are adopted, leftovers of killed writes removed,
        # so the root holds no file without its row (as far as the disk still lets us write).
        with contextlib.suppress(Exception):
            catalog.reconcile()
        file = Path(stop.problem["file"])  # workers see the resolved root; name it as the user gave it
        if file.is_relative_to(catalog.root.resolve()):
            file = catalog.root / file.relative_to(catalog.root.resolve())
        raise FarmError(f"{stop.problem['message']}; the batch stopped: free space (or make the root "
                        f"writable), then `farm batch --resume` finishes it", file=file) from None
    finally:
        if pool is not None:
            summary.refused_nodes.update(getattr(pool, "refused", {}))
            pool.close()
    # Leftovers of attempts that were killed or failed (their files, never their rows). A night
    # where every task succeeded at once has none, and a big library is not walked for nothing.
    if db.execute("SELECT 1 FROM tasks WHERE batch_id = ? AND (attempts > 1 OR status = 'failed') LIMIT 1",
                  [batch_id]).fetchone():
        summary.removed += len(catalog.reconcile()[1])
    with db.atomic():
        db.execute("UPDATE batches SET status = 'done', finished_at = ? WHERE id = ?", [utc_now(), batch_id])
    counts = dict(db.execute("SELECT status, count(*) FROM tasks WHERE batch_id = ? GROUP BY status",
                             [batch_id]).fetchall())
    summary.tasks = counts
    # Counted in loops: a failed task of a chunking backend leaves every loop of it not yet
    # catalogued unmade (a task of another stage makes one output).
    summary.failed = db.execute(
        "SELECT (SELECT count(*) FROM tasks t, json_each(t.params, '$.loops') j WHERE t.batch_id = ?1 "
        "AND t.status = 'failed' AND json_extract(j.value, '$.id') NOT IN (SELECT id FROM loops)) + "
        "(SELECT count(*) FROM tasks WHERE batch_id = ?1 AND status = 'failed' "
        "AND json_type(params, '$.loops') IS NOT 'array')", [batch_id]).fetchone()[0]
    summary.skipped = counts.get("skipped", 0)  # one loop each
    made = db.execute("SELECT count(*), coalesce(sum(status = 'rejected'), 0) FROM loops WHERE batch_id = ?",
                      [batch_id]).fetchone()
    summary.new_loops, summary.rejected = made[0] - made_before[0], made[1] - made_before[1]
    return summary


def _add_tasks(catalog: Catalog, batch_id: str, stage: Stage, specs: Iterable[TaskSpec]) -> None:
    """Insert the stage's whole plan in one transaction (so a stage is planned once or not at all)."""
    with catalog.db.atomic():
        for spec in specs:
            catalog.db.execute("INSERT OR IGNORE INTO tasks (batch_id, stage, output_id, params, status) "
                               "VALUES (?, ?, ?, ?, 'pending')",
                               [batch_id, stage.name, spec.output_id, json.dumps(spec.params, sort_keys=True)])


def _skip_catalogued(catalog: Catalog, batch_id: str, stage: Stage) -> None:
    """Pending tasks whose loop is already catalogued: made by this batch before an interruption
    (done), or by an earlier batch or another command (skipped)."""
    catalog.db.execute(
        "UPDATE tasks SET status = CASE WHEN (SELECT batch_id FROM loops WHERE id = output_id) = ? "
        "THEN 'done' ELSE 'skipped' END, finished_at = ? "
        "WHERE batch_id = ? AND stage = ? AND status = 'pending' AND output_id IN (SELECT id FROM loops)",
        [batch_id, utc_now(), batch_id, stage.name])


def _peek(items: Iterable) -> Iterator | None:
    """``items`` as an iterator, or None when there is none (the first is read to know)."""
    items = iter(items)
    first = next(items, _NONE)
    return None if first is _NONE else itertools.chain([first], items)


_NONE = object()


def _pending(catalog: Catalog, batch_id: str, stage: Stage, page: int = 256) -> Iterator[Task]:
    """The stage's pending tasks in plan order, read a page at a time as the pool needs them
    (so a night's memory does not grow with its length)."""
    last = 0
    while True:
        rows = catalog.db.execute(
            "SELECT id, output_id, params, attempts FROM tasks WHERE batch_id = ? AND stage = ? "
            "AND status = 'pending' AND id > ? ORDER BY id LIMIT ?", [batch_id, stage.name, last, page]).fetchall()
        if not rows:
            return
        for r in rows:
            yield Task(r[0], stage.name, r[1], stage.task, json.loads(r[2]), r[3])
        last = rows[-1][0]


def _leave_out_catalogued(catalog: Catalog, todo: Iterable[Task]) -> Iterator[Task]:
    """Tasks of several loops interrupted half-way (their finished loops adopted from their
    sidecars on resume) render only the loops still missing; one with none missing is done.
    The stored plan is unchanged: the task still names all its loops."""
    for task in todo:
        loops = task.params.get("loops") or []
        if len(loops) < 2:
            yield task
            continue
        missing = [loop for loop in loops if not catalog.has_loop(loop["id"])]
        if not missing:
            catalog.db.execute("UPDATE tasks SET status = 'done', finished_at = ? WHERE id = ?",
                               [utc_now(), task.id])
            continue
        if len(missing) < len(loops):
            task.params = {**task.params, "loops": missing}
        yield task


def _run_stage(catalog: Catalog, pool: WorkerPool | None, config: BatchConfig, batch_id: str, stage: Stage,
               todo: Iterable[Task] | None, summary: BatchSummary, progress: bool) -> None:
    from tqdm import tqdm

    db = catalog.db
    # Counted in loops: a task of a chunking backend makes several. The bar moves for every loop
    # finished either way; "done" (catalogued, or already there) and "failed" split it.
    size = "max(1, coalesce(json_array_length(params, '$.loops'), 1))"
    total, done, failed = db.execute(
        f"SELECT coalesce(sum({size}), 0), coalesce(sum(CASE WHEN status IN ('done', 'skipped') THEN {size} END), 0), "
        f"coalesce(sum(CASE WHEN status = 'failed' THEN {size} END), 0) "
        "FROM tasks WHERE batch_id = ? AND stage = ?", [batch_id, stage.name]).fetchone()
    # Loops of a pending task of several that were finished before an interruption.
    done += db.execute(
        "SELECT count(*) FROM tasks t, json_each(t.params, '$.loops') j WHERE t.batch_id = ? AND t.stage = ? "
        "AND t.status = 'pending' AND json_array_length(t.params, '$.loops') > 1 "
        "AND json_extract(j.value, '$.id') IN (SELECT id FROM loops)", [batch_id, stage.name]).fetchone()[0]
    state = {"done": done, "failed": failed}
    counts = lambda: f"{state['done']} done, {state['failed']} failed"  # noqa: E731
    bar = tqdm(total=total, initial=done + failed, desc=stage.name, unit="loop", file=sys.stderr,
               disable=not shown(progress), dynamic_ncols=True, postfix=counts(),
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} loops{postfix} "
                          "[{elapsed}<{remaining}, {rate_fmt}]")

    def on_start(task: Task, pid: int) -> None:
        db.execute("UPDATE tasks SET status = 'running', attempts = ?, worker_pid = ?, started_at = ? "
                   "WHERE id = ?", [task.attempts, pid, utc_now(), task.id])

    def on_done(task: Task, sidecars: list, log: str, seconds: float) -> None:
        try:
            with db.atomic():
                for sidecar in sidecars:
                    catalog.ingest_loop(sidecar)
                db.execute("UPDATE tasks SET status = 'done', log = ?, seconds = ?, "
                           "finished_at = ? WHERE id = ?",
                           [log[-LOG_EXCERPT_CHARS:], round(seconds, 3), utc_now(), task.id])
        except FarmError as err:  # a sidecar the catalog refuses: the task failed, for good
            on_error(task, err.line(), log, seconds, True)
            return
        state["done"] += task.size
        bar.set_postfix_str(counts(), refresh=False)
        bar.update(task.size)

    def on_error(task: Task, error: str, log: str, seconds: float, final: bool) -> None:
        db.execute("UPDATE tasks SET status = ?, error = ?, log = ?, seconds = ?, finished_at = ? WHERE id = ?",
                   ["failed" if final else "pending", error, log, round(seconds, 3),
                    utc_now() if final else None, task.id])
        if final:
            state["failed"] += task.size
            bar.set_postfix_str(counts(), refresh=False)
            bar.update(task.size)
        if progress:
            tqdm.write(f"{stage.name} task {task.id} attempt {task.attempts}/{config.max_attempts}: "
                       f"{error}{'' if final else ' (retrying)'}", file=sys.stderr)

    try:
        if todo:
            pool.run(todo, max_attempts=config.max_attempts, on_start=on_start, on_done=on_done,
                     on_error=on_error)
    except RootNotWritable as stop:  # not the task's fault: it waits for --resume, attempt not counted
        db.execute("UPDATE tasks SET status = 'pending', attempts = attempts - 1, error = ?, log = ?, "
                   "seconds = ? WHERE id = ?", [f"{stop.problem['file']}: {stop.problem['message']}",
                                                stop.log, round(stop.seconds, 3), stop.task.id])
        raise
    finally:
        bar.close()
