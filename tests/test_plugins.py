"""Hosted instrument plugins (amsynth VST2, synthv1 LV2) through DawDreamer: the shipped plugin
patches sound their labels, render the same bytes in a fresh process, and a plugin that is missing,
fails to load or renders differently each time is one line, with nothing written."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from farm.audio import bar_chroma, chroma, dc_offset
from farm.cli import main as farm_cli
from farm.model import Template
from farm.patches import load_patch
from farm.patches.plugin import lv2_installed
from farm.render.run import render_part
from test_render import expected_samples, make_template, pyloudnorm_lufs, true_peak_8x

ROOT = Path(__file__).resolve().parent.parent
AMSYNTH = Path("/usr/lib/vst/amsynth_vst.so")
ZYN = Path("/usr/lib/vst/ZynAddSubFX.so")
FARM = str(Path(sys.executable).parent / "farm")
SYNTHV1 = "http://synthv1.sourceforge.net/lv2"
needs_amsynth = pytest.mark.skipif(not AMSYNTH.exists(), reason="amsynth not installed: apt-get install amsynth")
needs_synthv1 = pytest.mark.skipif(not lv2_installed(SYNTHV1), reason="synthv1 not installed: apt-get install synthv1-lv2")
needs_zyn = pytest.mark.skipif(not ZYN.exists(), reason="ZynAddSubFX not installed: apt-get install zynaddsubfx-vst")


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugins")
    return {style: make_template(out / style, style, seed, bars=4)
            for style, seed in (("synthwave", 7), ("pop-ballad", 1), ("lofi-hiphop", 4))}


def _clean(audio, sr, patch):
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01
    assert true_peak_8x(audio) <= -1.0 + 0.01
    assert abs(pyloudnorm_lufs(audio, sr) - patch.target_lufs) <= 0.5
    assert dc_offset(audio) <= 0.005


@needs_amsynth
def test_amsynth_bass_is_exact_clean_and_plays_the_labelled_bass(templates, tmp_path):
    patch = load_patch("amsynth-bass")
    assert patch.kind == "plugin" and patch.plugin.preset.name == "amsynth-bass.preset.json"
    for style in ("synthwave", "pop-ballad", "lofi-hiphop"):
        template = Template.load(templates[style])
        audio, sr = render_part(templates[style], "bass", patch)
        assert audio.shape == (2, template.loop_samples(sr))
        _clean(audio, sr, patch)
        beat = round(60 / template.bpm * 4 / template.meter.denominator * sr)
        for chord in template.chords:
            start = template.bar_start_sample(chord.bar, sr)
            assert int(np.argmax(chroma(audio, sr, start, start + beat, fmax=300.0))) == chord.bass_pc, \
                f"{style} bar {chord.bar}"
    tdir = make_template(tmp_path, "cinematic-minor", 1, bpm=133, meter="6/8", bars=2)
    audio, sr = render_part(tdir, "bass", patch, sample_rate=48000)
    assert audio.shape == (2, expected_samples(2, "6/8", 133, 48000))


@needs_synthv1
def test_synthv1_pad_is_exact_clean_and_holds_its_chords(templates):
    patch = load_patch("synthv1-pad")
    assert patch.kind == "plugin" and patch.plugin.plugin == SYNTHV1
    for style in ("synthwave", "pop-ballad"):
        template = Template.load(templates[style])
        audio, sr = render_part(templates[style], "chords", patch)
        assert audio.shape == (2, template.loop_samples(sr))
        _clean(audio, sr, patch)
        for chord, share in zip(template.chords, bar_chroma(audio, sr, template)):
            assert share[list(chord.pitch_classes)].sum() >= 0.70, f"{style} bar {chord.bar} {chord.symbol}"


@needs_amsynth
@needs_synthv1
def test_plugin_patches_give_the_same_bytes_in_a_fresh_process(templates):
    tdir = templates["synthwave"]
    here = [hashlib.sha256(render_part(tdir, part, name)[0].tobytes()).hexdigest()
            for name, part in (("amsynth-bass", "bass"), ("synthv1-pad", "chords"))]
    code = ("import hashlib, sys; from farm.render.run import render_part; "
            "print(hashlib.sha256(render_part(sys.argv[1], 'chords', 'synthv1-pad')[0].tobytes()).hexdigest()); "
            "print(hashlib.sha256(render_part(sys.argv[1], 'bass', 'amsynth-bass')[0].tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code, str(tdir)], capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    assert out == here[::-1]  # the plugins' chatter stays off stdout: only the two digests


# -- bad input --------------------------------------------------------------------------------
def _plugin_patch(folder: Path, plugin_line: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hosted.toml"
    path.write_text('name = "hosted"\nroles = ["bass"]\ntarget_lufs = -14.0\n\n[plugin]\n'
                    f'{plugin_line}\npackage = "some-synth"\n{extra}')
    return path


def _render_fails(patch: Path, template: Path, tmp_path: Path, says: str, field: str):
    out = tmp_path / "out"
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(template), "--patch", str(patch),
                                           "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {patch}: {field}: ") and says in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("line, says, field", [
    ('path = "/usr/lib/vst/no-such-synth.so"', "plugin not installed: /usr/lib/vst/no-such-synth.so "
                                               "(on Debian: apt-get install some-synth)", "plugin.path"),
    ('lv2 = "http://example.org/plugins/no-such-synth"', "LV2 plugin not installed", "plugin.lv2"),
])
def test_a_missing_plugin_is_one_line_saying_what_to_install(tmp_path, templates, line, says, field):
    _render_fails(_plugin_patch(tmp_path / "p", line), templates["synthwave"], tmp_path, says, field)


def test_a_plugin_that_fails_to_load_is_one_line(tmp_path, templates):
    fake = tmp_path / "fake_vst.so"
    fake.write_bytes(b"\x7fELF not really a plugin")
    _render_fails(_plugin_patch(tmp_path / "p", f'path = "{fake}"'), templates["synthwave"], tmp_path,
                  "the plugin failed to load", "plugin.path")


@needs_amsynth
def test_an_unknown_plugin_parameter_suggests_the_closest(tmp_path, templates):
    patch = _plugin_patch(tmp_path / "p", f'path = "{AMSYNTH}"', "[plugin.params]\nfilter_cutof = 0.3\n")
    _render_fails(patch, templates["synthwave"], tmp_path, "did you mean 'filter_cutoff'?", "plugin.params.filter_cutof")


@needs_amsynth
def test_a_plugins_probe_is_rendered_twice_unless_it_matches_the_one_kept_from_an_earlier_run(
        tmp_path, monkeypatch):
    """Two fresh instances must render the test phrase alike; the second render may be one kept
    from an earlier run (farm.memo), so a warm start loads one probe instance instead of two. A
    kept digest that no longer matches (a new plugin binary) means two fresh renders again."""
    from farm import memo
    from farm.render import plugin

    monkeypatch.setenv("FARM_CACHE_DIR", str(tmp_path / "cache"))
    patch = load_patch(_plugin_patch(tmp_path / "p", f'path = "{AMSYNTH}"'))
    loaded = []
    real = plugin._instance
    monkeypatch.setattr(plugin, "_instance", lambda *a, **k: loaded.append(a[2]) or real(*a, **k))

    def check() -> list[str]:
        loaded.clear()
        plugin._CHECKED.clear()
        memo.kept.cache_clear()  # as a fresh process reads the kept digests
        plugin.check_deterministic(patch)
        plugin._probes().save()
        return list(loaded)

    assert check() == ["probe0", "probe1"]  # nothing kept yet: two fresh instances agree
    assert check() == ["probe0"]  # the kept digest is the second render
    kept = next((tmp_path / "cache").glob("plugin-probes-*.json"))
    kept.write_text(json.dumps({k: "0" * 64 for k in json.loads(kept.read_text())}))
    assert check() == ["probe0", "probe1"]  # it no longer matches: two fresh renders decide
    assert check() == ["probe0"]


@needs_zyn
def test_a_plugin_that_renders_differently_each_time_is_refused(tmp_path, templates):
    _render_fails(_plugin_patch(tmp_path / "p", f'path = "{ZYN}"'), templates["synthwave"], tmp_path,
                  "rendered the same notes to different bytes on two fresh instances", "plugin")


@needs_zyn
def test_a_refused_plugin_leaves_the_process_as_it_found_it(tmp_path, templates):
    """ZynAddSubFX switches on flush-to-zero when it loads: afterwards this process still keeps
    denormal numbers, renders a Faust patch to the bytes it gave before, and libfaust still compiles."""
    from farm.render.jsfx import faust_jsfx

    before = render_part(templates["synthwave"], "bass", "acid-303")[0]
    _render_fails(_plugin_patch(tmp_path / "p", f'path = "{ZYN}"'), templates["synthwave"], tmp_path,
                  "different bytes", "plugin")
    assert np.float32(1e-40) * np.float32(1.0) != 0  # denormals survive
    from farm.render.dawdreamer import close_processors

    close_processors()  # compile acid-303 again, after the plugin
    assert np.array_equal(render_part(templates["synthwave"], "bass", "acid-303")[0], before)
    assert "desc:" in faust_jsfx(load_patch("acid-303"))


def _bass_night(tmp_path: Path, patches: Path, chosen: str) -> subprocess.CompletedProcess:
    """`farm batch` of one 2-bar lofi-hiphop bass part over ``chosen`` (TOML), patches from ``patches``."""
    config = tmp_path / "night.toml"
    config.write_text(f'root = "{tmp_path / "lib"}"\nstyles = ["lofi-hiphop"]\ntemplates_per_style = 1\nbars = 2\n'
                      f'parts = ["bass"]\npatches = {chosen}\nworkers = 1\n')
    return subprocess.run([FARM, "batch", "--config", str(config), "--no-progress"],
                          capture_output=True, text=True, env={**os.environ, "FARM_PATCHES_DIR": str(patches)},
                          timeout=300)


@needs_zyn
def test_a_night_refuses_a_non_deterministic_plugin_before_writing(tmp_path):
    patches = tmp_path / "patches"
    _plugin_patch(patches, f'path = "{ZYN}"')
    result = _bass_night(tmp_path, patches, '["hosted"]')
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {patches / 'hosted.toml'}: plugin: the embedded "
                                                             "backend cannot render patch 'hosted'")
    assert not (tmp_path / "lib" / "loops").exists()


def test_a_night_over_all_patches_skips_a_missing_plugin_with_one_line(tmp_path):
    patches = tmp_path / "patches"
    patches.mkdir()
    for name in ("sub-bass", "sub-bass.RfxChain"):
        src = ROOT / "patches" / (name if "." in name else f"{name}.toml")
        (patches / src.name).write_bytes(src.read_bytes())
    _plugin_patch(patches, 'path = "/usr/lib/vst/no-such-synth.so"')
    result = _bass_night(tmp_path, patches, '"all"')
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped patch")]
    assert skipped == ["skipped patch hosted: plugin not installed: /usr/lib/vst/no-such-synth.so "
                       "(on Debian: apt-get install some-synth)"]
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "lib" / "loops").rglob("*.json")]
    assert sidecars and {s["patch"] for s in sidecars} == {"sub-bass"}


def test_farm_doctor_names_the_plugins_a_patch_needs_and_how_to_install_them(tmp_path, monkeypatch):
    from farm.doctor import check_plugins

    patches = tmp_path / "patches"
    _plugin_patch(patches, 'path = "/usr/lib/vst/no-such-synth.so"')
    check = check_plugins(patches)
    assert check.status == "missing" and check.detail.startswith("not installed for hosted: plugin not installed")
    assert "apt-get install some-synth" in check.detail
    shipped = check_plugins()
    if AMSYNTH.exists() and lv2_installed(SYNTHV1):
        assert shipped.status == "ok" and shipped.detail == "2 plugin patches can play (amsynth-bass, synthv1-pad)"
