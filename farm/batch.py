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
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import json
import math
import multiprocessing
import os
import re
import signal
import sqlite3
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from farm.catalog import Catalog
from farm.errors import FarmError, unknown_name
from farm.files import read_toml
from farm.model import PART_ROLES, Template, content_id, loop_content_id  # noqa: F401 (loop_content_id: farm.batch API)
from farm.catalog.lock import writer_lock
from farm.qa import QA_RANGES, QALimits
from farm.sidecar import loop_tags, utc_now

DEFAULT_CONFIG = Path(__file__).resolve().parent / "nightly.toml"
LOG_EXCERPT_CHARS = 2000
WORKER_START_TIMEOUT_S = 120.0  # a worker must have its renderer warm within this


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchConfig:
    """What a night renders (see ``farm/nightly.toml`` for every field, documented)."""

    root: Path = Path("library")
    styles: tuple[str, ...] | str = "all"
    templates_per_style: int = 1
    seed: int = 1
    bars: int | None = None
    parts: tuple[str, ...] | str = "all"
    patches: tuple[str, ...] | str = "all"
    patches_per_part: int | None = None
    sample_rate: int = 44100
    format: str = "flac24"
    workers: int = 2
    timeout_s: float = 300.0
    max_attempts: int = 3
    backend: str = "embedded"
    backend_options: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    qa: QALimits = QALimits()
    stages: dict = field(default_factory=dict)  # TOML tables of later stages, by stage name
    source: str | None = None  # the TOML file it was read from

    def to_dict(self) -> dict:
        """JSON-able form, stored with the batch so ``--resume`` runs exactly the same job."""
        d = dataclasses.asdict(self)
        d["root"] = str(self.root)
        d["qa"] = dataclasses.asdict(self.qa)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BatchConfig":
        d = dict(d)
        d["root"] = Path(d["root"])
        d["qa"] = QALimits(**d["qa"])
        for key in ("styles", "parts", "patches", "plugins"):
            if isinstance(d[key], list):
                d[key] = tuple(d[key])
        return cls(**d)


_KEYS = {f.name for f in dataclasses.fields(BatchConfig)} - {"qa", "stages", "source"} | {"qa"}


