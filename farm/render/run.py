"""``farm render``: a template's parts through one patch, written as finished loop files.

Each part whose roles fit the patch becomes one file named the way sample packs name loops::

    LF_<bpm>_<part>_<patch>_<key>_<template id>.flac     e.g. LF_120_chords_warm-pad_Am_3f9c0d1e2a4b5c6d.flac

with a JSON sidecar beside it (same stem) holding the template's labels and the loop's measured
loudness and true peak. Workers (``jobs``) are separate processes, each with its own warm synth.
"""
from __future__ import annotations

import sys

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from farm.audio import FORMATS, write_audio
from farm.errors import FarmError
from farm.files import atomic_write_text
from farm.model import PART_ROLES, Template, canonical_json, loop_name
from farm.patches import Patch, load_patch
from farm.render import SAMPLE_RATES, RenderedLoop, RenderJob, get_backend, render_loops

def load_template(template_dir: str | Path) -> Template:
    """``template_dir/template.json`` as a Template. A path that is not a template folder, invalid
    JSON, a bad field or an id that is not the folder's name is a FarmError naming the field."""
    return Template.load(template_dir)


def loop_file_name(template: Template, part: str, patch: Patch, fmt: str = "flac24") -> str:
    """Splice-style name: pack, bpm, part, patch, key, then the template id (content address)."""
    return loop_name(template.bpm, part, patch.name, template.key.short, template.id) + FORMATS[fmt][2]


def plan_jobs(template_dir: str | Path, patch: str | Patch, part: str | None = None,
              sample_rate: int = 44100) -> list[RenderJob]:
    """The render jobs for the parts of a template that ``patch`` can play (or just ``part``)."""
    template_dir = Path(template_dir)
    template = load_template(template_dir)
    patch = patch if isinstance(patch, Patch) else load_patch(patch)
    if sample_rate not in SAMPLE_RATES:
        raise FarmError(f"{sample_rate} Hz not supported (use {' or '.join(map(str, SAMPLE_RATES))})",
                        field="sample_rate")
    names = [p.name for p in template.parts]
    if part is not None:
        if part not in names:
            raise FarmError(f"no part {part!r} (parts: {', '.join(names)})",
                            file=template_dir / "template.json", field="part")
        if not patch.fits(part):
            raise FarmError(f"patch roles {', '.join(patch.roles)} cannot play part {part!r} "
                            f"(it takes {', '.join(PART_ROLES.get(part, ())) or 'no role'})",
                            file=patch.path, field="roles")
        names = [part]
    else:
        names = [n for n in names if patch.fits(n)]
        if not names:
            raise FarmError(f"no part of this template fits roles {', '.join(patch.roles)}",
                            file=patch.path, field="roles")
    return [RenderJob(template, template_dir, n, patch, sample_rate) for n in names]


def loop_metadata(loop: RenderedLoop, audio_name: str) -> dict:
    """The labels and measured figures written beside a loop file."""
    job = loop.job
    return {
        "audio": audio_name,
        "template": job.template.to_dict(),
        "part": job.part,
        "patch": job.patch.name,
        "patch_hash": job.patch.content_hash,
        "renderer": loop.renderer,
        "renderer_version": loop.renderer_version,
        "sample_rate": loop.sample_rate,
        "channels": int(loop.audio.shape[0]),
        "samples": int(loop.audio.shape[1]),
        "duration_s": loop.audio.shape[1] / loop.sample_rate,
        "lufs": round(loop.lufs, 3),
        "true_peak_dbtp": round(loop.true_peak_db, 3),
    }


