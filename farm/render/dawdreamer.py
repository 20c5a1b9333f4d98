"""Faust instruments and hosted plugins, in-process through DawDreamer.

A Faust patch is compiled once per worker process (libfaust's LLVM JIT, about 0.25 s) and kept
with its ``RenderEngine`` for the life of the process: a processor must not outlive its engine,
and a compiled processor given new MIDI renders the bytes a fresh one would. Each job clears the
processor's MIDI, sets every parameter (its slider value or the patch's), lays any automation
over the render sample by sample, adds the part's notes and renders ``loop + tail`` samples.

Timing: a note's start and length are sample positions (the same ones FluidSynth plays),
handed to DawDreamer in seconds (``samples / sample_rate``); it places them to the sample.

A drum kit whose ``.dsp`` maps notes to drums (``drum(36) = kick;`` ... and ``voice(n)``, what
one voice of note ``n`` plays) is played one drum at a time: each drum the loop strikes is its
own small instrument (``voice(36)`` compiled as the entry point), and the drums are summed. A
held voice then computes its one drum instead of all of them (libfaust computes every branch of
an expression): the same sound, about 3x less CPU. ``process``, the whole kit, is what REAPER
plays.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from importlib import metadata

import numpy as np

from farm.errors import FarmError
from farm.patches import apply_effects
from farm.quiet import native_output_discarded
from farm.render import RenderJob

BLOCK = 512  # DawDreamer's processing block; the bytes do not depend on it for these instruments
DRUM_VOICES = 12  # per drum: one held until it is struck again, the last ones ringing out
_DRUM_RULE = re.compile(r"(?<![\w.])drum\s*\(\s*(\d+)\s*\)\s*=(?!=)")  # drum(36) = kick;
_VOICE_DEF = re.compile(r"(?<![\w.])voice\s*\(\s*\w+\s*\)\s*=(?!=)")  # voice(n) = ...;
_ENTRY = "farm_drum_voice"  # the entry point a drum is compiled as

_PROCESSORS: dict[tuple, tuple] = {}


def dawdreamer_version() -> str:
    """``dawdreamer 0.9.0`` (read from the installed package, without loading it)."""
    try:
        return f"dawdreamer {metadata.version('dawdreamer')}"
    except metadata.PackageNotFoundError:
        return "dawdreamer absent"


def _dawdreamer():
    try:
        import dawdreamer
    except ImportError:
        from farm.patches.faust import DAWDREAMER_HINT

        raise FarmError(DAWDREAMER_HINT, field="backend") from None
    return dawdreamer


@lru_cache(maxsize=64)
def drum_notes(dsp: str, content_hash: str) -> tuple[int, ...]:
    """The notes a kit's ``drum(N) = ...`` rules name, when it also defines ``voice(n)``; else ()."""
    source = open(dsp, encoding="utf-8").read()
    return tuple(sorted({int(n) for n in _DRUM_RULE.findall(source)})) if _VOICE_DEF.search(source) else ()


def faust_processor(job: RenderJob, note: int | None = None):
    """This process's compiled processor for the job's Faust patch at its sample rate (with
    ``note``: that one drum of a kit), with its engine and ``{label: address}`` of its
    parameters (compiled on first use)."""
    faust = job.patch.faust
    key = (str(faust.dsp), job.patch.content_hash, faust.voices, job.sample_rate, note)
    if key not in _PROCESSORS:
        from farm.patches.faust import dsp_error

        daw = _dawdreamer()
        engine = daw.RenderEngine(job.sample_rate, BLOCK)
        proc = engine.make_faust_processor("instrument")
        source = faust.dsp.read_text(encoding="utf-8")
        if note is None:
            proc.num_voices = faust.voices
        else:  # the kit's voice(note) as the instrument, appended under a name of its own
            proc.num_voices = min(faust.voices, DRUM_VOICES)
            proc.compile_flags = ["-pn", _ENTRY]
            source += f"\n{_ENTRY} = voice({int(note)});\n"
        proc.set_dsp_string(source)
        try:
            with native_output_discarded():
                proc.compile()
        except RuntimeError as err:
            raise dsp_error(faust.dsp, str(err), line_offset=3) from None  # compile() counts three lines more
        addresses = {d["name"].rsplit("/", 1)[-1]: d["name"] for d in proc.get_parameters_description()}
        defaults = {d["name"]: float(d["value"]) for d in proc.get_parameters_description()}
        _PROCESSORS[key] = (engine, proc, addresses, defaults)
    return _PROCESSORS[key]


