"""Faust instruments and hosted plugins, in-process through DawDreamer.

A Faust patch is compiled once per worker process (libfaust's LLVM JIT, about 0.25 s) and kept
with its ``RenderEngine`` for the life of the process: a processor must not outlive its engine,
and a compiled processor renders the bytes a fresh one would (DawDreamer clears it before each
render). Every parameter is set (its slider value or the patch's) and any sweep laid over the
render; DawDreamer reads them at the start of each block.

A one-voice instrument (a mono synth whose notes slide into each other) is played through
libfaust's polyphonic host, as MIDI: the notes' starts and lengths are sample positions (the same
ones FluidSynth plays), handed to DawDreamer in seconds (``samples / sample_rate``); it places
them to the sample. Each job clears the processor's MIDI, adds the part's notes and renders
``loop + tail`` samples.

A drum kit whose ``.dsp`` maps notes to drums (``drum(36) = kick;`` ... and ``voice(n)``, what
one voice of note ``n`` plays) is played one drum at a time: each drum the loop strikes is its
own small instrument (``voice(36)`` compiled as the entry point), and the drums are summed. A
held voice then computes its one drum instead of all of them (libfaust computes every branch of
an expression): the same sound, about 3x less CPU. ``process``, the whole kit, is what REAPER
plays.

A polyphonic instrument is played one note at a time, each note on a fresh one-voice copy of the
instrument computed a block at a time, and the notes summed. libfaust's polyphonic host (what
DawDreamer plays MIDI through) computes one sample per call so that a key goes down on its exact
sample: every sounding voice then pays the per-call work (its control-rate maths) 44,100 times a
second. Here the gate is opened on its exact sample by the voice itself: ``button("gate")`` is
read as "the first ``farm_gate_samples`` samples" (a sample counter in the voice, set per note),
so a note needs no sample-by-sample call. A released voice rings until a whole block is below
-90 dB (the host dropped it at its first such *sample*: a voice the same in both channels has one
wherever a sample lands close enough to a zero crossing, and lost the rest of its release), at most ``tail_s``; past ``voices`` notes held at once
the oldest is released, as a synth steals a voice.
"""
from __future__ import annotations

import math
import re
from collections import Counter
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
# the gate control, as Faust's MIDI convention names it: button("gate"), checkbox("h:x/gate[...]")
_GATE = re.compile(r'\b(?:button|checkbox)\s*\(\s*"(?:[^"/]*/)*\s*gate\s*(?:\[[^\]"]*\])*\s*"\s*\)')
_EFFECT = re.compile(r"^\s*effect\s*=([^;]*);", re.M)  # what libfaust's host puts after the voices
GATE_SAMPLES = "farm_gate_samples"  # how long a one-voice copy holds its gate open, in samples
_GATE_OPEN = f'\nfarm_gate = ((+(1) ~ _) - 1) < hslider("{GATE_SAMPLES}", 0, 0, 16777216, 1);\n'

VOICE_STOP_LEVEL = 10 ** (-90 / 20)  # a released voice this quiet over a block is done (libfaust's -90 dB)
_PROCESSORS: dict[tuple, tuple] = {}
_RING_GUESS: dict[int, int] = {}  # per one-voice processor: how long its notes have rung (samples)


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


def one_voice_source(source: str) -> str | None:
    """The instrument as one voice whose gate is open for its first ``farm_gate_samples``
    samples; None when it has no ``button("gate")`` (or checkbox) to open that way."""
    voice, found = _GATE.subn("farm_gate", source)
    return voice + _GATE_OPEN if found else None


def plays_by_voice(job: RenderJob) -> bool:
    """Whether the job's instrument is played a note at a time (see the module's docstring)."""
    faust = job.patch.faust
    return (faust.voices > 1 or faust.drums) and _voice_playable(str(faust.dsp), job.patch.content_hash)


@lru_cache(maxsize=64)
def _voice_playable(dsp: str, content_hash: str) -> bool:
    """Whether the voice can open its own gate, and the instrument has no ``effect`` to put
    after the summed voices (libfaust's host applies one; a one-voice copy would leave it out)."""
    source = open(dsp, encoding="utf-8").read()
    effects = _EFFECT.findall(source)
    return one_voice_source(source) is not None and all(re.fullmatch(r"_(,_)*", "".join(e.split())) for e in effects)


