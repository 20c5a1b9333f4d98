"""The permute stage: catalogued loops in, catalogued permutations out.

For every parent loop picked by an SQL condition, each operation proposes permutations
(``splice``, ``pitch``, ``stretch``, ``repatch``); each permutation's id is the content address of
``(parent id, operation, parameters)``, so running the stage again skips everything already
there. A permutation is written like any loop (audio file, JSON sidecar, catalog row with its
per-bar chords), passes the same machine checks, and lands as ``pending`` for a person, or as
``rejected`` with the measured reason when a check (or the splice bleed measure) fails.

Only rendered originals (``operation = 'render'``) are permuted: every permutation is one step
from audio that was rendered from MIDI, and a second run never permutes the first run's output.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from farm.errors import FarmError
from farm.model import Template
from farm.permute.shift import (DEFAULT_BPM_STEPS, DEFAULT_SEMITONES, pitch_shift, retempo_template,
                                stretch_to_bpm, transpose_template)
from farm.permute.splice import (DEFAULT_BLEED_THRESHOLD, DEFAULT_PATTERNS, bleed_verdict, check_pattern,
                                 derived_id, measure_bleed, onset_samples, plan_splices, splice_audio,
                                 splice_template)

OPERATIONS = ("splice", "pitch", "stretch", "repatch")


@dataclass(frozen=True)
class PermuteSettings:
    """What the stage makes; the batch TOML ``[permute]`` table and ``farm permute`` options set it."""

    ops: tuple[str, ...] = OPERATIONS
    semitones: int = DEFAULT_SEMITONES  # pitch: -N..-1 and +1..+N semitones
    bpm_steps: int = DEFAULT_BPM_STEPS  # stretch: -N..-1 and +1..+N BPM
    bleed_threshold: float = DEFAULT_BLEED_THRESHOLD  # splice: reject above this bleed share (0-1)
    patterns: tuple[str, ...] = DEFAULT_PATTERNS  # splice: re-cut patterns besides one-chord vamps
    vamps: bool = True  # splice: one-chord vamps of each distinct chord
    patches: tuple[str, ...] = ()  # repatch: only these patches (empty: every patch of the role)
    high_quality: bool = True  # Rubber Band's high-quality mode for pitch and stretch
    where: str = "1"  # SQL condition on loops picking the parents
    limit: int | None = None  # at most this many parent loops (newest batch first, then by id)
    backend: str = "embedded"  # renderer for repatch (in `farm batch`, the batch's own renderer)

    def __post_init__(self):
        unknown = [op for op in self.ops if op not in OPERATIONS]
        if unknown or not self.ops:
            raise FarmError(f"unknown operation {unknown[0] if unknown else ''!r} (known: {', '.join(OPERATIONS)})",
                            field="ops")
        for name in ("vamps", "high_quality"):
            if not isinstance(getattr(self, name), bool):
                raise FarmError(f"{name} must be true or false, got {getattr(self, name)!r}", field=name)
        if isinstance(self.semitones, bool) or not (isinstance(self.semitones, int) and 0 <= self.semitones <= 12):
            raise FarmError(f"semitones must be a whole number 0-12, got {self.semitones!r}", field="semitones")
        if isinstance(self.bpm_steps, bool) or not (isinstance(self.bpm_steps, int) and 0 <= self.bpm_steps <= 20):
            raise FarmError(f"bpm_steps must be a whole number 0-20, got {self.bpm_steps!r}", field="bpm_steps")
        if isinstance(self.bleed_threshold, bool) or not (isinstance(self.bleed_threshold, (int, float))
                                                          and 0 <= self.bleed_threshold <= 1):
            raise FarmError(f"bleed_threshold must be a share 0-1, got {self.bleed_threshold!r}",
                            field="bleed_threshold")
        for pattern in self.patterns:
            check_pattern(pattern)
        if not isinstance(self.where, str) or not self.where.strip():
            raise FarmError("where must be an SQL condition on loops, e.g. \"part = 'chords'\"", field="where")
        check_where(self.where)
        if self.limit is not None and (isinstance(self.limit, bool) or not (isinstance(self.limit, int)
                                                                             and self.limit >= 0)):
            raise FarmError(f"limit must be a whole number >= 0, got {self.limit!r}", field="limit")

    @classmethod
    def from_table(cls, table: dict, file: str | Path | None = None) -> "PermuteSettings":
        """Settings from a TOML table (the batch config's ``[permute]``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        for name, value in table.items():
            if name not in known:
                raise FarmError(f"unknown setting (known: {', '.join(sorted(known))})", file=file,
                                field=f"permute.{name}")
        values = dict(table)
        for name in ("ops", "patterns", "patches"):
            if name in values:
                if isinstance(values[name], str):
                    values[name] = [v.strip() for v in values[name].split(",") if v.strip()]
                if not isinstance(values[name], list) or not all(isinstance(v, str) for v in values[name]):
                    raise FarmError("must be a list of strings", file=file, field=f"permute.{name}")
                values[name] = tuple(values[name])
        try:
            return cls(**values)
        except FarmError as err:
            raise FarmError(err.message, file=file, field=f"permute.{err.field}") from None
        except TypeError as err:
            raise FarmError(str(err), file=file, field="permute") from None


@lru_cache(maxsize=64)
def check_where(where: str) -> None:
    """FarmError (field ``where``) unless ``where`` is one SQL condition on the catalog's ``loops``.

    Compiled against an empty in-memory catalog, so a typo in a batch config's ``[permute]`` is
    caught before the night renders anything, not when the permute stage starts.
    """
    import sqlite3

    from farm.catalog import SCHEMA_PATH

    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA_PATH.read_text(encoding="utf-8"))
        db.execute(f"EXPLAIN SELECT 1 FROM loops WHERE ({where})")
    except (sqlite3.Error, sqlite3.Warning) as err:
        raise FarmError(f"not an SQL condition on loops: {err} (in: {where})", field="where") from None
    finally:
        db.close()


