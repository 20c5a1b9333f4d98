"""The REAPER backend, tested without REAPER.

Generated projects are read back with ``rppxml`` (REAPER's own WDL parser, an independent
reader); rendering runs against ``tests/standin/reaper``, a stand-in executable that reads the
project's regions and writes the files REAPER would; reapy calls go to a recorder with reapy's
interface. Nothing here runs REAPER itself.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pretty_midi
import pytest
import rppxml
from click.testing import CliRunner

from farm.cli import main as farm
from farm.errors import FarmError
from farm.model import ChordLabel, Key, Meter, PartInfo, Template, canonical_json, content_id
from farm.patches import load_patch
from farm.render import FINISHING, RenderJob, get_backend, render_loops
from farm.render.reaper import (ProjectsWritten, ReaperBackend, ReaperRenderError, find_reaper,
                                reaper_command, write_projects)
from farm.reaper_live import UNREACHABLE
from farm.rpp import fxchain_from_track_chunk, load_fxchain, plan_projects, write_project

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin" / "reaper"
SR = 44100
PCS = {"C": (0, 4, 7), "F": (5, 9, 0), "G": (7, 11, 2), "Am": (9, 0, 4)}
ROOTS = {"C": 48, "F": 53, "G": 55, "Am": 57}


# -- fixtures -------------------------------------------------------------------------------------
def make_template(directory: Path, bpm: float, meter: str, symbols=("C", "F"), seed=0) -> Path:
    """A template whose ``chords`` part holds each bar's triad for the whole bar (known notes)."""
    m = Meter.parse(meter)
    ppq = 480
    bar_ticks = int(m.quarters_per_bar * ppq)
    midi = pretty_midi.PrettyMIDI(resolution=ppq, initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=0, name="chords")
    for i, s in enumerate(symbols):
        for offset in (0, 4 if s != "Am" else 3, 7):
            pitch = ROOTS[s] + offset
            start = midi.tick_to_time(i * bar_ticks)
            end = midi.tick_to_time((i + 1) * bar_ticks - 10)
            inst.notes.append(pretty_midi.Note(velocity=100, pitch=pitch, start=start, end=end))
    midi.instruments.append(inst)
    if m.numerator != 4 or m.denominator != 4:
        midi.time_signature_changes = [pretty_midi.TimeSignature(m.numerator, m.denominator, 0)]
    chords = tuple(ChordLabel(bar=i + 1, symbol=s, roman="I", root_pc=PCS[s][0], pitch_classes=PCS[s],
                              bass_pc=PCS[s][0]) for i, s in enumerate(symbols))
    t = Template(id=content_id(str(bpm), meter, *symbols, str(seed)), style="test", seed=seed,
                 key=Key("C", "major"), bpm=bpm, meter=m, bars=len(symbols), ppq=ppq, chords=chords,
                 parts=(PartInfo("chords", "chords.mid", 3 * len(symbols)),), generator_version="test")
    target = directory / t.id
    target.mkdir(parents=True)
    midi.write(str(target / "chords.mid"))
    (target / "template.json").write_text(canonical_json(t.to_dict()))
    return target


@pytest.fixture
def standin_env(monkeypatch):
    """The stand-in runs under this venv's python (numpy), and never under Xvfb."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for knob in ("SKIP", "SHORT", "SILENT", "ONCE", "HANG", "CRASH", "SLEEP", "LOG", "EXIT", "PER_REGION"):
        monkeypatch.delenv(f"FARM_STANDIN_{knob}", raising=False)
    return monkeypatch


@pytest.fixture
def jobs(tmp_path):
    """Three loops at two tempi and two meters, through two patches with shipped chains."""
    a = make_template(tmp_path / "templates", 120.0, "4/4", ("C", "F"))
    b = make_template(tmp_path / "templates", 96.0, "3/4", ("Am", "G"), seed=1)
    piano, strings = load_patch("dry-piano-chords"), load_patch("string-ensemble")
    return [RenderJob(Template.load(a), a, "chords", piano, SR),
            RenderJob(Template.load(b), b, "chords", piano, SR),
            RenderJob(Template.load(a), a, "chords", strings, SR)]


def backend(tmp_path, **options) -> ReaperBackend:
    options = {"reaper": STANDIN, "xvfb": False, "workdir": tmp_path / "work", "progress": False, **options}
    return get_backend("reaper", **options)


def children(block, tag):
    return [c for c in block.children if isinstance(c, rppxml.RPPXML) and c.name == tag]


def lines(block, key):
    return [c for c in block.children if isinstance(c, list) and c and c[0] == key]


def source_notes(source):
    """``(ppq, sorted [(pitch, on tick, off tick)], tick of the last event, its bytes)`` of an
    in-project ``<SOURCE MIDI`` as rppxml decodes it (``E`` lines: tick delta, then bytes)."""
    hasdata = lines(source, "HASDATA")[0]
    assert hasdata[1] == 1 and hasdata[3] == "QN"
    tick, notes, held, raw = 0, [], {}, b""
    for event in (c for c in source.children if isinstance(c, list) and c[0] in ("E", "e")):
        tick += event[1]
        raw = b"".join(event[2:])
        if raw[0] & 0xF0 == 0x90 and raw[2] > 0:
            held.setdefault((raw[0] & 15, raw[1]), []).append(tick)
        elif raw[0] & 0xF0 in (0x80, 0x90):
            notes.append((raw[1], held[(raw[0] & 15, raw[1])].pop(0), tick))
    return hasdata[2], sorted(notes), tick, raw


def part_notes(midi_path) -> list[tuple[int, int, int]]:
    """The part's notes as pretty_midi reads the file: ``(pitch, on tick, off tick)``, sorted."""
    midi = pretty_midi.PrettyMIDI(str(midi_path))
    return sorted((n.pitch, midi.time_to_tick(n.start), midi.time_to_tick(n.end))
                  for inst in midi.instruments for n in inst.notes)


