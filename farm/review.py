"""Pictures of catalogued loops, for the person deciding whether to approve them.

One PNG per loop (``farm plot``), three panels over one time axis in seconds, a line at every
exact bar start:

* the stereo waveform (left channel above, right below), each bar's chord symbol and roman
  numeral on top;
* a spectrogram on a log-frequency axis (30 Hz - 16 kHz, dB, 80 dB range);
* a per-bar chroma strip: the share of the bar's spectral energy in each pitch class
  (``farm.audio.chroma``, the measure the splice bleed check uses), the labelled chord tones
  outlined (root dotted), and above each bar the share of energy on those chord tones. For parts
  that sound the whole chord every bar (chords, arp) it also says whether the labelled chord
  fits the bar better than each of its 11 transpositions; a bass line or melody moves through
  passing tones, so for those the share alone is shown, and drums are not held against chords.

The title carries name, style, part, patch, key (Camelot), bpm, meter, bars, status (and reject
reason), integrated LUFS and true peak; a permutation also its operation, parameters and parent.
Each PNG records what its chroma strip shows as JSON in a ``Loop Farm chroma`` text chunk, so a
script can read back what a reviewer saw.

Plots go to ``<catalog root>/plots/<loop name>.png`` unless told otherwise (never into the
loop folders), each written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from farm.errors import FarmError
from farm.files import atomic_path, check_writable_dir, missing_dirs, removed_if_left_empty
from farm.theory import pitch_class_names

PLOTS_DIR = "plots"
# Parts that sound the whole labelled chord in every bar: their bars are judged against the
# chord's transpositions. Bass lines and melodies use passing tones; drums have no pitch.
WHOLE_CHORD_PARTS = ("chords", "arp")
CHROMA_TEXT_KEY = "Loop Farm chroma"  # PNG text chunk holding the drawn chroma as JSON
SPECTROGRAM_FFT = 4096  # 93 ms at 44.1 kHz: 11 Hz bins, enough to tell bass notes apart
SPECTROGRAM_RANGE_HZ = (30.0, 16000.0)
SPECTROGRAM_ROWS = 240  # log-spaced frequency rows
DYNAMIC_RANGE_DB = 80.0

_LEFT, _RIGHT = "#3b6ea8", "#d0743c"
_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 1.0}
_STATUS_COLOURS = {"approved": "#2e8b57", "rejected": "#c0392b", "pending": "#7f7f7f"}


@dataclass
class LoopReview:
    """What a loop's picture shows, computed from the catalog and the loop's audio file.

    ``bar_starts`` are sample indices, one per bar plus the loop length at the end;
    ``bar_chroma`` is ``(bars, 12)``, each row summing to 1 (0 for a silent bar);
    ``chord_share`` is the share of each bar's chroma on its labelled chord tones;
    ``best_fit`` says, per bar, whether the labelled chord holds more of the bar's chroma than
    each of its 11 transpositions (computed for every part, shown for ``WHOLE_CHORD_PARTS``).
    """

    info: dict  # farm.catalog.Catalog.loop(): the row, its chords, reviews, children
    parent_name: str | None
    audio: np.ndarray  # float32 (channels, samples)
    sample_rate: int
    bar_starts: np.ndarray
    bar_chroma: np.ndarray
    chord_share: np.ndarray
    best_fit: np.ndarray

    @property
    def chords(self) -> list[dict]:
        return self.info["chords"]

    @property
    def pitched(self) -> bool:
        """Drums have no pitch: their chroma is shown but not held against the chord labels."""
        return self.info["part"] != "drums"

    @property
    def judged(self) -> bool:
        """Whether the picture says "fits" / "does not fit" for each bar."""
        return self.info["part"] in WHOLE_CHORD_PARTS

    def chroma_record(self) -> dict:
        """The chroma strip as JSON-able data (what the PNG's text chunk holds)."""
        return {"id": self.info["id"], "sample_rate": self.sample_rate, "bars": [
            {"bar": c["bar"], "symbol": c["symbol"], "pitch_classes": list(c["pitch_classes"]),
             "start_sample": int(self.bar_starts[i]), "end_sample": int(self.bar_starts[i + 1]),
             "chroma": [round(float(v), 5) for v in self.bar_chroma[i]],
             "chord_share": round(float(self.chord_share[i]), 5),
             "fits": bool(self.best_fit[i]) if self.judged else None}
            for i, c in enumerate(self.chords)]}


def chord_share(chroma: np.ndarray, pitch_classes: Sequence[int]) -> float:
    """Share (0..1) of a 12-bin chroma's energy at the given pitch classes; 0 for silence."""
    chroma = np.asarray(chroma, dtype=np.float64)
    total = float(chroma.sum())
    return float(sum(chroma[pc % 12] for pc in set(pitch_classes))) / total if total > 0 else 0.0


def best_fit(chroma: np.ndarray, pitch_classes: Sequence[int]) -> bool:
    """True when ``pitch_classes`` hold more of ``chroma`` than every transposition of them."""
    share = chord_share(chroma, pitch_classes)
    return share > 0 and all(share > chord_share(chroma, [p + t for p in pitch_classes]) for t in range(1, 12))


def bar_starts(info: dict, samples: int, sample_rate: int) -> np.ndarray:
    """First sample of every bar (from the chord labels' exact spans) and the loop length."""
    starts = [int(round(c["start_s"] * sample_rate)) for c in info["chords"]]
    return np.array(starts + [samples], dtype=np.int64)


def loop_review(catalog_root: str | Path, loop_id: str) -> LoopReview:
    """Read a loop's labels and audio and measure its per-bar chroma."""
    from farm.audio import chroma
    from farm.catalog import Catalog, read_loop_audio

    with Catalog(catalog_root, readonly=True) as cat:
        info = cat.loop(loop_id)
        parent_name = None
        if info["parent_id"]:
            _, rows = cat.sql("SELECT name FROM loops WHERE id = ?", [info["parent_id"]])
            parent_name = rows[0][0] if rows else info["parent_id"]
        path = cat.root / info["path"]
    audio, sr = read_loop_audio(path, info["sha256"])
    starts = bar_starts(info, audio.shape[1], sr)
    bars = np.stack([chroma(audio, sr, int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])])
    pcs = [c["pitch_classes"] for c in info["chords"]]
    return LoopReview(info=info, parent_name=parent_name, audio=audio, sample_rate=sr, bar_starts=starts,
                      bar_chroma=bars, chord_share=np.array([chord_share(b, p) for b, p in zip(bars, pcs)]),
                      best_fit=np.array([best_fit(b, p) for b, p in zip(bars, pcs)]))


