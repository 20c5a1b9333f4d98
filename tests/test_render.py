"""The embedded renderer and the audio helpers, judged by the audio they produce.

Loops are rendered from real templates (farm.templates) through shipped patches, written as the
user gets them (FLAC 24-bit), read back and measured with independent tools: pyloudnorm for
loudness, 8x scipy oversampling for true peak, FFT chroma for the labelled chord tones.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
from click.testing import CliRunner
from scipy.signal import resample_poly

from farm.audio import (bar_chroma, chroma, dc_offset, remove_dc, fold_tail, integrated_lufs, limit_circular, normalise_loudness,
                        oversampled_peak, read_audio, true_peak_dbtp, write_audio)
from farm.cli import main as farm_cli
from farm.errors import FarmError
from farm.model import Meter
from farm.patches import ROLES, list_patches, load_patch
from farm.render import RenderJob, get_backend, render_loops
from farm.render.run import loop_file_name, plan_jobs, read_loop_metadata, render, render_part
from farm.templates import find_rules, generate_template, load_rules, write_template

PATCHES_DIR = Path(__file__).resolve().parent.parent / "patches"


# -- helpers ------------------------------------------------------------------------------------
def make_template(out: Path, style: str, seed: int, *, bpm: int | None = None, meter: str | None = None,
                  bars: int | None = None) -> Path:
    """A real generated template, with tempo/meter pinned when asked."""
    rules = load_rules(find_rules(style))
    changes = {}
    if bpm is not None:
        changes["tempo"] = (bpm, bpm)
    if meter is not None:
        changes["meters"] = (Meter.parse(meter),)
    generated = generate_template(dataclasses.replace(rules, **changes), seed, bars=bars)
    return write_template(generated, out)


def expected_samples(bars: int, meter: str, bpm: float, sr: int) -> int:
    """bars x beats per bar x 60 / bpm x sample rate, rounded once (half up)."""
    num, den = map(int, meter.split("/"))
    exact = Fraction(bars) * Fraction(num * 4, den) * 60 * sr / Fraction(bpm)
    return int(exact + Fraction(1, 2))


def true_peak_8x(audio: np.ndarray) -> float:
    """An independent true-peak reading: scipy's 8x polyphase oversampling of the loop, with the
    loop's end before its start and its start after its end (it is played round and round)."""
    pad = 256  # samples; resample_poly's filter reaches 10 input samples either side
    around = np.concatenate([audio[:, -pad:], audio, audio[:, :pad]], axis=1).astype(np.float64)
    up = resample_poly(around, 8, 1, axis=1)
    return 20 * np.log10(np.abs(up[:, 8 * pad:8 * (pad + audio.shape[1])]).max())


def pyloudnorm_lufs(audio: np.ndarray, sr: int) -> float:
    return pyloudnorm.Meter(sr).integrated_loudness(audio.T.astype(np.float64))


def seam_step(audio: np.ndarray) -> float:
    return float(np.abs(audio[:, 0] - audio[:, -1]).max())


# -- module fixtures: one template, rendered through several patches, as files -------------------
RENDERS = [  # (patch, part)
    ("dry-piano-chords", "chords"),
    ("warm-rhodes", "chords"),
    ("dusty-pad", "chords"),
    ("dub-delay-keys", "chords"),
    ("sub-bass", "bass"),
    ("acid-bass", "bass"),
    ("glass-arp", "arp"),
    ("saw-lead", "melody"),
    ("lofi-kit", "drums"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("render")


@pytest.fixture(scope="module")
def template_dir(workdir) -> Path:
    return make_template(workdir / "templates", "synthwave", 7, bars=4)


@pytest.fixture(scope="module")
def rendered(workdir, template_dir) -> dict[tuple[str, str], Path]:
    out = workdir / "loops"
    files = {}
    for patch, part in RENDERS:
        [path] = render(template_dir, patch, part=part, out=out, progress=False)
        files[(patch, part)] = path
    return files


@pytest.fixture(scope="module")
def backend():
    return get_backend("embedded")


# -- exact length ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bpm,meter,style,sr", [
    (60, "4/4", "pop-ballad", 44100),
    (97, "3/4", "pop-ballad", 48000),
    (133, "6/8", "cinematic-minor", 44100),
    (121, "6/8", "cinematic-minor", 48000),
    (155, "3/4", "jazz-ii-V-I", 44100),
    (180, "4/4", "synthwave", 48000),
])
def test_loop_length_is_exact_in_samples(workdir, backend, bpm, meter, style, sr):
    tdir = make_template(workdir / "lengths", style, 1, bpm=bpm, meter=meter, bars=2)
    jobs = plan_jobs(tdir, "sub-bass", "bass", sample_rate=sr)
    [loop] = render_loops(jobs, backend)
    expected = expected_samples(2, meter, bpm, sr)
    assert loop.audio.shape == (2, expected)
    assert loop.audio.dtype == np.float32
    assert loop.sample_rate == sr
    path = write_audio(workdir / "lengths" / f"{bpm}-{sr}.wav", loop.audio, sr, "wav32f")
    info = soundfile.info(str(path))
    assert (info.frames, info.samplerate, info.channels) == (expected, sr, 2)