def pitch_classes(audio: np.ndarray, sr: int, top: int = 3) -> set[int]:
    """The ``top`` strongest pitch classes of ``audio`` (FFT energy folded onto 12 classes)."""
    mono = audio.mean(axis=0)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    freqs = np.fft.rfftfreq(len(mono), 1 / sr)
    keep = (freqs > 60) & (freqs < 2000)
    midi = 69 + 12 * np.log2(freqs[keep] / 440.0)
    energy = np.zeros(12)
    np.add.at(energy, np.round(midi).astype(int) % 12, spectrum[keep] ** 2)
    return set(np.argsort(energy)[-top:].tolist())


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies excluded) whose process group is ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# -- RPP files, read back by an independent parser -----------------------------------------------
def test_projects_parse_with_rppxml_and_hold_regions_tempo_items_chain_and_render_settings(tmp_path, jobs):
    paths = write_projects(jobs, tmp_path / "rpp", loops_per_project=2)
    assert len(paths) == 2  # 3 loops, 2 per project
    plans = plan_projects(jobs, tmp_path / "rpp", loops_per_project=2)
    for path, plan in zip(paths, plans):
        project = rppxml.load(str(path))
        assert project.name == "REAPER_PROJECT"
        # render settings: regions as separate files, $region, WAV 24-bit at the batch rate
        assert lines(project, "RENDER_FILE")[0][1] == str(plan.render_dir)
        assert lines(project, "RENDER_PATTERN")[0][1] == "$region"
        assert lines(project, "RENDER_FMT")[0][1:] == [0, 2, SR]
        assert lines(project, "RENDER_RANGE")[0][1] == 3  # bounds: all project regions
        cfg = base64.b64decode(children(project, "RENDER_CFG")[0].children[0][0])
        assert cfg[:4] == b"evaw" and cfg[4] == 24

        markers = lines(project, "MARKER")
        assert len(markers) == 2 * len(plan.regions)
        points = [p for p in children(project, "TEMPOENVEX")[0].children if isinstance(p, list) and p[0] == "PT"]
        tracks = {t.children[0][1]: t for t in children(project, "TRACK")}
        for k, region in enumerate(plan.regions):
            job = jobs[region.job_index]
            start, end = markers[2 * k], markers[2 * k + 1]
            assert start[1] == end[1] == k + 1 and start[3] == region.name and start[4] == 1
            # region length in seconds and in beats: the loop plus the patch's tail
            length_s = float(end[2]) - float(start[2])
            frames = job.loop_samples + round(job.patch.tail_s * SR)
            assert round(length_s * SR) == int(length_s * SR) == frames  # rounded or truncated: exact
            loop_beats = job.template.bars * job.template.meter.quarters_per_bar
            assert length_s * job.template.bpm / 60 == pytest.approx(
                float(loop_beats) + job.patch.tail_s * job.template.bpm / 60, abs=1.5 / SR * job.template.bpm / 60)  # 3 roundings
            assert float(start[2]) == int(float(start[2]))  # whole seconds: sample-exact bounds
            # tempo and meter switch at the region start
            pt = next(p for p in points if float(p[1]) == float(start[2]))
            num, den = job.template.meter.numerator, job.template.meter.denominator
            assert float(pt[2]) == job.template.bpm and pt[3] == 1 and pt[4] == num + den * 65536
            # the loop's MIDI item on its patch's track, at the region start, one loop long
            track = tracks[job.patch.name]
            item = next(i for i in children(track, "ITEM") if lines(i, "NAME")[0][1] == region.name)
            assert float(lines(item, "POSITION")[0][1]) == float(start[2])
            assert float(lines(item, "LENGTH")[0][1]) == pytest.approx(job.template.duration_s, abs=1e-12)
            # in-project MIDI: exactly the part's notes, and an all-notes-off at the loop's end
            source = children(item, "SOURCE")[0]
            assert source.params == ["MIDI"]
            ppq, notes, end_tick, last = source_notes(source)
            assert ppq == job.template.ppq and end_tick == loop_beats * ppq and last == b"\xb0\x7b\x00"
            assert notes == part_notes(job.midi_path)
        for name, track in tracks.items():
            chain = children(track, "FXCHAIN")[0]
            shipped = rppxml.loads(load_fxchain(ROOT / "patches" / f"{name}.RfxChain"))
            js = children(chain, "JS")[0]
            assert js == next(c for c in shipped if isinstance(c, rppxml.RPPXML))
    # deterministic: the same jobs give the same text (only the output directory differs)
    again = write_projects(jobs, tmp_path / "rpp2", loops_per_project=2)
    assert [p.read_text().replace(str(tmp_path / "rpp2"), "D") for p in again] == \
           [p.read_text().replace(str(tmp_path / "rpp"), "D") for p in paths]


def test_a_patch_without_a_usable_chain_is_one_clear_error(tmp_path, jobs):
    template_dir = jobs[0].template_dir
    vital = RenderJob(jobs[0].template, template_dir, "chords", load_patch("dusty-pad"), SR)
    with pytest.raises(FarmError) as err:
        write_projects([jobs[0], vital], tmp_path / "rpp")
    assert err.value.file.endswith("dusty-pad.toml") and err.value.field == "reaper.fxchain"
    assert not (tmp_path / "rpp").exists()  # nothing written before the check

    # a patch with no [reaper] table at all
    src = (ROOT / "patches" / "dry-piano-chords.toml").read_text()
    bare = tmp_path / "patches" / "bare.toml"
    bare.parent.mkdir()
    bare.write_text(src.split("[reaper]")[0].replace('name = "dry-piano-chords"', 'name = "bare"'))
    job = RenderJob(jobs[0].template, template_dir, "chords", load_patch(bare), SR)
    with pytest.raises(FarmError) as err:
        backend(tmp_path, rpp_only=tmp_path / "out").render_raw([job])
    assert err.value.file == str(bare.resolve()) and err.value.field == "reaper.fxchain"

    # a chain file that holds no plugin
    empty = tmp_path / "patches" / "empty.RfxChain"
    empty.write_text("BYPASS 0 0 0\nWAK 0 0\n")
    with pytest.raises(FarmError, match="no plugin"):
        load_fxchain(empty, patch_file=bare)


def test_rpp_only_writes_the_projects_and_stops(tmp_path, jobs):
    engine = backend(tmp_path, reaper=None, rpp_only=tmp_path / "rpp", loops_per_project=8)
    with pytest.raises(ProjectsWritten) as done:
        engine.render_raw(jobs)
    assert [p.suffix for p in done.value.paths] == [".rpp"]
    assert len(lines(rppxml.load(str(done.value.paths[0])), "MARKER")) == 6


