"""Loops per minute on render nodes against the local pool, and what the cluster path costs.

    .venv/bin/python benchmarks/bench_cluster.py [--rounds 2]

The same night (2 styles x 2 templates, 4 bars, every part through 2 patches) runs as a real
`farm batch` on a fresh root: with the local pool (-j 1 and -j 2), then on a real `dask scheduler`
with one and with two `farm node` processes (one task at a time each) on this machine. Runs
alternate so all see the same load; medians. "Overhead per loop" is the one-node time per loop
minus the local -j 1 time per loop (shipping templates and patches out, loops back, sha256
checks, Dask's scheduling; warm nodes also save the local pool's worker start-up). "Writer CPU per
loop" is the CPU of the `farm batch` process and its children: on nodes that is the writer alone
(it checks and writes what arrives and inserts the rows: the one thing that does not grow with
nodes); with the local pool it includes the workers that render.
Results: benchmarks/results/bench_cluster.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
NIGHT = ('styles = ["lofi-hiphop", "synthwave"]\ntemplates_per_style = 2\nseed = 5\nbars = 4\nparts = "all"\n'
         'patches = "all"\npatches_per_part = 2\n')


def batch(config: Path, root: Path, *args: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "farm"), "batch", "--config", str(config), "--root", str(root), "--no-progress", *args],
                   check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    import sqlite3

    loops = sqlite3.connect(root / "catalog.db").execute("SELECT count(*) FROM loops").fetchone()[0]
    return {"wall_s": wall, "loops": loops, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


class Cluster:
    def __init__(self, tmp: Path, nodes: int):
        file = tmp / f"scheduler-{nodes}.json"
        self.procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                        "--no-dashboard", "--scheduler-file", str(file)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)]
        while not file.exists():
            time.sleep(0.1)
        time.sleep(0.3)
        self.address = json.loads(file.read_text())["address"]
        for i in range(nodes):
            self.procs.append(subprocess.Popen([str(BIN / "farm"), "node", self.address, "--name", f"n{i}"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True))
        from distributed import Client

        with Client(self.address) as client:
            client.wait_for_workers(nodes, timeout=60)
        time.sleep(2)  # the nodes' renderers warm

    def stop(self) -> None:
        for p in self.procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    runs: dict[str, list[dict]] = {k: [] for k in ("local -j 1", "local -j 2", "1 node", "2 nodes")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "night.toml"
        config.write_text(NIGHT)
        clusters = {n: Cluster(tmp, n) for n in (1, 2)}
        try:
            for r in range(args.rounds):
                for name, extra in (("local -j 1", ["-j", "1"]), ("local -j 2", ["-j", "2"]),
                                    ("1 node", ["--cluster", clusters[1].address]),
                                    ("2 nodes", ["--cluster", clusters[2].address])):
                    runs[name].append(batch(config, tmp / f"{name.replace(' ', '')}-{r}", *extra))
        finally:
            for c in clusters.values():
                c.stop()
    result = {}
    for name, rs in runs.items():
        loops = rs[0]["loops"]
        wall = statistics.median(r["wall_s"] for r in rs)
        result[name] = {"loops": loops, "wall_s": wall, "loops_per_min": loops / wall * 60,
                        "writer_cpu_s_per_loop": statistics.median(r["cpu_s"] for r in rs) / loops}
    one, local = result["1 node"], result["local -j 1"]
    result["overhead_s_per_loop"] = one["wall_s"] / one["loops"] - local["wall_s"] / local["loops"]
    result["two_over_one_node"] = result["2 nodes"]["loops_per_min"] / one["loops_per_min"]
    writer = result["2 nodes"]["writer_cpu_s_per_loop"]
    per_node = one["loops_per_min"]
    result["projection"] = {"nodes_until_writer_bound": (60 / writer) / per_node if writer > 0 else None,
                            "writer_loops_per_min": 60 / writer if writer > 0 else None}
    (RESULTS / "bench_cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{os.cpu_count()} cores; a night of {local['loops']} loops, median of {args.rounds}")
    for name in runs:
        r = result[name]
        print(f"  {name:<11} {r['loops_per_min']:6.0f} loops/min  ({r['wall_s']:.1f} s; writer CPU "
              f"{r['writer_cpu_s_per_loop'] * 1000:.0f} ms/loop)")
    print(f"  two nodes over one: {result['two_over_one_node']:.2f}x; cluster overhead "
          f"{result['overhead_s_per_loop'] * 1000:.0f} ms per loop against the local pool")
    p = result["projection"]
    if p["writer_loops_per_min"]:
        print(f"  on paper: the writer alone could take {p['writer_loops_per_min']:.0f} loops/min, "
              f"about {p['nodes_until_writer_bound']:.0f} nodes of this speed")


if __name__ == "__main__":
    main()
