"""A piano-roll picture of a template: every part over the bars, chord symbols and romans on top."""
from __future__ import annotations

import io
from pathlib import Path

import mido

from farm.files import atomic_path
from farm.model import Template

PART_COLOURS = {"chords": "#4c72b0", "bass": "#55a868", "arp": "#8172b2", "melody": "#c44e52", "drums": "#444444"}


def _notes(data: bytes) -> list[tuple[int, int, int, int]]:
    """(start tick, end tick, pitch, velocity) of every note in a part file."""
    out, now, held = [], 0, {}
    for msg in mido.merge_tracks(mido.MidiFile(file=io.BytesIO(data)).tracks):
        now += msg.time
        if msg.type == "note_on" and msg.velocity:
            held[msg.note] = (now, msg.velocity)
        elif msg.type in ("note_on", "note_off") and msg.note in held:
            start, vel = held.pop(msg.note)
            out.append((start, now, msg.note, vel))
    return out


def piano_roll_png(template: Template, midi: dict[str, bytes], path: str | Path) -> Path:
    """Draw the template's parts (one panel each, time in bars) to a PNG at ``path``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in template.parts if p.name in midi]
    tpb = template.ticks_per_bar
    heights = [1.4 if p.name == "drums" else 2.0 for p in parts]
    fig, axes = plt.subplots(len(parts), 1, figsize=(max(6.0, 1.6 * template.bars + 2), sum(heights) + 0.8),
                             sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, part in zip(axes[:, 0], parts):
        notes = _notes(midi[part.name])
        colour = PART_COLOURS.get(part.name, "#333333")
        for start, end, pitch, vel in notes:
            width = (end - start) / tpb
            ax.broken_barh([(start / tpb, width)], (pitch - 0.4, 0.8), facecolors=colour,
                           alpha=0.35 + 0.65 * vel / 127, linewidth=0)
        if notes:
            lo, hi = min(n[2] for n in notes), max(n[2] for n in notes)
            ax.set_ylim(lo - 2, hi + 2)
        for bar in range(template.bars + 1):
            ax.axvline(bar, color="#999999", linewidth=0.8)
        ax.set_ylabel(part.name, rotation=0, ha="right", va="center")
        ax.tick_params(axis="y", labelsize=7)
    top = axes[0, 0]
    for chord in template.chords:
        top.text(chord.bar - 0.5, 1.13, chord.symbol, transform=top.get_xaxis_transform(), ha="center",
                 va="bottom", fontsize=10, fontweight="bold")
        top.text(chord.bar - 0.5, 1.02, chord.roman, transform=top.get_xaxis_transform(), ha="center",
                 va="bottom", fontsize=8)
    axes[-1, 0].set_xlim(0, template.bars)
    axes[-1, 0].set_xticks([b + 0.5 for b in range(template.bars)], [str(b + 1) for b in range(template.bars)])
    axes[-1, 0].set_xlabel("bar")
    fig.suptitle(f"{template.style}  {template.key.short}  {template.bpm:g} bpm  {template.meter}  ({template.id})",
                 fontsize=10, y=0.995)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path
