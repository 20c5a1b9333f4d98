"""Faust patches, judged by their audio as the SoundFont patches are: exact length at every tempo,
meter and sample rate, a seamless loop point, loudness and true peak, no DC, the labelled chord
tones in each bar, the labelled bass on each downbeat, drum sounds on the drum notes; the same
bytes in a fresh process; and every mistake in a patch or its .dsp is one line naming the file."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from click.testing import CliRunner

from farm.audio import bar_chroma, chroma, dc_offset
from farm.cli import main as farm_cli
from farm.errors import FarmError
from farm.model import Template
from farm.patches import list_patches, load_patch
from farm.qa import onset_times
from farm.render.run import render_part
from test_render import expected_samples, make_template, pyloudnorm_lufs, seam_step, true_peak_8x

ROOT = Path(__file__).resolve().parent.parent
FAUST = [p for p in list_patches() if p.kind == "faust"]
PART_FOR_ROLE = {"chords": "chords", "pad": "chords", "keys": "chords", "bass": "bass", "arp": "arp",
                 "lead": "melody", "drums": "drums"}
KICK, CLOSED_HAT = 36, 42


def part_of(patch) -> str:
    return PART_FOR_ROLE[patch.roles[0]]


def faust_ids(patch) -> str:
    return patch.name


def test_at_least_sixteen_faust_patches_cover_every_role_and_two_drum_kits():
    assert len(FAUST) >= 16
    assert {role for p in FAUST for role in p.roles} == {"chords", "pad", "keys", "bass", "lead", "arp", "drums"}
    assert len([p for p in FAUST if "drums" in p.roles]) >= 2
    for p in FAUST:
        assert p.faust.dsp == p.path.with_suffix(".dsp") and p.faust.dsp.is_file()
        assert {"freq", "gain", "gate"} <= {s.label for s in p.faust.sliders}


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("faust")
    return {style: make_template(out / style, style, seed, bars=4)
            for style, seed in (("synthwave", 7), ("lofi-hiphop", 4), ("deep-house", 2), ("pop-ballad", 1))}


# -- exact, clean, seamless -----------------------------------------------------------------------
@pytest.mark.parametrize("patch", FAUST, ids=faust_ids)
def test_exact_length_at_every_tempo_meter_and_sample_rate(tmp_path, patch):
    part = part_of(patch)
    for bpm, meter, style, sr in ((61, "4/4", "pop-ballad", 44100), (97, "3/4", "pop-ballad", 48000),
                                  (133, "6/8", "cinematic-minor", 44100), (179, "4/4", "synthwave", 48000)):
        tdir = make_template(tmp_path / f"{bpm}", style, 1, bpm=bpm, meter=meter, bars=2)
        audio, got_sr = render_part(tdir, part, patch, sample_rate=sr)
        assert got_sr == sr and audio.dtype == np.float32
        assert audio.shape == (2, expected_samples(2, meter, bpm, sr)), (bpm, meter, sr)


@pytest.mark.parametrize("patch", FAUST, ids=faust_ids)
def test_a_clean_seamless_loop_at_its_loudness_without_dc(templates, patch):
    audio, sr = render_part(templates["synthwave"], part_of(patch), patch)
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01
    assert true_peak_8x(audio) <= -1.0 + 0.01
    assert abs(pyloudnorm_lufs(audio, sr) - patch.target_lufs) <= 0.5
    assert dc_offset(audio) <= 0.005
    steps = np.abs(np.diff(audio, axis=1)).max(axis=0)
    assert seam_step(audio) <= np.percentile(steps, 99.5)


# -- the labelled notes are the ones heard --------------------------------------------------------
CHORDAL = [p for p in FAUST if part_of(p) in ("chords", "arp")]


@pytest.mark.parametrize("patch", CHORDAL, ids=faust_ids)
def test_each_bar_sounds_its_labelled_chord_tones(templates, patch):
    """Chords, pads, keys: the labelled pitch classes hold 70 % of each bar's chroma on two
    templates; arps (plucks and bells, whose partials ring wider) 60 %."""
    floor = 0.70 if part_of(patch) == "chords" else 0.60
    for style in ("synthwave", "pop-ballad"):
        template = Template.load(templates[style])
        audio, sr = render_part(templates[style], part_of(patch), patch)
        for chord, share in zip(template.chords, bar_chroma(audio, sr, template)):
            labelled = share[list(chord.pitch_classes)].sum()
            assert labelled >= floor, f"{style} bar {chord.bar} {chord.symbol}: {labelled:.2f}"


BASSES = [p for p in FAUST if part_of(p) == "bass"]


@pytest.mark.parametrize("patch", BASSES, ids=faust_ids)
def test_the_lowest_pitch_class_on_each_downbeat_is_the_labelled_bass(templates, patch):
    """The first beat of every bar, heard below 300 Hz (the bass's fundamentals and octaves): its
    strongest pitch class is the chord's labelled bass."""
    for style in ("synthwave", "lofi-hiphop", "pop-ballad"):
        template = Template.load(templates[style])
        audio, sr = render_part(templates[style], "bass", patch)
        beat = round(60 / template.bpm * 4 / template.meter.denominator * sr)
        for chord in template.chords:
            start = template.bar_start_sample(chord.bar, sr)
            low = chroma(audio, sr, start, start + beat, fmax=300.0)
            assert int(np.argmax(low)) == chord.bass_pc, f"{patch.name} {style} bar {chord.bar} {chord.symbol}"


LEADS = [p for p in FAUST if part_of(p) == "melody"]


@pytest.mark.parametrize("patch", LEADS, ids=faust_ids)
def test_a_lead_plays_the_melody_notes(templates, patch):
    """Each bar's chroma matches the pitch classes the melody's MIDI holds in that bar (weighted by
    how long each sounds): at least 70 % of the energy is on them."""
    tdir = templates["synthwave"]
    template = Template.load(tdir)
    audio, sr = render_part(tdir, "melody", patch)
    midi = pretty_midi.PrettyMIDI(str(tdir / template.part("melody").midi))
    for bar, share in enumerate(bar_chroma(audio, sr, template), 1):
        start, end = (template.bar_start_sample(b, sr) / sr for b in (bar, bar + 1))
        held = {n.pitch % 12 for i in midi.instruments for n in i.notes if n.start < end and n.end > start}
        if held:
            assert share[sorted(held)].sum() >= 0.70, f"bar {bar}: {share[sorted(held)].sum():.2f}"


KITS = [p for p in FAUST if part_of(p) == "drums"]


def _hits(tdir: Path, template: Template) -> dict[float, set[int]]:
    midi = pretty_midi.PrettyMIDI(str(tdir / template.part("drums").midi))
    hits: dict[float, set[int]] = {}
    for inst in midi.instruments:
        for n in inst.notes:
            hits.setdefault(round(n.start, 3), set()).add(n.pitch)
    return hits


@pytest.mark.parametrize("patch", KITS, ids=faust_ids)
def test_drum_kits_strike_on_the_drum_notes_with_the_right_drum(templates, patch):
    """Every hit of the drum MIDI is heard as an onset (and nothing else is); a kick (with its hat)
    makes the energy below 150 Hz jump, a closed hat alone the energy above 6 kHz and not the low
    end: the note chooses the drum."""
    for style in ("lofi-hiphop", "deep-house"):
        tdir = templates[style]
        template = Template.load(tdir)
        audio, sr = render_part(tdir, "drums", patch)
        hits = _hits(tdir, template)
        starts = np.array(sorted(hits))
        heard = onset_times(audio, sr)
        near = lambda t, pool: np.abs(pool - t).min() <= 0.04  # noqa: E731
        assert np.mean([near(t, heard) for t in starts]) >= 0.85, style
        assert np.mean([near(t, starts) for t in heard]) >= 0.85, style

        n = int(0.05 * sr)
        freqs = np.fft.rfftfreq(n, 1 / sr)

        def rise(t, band):  # band energy in the 50 ms after the hit over the 50 ms before it
            i = int(round(t * sr))
            power = [np.abs(np.fft.rfft(audio[:, j:j + n].mean(axis=0) * np.hanning(n))) ** 2 for j in (i - n, i)]
            return power[1][band(freqs)].sum() / max(power[0][band(freqs)].sum(), 1e-12)

        low, high = (lambda f: f < 150), (lambda f: f > 6000)
        kicks = [t for t, notes in hits.items() if notes == {KICK, CLOSED_HAT} and t > 0.05]  # never alone
        hats = [t for t, notes in hits.items() if notes == {CLOSED_HAT} and t > 0.05]
        assert kicks and hats, style
        assert np.median([rise(t, low) for t in kicks]) >= 3, style
        assert np.median([rise(t, high) for t in hats]) >= 3, style
        assert np.median([rise(t, low) for t in hats]) < 1.5, style


@pytest.mark.parametrize("patch", KITS, ids=faust_ids)
def test_each_drum_played_alone_is_the_same_through_the_kit_and_through_its_own_voice(templates, patch):
    """A kit is rendered one drum at a time, one hit per voice (voice(N) as its own instrument,
    so a held voice computes one drum, not nine); every drum the kit maps, struck alone, gives
    what the whole kit (its process through libfaust's polyphonic host, the instrument REAPER
    plays) gives, to within 1e-4 (-80 dBFS), so playing drum by drum changes nothing but how
    voices are shared between drums. Each hit starts from the instrument's first state (its
    noise generator at its seed), as a fresh voice of the kit does, so the kit is struck once
    per render here. libfaust's JIT orders the arithmetic of the two differently, and for the
    host's CPU: most drums agree to 1e-7, but the 909's ringing rim shot carried one sample
    1.1e-5 apart on an AVX-512 machine."""
    from farm.render import RenderJob
    from farm.render.dawdreamer import _play, _play_by_voice, drum_notes, faust_processor, plays_by_voice
    from farm.render.embedded import _Note

    tdir = templates["deep-house"]
    job = RenderJob(Template.load(tdir), tdir, "drums", patch, 44100)
    kit = drum_notes(str(patch.faust.dsp), patch.content_hash)
    assert {KICK, CLOSED_HAT, 38, 39, 46} <= set(kit)
    assert plays_by_voice(job)
    total = job.loop_samples
    step = job.loop_samples // 4
    for note in kit:
        hits = [_Note(i * step, (i + 1) * step, note, v) for i, v in enumerate((100, 64, 127, 90))]
        whole = sum(_play(job, faust_processor(job), [hit], total, strict=True) for hit in hits)
        alone = _play_by_voice(job, faust_processor(job, note, by_voice=True), hits, total, strict=False)
        assert np.abs(whole).max() > 0.01, note
        np.testing.assert_allclose(alone, whole, rtol=0, atol=1e-4, err_msg=f"note {note}")


# -- one voice per note ------------------------------------------------------------------------------
def _chord_job(templates, name: str):
    from farm.render import RenderJob

    patch = load_patch(name)
    tdir = templates["synthwave"]
    return RenderJob(Template.load(tdir), tdir, "chords", patch, 44100)


@pytest.mark.parametrize("name, host_cuts_release", [("analog-pad", False), ("supersaw-chords", False),
                                                     ("fm-bell", True), ("fm-epiano", True), ("string-pluck", True)])
def test_a_chord_played_voice_by_voice_is_the_polyphonic_instrument_and_its_release_rings_out(
        templates, name, host_cuts_release):
    """Each note on its own one-voice copy, computed a block at a time, sounds as libfaust's
    polyphonic host sounds the chord (to 1e-4) while the keys are down, and 100 ms into the
    release of a stereo pad. But the host (one sample per call) drops a released voice at its first
    sample below -90 dB, which a voice that is the same in both channels reaches wherever a sample
    lands close enough to a zero crossing: in this chord the bell, the electric piano and the
    plucked string went silent within 30 ms of the keys coming up. Played voice by voice they ring out their release, to -90 dB by the end
    of the tail."""
    from farm.render.dawdreamer import VOICE_STOP_LEVEL, _play, _play_by_voice, faust_processor, plays_by_voice
    from farm.render.embedded import _Note

    job = _chord_job(templates, name)
    assert plays_by_voice(job)
    sr, up = job.sample_rate, 60000
    total = up + int(job.patch.tail_s * sr)
    chord = [_Note(0, up, pitch, velocity) for pitch, velocity in ((48, 100), (55, 90), (60, 110), (64, 70))]
    host = _play(job, faust_processor(job), chord, total, strict=True)
    voices = _play_by_voice(job, faust_processor(job, by_voice=True), chord, total, strict=True)
    assert voices.shape == host.shape == (2, total)
    assert np.abs(voices[:, :up]).max() > 0.1
    np.testing.assert_allclose(voices[:, :up], host[:, :up], rtol=0, atol=1e-4)
    ringing = voices[:, up + int(0.05 * sr):up + int(0.1 * sr)]  # 50-100 ms after the keys come up
    assert np.abs(ringing).max() > 1e-3
    if host_cuts_release:
        assert np.abs(host[:, up + int(0.03 * sr):]).max() < 1e-4
    else:
        np.testing.assert_allclose(voices[:, :up + int(0.1 * sr)], host[:, :up + int(0.1 * sr)], rtol=0, atol=1e-4)
    assert np.sqrt(np.mean(np.square(voices[:, -2048:], dtype=np.float64))) < VOICE_STOP_LEVEL


def _with_voices(job, voices: int):
    import dataclasses

    patch = dataclasses.replace(job.patch, faust=dataclasses.replace(job.patch.faust, voices=voices))
    return dataclasses.replace(job, patch=patch)


def test_notes_played_again_reuse_their_sound_and_how_long_voices_rang_before_changes_nothing(templates):
    """A note played again the same way is rendered once (its bytes kept): with voices enough
    for every note, a loop rendered in one call is bit for bit the sum of its notes each rendered
    alone. With few voices (so that notes steal them) the loop is the same bytes whatever length
    the worker guessed from earlier voices (only the CPU depends on that guess)."""
    import dataclasses
    from collections import deque

    import farm.render.dawdreamer as dd
    from farm.render.embedded import shaped_notes

    job = _with_voices(_chord_job(templates, "supersaw-chords"), 64)
    total = job.loop_samples + int(job.patch.tail_s * job.sample_rate)
    processor = dd.faust_processor(job, by_voice=True)
    notes = shaped_notes(job)[0]
    notes += [dataclasses.replace(n, start=n.start + 1000, end=n.end + 1000) for n in notes[:4]]  # played again
    dd._RING_GUESS[id(processor[1])] = deque([2])
    together = dd._play_by_voice(job, processor, notes, total, strict=True)
    apart = np.zeros_like(together)
    for n in sorted(notes, key=lambda n: (n.start, n.pitch, n.end, n.velocity)):  # summed in the order they start
        dd._RING_GUESS[id(processor[1])] = deque([10 ** 6])
        apart += dd._play_by_voice(job, processor, [n], total, strict=True)
    assert np.abs(together).max() > 0.1
    assert np.array_equal(together, apart)

    few = _with_voices(job, 4)
    processor = dd.faust_processor(few, by_voice=True)
    dd._RING_GUESS[id(processor[1])] = deque([2])
    short_guess = dd._play_by_voice(few, processor, notes, total, strict=True)
    dd._RING_GUESS[id(processor[1])] = deque([10 ** 6])
    long_guess = dd._play_by_voice(few, processor, notes, total, strict=True)
    assert np.array_equal(short_guess, long_guess)
    assert not np.array_equal(short_guess, together)  # four voices: notes were stolen


SINE_DSP = """import("stdfaust.lib");
declare options "[midi:on][nvoices:4]";
freq = hslider("freq", 440, 20, 20000, 0.01);
gain = hslider("gain", 0.5, 0, 1, 0.01);
release = hslider("release", 3, 0.01, 5, 0.01);
gate = button("gate");
process = os.osc(freq) * gain * en.asr(0.001, 1, release, gate) * 0.2 <: _, _;
"""


@pytest.mark.parametrize("release, stolen", [(3.0, True), (0.05, False)])
def test_an_instrument_sounds_no_more_voices_than_it_declares(tmp_path, templates, release, stolen):
    """``[nvoices:4]`` and eight short notes 0.2 s apart, each of its own pitch. With a 3 s
    release every voice is still ringing when the fifth note starts, so each new note takes the
    oldest voice: at any time only the four newest pitches sound. With a 50 ms release a voice
    is quiet long before the next note: nothing is stolen, and the loop is exactly its eight
    notes each played alone."""
    from farm.render import RenderJob
    from farm.render.dawdreamer import _play_by_voice, faust_processor, plays_by_voice
    from farm.render.embedded import _Note

    patch = load_patch(_faust_patch(tmp_path, SINE_DSP, f"\n[faust.params]\nrelease = {release}\n"))
    tdir = templates["synthwave"]
    job = RenderJob(Template.load(tdir), tdir, "chords", patch, 44100)
    assert plays_by_voice(job) and patch.faust.voices == 4
    sr, step = 44100, 8820
    pitches = [60, 64, 67, 71, 74, 77, 81, 84]
    notes = [_Note(i * step, i * step + 4410, p, 100) for i, p in enumerate(pitches)]
    total = 8 * step + sr
    processor = faust_processor(job, by_voice=True)
    audio = _play_by_voice(job, processor, notes, total, strict=True)
    assert audio.shape == (2, total)

    def level(at: int, pitch: int) -> float:  # the pitch's amplitude in 4096 samples from ``at``
        window = audio[0, at:at + 4096] * np.hanning(4096)
        spectrum = np.abs(np.fft.rfft(window)) / np.hanning(4096).sum() * 2
        k = int(round(440.0 * 2 ** ((pitch - 69) / 12) * 4096 / sr))
        return float(spectrum[k - 2:k + 3].max())

    for last in range(4, 8):  # just after note ``last`` starts, past the stolen voice's fade
        at = last * step + 600
        heard = [p for p in pitches[:last + 1] if level(at, p) > 0.01]
        if stolen:
            assert heard == pitches[last - 3:last + 1], (last, heard)
        else:
            assert heard == [pitches[last]], (last, heard)
    if not stolen:
        apart = sum(_play_by_voice(job, processor, [n], total, strict=True) for n in notes)
        assert np.array_equal(audio, apart)
    assert abs(float(audio.mean())) < 1e-3 and np.abs(audio).max() < 1.0


@pytest.mark.parametrize("gate, by_voice", [('checkbox("gate")', True), ('hslider("gate", 0, 0, 1, 1)', False)])
def test_an_instrument_plays_its_notes_whichever_control_its_gate_is(tmp_path, templates, gate, by_voice):
    """A gate the voice can open itself (a button or checkbox labelled gate) is played note by
    note; any other gate control (a slider) through libfaust's polyphonic host. Either way every
    bar sounds its labelled chord tones, at the template's exact length."""
    from farm.render import RenderJob
    from farm.render.dawdreamer import plays_by_voice

    patch = load_patch(_faust_patch(tmp_path, GOOD_DSP.replace('button("gate")', gate)))
    tdir = templates["synthwave"]
    template = Template.load(tdir)
    assert plays_by_voice(RenderJob(template, tdir, "chords", patch, 44100)) is by_voice
    audio, sr = render_part(tdir, "chords", patch)
    assert audio.shape == (2, expected_samples(template.bars, str(template.meter), template.bpm, sr))
    for chord, share in zip(template.chords, bar_chroma(audio, sr, template)):
        assert share[list(chord.pitch_classes)].sum() >= 0.6, chord.symbol


def test_an_instrument_with_an_effect_after_its_voices_keeps_it(tmp_path, templates):
    """libfaust's host puts an instrument's ``effect`` after the summed voices; a one-voice copy
    would leave it out, so such an instrument plays through the host, with its effect."""
    from farm.qa import spectral_centroid_hz
    from farm.render import RenderJob
    from farm.render.dawdreamer import plays_by_voice

    tdir = templates["synthwave"]
    dark_dir, plain_dir = tmp_path / "dark", tmp_path / "plain"
    dark_dir.mkdir(), plain_dir.mkdir()
    dark = load_patch(_faust_patch(dark_dir, GOOD_DSP.replace("effect = _, _;", "effect = fi.lowpass(2, 300), fi.lowpass(2, 300);")))
    plain = load_patch(_faust_patch(plain_dir, GOOD_DSP))
    template = Template.load(tdir)
    assert not plays_by_voice(RenderJob(template, tdir, "chords", dark, 44100))
    assert plays_by_voice(RenderJob(template, tdir, "chords", plain, 44100))
    dark_audio, sr = render_part(tdir, "chords", dark)
    plain_audio, _ = render_part(tdir, "chords", plain)
    assert spectral_centroid_hz(dark_audio, sr) < 0.75 * spectral_centroid_hz(plain_audio, sr)


# -- parameters ------------------------------------------------------------------------------------
def test_a_parameter_sweep_moves_the_sound_and_the_loop_still_joins(tmp_path, templates):
    """acid-303's cutoff swept once per loop: the brightness rises and falls over the loop, and a
    fixed cutoff gives a different loop."""
    patch = load_patch("acid-303")
    swept, sr = render_part(templates["synthwave"], "bass", patch)
    lines, skipping = [], False
    for line in patch.path.read_text().splitlines():  # the same patch without its [[faust.automation]]
        skipping = line == "[[faust.automation]]" or (skipping and not line.startswith("["))
        if not skipping:
            lines.append(line)
    fixed_path = tmp_path / "acid-303.toml"
    fixed_path.write_text("\n".join(lines) + "\n")
    (tmp_path / "acid-303.dsp").write_bytes(patch.faust.dsp.read_bytes())
    fixed, _ = render_part(templates["synthwave"], "bass", load_patch(fixed_path))
    assert not np.array_equal(swept, fixed)
    from farm.qa import spectral_centroid_hz

    quarter = swept.shape[1] // 4
    centroids = [spectral_centroid_hz(swept[:, i * quarter:(i + 1) * quarter], sr) for i in range(4)]
    assert max(centroids[1:3]) > 1.3 * min(centroids[0], centroids[3])  # the sine sweep peaks mid-loop


# -- deterministic -----------------------------------------------------------------------------------
def test_same_bytes_in_a_fresh_process(templates):
    names = ["acid-303", "kit-909", "analog-pad"]
    here = {n: hashlib.sha256(render_part(templates["deep-house"], part_of(load_patch(n)), n)[0].tobytes()).hexdigest()
            for n in names}
    code = ("import hashlib, sys; from farm.render.run import render_part; from farm.patches import load_patch; "
            "parts = {'bass': 'bass', 'drums': 'drums', 'pad': 'chords'}; "
            "[print(hashlib.sha256(render_part(sys.argv[1], parts[load_patch(n).roles[0]], n)[0].tobytes()).hexdigest()) "
            "for n in sys.argv[2:]]")
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code, str(templates["deep-house"]), *reversed(names)],
                             capture_output=True, text=True, check=True, timeout=300).stdout.split()
        assert out == [here[n] for n in reversed(names)]


