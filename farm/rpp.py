"""REAPER project (RPP) files for batch rendering: many loops per project, one region per loop.

A chunk of loops becomes one ``.rpp``: each loop's MIDI item sits on the track of its patch,
whose FX chain is the patch's ``.RfxChain`` pasted verbatim (plugin state is opaque: it is
captured from REAPER, never written here). Every loop gets a region named after it, the tempo
envelope switches tempo and meter at each region start, and the render settings make REAPER
write one 24-bit WAV per region (``$region``) at the batch's sample rate, which is also the
project's forced sample rate.

The MIDI goes into the project as in-project MIDI (``HASDATA`` and ``E`` event lines, the form
REAPER saves by default), copied event for event from the part's MIDI file at its own ticks per
quarter note, and closed by an all-notes-off at the loop end, which is where the source ends.
A project therefore depends on no file but its plugins: one written with ``--rpp-only`` can be
rendered on another machine.

Positions are chosen so that region bounds fall on samples at the project's sample rate: a
region starts on a whole second and lasts ``loop_samples + tail_samples`` samples plus a quarter
of a sample, so the file REAPER writes has exactly that many frames whether it rounds or
truncates the region's end to a sample (and no floating-point error can tip it either way).

RPP text: nested ``<TAG params`` ... ``>`` blocks, one attribute per line, strings quoted with
``"``, ``'`` or a backtick, whichever the string does not contain (REAPER's own rule).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

from farm.errors import FarmError
from farm.files import atomic_write_text
from farm.model import content_id

RPP_WRITER_VERSION = "2"  # 2: in-project MIDI, forced project sample rate

# Render format block for WAV, 24-bit PCM: "evaw" (the sink's id, reversed) + 0x18 (24) + 0 + 1,
# base64, as REAPER saves it in a project's <RENDER_CFG>.
WAV24_RENDER_CFG = "ZXZhdxgAAQ=="
RENDER_BOUNDS_ALL_REGIONS = 3
# Tempo envelope point shape 1 = square: tempo jumps at the point and holds.
TEMPO_SHAPE_SQUARE = 1
DEFAULT_GAP_S = 2.0
REGION_END_PAD_SAMPLES = 0.25  # see the module docstring
# Top-level blocks a chain file may hold: one per plugin (VST covers VST3; CONTAINER in REAPER 7).
PLUGIN_TAGS = ("VST", "JS", "AU", "CLAP", "LV2", "DX", "VIDEO_EFFECT", "CONTAINER")
# Lines of a track's <FXCHAIN> that describe the window, not the chain (absent from .RfxChain files).
_WINDOW_LINES = ("WNDRECT", "SHOW", "LASTSEL", "DOCKED")


# -- tokens ---------------------------------------------------------------------------------------
def quote(text: str) -> str:
    """A string as one RPP token: quoted with the first of ``" ' ` `` it does not contain."""
    text = str(text)
    for q in ('"', "'", "`"):
        if q not in text:
            return f"{q}{text}{q}"
    return "`" + text.replace("`", "'") + "`"


def number(x: float | int | Fraction) -> str:
    """A number as REAPER reads it back exactly (shortest round-trip decimal, no exponent)."""
    if isinstance(x, int):
        return str(x)
    value = float(x)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    if "e" in text or "E" in text:
        text = f"{value:.17f}".rstrip("0").rstrip(".")
    return text


def timesig_code(numerator: int, denominator: int) -> int:
    """Tempo-envelope time signature: ``numerator + denominator * 65536`` (4/4 -> 262148)."""
    return int(numerator) + int(denominator) * 65536


