"""Loops catalogued per minute by `farm batch`, end to end, with -j 1 and -j 2.

    .venv/bin/python benchmarks/bench_batch.py [--rounds 2] [--styles lofi-hiphop deep-house]

Each run is a real `farm batch` process on a fresh catalog root: templates generated, every loop
rendered by the embedded renderer in worker processes, checked, written (FLAC + sidecar) and
inserted by the writer; the clock includes process start-up and worker warm-up. Runs alternate
-j 1 / -j 2 so both see the same machine load; medians. The scaling ratio (-j 2 rate over -j 1
rate) is the figure to read; "cores busy" (CPU seconds of the batch and its workers over wall
time) shows how much of the machine the run actually got when others share it.
Results: benchmarks/results/bench_batch.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FARM = Path(sys.executable).parent / "farm"


def run(config: Path, root: Path, workers: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(FARM), "batch", "--config", str(config), "--root", str(root), "-j", str(workers),
                    "--no-progress"], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the batch and the workers it reaped
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True)
    loops = conn.execute("SELECT count(*) FROM loops").fetchone()[0]
    task_s = [r[0] for r in conn.execute("SELECT seconds FROM tasks WHERE status = 'done'")]
    # Steady state: from the first task handed to a warm worker to the last one finished.
    span = conn.execute("SELECT (julianday(max(finished_at)) - julianday(min(started_at))) * 86400 "
                        "FROM tasks").fetchone()[0]
    conn.close()
    return {"workers": workers, "loops": loops, "wall_s": wall, "cores_busy": cpu / wall,
            "cpu_s_per_loop": cpu / loops, "loops_per_min": loops / wall * 60,
            "steady_loops_per_min": loops / max(span, 1.0) * 60, "task_median_s": statistics.median(task_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--styles", nargs="+", default=["lofi-hiphop", "deep-house", "synthwave"])
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(f"styles = {json.dumps(args.styles)}\ntemplates_per_style = 1\nseed = 3\nbars = 4\n"
                          "patches_per_part = 2\n")
        runs = []
        for r in range(args.rounds):
            for workers in (1, 2):
                result = run(config, Path(tmp) / f"lib-{r}-{workers}", workers)
                runs.append(result)
                print(f"-j {workers}: {result['loops']} loops in {result['wall_s']:.1f} s = "
                      f"{result['loops_per_min']:.1f} loops/min end to end, {result['steady_loops_per_min']:.1f} "
                      f"once the workers are warm; {result['cores_busy']:.2f} cores busy, "
                      f"{result['cpu_s_per_loop']:.2f} CPU s per loop", flush=True)
    summary = {}
    for workers in (1, 2):
        mine = [r for r in runs if r["workers"] == workers]
        summary[f"j{workers}"] = {"loops": mine[0]["loops"],
                                  "wall_s": round(statistics.median(r["wall_s"] for r in mine), 2),
                                  "loops_per_min": round(statistics.median(r["loops_per_min"] for r in mine), 1),
                                  "steady_loops_per_min": round(statistics.median(r["steady_loops_per_min"]
                                                                                  for r in mine), 1),
                                  "task_median_s": round(statistics.median(r["task_median_s"] for r in mine), 3),
                                  "cores_busy": round(statistics.median(r["cores_busy"] for r in mine), 2),
                                  "cpu_s_per_loop": round(statistics.median(r["cpu_s_per_loop"] for r in mine), 3)}
    ratio = summary["j2"]["loops_per_min"] / summary["j1"]["loops_per_min"]
    summary["scaling_j2_over_j1"] = round(ratio, 2)
    steady = summary["j2"]["steady_loops_per_min"] / summary["j1"]["steady_loops_per_min"]
    summary["steady_scaling_j2_over_j1"] = round(steady, 2)
    summary["load_average_end"] = round(os.getloadavg()[0], 2)
    print(f"median: -j 1 {summary['j1']['loops_per_min']} loops/min, -j 2 {summary['j2']['loops_per_min']} "
          f"loops/min; scaling -j 2 / -j 1 = {ratio:.2f}x end to end, {steady:.2f}x once warm "
          f"(ideal 2.00x on 2 idle cores; load average {os.getloadavg()[0]:.2f} at the end)")
    out = RESULTS / "bench_batch.json"
    out.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
