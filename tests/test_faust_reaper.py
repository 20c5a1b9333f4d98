"""One Faust patch for both renderers: its .dsp becomes a JSFX (DawDreamer's libfaust) and an FX
chain the REAPER backend puts on the patch's track, checked with an independent RPP parser and the
REAPER stand-in. Nothing here runs REAPER."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import rppxml

from farm.patches import load_patch
from farm.render import RenderJob, get_backend, render_loops
from farm.render.jsfx import faust_jsfx, jsfx_name
from farm.render.reaper import write_projects
from farm.render.reaper_process import prepare_instance
from test_reaper import STANDIN, children, make_template
from farm.model import Template

SR = 44100
SLIDER = re.compile(r"^slider(\d+):\w+=([^<\s]+)<([^,]+),([^,]+),[^>]*>(?:hslider|vslider|nentry)_(\S+)[ \t]*$", re.M)


@pytest.fixture
def faust_jobs(tmp_path):
    a = make_template(tmp_path / "templates", 120.0, "4/4", ("C", "F"))
    b = make_template(tmp_path / "templates", 96.0, "3/4", ("Am", "G"), seed=1)
    pad, keys = load_patch("analog-pad"), load_patch("fm-epiano")
    return [RenderJob(Template.load(a), a, "chords", pad, SR), RenderJob(Template.load(b), b, "chords", keys, SR)]


def _sliders(code: str) -> dict[int, tuple[str, float, float, float]]:
    return {int(n): (label, float(d), float(lo), float(hi)) for n, d, lo, hi, label in SLIDER.findall(code)}


def test_the_projects_put_each_faust_patch_on_its_track_as_a_jsfx_with_its_parameters(tmp_path, faust_jobs):
    paths = write_projects(faust_jobs, tmp_path / "rpp")
    assert paths
    for job in faust_jobs:
        patch = job.patch
        jsfx = tmp_path / "rpp" / "Effects" / jsfx_name(patch)
        code = jsfx.read_text(encoding="utf-8")
        assert code == faust_jsfx(patch)  # what libfaust made of the same .dsp the embedded renderer plays
        assert f'desc: options "[midi:on][nvoices:{patch.faust.voices}]"' in code
        assert "midirecv" in code and "@sample" in code  # an instrument, played by the track's MIDI
        sliders = _sliders(code)
        labels = {s.label for s in patch.faust.sliders} - {"freq", "gain", "gate"}
        assert len(sliders) == len(labels)  # every knob of the patch, and no voice control, is a slider
        project = rppxml.loads(paths[0].read_text())
        track = next(t for t in children(project, "TRACK")
                     if any(js.params[:1] == [jsfx_name(patch)] for c in children(t, "FXCHAIN") for js in children(c, "JS")))
        [js] = [js for c in children(track, "FXCHAIN") for js in children(c, "JS")]
        assert js.params[1] == patch.name
        values = next(c for c in js.children if isinstance(c, list))
        assert len(values) == 64
        wanted = dict(patch.faust.params)
        for number, (label, default, lo, hi) in sliders.items():
            name = next(l for l in sorted(labels, key=len, reverse=True) if re.fullmatch(re.escape(l) + r"\d*", label))
            assert float(values[number - 1]) == pytest.approx(wanted.get(name, default))
            assert lo <= float(values[number - 1]) <= hi
        assert all(str(v) == "-" for v in values[len(sliders):]), values


def test_changing_a_parameter_in_the_patch_changes_the_chain_in_reaper(tmp_path, faust_jobs):
    source = load_patch("analog-pad")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "analog-pad.dsp").write_bytes(source.faust.dsp.read_bytes())
    (folder / "analog-pad.toml").write_text(source.path.read_text().replace("detune = 9.0", "detune = 21.5"))
    mine = load_patch(folder / "analog-pad.toml")
    job = RenderJob(faust_jobs[0].template, faust_jobs[0].template_dir, "chords", mine, SR)
    [path] = write_projects([job], tmp_path / "rpp")
    assert " 21.5 " in path.read_text()


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for knob in ("SKIP", "SHORT", "SILENT", "ONCE", "HANG", "CRASH", "SLEEP", "LOG", "EXIT", "PER_REGION"):
        monkeypatch.delenv(f"FARM_STANDIN_{knob}", raising=False)


def test_each_reaper_instance_gets_the_jsfx_and_the_users_folder_is_untouched(tmp_path, faust_jobs, standin):
    """The stand-in leaves a track silent when its LoopFarmFaust JSFX is not in the instance's
    Effects folder (as REAPER would have no instrument): the loops sound, so the JSFX was there;
    the user's own Effects folder gains nothing."""
    user = tmp_path / "resource"
    (user / "Effects" / "Mine").mkdir(parents=True)
    (user / "Effects" / "Mine" / "mine.jsfx").write_text("desc: mine\n")
    (user / "reaper.ini").write_text("[REAPER]\n")
    before = sorted(p.relative_to(user) for p in user.rglob("*"))
    backend = get_backend("reaper", reaper=STANDIN, xvfb=False, workdir=tmp_path / "work", progress=False,
                          resource_dir=user)
    loops = render_loops(faust_jobs, backend)
    for job, loop in zip(faust_jobs, loops):
        assert loop.audio.shape == (2, job.loop_samples) and np.sqrt(np.mean(loop.audio ** 2)) > 0.01
    assert sorted(p.relative_to(user) for p in user.rglob("*")) == before
    instance = prepare_instance(tmp_path / "instance", user).parent
    assert (instance / "Effects" / "Mine" / "mine.jsfx").read_text() == "desc: mine\n"
    assert not (instance / "Effects").is_symlink()


def test_without_its_jsfx_reaper_would_render_silence(tmp_path, faust_jobs, standin, monkeypatch):
    """The stand-in's check has teeth: a project naming a JSFX no Effects folder holds renders
    silent regions, which the backend refuses as failed loops."""
    from farm.render.reaper import ReaperRenderError

    backend = get_backend("reaper", reaper=STANDIN, xvfb=False, workdir=tmp_path / "work", progress=False,
                          retries=0)
    monkeypatch.setattr("farm.render.reaper.write_jsfx", lambda patches, folder: [])
    with pytest.raises(ReaperRenderError) as err:
        render_loops(faust_jobs[:1], backend)
    assert "silent" in str(err.value)
