"""A kit's folder and catalog rows.

``<kits folder>/LFK_<bpm>_<key>_<kit id>/``::

    stems/<role>.wav   each member's loop at its balanced gain, float32 WAV, all exactly one length
    mix.wav            the stems summed, float32, true peak at most -1 dBTP
    midi/<role>.mid    each member's part, moved as its audio was (transposed, re-timed)
    kit.json           exact labels: key, bpm, meter, chords bar by bar; each stem's loop id and transform
    kit.png            the stems and the mix under the chords

The balance is by loudness per role (``ROLE_LUFS``); when the sum would peak above the ceiling,
every stem is lowered by the same amount, so the stems still sum to the mix.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from farm.errors import FarmError

KIT_VERSION = 1
# The balance: integrated loudness per role in the mix. The drums sit lowest by this measure
# (their peaks carry them) so a kick's pitch does not cover the bass note on the downbeat.
ROLE_LUFS = {"drums": -21.0, "bass": -17.0, "chords": -19.0, "arp": -20.0, "melody": -20.0}
MIX_CEILING_DBTP = -1.0
CHORD_SHARE = 0.6  # a kit's mix must hold its chords: their tones' share of each bar's chroma
PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MARGIN_DB = 0.05  # under the ceiling, for the float32 rounding of the stems


@dataclass
class Stem:
    role: str
    loop: dict  # the stem loop's catalog row
    source_id: str
    transform: dict | None
    gain_db: float
    audio: np.ndarray  # float32 (channels, samples), gain applied
    midi: bytes | None

    @property
    def file(self) -> str:
        return f"stems/{self.role}.wav"

    @property
    def midi_file(self) -> str | None:
        return f"midi/{self.role}.mid" if self.midi is not None else None


@dataclass
class Kit:
    id: str
    name: str
    labels: dict
    stems: list[Stem]
    mix: np.ndarray
    sample_rate: int
    anchor_id: str
    roles: tuple[str, ...]
    style: str | None
    seed: int
    lufs: float
    true_peak_db: float
    path: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """``kit.json``."""
        return {"kit_version": KIT_VERSION, "id": self.id, "name": self.name, **self.labels,
                "style": self.style, "seed": self.seed, "anchor_id": self.anchor_id, "roles": list(self.roles),
                "mix": "mix.wav", "picture": "kit.png", "lufs": round(self.lufs, 2),
                "true_peak_db": round(self.true_peak_db, 2),
                "stems": [{"role": s.role, "file": s.file, "midi": s.midi_file, "loop_id": s.loop["id"],
                           "source_id": s.source_id, "part": s.loop["part"], "patch": s.loop["patch"],
                           "transform": ({"operation": s.transform["operation"], "params": s.transform["params"]}
                                         if s.transform else None),
                           "gain_db": round(s.gain_db, 4)} for s in self.stems]}


def kit_folder(root: Path, out: str | Path | None) -> Path:
    """The folder kits are written in: ``out``, or ``<root>/kits``; checked writable."""
    from farm.files import check_writable_dir

    from farm.catalog import KITS_DIR

    folder = Path(out) if out is not None else root / KITS_DIR
    if folder.exists() and not folder.is_dir():
        raise FarmError("is not a folder", file=folder, field="out")
    mine, theirs = folder.resolve(), root.resolve()
    if mine.is_relative_to(theirs) and not mine.is_relative_to(theirs / KITS_DIR):
        # anywhere else under the root, `farm check` would take the stems for lost loops
        raise FarmError(f"is inside the catalog root; kits go in {root / KITS_DIR} (the default) or outside "
                        "the root", file=folder, field="out")
    check_writable_dir(folder, "out")
    return folder


def _stem_midi(cat, row: dict) -> bytes | None:
    """The MIDI the stem loop plays: its part's file, or its parent's moved as the audio was."""
    from farm.model import Template
    from farm.permute.midi import permuted_midi

    source = row
    if row["operation"] not in ("render", "repatch"):
        source = next(cat.db.query("SELECT * FROM loops WHERE id = ?", [row["parent_id"]]))
    if not source["midi"]:
        return None
    path = cat.root / source["midi"]
    if not path.is_file():
        raise FarmError("the part's MIDI file is missing (run `farm check`)", file=path, field="midi")
    tdir = cat.db.execute("SELECT path FROM templates WHERE id = ?", [source["template_id"]]).fetchone()
    ticks = Template.load(cat.root / tdir[0]).ticks_per_bar if tdir else 0
    return permuted_midi(path.read_bytes(), row["operation"], json.loads(row["params"] or "{}"),
                         ticks_per_bar=ticks, what=str(path))


def assemble(cat, plan, sources: list[tuple[dict, np.ndarray]]) -> "Kit":
    """Balance, sum and label the kit in memory. ``sources``: each member's loop row (with its
    ``chords``) and float32 audio, in the plan's order (a permutation not yet catalogued included)."""
    from farm.audio import integrated_lufs, true_peak_dbtp
    from farm.model import canonical_json, content_id, format_bpm

    rows = [row for row, _ in sources]
    audios = [a if a.shape[0] == 2 else np.repeat(a[:1], 2, axis=0) for _, a in sources]
    lengths = {a.shape[1] for a in audios}
    rates = {r["sample_rate"] for r in rows}
    if len(lengths) != 1 or len(rates) != 1:
        raise FarmError(f"stems of {sorted(lengths)} samples at {sorted(rates)} Hz cannot be aligned",
                        file=cat.path, field="kit")
    sr = rates.pop()
    gains = [ROLE_LUFS[m.role] - float(row["lufs"]) for m, row in zip(plan.members, rows)]
    mix = sum(a.astype(np.float64) * 10 ** (g / 20) for a, g in zip(audios, gains))
    peak = true_peak_dbtp(mix.astype(np.float32), sr)
    if peak > MIX_CEILING_DBTP - _MARGIN_DB:
        gains = [g + MIX_CEILING_DBTP - _MARGIN_DB - peak for g in gains]
    gains = [round(g, 4) for g in gains]
    stems_audio = [(a.astype(np.float64) * 10 ** (g / 20)).astype(np.float32) for a, g in zip(audios, gains)]
    mix = np.sum([s.astype(np.float64) for s in stems_audio], axis=0).astype(np.float32)
    labels = _labels(plan, rows, sr, mix.shape[1])
    stems = [Stem(m.role, row, m.source["id"], m.transform, g, s, _stem_midi(cat, row))
             for m, row, g, s in zip(plan.members, rows, gains, stems_audio)]
    kit_id = content_id(canonical_json({"kit_version": KIT_VERSION, "stems": [
        [s.role, s.loop["id"], s.gain_db] for s in stems]}))
    key = labels["key"] or "drums"
    name = f"LFK_{format_bpm(labels['bpm'])}_{key}_{kit_id}"
    styles = {r["style"] for r in rows}
    return Kit(kit_id, name, labels, stems, mix, sr, plan.anchor_id, plan.roles,
               styles.pop() if len(styles) == 1 else None, plan.seed, float(integrated_lufs(mix, sr)),
               float(true_peak_dbtp(mix, sr)))


