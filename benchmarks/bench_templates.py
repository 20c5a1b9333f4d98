"""Templates per second per core: 4-bar, 5-part templates, music21 import excluded.

    .venv/bin/python benchmarks/bench_templates.py [--count 150]

Measured in one process on one core, against two peers in the same run. The headline row is the
generator after the caches have seen other seeds of the same styles (a nightly batch's steady state):

* ``farm, cold caches``: the same generator with its music21 caches emptied before every template
  (every roman numeral realised and every voicing searched again), i.e. music21 work uncached;
* ``music21 stream.write('midi')``: the same template built the music21 way, roman numerals
  realised by music21 and the same five parts' notes exported by music21's own MIDI writer.

The rate is per CPU second (process time), so other work on a shared machine does not count
against it; wall-clock rates are printed beside it.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mido  # noqa: E402
import music21  # noqa: E402,F401  (imported before timing: the import is excluded)

from farm import theory  # noqa: E402
from farm.templates import find_rules, generate_template, load_rules  # noqa: E402

FIVE_PART_STYLES = ("cinematic-minor", "pop-ballad", "synthwave")


def clear_caches() -> None:
    for f in (theory.spell_chord, theory.chord_scale, theory.voice_lead, theory.voicing_candidates,
              theory.scale_names, theory._cached_key, theory._key_spelling):
        f.cache_clear()


def timed(fn, jobs):
    w0, c0 = time.perf_counter(), time.process_time()
    for job in jobs:
        fn(*job)
    return time.perf_counter() - w0, time.process_time() - c0


def music21_peer(template, parts: dict[str, list[tuple[float, float, int, int]]], path: str) -> None:
    """The music21 way: realise each bar's roman numeral, build a score of the five parts, write MIDI."""
    from music21 import instrument, key, meter, note, roman, stream, tempo

    k = key.Key(template.key.tonic.replace("b", "-") if len(template.key.tonic) > 1 else template.key.tonic,
                {"harmonic_minor": "minor"}.get(template.key.mode, template.key.mode))
    for label in template.chords:
        roman.RomanNumeral(theory.music21_figure(label.roman), k).pitches  # theory, uncached
    score = stream.Score()
    for name, notes in parts.items():
        part = stream.Part()
        part.insert(0, instrument.UnpitchedPercussion() if name == "drums" else instrument.Piano())
        part.insert(0, tempo.MetronomeMark(number=template.bpm))
        part.insert(0, meter.TimeSignature(str(template.meter)))
        for start, length, pitch, velocity in notes:
            n = note.Note(pitch, quarterLength=length)
            n.volume.velocity = velocity
            part.insert(start, n)
        score.insert(0, part)
    score.write("midi", fp=path)


def notes_in_quarters(data: bytes, ppq: int) -> list[tuple[float, float, int, int]]:
    out, now, open_ = [], 0, {}
    for msg in mido.MidiFile(file=io.BytesIO(data)).tracks[1]:
        now += msg.time
        if msg.type == "note_on" and msg.velocity:
            open_[msg.note] = (now, msg.velocity)
        elif msg.type in ("note_on", "note_off") and msg.note in open_:
            start, vel = open_.pop(msg.note)
            out.append((start / ppq, (now - start) / ppq, msg.note, vel))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=150, help="templates per style for the farm rows")
    ap.add_argument("--peer-count", type=int, default=20, help="templates per style for the music21 peer")
    args = ap.parse_args()

    rules = [load_rules(find_rules(s)) for s in FIVE_PART_STYLES]
    jobs = [(r, seed) for r in rules for seed in range(args.count)]
    for r in rules:
        assert len(r.parts) == 5, r.name

    def farm(r, seed):
        return generate_template(r, seed, bars=4)

    def farm_cold(r, seed):
        clear_caches()
        return generate_template(r, seed, bars=4)

    # warm the caches on other seeds, as a nightly batch has after its first templates: the timed
    # templates are new ones (their keys, romans and voicings partly seen before, as in a batch)
    timed(farm, [(r, args.count + seed) for r in rules for seed in range(args.count)])
    warm_wall, warm_cpu = timed(farm, jobs)
    cold_jobs = jobs[: max(1, len(jobs) // 3)]
    cold_wall, cold_cpu = timed(farm_cold, cold_jobs)

    peer_jobs = []
    for r in rules:
        for seed in range(args.peer_count):
            g = farm(r, seed)
            parts = {p.name: notes_in_quarters(g.midi[p.name], g.template.ppq) for p in g.template.parts}
            peer_jobs.append((g.template, parts))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "peer.mid")
        peer_wall, peer_cpu = timed(lambda t, parts: music21_peer(t, parts, path), peer_jobs)

    rows = [
        ("farm (warm caches)", len(jobs), warm_wall, warm_cpu),
        ("farm, cold caches", len(cold_jobs), cold_wall, cold_cpu),
        ("music21 stream.write('midi')", len(peer_jobs), peer_wall, peer_cpu),
    ]
    farm_rate = len(jobs) / warm_cpu
    print(f"4-bar, 5-part templates ({', '.join(FIVE_PART_STYLES)}); music21 imported before timing")
    print(f"{'':32} {'templates':>9} {'per CPU s':>10} {'per wall s':>10} {'farm is':>9}")
    for name, n, wall, cpu in rows:
        rate = n / cpu
        print(f"{name:32} {n:9d} {rate:10.1f} {n / wall:10.1f} {farm_rate / rate:8.1f}x")
    print(f"target: 50 templates/s/core -> {'met' if farm_rate >= 50 else 'NOT met'} ({farm_rate:.0f}/s)")


if __name__ == "__main__":
    main()