# -- bad input ---------------------------------------------------------------------------------------
def _faust_patch(tmp_path: Path, dsp_text: str, extra: str = "") -> Path:
    (tmp_path / "mine.dsp").write_text(dsp_text)
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nroles = ["keys"]\ntarget_lufs = -16.0\n\n[faust]\ndsp = "mine.dsp"\n' + extra)
    return path


GOOD_DSP = (ROOT / "patches" / "fm-pluck.dsp").read_text()


@pytest.mark.parametrize("edit, extra, where, says", [
    (lambda s: s.replace("index * expenv(snap)", "index * expenv(snap"), "", "mine.dsp:19: faust", "syntax error"),
    (lambda s: s.replace("os.lf_sawpos(freq)", "os.no_such_osc(freq)"), "", "mine.dsp:20: faust", "no_such_osc"),
    (lambda s: s, "[faust.params]\ncutof = 300.0\n", "mine.toml: faust.params.cutof",
     "unknown parameter of mine.dsp 'cutof'"),
    (lambda s: s, "[faust.params]\nindex = 300.0\n", "mine.toml: faust.params.index", "out of the slider's range 0..10"),
    (lambda s: s, "[[faust.automation]]\nparam = \"snap\"\nfrom = 0.01\nto = 9.0\n", "mine.toml: faust.automation[0].to",
     "out of the parameter's range"),
    (lambda s: s.replace('gate = button("gate");', "gate = 1;"), "", "mine.toml: faust.dsp",
     "not a polyphonic instrument"),
])
def test_a_mistake_in_a_faust_patch_is_one_line_exit_2_and_no_file(tmp_path, templates, edit, extra, where, says):
    patch = _faust_patch(tmp_path, edit(GOOD_DSP), extra)
    out = tmp_path / "out"
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(templates["synthwave"]), "--patch", str(patch),
                                           "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}/{where}") and says in lines[0], lines
    assert not out.exists()