def test_every_tempo_from_60_to_180_gives_the_exact_length(template_dir):
    """The length every job renders to (checked on real renders above), for every whole tempo from
    60 to 180 BPM and a few fractional ones, in 4/4, 3/4 and 6/8, at both sample rates."""
    from farm.model import Template

    template = Template.load(template_dir)
    patch = load_patch("sub-bass")
    for bpm in [*range(60, 181), 97.5, 128.25, 174.9]:
        for meter in ("4/4", "3/4", "6/8"):
            for sr in (44100, 48000):
                t = dataclasses.replace(template, bpm=bpm, meter=Meter.parse(meter))
                job = RenderJob(t, template_dir, "bass", patch, sr)
                assert job.loop_samples == expected_samples(t.bars, meter, bpm, sr), (bpm, meter, sr)
                assert fold_tail(np.ones((2, job.loop_samples + 999), np.float32), job.loop_samples).shape == \
                    (2, job.loop_samples)


# -- level, loudness, sanity --------------------------------------------------------------------
@pytest.mark.parametrize("patch,part", RENDERS)
def test_finished_loop_is_exact_clean_and_at_target_loudness(rendered, template_dir, patch, part):
    audio, sr = read_audio(rendered[(patch, part)])
    meta = read_loop_metadata(rendered[(patch, part)])
    t = json.loads((template_dir / "template.json").read_text())
    assert audio.shape == (2, expected_samples(t["bars"], t["meter"], t["bpm"], sr))
    assert np.isfinite(audio).all()
    assert np.sqrt(np.mean(audio ** 2)) > 0.01  # not silent
    assert true_peak_8x(audio) <= -1.0 + 0.01
    lufs = pyloudnorm_lufs(audio, sr)
    target = load_patch(patch).target_lufs
    assert abs(lufs - target) <= 0.5
    # the metadata reports what is in the file
    assert abs(meta["lufs"] - lufs) <= 0.05
    assert meta["true_peak_dbtp"] <= -1.0
    assert meta["samples"] == audio.shape[1] and meta["part"] == part and meta["patch"] == patch


# -- the notes are the labelled ones ------------------------------------------------------------
@pytest.mark.parametrize("patch", ["dry-piano-chords", "warm-rhodes", "dusty-pad"])
def test_chords_bars_hold_their_labelled_pitch_classes(rendered, template_dir, patch):
    from farm.model import Template

    template = Template.load(template_dir)
    audio, sr = read_audio(rendered[(patch, "chords")])
    per_bar = bar_chroma(audio, sr, template)
    for chord, share in zip(template.chords, per_bar):
        labelled = share[list(chord.pitch_classes)].sum()
        assert labelled >= 0.70, f"bar {chord.bar} {chord.symbol}: {labelled:.2f}"


def test_every_shipped_patch_renders_a_clean_loop_at_its_loudness(workdir):
    """Each patch on a part it plays (the chords part when it can), 2-bar loops: exact length, not
    silent, no NaN/inf, true peak under the ceiling, loudness on target. Every patch that can play
    the chords part keeps each bar's labelled pitch classes at 70 % of the chroma, on two templates."""
    from farm.model import Template

    dirs = [make_template(workdir / "every", style, seed, bars=2) for style, seed in (("synthwave", 3),
                                                                                      ("lofi-hiphop", 4))]
    first, second = (Template.load(d) for d in dirs)
    for patch in list_patches():
        chords = patch.fits("chords")
        part = "chords" if chords else next(p.name for p in first.parts if patch.fits(p.name))
        audio, sr = render_part(dirs[0], part, patch)
        assert audio.shape == (2, first.loop_samples(sr)), patch.name
        assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 0.01, patch.name
        assert true_peak_8x(audio) <= -1.0 + 0.01, patch.name
        assert abs(pyloudnorm_lufs(audio, sr) - patch.target_lufs) <= 0.5, patch.name
        assert dc_offset(audio) <= 0.005, patch.name
        if not chords:
            continue
        for template, heard in ((first, audio), (second, render_part(dirs[1], part, patch)[0])):
            for chord, share in zip(template.chords, bar_chroma(heard, sr, template)):
                labelled = share[list(chord.pitch_classes)].sum()
                assert labelled >= 0.70, f"{patch.name} {template.style} bar {chord.bar} {chord.symbol}: {labelled:.2f}"


