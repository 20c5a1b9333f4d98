"""The nightly batch: rule sets -> templates -> rendered, checked, labelled loops in the catalog.

A batch is a job of tasks stored in the catalog (``batches``, ``tasks``), run as stages in
order by one *writer* process, the only one holding the SQLite connection:

1. ``templates`` (in the writer: cheap and deterministic): generate each style's templates,
   write them under ``<root>/templates/<id>/`` and record them.
2. ``render``: one task per (template, part, fitting patch), or, for a backend that renders
   in chunks (REAPER: one project and one start-up for many loops), tasks of up to its
   ``loops_per_project`` loops across templates. ``-j N`` worker processes, each with a warm
   renderer, render the task's loops, run the machine checks, write each audio file and then
   its JSON sidecar (each atomically: temp name + rename), and return the sidecars. The writer
   inserts the loop and chord rows and marks the task done in one transaction.

A later stage is one more :class:`Stage` in :data:`STAGES` (given as ``"module:attribute"``,
so this module never imports a later stage) with its own TOML table in the batch config.

Every output is content-addressed: a loop's id hashes its inputs (template, part, patch bytes,
renderer and version, sample rate, format), so a loop already catalogued is skipped, and a
batch killed at any moment (even by SIGKILL) is finished by ``farm batch --resume``: running
tasks go back to pending, a loop file whose sidecar is complete and matches its sha256 is
adopted into the catalog, half-written files are removed, and the rest runs again.

A task that runs past ``timeout_s`` has its worker killed (the whole process group) and is
retried on a fresh worker, at most ``max_attempts`` times, then marked failed with its error
and an excerpt of the worker's log (``<root>/logs/<batch id>/``).

A catalog root that cannot be written (full disk, read-only, over quota) is not a task's fault:
the batch stops at the first such error with one line naming the file, leaves no half-written
file or row, and ``farm batch --resume`` finishes it once the root can be written again.

Modules, by job: ``config`` (the TOML), ``plan`` (stages and their tasks), ``worker`` (a worker
process and ``render_task``), ``pool`` (processes, timeouts, retries), ``writer`` (``run_batch``:
the one process holding the catalog). Everything is importable from ``farm.batch``; a stage's task
is named ``"farm.batch:render_task"`` in the catalog's ``tasks``, so that name stays.
"""
from farm.batch.config import (DEFAULT_CONFIG, LOG_EXCERPT_CHARS, WORKER_START_TIMEOUT_S,  # noqa: F401
                               BatchConfig, load_config, parse_config)
from farm.batch.plan import (STAGES, BatchRun, Stage, TaskSpec, check_patches, pack_loops,  # noqa: F401
                             plan_loops, plan_renders, plan_templates, stages, write_night_projects)
from farm.batch.pool import Task, WorkerPool  # noqa: F401
from farm.batch.worker import RootNotWritable, Worker, render_task, write_problem  # noqa: F401
from farm.batch.writer import BatchSummary, last_batch_root, remember_batch_root, run_batch  # noqa: F401
from farm.model import loop_content_id  # noqa: F401
