"""Render speed of the embedded renderer against the fluidsynth command line, in one run.

A 4-bar, 5-part template at 120 BPM (8 s per loop) is rendered part by part:

* ``embedded synth``: ``EmbeddedBackend.render_raw`` -- MIDI through FluidSynth in-process and
  the patch's pedalboard chain, tail included (a warm worker: SoundFont already loaded);
* ``embedded finished``: ``render_loops`` -- the above plus tail folding, loudness
  normalisation and true-peak limiting, i.e. the loop as it is written;
* ``+ FLAC``: the finished loop written as FLAC 24-bit;
* ``fluidsynth CLI``: ``fluidsynth -ni -F out.wav -r 44100 SF2 MIDI`` on the same part MIDI file
  and the same SoundFont, one process per loop (how a script would call it).

The two measurements a finished loop needs are also timed against their references on the
finished loops: integrated loudness (``farm.audio.integrated_lufs`` against pyloudnorm's meter)
and true peak (the screened ``true_peak_dbtp`` against computing every 4x oversampled point).

Speed is "x real time per core": seconds of loop audio per CPU second of the process (children
included for the command line), so other work on the machine barely moves it. Run:

    .venv/bin/python benchmarks/bench_render.py [--rounds 5] [--sample-rate 44100] [--mix]

``--mix`` adds a night's mix: one template per style (seed 7, the rule sets' own tempos, meters
and lengths) through every shipped patch that fits each part, finished loops against the command
line on the same MIDI. Loops there are shorter (2-4 bars at 70-128 BPM) while patch tails stay
0.8-6 s, so more of the work is tail, and pads with FluidSynth's own reverb and chorus are in it.
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.audio import integrated_lufs, oversampled_peak, true_peak_dbtp, write_audio  # noqa: E402
from farm.model import Meter, Template  # noqa: E402
from farm.patches import load_patch  # noqa: E402
from farm.render import RenderJob, get_backend, render_loops  # noqa: E402
from farm.templates import find_rules, generate_template, load_rules, write_template  # noqa: E402

PATCH_FOR_PART = {"chords": "warm-rhodes", "bass": "sub-bass", "arp": "glass-arp", "melody": "saw-lead",
                  "drums": "lofi-kit"}


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(fn, rounds: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``fn()`` over ``rounds`` runs of this process."""
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--mix", action="store_true", help="also measure a night's mix of templates and patches")
    args = ap.parse_args()
    fluidsynth_cli = shutil.which("fluidsynth")
    work = Path(tempfile.mkdtemp(prefix="bench-render-"))
    try:
        rules = load_rules(find_rules("synthwave"))
        rules = dataclasses.replace(rules, tempo=(120, 120), meters=(Meter(4, 4),))
        tdir = write_template(generate_template(rules, 11, bars=4), work / "templates")
        template = Template.load(tdir)
        assert template.bars == 4 and template.bpm == 120 and len(template.parts) == 5
        jobs = [RenderJob(template, tdir, part.name, load_patch(PATCH_FOR_PART[part.name]), args.sample_rate)
                for part in template.parts]
        loop_s = template.duration_s
        audio_s = loop_s * len(jobs)

        backend = get_backend("embedded")
        c0, w0 = time.process_time(), time.perf_counter()
        backend.render_raw(jobs[:1])  # loads the SoundFont: the once-per-worker cost
        cold_cpu, cold_wall = time.process_time() - c0, time.perf_counter() - w0

        rows = []
        synth_cpu, synth_wall = measure(lambda: backend.render_raw(jobs), args.rounds)
        rows.append(("embedded synth (MIDI -> FluidSynth -> pedalboard)", synth_cpu, synth_wall))
        fin_cpu, fin_wall = measure(lambda: render_loops(jobs, backend), args.rounds)
        rows.append(("embedded finished loop (+ fold, loudness, true peak)", fin_cpu, fin_wall))

        def finished_and_written():
            for loop in render_loops(jobs, backend):
                write_audio(work / "out" / f"{loop.job.part}.flac", loop.audio, loop.sample_rate)

        flac_cpu, flac_wall = measure(finished_and_written, args.rounds)
        rows.append(("embedded finished loop + FLAC 24-bit", flac_cpu, flac_wall))

        import numpy as np
        import pyloudnorm

        finished = [(loop.audio, loop.sample_rate) for loop in render_loops(jobs, backend)]
        meters = {sr: pyloudnorm.Meter(sr) for _, sr in finished}
        checks = [
            ("integrated loudness: farm.audio.integrated_lufs",
             lambda: [integrated_lufs(a, sr) for a, sr in finished]),
            ("integrated loudness: pyloudnorm Meter (reference)",
             lambda: [meters[sr].integrated_loudness(a.T.astype(np.float64)) for a, sr in finished]),
            ("true peak 4x: farm.audio.true_peak_dbtp (screened)",
             lambda: [true_peak_dbtp(a) for a, _ in finished]),
            ("true peak 4x: every oversampled point (reference)",
             lambda: [20 * np.log10(oversampled_peak(a, floor=0.0).max()) for a, _ in finished]),
        ]
        measured = [(name, *measure(fn, args.rounds), fn()) for name, fn in checks]

        cli_row = None
        if fluidsynth_cli:
            sf2 = str(jobs[0].patch.embedded.soundfont)

            def cli():
                for job in jobs:
                    subprocess.run([fluidsynth_cli, "-ni", "-F", str(work / f"{job.part}.wav"),
                                    "-r", str(args.sample_rate), sf2, str(job.midi_path)],
                                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            cpu, wall = [], []
            for _ in range(args.rounds):
                c0, w0 = child_cpu(), time.perf_counter()
                cli()
                cpu.append(child_cpu() - c0)
                wall.append(time.perf_counter() - w0)
            cli_row = ("fluidsynth CLI (-ni -F, one process per loop)", statistics.median(cpu),
                       statistics.median(wall))
            rows.append(cli_row)

        print(f"template: {template.style} {template.key.short} {template.bpm:g} BPM {template.meter}, "
              f"{template.bars} bars = {loop_s:g} s per loop, parts {', '.join(j.part for j in jobs)}")
        print(f"patches:  {', '.join(f'{j.part}={j.patch.name}' for j in jobs)}")
        print(f"SoundFont {jobs[0].patch.embedded.soundfont.name}, {args.sample_rate} Hz, "
              f"median of {args.rounds} rounds; backend {backend.version}")
        print(f"worker start (SoundFont load + first loop): {cold_cpu:.2f} s CPU, {cold_wall:.2f} s wall\n")
        print(f"{'':56s} {'CPU s/loop':>10s} {'wall s/loop':>11s} {'x real time/core':>17s}")
        for name, cpu, wall in rows:
            print(f"{name:56s} {cpu / len(jobs):10.4f} {wall / len(jobs):11.4f} {audio_s / cpu:17.1f}")
        if cli_row:
            print(f"\nper loop, the fluidsynth CLI takes {cli_row[1] / synth_cpu:.1f}x the CPU of embedded synthesis, "
                  f"{cli_row[1] / fin_cpu:.1f}x that of a finished embedded loop, "
                  f"{cli_row[1] / flac_cpu:.1f}x with the FLAC written "
                  f"(wall: {cli_row[2] / synth_wall:.1f}x, {cli_row[2] / fin_wall:.1f}x, {cli_row[2] / flac_wall:.1f}x)")
        else:
            print("\nfluidsynth command line not found: apt-get install fluidsynth")
        print(f"\nmeasuring a finished loop{'':31s} {'CPU ms/loop':>11s}")
        for name, cpu, _wall, _values in measured:
            print(f"{name:56s} {cpu / len(jobs) * 1000:11.1f}")
        lufs_gap = max(abs(a - b) for a, b in zip(measured[0][3], measured[1][3]))
        peak_gap = max(abs(a - b) for a, b in zip(measured[2][3], measured[3][3]))
        print(f"loudness {measured[1][1] / measured[0][1]:.1f}x faster than pyloudnorm (largest difference "
              f"{lufs_gap:.1e} LU); true peak {measured[3][1] / measured[2][1]:.1f}x faster than computing "
              f"every point (largest difference {peak_gap:.1e} dB)")
        if args.mix:
            night_mix(work, args.sample_rate, backend, fluidsynth_cli)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def night_mix(work: Path, sample_rate: int, backend, fluidsynth_cli: str | None) -> None:
    """Every style's seed-7 template through every fitting patch: finished loops vs the CLI."""
    from farm.patches import list_patches
    from farm.templates import list_styles

    jobs = []
    for rules in list_styles():
        tdir = write_template(generate_template(rules, 7), work / "mix")
        template = Template.load(tdir)
        jobs += [RenderJob(template, tdir, part.name, patch, sample_rate)
                 for patch in list_patches() if patch.kind == "soundfont"  # the peer plays SoundFonts only
                 for part in template.parts if patch.fits(part.name)]
    loop_s = sum(job.template.duration_s for job in jobs)
    tail_s = sum(job.patch.tail_s for job in jobs)
    c0 = time.process_time()
    for job in jobs:
        render_loops([job], backend)
    embedded_cpu = time.process_time() - c0
    print(f"\nnight's mix: {len(jobs)} loops ({loop_s:.0f} s of loops, {tail_s:.0f} s of tails rendered past "
          f"them) from {len({j.template.id for j in jobs})} templates and {len({j.patch.name for j in jobs})} patches")
    print(f"embedded finished loops{'':32s} {embedded_cpu:8.1f} CPU s {loop_s / embedded_cpu:8.1f}x real time/core")
    if fluidsynth_cli:
        c0 = child_cpu()
        for job in jobs:
            subprocess.run([fluidsynth_cli, "-ni", "-F", str(work / "mix.wav"), "-r", str(sample_rate),
                            str(job.patch.embedded.soundfont), str(job.midi_path)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli_cpu = child_cpu() - c0
        print(f"fluidsynth CLI (-ni -F, one process per loop){'':10s} {cli_cpu:8.1f} CPU s "
              f"{loop_s / cli_cpu:8.1f}x real time/core")
        print(f"the fluidsynth CLI takes {cli_cpu / embedded_cpu:.1f}x the CPU of finished embedded loops")


if __name__ == "__main__":
    main()