# -- rendering with the stand-in executable -------------------------------------------------------
def test_render_through_the_standin_gives_exact_loops_with_the_labelled_chords(tmp_path, jobs, standin_env):
    engine = backend(tmp_path, instances=2, loops_per_project=2)
    raws = engine.render_raw(jobs)
    assert not list((tmp_path / "work" / "projects").iterdir())  # read back, then cleaned up
    for job, raw in zip(jobs, raws):
        assert raw.dtype == np.float32 and raw.shape == (2, job.loop_samples + round(job.patch.tail_s * SR))
        for bar in job.template.chords:  # each bar sounds its own chord: items sit in their regions
            a = job.template.bar_start_sample(bar.bar, SR)
            b = job.template.bar_start_sample(bar.bar + 1, SR)
            assert pitch_classes(raw[:, a:b], SR) == set(bar.pitch_classes)
    loops = render_loops(jobs, engine)  # then the shared folding and loudness path
    for job, loop in zip(jobs, loops):
        assert loop.audio.shape == (2, job.loop_samples)
        assert loop.lufs == pytest.approx(job.patch.target_lufs, abs=0.5)
        assert loop.renderer == "reaper" and loop.renderer_version.startswith("REAPER")
    engine.close()


def test_parallel_instances_run_at_once_each_in_its_own_group_and_resource_dir(tmp_path, jobs, standin_env):
    log = tmp_path / "runs.jsonl"
    standin_env.setenv("FARM_STANDIN_LOG", str(log))
    standin_env.setenv("FARM_STANDIN_SLEEP", "1.5")  # long enough to overlap on a busy machine
    four = jobs + [jobs[0]]
    backend(tmp_path, instances=2, loops_per_project=1).render_raw(four)
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 4
    for run in runs:
        assert run["pgid"] == run["pid"]  # a new process group per REAPER run
        assert {"-nosplash", "-ignoreerrors", "-newinst"} <= set(run["flags"])
    overlap = max(sum(1 for r in runs if r["start"] < t["end"] and t["start"] < r["end"]) for t in runs)
    assert overlap == 2  # two instances at a time, never more
    for r in runs:
        for t in runs:
            if r is not t and r["start"] < t["end"] and t["start"] < r["end"]:
                assert r["cfgfile"] != t["cfgfile"]  # concurrent instances never share a reaper.ini


def test_a_hung_reaper_is_killed_with_its_whole_process_group(tmp_path, jobs, standin_env):
    pids = tmp_path / "pids"
    standin_env.setenv("FARM_STANDIN_HANG", "stubborn")  # ignores SIGTERM: needs SIGKILL
    standin_env.setenv("FARM_STANDIN_PIDFILE", str(pids))
    started = time.monotonic()
    with pytest.raises(ReaperRenderError) as err:
        backend(tmp_path, timeout_s=1.5, retries=0).render_raw(jobs[:1])
    assert time.monotonic() - started < 10
    assert "timed out after" in err.value.message and "file missing" in err.value.message
    reaper_pid, child_pid = map(int, pids.read_text().split())
    assert group_members(reaper_pid) == []  # REAPER led its own group; nothing of it is left
    assert not alive(reaper_pid) and not alive(child_pid)


def test_a_missing_file_is_rendered_again_alone_and_then_succeeds(tmp_path, jobs, standin_env):
    log = tmp_path / "runs.jsonl"
    standin_env.setenv("FARM_STANDIN_LOG", str(log))
    standin_env.setenv("FARM_STANDIN_SKIP", "0001_")  # the second loop's file is not written ...
    standin_env.setenv("FARM_STANDIN_ONCE", str(tmp_path / "once"))  # ... the first time only
    raws = backend(tmp_path, loops_per_project=8, keep_files=True).render_raw(jobs)
    assert [r.shape[1] for r in raws] == [j.loop_samples + round(j.patch.tail_s * SR) for j in jobs]
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 2
    retry = rppxml.load(runs[1]["project"])
    starts = lines(retry, "MARKER")[::2]
    assert len(starts) == 1 and starts[0][3].startswith("0001_")  # only the failed loop, alone


def test_missing_short_and_silent_files_are_per_loop_failures_with_reasons(tmp_path, jobs, standin_env):
    standin_env.setenv("FARM_STANDIN_SKIP", "0000_")
    standin_env.setenv("FARM_STANDIN_SHORT", "0001_")
    standin_env.setenv("FARM_STANDIN_SILENT", "0002_")
    with pytest.raises(ReaperRenderError) as err:
        backend(tmp_path, retries=1).render_raw(jobs)
    failures = err.value.failures
    assert failures[0].startswith("file missing")
    short = jobs[1].loop_samples + round(jobs[1].patch.tail_s * SR)
    assert failures[1].startswith(f"{short - 1} samples, expected exactly {short}")
    assert failures[2].startswith("silent")
    assert "3 of 3 loops failed after 2 attempt(s)" in err.value.message
    assert err.value.field == "reaper" and err.value.file.endswith(".rpp")


def test_a_crashing_reaper_fails_with_its_exit_code_and_log(tmp_path, jobs, standin_env):
    standin_env.setenv("FARM_STANDIN_CRASH", "1")
    with pytest.raises(ReaperRenderError) as err:
        backend(tmp_path, retries=1).render_raw(jobs[:1])
    assert "REAPER exited with code" in err.value.message and ".log" in err.value.message


def test_exit_code_is_not_trusted_the_files_are(tmp_path, jobs, standin_env):
    standin_env.setenv("FARM_STANDIN_EXIT", "1")  # REAPER may exit non-zero after a good render
    engine = backend(tmp_path, retries=0, workdir=None)
    raws = engine.render_raw(jobs[:1])
    assert raws[0].shape[1] == jobs[0].loop_samples + round(jobs[0].patch.tail_s * SR)
    # its temporary work directory is gone without close(): batch workers never call it
    assert not engine.workdir.exists()
    assert engine.render_raw(jobs[1:2])[0].shape[1] == jobs[1].loop_samples + round(jobs[1].patch.tail_s * SR)
    assert not engine.workdir.exists()


# -- finding REAPER and the command line ----------------------------------------------------------
def test_find_reaper_order_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FARM_CONFIG", raising=False)
    monkeypatch.setenv("FARM_REAPER", str(STANDIN))
    assert find_reaper() == (STANDIN.resolve(), "$FARM_REAPER")
    other = tmp_path / "bin" / "reaper"
    other.parent.mkdir()
    shutil.copy(STANDIN, other)
    assert find_reaper(other)[0] == other.resolve()  # --reaper beats the environment
    monkeypatch.delenv("FARM_REAPER")
    (tmp_path / "farm.toml").write_text(f'[reaper]\npath = "{other.parent}"\n')
    assert find_reaper()[0] == other.resolve()  # a directory in the config is fine
    monkeypatch.setenv("FARM_REAPER", str(tmp_path / "nope"))
    with pytest.raises(FarmError, match="not found or not executable"):
        find_reaper()


