"""The night that aims at a million loops: a measured sample of `benchmarks/million.toml`, its
memory over the night, and what the whole night would take.

    .venv/bin/python benchmarks/bench_million.py                   # samples of 4 and 35 templates per style
    .venv/bin/python benchmarks/bench_million.py --templates 10 --small 2

Each sample is a real `farm batch` (-j 2) of the config with ``templates_per_style`` cut down and
its root in a temporary folder: renders through SoundFont patches, then every vamp and grammar-
valid re-cut of each render. Measured: CPU (the batch and its workers), wall time, loops
catalogued, bytes on disk (audio, sidecars, templates, catalog), and the resident memory of the
writer and of each worker every half second. Two sizes show whether memory grows with the
count: the peak of each process at either size, and the writer's memory at each quarter of the
big night. The projection is from the big sample: loops per CPU second times 2 cores x 8 hours.
Results: benchmarks/results/bench_million.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
RESULTS = HERE / "results"
NIGHT_S = 8 * 3600
CORES = 2


def loops_in(root: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM loops").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "logs" not in p.parts)


def run_sample(root: Path, templates: int) -> dict:
    text = (HERE / "million.toml").read_text()
    text = re.sub(r'(?m)^root = .*$', f'root = "{root}"', text)
    text = re.sub(r'(?m)^templates_per_style = .*$', f'templates_per_style = {templates}', text)
    config = root.parent / f"{root.name}.toml"
    config.write_text(text)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    batch = subprocess.Popen([sys.executable, "-c", "from farm.cli import main; main()", "batch", "--config",
                              str(config), "--no-progress"], cwd=PROJECT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    writer = psutil.Process(batch.pid)
    peaks: dict[int, int] = {}
    timeline = []  # (seconds, loops catalogued, writer RSS, largest worker RSS)
    while batch.poll() is None:
        try:
            rss = writer.memory_info().rss
            workers = [c.memory_info().rss for c in writer.children(recursive=True)]
        except psutil.Error:
            break
        if rss == 0:  # the writer has exited and not been reaped yet: nothing to measure
            break
        peaks[batch.pid] = max(peaks.get(batch.pid, 0), rss)
        for child in writer.children(recursive=True):
            with_rss = child.memory_info().rss if child.is_running() else 0
            peaks[child.pid] = max(peaks.get(child.pid, 0), with_rss)
        timeline.append((round(time.perf_counter() - t0, 1), loops_in(root), rss, max(workers, default=0)))
        time.sleep(0.5)
    err = batch.stderr.read()
    if batch.wait() != 0:
        raise SystemExit(f"farm batch failed:\n{err}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True)
    kinds = dict(conn.execute("SELECT operation, count(*) FROM loops GROUP BY 1").fetchall())
    rejected = conn.execute("SELECT count(*) FROM loops WHERE status = 'rejected'").fetchone()[0]
    conn.close()
    loops = sum(kinds.values())
    size = disk_bytes(root)
    worker_peaks = [v for pid, v in peaks.items() if pid != batch.pid]
    quarters = []
    for q in (0.25, 0.5, 0.75, 1.0):
        seen = [t for t in timeline if t[1] >= q * loops] or timeline[-1:]  # the end: the last sample
        quarters.append(round(seen[0][2] / 2**20, 1) if seen else None)
    return {"templates_per_style": templates, "loops": loops, "by_operation": kinds, "rejected": rejected,
            "cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "loops_per_cpu_s": round(loops / cpu, 2),
            "ms_cpu_per_loop": round(1000 * cpu / loops, 1), "loops_per_min": round(loops / wall * 60, 1),
            "disk_bytes": size, "bytes_per_loop": round(size / loops),
            "writer_peak_mib": round(peaks.get(batch.pid, 0) / 2**20, 1),
            "worker_peak_mib": round(max(worker_peaks, default=0) / 2**20, 1),
            "writer_mib_at_quarters": quarters,
            "timeline": timeline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--templates", type=int, default=35, help="templates per style of the big sample")
    ap.add_argument("--small", type=int, default=4, help="templates per style of the small sample")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, templates in (("small", args.small), ("big", args.templates)):
            r = run_sample(Path(tmp) / name, templates)
            out[name] = r
            print(f"{name}: {r['loops']} loops ({', '.join(f'{k} {v}' for k, v in r['by_operation'].items())}; "
                  f"{r['rejected']} rejected by the checks) in {r['wall_s']} s, {r['cpu_s']} CPU s = "
                  f"{r['loops_per_cpu_s']} loops per CPU second ({r['ms_cpu_per_loop']} ms each), "
                  f"{r['bytes_per_loop'] / 1e6:.2f} MB per loop on disk; peak memory: writer "
                  f"{r['writer_peak_mib']} MiB, largest worker {r['worker_peak_mib']} MiB; writer at each "
                  f"quarter of the night: {r['writer_mib_at_quarters']} MiB", flush=True)
    big = out["big"]
    per_night = big["loops_per_cpu_s"] * CORES * NIGHT_S
    by_wall = big["loops_per_min"] * 60 * 8
    out["projection"] = {"loops_in_8h_by_cpu": round(per_night), "loops_in_8h_by_wall": round(by_wall),
                         "disk_for_a_million_tb": round(big["bytes_per_loop"] * 1e6 / 1e12, 2),
                         "ms_cpu_per_loop_needed": round(1000 * CORES * NIGHT_S / 1e6, 1),
                         "reaches_a_million": per_night >= 1e6}
    p = out["projection"]
    print(f"8 hours on {CORES} cores: {p['loops_in_8h_by_cpu']:,} loops by CPU ({p['loops_in_8h_by_wall']:,} at "
          f"the sample's wall-clock rate); a million needs {p['ms_cpu_per_loop_needed']} CPU ms per loop, the "
          f"sample took {big['ms_cpu_per_loop']}: {'reached' if p['reaches_a_million'] else 'NOT reached'}. "
          f"A million loops take {p['disk_for_a_million_tb']} TB of disk.")
    for name in ("small", "big"):
        out[name]["timeline"] = out[name]["timeline"][:: max(1, len(out[name]["timeline"]) // 200)]
    (RESULTS / "bench_million.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'bench_million.json'}")


if __name__ == "__main__":
    main()
