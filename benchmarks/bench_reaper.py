"""REAPER backend: orchestration cost per loop, and how many loops per project amortise start-up.

    .venv/bin/python benchmarks/bench_reaper.py [--loops 32]

REAPER is not installed here, so REAPER's own time is an assumed figure, and everything the farm
does around it is measured with the stand-in executable (``tests/standin/reaper``):

* assumed REAPER time (reference notes, "REAPER, unattended": one report measured ~7-8 s fixed
  cost per ``reaper -renderproject`` invocation and ~0.15 s per extra region): start-up 7.5 s,
  0.15 s per region, so ``(7.5 + 0.15 * (k - 1)) / k`` seconds per loop with ``k`` loops per project;
* measured orchestration: writing the chunk projects (plan, the parts' MIDI read into in-project
  events, RPP text, atomic write), starting,
  waiting for and clearing one process group per project (``run_reaper`` on ``/bin/true``:
  fork/exec/killpg, no REAPER work), and reading + checking every rendered WAV (exact length,
  not silent);
* measured end to end: ``render_raw`` against the stand-in, minus the time spent inside the
  stand-in processes (what REAPER would spend): everything the farm adds, for 1 loop per project
  and for all loops in one project;
* peer measured in the same run: the embedded renderer (FluidSynth + pedalboard) on the same loops.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm.model import Template  # noqa: E402
from farm.patches import load_patch  # noqa: E402
from farm.render import RenderJob, get_backend  # noqa: E402
from farm.render.reaper import check_render  # noqa: E402
from farm.render.reaper_process import run_reaper  # noqa: E402
from farm.rpp import plan_projects, write_project  # noqa: E402
from farm.templates import find_rules, generate_template, load_rules, write_template  # noqa: E402

STANDIN = ROOT / "tests" / "standin" / "reaper"
STARTUP_S, PER_REGION_S = 7.5, 0.15  # assumed REAPER figures (see the docstring)
PATCH_FOR_PART = {"chords": "dry-piano-chords", "bass": "sub-bass", "drums": "lofi-kit",
                  "melody": "flute-lead", "arp": "pluck-arp"}


def make_jobs(n: int, directory: Path) -> list[RenderJob]:
    rules = load_rules(find_rules("lofi-hiphop"))
    jobs, seed = [], 1
    while len(jobs) < n:
        path = write_template(generate_template(rules, seed, bars=4), directory)
        template = Template.load(path)
        for part in template.parts:
            if part.name in PATCH_FOR_PART and len(jobs) < n:
                jobs.append(RenderJob(template, path, part.name, load_patch(PATCH_FOR_PART[part.name]), 44100))
        seed += 1
    return jobs


def reaper_s_per_loop(k: int) -> float:
    return (STARTUP_S + PER_REGION_S * (k - 1)) / k


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=64)
    args = ap.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    work = Path(tempfile.mkdtemp(prefix="bench-reaper-"))
    jobs = make_jobs(args.loops, work / "templates")
    n = len(jobs)
    mean_loop_s = statistics.mean(j.template.duration_s for j in jobs)

    # 1. project writing, per loop, for several chunk sizes
    sizes = sorted({k for k in (1, 4, 8, 16, 32, 64) if k <= n} | {n})
    write_s = {}
    for k in sizes:
        def write(k=k):
            for plan in plan_projects(jobs, work / f"rpp{k}", loops_per_project=k):
                write_project(plan)
        write_s[k] = best_of(write) / n

    # 2. process management: one process group started, awaited and cleared per project
    runs = [run_reaper(["/bin/true"], timeout_s=10, log=work / "true.log").seconds for _ in range(20)]
    process_s = statistics.median(runs)

    # 3. reading and checking the rendered files
    os.environ.update(FARM_STANDIN_SLEEP="0", FARM_STANDIN_PER_REGION="0")
    backend = get_backend("reaper", reaper=STANDIN, xvfb=False, workdir=work / "check", progress=False,
                          loops_per_project=n, keep_files=True)
    backend.render_raw(jobs)
    [plan] = plan_projects(jobs, work / "check" / "projects", loops_per_project=n)
    files = plan.expected_files()
    regions = {r.job_index: r for r in plan.regions}

    def check_all():
        for i, path in files.items():
            audio, why = check_render(path, regions[i].samples, 44100)
            assert why is None, why
    check_s = best_of(check_all) / n

    # 4. end to end: render_raw's wall time minus the time inside the stand-in processes
    import farm.render.reaper as reaper_module

    inside: list[float] = []

    def timed_run(*a, **kw):
        result = run_reaper(*a, **kw)
        inside.append(result.seconds)
        return result

    reaper_module.run_reaper = timed_run
    e2e = {}
    for k in (1, n):
        inside.clear()
        engine = get_backend("reaper", reaper=STANDIN, xvfb=False, workdir=work / f"e2e{k}", progress=False,
                             loops_per_project=k)
        start = time.perf_counter()
        engine.render_raw(jobs)
        wall = time.perf_counter() - start
        e2e[k] = {"wall_s_per_loop": wall / n, "inside_s_per_loop": sum(inside) / n,
                  "orchestration_s_per_loop": (wall - sum(inside)) / n}
        engine.close()

    # 5. peer: the embedded renderer on the same loops
    embedded = get_backend("embedded")
    embedded.render_raw(jobs[:1])  # warm: SoundFont loaded
    start = time.perf_counter()
    embedded.render_raw(jobs)
    embedded_s = (time.perf_counter() - start) / n

    print(f"{n} loops, 4 bars each (mean {mean_loop_s:.1f} s of audio), 44.1 kHz; assumed REAPER: "
          f"{STARTUP_S} s start-up + {PER_REGION_S} s per extra region")
    print()
    print(f"{'loops/project':>13} {'REAPER s/loop':>14} {'write ms':>9} {'process ms':>11} {'check ms':>9} "
          f"{'orchestration':>14} {'share of REAPER':>16}")
    rows = []
    for k in sizes:
        w = write_s[k]
        orch = w + process_s / k + check_s
        share = orch / reaper_s_per_loop(k)
        rows.append({"loops_per_project": k, "reaper_s_per_loop": reaper_s_per_loop(k), "write_s": w,
                     "process_s_per_loop": process_s / k, "check_s": check_s, "orchestration_s": orch,
                     "share": share})
        print(f"{k:>13} {reaper_s_per_loop(k):>14.3f} {w * 1e3:>9.2f} {process_s / k * 1e3:>11.2f} "
              f"{check_s * 1e3:>9.2f} {orch * 1e3:>11.2f} ms {share:>15.2%}")
    print()
    amortised = next(k for k in range(1, 10_000) if STARTUP_S / k <= PER_REGION_S)
    print(f"start-up per loop falls to the per-region cost at {amortised} loops per project "
          f"(7.5 s / k <= 0.15 s); 64 loops/project: {reaper_s_per_loop(64):.3f} s/loop, "
          f"{reaper_s_per_loop(1) / reaper_s_per_loop(64):.1f}x the throughput of one loop per project")
    for k in (1, n):
        o = e2e[k]["orchestration_s_per_loop"]
        print(f"end to end, {k:>3} loop(s)/project: {o * 1e3:.1f} ms/loop outside the stand-in processes "
              f"(wall {e2e[k]['wall_s_per_loop'] * 1e3:.0f} ms/loop) = {o / reaper_s_per_loop(k):.2%} of the "
              f"assumed REAPER time")
    print(f"peer, same run: embedded renderer {embedded_s * 1e3:.0f} ms/loop; end-to-end orchestration at "
          f"{n} loops/project is {e2e[n]['orchestration_s_per_loop'] / embedded_s:.1%} of that")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_reaper.json").write_text(json.dumps({
        "loops": n, "startup_s": STARTUP_S, "per_region_s": PER_REGION_S, "rows": rows,
        "amortised_at": amortised, "end_to_end": {str(k): v for k, v in e2e.items()},
        "embedded_s_per_loop": embedded_s}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