def test_each_instance_gets_the_users_settings_and_plugins_but_no_control_surfaces(tmp_path):
    from farm.render.reaper_process import prepare_instance

    user = tmp_path / "REAPER"
    (user / "Effects" / "LoopFarm").mkdir(parents=True)
    (user / "reaper.ini").write_text("[REAPER]\ncsurf_cnt=1\ncsurf_0=HTTP 0 2307 '' 'index.html' 0 ''\nvstpath=/vst\n")
    (user / "reaper-reginfo2.ini").write_text("licence")
    (user / "reaper-vstplugins64.ini").write_text("[vstcache]\n")
    ini = prepare_instance(tmp_path / "instances" / "0", user)
    assert ini.read_text() == "[REAPER]\ncsurf_cnt=0\nvstpath=/vst\n"
    assert (ini.parent / "reaper-reginfo2.ini").read_text() == "licence"
    assert (ini.parent / "reaper-vstplugins64.ini").is_file()
    effects = ini.parent / "Effects"  # a folder of its own (Faust JSFX are written there), linking to the user's entries
    assert (effects / "LoopFarm").is_dir() and (effects / "LoopFarm").is_symlink() and not effects.is_symlink()
    assert prepare_instance(tmp_path / "bare", None).read_text() == "[REAPER]\n"


def test_bad_backend_options_are_one_clear_error(tmp_path):
    for options, field in [({"instance": 2}, "backend_options"), ({"via": "osc"}, "via"),
                           ({"instances": 0}, "instances"), ({"timeout_s": -1}, "timeout_s")]:
        with pytest.raises(FarmError) as err:
            backend(tmp_path, **options)
        assert err.value.field == field


