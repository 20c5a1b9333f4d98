"""Hosted instrument plugins (VST2, VST3, LV2) played in-process by DawDreamer.

A plugin keeps state a render leaves behind (voices, LFO phases): amsynth rendered the same notes
differently the second time on one instance, and identically on every fresh instance. So each
job loads a fresh instance (amsynth: about 0.13 s), sets its parameters (the preset's, then the
patch's), plays the notes and is dropped. Before a plugin's first job in a process it renders a
short phrase twice on two fresh instances (or once, when it matches the phrase's digest kept from
an earlier run): a plugin whose bytes differ (ZynAddSubFX and Kars did) is refused with one line,
since no loop of it could keep its content address.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os

import numpy as np

from farm.errors import FarmError, unknown_name
from farm.quiet import native_output_discarded
from farm.render import RenderJob

BLOCK = 512
PROBE_NOTES = ((48, 100, 0.0, 0.6), (55, 80, 0.1, 0.5), (64, 110, 0.2, 0.9), (60, 64, 0.7, 0.4), (60, 127, 1.2, 0.3))
PROBE_S = 2.0
_CHECKED: dict[tuple, str] = {}


@contextlib.contextmanager
def floating_point_kept():
    """Put the process's floating-point environment back as it was (x86: the MXCSR register).

    Loading ZynAddSubFX switched on flush-to-zero for the whole process: every later render in
    that worker would have lost its denormals (its bytes changed), and libfaust's compiler then
    failed an assertion and aborted. A plugin may set what it likes while it runs; afterwards the
    process gets its own settings back."""
    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    env = ctypes.create_string_buffer(256)  # fenv_t: 32 bytes on x86-64 glibc, 8 on arm64
    saved = libm.fegetenv(env) == 0
    try:
        yield
    finally:
        if saved:
            libm.fesetenv(env)


def _instance(patch, sample_rate: int, name: str = "plugin"):
    """A fresh engine and plugin instance for ``patch`` at ``sample_rate``, its parameters set."""
    # synthv1 and other Qt plugins abort the process without a display unless Qt draws offscreen
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from farm.render.dawdreamer import _dawdreamer

    sound = patch.plugin
    daw = _dawdreamer()
    engine = daw.RenderEngine(sample_rate, BLOCK)
    try:
        with native_output_discarded(), floating_point_kept():
            proc = engine.make_plugin_processor(name, sound.plugin)
    except Exception as err:  # DawDreamer raises bare exceptions for a plugin it cannot load
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FarmError(f"the plugin failed to load: {message}", file=patch.path,
                        field="plugin.lv2" if "://" in sound.plugin else "plugin.path") from None
    indices = {d["name"]: d["index"] for d in proc.get_parameters_description()}

    def index(label: str, field: str) -> int:
        if label not in indices:
            raise FarmError(unknown_name("parameter", label, sorted(indices)), file=patch.path, field=field)
        return indices[label]

    for label, value in sound.params:
        proc.set_parameter(index(label, f"plugin.params.{label}"), float(value))
    return engine, proc, index


def _play(engine, proc, notes, seconds: float) -> np.ndarray:
    for pitch, velocity, start_s, length_s in notes:
        proc.add_midi_note(int(pitch), int(velocity), float(start_s), float(length_s))
    engine.load_graph([(proc, [])])
    with native_output_discarded(), floating_point_kept():
        engine.render(seconds)
    return np.asarray(engine.get_audio(), dtype=np.float32)


def save_preset(plugin: str, path, settings: dict[str, float] | None = None, sample_rate: int = 44100) -> dict:
    """Write every parameter of ``plugin`` (its defaults, with ``settings`` by name applied) as a
    preset a plugin patch names; returns what was written. Written to a temporary name, renamed."""
    import json

    from farm.files import atomic_write_text
    from farm.render.dawdreamer import _dawdreamer

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    engine = _dawdreamer().RenderEngine(sample_rate, BLOCK)
    with native_output_discarded(), floating_point_kept():
        proc = engine.make_plugin_processor("preset", plugin)
    indices = {d["name"]: d["index"] for d in proc.get_parameters_description()}
    for name, value in (settings or {}).items():
        if name not in indices:
            raise FarmError(unknown_name("parameter", name, sorted(indices)), field="settings")
        proc.set_parameter(indices[name], float(value))
    data = {"plugin": plugin,
            "parameters": {name: round(float(proc.get_parameter(i)), 6) for name, i in indices.items()}}
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return data


def check_deterministic(patch, sample_rate: int = 44100) -> None:
    """Refuse a plugin patch unless two fresh instances render a test phrase to the same bytes.

    The second render may be one from an earlier run: the phrase's digest is kept (``farm.memo``),
    and a first render that matches it needs no second. One that does not (a new plugin binary, a
    first run) is rendered again on another fresh instance, and the two must agree."""
    key = (patch.plugin.plugin, patch.content_hash, sample_rate)
    if key in _CHECKED:
        return
    first = _probe(patch, sample_rate, "probe0")
    kept_as = "\t".join(map(str, key))
    if _probes().get(kept_as) != first:
        if _probe(patch, sample_rate, "probe1") != first:
            raise FarmError(f"the plugin {patch.plugin.plugin} rendered the same notes to different bytes on two "
                            "fresh instances: its loops could not be rendered again exactly, so it is refused",
                            file=patch.path, field="plugin")
        _probes().put(kept_as, first)
    _CHECKED[key] = first


def _probe(patch, sample_rate: int, name: str) -> str:
    """The sha256 of the test phrase rendered by a fresh instance of ``patch``."""
    engine, proc, _ = _instance(patch, sample_rate, name)
    digest = hashlib.sha256(_play(engine, proc, PROBE_NOTES, PROBE_S).tobytes()).hexdigest()
    del proc, engine
    return digest


def _probes():
    from farm.memo import kept

    return kept("plugin-probes", packages=("dawdreamer",))


def render_plugin_raw(job: RenderJob, total: int) -> np.ndarray:
    """The job's part played by its hosted plugin: float32 ``(channels, total)``, before effects."""
    from farm.render.embedded import shaped_notes

    check_deterministic(job.patch, job.sample_rate)
    sr = job.sample_rate
    engine, proc, index = _instance(job.patch, sr)
    for i, auto in enumerate(job.patch.plugin.automation):
        curve = np.array(auto.values(total, job.loop_samples))  # a writable copy, as DawDreamer takes
        proc.set_automation(index(auto.param, f"plugin.automation[{i}].param"), curve)
    notes, _ccs, _bends = shaped_notes(job)
    audio = _play(engine, proc, [(n.pitch, n.velocity, n.start / sr, (n.end - n.start) / sr) for n in notes],
                  (total + 0.5) / sr)
    if audio.shape[1] < total:
        audio = np.pad(audio, ((0, 0), (0, total - audio.shape[1])))
    return audio[:, :total]
