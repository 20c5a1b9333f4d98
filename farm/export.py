"""Export catalogued loops into a folder a producer drops into a DAW.

Layout of an export folder (``farm export --out DIR``)::

    catalog.csv                                          one row per exported loop
    <group>/LF_<bpm>_<part>_<patch>_<key>_<id>.wav       the loop (or .flac)
    <group>/LF_<bpm>_<part>_<patch>_<key>_<id>.json      its sidecar: every label, paths relative to DIR
    <group>/LF_<bpm>_<part>_<patch>_<key>_<id>.mid      the part's MIDI, for rendered loops

``<group>`` is the loop's style (default), its key (``06A-Gm``: Camelot code first, so folders
sort around the wheel), its part, or nothing (``--group-by none``).

WAV files carry acid, smpl and INFO chunks, FLAC files Vorbis comments (``farm.tags``): tempo,
key (none for drums), meter, bars and chords where DAWs and sample browsers read them.

The audio is read from the catalog (its sha256 checked) and quantised here, once, to the
format asked for. Every file is written under a temporary name and renamed into place, audio
before its sidecar, so a sidecar means a complete export. A loop is exported once per folder:
running the same export again writes nothing, an interrupted one is completed, and exporting
a loop again in another format or grouping replaces the old copy.

An export folder mirrors one selection of the catalog as it is now: a loop exported before
that the export no longer selects (rejected since, or left out of a narrower ``--where``) has
its files removed, and the summary says how many. Only files the export wrote itself are ever
replaced or removed: ``.loopfarm-export.json`` in the folder lists each of them with its
sha256 (written before any file, so an interrupted export still knows its own files). A file
in the way that is not on that list, or was changed since, is never touched: a file in the way
stops the export before it writes anything, a changed one is kept and counted. The export
folder is never the catalog root, inside it, or a folder that holds it. ``catalog.csv`` is
rebuilt from the listed sidecars after every export.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from farm.errors import FarmError
from farm.files import (atomic_write_bytes, atomic_write_text, check_writable_dir, inside,
                        missing_dirs, removed_if_left_empty, safe_relative_path)
from farm.model import canonical_json, daw_key_name
# The encoders live in farm.tags; their names stay importable from here.
from farm.tags import (ACID_ROOT_BASE, SMPL_UNITY_BASE, acid_chunk, encode, loop_beats, riff_bytes,  # noqa: F401
                       riff_chunks, smpl_chunk, vorbis_tags, wav_bytes)

GROUPINGS = ("style", "key", "part", "none")
STATUS_CHOICES = ("approved", "pending", "rejected", "any")
CSV_NAME = "catalog.csv"
MANIFEST_NAME = ".loopfarm-export.json"  # the files this folder's exports wrote: {path: sha256}
CSV_COLUMNS = ("file", "id", "name", "style", "part", "role", "patch", "key", "camelot", "bpm", "meter",
               "bars", "beats", "progression", "romans", "samples", "sample_rate", "duration_s", "format",
               "lufs", "true_peak_db", "status", "operation", "parent_id", "params", "midi", "sha256")

# -- the folder -------------------------------------------------------------------------------
def check_export_folder(catalog_root: str | Path, out: str | Path) -> Path:
    """``out`` as a Path, refused (FarmError naming ``--out``) when it is empty, a file, the
    catalog root, inside it, or a folder that holds it: an export replaces and removes files in
    its folder, and `farm check` would count exported audio under the root as orphans."""
    if not str(out).strip():
        raise FarmError("is empty; name the folder to export into", field="--out")
    out, root = Path(out), Path(catalog_root)
    if out.exists() and not out.is_dir():
        raise FarmError("exists and is not a folder", file=out, field="--out")
    mine, theirs = out.resolve(), root.resolve()
    if mine == theirs:
        raise FarmError("is the catalog root; export to a folder outside it", file=out, field="--out")
    if mine.is_relative_to(theirs):
        raise FarmError(f"is inside the catalog root {root}; export to a folder outside it", file=out,
                        field="--out")
    if theirs.is_relative_to(mine):
        raise FarmError(f"holds the catalog root {root}; export to a folder outside it", file=out,
                        field="--out")
    return out


def read_manifest(out: Path, name: str = MANIFEST_NAME) -> dict[str, str | None]:
    """The files earlier exports wrote into ``out``: ``{path relative to out: sha256}`` (None: a
    write that was under way when an export stopped). A missing or unreadable manifest is empty:
    the export then owns nothing in the folder."""
    data = _read_json(out / name)
    files = data.get("files") if data else None
    if not isinstance(files, dict):
        return {}
    return {rel: sha for rel, sha in files.items()
            if safe_relative_path(rel) and (sha is None or isinstance(sha, str))}


def write_manifest(out: Path, files: dict[str, str | None], name: str = MANIFEST_NAME) -> None:
    _write_if_changed(out / name, canonical_json({"files": dict(sorted(files.items()))}))


def _write_if_changed(path: Path, text: str) -> None:
    """An export run again changes no byte and no modification time."""
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _owned(out: Path, rel: str, manifest: dict) -> bool:
    """Whether ``out/rel`` is a file an export wrote and nobody changed since."""
    from farm.sidecar import file_sha256

    if rel not in manifest or not (out / rel).is_file() or (out / rel).is_symlink():
        return False
    return manifest[rel] is None or file_sha256(out / rel) == manifest[rel]


# -- selection --------------------------------------------------------------------------------
def group_folder(loop: dict, group_by: str) -> str:
    """The subfolder a loop goes to: its style, ``<camelot>-<key>``, its part, or none ("").

    Key folders start with the two-digit Camelot code (``08A-Am``, ``08B-C``) so that a file
    browser lists them around the wheel, neighbours next to each other.
    """
    if group_by == "key":
        if loop["part"] == "drums":
            return "drums"  # no key: the drum loops of every key together
        return f"{int(loop['camelot'][:-1]):02d}{loop['camelot'][-1]}-{daw_key_name(loop['key'])}"
    return "" if group_by == "none" else loop[group_by]


@dataclass
class _Item:
    loop: dict  # sidecar fields from the catalog
    source: Path  # the catalog's audio file
    midi: Path | None  # the catalog's MIDI file, when the loop has one
    audio_rel: str  # paths in the export folder
    sidecar_rel: str
    midi_rel: str | None


def plan_export(catalog_root: str | Path, out: str | Path, where: str | None = None, status: str | None = "approved",
                fmt: str = "wav24", *, ids: Sequence[str] = (), group_by: str = "style") -> list[_Item]:
    """What ``export`` would write, every input checked; writes nothing."""
    from farm.audio import FORMATS
    from farm.catalog import Catalog
    from farm.sidecar import STATUSES

    if fmt not in FORMATS:
        raise FarmError(f"{fmt!r} is not one of {', '.join(FORMATS)}", field="--format")
    if group_by not in GROUPINGS:
        raise FarmError(f"{group_by!r} is not one of {', '.join(GROUPINGS)}", field="--group-by")
    if status == "any":
        status = None
    if status is not None and status not in STATUSES:
        raise FarmError(f"{status!r} is not one of {', '.join(STATUS_CHOICES)}", field="--status")
    root = Path(catalog_root)
    out = check_export_folder(root, out)
    with Catalog(root, readonly=True) as cat:
        chosen = cat.resolve_ids(ids)
        if status is not None:
            for loop_id in chosen:
                have = cat.db.execute("SELECT status FROM loops WHERE id = ?", [loop_id]).fetchone()[0]
                if have != status:
                    raise FarmError(f"is {have}, not {status} (--status any exports it)", file=cat.path,
                                    field=loop_id)
        if where or not ids:
            condition = f"status = '{status}'" if status else "1"  # status is one of STATUSES
            _, rows = cat.sql(f"SELECT id FROM loops WHERE {condition} AND ({where or '1'}) ORDER BY id")
            chosen += [r[0] for r in rows]
        items = []
        for loop_id in dict.fromkeys(chosen):
            loop = cat.row_sidecar(loop_id)
            source = inside(root, loop["path"], loop_id)
            if not source.is_file():
                raise FarmError("audio file is missing (run `farm check`)", file=source, field=loop_id)
            midi = inside(root, loop["midi"], loop_id) if loop["midi"] else None
            folder = group_folder(loop, group_by)
            stem = f"{folder}/{loop['name']}" if folder else loop["name"]
            item = _Item(loop, source, midi if midi and midi.is_file() else None, stem + FORMATS[fmt][2],
                         stem + ".json", stem + ".mid" if midi and midi.is_file() else None)
            for rel in (item.audio_rel, item.sidecar_rel, item.midi_rel):
                if rel:  # names from an old or edited catalog never lead a write outside --out
                    inside(out, rel, loop_id)
            items.append(item)
    return items


# -- exporting --------------------------------------------------------------------------------
class ExportResult(list):
    """The exported audio files (``list[Path]``), with what happened to them."""

    def __init__(self, paths=(), *, written: int = 0, unchanged: int = 0, removed: Sequence[Path] = (),
                 csv_path: Path | None = None, kept: Sequence[str] = ()):
        super().__init__(paths)
        self.written = written  # audio files written now
        self.unchanged = unchanged  # audio files already there, byte for byte
        self.removed = list(removed)  # files of loops no longer selected, and older copies
        self.csv_path = csv_path
        self.kept = list(kept)  # files an export wrote that were changed since: left alone


def export(catalog_root: str | Path, out: str | Path, where: str | None = None, status: str | None = "approved",
           fmt: str = "wav24", *, ids: Sequence[str] = (), group_by: str = "style",
           progress: bool = False) -> ExportResult:
    """``farm export``: copy loops into ``out`` for a DAW; the exported audio paths.

    Loops are those named by ``ids`` (ids or unique prefixes) and/or matching ``where`` (an SQL
    condition on ``loops``), with ``status`` (``"any"`` or None: every status); with neither
    ids nor ``where``, every loop with ``status``. ``fmt``: wav24, flac24 or wav32f.
    ``group_by``: style, key, part or none. Every input is checked before anything is written.
    Files of loops an earlier export put in ``out`` that this one does not select are removed.
    """
    from farm.progress import progress as progress_bar

    items = plan_export(catalog_root, out, where, status, fmt, ids=ids, group_by=group_by)
    out = Path(out)
    manifest = read_manifest(out) if out.is_dir() else {}
    if not items and not manifest:
        return ExportResult()
    files = {rel for item in items for rel in (item.audio_rel, item.sidecar_rel, item.midi_rel) if rel}
    files.add(CSV_NAME)
    for rel in sorted(files):  # never replace a file the export did not write
        target = out / rel
        if (target.exists() or target.is_symlink()) and not _owned(out, rel, manifest):
            raise FarmError("is in the way: farm export did not write it (or it changed since); move it or "
                            "export to another folder", file=target, field="--out")
    # Folders this export makes (``out``, its missing parents, new group folders): a failed
    # export removes those it leaves empty.
    new_folders = {d for rel in files for d in missing_dirs((out / rel).parent)}
    check_writable_dir(out, "--out")
    # The files about to be written are listed before the first is: an export that stops
    # halfway still owns them.
    write_manifest(out, {**manifest, **{rel: manifest.get(rel) for rel in files}})
    paths, written, unchanged = [], 0, 0
    with removed_if_left_empty(new_folders):  # the loops exported before an error stay
        try:
            for item in progress_bar(items, "export", "loop", disable=not progress or len(items) < 2):
                did_write = _export_one(out, item, fmt)
                written += did_write
                unchanged += not did_write
                paths.append(out / item.audio_rel)
        except BaseException:
            _forget_unwritten(out)
            raise
    removed, kept = _remove_unselected(out, manifest, files)
    manifest = {rel: _sha_or_none(out / rel) for rel in files if rel != CSV_NAME} | kept
    csv_path = write_catalog_csv(out, [item.sidecar_rel for item in items])
    manifest[CSV_NAME] = _sha_or_none(csv_path)
    write_manifest(out, manifest)
    return ExportResult(paths, written=written, unchanged=unchanged, removed=removed, csv_path=csv_path,
                        kept=sorted(kept))


def _forget_unwritten(out: Path) -> None:
    """After an error: the manifest keeps only files that exist (and goes when none does), so a
    failed export into a new folder leaves nothing behind."""
    manifest = read_manifest(out)
    left = {rel: sha for rel, sha in manifest.items() if (out / rel).is_file()}
    if left:
        write_manifest(out, left)
    else:
        (out / MANIFEST_NAME).unlink(missing_ok=True)


def _sha_or_none(path: Path) -> str | None:
    from farm.sidecar import file_sha256

    return file_sha256(path) if path.is_file() else None


def _remove_unselected(out: Path, manifest: dict, keep: set) -> tuple[list[Path], dict]:
    """Remove the files earlier exports wrote that this one does not (loops no longer selected,
    older copies in another format or folder). Returns the paths removed and, still listed, the
    files kept because they changed since they were written."""
    removed, kept = [], {}
    for rel in sorted(set(manifest) - keep):
        try:
            target = inside(out, rel)
        except FarmError:
            continue  # a manifest entry that leads outside (edited by hand): never followed
        if not (target.exists() or target.is_symlink()):
            continue
        if not _owned(out, rel, manifest):
            kept[rel] = manifest[rel]
            continue
        target.unlink()
        removed.append(target)
        folder = target.parent
        while folder != out and folder.is_relative_to(out) and not any(folder.iterdir()):
            folder.rmdir()  # a group folder the loop was the last one in
            folder = folder.parent
    return removed, kept


def _export_one(out: Path, item: _Item, fmt: str) -> bool:
    """Write one loop's audio, MIDI and sidecar unless already there; True if audio was written."""
    from farm.sidecar import file_sha256, validate_sidecar

    audio_path, sidecar_path = out / item.audio_rel, out / item.sidecar_rel
    old = _read_json(sidecar_path)
    sha = None
    if (old and old.get("id") == item.loop["id"] and old.get("format") == fmt and old.get("path") == item.audio_rel
            and audio_path.is_file() and file_sha256(audio_path) == old.get("sha256")):
        sha = old["sha256"]
    wrote = sha is None
    if wrote:
        audio, sr = _read_catalog_audio(item)
        atomic_write_bytes(audio_path, encode(audio, sr, fmt, item.loop))
        sha = file_sha256(audio_path)
    if item.midi_rel:
        midi = item.midi.read_bytes()
        target = out / item.midi_rel
        if not target.is_file() or target.read_bytes() != midi:
            atomic_write_bytes(target, midi)
    sidecar = dict(item.loop, path=item.audio_rel, format=fmt, sha256=sha, midi=item.midi_rel)
    validate_sidecar(sidecar, file=sidecar_path)
    _write_if_changed(sidecar_path, canonical_json(sidecar))
    return wrote


