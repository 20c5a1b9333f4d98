"""`farm sql` latency of the saved queries on a catalog of 1,000,000 loops.

    .venv/bin/python benchmarks/bench_catalog.py [--loops 1000000] [--reps 40] [--peer-reps 5]

The catalog is built once under benchmarks/results/catalog-<loops>/ (git-ignored) from
catalog/schema.sql, with synthetic rows shaped like a real library: styles with their own
tempo ranges, keys weighted towards the common ones, 2/4/8-bar loops, diatonic progressions
(one chords row per bar), parts and patch roles as the batch assigns them, 60 % permutations
naming a parent, review statuses, full-text index. Then each saved query runs ``--reps`` times
with parameters drawn from the data, through the same function as `farm sql` (a read-only
connection), and we report p50/p95 in milliseconds; so do four whole-answer counts typed as
`farm sql` (no LIMIT to stop a scan early). The peer is the same SQL with the
catalog's secondary indexes dropped (inside a transaction that is rolled back), measured in the
same run. Target: p95 under 50 ms for the key, bpm, role and chord filters.
"""
from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.catalog import SCHEMA_PATH, SCHEMA_VERSION, Catalog, bind_params, saved_queries  # noqa: E402
from farm.model import PITCH_CLASS_NAMES, content_id, note_name_to_pc  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# style: (weight, bpm range, modes)
STYLES = {
    "lofi-hiphop": (3, (70, 92), ("minor", "dorian")),
    "deep-house": (3, (118, 126), ("minor", "dorian")),
    "synthwave": (2, (84, 118), ("minor", "major")),
    "pop-ballad": (2, (66, 84), ("major",)),
    "jazz-ii-V-I": (1, (90, 180), ("major", "minor")),
    "cinematic-minor": (1, (60, 100), ("minor", "harmonic_minor")),
}
TONIC_WEIGHTS = {"C": 5, "G": 4, "D": 4, "A": 5, "E": 4, "F": 4, "Bb": 3, "Eb": 3, "B": 2, "F#": 2, "Ab": 2, "Db": 1}
PARTS = {"chords": (3, ("chords", "keys", "pad")), "bass": (3, ("bass",)), "drums": (3, ("drums",)),
         "melody": (2, ("lead",)), "arp": (1, ("arp",))}
PATCHES = {"chords": ["dry-piano-chords", "organ-stabs"], "keys": ["warm-rhodes", "mallet-keys", "dub-delay-keys"],
           "pad": ["dusty-pad", "choir-pad", "sweep-pad", "string-ensemble"], "bass": ["sub-bass", "acid-bass",
           "finger-bass"], "drums": ["lofi-kit", "brush-kit", "tight-808"], "lead": ["flute-lead", "saw-lead",
           "chip-lead"], "arp": ["glass-arp", "pluck-arp"]}
# Diatonic seventh chords per mode: (roman, semitones above the tonic, symbol suffix, chord tones)
DIATONIC = {
    "major": [("Imaj7", 0, "maj7", (0, 4, 7, 11)), ("ii7", 2, "m7", (0, 3, 7, 10)), ("iii7", 4, "m7", (0, 3, 7, 10)),
              ("IVmaj7", 5, "maj7", (0, 4, 7, 11)), ("V7", 7, "7", (0, 4, 7, 10)), ("vi7", 9, "m7", (0, 3, 7, 10)),
              ("viiø7", 11, "m7b5", (0, 3, 6, 10))],
    "minor": [("i7", 0, "m7", (0, 3, 7, 10)), ("iiø7", 2, "m7b5", (0, 3, 6, 10)), ("IIImaj7", 3, "maj7", (0, 4, 7, 11)),
              ("iv7", 5, "m7", (0, 3, 7, 10)), ("v7", 7, "m7", (0, 3, 7, 10)), ("VImaj7", 8, "maj7", (0, 4, 7, 11)),
              ("VII7", 10, "7", (0, 4, 7, 10))],
}
DIATONIC["dorian"] = [("i7", 0, "m7", (0, 3, 7, 10)), ("ii7", 2, "m7", (0, 3, 7, 10)),
                      ("IIImaj7", 3, "maj7", (0, 4, 7, 11)), ("IV7", 5, "7", (0, 4, 7, 10)),
                      ("v7", 7, "m7", (0, 3, 7, 10)), ("viø7", 9, "m7b5", (0, 3, 6, 10)),
                      ("VIImaj7", 10, "maj7", (0, 4, 7, 11))]