# -- FX chains ------------------------------------------------------------------------------------
def load_fxchain(path: str | Path, *, patch_file: str | Path | None = None) -> str:
    """The text of an ``.RfxChain`` file, checked to hold at least one plugin and balanced blocks.

    Errors name ``patch_file`` (the TOML that points at the chain) and its ``reaper.fxchain``
    field when given, since that is where the user fixes it.
    """
    path = Path(path)
    where = dict(file=patch_file or path, field="reaper.fxchain")
    if not path.is_file():
        raise FarmError(f"FX chain file not found: {path} (save it from REAPER with "
                        f"`farm patch pull` or the farm_save_fxchain ReaScript)", **where)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FarmError(f"{path.name} is not a text .RfxChain file", **where) from None
    text = normalise_chain_text(text)
    problem = fxchain_problem(text)
    if problem:
        raise FarmError(f"{path.name}: {problem}", **where)
    return text


def normalise_chain_text(text: str) -> str:
    """CRLF to LF, no trailing blanks, no leading indentation (re-indented when embedded)."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(line for line in lines if line) + "\n"


def fxchain_problem(text: str) -> str | None:
    """Why ``text`` is not a usable FX chain, or None."""
    depth, plugins = 0, 0
    for line in text.splitlines():
        if line.startswith("<"):
            if depth == 0 and line[1:].split(" ", 1)[0] in PLUGIN_TAGS:
                plugins += 1
            depth += 1
        elif line == ">":
            depth -= 1
            if depth < 0:
                return "unbalanced '>' (more blocks closed than opened)"
    if depth != 0:
        return f"{depth} block(s) never closed"
    if plugins == 0:
        return f"no plugin in the chain (expected a <{'/<'.join(PLUGIN_TAGS[:4])} ...> block)"
    return None


def fxchain_from_track_chunk(chunk: str) -> str:
    """The ``.RfxChain`` text of a track state chunk's ``<FXCHAIN>`` (window lines dropped)."""
    lines = normalise_chain_text(chunk).splitlines()
    start = next((i for i, line in enumerate(lines) if line == "<FXCHAIN" or line.startswith("<FXCHAIN ")),
                 None)
    if start is None:
        raise FarmError("the track has no FX chain", field="track")
    depth, body = 0, []
    for line in lines[start:]:
        if line.startswith("<"):
            depth += 1
        elif line == ">":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and (line.startswith("<FXCHAIN") or line.split(" ", 1)[0] in _WINDOW_LINES):
            continue
        body.append(line)
    text = "\n".join(body) + "\n"
    problem = fxchain_problem(text)
    if problem:
        raise FarmError(f"the track's FX chain is unusable: {problem}", field="track")
    return text


# -- project plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionPlan:
    """One loop in a project: its region, its MIDI item, and the file REAPER renders for it.

    ``start_s`` is a whole number of seconds; the region lasts ``samples`` frames
    (``loop_samples + tail_samples``); the MIDI item lasts the loop (``item_length_s`` seconds,
    ``item_quarters`` quarter notes).
    """

    job_index: int
    name: str
    start_s: int
    loop_samples: int
    tail_samples: int
    sample_rate: int
    bpm: float
    meter_numerator: int
    meter_denominator: int
    item_length_s: float
    item_quarters: Fraction
    midi_path: Path
    track: str

    @property
    def samples(self) -> int:
        return self.loop_samples + self.tail_samples

    @property
    def length_s(self) -> float:
        return self.samples / self.sample_rate

    @property
    def end_s(self) -> float:
        """Where the region ends: a quarter sample past its last frame."""
        return self.start_s + (self.samples + REGION_END_PAD_SAMPLES) / self.sample_rate

    @property
    def file_name(self) -> str:
        return f"{self.name}.wav"


@dataclass(frozen=True)
class TrackPlan:
    """A track carrying one patch's FX chain."""

    name: str
    fxchain: str
    patch_file: Path


@dataclass
class ProjectPlan:
    """One ``.rpp``: where it goes, where REAPER renders it, and what it holds."""

    id: str
    path: Path
    render_dir: Path
    sample_rate: int
    tracks: list[TrackPlan]
    regions: list[RegionPlan]
    text: str = field(default="", repr=False)

    def expected_files(self) -> dict[int, Path]:
        """``{job index: rendered WAV path}``."""
        return {r.job_index: self.render_dir / r.file_name for r in self.regions}


