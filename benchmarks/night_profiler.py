"""Where a night's CPU goes: a batch plugin (``plugins = ["night_profiler"]``) that times named
functions in the writer and in every worker, and writes each process's totals as JSON.

Each timed function is charged its *own* CPU time (``time.process_time``, the whole process):
what the timed functions it calls spend is charged to them. Worker time is split by the kind of
task it was spent on (a render by patch kind, a permutation by operation), so each kind gets its
cost per loop. What no timed function covers stays as "other". Loaded by
``benchmarks/bench_night.py``; the directory to write into is ``$FARM_NIGHT_PROFILE``. A name
missing from the code being measured (an older commit) is left out, so the same plugin measures
both.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import sys
import time

START_CPU = time.process_time()  # a worker: interpreter, spawn and the worker module's imports

# (module, attribute, category): most specific first; nesting is handled by own-time accounting.
TIMED = [
    # the writer
    ("farm.batch.plan", "plan_templates", "templates"),
    ("farm.batch.plan", "_styles", "planning (rules, patches, checks)"),
    ("farm.batch.plan", "_patches", "planning (rules, patches, checks)"),
    ("farm.batch.plan", "check_patches", "planning (rules, patches, checks)"),
    ("farm.batch.plan", "plan_renders", "planning (rules, patches, checks)"),
    ("farm.permute.pipeline", "plan_permutations", "planning (rules, patches, checks)"),
    ("farm.catalog.store", "Catalog.ingest_loop", "catalog insert"),
    ("farm.catalog.store", "Catalog.ingest_loops", "catalog insert"),
    ("farm.batch.pool", "WorkerPool.run", "messaging (writer)"),
    # a worker
    ("farm.batch.worker", "_serve", "messaging (worker)"),
    ("farm.batch.worker", "render_task", "task bookkeeping"),
    ("farm.permute.pipeline", "permutation_task", "task bookkeeping"),
    ("farm.patches.load", "load_patch", "task bookkeeping"),
    ("farm.model", "Template.load", "task bookkeeping"),
    ("farm.render.embedded", "read_part_notes", "MIDI"),
    ("farm.render.embedded", "play", "synthesis"),
    ("farm.render.embedded", "LoadedSoundFont.synth", "synthesis"),
    ("farm.render.dawdreamer", "render_faust_raw", "synthesis"),
    ("farm.render.plugin", "render_plugin_raw", "synthesis"),
    ("farm.render.dawdreamer", "faust_processor", "Faust compile"),
    ("farm.patches.load", "apply_effects", "effects"),
    ("farm.render", "finish_loop", "finishing (fold, DC, loudness, true peak)"),
    ("farm.permute.shift", "_rubberband", "Rubber Band"),
    ("farm.permute.pipeline", "make_permutation", "permutation audio"),
    ("farm.qa", "machine_check", "machine checks"),
    ("farm.permute.pipeline", "check_permutation", "machine checks"),
    ("farm.qa", "loop_features", "features and fingerprint"),
    ("farm.fingerprint", "loop_fingerprint", "features and fingerprint"),
    ("farm.audio", "write_audio", "FLAC encoding and file write"),
    ("farm.sidecar", "write_loop", "sidecar"),
    ("farm.permute.pipeline", "write_permutation", "sidecar"),
]

_own: dict[tuple[str, str], float] = {}
_loops: dict[str, int] = {}
_stack: list[list] = []
_kind = ["(outside tasks)"]
_startup = [None]


def _timed(fn, category):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        if category == "messaging (worker)" and _startup[0] is None:
            _startup[0] = time.process_time()
        frame = [0.0]
        _stack.append(frame)
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.process_time() - t0
            _stack.pop()
            key = (_kind[0], category)
            _own[key] = _own.get(key, 0.0) + spent - frame[0]
            if _stack:
                _stack[-1][0] += spent
    return timed


def _task_kind(fn, name):
    @functools.wraps(fn)
    def task(params, *args, **kwargs):
        if name == "render":
            from farm.patches import load_patch

            kinds = {load_patch(spec["patch_path"]).kind for spec in params["loops"]}
            kind = "render: " + "+".join(sorted(kinds))
        else:
            kind = "permutation: " + params["operation"]
        _kind[0] = kind
        try:
            result = fn(params, *args, **kwargs)
        finally:
            _kind[0] = "(outside tasks)"
        _loops[kind] = _loops.get(kind, 0) + len(result)
        return result
    return task


def _install() -> None:
    replaced = {}
    for module_name, attr, category in TIMED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner_name, _, name = attr.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        original = getattr(owner, name, None)
        if original is None:
            continue
        wrapped = _timed(original, category)
        if attr in ("render_task", "permutation_task"):
            wrapped = _task_kind(wrapped, "render" if attr == "render_task" else "permutation")
        setattr(owner, name, wrapped)
        if not owner_name:
            replaced[id(original)] = wrapped
    # `from x import f` copies made before this ran point at the originals: repoint them.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("farm"):
            for key, value in list(vars(module).items()):
                if id(value) in replaced:
                    setattr(module, key, replaced[id(value)])


def _dump() -> None:
    directory = os.environ.get("FARM_NIGHT_PROFILE")
    if not directory:
        return
    times = os.times()
    role = "worker" if _startup[0] is not None else "writer"
    out = {"role": role, "pid": os.getpid(), "cpu_s": times.user + times.system,
           "startup_s": _startup[0] if role == "worker" else START_CPU, "loops": _loops,
           "own": [[kind, category, seconds] for (kind, category), seconds in _own.items()]}
    with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as f:
        json.dump(out, f)


_install()
atexit.register(_dump)
