"""Faust patches against SoundFont patches and the fluidsynth command line, in one run.

One 4-bar, 5-part template at 120 BPM (8 s per loop). Every shipped patch plays every part it
fits; each loop is timed three ways on a warm worker (compiled / loaded once, as in a night):

* ``synth``: the patch's instrument and pedalboard effects, tail included (``render_raw``);
* ``finished``: the loop as it is written: tail folded, DC blocked, loudness and true peak set;
* the ``fluidsynth`` command line on the same part MIDI and the default SoundFont, one process
  per loop, as a script would call it (the peer).

It also times the part of finishing no loop can skip (the fold, the DC blocker and one loudness
reading) to say how fast the Faust patches could be at best, were the true peak free.

Speed is "x real time per core": seconds of loop audio per CPU second of the process (the
command line's children counted for it). The compile (Faust: libfaust's LLVM JIT) and load
(SoundFont, plugin instance) costs are reported apart: a worker pays them once per patch. Run:

    .venv/bin/python benchmarks/bench_patches.py [--rounds 3] [--sample-rate 44100]
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render import child_cpu  # noqa: E402
from farm.audio import fold_tail, integrated_lufs, remove_dc  # noqa: E402
from farm.model import Meter, Template  # noqa: E402
from farm.patches import default_soundfont, scan_patches  # noqa: E402
from farm.render import RenderJob, finish_loop, get_backend  # noqa: E402
from farm.templates import find_rules, generate_template, load_rules, write_template  # noqa: E402


def cpu_of(fn, rounds: int) -> float:
    """Median CPU seconds of ``fn()`` over ``rounds`` runs in this process."""
    times = []
    for _ in range(rounds):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sample-rate", type=int, default=44100)
    args = ap.parse_args()
    sr = args.sample_rate
    work = Path(tempfile.mkdtemp(prefix="bench-patches-"))
    try:
        rules = dataclasses.replace(load_rules(find_rules("synthwave")), tempo=(120, 120), meters=(Meter(4, 4),))
        tdir = write_template(generate_template(rules, 11, bars=4), work / "templates")
        template = Template.load(tdir)
        loop_s = template.duration_s
        backend = get_backend("embedded")
        patches, skipped = scan_patches()
        rows = []  # (kind, patch, loops, load s, synth cpu, finished cpu)
        for patch in patches:
            jobs = [RenderJob(template, tdir, part.name, patch, sr) for part in template.parts if patch.fits(part.name)]
            if not jobs:
                continue
            c0 = time.process_time()
            backend.render_raw(jobs[:1])  # compile / load once, as a worker does
            load = time.process_time() - c0
            synth = cpu_of(lambda: backend.render_raw(jobs), args.rounds)
            finished = cpu_of(lambda: [finish_loop(j, r, backend.name, backend.version)
                                       for j, r in zip(jobs, backend.render_raw(jobs))], args.rounds)
            # what finishing cannot do without: fold, DC blocker and one loudness reading (true peak free)
            raws = backend.render_raw(jobs)
            least = cpu_of(lambda: [integrated_lufs(remove_dc(fold_tail(r, j.loop_samples), sr), sr)
                                    for j, r in zip(jobs, raws)], args.rounds)
            rows.append((patch.kind, patch.name, len(jobs), max(0.0, load - synth / len(jobs)), synth, finished, least))

        cli = shutil.which("fluidsynth")
        cli_cpu = None
        if cli:
            sf2 = str(default_soundfont())
            midis = [tdir / part.midi for part in template.parts]

            def run_cli():
                for midi in midis:
                    subprocess.run([cli, "-ni", "-F", str(work / "cli.wav"), "-r", str(sr), sf2, str(midi)],
                                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            times = []
            for _ in range(args.rounds):
                c0 = child_cpu()
                run_cli()
                times.append(child_cpu() - c0)
            cli_cpu = statistics.median(times) / len(midis)

        print(f"template: {template.style} {template.key.short} {template.bpm:g} BPM {template.meter}, "
              f"{template.bars} bars = {loop_s:g} s per loop; {sr} Hz; median of {args.rounds} rounds")
        print(f"backend {backend.version}\n")
        print(f"{'patch':18s} {'kind':9s} {'loops':>5s} {'load s':>7s} {'synth x':>8s} {'finished x':>10s}")
        for kind, name, n, load, synth, finished, _ in sorted(rows):
            print(f"{name:18s} {kind:9s} {n:5d} {load:7.2f} {n * loop_s / synth:8.1f} {n * loop_s / finished:10.1f}")
        print(f"\n{'by kind (all their loops)':28s} {'loops':>5s} {'synth x/core':>13s} {'finished x/core':>16s}")
        summary = {}
        for kind in ("faust", "soundfont", "plugin"):
            mine = [r for r in rows if r[0] == kind]
            if not mine:
                continue
            n = sum(r[2] for r in mine)
            synth, finished = sum(r[4] for r in mine), sum(r[5] for r in mine)
            summary[kind] = n * loop_s / finished
            print(f"{kind + ' patches':28s} {n:5d} {n * loop_s / synth:13.1f} {n * loop_s / finished:16.1f}")
        if cli_cpu:
            print(f"{'fluidsynth CLI (raw, no finishing)':28s} {len(template.parts):5d} {loop_s / cli_cpu:13.1f} {'-':>16s}")
            for kind, speed in summary.items():
                print(f"finished {kind} loops run at {speed / (loop_s / cli_cpu):.1f}x the speed of the fluidsynth CLI")
        else:
            print("fluidsynth command line not found: apt-get install fluidsynth")
        if "faust" in summary:
            verdict = "meets" if summary["faust"] >= 100 else "misses"
            print(f"Faust patches, finished: {summary['faust']:.0f}x real time per core ({verdict} the 100x target)")
            mine = [r for r in rows if r[0] == "faust"]
            n, synth, least = sum(r[2] for r in mine), sum(r[4] for r in mine), sum(r[6] for r in mine)
            print(f"Faust patches at best: {n * loop_s / (synth + least):.0f}x, if finishing cost only its fold, "
                  f"DC blocker and one loudness reading ({1000 * least / n:.1f} ms a loop) and the true peak nothing")
        for err in skipped:
            print(f"not measured: {err.line()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