@dataclass
class PermuteReport:
    """What one run of the stage did."""

    parents: int = 0
    made: dict[str, int] = field(default_factory=dict)  # operation -> new rows
    rejected: dict[str, int] = field(default_factory=dict)  # operation -> new rows machine-rejected
    skipped: int = 0  # already catalogued
    ids: list[str] = field(default_factory=list)  # new loop ids, in order

    def lines(self) -> list[str]:
        ops = sorted(set(self.made) | set(self.rejected))
        out = [f"{self.parents} parent loops"]
        out += [f"{op}: {self.made.get(op, 0)} new ({self.rejected.get(op, 0)} machine-rejected)" for op in ops]
        out.append(f"already catalogued: {self.skipped}")
        return out


# -- one permutation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Permutation:
    """A planned permutation of one parent: ``operation`` with ``params`` (hashed into ``id``)."""

    parent_id: str
    operation: str
    params: dict
    id: str


@dataclass
class Parent:
    """A catalogued loop being permuted: ``info`` (JSON-able row fields), labels and audio."""

    info: dict
    template: Template
    template_dir: Path
    audio: np.ndarray | None = None
    sample_rate: int = 44100
    _onsets: np.ndarray | None = field(default=None, repr=False, compare=False)
    # each bar's chroma where its chord sounds alone (``measure_bleed``): the same for every splice
    alone: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def onsets(self) -> np.ndarray:
        """Onset positions of the parent's audio, samples (kept: every splice of it needs them)."""
        if self._onsets is None:
            self._onsets = onset_samples(self.audio, self.sample_rate)
        return self._onsets


# Row fields a worker needs to permute a loop without the catalog.
PARENT_FIELDS = ("id", "template_id", "style", "part", "role", "patch", "patch_hash", "renderer",
                 "renderer_version", "format", "sample_rate", "channels", "path", "sha256", "midi", "tags", "lufs")


