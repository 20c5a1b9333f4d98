"""Export catalogued kits as construction-kit folders (``farm export --kits``).

Layout, one folder per kit::

    <out>/LFK_<bpm>_<key>_<id>/
        LFK_<bpm>_<key>_<id>_<role>.wav    each stem, in the export format, tagged (tempo, key, meter)
        LFK_<bpm>_<key>_<id>_mix.wav       the balanced mix
        MIDI/LFK_<bpm>_<key>_<id>_<role>.mid
        kit.json                           the kit's labels, its file names those of this folder
        kit.png

A kit's stems are float32 in the catalog's kit folder; they are quantised here, once, to the
format asked for. Files are written under temporary names and renamed; a kit exported before is
written again only when its files changed. ``.loopfarm-kits.json`` lists the files kit exports
wrote: a file in the way that is not on it stops the export before anything is written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from farm.errors import FarmError
from farm.export import _owned, check_export_folder, read_manifest, write_manifest

KITS_MANIFEST = ".loopfarm-kits.json"


def _kit_files(record: dict, fmt: str) -> dict[str, tuple[str, str | None]]:
    """``{path in the export: (file in the kit folder, role or None)}`` of one kit."""
    from farm.audio import FORMATS

    name, suffix = record["name"], FORMATS[fmt][2]
    files = {f"{name}/{name}_{m['role']}{suffix}": (m["stem"], m["role"]) for m in record["members"]}
    files[f"{name}/{name}_mix{suffix}"] = ("mix.wav", None)
    files.update({f"{name}/MIDI/{name}_{m['role']}.mid": (m["midi"], m["role"]) for m in record["members"] if m["midi"]})
    files[f"{name}/kit.png"] = ("kit.png", None)
    return files


def export_kits(catalog_root: str | Path, out: str | Path, *, ids: Sequence[str] = (), status: str | None = "approved",
                fmt: str = "wav24") -> list[Path]:
    """Write the kits named by ``ids`` (or every kit with ``status``; None or "any": every kit)
    into ``out``; the kit folders written or already there."""
    from farm.audio import FORMATS, read_audio
    from farm.files import atomic_write_bytes, inside
    from farm.match import list_kits
    from farm.match.kit_files import stem_tags
    from farm.tags import encode

    if fmt not in FORMATS:
        raise FarmError(f"{fmt!r} is not one of {', '.join(FORMATS)}", field="--format")
    out = check_export_folder(catalog_root, out)
    status = None if status == "any" else status
    kits = list_kits(catalog_root, status=None if ids else status)
    if ids:
        wanted = []
        for given in ids:
            found = [k for k in kits if k["id"].startswith(given)] if len(given) >= 6 else []
            if len(found) != 1:
                raise FarmError("no kit has this id" if not found else "more than one kit starts with this id",
                                file=Path(catalog_root) / "catalog.db", field=given)
            wanted.append(found[0])
        kits = wanted
    manifest = read_manifest_named(out)
    plan = []
    for record in kits:
        folder = Path(record["folder"])
        for rel, (source, role) in _kit_files(record, fmt).items():
            target = inside(out, rel, record["id"])
            if (target.exists() or target.is_symlink()) and not _owned(out, rel, manifest):
                raise FarmError("is in the way: farm export did not write it (or it changed since); move it or "
                                "export to another folder", file=target, field="--out")
            plan.append((record, rel, inside(folder, source, record["id"]), role))
    written = dict(manifest)
    labels_of = {}
    for record in kits:
        path = Path(record["folder"]) / "kit.json"
        try:
            labels_of[record["id"]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FarmError(f"cannot read: {err}", file=path, field=record["id"]) from None
    for record, rel, source, role in plan:
        if not source.is_file():
            raise FarmError("is missing from the kit's folder", file=source, field=record["id"])
        if source.suffix == ".wav":
            audio, sr = read_audio(source)
            data = encode(audio, sr, fmt, stem_tags(labels_of[record["id"]], Path(rel).stem, role))
        else:
            data = source.read_bytes()
        target = out / rel
        if not target.is_file() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
        written[rel] = _sha(target)
    for record in kits:
        kit_json = labels_of[record["id"]]
        names = {v[0]: k.split("/", 1)[1] for k, v in _kit_files(record, fmt).items()}
        kit_json["mix"] = names["mix.wav"]
        for stem in kit_json["stems"]:
            stem["file"] = names[stem["file"]]
            stem["midi"] = names.get(stem["midi"]) if stem["midi"] else None
        rel = f"{record['name']}/kit.json"
        text = json.dumps(kit_json, indent=2, sort_keys=True) + "\n"
        if not (out / rel).is_file() or (out / rel).read_text(encoding="utf-8") != text:
            atomic_write_bytes(out / rel, text.encode("utf-8"))
        written[rel] = _sha(out / rel)
    write_manifest_named(out, written)
    return [out / k["name"] for k in kits]


def _sha(path: Path) -> str:
    from farm.sidecar import file_sha256

    return file_sha256(path)


def read_manifest_named(out: Path) -> dict:
    return read_manifest(out, KITS_MANIFEST) if out.is_dir() else {}


def write_manifest_named(out: Path, files: dict) -> None:
    write_manifest(out, files, KITS_MANIFEST)