def region_name(index: int, job) -> str:
    """A file-safe, unique region name: ``0007_<template id>_<part>_<patch>``."""
    raw = f"{index:04d}_{job.template.id}_{job.part}_{job.patch.name}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw)


def fxchain_for(patch) -> str:
    """The FX chain text of ``patch``'s ``[reaper]`` table, or a FarmError naming the TOML field. A
    Faust patch's chain is made from its ``.dsp`` (``farm.render.jsfx``)."""
    if getattr(patch, "kind", None) == "faust":
        from farm.render.jsfx import faust_fxchain

        return faust_fxchain(patch)
    if getattr(patch, "reaper_fxchain", None) is None:
        raise FarmError(f"patch {patch.name!r} has no REAPER FX chain: add "
                        f"[reaper] fxchain = \"{patch.name}.RfxChain\" and save the chain from REAPER "
                        f"with `farm patch pull {patch.name} --track N`",
                        file=patch.path, field="reaper.fxchain")
    return load_fxchain(patch.reaper_fxchain, patch_file=patch.path)


def plan_project(jobs: Sequence, indices: Sequence[int], directory: str | Path, *,
                 gap_s: float = DEFAULT_GAP_S, name: str = "chunk") -> ProjectPlan:
    """Lay out ``jobs[i] for i in indices`` as regions of one project in ``directory``.

    Regions follow one another in order, each starting on a whole second at least ``gap_s``
    seconds after the previous region's end, so one loop's tail never sounds in the next.
    """
    chosen = [jobs[i] for i in indices]
    if not chosen:
        raise ValueError("a project needs at least one loop")
    rates = {j.sample_rate for j in chosen}
    if len(rates) != 1:
        raise FarmError(f"one project renders at one sample rate, got {sorted(rates)}", field="sample_rate")
    sample_rate = rates.pop()

    tracks: dict[str, TrackPlan] = {}
    regions: list[RegionPlan] = []
    cursor = 0.0
    for index, job in zip(indices, chosen):
        patch = job.patch
        if patch.name not in tracks:
            tracks[patch.name] = TrackPlan(patch.name, fxchain_for(patch), Path(patch.path))
        template = job.template
        start = int(math.ceil(cursor))
        tail = int(round(float(patch.tail_s) * sample_rate))
        region = RegionPlan(
            job_index=index, name=region_name(index, job), start_s=start,
            loop_samples=job.loop_samples, tail_samples=tail, sample_rate=sample_rate,
            bpm=float(template.bpm), meter_numerator=template.meter.numerator,
            meter_denominator=template.meter.denominator, item_length_s=template.duration_s,
            item_quarters=template.bars * template.quarters_per_bar,
            midi_path=Path(job.midi_path).resolve(), track=patch.name)
        if not region.midi_path.is_file():
            raise FarmError("part MIDI file not found", file=region.midi_path, field=job.part)
        regions.append(region)
        cursor = region.end_s + gap_s

    identity = [RPP_WRITER_VERSION, str(sample_rate), str(gap_s)]
    for index, job in zip(indices, chosen):
        identity += [str(index), job.template.id, job.part, job.patch.name, job.patch.content_hash,
                     str(job.midi_path)]
    project_id = content_id(*identity)
    directory = Path(directory).resolve()
    plan = ProjectPlan(id=project_id, path=directory / f"{name}_{project_id}.rpp",
                       render_dir=directory / f"{name}_{project_id}", sample_rate=sample_rate,
                       tracks=list(tracks.values()), regions=regions)
    plan.text = project_text(plan)
    return plan