def plan_permutations(parent: Parent, settings: PermuteSettings, grammar=None) -> Iterator[Permutation]:
    """Every permutation ``settings`` asks of ``parent``, in a fixed order (ids not yet checked)."""
    info, tpl = parent.info, parent.template
    drum = info["part"] == "drums"

    def make(op: str, params: dict) -> Permutation:
        return Permutation(info["id"], op, params, derived_id(info["id"], op, params))

    for op in settings.ops:
        if op == "splice":
            for plan in plan_splices(tpl, grammar, settings.patterns, settings.vamps):
                if plan.allowed:
                    yield make("splice", plan.params)
        elif op == "pitch" and not drum:  # a drum loop has no key to move
            for n in _steps(settings.semitones):
                yield make("pitch", {"semitones": n})
        elif op == "stretch":
            for d in _steps(settings.bpm_steps):
                if tpl.bpm + d > 0:
                    yield make("stretch", {"bpm": round(tpl.bpm + d, 3)})
        elif op == "repatch":
            # A repatch is the render of the same part through the other patch: it has that
            # render's id, so one sound has one id however it is reached (another parent, or a
            # night that renders the part through that patch directly).
            for patch in repatch_candidates(info, settings.patches):
                params = {"patch": patch.name, "patch_hash": patch.content_hash}
                yield Permutation(info["id"], "repatch", params, repatch_id(info, patch.content_hash))


def repatch_id(info: dict, patch_hash: str) -> str:
    """The id of a parent's part rendered through another patch, by the parent's renderer."""
    from farm.model import loop_content_id

    return loop_content_id(info["template_id"], info["part"], patch_hash, info["renderer"], info["renderer_version"],
                           info["sample_rate"], info["format"])


def _steps(n: int) -> list[int]:
    return [s for k in range(1, n + 1) for s in (-k, k)]


def repatch_candidates(info: dict, only: Sequence[str] = ()):
    """The other patches that can play the loop's part in the same role (``farm.patches``)."""
    from farm.patches import list_patches

    out = []
    for patch in list_patches():
        if patch.name == info["patch"] or info["role"] not in patch.roles or not patch.fits(info["part"]):
            continue
        if only and patch.name not in only:
            continue
        out.append(patch)
    return out


@dataclass
class Made:
    """A permutation's audio and labels, before it is written."""

    audio: np.ndarray
    template: Template
    lufs: float  # integrated loudness of ``audio``, as finishing measured it
    true_peak_db: float  # its true peak, dBTP
    reject_reason: str | None = None
    patch: object = None  # repatch: the new farm.patches.Patch
    renderer: tuple[str, str] | None = None  # repatch: (name, version)


def make_permutation(parent: Parent, perm: Permutation, *, target_lufs: float,
                     bleed_threshold: float = DEFAULT_BLEED_THRESHOLD, high_quality: bool = True,
                     backend=None) -> Made:
    """Compute one permutation's audio (float32 ``(channels, samples)``) and exact labels.

    Edited audio (splice, pitch, stretch) is brought back to ``target_lufs`` (the parent patch's
    loudness target) under the renderer's true-peak ceiling; a repatch is a full render.
    """
    from farm.audio import normalise_loudness
    from farm.render import TRUE_PEAK_CEILING_DBTP

    tpl, sr, audio = parent.template, parent.sample_rate, parent.audio
    reason = None
    if perm.operation == "splice":
        order = perm.params["bars"]
        out = splice_audio(audio, tpl, order, sr)
        new = splice_template(tpl, order)
        if parent.info["part"] != "drums":  # drums have no pitch classes to bleed
            passed, why = bleed_verdict(measure_bleed(audio, out, tpl, order, sr, source_onsets=parent.onsets,
                                                      alone=parent.alone),
                                        bleed_threshold)
            if not passed:
                reason = f"splice bleed: {why}"
    elif perm.operation == "pitch":
        n = perm.params["semitones"]
        out = pitch_shift(audio, sr, n, high_quality=high_quality)
        new = transpose_template(tpl, n)
    elif perm.operation == "stretch":
        bpm = perm.params["bpm"]
        out = stretch_to_bpm(audio, tpl, bpm, sr, high_quality=high_quality)
        new = retempo_template(tpl, bpm)
    elif perm.operation == "repatch":
        return _repatch(parent, perm, backend)
    else:
        raise FarmError(f"unknown operation {perm.operation!r}", field="ops")
    out, lufs, tp = normalise_loudness(out, sr, target_lufs, ceiling_dbtp=TRUE_PEAK_CEILING_DBTP)
    return Made(out, new, lufs, tp, reason)