def label_problem(kit: Kit) -> str | None:
    """What the mix says against the kit's labels, or None: in every bar the labelled chord's
    tones hold at least ``CHORD_SHARE`` of the chroma, and on every downbeat (its first beat,
    below 300 Hz) the strongest pitch class is the labelled bass."""
    from farm.audio import chroma

    sr, labels = kit.sample_rate, kit.labels
    beat = round(60.0 / labels["bpm"] * 4 / int(labels["meter"].split("/")[1]) * sr)
    for c in labels["chords"]:
        start, end = round(c["start_s"] * sr), round(c["end_s"] * sr)
        share = float(chroma(kit.mix, sr, start, end)[c["pitch_classes"]].sum())
        if share < CHORD_SHARE:
            return f"bar {c['bar']}: {c['symbol']}'s tones are {share:.0%} of the mix's chroma (under {CHORD_SHARE:.0%})"
        low = int(np.argmax(chroma(kit.mix, sr, start, start + beat, fmax=300.0)))
        if low != c["bass_pc"]:
            return f"bar {c['bar']}: the lowest pitch class on the downbeat is {PC_NAMES[low]}, not {c['symbol']}'s bass"
    return None


def _labels(plan, rows: list[dict], sr: int, samples: int) -> dict:
    """The kit's labels: those of its first harmonic stem (every harmonic stem holds the same
    chords), the tempo and length every stem shares."""
    harmonic = next((r for m, r in zip(plan.members, rows) if m.role != "drums"), None)
    ref = harmonic or rows[0]
    chords = ref["chords"] if harmonic else []
    return {"key": ref["key"] if harmonic else None, "key_tonic": ref["key_tonic"] if harmonic else None,
            "key_mode": ref["key_mode"] if harmonic else None, "camelot": ref["camelot"] if harmonic else None,
            "bpm": ref["bpm"], "meter": ref["meter"], "bars": ref["bars"], "sample_rate": sr, "samples": samples,
            "duration_s": samples / sr, "progression": ref["progression"] if harmonic else "",
            "chords": chords}