def close_processors() -> None:
    """Drop every compiled processor of this process (with its engine)."""
    _PROCESSORS.clear()


def _address(addresses: dict, label: str, job: RenderJob, field: str) -> str:
    if label not in addresses:  # the slider is in the source, but libfaust compiled it away
        raise FarmError(f"the compiled instrument has no parameter {label!r}: is it used by process?",
                        file=job.patch.path, field=field)
    return addresses[label]


def render_faust_raw(job: RenderJob, total: int) -> np.ndarray:
    """The job's part played by its Faust patch: float32 ``(channels, total)``, before effects."""
    from farm.render.embedded import shaped_notes

    faust = job.patch.faust
    notes, _ccs, _bends = shaped_notes(job)
    if faust.drums:
        notes = _held_until_struck_again(notes, job.loop_samples)
    kit = drum_notes(str(faust.dsp), job.patch.content_hash) if faust.drums else ()
    if not kit:
        return _play(job, faust_processor(job), notes, total, strict=True)
    audio = np.zeros((2, total), dtype=np.float32)  # voice(n) is stereo; no note a drum: silence
    for note in kit:  # in note order, so the sum is the same every time
        mine = [n for n in notes if n.pitch == note]
        if mine:
            audio += _play(job, faust_processor(job, note), mine, total, strict=False)
    return audio


def _play(job: RenderJob, processor: tuple, notes: list, total: int, *, strict: bool) -> np.ndarray:
    """``notes`` through one compiled processor with the patch's parameters and automation.
    ``strict``: a parameter libfaust compiled away is an error (one drum of a kit uses only its
    own sliders, so there it is skipped)."""
    faust, sr = job.patch.faust, job.sample_rate
    engine, proc, addresses, defaults = processor
    proc.clear_midi()
    # Every parameter is laid down as a (constant) automation for the whole render: a value set
    # with set_parameter never reached a one-voice instrument (acid-303 ignored its square wave).
    values = dict(defaults)
    for label, value in faust.params:
        if strict or label in addresses:
            values[_address(addresses, label, job, f"faust.params.{label}")] = float(value)
    for address, value in values.items():
        proc.set_automation(address, np.full(total, value, dtype=np.float32))
    for i, auto in enumerate(faust.automation):
        if strict or auto.param in addresses:
            address = _address(addresses, auto.param, job, f"faust.automation[{i}].param")
            proc.set_automation(address, auto.values(total, job.loop_samples))
    for n in notes:
        proc.add_midi_note(n.pitch, n.velocity, n.start / sr, (n.end - n.start) / sr)
    engine.load_graph([(proc, [])])
    with native_output_discarded():
        engine.render((total + 0.5) / sr)
    audio = np.asarray(engine.get_audio(), dtype=np.float32)
    if audio.shape[1] < total:
        audio = np.pad(audio, ((0, 0), (0, total - audio.shape[1])))
    return audio[:, :total]


def _held_until_struck_again(notes: list, loop_samples: int) -> list:
    """Drum hits held until the same drum is struck again (round the loop), never longer than the
    loop: a one-shot rings out instead of being cut by its short note-off (libfaust frees a
    released voice once it is quiet, which a quiet drum tail already is), and each drum stays
    monophonic, as on a drum machine: a new hit of the same drum ends the last one."""
    from farm.render.embedded import _Note

    starts: dict[int, list[int]] = {}
    for n in notes:
        starts.setdefault(n.pitch, []).append(n.start)
    held = []
    for n in notes:
        later = sorted((s - n.start) % loop_samples or loop_samples for s in starts[n.pitch])
        held.append(_Note(n.start, n.start + later[0], n.pitch, n.velocity))
    return held


def render_job_raw(job: RenderJob) -> np.ndarray:
    """One Faust or plugin job: float32 ``(2, loop + tail)`` with the patch's effects applied."""
    patch = job.patch
    total = job.loop_samples + int(math.ceil(patch.tail_s * job.sample_rate))
    if patch.kind == "faust":
        audio = render_faust_raw(job, total)
    else:
        from farm.render.plugin import render_plugin_raw

        audio = render_plugin_raw(job, total)
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    audio = apply_effects(patch, np.ascontiguousarray(audio), job.sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)