def _repatch(parent: Parent, perm: Permutation, backend) -> Made:
    """The parent's part MIDI rendered again through another patch: a render, not an audio edit."""
    from farm.patches import load_patch
    from farm.render import RenderJob, get_backend, render_loops

    patch = load_patch(perm.params["patch"])
    if patch.content_hash != perm.params["patch_hash"]:
        raise FarmError("the patch changed since the permutations were planned", file=patch.path,
                        field="content_hash")
    backend = backend or get_backend("embedded")
    if (backend.name, backend.version) != (parent.info["renderer"], parent.info["renderer_version"]):
        raise FarmError(f"a repatch renders with the parent's renderer ({parent.info['renderer']} "
                        f"{parent.info['renderer_version']}), this is {backend.name} {backend.version}",
                        field="renderer")
    job = RenderJob(parent.template, parent.template_dir, parent.info["part"], patch, parent.sample_rate)
    [loop] = render_loops([job], backend)
    return Made(loop.audio, parent.template, loop.lufs, loop.true_peak_db, None, patch,
                (loop.renderer, loop.renderer_version))


# -- planning (in the process holding the catalog) ----------------------------------------------
def select_parents(cat, settings: PermuteSettings) -> list[dict]:
    """Rendered, not machine-rejected loops matching ``settings.where``, newest batch first and by
    id within a batch: which workers finished first must not choose a night's parents (ordering by
    insertion time did, so two runs of one config permuted different loops)."""
    columns, rows = cat.sql(_parents_query(settings))
    return [dict(zip(columns, r)) for r in rows]


def _parents_query(settings: PermuteSettings) -> str:
    query = (f"SELECT * FROM loops WHERE ({settings.where}) AND operation = 'render' "
             f"AND status != 'rejected' ORDER BY batch_id DESC, id")
    if settings.limit is not None:
        query += f" LIMIT {int(settings.limit)}"
    return query


def _iter_parents(cat, settings: PermuteSettings, page: int = 256) -> Iterator[dict]:
    """``select_parents``, a page at a time (only the fields a task needs): a night's plan does
    not hold every parent's row at once."""
    fields = ", ".join(PARENT_FIELDS)
    query = f"SELECT {fields} FROM ({_parents_query(settings)})"
    for offset in itertools.count(0, page):
        _columns, rows = cat.sql(f"{query} LIMIT {page} OFFSET {offset}")
        yield from (dict(zip(PARENT_FIELDS, r)) for r in rows)
        if len(rows) < page:
            return


def _template_dir(cat, row: dict) -> str:
    found = cat.db.execute("SELECT path FROM templates WHERE id = ?", [row["template_id"]]).fetchone()
    return found[0] if found else f"templates/{row['template_id']}"


def _grammar_for(style: str):
    """The style's grammar check, or None when its rule set is not here (then only vamps splice)."""
    from farm.templates import find_rules, load_rules, progression_is_valid

    try:
        rules = load_rules(find_rules(style))
    except FarmError:
        return None
    return lambda romans, mode: progression_is_valid(rules, romans, looping=True, mode=mode)


def plan_tasks(cat, settings: PermuteSettings, *, batch_id: str | None = None) -> list[tuple[str, dict]]:
    """``(output loop id, task params)`` for every permutation of the selected parents.

    Runs where the catalog is open: it reads the parents' rows and templates and records the
    patches a repatch will use. Permutations already catalogued are included (the caller skips
    them); the params hold everything :func:`permutation_task` needs, as JSON.
    """
    return list(iter_tasks(cat, settings, batch_id=batch_id))


