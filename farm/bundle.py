"""Bundles: catalogued loops carried between machines in one compressed file.

``farm bundle`` packs loops (audio, sidecars, the MIDI templates they were made from) with a
manifest of every member's sha256 and size into one gzip-compressed tar file, the same bytes for
the same loops. ``farm import`` verifies the *whole* bundle before it touches the catalog: it
refuses absolute paths, ``..``, links, devices and anything that is not a plain file, duplicate
members, members not in the manifest or larger than it says, and any member whose sha256 differs;
then files are put in place (temporary names, renamed) and rows inserted by the one writer.
Importing a bundle twice adds nothing. A damaged or truncated bundle changes nothing.

Layout of a bundle::

    manifest.json                          {"bundle_version", "loops": [sidecar ...], "files": {name: {sha256, size}}}
    templates/<template id>/...            template.json and part MIDI of every loop's template
    loops/<style>/<name>.flac + .json      each loop and its sidecar, as in a catalog root
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from farm.errors import FarmError
from farm.files import atomic_path, inside, is_temp_name, safe_relative_path

BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 256 << 20
_CHUNK = 1 << 20


@dataclass
class BundleResult:
    path: Path
    loops: int
    files: int
    bytes: int


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info


def bundle(catalog_root: str | Path, out: str | Path, *, batch: str | None = None, where: str | None = None) -> BundleResult:
    """``farm bundle``: the loops of batch ``batch`` or matching ``where`` (an SQL condition on loops)
    packed into ``out``, written whole or not at all."""
    from farm.catalog import Catalog
    from farm.sidecar import file_sha256, sidecar_path

    if (batch is None) == (where is None):
        raise FarmError("give --batch ID or --where CONDITION (one of them)", field="batch")
    out = Path(out)
    with Catalog(catalog_root, readonly=True) as cat:
        condition, params = ("batch_id = ?", [batch]) if batch is not None else (f"({where})", [])
        _, rows = cat.sql(f"SELECT id FROM loops WHERE {condition} ORDER BY id", params)
        if not rows:
            raise FarmError("no loop to bundle" + (f" in batch {batch}" if batch else " matches"), file=cat.path,
                            field="batch" if batch else "where")
        sidecars, files = [], {}
        for (loop_id,) in rows:
            sidecar = cat.row_sidecar(loop_id)
            sidecars.append(sidecar)
            audio = inside(cat.root, sidecar["path"], loop_id)
            if not audio.is_file() or file_sha256(audio) != sidecar["sha256"]:
                raise FarmError("is missing or not the catalog's bytes (run `farm check`)", file=audio, field=loop_id)
            files[sidecar["path"]] = audio
            files[sidecar_path(sidecar["path"]).as_posix()] = inside(cat.root, sidecar_path(sidecar["path"]).as_posix())
            tdir = cat.db.execute("SELECT path FROM templates WHERE id = ?", [sidecar["template_id"]]).fetchone()
            if tdir:
                for f in sorted((cat.root / tdir[0]).iterdir()):
                    if f.is_file() and not is_temp_name(f.name):
                        files[f"{tdir[0]}/{f.name}"] = f
    contents = {name: path.read_bytes() for name, path in sorted(files.items())}
    # the catalog's sidecar, not a file that may lag behind it, is what a bundle carries
    for sidecar in sidecars:
        contents[sidecar_path(sidecar["path"]).as_posix()] = _sidecar_bytes(sidecar)
    manifest = {"bundle_version": BUNDLE_VERSION, "loops": sidecars,
                "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                          for name, data in contents.items()}}
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo(MANIFEST, len(manifest_bytes)), io.BytesIO(manifest_bytes))
            for name, data in contents.items():
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    return BundleResult(out, len(sidecars), len(contents), out.stat().st_size)


def _sidecar_bytes(sidecar: dict) -> bytes:
    from farm.model import canonical_json

    return canonical_json(sidecar).encode("utf-8")


# -- importing ----------------------------------------------------------------------------------
def _bad(path: Path, message: str, member: str | None = None) -> FarmError:
    return FarmError(message, file=path, field=member)


def _manifest(path: Path, data: bytes) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise _bad(path, "its manifest is not JSON", MANIFEST) from None
    if not isinstance(manifest, dict) or manifest.get("bundle_version") != BUNDLE_VERSION:
        raise _bad(path, f"not a Loop Farm bundle of version {BUNDLE_VERSION}", MANIFEST)
    files, loops = manifest.get("files"), manifest.get("loops")
    if not isinstance(files, dict) or not isinstance(loops, list):
        raise _bad(path, "its manifest lacks files or loops", MANIFEST)
    for name, entry in files.items():
        if not safe_relative_path(name) or name == MANIFEST:
            raise _bad(path, "names a path outside the bundle's root", name)
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("size"), int)
                and entry["size"] >= 0):
            raise _bad(path, "has no sha256 and size in the manifest", name)
    return manifest


def verify_bundle(path: str | Path, staging: Path) -> dict:
    """Read every member of the bundle at ``path`` into ``staging`` and check it; the manifest.
    FarmError (one line) on the first thing wrong."""
    from farm.sidecar import validate_sidecar

    path = Path(path)
    manifest, seen = None, set()
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                name = member.name
                if name in seen:
                    raise _bad(path, "is in the bundle twice", name)
                seen.add(name)
                if not member.isreg():
                    kind = ("a link" if member.issym() or member.islnk() else "a device file"
                            if member.isdev() else "a folder" if member.isdir() else "not a plain file")
                    raise _bad(path, f"is {kind}; a bundle holds plain files only", name)
                if not safe_relative_path(name):
                    raise _bad(path, "is an absolute path or leads outside with ..", name)
                if manifest is None:
                    if name != MANIFEST or member.size > MAX_MANIFEST_BYTES:
                        raise _bad(path, f"the first member must be {MANIFEST}", name)
                    manifest = _manifest(path, tar.extractfile(member).read())
                    continue
                entry = manifest["files"].get(name)
                if entry is None:
                    raise _bad(path, "is not in the manifest", name)
                if member.size != entry["size"]:
                    raise _bad(path, f"is {member.size} bytes, the manifest says {entry['size']}", name)
                source, digest, size = tar.extractfile(member), hashlib.sha256(), 0
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as f:
                    while chunk := source.read(_CHUNK):
                        size += len(chunk)
                        if size > entry["size"]:
                            raise _bad(path, f"holds more than the {entry['size']} bytes the manifest says", name)
                        digest.update(chunk)
                        f.write(chunk)
                if digest.hexdigest() != entry["sha256"]:
                    raise _bad(path, "is damaged (its sha256 is not the manifest's)", name)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as err:
        raise _bad(path, f"is damaged or truncated ({err or type(err).__name__})") from None
    if manifest is None:
        raise _bad(path, "is empty: no manifest")
    missing = sorted(set(manifest["files"]) - seen)
    if missing:
        raise _bad(path, f"lacks {len(missing)} file(s) its manifest lists", missing[0])
    for sidecar in manifest["loops"]:
        validate_sidecar(sidecar, file=path)
        from farm.sidecar import sidecar_path

        for rel in (sidecar["path"], sidecar_path(sidecar["path"]).as_posix()):
            if rel not in manifest["files"]:
                raise _bad(path, "a loop whose file is not in the bundle", rel)
        if manifest["files"][sidecar["path"]]["sha256"] != sidecar["sha256"]:
            raise _bad(path, "a loop's audio is not the one its sidecar names", sidecar["path"])
    return manifest


@dataclass
class ImportResult:
    loops: int  # loops in the bundle
    added: int  # rows inserted now (0 for a bundle imported before)
    files_written: int


def import_bundle(path: str | Path, catalog_root: str | Path) -> ImportResult:
    """``farm import``: adopt a bundle's loops into the catalog at ``catalog_root`` (made if needed),
    after verifying all of it; idempotent."""
    from farm.catalog import Catalog
    from farm.catalog.lock import writer_lock
    from farm.files import atomic_write_bytes
    from farm.model import Template

    path, root = Path(path), Path(catalog_root)
    if not path.is_file():
        raise FarmError("no such bundle", file=path)
    scratch = Path(tempfile.mkdtemp(prefix=".import.", suffix=".part"))
    try:
        manifest = verify_bundle(path, scratch)
        templates = sorted({name.rsplit("/", 1)[0] for name in manifest["files"]
                            if name.startswith("templates/") and name.endswith("/template.json")})
        parsed = {t: Template.load(scratch / t) for t in templates}  # a broken template.json stops it here
        with Catalog(root) as cat, writer_lock(cat.root, "import"):
            written = 0
            # templates, then each loop's audio before its sidecar (a sidecar means its audio is whole)
            for name in sorted(manifest["files"], key=lambda n: (not n.startswith("templates/"), n.endswith(".json"), n)):
                target = inside(cat.root, name, name)
                data = (scratch / name).read_bytes()
                if not target.is_file() or target.read_bytes() != data:
                    atomic_write_bytes(target, data)
                    written += 1
            with cat.db.atomic():
                for rel, template in parsed.items():
                    cat.add_template(template, rel)
                added = sum(cat.ingest_loop(sidecar) for sidecar in manifest["loops"])
            return ImportResult(len(manifest["loops"]), added, written)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
