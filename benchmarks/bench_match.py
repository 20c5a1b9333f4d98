"""`farm match` over a catalog of 100,000 loops, and `farm kit` build time.

    .venv/bin/python benchmarks/bench_match.py [--loops 100000] [--queries 200]

A real default night is rendered (`farm batch`, fingerprints made with every loop); its rows are
then copied into a catalog of ``--loops`` loops, each copy with its own id and file name, moved
to another tempo (up to 30 BPM either way) and key (its chords and bass moved with it), the
fingerprints kept. Fingerprints are precomputed, as in any catalog since they exist.

Timed in one process (the catalog opened once, as the review room does): ``find_matches`` for
``--queries`` loops picked at random, p50 and p95 in ms; against it, in the same run, the naive
way (every loop's fingerprint read and scored) on a few queries. `farm match` as a command
(``--cli-runs`` queries, a new process each, bytecode cached as in an installed Loop Farm) adds
the start of a Python process and its imports. Kits: `farm kit --seed N` on copies of the night, seconds
each (permutations it needs made and catalogued).
Results: benchmarks/results/bench_match.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FARM = Path(sys.executable).parent / "farm"
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def night(root: Path) -> None:
    subprocess.run([str(FARM), "batch", "--root", str(root), "--no-progress"], check=True, capture_output=True,
                   cwd=root.parent)


def grow(root: Path, total: int, seed: int = 1) -> int:
    """Copy the night's loops (and their chord rows) until the catalog holds ``total`` loops."""
    rng = random.Random(seed)
    conn = sqlite3.connect(root / "catalog.db")
    conn.row_factory = sqlite3.Row
    loops = [dict(r) for r in conn.execute("SELECT * FROM loops")]
    chords = {}
    for r in conn.execute("SELECT * FROM chords"):
        chords.setdefault(r["loop_id"], []).append(dict(r))
    columns = list(loops[0])
    n, copy = len(loops), 0
    with conn:
        while n < total:
            copy += 1
            batch_loops, batch_chords = [], []
            for row in loops:
                if n >= total:
                    break
                shift, bpm = rng.randrange(12), max(40.0, row["bpm"] + rng.randint(-30, 30))
                new = dict(row, id=f"{copy:05x}{row['id'][5:]}", bpm=bpm, parent_id=None, status="pending",
                           operation=row["operation"] if row["operation"] != "repatch" else "render")
                new["name"] = new["path"] = new["sidecar"] = f"copy/{new['id']}"
                new["key_tonic"] = NAMES[(row["tonic_pc"] + shift) % 12]
                new["tonic_pc"] = (row["tonic_pc"] + shift) % 12
                new["key"] = new["key_tonic"] + row["key"][len(row["key_tonic"]):]
                batch_loops.append([new[c] for c in columns])
                for c in chords.get(row["id"], []):
                    pcs = [(p + shift) % 12 for p in json.loads(c["pitch_classes"])]
                    batch_chords.append([new["id"], c["bar"], c["symbol"], c["roman"], (c["root_pc"] + shift) % 12,
                                         (c["bass_pc"] + shift) % 12, json.dumps(pcs), c["start_s"], c["end_s"]])
                n += 1
            conn.executemany(f"INSERT INTO loops ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             batch_loops)
            conn.executemany("INSERT INTO chords (loop_id, bar, symbol, roman, root_pc, bass_pc, pitch_classes, "
                             "start_s, end_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch_chords)
    from farm.catalog.rows import HARMONY_SQL

    with conn:  # the copies' loops.harmony, from their moved chords
        conn.execute(f"UPDATE loops SET harmony = {HARMONY_SQL}")
    conn.execute("ANALYZE")
    conn.close()
    return n


def naive(cat, loop_id: str) -> list:
    """The peer: every loop of the same length read, its fingerprint parsed, everything scored."""
    import numpy as np

    from farm.match.fit import Fit, best_transposition, rhythm, spectrum
    from farm.match.search import load_query, parse_bars

    q = load_query(cat, loop_id)
    out = []
    for row in cat.db.query("SELECT id, part, fingerprint, (SELECT group_concat(x, ';') FROM (SELECT pitch_classes "
                            "|| '|' || bass_pc AS x FROM chords WHERE loop_id = loops.id ORDER BY bar)) AS harmony "
                            "FROM loops WHERE bars = ? AND meter = ? AND id != ?",
                            [q.row["bars"], q.row["meter"], loop_id]):
        fp = json.loads(row["fingerprint"])
        onsets, energy = np.asarray(fp["onsets"], dtype=np.float32), np.asarray(fp["energy"], dtype=np.float32)
        bars = parse_bars(row["harmony"])
        h = best_transposition(q.bars, bars, q.scale, (-2, -1, 0, 1, 2))[1] if bars and q.bars else None
        r = rhythm(q.row["part"], q.onsets, row["part"], onsets) if onsets.shape == q.onsets.shape else None
        out.append((Fit(h, r, spectrum(q.energy, energy)).score, row["id"]))
    return sorted(out, reverse=True)[:10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kits", type=int, default=5)
    ap.add_argument("--cli-runs", type=int, default=50, help="`farm match` commands timed (each a new process)")
    args = ap.parse_args()
    from farm.catalog import Catalog
    from farm.match import build_kit, find_matches

    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "night" / "library"
        base.parent.mkdir()
        night(base)
        kit_s = []
        for seed in range(args.kits):
            root = Path(shutil.copytree(base, Path(tmp) / f"kit{seed}"))
            t0 = time.perf_counter()
            subprocess.run([str(FARM), "kit", "--seed", str(seed), "--root", str(root)], check=True,
                           capture_output=True)
            kit_s.append(time.perf_counter() - t0)
        big = Path(shutil.copytree(base, Path(tmp) / "big"))
        t0 = time.perf_counter()
        loops = grow(big, args.loops)
        grow_s = time.perf_counter() - t0
        Catalog(big, create=False).close()  # a Loop Farm writer closes it: the next opens need no full check
        with Catalog(big, readonly=True) as cat:
            ids = [r[0] for r in cat.db.execute("SELECT id FROM loops ORDER BY id")]
            picks = random.Random(7).sample(ids, args.queries)
            find_matches(cat, picks[0])  # warm: imports, page cache
            times = []
            for loop_id in picks:
                t0 = time.perf_counter()
                find_matches(cat, loop_id, limit=10)
                times.append((time.perf_counter() - t0) * 1000)
            naive_ms = []
            for loop_id in picks[:3]:
                t0 = time.perf_counter()
                naive(cat, loop_id)
                naive_ms.append((time.perf_counter() - t0) * 1000)
        # The command as a user runs it: Python's bytecode cache in use (one run first writes it,
        # whatever PYTHONDONTWRITEBYTECODE this shell has), a new process per query.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([str(FARM), "match", picks[0], "--root", str(big)], check=True, capture_output=True, env=env)
        cli = []
        for loop_id in picks[:args.cli_runs]:
            t0 = time.perf_counter()
            subprocess.run([str(FARM), "match", loop_id, "--root", str(big)], check=True, capture_output=True,
                           env=env)
            cli.append((time.perf_counter() - t0) * 1000)
        cli.sort()
        cli_ms = statistics.median(cli)
    times.sort()
    result = {"loops": loops, "queries": len(times), "p50_ms": statistics.median(times),
              "p95_ms": times[int(0.95 * (len(times) - 1))], "max_ms": times[-1],
              "naive_median_ms": statistics.median(naive_ms), "cli_median_ms": cli_ms,
              "cli_p95_ms": cli[int(0.95 * (len(cli) - 1))], "grow_s": grow_s,
              "kit_median_s": statistics.median(kit_s), "kit_s": kit_s}
    result["speedup_over_naive"] = result["naive_median_ms"] / result["p50_ms"]
    (RESULTS / "bench_match.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"farm match over {loops:,} loops ({len(times)} queries): p50 {result['p50_ms']:.1f} ms, "
          f"p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms")
    print(f"  the naive scan of every fingerprint: {result['naive_median_ms']:.0f} ms "
          f"({result['speedup_over_naive']:.0f}x slower than p50)")
    verdict = "meets" if result["cli_p95_ms"] < 200 else "misses"
    print(f"  `farm match` as a command, Python start-up included: median {cli_ms:.0f} ms, "
          f"p95 {result['cli_p95_ms']:.0f} ms ({len(cli)} runs; {verdict} the 200 ms target)")
    print(f"farm kit on the default night: median {result['kit_median_s']:.2f} s "
          f"({', '.join(f'{s:.2f}' for s in kit_s)})")


if __name__ == "__main__":
    main()
