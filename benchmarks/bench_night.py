"""A default night's CPU: where each catalogued loop's CPU goes, and this code against an earlier
commit, in one run.

    .venv/bin/python benchmarks/bench_night.py                      # profile table + baseline ratios
    .venv/bin/python benchmarks/bench_night.py --baseline 7329f85 --rounds 2
    .venv/bin/python benchmarks/bench_night.py --no-baseline        # the profile table only
    .venv/bin/python benchmarks/bench_night.py --config benchmarks/million.toml --templates 2

Every run is a real `farm batch` of `farm/nightly.toml` (its root moved into a temporary folder)
in a fresh process: templates, renders, permutations, checks, FLAC, sidecars, catalog. CPU is
the batch's and its workers' (``RUSAGE_CHILDREN``) over the loops it catalogued.

- **Profile**: one -j 2 night with `benchmarks/night_profiler.py` loaded as a batch plugin: each
  timed function's own CPU, split by the kind of task (render by patch kind, permutation by
  operation), in ms per loop of that kind; the writer's share is per loop of the night.
- **Baseline**: the same night by the code of ``--baseline`` (a commit, checked out into a
  temporary git worktree and run with the same Python), -j 1 and -j 2, rounds alternating so
  both see the same machine. Reports CPU per loop (old / new) and the -j 2 over -j 1 speed-up of
  each, and checks both nights catalogued the same loop ids with the same audio sha256.
Results: benchmarks/results/bench_night.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
RESULTS = HERE / "results"
BASELINE = "7329f85"  # main before the speed work of issue 15


def night_config(code: Path, root: Path, plugins: list[str], config: Path | None = None,
                 templates: int | None = None) -> Path:
    """``farm/nightly.toml`` of ``code`` (or ``config``) with its root moved to ``root``, ``plugins``
    set (and ``templates_per_style`` when given)."""
    text = (config or code / "farm" / "nightly.toml").read_text()
    text = re.sub(r'(?m)^root = .*$', f'root = "{root}"', text)
    text = re.sub(r'(?m)^plugins = .*\n', '', text)
    text = f"plugins = {json.dumps(plugins)}\n" + text
    if templates is not None:
        text = re.sub(r'(?m)^templates_per_style = .*$', f'templates_per_style = {templates}', text)
    path = root.parent / f"{root.name}.toml"
    path.write_text(text)
    return path


def run_night(code: Path, root: Path, workers: int, profile_dir: Path | None = None, config: Path | None = None,
              templates: int | None = None) -> dict:
    """One `farm batch` by the code in ``code``; its CPU, wall time and catalogued loops."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), str(HERE)]))
    plugins = []
    if profile_dir is not None:
        env["FARM_NIGHT_PROFILE"] = str(profile_dir)
        plugins = ["night_profiler"]
    config = night_config(code, root, plugins, config, templates)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from farm.cli import main; main()", "batch", "--config", str(config),
                    "-j", str(workers), "--no-progress"], cwd=code, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True)
    loops = {i: (sha, patch) for i, sha, patch in conn.execute("SELECT id, sha256, patch FROM loops")}
    conn.close()
    return {"workers": workers, "loops": len(loops), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cpu_s_per_loop": round(cpu / len(loops), 4), "loops_per_min": round(len(loops) / wall * 60, 1),
            "_audio": loops}


def profile_table(profile_dir: Path, night: dict) -> dict:
    """The plugin's per-process JSON summed into ms per loop by category and kind."""
    own = collections.defaultdict(float)
    loops = collections.Counter()
    startup = writer_other = worker_other = 0.0
    for path in profile_dir.glob("*.json"):
        data = json.loads(path.read_text())
        timed = sum(s for _, _, s in data["own"])
        if data["role"] == "worker":
            startup += data["startup_s"]
            worker_other += data["cpu_s"] - data["startup_s"] - timed
            loops.update(data["loops"])
        else:
            writer_other += data["cpu_s"] - data["startup_s"] - timed
            own[("writer", "start-up and imports")] += data["startup_s"]
        for kind, category, seconds in data["own"]:
            own[("writer" if data["role"] == "writer" else kind, category)] += seconds
    total_loops = sum(loops.values())
    own[("writer", "other")] += writer_other
    kinds = sorted(loops)
    rows = collections.defaultdict(dict)
    for (kind, category), seconds in own.items():
        if kind in loops:
            rows[category][kind] = 1000 * seconds / loops[kind]
        else:  # the writer's, and worker time outside any task: shared by every loop
            rows[category]["shared"] = rows[category].get("shared", 0.0) + 1000 * seconds / total_loops
    rows["worker start-up (interpreter, imports, warm renderer)"]["shared"] = 1000 * startup / total_loops
    rows["worker other (untimed)"]["shared"] = 1000 * worker_other / total_loops
    accounted = sum(sum(v for k, v in row.items() if k == "shared") for row in rows.values()) + sum(
        sum(row.get(k, 0.0) for row in rows.values()) * loops[k] / total_loops for k in kinds)
    return {"kinds": {k: loops[k] for k in kinds}, "rows": rows, "loops": total_loops,
            "profiled_ms_per_loop": accounted, "measured_ms_per_loop": 1000 * night["cpu_s_per_loop"]}