def test_48k_loop_is_exact_and_holds_its_chords_and_bass(workdir):
    """``render_part`` at 48 kHz, on a 6/8 template: exact length, labelled chord tones, bass notes."""
    from farm.model import Template

    tdir = make_template(workdir / "48k", "cinematic-minor", 4, meter="6/8", bars=4)
    template = Template.load(tdir)
    for patch, part in (("dry-piano-chords", "chords"), ("string-ensemble", "chords"), ("sub-bass", "bass")):
        audio, sr = render_part(tdir, part, patch, sample_rate=48000)
        assert sr == 48000 and audio.dtype == np.float32
        assert audio.shape == (2, expected_samples(4, "6/8", template.bpm, 48000))
        assert np.isfinite(audio).all() and true_peak_8x(audio) <= -1.0 + 0.01
        assert abs(pyloudnorm_lufs(audio, sr) - load_patch(patch).target_lufs) <= 0.5
        for chord, share in zip(template.chords, bar_chroma(audio, sr, template)):
            if part == "chords":
                assert share[list(chord.pitch_classes)].sum() >= 0.70, f"{patch} bar {chord.bar} {chord.symbol}"
            else:
                assert int(np.argmax(share)) == chord.bass_pc, f"{patch} bar {chord.bar} {chord.symbol}"


@pytest.fixture(scope="module")
def bass_templates(workdir):
    return [make_template(workdir / "bass", style, seed, bars=4)
            for style, seed in (("lofi-hiphop", 0), ("jazz-ii-V-I", 2), ("pop-ballad", 1))]


@pytest.mark.parametrize("patch", ["sub-bass", "acid-bass"])
def test_bass_strongest_pitch_class_per_bar_is_the_labelled_bass(bass_templates, backend, patch):
    from farm.model import Template

    for tdir in bass_templates:
        template = Template.load(tdir)
        [loop] = render_loops(plan_jobs(tdir, patch, "bass"), backend)
        per_bar = bar_chroma(loop.audio, loop.sample_rate, template)
        for chord, share in zip(template.chords, per_bar):
            assert int(np.argmax(share)) == chord.bass_pc, f"{tdir.name} bar {chord.bar} {chord.symbol}"


# -- seamless --------------------------------------------------------------------------------------
@pytest.mark.parametrize("patch,part", RENDERS)
def test_step_across_the_loop_point_is_like_any_other_step(rendered, patch, part):
    audio, _ = read_audio(rendered[(patch, part)])
    steps = np.abs(np.diff(audio, axis=1)).max(axis=0)
    assert seam_step(audio) <= np.percentile(steps, 99)


def test_without_tail_folding_the_pad_would_click(template_dir, backend):
    """The seam test has teeth: cutting the rendered tail off leaves a step far above normal."""
    [job] = plan_jobs(template_dir, "dusty-pad", "chords")
    [raw] = backend.render_raw([job])
    cut = raw[:, :job.loop_samples]
    folded = fold_tail(raw, job.loop_samples)
    steps = np.abs(np.diff(folded, axis=1)).max(axis=0)
    assert seam_step(cut) > 3 * np.percentile(steps, 99)
    assert seam_step(folded) <= np.percentile(steps, 99)


# -- deterministic -----------------------------------------------------------------------------------
def test_identical_bytes_in_a_fresh_process(rendered, template_dir, workdir):
    """Rendered here after eight other jobs, and alone in a new interpreter: the same bytes. Run with
    CI set, where pyfluidsynth prints where it found its library: stdout still holds only the path."""
    out = workdir / "fresh"
    code = "import sys; from farm.cli import main; sys.argv[0] = 'farm'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "render", "--template", str(template_dir), "--patch", "dub-delay-keys",
         "--part", "chords", "--out", str(out)], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, CI="true"))
    assert proc.returncode == 0, proc.stderr
    here = rendered[("dub-delay-keys", "chords")]
    there = out / here.name
    assert proc.stdout.splitlines() == [str(there)]
    assert there.read_bytes() == here.read_bytes()


def test_one_soundfont_load_per_process_and_backends_by_name(template_dir, tmp_path, monkeypatch):
    """The worker keeps its SoundFont loaded: many jobs, many patches, one load. Backends are
    found by name; an unknown one is one line naming the known ones."""
    import farm.render.embedded as embedded

    embedded.close_soundfonts()
    loads = []
    original = embedded.LoadedSoundFont.__init__
    monkeypatch.setattr(embedded.LoadedSoundFont, "__init__",
                        lambda self, sf: (loads.append(sf), original(self, sf))[1])
    engine = get_backend("embedded")
    jobs = [*plan_jobs(template_dir, "sub-bass"), *plan_jobs(template_dir, "warm-rhodes"),
            *plan_jobs(template_dir, "lofi-kit")]
    engine.render_raw(jobs)
    engine.render_raw(jobs[:1])
    assert len(loads) == 1 and engine.name == "embedded"
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(template_dir), "--patch", "sub-bass",
                                           "--out", str(tmp_path / "out"), "--backend", "nope"])
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: backend: unknown renderer backend 'nope'; known: ") and "embedded" in line