def plan_projects(jobs: Sequence, directory: str | Path, *, loops_per_project: int = 64,
                  gap_s: float = DEFAULT_GAP_S) -> list[ProjectPlan]:
    """Split ``jobs`` into projects of at most ``loops_per_project`` loops, one per sample rate run."""
    if loops_per_project < 1:
        raise FarmError("must be at least 1", field="loops_per_project")
    by_rate: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        by_rate.setdefault(job.sample_rate, []).append(i)
    plans = []
    for rate in sorted(by_rate):
        indices = by_rate[rate]
        for k in range(0, len(indices), loops_per_project):
            plans.append(plan_project(jobs, indices[k:k + loops_per_project], directory, gap_s=gap_s,
                                      name=f"chunk{len(plans):03d}"))
    return plans


def write_project(plan: ProjectPlan) -> Path:
    """Write ``plan.path`` atomically and create its render directory; return the path."""
    atomic_write_text(plan.path, plan.text)
    plan.render_dir.mkdir(parents=True, exist_ok=True)
    return plan.path


# -- text -----------------------------------------------------------------------------------------
def _indent(lines: Iterable[str], depth: int) -> list[str]:
    pad = "  " * depth
    return [pad + line for line in lines]


def project_text(plan: ProjectPlan) -> str:
    """The RPP text of ``plan`` (deterministic: same plan, same bytes)."""
    first = plan.regions[0]
    out = ['<REAPER_PROJECT 0.1 "7.0" 0']
    body = [
        f"SAMPLERATE {plan.sample_rate} 1 0",  # 1: the project runs at this rate
        f"TEMPO {number(first.bpm)} {first.meter_numerator} {first.meter_denominator}",
        f"RENDER_FILE {quote(str(plan.render_dir))}",
        "RENDER_PATTERN $region",
        f"RENDER_FMT 0 2 {plan.sample_rate}",
        "RENDER_1X 0",
        f"RENDER_RANGE {RENDER_BOUNDS_ALL_REGIONS} 0 0 0 1000",
        "RENDER_ADDTOPROJ 0",
        "RENDER_STEMS 0",
        "RENDER_DITHER 0",
        "<RENDER_CFG",
        f"  {WAV24_RENDER_CFG}",
        ">",
        "<TEMPOENVEX",
        "  ACT 1 -1",
        "  VIS 1 0 1",
        "  ARM 0",
        f"  DEFSHAPE {TEMPO_SHAPE_SQUARE} -1 -1",
    ]
    for r in plan.regions:  # every region starts with its own tempo and meter
        body.append(f"  PT {number(r.start_s)} {number(r.bpm)} {TEMPO_SHAPE_SQUARE} "
                    f"{timesig_code(r.meter_numerator, r.meter_denominator)}")
    body.append(">")
    for number_, r in enumerate(plan.regions, start=1):
        body.append(f"MARKER {number_} {number(r.start_s)} {quote(r.name)} 1")
        body.append(f"MARKER {number_} {number(r.end_s)} \"\" 1")
    for track in plan.tracks:
        body += _track_lines(track, [r for r in plan.regions if r.track == track.name])
    out += _indent(body, 1)
    out.append(">")
    return "\n".join(out) + "\n"


def track_chunk(name: str, fxchain: str, items: Sequence[tuple[float, float, Path, str, Fraction]]) -> str:
    """A ``<TRACK>`` state chunk: ``fxchain`` and in-project MIDI items.

    ``items`` are ``(position s, length s, MIDI file, name, length in quarter notes)``. Used both
    inside written projects and with ``SetTrackStateChunk`` in a running REAPER.
    """
    lines = ["<TRACK", f"  NAME {quote(name)}", "  PEAKCOL 16576", "  BEAT -1",
             "  VOLPAN 1 0 -1 -1 1", "  MUTESOLO 0 0 0", "  NCHAN 2", "  MAINSEND 1 0",
             "  <FXCHAIN", "    SHOW 0", "    LASTSEL 0", "    DOCKED 0"]
    lines += _indent(_reindent_chain(fxchain), 2)
    lines.append("  >")
    for position, length, midi, item_name, quarters in items:
        lines += _indent([
            "<ITEM",
            f"  POSITION {number(position)}",
            f"  LENGTH {number(length)}",
            "  LOOP 0",
            f"  NAME {quote(item_name)}",
            "  <SOURCE MIDI",
            *_indent(midi_source_lines(midi, quarters), 2),
            "  >",
            ">",
        ], 1)
    lines.append(">")
    return "\n".join(lines) + "\n"