def load_config(path: str | Path | None = None, **overrides) -> BatchConfig:
    """Read and validate a batch TOML (default ``farm/nightly.toml``); ``overrides`` win.

    Every problem is one FarmError naming the file and the field; nothing is written.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = read_toml(path)
    except FileNotFoundError:
        raise FarmError("no such batch config", file=path) from None
    return parse_config(data, path, **overrides)


def parse_config(data: dict, path: str | Path | None = None, **overrides) -> BatchConfig:
    """Validate a batch config given as a dict (the parsed TOML)."""

    def fail(key: str, message: str):
        raise FarmError(message, file=path, field=key)

    stage_tables = {s.name: s for s in stages() if s.config_table}
    for key in data:
        if key not in _KEYS and key not in stage_tables:
            fail(key, f"unknown field (known: {', '.join(sorted(_KEYS | set(stage_tables)))})")

    def integer(key, lo, hi, default):
        value = data.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(key, f"expected a whole number {lo}..{hi}, got {value!r}")
        return value

    def names(key):
        value = data.get(key, "all")
        if value == "all":
            return "all"
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            fail(key, f'expected "all" or a non-empty list of names, got {value!r}')
        return tuple(dict.fromkeys(value))

    from farm.audio import FORMATS
    from farm.render import SAMPLE_RATES

    root = data.get("root", "library")
    if not isinstance(root, str) or not root:
        fail("root", "expected a directory path")
    if Path(root).exists() and not Path(root).is_dir():
        fail("root", f"{root} is a file, not a directory")
    sample_rate = data.get("sample_rate", 44100)
    if sample_rate not in SAMPLE_RATES or isinstance(sample_rate, bool):
        fail("sample_rate", f"{sample_rate!r} is not one of {', '.join(map(str, SAMPLE_RATES))}")
    fmt = data.get("format", "flac24")
    if fmt not in FORMATS:
        fail("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    timeout = data.get("timeout_s", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
        fail("timeout_s", f"expected seconds > 0, got {timeout!r}")
    backend = data.get("backend", "embedded")
    if not isinstance(backend, str) or not backend:
        fail("backend", "expected a backend name")
    options = data.get("backend_options", {})
    if not isinstance(options, dict):
        fail("backend_options", "expected a table")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        fail("plugins", "expected a list of module names")
    qa_table = data.get("qa", {})
    if not isinstance(qa_table, dict):
        fail("qa", "expected a table")
    qa_fields = {f.name: f for f in dataclasses.fields(QALimits)}
    for key, value in qa_table.items():
        if key not in qa_fields:
            fail(f"qa.{key}", f"unknown field (known: {', '.join(qa_fields)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"qa.{key}", f"expected a number, got {value!r}")
        low, high = QA_RANGES[key]
        if not (math.isfinite(value) and low <= value <= high):
            fail(f"qa.{key}", f"expected a number {low:g}..{high:g}, got {value!r}")
        if isinstance(low, int) and value != int(value):
            fail(f"qa.{key}", f"expected a whole number, got {value!r}")
    qa = QALimits(**{k: type(getattr(QALimits(), k))(v) for k, v in qa_table.items()})

    config = BatchConfig(
        root=Path(root), styles=names("styles"),
        templates_per_style=integer("templates_per_style", 1, 1000, 1),
        seed=integer("seed", 0, 2**31 - 1, 1), bars=integer("bars", 1, 32, None),
        parts=names("parts"), patches=names("patches"),
        patches_per_part=integer("patches_per_part", 1, 1000, None),
        sample_rate=sample_rate, format=fmt, workers=integer("workers", 1, 256, 2),
        timeout_s=float(timeout), max_attempts=integer("max_attempts", 1, 100, 3),
        backend=backend, backend_options=dict(options), plugins=tuple(plugins), qa=qa,
        stages={name: data[name] for name in stage_tables if name in data},
        source=str(path) if path is not None else None)
    if config.parts != "all":
        for part in config.parts:
            if part not in PART_ROLES:
                fail("parts", unknown_name("part", part, PART_ROLES))
    for name, table in config.stages.items():
        if not isinstance(table, dict):
            fail(name, "expected a table")
        stage_tables[name].config_table(table, path)  # raises FarmError naming the field
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "root" in overrides:
        overrides["root"] = Path(overrides["root"])
    return dataclasses.replace(config, **overrides)


# -- stages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    """A task to run: it makes ``output_id`` (a loop id) from ``params`` (JSON-able)."""

    output_id: str
    params: dict


@dataclass(frozen=True)
class Stage:
    """One step of the night. ``plan`` runs in the writer and returns the stage's tasks;
    ``task`` (``"module:function"``, called as ``function(params, worker)`` in a worker process)
    makes one task's loops and returns their sidecars. ``config_table`` validates the stage's own
    table of the batch TOML (named after the stage), raising FarmError on a bad field."""

    name: str
    plan: Callable[["BatchRun"], Iterable[TaskSpec]]
    task: str | None = None
    config_table: Callable[[dict, Path | None], None] | None = None


def _resolve(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class BatchRun:
    """What the stages of one batch share in the writer."""

    config: BatchConfig
    catalog: Catalog
    batch_id: str
    renderer: str
    renderer_version: str
    templates: list[tuple[Template, str]] = field(default_factory=list)  # (template, dir rel. root)
    patches: list = field(default_factory=list)  # farm.patches.Patch, in config order
    loops_per_task: int = 1  # > 1: the backend renders many loops per call (REAPER: one project)


def plan_templates(run: BatchRun) -> list[TaskSpec]:
    """Generate and write the templates of every configured style (no worker tasks)."""
    from farm.templates import generate_template, write_template

    out_dir = run.catalog.root / "templates"
    for rules in _styles(run.config):
        for i in range(run.config.templates_per_style):
            generated = generate_template(rules, run.config.seed + i, bars=run.config.bars)
            template = generated.template
            if not (out_dir / template.id / "template.json").is_file():
                write_template(generated, out_dir)
            rel = f"templates/{template.id}"
            run.catalog.add_template(template, rel, run.batch_id)
            run.templates.append((template, rel))
    return []


def plan_loops(run: BatchRun) -> list[dict]:
    """The loops of the night, template by template: every (part, patch whose roles fit it), each
    a JSON-able spec with its content id, its template and its patch."""
    from farm.patches import patches_for_part

    config = run.config
    loops = []
    for t_index, (template, rel) in enumerate(run.templates):
        for part in template.parts:
            if config.parts != "all" and part.name not in config.parts:
                continue
            fitting = patches_for_part(part.name, run.patches)
            if config.patches_per_part is not None and len(fitting) > config.patches_per_part:
                # Rotate through the fitting patches template by template, so a small night
                # still hears every patch somewhere.
                start = t_index % len(fitting)
                fitting = [fitting[(start + k) % len(fitting)] for k in range(config.patches_per_part)]
            for patch in fitting:
                role = next(r for r in patch.roles if r in PART_ROLES[part.name])
                loop_id = loop_content_id(template.id, part.name, patch.content_hash, run.renderer,
                                          run.renderer_version, config.sample_rate, config.format)
                loops.append({"id": loop_id, "template_id": template.id, "template_dir": rel,
                              "part": part.name, "patch": patch.name, "patch_path": str(patch.path),
                              "patch_hash": patch.content_hash, "role": role})
    return loops


def pack_loops(loops: Sequence[dict], loops_per_task: int, workers: int) -> list[list[dict]]:
    """Split ``loops`` in order into near-equal runs of at most ``loops_per_task``: as few as
    that allows (each is one REAPER start-up), but no fewer than ``workers`` while there are
    loops enough, so no worker sits idle."""
    n = len(loops)
    if n == 0:
        return []
    count = min(n, max(math.ceil(n / max(1, loops_per_task)), workers))
    size, extra = divmod(n, count)
    runs, start = [], 0
    for k in range(count):
        end = start + size + (k < extra)
        runs.append(list(loops[start:end]))
        start = end
    return runs


def plan_renders(run: BatchRun) -> list[TaskSpec]:
    """Render tasks for every (template, part, patch whose roles fit the part).

    One loop per task; or, when the backend renders in chunks, tasks packing up to
    ``run.loops_per_task`` loops of several templates (a loop already catalogued stays a task
    of its own, which is skipped, so nothing is rendered twice). A task is a fixed list of loop
    specs stored in the ``tasks`` table: ``--resume`` finishes exactly that plan.
    """
    common = {"renderer": run.renderer, "renderer_version": run.renderer_version,
              "sample_rate": run.config.sample_rate, "format": run.config.format, "batch_id": run.batch_id}

    def single(loop: dict) -> TaskSpec:
        # template_id/template_dir also on the task itself, as before tasks spanned templates
        return TaskSpec(loop["id"], {**common, "template_id": loop["template_id"],
                                     "template_dir": loop["template_dir"], "loops": [loop]})

    loops = plan_loops(run)
    if run.loops_per_task <= 1:
        return [single(loop) for loop in loops]
    catalogued = [loop for loop in loops if run.catalog.has_loop(loop["id"])]
    todo = [loop for loop in loops if not run.catalog.has_loop(loop["id"])]
    specs = [single(loop) for loop in catalogued]
    for chunk in pack_loops(todo, run.loops_per_task, run.config.workers):
        if len(chunk) == 1:
            specs.append(single(chunk[0]))
        else:
            specs.append(TaskSpec(content_id(*(loop["id"] for loop in chunk)), {**common, "loops": chunk}))
    return specs


# The night, in order. A later stage is named as "module:attribute" (imported when the batch
# runs, so this module never imports a later stage); it does nothing without its TOML table.
STAGES: list[Stage | str] = [
    Stage("templates", plan_templates),
    Stage("render", plan_renders, task="farm.batch:render_task"),
    "farm.permute:STAGE",
]


def stages() -> list[Stage]:
    return [_resolve(s) if isinstance(s, str) else s for s in STAGES]


def _styles(config: BatchConfig):
    from farm.templates import find_rules, list_styles, load_rules

    if config.styles == "all":
        return list_styles()
    return [load_rules(find_rules(s)) for s in config.styles]


def _from_config(config: BatchConfig, field: str, load):
    """``load()``, with a name the config gives that does not exist blamed on the config's field
    (a patch or rule file that exists but is broken is still named itself)."""
    try:
        return load()
    except FarmError as err:
        if err.field in ("name", "style", "backend") and not (err.file and Path(err.file).is_file()):
            name = Path(err.file).stem if err.field == "name" and err.file else None
            message = f"{name!r}: {err.message}" if name and repr(name) not in err.message else err.message
            raise FarmError(message, file=config.source, field=field) from None
        raise


def _patches(config: BatchConfig):
    from farm.patches import list_patches, load_patch

    if config.patches == "all":
        return list_patches()
    return [load_patch(name) for name in config.patches]


# Backends that need something of every patch before a night starts, as "module:function"
# called with each patch and raising FarmError naming the patch file and field (imported only
# for that backend). A backend may instead offer its own ``check_patch(patch)`` method.
PATCH_CHECKS: dict[str, str] = {"reaper": "farm.rpp:fxchain_for"}
# How each backend's patches get what its check asks for, said in the error ({name}: the patch).
PATCH_FIXES: dict[str, str] = {"reaper": "save its chain from REAPER with `farm patch pull {name} --track N`"}


def _loops_per_task(backend) -> int:
    """Loops one render task packs: 1, or up to ``loops_per_project`` (default 64) for a backend
    that renders in chunks (one REAPER start-up per project)."""
    if not getattr(backend, "renders_in_chunks", False):
        return 1
    return max(1, int(getattr(backend, "loops_per_project", 64)))


def check_patches(config: BatchConfig, patches: Sequence, backend) -> None:
    """Stop before anything is written when a patch the night may use cannot be rendered by
    ``backend`` (REAPER: a patch without a usable ``.RfxChain``), rather than failing whole
    render tasks later. One FarmError line names the first such patch file and field, the fix,
    and the other patches with the same problem."""
    check = getattr(backend, "check_patch", None)
    if check is None and backend.name in PATCH_CHECKS:
        check = _resolve(PATCH_CHECKS[backend.name])
    if check is None:
        return
    parts = PART_ROLES if config.parts == "all" else config.parts
    problems = []
    for patch in patches:
        if not any(patch.fits(part) for part in parts):
            continue  # plays none of the night's parts
        try:
            check(patch)
        except FarmError as err:
            problems.append((patch, err))
    if not problems:
        return
    patch, err = problems[0]
    # The check's own hint (often a generic "how to") gives way to the fix for this patch.
    reason = re.split(r" \(|: add \[", err.message)[0]
    fix = PATCH_FIXES.get(backend.name, "fix it").format(name=patch.name)
    where = f" in {config.source}" if config.source else ""
    others = [p.name for p, _ in problems[1:]]
    more = f"; the same for {', '.join(others)}" if others else ""
    raise FarmError(f"the {backend.name} backend cannot render patch {patch.name!r} ({reason}): {fix}, "
                    f"or leave it out of `patches`{where}{more}", file=err.file or patch.path,
                    field=err.field)


# -- REAPER projects only ---------------------------------------------------------------------
def write_night_projects(config: BatchConfig, directory: str | Path) -> tuple[list[Path], int, int]:
    """``farm batch --rpp-only DIR``: write the night's REAPER projects and stop.

    The night's templates go to ``DIR/templates/<id>/`` (the projects' MIDI items come from
    them) and its loops, the same ones ``farm batch`` would render, to projects of up to
    ``loops_per_project`` loops across templates (``DIR/chunkNNN_<id>.rpp``), for a REAPER node
    to render. Nothing is rendered and the catalog is not touched: no batch, task or loop row.
    Returns ``(project paths, loops, templates)``.
    """
    from farm.render import RenderJob, get_backend
    from farm.render.reaper import ProjectsWritten
    from farm.templates import generate_template, write_template

    if config.backend != "reaper":
        raise FarmError(f"--rpp-only writes REAPER projects: it needs --backend reaper, not {config.backend!r}",
                        field="backend")
    for module in config.plugins:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise FarmError(f"cannot import plugin: {err}", file=config.source, field="plugins") from None
    directory = Path(directory)
    styles = _styles(config)
    patches = _patches(config)
    backend = get_backend("reaper", **{**config.backend_options, "rpp_only": directory, "progress": False})
    try:
        check_patches(config, patches, backend)
        generated = [generate_template(rules, config.seed + i, bars=config.bars)
                     for rules in styles for i in range(config.templates_per_style)]
        out = directory / "templates"
        try:
            for g in generated:
                write_template(g, out)
        except OSError as err:
            raise FarmError(f"cannot write: {err.strerror or err}", file=err.filename or out) from None
        run = BatchRun(config, None, "", backend.name, backend.version, patches=patches,
                       templates=[(g.template, g.template.id) for g in generated])
        loops = plan_loops(run)
        by_name = {patch.name: patch for patch in patches}
        templates = {template.id: template for template, _ in run.templates}
        jobs = [RenderJob(template=templates[loop["template_id"]], template_dir=out / loop["template_dir"],
                          part=loop["part"], patch=by_name[loop["patch"]], sample_rate=config.sample_rate)
                for loop in loops]
        if not jobs:
            return [], 0, len(templates)
        try:
            backend.render_raw(jobs)
        except ProjectsWritten as written:
            return list(written.paths), len(jobs), len(templates)
        except OSError as err:
            raise FarmError(f"cannot write: {err.strerror or err}", file=err.filename or directory) from None
        raise FarmError("the REAPER backend rendered instead of writing projects", field="rpp_only")
    finally:
        with contextlib.suppress(Exception):
            backend.close()


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
        if rel not in self._templates:
            self._templates[rel] = Template.load(self.root / rel)
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
        print(f"[{utc_now()}] task {task_id}: {task_fn} {what}", flush=True)
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
        queue = deque(tasks)
        while queue or any(s.task for s in self.slots):
            now = time.monotonic()
            for slot in self.slots:
                if slot.ready and slot.task is None and queue:
                    task = queue.popleft()
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

    def lines(self) -> list[str]:
        earlier = f"{self.earlier} made before the interruption, " if self.resumed else ""
        out = [f"batch {self.batch_id}{' (resumed)' if self.resumed else ''}: {_loops(self.new_loops, 'new ')}"
               f"({self.rejected} rejected by the machine checks), {earlier}{self.skipped} already catalogued, "
               f"{self.failed} failed, in {self.seconds:.1f} s"]
        if self.adopted or self.removed:
            out.append(f"recovered from the interruption: {self.adopted} loops adopted from their "
                       f"sidecars, {self.removed} unfinished files removed")
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
              workers: int | None = None, progress: bool = True) -> BatchSummary:
    """Run a batch (``farm batch``), or finish the unfinished one (``resume=True``).

    Everything is validated before anything is written. With ``resume``, the batch's own stored
    configuration is used (``root`` picks the catalog; ``workers`` may change).
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
        for stage in stages():
            planned = stage.task is not None and db.execute(
                "SELECT 1 FROM tasks WHERE batch_id = ? AND stage = ? LIMIT 1", [batch_id, stage.name]).fetchone()
            # A stage planned before an interruption is not planned again: the batch finishes
            # exactly that plan, even if templates, patches or code changed since (a changed
            # patch fails its task, clearly).
            if not planned:
                specs = list(stage.plan(run))
                if not specs or stage.task is None:
                    continue
                _add_tasks(catalog, batch_id, stage, specs)
            _skip_catalogued(catalog, batch_id, stage)
            todo = [Task(r[0], stage.name, r[1], stage.task, json.loads(r[2]), r[3]) for r in db.execute(
                "SELECT id, output_id, params, attempts FROM tasks WHERE batch_id = ? AND stage = ? "
                "AND status = 'pending' ORDER BY id", [batch_id, stage.name])]
            todo = _leave_out_catalogued(catalog, todo)
            if todo and pool is None:
                pool = WorkerPool(config.workers, root=catalog.root, backend=config.backend,
                                  backend_options=config.backend_options, plugins=config.plugins,
                                  qa=config.qa, log_dir=catalog.root / "logs" / batch_id,
                                  timeout_s=config.timeout_s)
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


def _add_tasks(catalog: Catalog, batch_id: str, stage: Stage, specs: Sequence[TaskSpec]) -> None:
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


def _leave_out_catalogued(catalog: Catalog, todo: list[Task]) -> list[Task]:
    """Tasks of several loops interrupted half-way (their finished loops adopted from their
    sidecars on resume) render only the loops still missing; one with none missing is done.
    The stored plan is unchanged: the task still names all its loops."""
    out = []
    for task in todo:
        loops = task.params.get("loops") or []
        if len(loops) < 2:
            out.append(task)
            continue
        missing = [loop for loop in loops if not catalog.has_loop(loop["id"])]
        if not missing:
            catalog.db.execute("UPDATE tasks SET status = 'done', finished_at = ? WHERE id = ?",
                               [utc_now(), task.id])
            continue
        if len(missing) < len(loops):
            task.params = {**task.params, "loops": missing}
        out.append(task)
    return out


def _run_stage(catalog: Catalog, pool: WorkerPool | None, config: BatchConfig, batch_id: str, stage: Stage,
               todo: list[Task], summary: BatchSummary, progress: bool) -> None:
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
               disable=not progress, dynamic_ncols=True, postfix=counts(),
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