def test_same_job_same_raw_audio_whatever_ran_before(template_dir, backend):
    [job] = plan_jobs(template_dir, "sweep-pad", "chords")
    [first] = backend.render_raw([job])
    backend.render_raw(plan_jobs(template_dir, "lofi-kit", "drums") + plan_jobs(template_dir, "warm-rhodes", "chords"))
    [again] = backend.render_raw([job])
    assert np.array_equal(first, again)


# -- CLI ----------------------------------------------------------------------------------------------
def test_render_cli_writes_every_fitting_part_with_a_progress_bar(template_dir, workdir, monkeypatch):
    out = workdir / "cli"
    piped = CliRunner().invoke(farm_cli, ["render", "--template", str(template_dir), "--patch", "mallet-keys",
                                          "--part", "chords", "--out", str(workdir / "piped")])
    assert piped.exit_code == 0 and piped.stderr == ""  # output that is no terminal gets no bar
    monkeypatch.setenv("FARM_PROGRESS", "always")
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(template_dir), "--patch", "mallet-keys",
                                           "--out", str(out), "-j", "2", "--format", "wav24",
                                           "--sample-rate", "48000"])
    assert result.exit_code == 0, result.output
    from farm.model import Template

    template = Template.load(template_dir)
    patch = load_patch("mallet-keys")
    fitting = [p.name for p in template.parts if p.name in ("chords", "arp")]
    printed = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in printed] == [loop_file_name(template, part, patch, "wav24") for part in fitting]
    assert printed[0].name.startswith(f"LF_{template.bpm:g}_chords_mallet-keys_{template.key.short}_")
    assert "render" in result.stderr and "loop" in result.stderr  # tqdm bar
    for path in printed:
        info = soundfile.info(str(path))
        assert (info.samplerate, info.subtype, info.frames) == (48000, "PCM_24", template.loop_samples(48000))



def test_render_names_files_like_the_catalog_even_at_a_fractional_tempo(template_dir):
    """``farm render`` and the catalog share one naming rule: a fractional tempo keeps its point."""
    from farm.model import Template, loop_name

    template = dataclasses.replace(Template.load(template_dir), bpm=92.5)
    name = loop_file_name(template, "chords", load_patch("mallet-keys"), "flac24")
    assert name == f"LF_92.5_chords_mallet-keys_{template.key.short}_{template.id}.flac"
    assert name == loop_name(92.5, "chords", "mallet-keys", template.key.short, template.id) + ".flac"

def _table(stdout: str) -> list[dict[str, str]]:
    """An aligned text table read back by the header's column positions."""
    header, *rows = stdout.rstrip("\n").splitlines()
    names = header.split("  ")
    names = [n.strip() for n in names if n.strip()]
    starts = [header.index(n) for n in names] + [None]
    table = []
    for row in rows:
        cells = {}
        for name, a, b in zip(names, starts, starts[1:]):
            cells[name] = row[a:b].strip()
            if name not in ("target LUFS", "tail s"):  # text columns start under their header
                assert row[a] != " " and (a == 0 or row[a - 1] == " "), row
        table.append(cells)
    return table


def test_patches_cli_lists_an_aligned_table_and_shows_one():
    runner = CliRunner()
    listing = runner.invoke(farm_cli, ["patches"])
    assert listing.exit_code == 0
    rows = _table(listing.stdout)
    assert list(rows[0]) == ["name", "kind", "roles", "sound", "effects", "target LUFS", "tail s"]
    patches = {p.name: p for p in list_patches()}
    assert [r["name"] for r in rows] == sorted(p.stem for p in PATCHES_DIR.glob("*.toml")) == sorted(patches)
    for r in rows:
        patch = patches[r["name"]]
        assert r["roles"].split(", ") == list(patch.roles) and r["kind"] == patch.kind
        if patch.kind == "faust":
            assert r["sound"] == patch.faust.dsp.name
        assert float(r["target LUFS"]) == patch.target_lufs and float(r["tail s"]) == patch.tail_s
        assert r["effects"].split(" > ") == ([e.plugin for e in patch.effects] or ["-"])
    lines = listing.stdout.splitlines()
    lufs_end = lines[0].index("target LUFS") + len("target LUFS")
    assert all(line[:lufs_end].endswith(r["target LUFS"]) for line, r in zip(lines[1:], rows))  # right-aligned
    assert f"{len(rows)} patches" in listing.stderr
    for role in ROLES:
        chosen = _table(runner.invoke(farm_cli, ["patches", "--role", role]).stdout)
        assert [r["name"] for r in chosen] == [p.name for p in patches.values() if role in p.roles]
    for args in (["patches", "dub-delay-keys"], ["patches", "--show", "dub-delay-keys"]):
        shown = runner.invoke(farm_cli, args)
        assert shown.exit_code == 0
        assert "Delay(delay_seconds=0.375" in shown.stdout and "Legend EP 2" in shown.stdout
        assert "-17 LUFS integrated, true peak under -1 dBTP" in shown.stdout


