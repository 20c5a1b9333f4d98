"""The embedded renderer: FluidSynth in-process (pyfluidsynth) with pedalboard effects; Faust and
plugin patches through DawDreamer in-process (``farm.render.dawdreamer``).

Each worker process loads a SoundFont once and keeps it; every job plays on a brand-new
FluidSynth synth (about a millisecond to make) with that SoundFont attached, because a reset
synth still carries state (reverb/chorus modulation, voice-slot history) that would make a loop
depend on the jobs before it. Same job, same bytes, whatever ran before and in any process.

Timing: MIDI ticks become sample positions through the template's bpm
(``tick * 60 * sr / (ppq * bpm)``). The synth is rendered block by block between event times;
FluidSynth applies an event at the boundary of its internal 64-sample block, so each event is
sent at the nearest boundary (at most 32 samples, 0.73 ms at 44.1 kHz, from its exact position;
the ``fluidsynth`` command line quantises to the same grid). Samples come out as float32
through ``fluid_synth_write_float``: float all the way.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from farm.errors import FarmError
from farm.patches import INTERPOLATIONS, Patch, apply_effects, default_soundfont
from farm.render import FINISHING, SAMPLE_RATES, RenderJob, register_backend
from farm.quiet import import_quietly

BLOCK = 64  # FluidSynth's internal block (FLUID_BUFSIZE); events land on its boundaries
CC_STEP = 256  # samples between controller-automation updates (5.8 ms at 44.1 kHz)
MELODIC_CHANNEL, DRUM_CHANNEL = 0, 9
INSTALL_HINT = ("FluidSynth library not found: install it with apt-get install libfluidsynth3 "
                "(Debian/Ubuntu), dnf install fluidsynth-libs (Fedora) or brew install fluid-synth (macOS)")
PYFLUIDSYNTH_HINT = "pyfluidsynth not installed: pip install pyfluidsynth (it also needs the FluidSynth library)"

# MIDI event kinds, in the order they apply at one instant: releases before new notes.
_CC, _BEND, _OFF, _ON = 0, 1, 2, 3


def _fluidsynth():
    """The pyfluidsynth module, or one line saying how to install the library it needs."""
    try:
        fluidsynth = import_quietly("fluidsynth")
    except ModuleNotFoundError as err:
        if err.name != "fluidsynth":
            raise
        raise FarmError(PYFLUIDSYNTH_HINT, field="backend") from None
    except (ImportError, OSError):  # pyfluidsynth is there, but ctypes found no libfluidsynth
        raise FarmError(INSTALL_HINT, field="backend") from None
    return fluidsynth


class _Lib:
    """ctypes prototypes for the FluidSynth calls pyfluidsynth does not wrap (float output)."""

    def __init__(self, fl):
        def fn(name, restype, *argtypes):
            return ctypes.CFUNCTYPE(restype, *argtypes)((name, fl))

        p, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
        self.write_float = fn("fluid_synth_write_float", i, p, i, p, i, i, p, i, i)
        self.set_interp = fn("fluid_synth_set_interp_method", i, p, i, i)
        self.set_reverb = fn("fluid_synth_set_reverb", i, p, d, d, d, d)
        self.set_chorus = fn("fluid_synth_set_chorus", i, p, i, d, d, d, i)
        self.version_str = fn("fluid_version_str", ctypes.c_char_p)
        self.new_mod = fn("new_fluid_mod", p)
        self.delete_mod = fn("delete_fluid_mod", None, p)
        self.mod_source1 = fn("fluid_mod_set_source1", None, p, i, i)
        self.mod_source2 = fn("fluid_mod_set_source2", None, p, i, i)
        self.mod_dest = fn("fluid_mod_set_dest", None, p, i)
        self.mod_amount = fn("fluid_mod_set_amount", None, p, d)
        self.add_default_mod = fn("fluid_synth_add_default_mod", i, p, p, i)
        self.get_sfont_by_id = fn("fluid_synth_get_sfont_by_id", p, p, i)
        self.add_sfont = fn("fluid_synth_add_sfont", i, p, p)
        self.remove_sfont = fn("fluid_synth_remove_sfont", i, p, p)
        self.set_log_function = fn("fluid_set_log_function", p, i, p, p)


_LIB: _Lib | None = None


def _lib() -> _Lib:
    global _LIB
    if _LIB is None:
        _LIB = _Lib(_fluidsynth()._fl)
        for level in (2, 3, 4):  # FLUID_WARN, INFO, DBG: problems surface as FarmErrors instead
            _LIB.set_log_function(level, None, None)
    return _LIB


def fluidsynth_version() -> str:
    return _lib().version_str().decode()


# -- the synth ----------------------------------------------------------------------------------
class LoadedSoundFont:
    """A SoundFont loaded once per process, shared by the short-lived synth of every job.

    FluidSynth keeps state a reset does not clear (its reverb and chorus modulate free-running
    delay lines; reused voice slots start from their previous note's filter and amplitude), so
    a job played on a synth that has played before comes out slightly different. Each job
    therefore gets a brand-new synth (about a millisecond) with this already-loaded SoundFont
    attached: the SoundFont stays warm, the synth state is always fresh.
    """

    def __init__(self, soundfont: Path):
        fs = _fluidsynth()
        lib = _lib()
        self.path = Path(soundfont)
        self.holder = fs.Synth(gain=0.0, samplerate=44100.0, channels=16)
        sfid = self.holder.sfload(str(self.path))
        if sfid < 0:
            raise FarmError("FluidSynth could not load this SoundFont", file=self.path,
                            field="soundfont")
        self.sfont = lib.get_sfont_by_id(self.holder.synth, sfid)

    def synth(self, patch: Patch, sample_rate: int, channel: int):
        """A fresh pyfluidsynth Synth at ``sample_rate`` with the patch set up on ``channel``."""
        fs, lib, e = _fluidsynth(), _lib(), patch.embedded
        synth = fs.Synth(gain=float(e.gain), samplerate=float(sample_rate), channels=16,
                         **{"synth.cpu-cores": 1, "synth.polyphony": int(e.polyphony),
                            "synth.reverb.active": 1 if e.reverb else 0,
                            "synth.chorus.active": 1 if e.chorus else 0})
        h = synth.synth
        sfid = lib.add_sfont(h, self.sfont)
        # CC74 (brightness) -> filter cutoff, +-48 semitones around the preset's own cutoff
        # (GM2 sound controller 5); FluidSynth's default modulators leave CC74 unmapped.
        mod = lib.new_mod()
        lib.mod_source1(mod, 74, 16 | 2)  # FLUID_MOD_CC | FLUID_MOD_BIPOLAR, linear, positive
        lib.mod_source2(mod, 0, 0)
        lib.mod_dest(mod, 8)  # GEN_FILTERFC
        lib.mod_amount(mod, 4800.0)
        lib.add_default_mod(h, mod, 1)  # FLUID_SYNTH_ADD
        lib.delete_mod(mod)
        lib.set_interp(h, -1, INTERPOLATIONS[e.interpolation])
        if e.reverb:
            lib.set_reverb(h, e.reverb.room_size, e.reverb.damping, e.reverb.width, e.reverb.level)
        if e.chorus:
            lib.set_chorus(h, e.chorus.voices, e.chorus.level, e.chorus.speed_hz, e.chorus.depth_ms, 0)
        if synth.program_select(channel, sfid, e.bank, e.program) != 0:
            self.release(synth)
            raise FarmError(f"bank {e.bank} program {e.program} is not in {self.path.name}",
                            file=patch.path, field="embedded.program")
        synth.cc(channel, 74, 64)  # brightness centred: the preset as designed
        synth.cc(channel, 91, e.reverb.send if e.reverb else 0)
        synth.cc(channel, 93, e.chorus.send if e.chorus else 0)
        return synth

    def release(self, synth) -> None:
        """Delete a job's synth, keeping the shared SoundFont loaded."""
        _lib().remove_sfont(synth.synth, self.sfont)
        synth.delete()

    def close(self) -> None:
        if self.holder is not None:
            self.holder.delete()
            self.holder = None


def play(synth, events: list[tuple[int, int, int, int, int]], total: int, channel: int) -> np.ndarray:
    """Play ``events`` ``(sample, kind, a, b, 0)`` on ``synth``; float32 ``(2, total)``."""
    buf = np.zeros((2, total), dtype=np.float32)
    left = ctypes.c_void_p(buf[0].ctypes.data)
    right = ctypes.c_void_p(buf[1].ctypes.data)
    write, h = _lib().write_float, synth.synth
    cursor = 0
    for when, kind, a, b, _ in events:
        at = min(total, (when + BLOCK // 2) // BLOCK * BLOCK)
        if at > cursor:
            write(h, at - cursor, left, cursor, 1, right, cursor, 1)
            cursor = at
        if kind == _ON:
            synth.noteon(channel, a, b)
        elif kind == _OFF:
            synth.noteoff(channel, a)
        elif kind == _CC:
            synth.cc(channel, a, b)
        else:
            synth.pitch_bend(channel, a)
    if cursor < total:
        write(h, total - cursor, left, cursor, 1, right, cursor, 1)
    return buf


_SOUNDFONTS: dict[str, LoadedSoundFont] = {}


def loaded_soundfont(soundfont: Path) -> LoadedSoundFont:
    """This process's loaded copy of ``soundfont`` (loaded on first use)."""
    key = str(Path(soundfont).resolve())
    if key not in _SOUNDFONTS:
        _SOUNDFONTS[key] = LoadedSoundFont(Path(soundfont))
    return _SOUNDFONTS[key]


def close_soundfonts() -> None:
    """Free every loaded SoundFont of this process."""
    while _SOUNDFONTS:
        _SOUNDFONTS.popitem()[1].close()


# -- MIDI to events ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Note:
    start: int  # samples
    end: int  # samples
    pitch: int
    velocity: int


def read_part_notes(job: RenderJob):
    """The part's MIDI as (notes, control changes, pitch bends) in sample positions."""
    pretty_midi = import_quietly("pretty_midi")

    path = job.midi_path
    field = f"parts.{job.part}.midi"
    if not Path(path).is_file():
        raise FarmError("MIDI file not found", file=path, field=field)
    size = Path(path).stat().st_size
    if size == 0:
        raise FarmError("empty MIDI file (0 bytes)", file=path, field=field)
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except EOFError:  # mido reads past the last byte: the file stops mid-header or mid-track
        raise FarmError(f"MIDI file cut short: it stops after {size} bytes, part-way through its "
                        "header or a track", file=path, field=field) from None
    except Exception as err:  # mido/pretty_midi raise many types for a damaged file
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FarmError(f"corrupt MIDI: {message}", file=path, field=field) from None
    scale = 60.0 * job.sample_rate / (pm.resolution * job.template.bpm)

    def samples(seconds: float) -> int:
        return int(round(pm.time_to_tick(seconds) * scale))

    notes, ccs, bends = [], [], []
    for inst in pm.instruments:
        for n in inst.notes:
            notes.append(_Note(samples(n.start), samples(n.end), n.pitch, n.velocity))
        for c in inst.control_changes:
            ccs.append((samples(c.time), c.number, c.value))
        for pb in inst.pitch_bends:
            bends.append((samples(pb.time), pb.pitch))
    return notes, ccs, bends


def shaped_notes(job: RenderJob) -> tuple[list[_Note], list, list]:
    """The part's notes after the patch's MIDI transforms (octave, length, velocity curve),
    wrapped into the loop, each ended before the next onset of its pitch; with the part's control
    changes and pitch bends. Every patch kind plays these."""
    e = job.patch.sound
    loop = job.loop_samples
    drums = e.is_drum_kit
    notes, ccs, bends = read_part_notes(job)
    shaped = []
    for n in notes:
        start = n.start % loop  # a loop: anything written past its end belongs at its start
        length = max(1, n.end - n.start)
        if not drums:
            length = max(1, int(round(length * e.note_length)))
        length = min(length, loop)
        pitch = n.pitch + (0 if drums else 12 * e.octave)
        if not 0 <= pitch <= 127:
            continue
        velocity = int(round(127.0 * (n.velocity / 127.0) ** e.velocity_curve))
        shaped.append(_Note(start, start + length, pitch, min(127, max(1, velocity))))
    # A note-off must not cut a later note of the same pitch: end each note at the next onset.
    shaped.sort(key=lambda n: (n.pitch, n.start))
    out = []
    for i, n in enumerate(shaped):
        end = n.end
        if i + 1 < len(shaped) and shaped[i + 1].pitch == n.pitch:
            end = max(n.start + 1, min(end, shaped[i + 1].start))
        out.append(_Note(n.start, end, n.pitch, n.velocity))
    return out, ccs, bends


def job_events(job: RenderJob, total: int) -> list[tuple[int, int, int, int, int]]:
    """The part's MIDI after the patch's transforms, as sorted ``(sample, kind, a, b, 0)``."""
    e = job.patch.sound
    loop = job.loop_samples
    notes, ccs, bends = shaped_notes(job)
    events: list[tuple[int, int, int, int, int]] = []
    for n in notes:
        events.append((n.start, _ON, n.pitch, n.velocity, 0))
        events.append((n.end, _OFF, n.pitch, 0, 0))

    for when, number, value in ccs:
        if when < total:
            events.append((when % loop, _CC, number, value, 0))
    for when, pitch in bends:
        if when < total:
            events.append((when % loop, _BEND, pitch, 0, 0))
    for auto in e.cc:  # periodic over the loop, continued through the tail
        last = None
        for when in range(0, total, CC_STEP):
            value = auto.value((when % loop) / loop)
            if value != last:
                events.append((when, _CC, auto.number, value, 0))
                last = value
    events.sort()
    return events


# -- the backend -------------------------------------------------------------------------------
@register_backend("embedded")
class EmbeddedBackend:
    """FluidSynth + pedalboard, in this process. ``render_raw`` returns loops with their tails."""

    name = "embedded"

    def __init__(self, **_options):
        import pedalboard

        sf = default_soundfont()
        from farm.render.dawdreamer import dawdreamer_version

        self.version = (f"fluidsynth {fluidsynth_version()}; soundfont {sf.name} "
                        f"{sf.stat().st_size} bytes; pedalboard {pedalboard.__version__}; "
                        f"{dawdreamer_version()}; {FINISHING}")

    def render_raw(self, jobs: Sequence[RenderJob]) -> list[np.ndarray]:
        return [render_job_raw(job) for job in jobs]

    def check_patch(self, patch) -> None:
        """Before a night: a hosted plugin must render the same notes to the same bytes twice."""
        if patch.kind == "plugin":
            from farm.render.plugin import check_deterministic

            check_deterministic(patch)

    def close(self) -> None:
        """SoundFonts stay loaded for the life of the process; ``close_soundfonts()`` frees them."""


def render_job_raw(job: RenderJob) -> np.ndarray:
    """One job: float32 ``(2, loop + tail)`` with the patch's effects applied. Faust and plugin
    patches play through DawDreamer (``farm.render.dawdreamer``), SoundFont patches here."""
    patch = job.patch
    if job.sample_rate not in SAMPLE_RATES:
        raise FarmError(f"sample rate {job.sample_rate} not supported "
                        f"({', '.join(map(str, SAMPLE_RATES))})", field="sample_rate")
    if patch.kind != "soundfont":
        from farm.render import dawdreamer

        return dawdreamer.render_job_raw(job)
    loop = job.loop_samples
    length = loop + int(math.ceil(patch.tail_s * job.sample_rate))
    channel = DRUM_CHANNEL if patch.embedded.is_drum_kit else MELODIC_CHANNEL
    events = job_events(job, length)
    font = loaded_soundfont(patch.embedded.soundfont)
    synth = font.synth(patch, job.sample_rate, channel)
    try:
        audio = play(synth, events, length, channel)
    finally:
        font.release(synth)
    audio = apply_effects(patch, audio, job.sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)