# -- drawing ----------------------------------------------------------------------------------
def _envelope(channel: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min, max and RMS of ``channel`` in ``columns`` equal slices (a waveform at screen size)."""
    n = channel.shape[0]
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    lo = np.minimum.reduceat(channel, edges[:-1])
    hi = np.maximum.reduceat(channel, edges[:-1])
    sq = np.add.reduceat(channel.astype(np.float64) ** 2, edges[:-1]) / np.maximum(np.diff(edges), 1)
    return lo, hi, np.sqrt(sq)


def log_spectrogram(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrogram in dB on log-spaced frequency rows: ``(rows, frames)`` and row edges in Hz.

    Each row averages the STFT bins it overlaps (weighted by overlap in Hz), so low rows narrower
    than a bin interpolate and high rows wider than many bins keep all their energy. Levels are
    relative to the loudest cell, floored at ``-DYNAMIC_RANGE_DB``.
    """
    from farm.qa import magnitude_spectrogram

    power = magnitude_spectrogram(audio, n_fft=SPECTROGRAM_FFT, hop=SPECTROGRAM_FFT // 8).astype(np.float64) ** 2
    lo, hi = SPECTROGRAM_RANGE_HZ[0], min(SPECTROGRAM_RANGE_HZ[1], sample_rate / 2)
    edges = np.geomspace(lo, hi, SPECTROGRAM_ROWS + 1)
    bin_hz = sample_rate / SPECTROGRAM_FFT
    bin_lo = (np.arange(power.shape[0]) - 0.5) * bin_hz
    overlap = np.clip(np.minimum(edges[1:, None], bin_lo[None, :] + bin_hz)
                      - np.maximum(edges[:-1, None], bin_lo[None, :]), 0.0, None)
    rows = (overlap / np.diff(edges)[:, None]) @ power
    db = 10.0 * np.log10(np.maximum(rows, 1e-20))
    return np.maximum(db - db.max(), -DYNAMIC_RANGE_DB), edges


def _title(review: LoopReview) -> tuple[str, str, str]:
    i = review.info
    lufs = "-" if i["lufs"] is None else f"{i['lufs']:.1f}"
    peak = "-" if i["true_peak_db"] is None else f"{i['true_peak_db']:.1f}"
    line2 = (f"{i['style']}  ·  {i['part']}  ·  {i['patch']} ({i['role']})  ·  {i['key']} ({i['camelot']})  ·  "
             f"{i['bpm']:g} bpm  ·  {i['meter']}  ·  {i['bars']} bars  ·  {i['duration_s']:.2f} s  ·  "
             f"{lufs} LUFS  ·  true peak {peak} dBTP")
    status = i["status"] + (f": {i['reject_reason']}" if i["reject_reason"] else "")
    if i["parent_id"]:
        params = json.dumps(i["params"], sort_keys=True) if i["params"] else ""
        status += f"   ·   {i['operation']} {params} of {review.parent_name}"
    return i["name"], line2, status


def draw_review(review: LoopReview, path: str | Path, dpi: int = 100) -> Path:
    """Draw ``review`` to a PNG at ``path`` (atomically); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    info, sr = review.info, review.sample_rate
    audio = review.audio if review.audio.shape[0] > 1 else np.repeat(review.audio, 2, axis=0)
    n = audio.shape[1]
    seconds = n / sr
    starts_s = review.bar_starts / sr
    bars = len(review.chords)
    quarters = _quarters_per_bar(info["meter"])

    compact = bars > 6  # narrow bars: shorter texts
    fig = plt.figure(figsize=(min(26.0, max(13.0, 0.8 * bars + 7.0)), 8.6), dpi=dpi)
    grid = fig.add_gridspec(3, 1, height_ratios=[2.0, 2.3, 2.5], hspace=0.12, left=0.065, right=0.985,
                            top=0.83, bottom=0.07)
    ax_wave = fig.add_subplot(grid[0])
    ax_spec = fig.add_subplot(grid[1], sharex=ax_wave)
    ax_chroma = fig.add_subplot(grid[2], sharex=ax_wave)

    name, line2, status = _title(review)
    fig.text(0.065, 0.975, name, fontsize=13, fontweight="bold", va="top")
    fig.text(0.065, 0.947, line2, fontsize=9.5, va="top", color="#333333")
    fig.text(0.065, 0.924, status, fontsize=9.5, va="top", fontweight="bold",
             color=_STATUS_COLOURS.get(info["status"], "#333333"))

    # Waveform: left channel centred at +1, right at -1, min/max envelope with RMS inside.
    columns = min(n, 2400)
    x = (np.arange(columns) + 0.5) * seconds / columns
    for ch, (offset, colour, label) in enumerate(((1.0, _LEFT, "L"), (-1.0, _RIGHT, "R"))):
        lo, hi, rms = _envelope(audio[ch], columns)
        ax_wave.fill_between(x, offset + lo, offset + hi, color=colour, alpha=0.45, linewidth=0)
        ax_wave.fill_between(x, offset - rms, offset + rms, color=colour, alpha=0.9, linewidth=0)
        ax_wave.text(-0.006, offset, label, transform=ax_wave.get_yaxis_transform(), ha="right", va="center",
                     fontsize=9, fontweight="bold", color=colour)
    ax_wave.axhline(0.0, color="#cccccc", linewidth=0.6)
    ax_wave.set_ylim(-2.05, 2.05)
    ax_wave.set_yticks([])
    ax_wave.set_ylabel("waveform", labelpad=14)
    for c, a, b in zip(review.chords, starts_s[:-1], starts_s[1:]):
        mid = (a + b) / 2
        ax_wave.text(mid, 1.13, c["symbol"], transform=ax_wave.get_xaxis_transform(), ha="center", va="bottom",
                     fontsize=10 if compact else 12, fontweight="bold")
        ax_wave.text(mid, 1.02, c["roman"], transform=ax_wave.get_xaxis_transform(), ha="center", va="bottom",
                     fontsize=9, color="#555555", style="italic")
        ax_wave.text(a + 0.006 * seconds, 0.97, str(c["bar"]), transform=ax_wave.get_xaxis_transform(),
                     ha="left", va="top", fontsize=8, color="#777777")

    # Spectrogram on log-spaced rows; y ticks placed at their row positions.
    db, edges = log_spectrogram(audio, sr)
    ax_spec.imshow(db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                   extent=(0.0, seconds, 0.0, db.shape[0]), vmin=-DYNAMIC_RANGE_DB, vmax=0.0)
    ticks = [f for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000) if edges[0] <= f <= edges[-1]]
    log_lo, log_span = np.log(edges[0]), np.log(edges[-1] / edges[0])
    ax_spec.set_yticks([(np.log(f) - log_lo) / log_span * db.shape[0] for f in ticks],
                       [f"{f // 1000}k" if f >= 1000 else str(f) for f in ticks], fontsize=8)
    ax_spec.set_ylabel("Hz")

    # Chroma strip: one column per bar, rows C..B, each column scaled to its strongest class.
    peak = review.bar_chroma.max(axis=1, keepdims=True)
    shown = np.divide(review.bar_chroma, peak, out=np.zeros_like(review.bar_chroma), where=peak > 0)
    ax_chroma.pcolormesh(starts_s, np.arange(13), shown.T, cmap="Blues", vmin=0.0, vmax=1.0, shading="flat")
    mark = "#e8590c"
    for i, c in enumerate(review.chords if review.pitched else ()):
        a, b = starts_s[i], starts_s[i + 1]
        pad = 0.012 * (b - a)
        for pc in set(c["pitch_classes"]):
            ax_chroma.add_patch(Rectangle((a + pad, pc + 0.08), b - a - 2 * pad, 0.84, fill=False,
                                          edgecolor=mark, linewidth=1.8))
        ax_chroma.plot([a + 0.06 * (b - a)], [c["root_pc"] + 0.5], marker="o", markersize=6, color=mark)
        text, colour = f"{review.chord_share[i]:.0%}" + ("" if compact else f" on {c['symbol']} tones"), "#444444"
        if review.judged:
            text += (" ✓" if compact else "  ·  fits") if review.best_fit[i] else (" ✗" if compact else "  ·  does not fit")
            colour = "#2e8b57" if review.best_fit[i] else "#c0392b"
        ax_chroma.text((a + b) / 2, 12.15, text, ha="center", va="bottom", fontsize=8.5, color=colour,
                       fontweight="bold", zorder=5, bbox=_LABEL_BOX)
    if not review.pitched:
        ax_chroma.text(seconds / 2, 12.15, "drums: no pitch to hold against the chord labels", ha="center",
                       va="bottom", fontsize=8.5, color="#7f7f7f", fontweight="bold", zorder=5, bbox=_LABEL_BOX)
    ax_chroma.set_ylim(0, 13.1)
    # named as the loop's key writes them, like its chord symbols (Db in Ab major, not C#)
    ax_chroma.set_yticks(np.arange(12) + 0.5, pitch_class_names(info["key_tonic"], info["key_mode"]), fontsize=8)
    ax_chroma.set_ylabel("pitch class")
    legend = "seconds"
    if review.pitched:
        legend += "   (outlined: the labelled chord tones, dot: root"
        legend += (f"; {'✓' if compact else 'fits'} = the labelled chord beats its 11 transpositions)"
                   if review.judged else ")")
    ax_chroma.set_xlabel(legend, fontsize=8.5)

    for ax in (ax_wave, ax_spec, ax_chroma):
        for k in range(bars):  # beats (quarter notes) in light dotted lines, bars solid
            for q in range(1, int(np.ceil(quarters))):
                t = starts_s[k] + (starts_s[k + 1] - starts_s[k]) * q / quarters
                ax.axvline(t, color="#bbbbbb" if ax is not ax_spec else "#ffffff", linewidth=0.5,
                           linestyle=":", alpha=0.7)
        for t in starts_s:
            ax.axvline(t, color="#555555" if ax is not ax_spec else "#ffffff", linewidth=1.0,
                       alpha=0.9 if ax is not ax_spec else 0.6)
    ax_wave.set_xlim(0.0, seconds)
    ax_chroma.set_xticks(starts_s, [f"{t:.2f}" for t in starts_s], fontsize=8)
    plt.setp(ax_wave.get_xticklabels() + ax_spec.get_xticklabels(), visible=False)

    path = Path(path)
    metadata = {"Title": name, "Description": f"{line2} | {status}", "Software": None,
                CHROMA_TEXT_KEY: json.dumps(review.chroma_record(), separators=(",", ":"))}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata=metadata)
    plt.close(fig)
    return path


def _quarters_per_bar(meter: str) -> float:
    from farm.model import Meter

    return float(Meter.parse(meter).quarters_per_bar)


# -- functions the CLI wraps ------------------------------------------------------------------
def plot_path(catalog_root: str | Path, name: str, out: str | Path | None = None) -> Path:
    """Where a loop's picture goes: ``<out>/<name>.png``, ``out`` defaulting to ``<root>/plots``."""
    from farm.files import inside

    return inside(out if out is not None else Path(catalog_root) / PLOTS_DIR, f"{name}.png", "name")


def plot_loop(catalog_root: str | Path, loop_id: str, out: str | Path | None = None) -> Path:
    """``farm plot`` for one loop (id or unique prefix): its PNG in ``out`` (a directory)."""
    review = loop_review(catalog_root, loop_id)
    return draw_review(review, plot_path(catalog_root, review.info["name"], out))


def select_loops(catalog_root: str | Path, ids: Sequence[str] = (), where: str | None = None) -> list[str]:
    """Loop ids named (ids or unique prefixes) and/or matching an SQL condition on ``loops``.

    Every id and the condition are checked before anything is done: an unknown id or bad SQL is
    one FarmError.
    """
    from farm.catalog import Catalog

    if not ids and not where:
        raise FarmError("name loop ids or give --where CONDITION", field="ids")
    with Catalog(catalog_root, readonly=True) as cat:
        chosen = cat.resolve_ids(ids)
        if where:
            _, rows = cat.sql(f"SELECT id FROM loops WHERE ({where}) ORDER BY style, part, name")
            chosen += [r[0] for r in rows]
    return list(dict.fromkeys(chosen))


def plot_loops(catalog_root: str | Path, ids: Sequence[str] = (), where: str | None = None,
               out: str | Path | None = None, progress: bool = True) -> list[Path]:
    """``farm plot``: one PNG per loop named or matching ``where``; the paths written."""
    from farm.progress import progress as progress_bar

    chosen = select_loops(catalog_root, ids, where)
    if not chosen:  # nothing to draw: no folder made
        return []
    target = Path(out) if out is not None else Path(catalog_root) / PLOTS_DIR
    new_folders = missing_dirs(target)
    check_writable_dir(target, "--out")
    with removed_if_left_empty(new_folders):  # the pictures drawn before an error stay
        return [plot_loop(catalog_root, loop_id, target)
                for loop_id in progress_bar(chosen, "plot", "loop", disable=not progress or len(chosen) < 2)]