# -- bad input: one line, exit 2, nothing written --------------------------------------------------
def _bad_patch(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


GOOD = '''name = "{name}"
roles = ["chords"]
target_lufs = -16.0
[embedded]
soundfont = "default"
program = 0
'''


@pytest.mark.parametrize("case,edit,field", [
    ("missing-soundfont", lambda t: t.replace('"default"', '"no/such.sf2"'), "embedded.soundfont"),
    ("missing-program", lambda t: t.replace("program = 0", "bank = 77\nprogram = 3"), "embedded.program"),
    ("unknown-effect", lambda t: t + '[[effects]]\nplugin = "Reverb"\n[[effects]]\nplugin = "Flanger9000"\n',
     "effects[1].plugin"),
    ("unknown-parameter", lambda t: t + '[[effects]]\nplugin = "Reverb"\nroom_sise = 0.4\n', "effects[0].room_sise"),
])
def test_bad_patch_is_one_line_exit_2_and_no_file(tmp_path, template_dir, case, edit, field):
    patch = _bad_patch(tmp_path, case, edit(GOOD.format(name=case)))
    out = tmp_path / "out"
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(template_dir), "--patch", str(patch),
                                           "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {patch}: {field}: ")
    assert not out.exists()


def test_corrupt_midi_is_one_line_exit_2_and_no_file(tmp_path, template_dir):
    import shutil

    broken = tmp_path / "broken" / template_dir.name  # a template's folder is named by its id
    shutil.copytree(template_dir, broken)
    garbage = b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff garbage"
    (broken / "bass.mid").write_bytes(garbage)
    (broken / "arp.mid").write_bytes(garbage)
    out = tmp_path / "out"
    # mallet-keys plays chords (intact) before arp (corrupt): still nothing may be written
    for patch, part in (("sub-bass", "bass"), ("acid-bass", "bass"), ("mallet-keys", "arp")):
        result = CliRunner().invoke(farm_cli, ["render", "--template", str(broken), "--patch", patch,
                                               "--out", str(out)])
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"error: {broken / f'{part}.mid'}: parts.{part}.midi: corrupt MIDI")
        assert not out.exists()
    with pytest.raises(FarmError) as err:
        render(broken, "mallet-keys", out=out, jobs=2, progress=False)
    assert err.value.file == str(broken / "arp.mid") and not out.exists()
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(broken), "--patch", "warm-rhodes",
                                           "--out", str(out)])
    assert result.exit_code == 0  # the chords part is intact
    [bad_job] = plan_jobs(broken, "sub-bass")
    with pytest.raises(FarmError) as err:
        get_backend("embedded").render_raw([bad_job])
    assert err.value.file == str(broken / "bass.mid")


def test_wrong_part_or_role_is_refused(template_dir, tmp_path):
    runner = CliRunner()
    for args, field in ((["--patch", "sub-bass", "--part", "chords"], "roles"),
                        (["--patch", "sub-bass", "--part", "nope"], "part"),
                        (["--patch", "no-such-patch"], "name")):
        result = runner.invoke(farm_cli, ["render", "--template", str(template_dir), "--out", str(tmp_path / "o"),
                                          *args])
        assert result.exit_code == 2
        assert f": {field}: " in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


NO_LIBFLUIDSYNTH = ("import ctypes.util, sys; ctypes.util.find_library = lambda name: None; "
                    "from farm.cli import main; sys.argv[0] = 'farm'; main()")