def faust_processor(job: RenderJob, note: int | None = None, *, by_voice: bool = False):
    """This process's compiled processor for the job's Faust patch at its sample rate (with
    ``note``: that one drum of a kit; ``by_voice``: one voice of it, gated by
    ``farm_gate_samples``), with its engine and ``{label: address}`` of its parameters
    (compiled on first use)."""
    faust = job.patch.faust
    key = (str(faust.dsp), job.patch.content_hash, faust.voices, job.sample_rate, note, by_voice)
    if key not in _PROCESSORS:
        from farm.patches.faust import dsp_error

        daw = _dawdreamer()
        engine = daw.RenderEngine(job.sample_rate, BLOCK)
        proc = engine.make_faust_processor("instrument")
        source = faust.dsp.read_text(encoding="utf-8")
        if note is not None:  # the kit's voice(note) as the instrument, appended under a name of its own
            proc.compile_flags = ["-pn", _ENTRY]
            source += f"\n{_ENTRY} = voice({int(note)});\n"
        if by_voice:
            proc.num_voices = 0  # one voice, computed a block at a time
            source = one_voice_source(source)
        else:
            proc.num_voices = faust.voices if note is None else min(faust.voices, DRUM_VOICES)
        proc.set_dsp_string(source)
        try:
            with native_output_discarded():
                proc.compile()
        except RuntimeError as err:
            raise dsp_error(faust.dsp, str(err), line_offset=3) from None  # compile() counts three lines more
        addresses = {d["name"].rsplit("/", 1)[-1]: d["name"] for d in proc.get_parameters_description()}
        defaults = {d["name"]: float(d["value"]) for d in proc.get_parameters_description()}
        engine.load_graph([(proc, [])])
        _PROCESSORS[key] = (engine, proc, addresses, defaults)
    return _PROCESSORS[key]


def close_processors() -> None:
    """Drop every compiled processor of this process (with its engine)."""
    _PROCESSORS.clear()
    _RING_GUESS.clear()


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
    by_voice = plays_by_voice(job)
    play = _play_by_voice if by_voice else _play
    if not kit:
        return play(job, faust_processor(job, by_voice=by_voice), notes, total, strict=True)
    audio = np.zeros((2, total), dtype=np.float32)  # voice(n) is stereo; no note a drum: silence
    for note in kit:  # in note order, so the sum is the same every time
        mine = [n for n in notes if n.pitch == note]
        if mine:
            audio += play(job, faust_processor(job, note, by_voice=by_voice), mine, total, strict=False)
    return audio


def _play(job: RenderJob, processor: tuple, notes: list, total: int, *, strict: bool) -> np.ndarray:
    """``notes`` through one compiled processor with the patch's parameters and automation.
    ``strict``: a parameter libfaust compiled away is an error (one drum of a kit uses only its
    own sliders, so there it is skipped)."""
    sr = job.sample_rate
    engine, proc, addresses, defaults = processor
    proc.clear_midi()
    # Every parameter is laid down as a (constant) automation for the whole render: a value set
    # with set_parameter never reached a one-voice instrument (acid-303 ignored its square wave).
    values, curves = _parameter_values(job, addresses, defaults, total, strict)
    for address, value in values.items():
        proc.set_automation(address, np.full(2, value, dtype=np.float32))  # held for the whole render
    for address, curve in curves.items():
        proc.set_automation(address, curve)
    for n in notes:
        proc.add_midi_note(n.pitch, n.velocity, n.start / sr, (n.end - n.start) / sr)
    return _rendered(engine, total, sr)


def _rendered(engine, samples: int, sr: int) -> np.ndarray:
    """``samples`` samples of the engine's graph from its start: float32 ``(channels, samples)``."""
    with native_output_discarded():
        engine.render((samples + 0.5) / sr)
    audio = np.asarray(engine.get_audio(), dtype=np.float32)
    if audio.shape[1] < samples:
        audio = np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))
    return audio[:, :samples]


def _parameter_values(job: RenderJob, addresses: dict, defaults: dict, total: int, strict: bool):
    """``({address: value}, {address: value at every sample})``: every parameter's constant value
    (its slider's default or the patch's) and the patch's automation over a render ``total`` long."""
    faust = job.patch.faust
    values = dict(defaults)
    for label, value in faust.params:
        if strict or label in addresses:
            values[_address(addresses, label, job, f"faust.params.{label}")] = float(value)
    curves = {}
    for i, auto in enumerate(faust.automation):
        if strict or auto.param in addresses:
            curves[_address(addresses, auto.param, job, f"faust.automation[{i}].param")] = auto.values(total, job.loop_samples)
    return values, curves