def test_reaper_command_uses_xvfb_without_a_display(tmp_path, monkeypatch):
    fake = tmp_path / "xvfb-run"
    fake.write_text("#!/bin/sh\nexec \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    cmd = reaper_command("/opt/REAPER/reaper", "/p/a.rpp", "/i/0/reaper.ini", xvfb=False)
    assert cmd == ["/opt/REAPER/reaper", "-renderproject", "/p/a.rpp", "-nosplash", "-ignoreerrors",
                   "-newinst", "-cfgfile", "/i/0/reaper.ini"]
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert reaper_command("/r", "/p.rpp", "/c.ini")[:2] == [str(fake), "-a"]
    monkeypatch.setenv("DISPLAY", ":0")
    assert reaper_command("/r", "/p.rpp", "/c.ini")[0] == "/r"
    monkeypatch.delenv("DISPLAY")
    fake.unlink()
    with pytest.raises(FarmError, match="apt-get install xvfb"):
        reaper_command("/r", "/p.rpp", "/c.ini")


# -- reapy, through a recorder --------------------------------------------------------------------
class FakeProject:
    def __init__(self, api, path=None):
        self.api, self.path, self.id = api, path, f"project:{path}"
        self.tracks = []
        self.time_selection = None

    @property
    def n_tracks(self):
        return len(self.tracks)

    def add_track(self, index=0, name=""):
        track = SimpleNamespace(id=f"track:{len(self.tracks)}", name=name)
        self.tracks.insert(index, track)
        self.api.calls.append(("add_track", index, name))
        return track

    def perform_action(self, action):
        self.api.calls.append(("perform_action", action))
        if action == 42230 and self.api.on_render:
            self.api.on_render(self.path)


class FakeRPR:
    def __init__(self, api):
        self.api = api

    def __getattr__(self, name):
        def call(*args):
            self.api.calls.append((name,) + args)
            if name == "GetTrackStateChunk":
                return (1, args[0], self.api.chunks[args[0]], args[2], args[3])
            return None
        return call


class FakeReapy:
    """reapy's interface, recording every call; ``on_render`` plays REAPER's part."""

    def __init__(self, reachable=True, on_render=None, resource_dir=None):
        self.calls, self.reachable, self.on_render = [], reachable, on_render
        self.project = FakeProject(self)
        self.chunks = {}
        self.reascript_api = FakeRPR(self)
        self.config = SimpleNamespace(
            configure_reaper=lambda path: self.calls.append(("configure_reaper", path)),
            resource_path=SimpleNamespace(get_resource_path=lambda detect_portable_install=True: resource_dir))

    def dist_api_is_enabled(self):
        self.calls.append(("dist_api_is_enabled",))
        return self.reachable

    def reconnect(self):
        self.calls.append(("reconnect",))
        raise ConnectionRefusedError("nothing listens on 2306")

    @contextlib.contextmanager
    def inside_reaper(self):
        self.calls.append(("inside_reaper",))
        yield

    def open_project(self, path, in_new_tab=False):
        self.calls.append(("open_project", path, in_new_tab))
        return FakeProject(self, path)

    def get_reaper_version(self):
        return "7.0/stand-in"

    def Project(self):
        return self.project


def test_reapy_render_opens_each_project_renders_with_42230_and_checks_the_files(tmp_path, jobs, standin_env):
    import subprocess

    def reaper_renders(path):  # what REAPER does on action 42230: render the open project
        subprocess.run([str(STANDIN), "-renderproject", path], check=True)

    api = FakeReapy(on_render=reaper_renders)
    engine = backend(tmp_path, via="reapy", reaper=None, reapy_api=api, loops_per_project=2)
    raws = engine.render_raw(jobs)
    assert [r.shape[1] for r in raws] == [j.loop_samples + round(j.patch.tail_s * SR) for j in jobs]
    opened = [c[1] for c in api.calls if c[0] == "open_project"]
    assert len(opened) == 2 and all(p.endswith(".rpp") for p in opened)
    # per project: open in a new tab, render (42230), save (so closing asks nothing), close the tab
    steps = [c[:2] for c in api.calls if c[0] in ("open_project", "perform_action", "Main_SaveProject")]
    assert steps == [step for path in opened for step in (
        ("open_project", path), ("perform_action", 42230), ("Main_SaveProject", f"project:{path}"),
        ("perform_action", 40860))]
    assert engine.version == "REAPER 7.0/stand-in; " + FINISHING


def test_reapy_render_waits_with_a_timeout_and_reports_missing_files(tmp_path, jobs):
    api = FakeReapy(on_render=lambda path: None)  # REAPER "renders" nothing
    with pytest.raises(ReaperRenderError, match="files still missing"):
        backend(tmp_path, via="reapy", reaper=None, reapy_api=api, timeout_s=0.5, retries=0).render_raw(jobs[:1])


def test_reapy_render_that_never_returns_times_out_and_stops_using_that_reaper(tmp_path, jobs):
    api = FakeReapy(on_render=lambda path: time.sleep(3))  # REAPER stuck, e.g. behind a dialog
    started = time.monotonic()
    with pytest.raises(ReaperRenderError, match="did not finish") as err:
        backend(tmp_path, via="reapy", reaper=None, reapy_api=api, timeout_s=0.5, retries=1).render_raw(jobs[:1])
    assert time.monotonic() - started < 2.5  # the retry does not wait on the stuck REAPER again
    assert len([c for c in api.calls if c[0] == "open_project"]) == 1
    assert set(err.value.failures) == {0} and "did not finish" in err.value.failures[0]


def test_unreachable_reaper_is_one_clear_error_in_python_and_cli(tmp_path, jobs, monkeypatch):
    api = FakeReapy(reachable=False)
    with pytest.raises(FarmError, match="not reachable through reapy") as err:
        backend(tmp_path, via="reapy", reaper=None, reapy_api=api).render_raw(jobs[:1])
    assert ("reconnect",) in api.calls and err.value.field == "reapy"
    monkeypatch.setattr("farm.reaper_live.reapy_module", lambda: FakeReapy(reachable=False))
    for args in (["patch", "pull", "x", "--track", "1", "--role", "pad"],
                 ["reaper", "audition", str(jobs[0].template_dir), "--patch", "dry-piano-chords"]):
        result = CliRunner().invoke(farm, args)
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [f"error: reapy: {UNREACHABLE}"]


class DroppingReapy(FakeReapy):
    """Reachable at first, then REAPER goes away mid-command."""

    def Project(self):
        raise ConnectionResetError("connection reset by peer")


def test_every_live_command_fails_with_one_line_through_the_cli(tmp_path, jobs, monkeypatch):
    patches = tmp_path / "patches"
    patches.mkdir()
    monkeypatch.setattr("farm.reaper_live.reapy_module", lambda: DroppingReapy())
    for args, doing in ((["patch", "pull", "x", "--track", "1", "--role", "pad", "--dir", str(patches)],
                         "reading track 1"),
                        (["reaper", "audition", str(jobs[0].template_dir), "--patch", "dry-piano-chords"],
                         "adding tracks")):
        result = CliRunner().invoke(farm, args)
        assert result.exit_code == 2
        [line] = result.output.strip().splitlines()
        assert line.startswith(f"error: reapy: lost REAPER while {doing} (ConnectionResetError: connection reset")
    assert not list(patches.iterdir())  # nothing half-written
    # setup: REAPER's resource directory cannot be found (never started, or not running to ask)
    monkeypatch.setattr("farm.reaper_live.reapy_module", lambda: FakeReapy(resource_dir=None))
    result = CliRunner().invoke(farm, ["reaper", "setup"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: resource_dir: REAPER's resource directory not found (no reaper.ini): start REAPER once, "
        "or pass --resource-dir"]
    resource = tmp_path / "REAPER"
    resource.mkdir()
    (resource / "reaper.ini").write_text("[REAPER]\n")
    result = CliRunner().invoke(farm, ["reaper", "setup", "--resource-dir", str(resource)])
    assert result.exit_code == 0 and result.output.splitlines()[-1].startswith("restart REAPER now")
    assert (resource / "Scripts" / "LoopFarm" / "farm_render_regions.lua").is_file()


VST_CHUNK = """<TRACK
  NAME "Vital pad"
  <FXCHAIN
    WNDRECT 24 52 655 408
    SHOW 0
    LASTSEL 0
    DOCKED 0
    BYPASS 0 0 0
    <VST "VST3i: Vital (Vital Audio)" Vital.vst3 0 "" 1447645030{56534156697461766974616C00000000} ""
      ZmFrZSBwbHVnaW4gc3RhdGUgY2FwdHVyZWQgZnJvbSBSRUFQRVI=
      AAAAAA==
    >
    FLOATPOS 0 0 0 0
    FXID {11111111-2222-3333-4444-555555555555}
    WAK 0 0
  >
>
"""


def test_patch_pull_saves_the_tracks_chain_and_the_next_render_uses_it(tmp_path, jobs):
    patches = tmp_path / "patches"
    patches.mkdir()
    shutil.copy(ROOT / "patches" / "dusty-pad.toml", patches / "dusty-pad.toml")
    before = load_patch(patches / "dusty-pad.toml").content_hash
    api = FakeReapy()
    api.project.add_track(0, "drums")
    api.project.add_track(1, "pad")
    api.chunks["track:1"] = VST_CHUNK
    chain, toml = pull_patch_via(api, "dusty-pad", 2, patches)
    text = chain.read_text()
    assert "WNDRECT" not in text and "SHOW 0" not in text  # window state is not part of a chain file
    assert "ZmFrZSBwbHVnaW4gc3RhdGUgY2FwdHVyZWQgZnJvbSBSRUFQRVI=" in text  # plugin state kept verbatim
    parsed = rppxml.loads(text)
    assert [c.name for c in parsed if isinstance(c, rppxml.RPPXML)] == ["VST"]
    patch = load_patch(toml)
    assert patch.reaper_fxchain == chain.resolve() and patch.content_hash != before
    assert toml.read_text() == (ROOT / "patches" / "dusty-pad.toml").read_text()  # already named it
    # the next render of this patch carries the pulled chain
    job = RenderJob(jobs[0].template, jobs[0].template_dir, "chords", patch, SR)
    [plan] = plan_projects([job], tmp_path / "rpp")
    assert plan.tracks[0].fxchain == load_fxchain(chain)
    track = children(rppxml.load(str(write_project(plan))), "TRACK")[0]
    vst = children(children(track, "FXCHAIN")[0], "VST")[0]
    assert vst.params[0] == "VST3i: Vital (Vital Audio)"
    assert [c[0] for c in vst.children] == ["ZmFrZSBwbHVnaW4gc3RhdGUgY2FwdHVyZWQgZnJvbSBSRUFQRVI=", "AAAAAA=="]
    # a new patch gets a TOML that names its chain and validates
    chain2, toml2 = pull_patch_via(api, "night-pad", 2, patches, roles=["pad"])
    assert load_patch(toml2).reaper_fxchain == chain2.resolve()
    assert ("GetTrackStateChunk", "track:1", "", 1 << 24, False) in api.calls
    with pytest.raises(FarmError, match="track 3 does not exist"):
        pull_patch_via(api, "dusty-pad", 3, patches)


def pull_patch_via(api, name, track, patches, roles=()):
    from farm.reaper_live import pull_patch

    return pull_patch(name, track, api=api, patches_dir=patches, roles=roles)


def test_fxchain_from_track_chunk_keeps_plugins_and_drops_window_lines():
    chain = fxchain_from_track_chunk(VST_CHUNK)
    assert chain.splitlines()[0] == "BYPASS 0 0 0" and chain.splitlines()[-1] == "WAK 0 0"
    with pytest.raises(FarmError, match="no FX chain"):
        fxchain_from_track_chunk("<TRACK\nNAME x\n>\n")


def test_audition_puts_parts_on_tracks_with_the_chain_tempo_and_meter(tmp_path, jobs):
    from farm.reaper_live import audition

    api = FakeReapy()
    template = jobs[1].template
    api.project.add_track(0, "the user's own track")
    added, note = audition(jobs[1].template_dir, "dry-piano-chords", api=api)
    assert added == [(2, f"{template.id} chords (dry-piano-chords)")] and note is None
    tempo = next(c for c in api.calls if c[0] == "SetTempoTimeSigMarker")
    assert tempo[6:9] == (96.0, 3, 4)  # (proj, index, time, measure, beat, bpm, num, den, linear)
    chunk = next(c for c in api.calls if c[0] == "SetTrackStateChunk")[2]
    track = rppxml.loads(chunk)
    assert children(track, "FXCHAIN") and children(children(track, "FXCHAIN")[0], "JS")
    item = children(track, "ITEM")[0]
    assert source_notes(children(item, "SOURCE")[0])[1] == part_notes(jobs[1].midi_path)
    assert api.project.time_selection == (0.0, template.duration_s)
    # a Vital patch before its first pull: an empty chain to put the instrument in, and what to do next
    added, note = audition(jobs[1].template_dir, "dusty-pad", api=api)
    assert added[0][0] == 3 and "farm patch pull dusty-pad --track N" in note
    chunk = [c for c in api.calls if c[0] == "SetTrackStateChunk"][-1][2]
    chain = children(rppxml.loads(chunk), "FXCHAIN")[0]
    assert not [c for c in chain.children if isinstance(c, rppxml.RPPXML)]


def test_setup_runs_reapys_configuration_and_installs_the_farm_files(tmp_path):
    from farm.reaper_live import setup

    resource = tmp_path / "REAPER"
    resource.mkdir()
    (resource / "reaper.ini").write_text("[REAPER]\n")
    api = FakeReapy(resource_dir=str(resource))
    done = setup(api=api)
    assert ("configure_reaper", str(resource)) in api.calls
    assert (resource / "Effects" / "LoopFarm" / "farm_synth.jsfx").is_file()
    assert len(list((resource / "Scripts" / "LoopFarm").glob("*.lua"))) == len(
        list((ROOT / "reaper_scripts").glob("*.lua")))
    assert "restart REAPER" in done[-1]


# -- doctor ---------------------------------------------------------------------------------------
def test_doctor_reports_one_line_per_check_with_fixes(tmp_path, monkeypatch):
    from farm.doctor import doctor, report

    monkeypatch.setenv("FARM_REAPER", str(STANDIN))
    checks = doctor(directory=tmp_path, reapy_api=FakeReapy(reachable=False))
    assert [c.name for c in checks] == ["reaper", "xvfb-run", "fluidsynth", "soundfont", "dawdreamer", "plugins",
                                        "probe", "reapy", "disk"]
    named = {c.name: c for c in checks}
    assert named["reaper"].status == "ok" and str(STANDIN.resolve()) in named["reaper"].detail
    assert named["fluidsynth"].status == "ok" and named["disk"].status == "ok"
    assert named["dawdreamer"].status == "ok" and "dawdreamer 0.9.0" in named["dawdreamer"].detail
    assert named["reapy"].status == "info" and "farm reaper setup" in named["reapy"].fix
    from farm.batch.probe import render_probe  # the digest is this machine's probe, rendered here too

    assert named["probe"].status == "ok" and named["probe"].detail.startswith(render_probe().digest + " ")
    assert len(report(checks).splitlines()) == len(checks) + 1  # one line each, then the summary
    monkeypatch.setenv("FARM_REAPER", str(tmp_path / "missing"))
    result = CliRunner().invoke(farm, ["doctor", "--no-live", "--dir", str(tmp_path)])
    assert result.exit_code == 0
    out = result.output.splitlines()
    assert out[0].startswith("missing reaper") and "->" in out[0]
    assert any(line.startswith("ok      fluidsynth") for line in out)
    assert out[-1].startswith("renderers available: embedded")


def test_doctor_reads_reapers_version_beside_the_executable(tmp_path, monkeypatch):
    from farm.doctor import check_reaper

    install = tmp_path / "REAPER"
    install.mkdir()
    shutil.copy(STANDIN, install / "reaper")
    (install / "whatsnew.txt").write_text("v7.22 - August 31 2024\n  + Render: something new\n")
    check = check_reaper(install)  # --reaper may name the install directory
    assert check.status == "ok" and "version 7.22" in check.detail and str(install / "reaper") in check.detail
    engine = ReaperBackend(reaper=install, progress=False)
    assert engine.version == "REAPER 7.22; " + FINISHING
    engine.close()


def test_doctor_exits_non_zero_when_the_embedded_renderer_cannot_run(tmp_path, monkeypatch):
    import ctypes.util

    import pretty_midi

    args = ["doctor", "--no-live", "--dir", str(tmp_path)]
    assert CliRunner().invoke(farm, args).exit_code == 0  # this machine: FluidSynth and a SoundFont
    find_library = ctypes.util.find_library
    with monkeypatch.context() as m:  # no FluidSynth library
        m.setattr(ctypes.util, "find_library", lambda name: None if name == "fluidsynth" else find_library(name))
        result = CliRunner().invoke(farm, args)
        assert result.exit_code == 1
        line = next(x for x in result.output.splitlines() if " fluidsynth " in x)
        assert line.startswith("missing fluidsynth") and line.endswith("-> apt-get install libfluidsynth3")
        assert "embedded" not in result.output.splitlines()[-1]
    with monkeypatch.context() as m:  # no SoundFont: neither the system's nor pretty_midi's fallback
        m.setattr("farm.patches.load.DEFAULT_SOUNDFONTS", (tmp_path / "none.sf2",))
        m.setattr(pretty_midi, "__file__", str(tmp_path / "pretty_midi" / "__init__.py"))
        result = CliRunner().invoke(farm, args)
        assert result.exit_code == 1
        line = next(x for x in result.output.splitlines() if " soundfont " in x)
        assert line.startswith("missing soundfont") and "apt-get install fluid-soundfont-gm" in line


# -- the ReaScripts, run in Lua 5.4 against a stand-in `reaper` API ------------------------------
class FakeReaperLua:
    """The ReaScript functions the scripts call, recording them; the scripts run for real in Lua."""

    def __init__(self, **answers):
        self.calls, self.messages, self.answers = [], [], answers

    def run(self, script: str):
        from lupa import lua54

        lua = lua54.LuaRuntime(unpack_returned_tuples=True)
        proxy = lua.eval("function(lookup) return setmetatable({}, {__index = function(_, k) return lookup(k) end}) end")
        lua.globals().reaper = proxy(lambda name: getattr(self, name))
        lua.execute((ROOT / "reaper_scripts" / script).read_text())

    def __getattr__(self, name):  # any other API call: recorded, returns nothing
        if name[:1].isupper():
            return lambda *args: self.calls.append((name,) + tuple(args))
        raise AttributeError(name)

    def ShowMessageBox(self, msg, title, kind):
        self.messages.append(msg)

    def GetExtState(self, section, key):
        return ""

    def GetSelectedTrack(self, proj, index):
        return "track:0"

    def GetTrackStateChunk(self, track, buf, undo):
        return True, self.answers["chunk"]

    def GetSetMediaTrackInfo_String(self, track, key, value, is_set):
        self.calls.append(("GetSetMediaTrackInfo_String", track, key, value, is_set))
        return True, "Vital pad"

    def GetUserInputs(self, title, n, captions, defaults):
        return True, self.answers["inputs"]

    def GetUserFileNameForRead(self, path, title, ext):
        return True, self.answers["file"]

    def CountTracks(self, proj):
        return sum(1 for c in self.calls if c[0] == "InsertTrackAtIndex")

    def GetTrack(self, proj, index):
        return f"track:{index}"

    def CountProjectMarkers(self, proj):
        return len(self.answers["regions"]), 0, len(self.answers["regions"])

    def EnumProjectMarkers3(self, proj, index):
        name, start, end = self.answers["regions"][index]
        return index + 1, True, start, end, name, index + 1, 0

    def GetProjectPath(self, buf):
        return self.answers["project_dir"]

    def GetSetProjectInfo(self, proj, key, value, is_set):
        self.calls.append(("GetSetProjectInfo", key, value, is_set))
        return 48000.0 if key == "PROJECT_SRATE" and not is_set else value

    def RecursiveCreateDirectory(self, path, ignored):
        Path(path).mkdir(parents=True, exist_ok=True)
        return 1

    def Main_OnCommand(self, command, flag):
        self.calls.append(("Main_OnCommand", command, flag))
        if command == 42230:  # "REAPER" renders every region but the last
            for name, _, _ in self.answers["regions"][:-1]:
                (Path(self.answers["project_dir"]) / "renders" / f"{name}.wav").write_bytes(b"RIFF")

    def file_exists(self, path):
        return Path(path).is_file()


def test_lua_save_fxchain_writes_the_same_chain_and_toml_as_patch_pull(tmp_path):
    from farm.reaper_live import with_reaper_fxchain

    patches = tmp_path / "patches"
    patches.mkdir()
    fake = FakeReaperLua(chunk=VST_CHUNK, inputs=f"night-pad,{patches},pad chords")
    fake.run("farm_save_fxchain.lua")
    assert (patches / "night-pad.RfxChain").read_text() == fxchain_from_track_chunk(VST_CHUNK)
    patch = load_patch(patches / "night-pad.toml")  # a valid patch that names its chain
    assert patch.roles == ("pad", "chords") and patch.reaper_fxchain == (patches / "night-pad.RfxChain").resolve()
    assert "night-pad.RfxChain" in fake.messages[-1]
    # an existing patch: its TOML gains the chain exactly as `farm patch pull` would write it
    for name, text in [("a", 'name = "a"\n[embedded]\nprogram = 1\n'),
                       ("b", 'name = "b"\n[reaper]\ninstrument = "Vital"\n[effects]\nx = 1\n'),
                       ("c", 'name = "c"\n[reaper]\nfxchain = "old.RfxChain"\n')]:
        (patches / f"{name}.toml").write_text(text)
        FakeReaperLua(chunk=VST_CHUNK, inputs=f"{name},{patches},").run("farm_save_fxchain.lua")
        assert (patches / f"{name}.toml").read_text() == with_reaper_fxchain(text, f"{name}.RfxChain")
    no_fx = FakeReaperLua(chunk="<TRACK\nNAME x\n>\n", inputs=f"z,{patches},pad")
    no_fx.run("farm_save_fxchain.lua")
    assert no_fx.messages == ["The selected track has no FX."] and not (patches / "z.RfxChain").exists()


def test_lua_import_template_makes_a_track_per_part_at_the_templates_tempo(tmp_path, jobs):
    job = jobs[1]  # 96 BPM, 3/4
    fake = FakeReaperLua(file=str(job.template_dir / "template.json"))
    fake.run("farm_import_template.lua")
    tempo = next(c for c in fake.calls if c[0] == "SetTempoTimeSigMarker")
    assert tempo[6:9] == (96, 3, 4)
    media = [c[1] for c in fake.calls if c[0] == "InsertMedia"]
    assert media == [str(job.template_dir / p.midi) for p in job.template.parts]
    region = next(c for c in fake.calls if c[0] == "AddProjectMarker")
    assert region[2:6] == (True, 0, pytest.approx(job.template.duration_s), job.template.id)


def test_lua_render_regions_sets_the_farm_render_settings_and_names_missing_files(tmp_path):
    regions = [("0000_a_chords_pad", 0.0, 4.0), ("0001_b_bass_sub", 6.0, 9.0)]
    fake = FakeReaperLua(regions=regions, project_dir=str(tmp_path))
    fake.run("farm_render_regions.lua")
    strings = {c[2]: c[3] for c in fake.calls if c[0] == "GetSetProjectInfo_String"}  # (proj, key, value, set)
    values = {c[1]: c[2] for c in fake.calls if c[0] == "GetSetProjectInfo" and c[3]}
    assert strings["RENDER_PATTERN"] == "$region" and strings["RENDER_FILE"] == str(tmp_path / "renders")
    assert base64.b64decode(strings["RENDER_FORMAT"])[:5] == b"evaw\x18"
    assert values["RENDER_BOUNDSFLAG"] == 3 and values["RENDER_SRATE"] == 48000 and values["RENDER_TAILFLAG"] == 0
    assert ("Main_OnCommand", 42230, 0) in fake.calls
    assert "0001_b_bass_sub" in fake.messages[-1] and "0000_a" not in fake.messages[-1]


def test_every_reascript_starts_with_a_comment_saying_what_it_does():
    scripts = sorted((ROOT / "reaper_scripts").glob("*.lua"))
    assert len(scripts) == 3
    for script in scripts:
        assert script.read_text().startswith("-- Loop Farm: ")


# -- the CLI --------------------------------------------------------------------------------------
def test_farm_render_with_the_reaper_backend_writes_exact_labelled_loops(tmp_path, jobs, standin_env):
    from farm.audio import read_audio
    from farm.render.run import read_loop_metadata

    standin_env.setenv("DISPLAY", ":99")  # REAPER would need a display; the stand-in ignores it
    job = jobs[1]
    args = ["render", "--template", str(job.template_dir), "--patch", "dry-piano-chords", "--backend", "reaper"]
    result = CliRunner().invoke(farm, args + ["--reaper", str(STANDIN), "--out", str(tmp_path / "loops")])
    assert result.exit_code == 0, result.output
    [path] = [Path(line) for line in result.stdout.splitlines() if line.endswith(".flac")]
    audio, sr = read_audio(path)
    assert audio.shape == (2, job.loop_samples) and sr == SR
    for bar in job.template.chords:
        a, b = job.template.bar_start_sample(bar.bar, SR), job.template.bar_start_sample(bar.bar + 1, SR)
        assert pitch_classes(audio[:, a:b], SR) == set(bar.pitch_classes)
    assert read_loop_metadata(path)["renderer"] == "reaper"

    result = CliRunner().invoke(farm, args + ["--rpp-only", str(tmp_path / "rpp")])
    assert result.exit_code == 0, result.output
    [rpp] = [Path(line) for line in result.stdout.splitlines() if line.endswith(".rpp")]
    assert len(lines(rppxml.load(str(rpp)), "MARKER")) == 2

    result = CliRunner().invoke(farm, args[:-2] + ["--via", "reapy", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "error: backend: --rpp-only, --via" in result.output
    standin_env.delenv("FARM_REAPER", raising=False)
    standin_env.setenv("PATH", str(tmp_path))  # no reaper anywhere
    standin_env.setenv("FARM_CONFIG", str(tmp_path / "none.toml"))
    standin_env.chdir(tmp_path)
    result = CliRunner().invoke(farm, args + ["--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: reaper: REAPER not found")


CHAINED = {"chords": ["dry-piano-chords", "organ-stabs", "mallet-keys"], "bass": ["finger-bass", "sub-bass"],
           "drums": ["lofi-kit", "tight-808"], "melody": ["flute-lead"]}


def test_farm_batch_with_the_reaper_backend_renders_many_loops_per_project_and_catalogues_them(tmp_path, standin_env):
    import sqlite3

    from farm.audio import read_audio

    standin_env.setenv("DISPLAY", ":99")
    runs = tmp_path / "runs.jsonl"
    standin_env.setenv("FARM_STANDIN_LOG", str(runs))
    patches = [p for names in CHAINED.values() for p in names]
    config = tmp_path / "night.toml"
    config.write_text(f'root = "lib"\nstyles = ["lofi-hiphop"]\ntemplates_per_style = 2\nbars = 2\n'
                      f'patches = {json.dumps(patches)}\nworkers = 2\n'
                      f'[backend_options]\nworkdir = "work"\nkeep_files = true\n')
    standin_env.chdir(tmp_path)
    result = CliRunner().invoke(farm, ["batch", "--config", str(config), "--backend", "reaper",
                                       "--reaper", str(STANDIN), "--no-progress"])
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(tmp_path / "lib" / "catalog.db")
    rows = db.execute("select template_id, part, patch, samples, path, renderer, renderer_version from loops").fetchall()
    templates = {t: Template.load(tmp_path / "lib" / "templates" / t) for t, *_ in rows}
    assert len(templates) == 2
    expected = {(t, part.name, patch) for t, template in templates.items() for part in template.parts
                for patch in CHAINED.get(part.name, [])}
    assert {r[:3] for r in rows} == expected and len(rows) == len(expected) >= 12

    # One project per template, each holding all of that template's loops as regions
    projects = sorted((tmp_path / "work" / "projects").glob("*.rpp"))
    assert len(projects) == 2
    in_projects = set()
    for path in projects:
        starts = lines(rppxml.load(str(path)), "MARKER")[::2]
        assert len(starts) >= 6  # many loops per REAPER start-up
        in_projects |= {tuple(name.split("_")[1:4]) for name in (m[3] for m in starts)}
    assert in_projects == expected
    started = [json.loads(line) for line in runs.read_text().splitlines()]
    assert sorted(r["project"] for r in started) == [str(p) for p in projects]  # one REAPER run per project
    assert len({r["cfgfile"] for r in started}) == 2  # two workers, one workdir: never one reaper.ini

    # Every loop catalogued with its exact length, and its file holds exactly that many frames
    for template_id, part, patch, samples, rel, renderer, version in rows:
        assert samples == templates[template_id].loop_samples(SR)
        audio, sr = read_audio(tmp_path / "lib" / rel)
        assert sr == SR and audio.shape == (2, samples) and np.abs(audio).max() > 0.01
        assert renderer == "reaper" and version.startswith("REAPER")
    result = CliRunner().invoke(farm, ["batch", "--config", str(config), "--via", "reapy"])
    assert result.exit_code == 2 and "need --backend reaper" in result.output