def write_loop(loop: RenderedLoop, out_dir: str | Path, fmt: str = "flac24") -> Path:
    """Write a finished loop and its JSON sidecar into ``out_dir``; returns the audio path."""
    template = loop.job.template
    name = loop_file_name(template, loop.job.part, loop.job.patch, fmt)
    path = Path(out_dir) / name
    labels = {"id": template.id, "name": Path(name).stem, "style": template.style, "part": loop.job.part,
              "key": template.key.short, "key_mode": template.key.mode, "tonic_pc": template.key.tonic_pc,
              "bpm": template.bpm, "meter": str(template.meter), "bars": template.bars,
              "progression": " ".join(c.symbol for c in template.chords)}
    write_audio(path, loop.audio, loop.sample_rate, fmt, labels=labels)  # tempo and key where DAWs read them
    atomic_write_text(path.with_suffix(".json"), canonical_json(loop_metadata(loop, name)))
    return path


# Each process keeps one backend (and so one warm synth) per backend name for its lifetime.
_PROCESS_BACKENDS: dict = {}


def _process_backend(name: str):
    if name not in _PROCESS_BACKENDS:
        _PROCESS_BACKENDS[name] = get_backend(name)
    return _PROCESS_BACKENDS[name]


def _worker_render(job: RenderJob, backend: str, out_dir: str, fmt: str) -> str:
    [loop] = render_loops([job], _process_backend(backend))
    return str(write_loop(loop, out_dir, fmt))


def render_part(template_dir: str | Path, part: str, patch: str | Patch, sample_rate: int = 44100,
                backend: str = "embedded") -> tuple[np.ndarray, int]:
    """One part of a template through one patch, in memory: ``(audio, sample_rate)``.

    ``audio`` is the finished loop, float32 ``(2, loop samples)``: exactly the template's length,
    tail folded into the start, at the patch's loudness under -1 dBTP. Nothing is written. The
    backend (``embedded`` by default) stays warm in this process for the next call.
    """
    [job] = plan_jobs(template_dir, patch, part, sample_rate)
    [loop] = render_loops([job], _process_backend(backend))
    return loop.audio, loop.sample_rate


def render(template_dir: str | Path, patch: str | Patch, part: str | None = None,
           out: str | Path = "loops", sample_rate: int = 44100, fmt: str = "flac24", jobs: int = 1,
           backend: str = "embedded", progress: bool = True,
           backend_options: dict | None = None) -> list[Path]:
    """Render a template's parts through ``patch`` into finished loop files in ``out``.

    Every input (template, patch, part, each part's MIDI) is checked before anything is written.
    ``jobs`` worker processes render in parallel. Returns the audio paths in part order.
    """
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise FarmError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", field="format")
    if jobs < 1:
        raise FarmError("jobs must be at least 1", field="jobs")
    plan = plan_jobs(template_dir, patch, part, sample_rate)
    engine = get_backend(backend, **(backend_options or {}))
    if backend == "embedded":
        from farm.render.embedded import read_part_notes

        for job in plan:  # a corrupt MIDI file fails here, before any file is written
            read_part_notes(job)
    out = Path(out)
    from farm.progress import shown

    bar = tqdm(total=len(plan), desc="render", unit="loop", file=sys.stderr, disable=not shown(progress))
    paths: list[Path] = []
    try:
        if getattr(engine, "renders_in_chunks", False):  # REAPER: all loops in one project, one run
            for loop in render_loops(plan, engine):
                paths.append(write_loop(loop, out, fmt))
                bar.update()
        elif jobs == 1 or len(plan) == 1:
            for job in plan:
                [loop] = render_loops([job], engine)
                paths.append(write_loop(loop, out, fmt))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, len(plan))) as pool:
                futures = [pool.submit(_worker_render, job, backend, str(out), fmt) for job in plan]
                for future in futures:
                    paths.append(Path(future.result()))
                    bar.update()
    except BaseException:
        bar.leave = False  # on a terminal the error, not a stopped bar, is what is left
        raise
    finally:
        bar.close()
    return paths


def read_loop_metadata(audio_path: str | Path) -> dict:
    """The JSON sidecar ``write_loop`` put beside ``audio_path``."""
    return json.loads(Path(audio_path).with_suffix(".json").read_text())