def print_table(table: dict) -> None:
    kinds = list(table["kinds"])
    heads = ["where the CPU goes (ms per loop)"] + [f"{k} ({n})" for k, n in table["kinds"].items()] + ["shared"]
    widths = [max(44, len(heads[0]))] + [max(9, len(h)) for h in heads[1:]]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    order = sorted(table["rows"], key=lambda c: -sum(table["rows"][c].values()))
    for category in order:
        row = table["rows"][category]
        cells = [f"{row[k]:.1f}" if row.get(k) else "" for k in kinds + ["shared"]]
        print("| " + " | ".join(c.ljust(w) for c, w in zip([category] + cells, widths)) + " |")
    totals = [sum(table["rows"][c].get(k, 0.0) for c in order) for k in kinds]
    shared = sum(table["rows"][c].get("shared", 0.0) for c in order)
    print("| " + " | ".join(c.ljust(w) for c, w in zip(
        ["**total**"] + [f"**{t + shared:.1f}**" for t in totals] + [f"{shared:.1f}"], widths)) + " |")
    print(f"(each kind's total includes the shared column; the night averaged "
          f"{table['profiled_ms_per_loop']:.0f} ms per loop profiled, {table['measured_ms_per_loop']:.0f} ms "
          f"measured by the OS)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=BASELINE, help=f"commit to compare against (default {BASELINE})")
    ap.add_argument("--no-baseline", action="store_true", help="profile only")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--config", type=Path, help="profile this batch config instead of farm/nightly.toml "
                    "(e.g. benchmarks/million.toml); implies --no-baseline")
    ap.add_argument("--templates", type=int, help="templates_per_style for the profiled night")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        profile_dir = tmp / "profile"
        profile_dir.mkdir()
        config = args.config.resolve() if args.config else None
        night = run_night(PROJECT, tmp / "profiled", 2, profile_dir, config, args.templates)
        table = profile_table(profile_dir, night)
        print(f"profiled night, -j 2: {night['loops']} loops, {night['cpu_s']} CPU s, {night['wall_s']} s wall")
        print_table(table)
        out["profile"] = {"night": {k: v for k, v in night.items() if k != "_audio"}, **table}
        if not (args.no_baseline or args.config):
            base = tmp / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=PROJECT,
                           check=True, capture_output=True)
            try:
                runs = collections.defaultdict(list)
                for r in range(args.rounds):
                    for workers in (1, 2):
                        for name, code in (("baseline", base), ("new", PROJECT)):
                            result = run_night(code, tmp / f"{name}-{r}-{workers}", workers)
                            runs[(name, workers)].append(result)
                            print(f"{name:8} -j {workers}: {result['loops']} loops, {result['cpu_s_per_loop']:.3f} "
                                  f"CPU s per loop, {result['loops_per_min']} loops/min", flush=True)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=PROJECT, check=False)
            old_audio, new_audio = runs[("baseline", 1)][0]["_audio"], runs[("new", 1)][0]["_audio"]
            same = old_audio == new_audio
            # Loops only one night has (a patch file changed: its loops are new loops, with new ids).
            apart = {i: (old_audio.get(i) or new_audio.get(i))[1] for i in set(old_audio) ^ set(new_audio)}
            changed = [i for i in set(old_audio) & set(new_audio) if old_audio[i] != new_audio[i]]
            med = {f"{n}_j{w}": {"cpu_s_per_loop": statistics.median(x["cpu_s_per_loop"] for x in v),
                                 "loops_per_min": statistics.median(x["loops_per_min"] for x in v),
                                 "loops": v[0]["loops"]} for (n, w), v in runs.items()}
            cpu_ratio = med["baseline_j1"]["cpu_s_per_loop"] / med["new_j1"]["cpu_s_per_loop"]
            scale_new = med["new_j2"]["loops_per_min"] / med["new_j1"]["loops_per_min"]
            scale_old = med["baseline_j2"]["loops_per_min"] / med["baseline_j1"]["loops_per_min"]
            print(f"CPU per catalogued loop, -j 1: baseline {med['baseline_j1']['cpu_s_per_loop']:.3f} s, "
                  f"new {med['new_j1']['cpu_s_per_loop']:.3f} s: {cpu_ratio:.2f}x lower")
            print(f"-j 2 over -j 1, end to end: baseline {scale_old:.2f}x, new {scale_new:.2f}x")
            if same:
                print("same loop ids and audio sha256 as the baseline: yes")
            else:
                print(f"same loop ids and audio sha256 as the baseline: all but {len(apart)} loops that only one "
                      f"night has (patches {', '.join(sorted(set(apart.values())))}), and {len(changed)} loops "
                      f"with the same id and other audio")
            out["baseline"] = {"commit": args.baseline, "medians": med, "cpu_ratio": round(cpu_ratio, 2),
                               "scaling_new": round(scale_new, 2), "scaling_baseline": round(scale_old, 2),
                               "same_audio": same, "loops_in_one_night_only": len(apart),
                               "patches_of_those": sorted(set(apart.values())), "same_id_other_audio": len(changed),
                               "runs": {f"{n}_j{w}": [{k: v for k, v in x.items() if k != '_audio'} for x in xs]
                                        for (n, w), xs in runs.items()}}
    out["load_average_end"] = os.getloadavg()[0]
    name = "bench_night.json" if not args.config else f"bench_night-{args.config.stem}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