def test_missing_fluidsynth_library_is_one_line_saying_how_to_install(template_dir, tmp_path):
    """A fresh process where ctypes finds no libfluidsynth: render stops in one line, writes
    nothing; listing patches (read from the SoundFont's headers) still works."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", NO_LIBFLUIDSYNTH, "render", "--template", str(template_dir),
                           "--patch", "sub-bass", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: backend: FluidSynth library not found: install it with apt-get install libfluidsynth3 "
        "(Debian/Ubuntu), dnf install fluidsynth-libs (Fedora) or brew install fluid-synth (macOS)"]
    assert not out.exists()
    listing = subprocess.run([sys.executable, "-c", NO_LIBFLUIDSYNTH, "patches"], capture_output=True, text=True,
                             timeout=120)
    assert listing.returncode == 0 and "sub-bass" in listing.stdout


def test_missing_pyfluidsynth_says_how_to_install(monkeypatch):
    import farm.render.embedded as embedded

    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # import fluidsynth -> ModuleNotFoundError
    monkeypatch.setattr(embedded, "_LIB", None)
    with pytest.raises(FarmError) as err:
        get_backend("embedded")
    assert err.value.line() == "backend: pyfluidsynth not installed: pip install pyfluidsynth " \
                               "(it also needs the FluidSynth library)"


# -- audio helpers on signals with known answers -------------------------------------------------------
def test_fold_tail_wraps_as_many_times_as_needed():
    loop = 1000
    raw = np.random.default_rng(0).standard_normal((2, 2 * loop + 300)).astype(np.float32)
    folded = fold_tail(raw, loop, fade_samples=0)
    expected = raw[:, :loop] + raw[:, loop:2 * loop]
    expected[:, :300] += raw[:, 2 * loop:]
    assert folded.shape == (2, loop) and np.allclose(folded, expected, atol=1e-6)
    mono = fold_tail(raw[0], loop, fade_samples=0)
    assert mono.shape == (2, loop) and np.allclose(mono[0], mono[1])


def _pink(rng, sr: int, seconds: float) -> np.ndarray:
    white = rng.standard_normal((2, int(sr * seconds)))
    spectrum = np.fft.rfft(white, axis=1)
    spectrum[:, 1:] /= np.sqrt(np.arange(1, spectrum.shape[1]))  # 1/f power
    pink = np.fft.irfft(spectrum, white.shape[1], axis=1)
    return (0.3 * pink / np.abs(pink).max()).astype(np.float32)


def test_integrated_lufs_agrees_with_pyloudnorm(rendered):
    """The vectorised meter against pyloudnorm, the reference: real loops, pink noise with a
    gated-out quiet stretch, mono, clips shorter than a gating block, both sample rates."""
    for path in rendered.values():
        audio, sr = read_audio(path)
        quieter = audio * np.float32(0.05)
        for x in (audio, quieter):
            assert integrated_lufs(x, sr) == pytest.approx(pyloudnorm_lufs(x, sr), abs=0.01)
    rng = np.random.default_rng(5)
    for sr in (44100, 48000):
        for seconds in (0.25, 0.45, 3.3, 9.7):
            pink = _pink(rng, sr, seconds)
            pink[:, pink.shape[1] // 3: pink.shape[1] // 2] *= np.float32(0.003)  # below the relative gate
            reference = pink if pink.shape[1] > 0.4 * sr else np.tile(pink, (1, int(np.ceil(sr / pink.shape[1]))))
            assert integrated_lufs(pink, sr) == pytest.approx(pyloudnorm_lufs(reference, sr), abs=0.01)
            assert integrated_lufs(pink[0], sr) == pytest.approx(
                pyloudnorm.Meter(sr).integrated_loudness(reference[0].astype(np.float64)), abs=0.01)
        assert integrated_lufs(np.zeros((2, sr), np.float32), sr) == float("-inf")
        # BS.1770-4: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS (pyloudnorm's filter design
        # reads about 0.04 LU lower)
        t = np.arange(2 * sr) / sr
        sine = np.stack([np.sin(2 * np.pi * 997 * t), np.zeros_like(t)]).astype(np.float32)
        assert integrated_lufs(sine, sr) == pytest.approx(-3.01, abs=0.1)


def test_a_stereo_pair_is_k_weighted_bit_for_bit_as_each_channel_alone(rendered):
    """The meter runs a stereo pair through its filter as one complex signal; each channel must
    come out with exactly the bits of its own real filter, so loudness (and every gain set from
    it) is what it was."""
    from scipy.signal import sosfilt

    from farm.audio import _k_weighted_power, _k_weighting

    rng = np.random.default_rng(3)
    loops = [read_audio(path) for path in rendered.values()]
    loops.append((_pink(rng, 48000, 2.1), 48000))
    for audio, sr in loops:
        alone = [sosfilt(_k_weighting(sr), np.add(channel, 1e-20, dtype=np.float64)) ** 2 for channel in audio]
        assert np.array_equal(_k_weighted_power(audio, sr), np.stack(alone))


def test_a_24_bit_flac_holds_the_integers_libsndfile_would_make(rendered):
    """Loops are quantised to 24 bits before libsndfile sees them: the file must be byte for byte
    the one libsndfile writes from the floats itself, at full scale, past it, and on rounding ties."""
    import io

    from farm.audio import file_frames
    from farm.tags import flac_bytes

    def libsndfile_flac(audio):
        buffer = io.BytesIO()
        soundfile.write(buffer, file_frames(audio, "flac24"), 44100, format="FLAC", subtype="PCM_24")
        return buffer.getvalue()

    ties = (np.arange(-40, 40, dtype=np.float32) + np.float32(0.5)) / np.float32(1 << 23)
    edges = np.array([1.0, -1.0, 0.99999994, -0.99999994, 1.7, -2.5, 0.0, -0.0, 1e-30], dtype=np.float32)
    cases = [read_audio(path)[0] for path in rendered.values()]
    cases += [np.stack([ties, ties[::-1]]), np.stack([edges, -edges]), cases[0] * np.float32(1.6), cases[0][:1]]
    for audio in cases:
        assert flac_bytes(audio, 44100) == libsndfile_flac(audio)


def test_screened_true_peak_is_the_exhaustive_one(template_dir, backend, rendered):
    """Interpolated points are computed only where bounds say they could matter; the result is
    the same as computing every point, on raw renders (before any gain) and on finished loops."""
    raws = backend.render_raw(plan_jobs(template_dir, "sub-bass", "bass") + plan_jobs(template_dir, "lofi-kit"))
    finished = [read_audio(rendered[key])[0] for key in (("warm-rhodes", "chords"), ("glass-arp", "arp"))]
    for audio in raws + finished:
        everything = oversampled_peak(audio, floor=0.0)
        assert oversampled_peak(audio).max() == pytest.approx(everything.max(), rel=1e-6)
        for share in (0.7, 0.3):
            floor = share * float(everything.max())
            screened = oversampled_peak(audio, floor=floor)
            above = everything > floor
            assert np.allclose(screened[above], everything[above], rtol=1e-6)  # exact above the floor
            assert (screened[~above] <= floor * (1 + 1e-6)).all()


def test_true_peak_finds_the_peak_between_samples_and_across_the_seam():
    sr = 48000
    n = np.arange(4800)
    # a sine at a quarter of the sample rate, sampled 45 degrees off its crests: samples at 0.707
    x = np.stack([np.sin(2 * np.pi * n / 4 + np.pi / 4)] * 2).astype(np.float32)
    assert 20 * np.log10(np.abs(x).max()) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_dbtp(x, sr) == pytest.approx(0.0, abs=0.3)
    # a half-cycle bump whose crest falls between the last and the first sample of the loop
    seam = np.zeros((2, 1000), dtype=np.float32)
    seam[:, -1] = seam[:, 0] = 0.5
    seam[:, -2] = seam[:, 1] = -0.1
    assert true_peak_dbtp(seam, sr) > 20 * np.log10(0.5) + 0.5


def test_normalise_loudness_hits_target_under_the_ceiling_and_keeps_the_seam():
    from scipy.signal import butter, sosfilt

    sr = 44100
    rng = np.random.default_rng(3)
    loop = np.zeros((2, 2 * sr), dtype=np.float32)
    for start in range(0, loop.shape[1], sr // 4):  # noise bursts with fast decays: a very peaky drum loop
        hit = rng.standard_normal(4000) * np.exp(-np.arange(4000) / 400)
        loop[:, start:start + 4000] += hit.astype(np.float32)
    loop = sosfilt(butter(4, 12000, fs=sr, output="sos"), loop, axis=1).astype(np.float32)
    loop[:, 0] += 2.0  # the worst peak right on the loop start
    out, lufs, tp = normalise_loudness(loop, sr, -12.0)
    assert abs(pyloudnorm_lufs(out, sr) + 12.0) <= 0.5 and abs(lufs - pyloudnorm_lufs(out, sr)) < 0.01
    assert true_peak_8x(out) <= -1.0 + 0.01 and tp <= -1.0
    # the limiter treats the loop as a circle: rotating the loop rotates the result, so the
    # peak sitting on the loop start is limited exactly as if it sat mid-loop
    hot = loop * np.float32(4.0)
    limited = limit_circular(hot, sr, -1.0)
    rotated = limit_circular(np.roll(hot, 30000, axis=1), sr, -1.0)
    assert np.allclose(np.roll(limited, 30000, axis=1), rotated, atol=1e-6)
    assert true_peak_dbtp(limited) <= -1.0
    quiet = 0.01 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr).astype(np.float32)[None, :].repeat(2, 0)
    out, lufs, tp = normalise_loudness(quiet, sr, -18.0)
    assert abs(integrated_lufs(out, sr) + 18.0) < 0.01 and np.allclose(out, quiet * (out[0, 1] / quiet[0, 1]), atol=1e-6)  # a plain gain


def test_chroma_names_the_notes_of_a_chord():
    sr = 44100
    t = np.arange(sr) / sr
    a_minor = sum(np.sin(2 * np.pi * 440 * 2 ** (s / 12) * t) for s in (0, 3, 7))  # A C E
    c = chroma(np.stack([a_minor, a_minor]), sr)
    assert c.shape == (12,) and c.sum() == pytest.approx(1.0)
    assert set(np.argsort(c)[-3:]) == {9, 0, 4} and c[[9, 0, 4]].sum() > 0.95
    assert chroma(np.zeros((2, 1000)), sr).sum() == 0


@pytest.mark.parametrize("fmt,subtype,container", [("flac24", "PCM_24", "FLAC"), ("wav24", "PCM_24", "WAV"),
                                                   ("wav32f", "FLOAT", "WAV")])
def test_write_and_read_audio_formats(tmp_path, fmt, subtype, container):
    audio = (0.5 * np.random.default_rng(1).standard_normal((2, 5000))).clip(-0.9, 0.9).astype(np.float32)
    path = write_audio(tmp_path / f"x.{fmt}", audio, 48000, fmt)
    info = soundfile.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.frames) == (container, subtype, 48000, 5000)
    back, sr = read_audio(path)
    assert sr == 48000 and back.dtype == np.float32
    assert np.abs(back - audio).max() <= (0 if fmt == "wav32f" else 2 ** -23)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_a_write_that_fails_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    """Files are written under a temporary name and renamed: a write cut short (disk full, a
    killed worker) leaves neither a half-written file nor a temporary, and an earlier loop of the
    same name stays whole."""
    audio = (0.1 * np.random.default_rng(2).standard_normal((2, 4000))).astype(np.float32)
    earlier = write_audio(tmp_path / "loop.flac", audio, 44100)
    before = earlier.read_bytes()

    real_write_bytes = Path.write_bytes

    def cut_short(self, data):
        real_write_bytes(self, data[:100])  # some bytes land, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", cut_short)
    for name in ("loop.flac", "other.flac"):
        with pytest.raises(OSError):
            write_audio(tmp_path / name, audio * 2, 44100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.flac"] and earlier.read_bytes() == before


def test_unreadable_audio_names_the_file(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC not really")
    with pytest.raises(FarmError) as err:
        read_audio(bad)
    assert err.value.file == str(bad)
    with pytest.raises(FarmError):
        write_audio(tmp_path / "x.ogg", np.zeros((2, 10), np.float32), 44100, "ogg")


# -- the patch's MIDI transforms are heard ----------------------------------------------------------
def _variant(job, **embedded):
    patch = job.patch
    return dataclasses.replace(job, patch=dataclasses.replace(
        patch, embedded=dataclasses.replace(patch.embedded, **embedded)))


def _centroid_hz(audio: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio.mean(axis=0)))
    return float((spectrum * np.fft.rfftfreq(audio.shape[1], 1 / sr)).sum() / spectrum.sum())


def test_midi_transforms_change_the_sound_as_documented(template_dir, backend):
    from farm.patches import CCAutomation

    [bass] = plan_jobs(template_dir, "sub-bass", "bass")
    plain, up, hard, short = backend.render_raw([
        bass, _variant(bass, octave=1), _variant(bass, velocity_curve=3.0), _variant(bass, note_length=0.25)])
    n = bass.loop_samples

    def strongest_hz(audio):
        spectrum = np.abs(np.fft.rfft(audio[:, :n].mean(axis=0)))
        return np.fft.rfftfreq(n, 1 / bass.sample_rate)[np.argmax(spectrum)]

    assert strongest_hz(up) / strongest_hz(plain) == pytest.approx(2.0, rel=0.03)  # an octave up
    rms = lambda a: float(np.sqrt(np.mean(a[:, :n] ** 2)))  # noqa: E731
    assert rms(hard) < 0.7 * rms(plain)  # velocities below 127 pushed down
    assert rms(short) < 0.8 * rms(plain)  # quarter-length notes

    [pad] = plan_jobs(template_dir, "sweep-pad", "chords")
    dark, bright = backend.render_raw([_variant(pad, cc=(CCAutomation(74, 0, 0),)),
                                       _variant(pad, cc=(CCAutomation(74, 127, 127),))])
    assert _centroid_hz(bright, pad.sample_rate) > 1.5 * _centroid_hz(dark, pad.sample_rate)  # CC74 = cut-off


def test_the_dc_blocker_removes_an_offset_keeps_the_bass_and_the_seam():
    sr, n = 44100, 88200  # a 2 s loop holding 80 periods of 40 Hz, on a 0.2 offset
    t = np.arange(n) / sr
    loop = np.stack([0.5 * np.sin(2 * np.pi * 40 * t) + 0.2, 0.3 * np.sin(2 * np.pi * 40 * t) - 0.1]).astype(np.float32)
    out = remove_dc(loop, sr)
    assert out.shape == loop.shape and out.dtype == np.float32
    assert dc_offset(out) < 1e-6 and dc_offset(loop) > 0.19
    # 40 Hz passes at 99 % of its level: the filter sits at 5 Hz
    level = np.sqrt(np.mean(out[0].astype(np.float64) ** 2)) / (0.5 / np.sqrt(2))
    assert 0.99 <= level <= 1.001
    # the loop is in the filter's periodic steady state: played twice through the filter from
    # rest, the second pass is the blocked loop itself
    twice = remove_dc(np.concatenate([loop] * 2, axis=1), sr)
    assert np.allclose(twice[:, n:], out, atol=1e-6) and np.allclose(twice[:, :n], out, atol=1e-6)
    assert seam_step(out) <= 3 * np.abs(np.diff(out, axis=1)).max()


def test_a_dc_offset_is_a_machine_rejection_at_the_configured_limit():
    from farm.qa import QALimits, machine_check

    sr, n = 44100, 44100
    noise = np.random.default_rng(1).normal(0, 0.1, (2, n)).astype(np.float32)
    assert machine_check(noise - noise.mean(axis=1, keepdims=True), sr, expected_samples=n) is None
    reason = machine_check(noise - noise.mean(axis=1, keepdims=True) + np.array([[0.0], [0.02]], np.float32), sr,
                           expected_samples=n)
    assert reason.startswith("DC offset: 0.0200 on channel R is above 0.005")
    assert machine_check(noise + 0.004, sr, expected_samples=n, limits=QALimits(dc_offset=0.05)) is None
