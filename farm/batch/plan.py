"""Planning a night: its stages and the tasks each one makes (templates, renders, later stages by
name), the checks before anything is written, and the REAPER projects of a night."""
from __future__ import annotations

import contextlib
import importlib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from farm.catalog import Catalog
from farm.errors import FarmError
from farm.model import PART_ROLES, Template, content_id, loop_content_id
from farm.batch.config import BatchConfig


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
    return list(iter_loops(run))


def iter_loops(run: BatchRun) -> Iterator[dict]:
    """``plan_loops`` one loop at a time (a long night stores its plan as it is made)."""
    from farm.patches import patches_for_part

    config = run.config
    for t_index, (template, rel) in enumerate(run.templates):
        for part in template.parts:
            if config.parts != "all" and part.name not in config.parts:
                continue
            fitting = patches_for_part(part.name, run.patches)
            if config.patches_per_part is not None and len(fitting) > config.patches_per_part:
                # Rotate through the fitting patches template by template, a whole turn of
                # patches_per_part each time, so a small night still hears every patch somewhere.
                start = t_index * config.patches_per_part % len(fitting)
                fitting = [fitting[(start + k) % len(fitting)] for k in range(config.patches_per_part)]
            for patch in fitting:
                role = next(r for r in patch.roles if r in PART_ROLES[part.name])
                loop_id = loop_content_id(template.id, part.name, patch.content_hash, run.renderer,
                                          run.renderer_version, config.sample_rate, config.format)
                yield {"id": loop_id, "template_id": template.id, "template_dir": rel,
                       "part": part.name, "patch": patch.name, "patch_path": str(patch.path),
                       "patch_hash": patch.content_hash, "role": role}


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


def plan_renders(run: BatchRun) -> Iterable[TaskSpec]:
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

    if run.loops_per_task <= 1:
        return (single(loop) for loop in iter_loops(run))
    loops = plan_loops(run)
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
    """The night's patches. With ``patches = "all"`` a plugin patch whose instrument is not
    installed here is skipped with one line saying what to install; any other broken patch stops
    the night (named in one line), as does every patch named explicitly."""
    from farm.patches import load_patch, scan_patches
    from farm.patches.plugin import PluginMissing

    if config.patches != "all":
        return [load_patch(name) for name in config.patches]
    good, broken = scan_patches()
    for err in broken:
        if not isinstance(err, PluginMissing):
            raise err
        print(f"skipped patch {Path(err.file).stem}: {err.message}", file=sys.stderr)
    return good


# Backends that need something of every patch before a night starts, as "module:function"
# called with each patch and raising FarmError naming the patch file and field (imported only
# for that backend). A backend may instead offer its own ``check_patch(patch)`` method.
PATCH_CHECKS: dict[str, str] = {"reaper": "farm.rpp:fxchain_for"}
# How each backend's patches get what its check asks for, said in the error ({name}: the patch).
PATCH_FIXES: dict[str, str] = {"reaper": "save its chain from REAPER with `farm patch pull {name} --track N`",
                               "embedded": "host a plugin that renders the same notes the same way every time"}


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