def iter_tasks(cat, settings: PermuteSettings, *, batch_id: str | None = None) -> Iterator[tuple[str, dict]]:
    """``plan_tasks`` one task at a time, reading the parents a page at a time (a night's batch
    stores them as they come)."""
    grammars: dict[str, object] = {}
    for row in _iter_parents(cat, settings):
        rel = _template_dir(cat, row)
        path = cat.root / rel / "template.json"
        if not path.is_file():
            raise FarmError("the loop's template is missing", file=path, field=row["id"])
        template = Template.load(cat.root / rel)
        info = {k: row[k] for k in PARENT_FIELDS}
        target = cat.db.execute("SELECT target_lufs FROM patches WHERE content_hash = ?",
                                [row["patch_hash"]]).fetchone()
        if row["style"] not in grammars:
            grammars[row["style"]] = _grammar_for(row["style"])
        grammar = grammars[row["style"]]
        mode = template.key.mode
        check = (lambda romans, g=grammar, m=mode: g(romans, m)) if grammar else None
        parent = Parent(info, template, cat.root / rel, sample_rate=row["sample_rate"])
        for perm in plan_permutations(parent, settings, check):
            if perm.operation == "repatch":
                from farm.patches import load_patch

                cat.add_patch(load_patch(perm.params["patch"]))
            yield (perm.id, {
                "parent": info, "template_dir": rel, "operation": perm.operation, "params": perm.params,
                "target_lufs": float(target[0]) if target else row["lufs"],
                "bleed_threshold": settings.bleed_threshold, "high_quality": settings.high_quality,
                "batch_id": batch_id})


# -- one task (anywhere: a batch worker or this process) ----------------------------------------
_PARENTS: dict[tuple[str, str], Parent] = {}  # the last parents read, so a parent is read once


def _parent(root: Path, info: dict, template_dir: str) -> Parent:
    from farm.catalog import read_loop_audio

    key = (str(root), info["id"])
    if key not in _PARENTS:
        template = Template.load(root / template_dir)
        audio, sr = read_loop_audio(root / info["path"], info["sha256"])
        if audio.shape[1] != template.loop_samples(sr):
            raise FarmError(f"{audio.shape[1]} samples, its labels say {template.loop_samples(sr)} "
                            f"(run `farm check`)", file=root / info["path"], field="samples")
        if len(_PARENTS) >= 4:
            _PARENTS.pop(next(iter(_PARENTS)))
        _PARENTS[key] = Parent(info, template, root / template_dir, audio.astype(np.float32), sr)
    return _PARENTS[key]


def permutation_task(params: dict, worker=None, *, root: str | Path | None = None, backend=None) -> list[dict]:
    """Make, check and write one permutation; return its sidecar (the catalog row to insert).

    ``worker``: a ``farm.batch.Worker`` (catalog root, warm renderer, QA limits) when run by
    ``farm batch``; otherwise ``root`` and optionally ``backend`` are given.
    """
    from farm.qa import QALimits

    root = Path(worker.root if worker is not None else root)
    if worker is not None and params["operation"] == "repatch":
        backend = worker.backend
    limits = worker.qa if worker is not None else QALimits()
    parent = _parent(root, params["parent"], params["template_dir"])
    perm_id = (repatch_id(parent.info, params["params"]["patch_hash"]) if params["operation"] == "repatch"
               else derived_id(parent.id, params["operation"], params["params"]))
    perm = Permutation(parent.id, params["operation"], params["params"], perm_id)
    made = make_permutation(parent, perm, target_lufs=params["target_lufs"],
                            bleed_threshold=params["bleed_threshold"], high_quality=params["high_quality"],
                            backend=backend)
    return [write_permutation(root, parent, perm, made, target_lufs=params["target_lufs"],
                              batch_id=params.get("batch_id"), limits=limits)]