DIATONIC["harmonic_minor"] = DIATONIC["minor"][:4] + [("V7", 7, "7", (0, 4, 7, 10))] + DIATONIC["minor"][5:]
SHORT = {"major": "", "minor": "m", "harmonic_minor": "hm", "dorian": "dor"}
OPERATIONS = ["splice"] * 3 + ["pitch"] * 4 + ["stretch"] * 3 + ["repatch"]


def pick(rng: random.Random, weights: dict):
    return rng.choices(list(weights), weights=[w if isinstance(w, (int, float)) else w[0] for w in weights.values()])[0]


def camelot(tonic_pc: int, mode: str) -> str:
    if mode == "major":
        return f"{(7 * tonic_pc + 7) % 12 + 1}B"
    if mode == "dorian":
        tonic_pc = (tonic_pc + 7) % 12
    return f"{(7 * tonic_pc + 4) % 12 + 1}A"


def build(path: Path, n_loops: int, seed: int = 1) -> None:
    """Write the synthetic catalog (schema from catalog/schema.sql)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".building")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    conn.executescript(SCHEMA_PATH.read_text())
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    indexes = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")]
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall():
        conn.execute(f"DROP INDEX {name}")
    loop_cols = ("id", "name", "template_id", "parent_id", "operation", "params", "style", "part", "role", "patch",
                 "patch_hash", "key", "key_tonic", "key_mode", "tonic_pc", "camelot", "bpm", "meter", "bars",
                 "progression", "renderer", "renderer_version", "format", "sample_rate", "channels", "samples",
                 "duration_s", "lufs", "true_peak_db", "rms_db", "onsets", "centroid_hz", "path", "sidecar", "midi",
                 "sha256", "status", "reject_reason", "tags", "created_at", "batch_id")
    insert_loop = f"INSERT INTO loops ({', '.join(loop_cols)}) VALUES ({', '.join('?' * len(loop_cols))})"
    insert_chord = "INSERT INTO chords VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    insert_template = "INSERT INTO templates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    insert_review = ("INSERT INTO reviews (loop_id, status, previous_status, reason, reviewer, reviewed_at) "
                     "VALUES (?, ?, 'pending', ?, ?, ?)")
    t0 = time.time()
    made, template_no = 0, 0
    loops, chords, templates, reviews = [], [], [], []

    def flush():
        conn.execute("BEGIN")
        conn.executemany(insert_template, templates)
        conn.executemany(insert_loop, loops)
        conn.executemany(insert_chord, chords)
        conn.executemany(insert_review, reviews)
        conn.execute("COMMIT")
        loops.clear(), chords.clear(), templates.clear(), reviews.clear()

    while made < n_loops:
        # One template: its labels, then its rendered loops, then permutations of them.
        template_no += 1
        style = pick(rng, STYLES)
        _, (lo, hi), modes = STYLES[style]
        mode = rng.choice(modes)
        tonic = pick(rng, TONIC_WEIGHTS)
        tonic_pc = note_name_to_pc(tonic)
        bpm = float(rng.randint(lo, hi))
        bars = rng.choices((2, 4, 8), weights=(2, 5, 2))[0]
        degrees = [0] + [rng.randrange(7) for _ in range(bars - 1)]
        prog = []
        for d in degrees:
            roman, offset, suffix, tones = DIATONIC[mode][d]
            root = (tonic_pc + offset) % 12
            prog.append((roman, root, PITCH_CLASS_NAMES[root] + suffix, [(root + t) % 12 for t in tones]))
        tid = content_id("template", str(template_no))
        key = tonic + SHORT[mode]
        day = made * 365 // n_loops  # a year of nights
        created = f"2024-{1 + day // 31:02d}-{1 + day % 28:02d}T02:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        spb = 4 * 60.0 / bpm
        templates.append((tid, style, template_no, key, tonic, mode, bpm, "4/4", bars, 480,
                          " ".join(p[2] for p in prog), " ".join(p[0] for p in prog),
                          json.dumps(list(PARTS)), f"templates/{tid}", "bench", created, "bench"))
        family = []  # (part, role, patch, index of the parent in family or None, operation, params)
        for part, (_, roles) in PARTS.items():
            for role in roles:
                for patch in rng.sample(PATCHES[role], k=min(len(PATCHES[role]), rng.choice((1, 1, 2)))):
                    family.append((part, role, patch, None, "render", {}))
        for index, (part, role, patch, _, _, _) in enumerate(list(family)):
            if rng.random() < 0.5:
                for _ in range(rng.randint(1, 6)):
                    family.append((part, role, patch, index, rng.choice(OPERATIONS), {"n": rng.randint(-3, 3)}))
        ids = []
        for part, role, patch, parent, operation, params in family:
            if made >= n_loops:
                break
            lid = content_id("loop", str(made))
            ids.append(lid)
            status = rng.choices(("pending", "approved", "rejected"), weights=(70, 20, 10))[0]
            reason = None if status != "rejected" else rng.choice(
                ("bleed: 0.31 of bar 3 is a foreign chord", "loudness: -22.1 LUFS", "silence: RMS -64 dBFS",
                 "people: muddy low end"))
            name = f"LF_{bpm:g}_{part}_{patch}_{key}_{lid}"
            audio_path = f"loops/{style}/{name}.flac"
            loops.append((lid, name, tid, None if parent is None else ids[parent], operation, json.dumps(params), style,
                          part, role, patch, "0" * 64, key, tonic, mode, tonic_pc, camelot(tonic_pc, mode),
                          bpm, "4/4", bars, " ".join(p[2] for p in prog), "embedded", "bench", "flac24", 44100,
                          2, int(bars * spb * 44100), bars * spb, -16.0 + rng.uniform(-1, 1),
                          -2.0 - rng.random() * 4, -19.0 + rng.uniform(-3, 3), rng.randint(0, 64),
                          rng.uniform(200, 6000), audio_path, audio_path[:-5] + ".json", f"templates/{tid}/{part}.mid",
                          content_id("audio", lid, length=64), status, reason,
                          f"{style} {part} {role} {patch} {key} {mode} 4/4 {bpm:g}bpm", created, "bench"))
            if status == "approved" or (reason or "").startswith("people"):
                reviews.append((lid, status, reason, rng.choice(("ana", "ben", "chloe")), created.replace("T02", "T14")))
            for bar, (roman, root, symbol, pcs) in enumerate(prog, start=1):
                chords.append((lid, bar, symbol, roman, root, root, json.dumps(pcs), (bar - 1) * spb, bar * spb))
            made += 1
        if len(loops) >= 50_000:
            flush()
            print(f"\r  {made:,} loops, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    flush()
    print(f"\r  {made:,} loops inserted in {time.time() - t0:.0f} s; indexing", file=sys.stderr, flush=True)
    for sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.commit()
    conn.close()
    tmp.rename(path)
    print(f"  built {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.time() - t0:.0f} s", file=sys.stderr)


def parameter_sets(root: Path, rng: random.Random, reps: int) -> dict[str, list[dict]]:
    """Parameters for each saved query, drawn from what the catalog holds."""
    with Catalog(root, readonly=True) as cat:
        keys = [r[0] for r in cat.db.execute("SELECT DISTINCT key FROM loops")]
        roles = [r[0] for r in cat.db.execute("SELECT DISTINCT role FROM loops")]
        chords = cat.db.execute("SELECT symbol, bar, roman FROM chords WHERE loop_id IN "
                                "(SELECT id FROM loops ORDER BY random() LIMIT 200)").fetchall()
        camelots = [r[0] for r in cat.db.execute("SELECT DISTINCT camelot FROM loops")]
        parents = [r[0] for r in cat.db.execute("SELECT parent_id FROM loops WHERE parent_id IS NOT NULL "
                                                "ORDER BY random() LIMIT 100")]
        styles = [r[0] for r in cat.db.execute("SELECT DISTINCT style FROM loops")]
    out = {}
    for _ in range(reps):
        lo = rng.randint(60, 170)
        symbol, bar, roman = rng.choice(chords)
        for name, params in {
            "key": {"key": rng.choice(keys), "status": rng.choice(("%", "pending", "approved"))},
            "bpm_range": {"min_bpm": str(lo), "max_bpm": str(lo + rng.randint(0, 10))},
            "role": {"role": rng.choice(roles)},
            "chord_in_bar": {"symbol": symbol, "bar": str(bar)},
            "roman_in_bar": {"roman": roman, "bar": str(bar)},
            "compatible": {"camelot": rng.choice(camelots), "bpm": str(rng.randint(70, 125)), "bpm_tolerance": "3"},
            "search": {"q": rng.choice(("rhodes", "pad", "dusty", "acid", "lofi", "kit", "house"))},
            "review_queue": {"style": rng.choice(styles)},
            "permutations": {"parent_id": rng.choice(parents)},
            "recent_approvals": {},
        }.items():
            out.setdefault(name, []).append(params)
    return out


# Whole answers, as typed into `farm sql`: how many loops match (no LIMIT to stop early).
ADHOC = {
    "count key": ("SELECT count(*) FROM loops WHERE key = :key", lambda p: {"key": p["key"]["key"]}),
    "count bpm range": ("SELECT count(*) FROM loops WHERE bpm BETWEEN :lo AND :hi",
                        lambda p: {"lo": int(p["bpm_range"]["min_bpm"]), "hi": int(p["bpm_range"]["max_bpm"])}),
    "count role+key": ("SELECT count(*) FROM loops WHERE role = :role AND key = :key",
                       lambda p: {"role": p["role"]["role"], "key": p["key"]["key"]}),
    "count chord in bar": ("SELECT count(*) FROM chords WHERE symbol = :symbol AND bar = :bar",
                           lambda p: {"symbol": p["chord_in_bar"]["symbol"], "bar": int(p["chord_in_bar"]["bar"])}),
}


def percentiles(times: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(times, n=20, method="inclusive")
    return statistics.median(times) * 1000, qs[18] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--peer-reps", type=int, default=5)
    args = ap.parse_args()
    root = RESULTS / f"catalog-{args.loops}"
    db = root / "catalog.db"
    if not db.exists():
        print(f"building a catalog of {args.loops:,} loops (once)", file=sys.stderr)
        build(db, args.loops)
    rng = random.Random(7)
    queries = saved_queries()
    sets = parameter_sets(root, rng, args.reps)
    with Catalog(root, readonly=True) as cat:
        n_loops = cat.db.execute("SELECT count(*) FROM loops").fetchone()[0]
        n_chords = cat.db.execute("SELECT count(*) FROM chords").fetchone()[0]
        n_reviews = cat.db.execute("SELECT count(*) FROM reviews").fetchone()[0]
    print(f"catalog: {n_loops:,} loops, {n_chords:,} chord rows, {n_reviews:,} reviews, "
          f"{db.stat().st_size / 1e9:.2f} GB")

    results = {}
    reader = Catalog(root, readonly=True)
    # The peer: a writable connection whose secondary indexes are dropped in an open transaction.
    peer = sqlite3.connect(db)
    peer.isolation_level = None
    peer.execute("BEGIN")
    for (name,) in peer.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                                "AND tbl_name IN ('loops', 'chords')").fetchall():
        peer.execute(f"DROP INDEX {name}")
    work = [(name, queries[name].sql, [bind_params(queries[name], p) for p in sets[name]]) for name in sets]
    work += [(name, sql, [make({k: sets[k][i] for k in sets}) for i in range(args.reps)])
             for name, (sql, make) in ADHOC.items()]
    for name, sql, bound in work:
        q = argparse.Namespace(sql=sql)
        reader.sql(q.sql, bound[0])  # warm the page cache the same way for both
        times, rows = [], 0
        for params in bound:
            t0 = time.perf_counter()
            _, got = reader.sql(q.sql, params)
            times.append(time.perf_counter() - t0)
            rows += len(got)
        peer_times = []
        for params in bound[:args.peer_reps]:
            t0 = time.perf_counter()
            peer.execute(q.sql, params).fetchall()
            peer_times.append(time.perf_counter() - t0)
        p50, p95 = percentiles(times)
        results[name] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "mean_rows": round(rows / len(bound), 1),
                         "no_index_median_ms": round(statistics.median(peer_times) * 1000, 1)}
        r = results[name]
        print(f"{name:18}  p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  ({r['mean_rows']:5.1f} rows)   "
              f"without indexes: {r['no_index_median_ms']:8.1f} ms  = {r['no_index_median_ms'] / max(p50, 1e-3):6.0f}x",
              flush=True)
    peer.execute("ROLLBACK")
    peer.close()
    reader.close()
    # The whole command, as a person types it: process start-up dominates.
    cli = Path(sys.executable).parent / "farm"
    q = queries["chord_in_bar"]
    params = sets["chord_in_bar"][0]
    cli_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([str(cli), "query", "chord_in_bar", "--root", str(root)]
                       + [a for k, v in params.items() for a in ("-p", f"{k}={v}")],
                       check=True, capture_output=True)
        cli_times.append(time.perf_counter() - t0)
    results["cli_farm_query_chord_in_bar_median_ms"] = round(statistics.median(cli_times) * 1000, 1)
    print(f"`farm query chord_in_bar` as a command (process start-up included): "
          f"median {results['cli_farm_query_chord_in_bar_median_ms']:.0f} ms")
    targets = ["key", "bpm_range", "role", "chord_in_bar", "count key", "count bpm range", "count role+key",
               "count chord in bar"]
    worst = max(results[t]["p95_ms"] for t in targets)
    print(f"target p95 < 50 ms for key, bpm, role and chord filters: worst p95 {worst:.2f} ms -> "
          f"{'met' if worst < 50 else 'MISSED'}")
    out = RESULTS / "bench_catalog.json"
    out.write_text(json.dumps({"loops": n_loops, "chords": n_chords, "reps": args.reps, "queries": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
