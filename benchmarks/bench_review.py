"""The review room on a big catalog: page load, first audio, paging, and decisions per minute.

    .venv/bin/python benchmarks/bench_review.py [--loops 100000] [--decisions 40]

A small real night (one lofi-hiphop template, 2 bars, three parts, pitch shifts) is rendered
once under benchmarks/results/review-night/; a copy of it is then grown to ``--loops`` catalog
rows by cloning its rows under new ids (each clone's file is a symbolic link to a real FLAC, so
every row plays). `farm review` serves each catalog in its own process, and Debian's headless
Chromium (Selenium) measures, on the small night and on the big catalog in the same run:

* page load: navigation to the page showing its first loop (queue with counts + loop detail);
* first audio: space pressed to the loop playing (fetch + decode + start);
* queue requests: the first page with counts per filter, a page 99 % of the way down, and a
  filtered page, timed over HTTP;
* decisions per minute: ``a`` pressed on consecutive loops, each timed until the next loop is
  shown; the peer is `farm approve ID` run as a command for each decision.

Figures are medians; the ratios (big / small, room / command) are what to quote.
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RESULTS = ROOT / "benchmarks" / "results"


def night() -> Path:
    """The small real night, rendered once."""
    from farm.batch import load_config, run_batch
    from farm.permute import permute

    base = RESULTS / "review-night"
    root = base / "library"
    if (root / "catalog.db").is_file():
        return root
    base.mkdir(parents=True, exist_ok=True)
    config = base / "night.toml"
    config.write_text("\n".join([
        f'root = "{root}"', 'styles = ["lofi-hiphop"]', "templates_per_style = 1", "seed = 7", "bars = 2",
        'parts = ["chords", "bass", "drums"]', 'patches = ["warm-rhodes", "sub-bass", "lofi-kit"]', "workers = 1",
        "timeout_s = 120"]) + "\n")
    run_batch(load_config(config), progress=False)
    permute(root, where="part = 'chords'", ops=["pitch"], semitones=1, progress=False)
    return root


def grown(small: Path, loops: int) -> Path:
    """A copy of ``small`` grown to ``loops`` rows (made once per size)."""
    base = RESULTS / f"review-{loops}"
    root = base / "library"
    if (root / "catalog.db").is_file():
        return root
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(small, root)
    conn = sqlite3.connect(root / "catalog.db")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(loops)")]
    originals = conn.execute("SELECT * FROM loops").fetchall()
    chords = {}
    for row in conn.execute("SELECT * FROM chords"):
        chords.setdefault(row[0], []).append(row)
    clone_dir = root / "loops" / "bench"
    clone_dir.mkdir(parents=True)
    need = loops - len(originals)
    loop_rows, chord_rows = [], []
    for i in range(need):
        source = dict(zip(columns, originals[i % len(originals)]))
        new_id = f"{i:016x}"
        link = clone_dir / f"{new_id}.flac"
        link.symlink_to((root / source["path"]).resolve())
        source.update(id=new_id, name=f"{source['name'][:-16]}{new_id}", path=f"loops/bench/{new_id}.flac",
                      sidecar=f"loops/bench/{new_id}.json", parent_id=None, created_at=f"2026-12-{1 + i % 28:02d}T00:00:00Z",
                      batch_id=f"bench-{i % 40:02d}")
        loop_rows.append(tuple(source[c] for c in columns))
        chord_rows += [(new_id, *c[1:]) for c in chords[originals[i % len(originals)][0]]]
    with conn:
        conn.executemany(f"INSERT INTO loops ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         loop_rows)
        conn.executemany(f"INSERT INTO chords VALUES ({', '.join('?' * len(chord_rows[0]))})", chord_rows)
    conn.execute("ANALYZE")
    conn.close()
    return root


def http_ms(url: str, reps: int = 7) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as response:
            response.read()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(root: Path, browser, decisions: int) -> dict:
    from test_room import Room, press, wait_for

    room = Room(root)
    try:
        out = {"rows": sqlite3.connect(root / "catalog.db").execute("SELECT count(*) FROM loops").fetchone()[0]}
        total = out["rows"]
        out["queue first page + counts ms"] = http_ms(room.base + "/api/queue")
        out["queue deep page ms"] = http_ms(room.base + f"/api/queue?status=&offset={int(total * 0.99)}&counts=0")
        out["queue filtered page + counts ms"] = http_ms(room.base + "/api/queue?part=bass&bpm_min=80&bpm_max=90")
        loads, firsts = [], []
        for _ in range(5):
            t = time.perf_counter()
            browser.get(room.url)
            wait_for(browser, "return window.room && window.room.ready && window.room.detail !== null", 120)
            loads.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            press(browser, " ")
            wait_for(browser, "return window.room.playing", 60)
            firsts.append((time.perf_counter() - t) * 1000)
            press(browser, " ")
        out["page load ms"], out["first audio ms"] = statistics.median(loads), statistics.median(firsts)
        per = []
        for _ in range(decisions):
            current = browser.execute_script("return room.detail.id")
            t = time.perf_counter()
            press(browser, "a")
            wait_for(browser, f"return room.detail && room.detail.id !== '{current}'", 60)
            per.append(time.perf_counter() - t)
        out["decision s"] = statistics.median(per)
        out["decisions per minute"] = 60.0 / statistics.median(per)
        return out
    finally:
        room.stop()


def cli_decision_s(root: Path, reps: int = 5) -> float:
    """`farm approve ID` as a person types it, one loop at a time."""
    ids = [r[0] for r in sqlite3.connect(root / "catalog.db").execute(
        "SELECT id FROM loops WHERE status = 'pending' ORDER BY rowid DESC LIMIT ?", [reps])]
    farm = Path(sys.executable).parent / "farm"
    times = []
    for loop_id in ids:
        t = time.perf_counter()
        subprocess.run([str(farm), "approve", loop_id, "--root", str(root)], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loops", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=40)
    args = parser.parse_args()
    from test_room import start_browser

    small = night()
    big = grown(small, args.loops)
    scratch = RESULTS / "review-scratch"
    browser = start_browser()
    try:
        results = {}
        for name, root in (("small night", small), (f"{args.loops} rows", big)):
            copy = scratch / name.replace(" ", "-") / "library"  # decisions write: measure on a copy
            shutil.rmtree(copy.parent, ignore_errors=True)
            shutil.copytree(root, copy, symlinks=True)
            results[name] = measure(copy, browser, min(args.decisions, 4) if name == "small night" else args.decisions)
            results[name]["farm approve ID s"] = cli_decision_s(copy)
    finally:
        browser.quit()
    names = list(results)
    keys = [k for k in results[names[0]] if k != "rows"]
    print(f"{'':34}" + "".join(f"{n:>16}" for n in names) + f"{'big / small':>14}")
    print(f"{'catalog rows':34}" + "".join(f"{results[n]['rows']:>16,}" for n in names))
    for key in keys:
        a, b = results[names[0]][key], results[names[1]][key]
        print(f"{key:34}{a:>16.1f}{b:>16.1f}{b / a:>13.2f}x")
    big_result = results[names[1]]
    print(f"decisions: the room {big_result['decisions per minute']:.0f}/min, the command line "
          f"{60 / big_result['farm approve ID s']:.0f}/min: "
          f"{big_result['farm approve ID s'] / big_result['decision s']:.1f}x more decisions per minute in the room")


if __name__ == "__main__":
    main()
