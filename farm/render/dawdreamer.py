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
wherever a sample lands close enough to a zero crossing, and lost the rest of its release), at most
``tail_s``. The instrument has the ``[nvoices:N]`` it declares, counted as libfaust's host counts
them: a ringing release takes a voice until it is quiet, and a note that finds all N taken steals
the oldest released voice (else the oldest held), fading it out over half a block.
"""
from __future__ import annotations

import math
import re
import statistics
from collections import Counter, deque
from dataclasses import dataclass
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
_RING_GUESS: dict[int, deque] = {}  # per one-voice processor: how long its last voices sounded past their gate (samples)


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
        proc.set_automation(address, np.array(curve))  # DawDreamer takes only a writable array
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
    """``notes`` each through a fresh one-voice copy of the instrument, summed: float32
    ``(channels, total)``.

    The instrument has ``voices`` voices, as libfaust's host gives it: a voice is taken from a
    note's first sample until it has rung out after its length (``_quiet_end``), at most the
    patch's ``tail_s`` after it, never past ``total``. A note that finds every voice taken steals
    one, the oldest released first, else the oldest held, which fades out over ``STEAL_FADE``
    samples. A note played again the same way (pitch, velocity, length, sweeps) is rendered once.
    How much of a voice to render is guessed from the voices before it; a guess too short is
    rendered again, longer: only the CPU depends on the guess (a longer render has the same
    first samples)."""
    sr, faust = job.sample_rate, job.patch.faust
    engine, proc, addresses, defaults = processor
    values, curves = _parameter_values(job, addresses, defaults, total, strict)
    voices = min(faust.voices, DRUM_VOICES) if faust.drums else faust.voices
    ring = int(math.ceil(job.patch.tail_s * sr))
    rang = _RING_GUESS.setdefault(id(proc), deque([BLOCK * 16], maxlen=16))  # how long recent voices sounded (median: the guess)
    audio = np.zeros((2, total), dtype=np.float32)

    def heard(n, most):  # what a voice reads: its note, and each sweep where DawDreamer reads it (block starts)
        return (n.pitch, n.velocity, n.end - n.start, most,
                *(curve[n.start:n.start + most:BLOCK].tobytes() for curve in curves.values()))

    def render(v: _Voice, length: int) -> None:
        n, note = v.note, dict(values)
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
        v.sound.audio = _rendered(engine, length, sr)
        v.sound.end = _quiet_end(v.sound.audio, n.end - n.start, v.most)

    def through(v: _Voice, need: int) -> None:  # render the voice's first ``need`` samples, or to its end
        while v.sound.end is None and v.sound.audio.shape[1] < need:
            gate = v.note.end - v.note.start
            render(v, min(v.most, max(need, gate + 2 * (v.sound.audio.shape[1] - gate))))

    left: dict[int, tuple] = {}  # voices that have left, waiting to be mixed in note order (the same sum every time)
    mixed = 0  # how many voices, in note order, are in ``audio``

    def leaves(v: _Voice, stop: int, fade: int = 0, *, guide: bool = True) -> None:  # sounds to ``stop``, then fades
        nonlocal mixed
        end = v.sound.audio.shape[1] if v.sound.end is None else v.sound.end  # stolen: rendered past stop + fade
        stop = min(stop, end)
        fade = min(fade, end - stop)
        if guide:
            rang.append(max(BLOCK, stop + fade - (v.note.end - v.note.start)))
        left[v.order] = (v, stop, fade)
        while mixed in left:
            v, stop, fade = left.pop(mixed)
            mixed += 1
            sound, start = v.sound.audio, v.note.start
            if sound.shape[0] != audio.shape[0]:
                sound = np.broadcast_to(sound, (audio.shape[0], sound.shape[1]))
            audio[:, start:start + stop] += sound[:, :stop]
            if fade > 0:
                audio[:, start + stop:start + stop + fade] += sound[:, stop:stop + fade] * _STEAL_RAMP[:fade]

    notes = sorted(notes, key=lambda n: (n.start, n.pitch, n.end, n.velocity))
    sounding = [(n, most) for n in notes if (most := min(total - n.start, n.end - n.start + ring)) > 0]
    keys = [heard(n, most) for n, most in sounding]
    again = Counter(keys)
    played: dict[tuple, _Sound] = {}  # a note played again the same way sounds the same: kept till then
    taken: list[_Voice] = []  # the voices sounding, oldest first
    for order, ((n, most), key) in enumerate(zip(sounding, keys)):
        if len(taken) >= voices:  # has a released voice rung out, freeing itself?
            for v in [v for v in taken if v.note.end <= n.start]:
                through(v, n.start - v.note.start)
                if v.sound.end is not None and v.sound.end <= n.start - v.note.start:
                    leaves(v, v.sound.end)
                    taken.remove(v)
        if len(taken) >= voices:
            victim = next((v for v in taken if v.note.end <= n.start), taken[0])
            through(victim, n.start - victim.note.start + STEAL_FADE)
            leaves(victim, n.start - victim.note.start, STEAL_FADE)
            taken.remove(victim)
        again[key] -= 1
        voice = _Voice(n, order, most, played.pop(key, None) or _Sound())
        if again[key]:
            played[key] = voice.sound
        if voice.sound.audio is None:
            render(voice, min(most, n.end - n.start + statistics.median_high(rang)))
        taken.append(voice)
    for v in taken:  # the last voices ring out (no note comes to free them: no guide to the next guess)
        while v.sound.end is None:
            through(v, v.sound.audio.shape[1] + 1)
        leaves(v, v.sound.end, guide=False)
    return audio


STEAL_FADE = BLOCK // 2  # a stolen voice fades out over half a block, as libfaust's host fades one over half its buffer
_STEAL_RAMP = (1.0 - np.arange(STEAL_FADE) / STEAL_FADE).astype(np.float32)


@dataclass(eq=False)
class _Sound:
    """A voice's sound as far as it is rendered (float32 ``(channels, samples)`` from its note's
    first sample) and, once known, where it ends (samples): where it went quiet, or its ``most``."""
    audio: np.ndarray | None = None
    end: int | None = None


@dataclass(eq=False)
class _Voice:
    note: object  # farm.render.embedded._Note
    order: int  # its place among the notes in the order they start
    most: int  # the longest it may sound (samples): to ``tail_s`` past its length, or the render's end
    sound: _Sound


def _quiet_end(sound: np.ndarray, gate: int, most: int) -> int | None:
    """Where a voice ``gate`` samples held ends: after the first whole block (``BLOCK`` samples
    from the gate closing) whose RMS is below -90 dB, as libfaust's polyphonic host frees a
    released voice; ``most`` when ``sound`` reaches it first; None when ``sound`` is too short to
    tell."""
    length = sound.shape[1]
    if gate < length:
        after = sound[:, gate:gate + (length - gate) // BLOCK * BLOCK].astype(np.float64)
        blocks = after.reshape(sound.shape[0], -1, BLOCK)
        quiet = np.flatnonzero(np.sqrt((blocks * blocks).mean(axis=(0, 2))) < VOICE_STOP_LEVEL)
        if quiet.size:
            return min(most, gate + (int(quiet[0]) + 1) * BLOCK)
    return most if length >= most else None


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