def _play_by_voice(job: RenderJob, processor: tuple, notes: list, total: int, *, strict: bool) -> np.ndarray:
    """``notes`` each through a fresh one-voice copy of the instrument, summed in note order:
    float32 ``(channels, total)``. A note's voice sounds from its first sample until it has rung
    out after its length (``_voice_sound``), at most the patch's ``tail_s`` after it and never
    past ``total``. A note played again the same way (pitch, velocity, length, sweeps) is
    rendered once."""
    sr, faust = job.sample_rate, job.patch.faust
    engine, proc, addresses, defaults = processor
    values, curves = _parameter_values(job, addresses, defaults, total, strict)
    held = _voice_limited(notes, min(faust.voices, DRUM_VOICES) if faust.drums else faust.voices)  # as the host's
    ring = int(math.ceil(job.patch.tail_s * sr))
    audio = None
    guess = _RING_GUESS.get(id(proc), BLOCK * 16)

    def heard(n, length):  # what a voice reads: its note, and each sweep where DawDreamer reads it (block starts)
        return (n.pitch, n.velocity, n.end - n.start, length,
                *(curve[n.start:n.start + length:BLOCK].tobytes() for curve in curves.values()))

    sounding = [(n, length) for n in held if (length := min(total - n.start, n.end - n.start + ring)) > 0]
    keys = [heard(n, length) for n, length in sounding]
    again = Counter(keys)
    played: dict[tuple, np.ndarray] = {}  # a note played again the same way sounds the same: kept till then
    for (n, length), same in zip(sounding, keys):
        again[same] -= 1
        if same in played:
            sound = played.pop(same) if not again[same] else played[same]
            audio[:, n.start:n.start + sound.shape[1]] += sound
            continue
        note = dict(values)
        for label, value in (("freq", 440.0 * 2.0 ** ((n.pitch - 69) / 12.0)), ("gain", n.velocity / 127.0),
                             ("key", n.pitch), ("vel", n.velocity), ("velocity", n.velocity),
                             (GATE_SAMPLES, n.end - n.start)):
            if label in addresses:
                note[addresses[label]] = value
        for address, value in note.items():  # two samples: held for the whole render
            proc.set_automation(address, np.full(2, value, dtype=np.float32))
        for address, curve in curves.items():  # the sweep as it stands from the note's first sample
            part = curve[n.start:n.start + length]
            proc.set_automation(address, np.pad(part, (0, max(0, 2 - part.size)), mode="edge"))
        sound, rang = _voice_sound(engine, n.end - n.start, length, guess, sr)
        if again[same]:
            played[same] = sound
        guess = max(guess, rang)
        if audio is None:
            audio = np.zeros((sound.shape[0], total), dtype=np.float32)
        audio[:, n.start:n.start + sound.shape[1]] += sound
    _RING_GUESS[id(proc)] = guess
    return audio if audio is not None else np.zeros((2, total), dtype=np.float32)


def _voice_sound(engine, gate: int, most: int, guess: int, sr: int) -> tuple[np.ndarray, int]:
    """One note's voice, ``gate`` samples held, cut where it has gone quiet: after the first
    whole block (``BLOCK`` samples from the gate closing) whose RMS is below -90 dB, as libfaust's
    polyphonic host frees a released voice, or at ``most`` samples. ``guess``: how long to let it
    ring first (only the CPU spent depends on it: a longer render has the same first samples).
    Returns the sound and how long it rang past its gate (samples)."""
    ring = guess
    while True:
        length = min(most, gate + ring)
        sound = _rendered(engine, length, sr)
        after = sound[:, gate:gate + (length - gate) // BLOCK * BLOCK].astype(np.float64)
        blocks = after.reshape(sound.shape[0], -1, BLOCK)
        quiet = np.flatnonzero(np.sqrt((blocks * blocks).mean(axis=(0, 2))) < VOICE_STOP_LEVEL)
        if quiet.size:
            end = gate + (int(quiet[0]) + 1) * BLOCK
            return sound[:, :end], end - gate
        if length >= most:
            return sound, length - gate
        ring *= 2


def _voice_limited(notes: list, voices: int) -> list:
    """The notes in the order they start, each released no later than the start of the note that
    would hold a ``voices + 1``-th key down at once (the oldest held note gives its voice up)."""
    from farm.render.embedded import _Note

    out = sorted(notes, key=lambda n: (n.start, n.pitch, n.end, n.velocity))
    held: list[int] = []  # the notes still down, oldest first (a note up stays up: starts only grow)
    for i, n in enumerate(out):
        held = [j for j in held if out[j].end > n.start]
        over = max(0, len(held) - voices + 1)
        for j in held[:over]:
            out[j] = _Note(out[j].start, n.start, out[j].pitch, out[j].velocity)
        held = held[over:] + [i]
    return out


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