def _read_catalog_audio(item: _Item) -> tuple[np.ndarray, int]:
    """The catalog's audio as float32, after checking its bytes against the catalog's sha256."""
    from farm.catalog import read_loop_audio

    return read_loop_audio(item.source, item.loop["sha256"])


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_catalog_csv(out: str | Path, sidecars: Sequence[str]) -> Path:
    """``out/catalog.csv``: one row per exported loop (its sidecar in ``sidecars``, relative to
    ``out``), by file."""
    from farm.sidecar import validate_sidecar

    out = Path(out)
    rows = []
    for rel in sidecars:
        data = _read_json(out / rel)
        validate_sidecar(data, file=out / rel)
        rows.append({
            **{k: data[k] for k in CSV_COLUMNS if k in data},
            "file": data["path"],
            "beats": loop_beats(data["bars"], data["meter"]),
            "romans": " ".join(c["roman"] for c in data["chords"]),
            "params": json.dumps(data["params"], sort_keys=True) if data["params"] else "",
        })
    rows.sort(key=lambda r: r["file"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = out / CSV_NAME
    _write_if_changed(path, buf.getvalue())
    return path


def export_summary(result: ExportResult, out: str | Path) -> list[str]:
    """What ``farm export`` prints."""
    lines = [f"exported {len(result)} loop{'s' if len(result) != 1 else ''} to {out}: "
             f"{result.written} written, {result.unchanged} already there"
             + (f", {len(result.removed)} files removed (no longer selected, or an older copy)"
                if result.removed else "")]
    if result.kept:
        lines.append(f"kept {len(result.kept)} file{'s' if len(result.kept) != 1 else ''} changed since they were "
                     f"exported (no longer selected): {', '.join(result.kept[:3])}"
                     + (" ..." if len(result.kept) > 3 else ""))
    if result.csv_path is not None:
        lines.append(f"catalog: {result.csv_path}")
    return lines