def stem_tags(kit: dict, name: str, role: str | None) -> dict:
    """The labels a kit's audio file carries where DAWs read them (``farm.tags``): the kit's
    (``kit.json``), its role as the part; the drums, and a kit without a key, carry no key."""
    from farm.model import note_name_to_pc

    keyed = bool(kit["key"]) and role != "drums"
    return {"name": name, "style": kit["style"] or "", "part": (role or "mix") if keyed else "drums",
            "key": kit["key"] or "", "key_mode": kit["key_mode"] or "major",
            "tonic_pc": note_name_to_pc(kit["key_tonic"]) if kit["key_tonic"] else 0, "bpm": kit["bpm"],
            "meter": kit["meter"], "bars": kit["bars"], "progression": kit["progression"], "id": kit["id"]}


def write_kit(kit: Kit, parent: Path) -> Path:
    """The kit's folder under ``parent``, whole or not at all (a temporary folder renamed)."""
    from farm.files import atomic_dir
    from farm.tags import encode

    target = parent / kit.name
    labels = kit.to_json()
    with atomic_dir(target) as tmp:
        (tmp / "stems").mkdir()
        if any(s.midi is not None for s in kit.stems):
            (tmp / "midi").mkdir()
        for s in kit.stems:
            (tmp / s.file).write_bytes(encode(s.audio, kit.sample_rate, "wav32f",
                                              stem_tags(labels, f"{kit.name}_{s.role}", s.role)))
            if s.midi is not None:
                (tmp / s.midi_file).write_bytes(s.midi)
        (tmp / "mix.wav").write_bytes(encode(kit.mix, kit.sample_rate, "wav32f",
                                             stem_tags(labels, f"{kit.name}_mix", None)))
        (tmp / "kit.json").write_text(json.dumps(labels, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        draw_kit(kit, tmp / "kit.png")
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
    return target


def draw_kit(kit: Kit, path: Path) -> Path:
    """The stems one above the other and the mix below, bars marked, chords named on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(s.role, s.audio, f"{s.loop['patch']}" + (f"  ({_transform_text(s.transform)})" if s.transform else ""))
            for s in kit.stems] + [("mix", kit.mix, f"{kit.lufs:.1f} LUFS, {kit.true_peak_db:.1f} dBTP")]
    n = kit.mix.shape[1]
    seconds = n / kit.sample_rate
    fig, axes = plt.subplots(len(rows), 1, figsize=(13, 1.25 * len(rows) + 1.3), sharex=True, dpi=100)
    columns = min(n, 2000)
    edges = np.linspace(0, n, columns + 1).astype(int)
    x = (np.arange(columns) + 0.5) * seconds / columns
    bar_s = np.arange(kit.labels["bars"] + 1) * seconds / kit.labels["bars"]
    for ax, (role, audio, note) in zip(axes, rows):
        mono = np.abs(audio).max(axis=0)
        env = np.maximum.reduceat(mono, edges[:-1])
        colour = "#333333" if role == "mix" else "#3b6ea5"
        ax.fill_between(x, -env, env, color=colour, linewidth=0)
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([])
        ax.set_ylabel(role, rotation=0, ha="right", va="center", fontweight="bold")
        ax.text(0.995, 0.92, note, transform=ax.transAxes, ha="right", va="top", fontsize=8, color="#555555")
        for b in bar_s:
            ax.axvline(b, color="#bbbbbb", linewidth=0.8)
    for c, a, b in zip(kit.labels["chords"], bar_s[:-1], bar_s[1:]):
        axes[0].text((a + b) / 2, 1.08, c["symbol"], transform=axes[0].get_xaxis_transform(), ha="center",
                     va="bottom", fontsize=11, fontweight="bold")
    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(0, seconds)
    key = kit.labels["key"] or "no key (drums)"
    fig.suptitle(f"{kit.name}   {key}, {kit.labels['bpm']:g} BPM, {kit.labels['meter']}, {kit.labels['bars']} bars",
                 fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def _transform_text(transform: dict) -> str:
    p = transform["params"]
    return f"pitch {p['semitones']:+d}" if transform["operation"] == "pitch" else f"stretch to {p['bpm']:g} BPM"


def _relative(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def catalogue_kit(cat, kit: Kit, parent: Path) -> None:
    """The kit's row and its members', pending, in one transaction."""
    from farm.sidecar import utc_now

    kit.path = _relative(cat.root, parent / kit.name)
    with cat.db.atomic():
        cat.db["kits"].insert({
            "id": kit.id, "name": kit.name, "style": kit.style, "key": kit.labels["key"] or "",
            "bpm": kit.labels["bpm"], "meter": kit.labels["meter"], "bars": kit.labels["bars"],
            "progression": kit.labels["progression"], "roles": json.dumps(list(kit.roles)), "seed": kit.seed,
            "anchor_id": kit.anchor_id, "path": kit.path, "lufs": round(kit.lufs, 2),
            "true_peak_db": round(kit.true_peak_db, 2), "status": "pending", "created_at": utc_now()})
        cat.db["kit_members"].insert_all([{
            "kit_id": kit.id, "role": s.role, "loop_id": s.loop["id"], "source_id": s.source_id,
            "transform": json.dumps({"operation": s.transform["operation"], "params": s.transform["params"]},
                                    sort_keys=True) if s.transform else None,
            "gain_db": s.gain_db, "stem": s.file, "midi": s.midi_file} for s in kit.stems])


def kit_record(cat, kit_id: str) -> dict | None:
    """A catalogued kit: its row, its ``members`` in the kit's role order and ``folder`` (the
    absolute path of its folder); None when there is no such kit."""
    row = next(cat.db.query("SELECT * FROM kits WHERE id = ?", [kit_id]), None)
    if row is None:
        return None
    row["roles"] = json.loads(row["roles"])
    order = {r: i for i, r in enumerate(row["roles"])}
    members = list(cat.db.query("SELECT * FROM kit_members WHERE kit_id = ?", [kit_id]))
    for m in members:
        m["transform"] = json.loads(m["transform"]) if m["transform"] else None
    row["members"] = sorted(members, key=lambda m: order.get(m["role"], len(order)))
    row["folder"] = str(cat.root / row["path"]) if not os.path.isabs(row["path"]) else row["path"]
    return row