# Channel voice messages: note off/on, poly pressure, CC, program, channel pressure, pitch bend.
_CHANNEL_STATUS = range(0x80, 0xF0)
ALL_NOTES_OFF = (0xB0, 0x7B, 0x00)  # CC 123 on channel 1; REAPER closes its MIDI sources with it


def midi_source_lines(path: str | Path, quarters: Fraction | float) -> list[str]:
    """The body of an in-project ``<SOURCE MIDI``: ``HASDATA 1 <ppq> QN`` and ``E`` lines.

    Every channel message of every track of the MIDI file, merged in time order (ties keep the
    file's order, note-offs first so a repeated note is not cut), as ``E <ticks since the
    previous event> <status> <data> <data>`` in hex (always three bytes); meta events (tempo, meter, names) are
    left out, the project's tempo map decides the timing. The last line is an all-notes-off
    ``quarters`` quarter notes from the start: the source, and the loop, end there.
    """
    import mido

    path = Path(path)
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, ValueError, EOFError, IndexError) as err:
        raise FarmError(f"unreadable MIDI file ({err})", file=path, field="midi") from None
    if midi.type == 2:
        raise FarmError("MIDI type 2 (independent sequences) is not supported", file=path, field="midi")
    ppq = int(midi.ticks_per_beat)
    events = []
    for track_index, track in enumerate(midi.tracks):
        tick = 0
        for order, msg in enumerate(track):
            tick += msg.time
            if msg.is_meta or msg.type in ("sysex",):
                continue
            raw = msg.bytes()
            if raw[0] not in _CHANNEL_STATUS:
                continue
            is_off = raw[0] & 0xF0 == 0x80 or (raw[0] & 0xF0 == 0x90 and raw[2] == 0)
            events.append((tick, 0 if is_off else 1, track_index, order, raw))
    events.sort(key=lambda e: e[:4])
    end = Fraction(quarters) * ppq
    if end.denominator != 1:
        raise FarmError(f"the loop ({quarters} quarter notes) does not end on a tick at {ppq} ticks per "
                        f"quarter note", file=path, field="ppq")
    out, last = [f"HASDATA 1 {ppq} QN"], 0
    for tick, _off, _track, _order, raw in events:
        # Always three bytes: program change and channel pressure are padded with 00, as REAPER
        # writes them (its parser reads an E line with fewer bytes as something else).
        out.append(f"E {tick - last} " + " ".join(f"{b:02x}" for b in (bytes(raw) + b"\x00\x00")[:3]))
        last = tick
    out.append(f"E {max(0, int(end) - last)} " + " ".join(f"{b:02x}" for b in ALL_NOTES_OFF))
    return out


def _track_lines(track: TrackPlan, regions: Sequence[RegionPlan]) -> list[str]:
    items = [(r.start_s, r.item_length_s, r.midi_path, r.name, r.item_quarters) for r in regions]
    return track_chunk(track.name, track.fxchain, items).splitlines()


def _reindent_chain(fxchain: str) -> list[str]:
    """Chain lines indented by block depth, as REAPER writes them."""
    out, depth = [], 0
    for line in fxchain.splitlines():
        if line == ">":
            depth -= 1
        out.append("  " * max(depth, 0) + line)
        if line.startswith("<"):
            depth += 1
    return out