def test_a_missing_dsp_file_names_the_field(tmp_path):
    patch = _faust_patch(tmp_path, GOOD_DSP)
    (tmp_path / "mine.dsp").unlink()
    with pytest.raises(FarmError) as err:
        load_patch(patch)
    assert err.value.field == "faust.dsp" and "Faust file not found" in err.value.message


def test_a_dsp_outside_the_patch_folder_is_refused(tmp_path):
    patch = _faust_patch(tmp_path, GOOD_DSP)
    patch.write_text(patch.read_text().replace('dsp = "mine.dsp"', 'dsp = "../mine.dsp"'))
    with pytest.raises(FarmError) as err:
        load_patch(patch)
    assert err.value.field == "faust.dsp"


def test_editing_the_dsp_changes_the_patch_hash(tmp_path):
    patch = _faust_patch(tmp_path, GOOD_DSP)
    before = load_patch(patch).content_hash
    (tmp_path / "mine.dsp").write_text(GOOD_DSP.replace('"index", 3,', '"index", 4,'))
    assert load_patch(patch).content_hash != before


@pytest.mark.parametrize("patch", FAUST, ids=faust_ids)
def test_every_parameter_a_patch_sets_reaches_the_instrument(templates, patch):
    """Each slider of the instrument, set to the far end of its range in the patch, changes the
    loop (one-voice instruments included, where a plain set_parameter never arrived)."""
    import dataclasses

    tdir = templates["deep-house"] if part_of(patch) == "drums" else templates["synthwave"]
    base, _ = render_part(tdir, part_of(patch), patch)
    swept = {a.param for a in patch.faust.automation}
    for i, slider in enumerate(s for s in patch.faust.sliders if s.label not in ("freq", "gain", "gate", *swept)):
        far = slider.hi if abs(slider.hi - slider.init) >= abs(slider.lo - slider.init) else slider.lo
        changed = dataclasses.replace(patch, faust=dataclasses.replace(patch.faust, params=((slider.label, far),)),
                                      digest=f"{patch.content_hash}-{i}")
        audio, _ = render_part(tdir, part_of(patch), changed)
        assert not np.array_equal(audio, base), slider.label