def write_permutation(root: Path, parent: Parent, perm: Permutation, made: Made, *, target_lufs: float,
                      batch_id: str | None = None, limits=None) -> dict:
    """Machine-check a permutation, write its audio then its sidecar (each atomically); return the sidecar."""
    from farm.model import loop_name
    from farm.patches import ROLES, load_patch
    from farm.qa import QALimits, machine_check
    from farm.sidecar import loop_path, loop_tags, template_labels, write_loop

    info, sr, tpl = parent.info, parent.sample_rate, made.template
    patch_name, patch_hash, role = info["patch"], info["patch_hash"], info["role"]
    renderer, renderer_version = info["renderer"], info["renderer_version"]
    midi = None  # edited audio no longer matches the part's MIDI
    if made.patch is not None:
        patch_name, patch_hash, target_lufs = made.patch.name, made.patch.content_hash, made.patch.target_lufs
        renderer, renderer_version = made.renderer
        midi = info["midi"]  # a repatch plays the same MIDI
    # The figures finishing measured (as a render's sidecar has them): measuring the written audio
    # again cost a splice a fifth of its CPU and agrees to float rounding.
    reason = machine_check(made.audio, sr, expected_samples=tpl.loop_samples(sr), target_lufs=target_lufs,
                           lufs=made.lufs, expected_channels=int(info["channels"]),
                           limits=limits or QALimits()) or made.reject_reason
    name = loop_name(tpl.bpm, info["part"], patch_name, tpl.key.short, perm.id)
    roles = load_patch(patch_name).roles if perm.operation == "repatch" else tuple(
        t for t in (info["tags"] or "").split() if t in ROLES)
    tags = loop_tags(tpl, info["part"], role, patch_name, roles) + [perm.operation]
    return write_loop(
        root, loop_path(info["style"], name, info["format"]), made.audio, sr, info["format"],
        id=perm.id, name=name, template_id=info["template_id"], parent_id=info["id"],
        operation=perm.operation, params=perm.params, part=info["part"], role=role, patch=patch_name,
        patch_hash=patch_hash, renderer=renderer, renderer_version=renderer_version, lufs=float(made.lufs),
        true_peak_db=float(made.true_peak_db), midi=midi,
        status="rejected" if reason else "pending", reject_reason=reason,
        tags=list(dict.fromkeys(tags)), batch_id=batch_id, **template_labels(tpl, sr))


# -- the stage ----------------------------------------------------------------------------------
def permute(catalog_root: str | Path, where: str = "1", ops: Sequence[str] = OPERATIONS, *,
            semitones: int = DEFAULT_SEMITONES, bpm_steps: int = DEFAULT_BPM_STEPS,
            bleed_threshold: float = DEFAULT_BLEED_THRESHOLD, progress: bool = True,
            **options) -> PermuteReport:
    """``farm permute``: permute the rendered loops matching ``where`` (an SQL condition on ``loops``).

    ``ops``: any of splice, pitch, stretch, repatch. Other ``PermuteSettings`` fields (patterns,
    patches, limit, high_quality, backend ...) may be given as keywords. Returns what was made;
    a permutation already catalogued is skipped, never made twice.
    """
    from farm.catalog import Catalog

    settings = PermuteSettings(ops=tuple(ops), semitones=semitones, bpm_steps=bpm_steps,
                               bleed_threshold=bleed_threshold, where=where, **options)
    from farm.catalog.lock import writer_lock

    with Catalog(catalog_root, create=False) as cat, writer_lock(cat.root, "permute"):
        return run_stage(cat, settings, progress=progress)


def run_stage(cat, settings: PermuteSettings, *, progress: bool = True) -> PermuteReport:
    """Plan, make and catalogue permutations in this process, one after another."""
    from farm.progress import progress as progress_bar

    report = PermuteReport(parents=len(select_parents(cat, settings)))
    tasks = plan_tasks(cat, settings)
    todo, planned = [], set()
    for loop_id, params in tasks:
        if cat.has_loop(loop_id) or loop_id in planned:
            report.skipped += 1
        else:
            todo.append((loop_id, params))
            planned.add(loop_id)
    backend = None
    if any(params["operation"] == "repatch" for _, params in todo):
        from farm.render import get_backend

        backend = get_backend(settings.backend)
    for loop_id, params in progress_bar(todo, "permute", "loop", disable=not progress):
        [sidecar] = permutation_task(params, root=cat.root, backend=backend)
        cat.ingest_loop(sidecar)
        op = params["operation"]
        report.ids.append(loop_id)
        report.made[op] = report.made.get(op, 0) + 1
        if sidecar["status"] == "rejected":
            report.rejected[op] = report.rejected.get(op, 0) + 1
    return report
