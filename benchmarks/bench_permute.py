"""Permutation throughput and the quality cost of pitch shifting.

    .venv/bin/python benchmarks/bench_permute.py [--reps 3] [--seed 5] [--style lofi-hiphop]

1. Permutations per second on one core for each operation (splice + bleed measure, pitch shift,
   time stretch, re-patch), on a 4-bar chords loop rendered by the embedded renderer. Pitch
   shift and stretch run Rubber Band in-process (pedalboard) and, in the same run on the same
   audio, through pyrubberband (the rubberband command line via temporary WAV files): the ratio
   is the figure that matters, since the machine is shared. Runs are interleaved; medians.
2. The quality cost of pitch shifting: each bar's chroma of the shifted loop against a direct
   re-render of the transposed MIDI through the same patch (cosine similarity, 1 = identical),
   and the share of chroma energy at the labelled pitch classes in both.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.audio import bar_chroma  # noqa: E402
from farm.patches import load_patch  # noqa: E402
from farm.permute.shift import (PAD_SECONDS, _circular_pad, pitch_shift, stretch_to_bpm,  # noqa: E402
                                transpose_template)
from farm.permute.splice import measure_bleed, splice_audio  # noqa: E402
from farm.render import RenderJob, get_backend, render_loops  # noqa: E402
from farm.templates import find_rules, generate_template, load_rules, write_template  # noqa: E402

SR = 44100
PATCH = "dry-piano-chords"
OTHER_PATCH = "warm-rhodes"


def timed(fn, reps: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``reps`` runs."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# The rubberband command line with the options pedalboard sets: high quality = the R3 ("finer")
# engine, standard = R2 ("faster"); formants preserved when pitch shifting, as pedalboard does.
R3 = {"--fine": ""}
R2 = {}
FORMANT = {"--formant": ""}


def pyrb_pitch(audio: np.ndarray, semitones: float, engine: dict = R3) -> np.ndarray:
    """Same circular padding and cut as farm.permute.shift.pitch_shift, through pyrubberband."""
    import pyrubberband

    pad = min(audio.shape[1], int(PAD_SECONDS * SR))
    out = pyrubberband.pitch_shift(_circular_pad(audio, pad).T, SR, semitones, rbargs={**engine, **FORMANT}).T
    return out[:, pad:pad + audio.shape[1]].astype(np.float32)


def pyrb_stretch(audio: np.ndarray, length: int, engine: dict = R3) -> np.ndarray:
    import pyrubberband

    n = audio.shape[1]
    pad = min(n, int(PAD_SECONDS * SR))
    out = pyrubberband.time_stretch(_circular_pad(audio, pad).T, SR, n / length, rbargs=dict(engine)).T
    start = int(round(pad * length / n))
    return out[:, start:start + length].astype(np.float32)


def transposed_midi_render(template, template_dir: Path, semitones: int, backend, patch: str = PATCH) -> np.ndarray:
    """The chords part's MIDI moved by ``semitones`` and rendered through the same patch."""
    import pretty_midi

    from dataclasses import replace

    pm = pretty_midi.PrettyMIDI(str(template_dir / template.part("chords").midi))
    for inst in pm.instruments:
        for note in inst.notes:
            note.pitch += semitones
    out_dir = Path(tempfile.mkdtemp(prefix="bench-permute-"))
    pm.write(str(out_dir / "chords.mid"))
    part = replace(template.part("chords"), midi="chords.mid")
    moved = replace(transpose_template(template, semitones), parts=(part,))
    [loop] = render_loops([RenderJob(moved, out_dir, "chords", load_patch(patch), SR)], backend)
    return loop.audio


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def chord_share(audio: np.ndarray, template) -> float:
    chroma = bar_chroma(audio, SR, template)
    return float(np.mean([chroma[i][list(c.pitch_classes)].sum() for i, c in enumerate(template.chords)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--style", default="lofi-hiphop")
    args = parser.parse_args()

    rules = load_rules(find_rules(args.style))
    generated = generate_template(rules, args.seed, bars=4)
    template_dir = write_template(generated, Path(tempfile.mkdtemp(prefix="bench-permute-")))
    template = generated.template
    backend = get_backend("embedded")
    [loop] = render_loops([RenderJob(template, template_dir, "chords", load_patch(PATCH), SR)], backend)
    audio = loop.audio
    seconds = audio.shape[1] / SR
    print(f"loop: {args.style} seed {args.seed}, {template.key.short}, {template.bpm:g} BPM, "
          f"{' '.join(c.symbol for c in template.chords)}; chords part through {PATCH}, "
          f"{seconds:.2f} s stereo at {SR} Hz; median of {args.reps} runs, one process (one core)")

    order = (2, 2, 1, 1)
    target = template.loop_samples(SR) * template.bpm / (template.bpm + 5)
    length = int(round(target))
    other = load_patch(OTHER_PATCH)
    other_job = RenderJob(template, template_dir, "chords", other, SR)
    cases = {
        "splice (cut + crossfades + bleed measure)": lambda: measure_bleed(
            audio, splice_audio(audio, template, order, SR), template, order, SR),
        "pitch +2, high quality: pedalboard": lambda: pitch_shift(audio, SR, 2),
        "pitch +2, high quality: pyrubberband": lambda: pyrb_pitch(audio, 2, R3),
        "pitch +2, standard: pedalboard": lambda: pitch_shift(audio, SR, 2, high_quality=False),
        "pitch +2, standard: pyrubberband": lambda: pyrb_pitch(audio, 2, R2),
        "stretch +5 BPM, high quality: pedalboard": lambda: stretch_to_bpm(audio, template, template.bpm + 5, SR),
        "stretch +5 BPM, high quality: pyrubberband": lambda: pyrb_stretch(audio, length, R3),
        "stretch +5 BPM, standard: pedalboard": lambda: stretch_to_bpm(
            audio, template, template.bpm + 5, SR, high_quality=False),
        "stretch +5 BPM, standard: pyrubberband": lambda: pyrb_stretch(audio, length, R2),
        f"repatch ({OTHER_PATCH}, embedded render)": lambda: render_loops([other_job], backend),
    }
    for fn in cases.values():  # warm-up: imports, synth start, caches
        fn()
    results = {name: [] for name in cases}
    for _ in range(args.reps):  # interleaved, so load from other processes hits every case alike
        for name, fn in cases.items():
            results[name].append(timed(fn, 1))
    print()
    print(f"{'operation':46} {'s/op':>7} {'perms/s/core':>13} {'x realtime':>11}")
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, s in medians.items():
        print(f"{name:46} {s:7.3f} {1 / s:13.2f} {seconds / s:11.1f}")
    print()
    for op in ("pitch +2", "stretch +5 BPM"):
        for quality in ("high quality", "standard"):
            ours = medians[f"{op}, {quality}: pedalboard"]
            peer = medians[f"{op}, {quality}: pyrubberband"]
            print(f"{op}, {quality}: pedalboard in-process does {peer / ours:.2f}x the permutations per "
                  f"second of pyrubberband on the same audio")
    print()
    print("pitch-shift quality: per-bar chroma of the shifted loop vs a re-render of the transposed MIDI")
    print(f"through the same patch ({', '.join(QUALITY_PATCHES)}): cosine similarity (1 = the same pitch-class")
    print("balance), and the mean share of chroma energy at the labelled chord tones")
    engines = {
        "pedalboard high quality": lambda a, n: pitch_shift(a, SR, n),
        "pedalboard standard": lambda a, n: pitch_shift(a, SR, n, high_quality=False),
        "pyrubberband high quality": lambda a, n: pyrb_pitch(a, n, R3),
    }
    table = {}
    for patch in QUALITY_PATCHES:
        [source] = render_loops([RenderJob(template, template_dir, "chords", load_patch(patch), SR)], backend)
        for n in (-2, -1, 1, 2):
            reference = transposed_midi_render(template, template_dir, n, backend, patch)
            labels = transpose_template(template, n)
            ref_chroma = bar_chroma(reference, SR, labels)
            table.setdefault((n, "re-render of the MIDI"), []).append(([], chord_share(reference, labels)))
            for engine, fn in engines.items():
                shifted = fn(source.audio, n)
                chroma = bar_chroma(shifted, SR, labels)
                cos = [cosine(chroma[i], ref_chroma[i]) for i in range(template.bars)]
                table.setdefault((n, engine), []).append((cos, chord_share(shifted, labels)))
    print(f"{'shift':>5} {'audio':26} {'cosine mean':>11} {'cosine min':>10} {'chord-tone share':>16}")
    for (n, engine), runs in table.items():
        cos = [c for run in runs for c in run[0]] or [1.0]
        share = np.mean([run[1] for run in runs])
        figures = (f"{'reference':>11} {'':>10}" if engine.startswith("re-render")
                   else f"{np.mean(cos):11.3f} {min(cos):10.3f}")
        print(f"{n:+5d} {engine:26} {figures} {share:16.3f}")


QUALITY_PATCHES = ("dry-piano-chords", "warm-rhodes", "string-ensemble")


if __name__ == "__main__":
    main()
