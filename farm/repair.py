"""``farm check --repair``: make a catalog's files whole again from the catalog itself.

It stands above the stages it calls (rendering, permutations): a loop's id is the content
address of its inputs, so a missing or damaged audio file is made again from them (its
template and patch for a render; its parent and operation for a permutation, parents first)
and put in place only when the bytes are the catalog's, sha256 for sha256. A file that cannot
come back the same (its patch was edited since, its template is gone, the renderer changed) is
left as it is and named. Every sidecar that is missing, unreadable or disagrees with its row is
written again from the catalog. Rows are never changed.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from farm.catalog import Catalog, check_catalog
from farm.errors import FarmError


@dataclass
class RepairReport:
    """What ``repair`` did: loop files made again, sidecars rewritten, and what it could not mend."""

    restored: list[str] = field(default_factory=list)  # "<id> <path>"
    sidecars: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "<id> <path>: why"

    def lines(self) -> list[str]:
        out = [f"restored {len(self.restored)} audio file{'s' if len(self.restored) != 1 else ''}, "
               f"rewrote {len(self.sidecars)} sidecar{'s' if len(self.sidecars) != 1 else ''}"]
        out += [f"restored: {x}" for x in self.restored] + [f"sidecar rewritten: {x}" for x in self.sidecars]
        out += [f"cannot repair: {x}" for x in self.failed]
        return out


def _broken_audio(cat: Catalog) -> list[dict]:
    """Rows whose audio file is missing or not the catalog's bytes, parents before children."""
    from farm.sidecar import file_sha256

    rows = [dict(r) for r in cat.db.query(
        "SELECT * FROM loops ORDER BY operation != 'render', created_at, rowid")]
    return [r for r in rows if not (cat.root / r["path"]).is_file() or file_sha256(cat.root / r["path"]) != r["sha256"]]


def _place(root: Path, row: dict, audio, sample_rate: int) -> bool:
    """Encode ``audio`` as the row's format beside its path; put it in place only if its sha256 is
    the row's. True when it was."""
    from farm.audio import write_audio

    target = root / row["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(fd)
    from farm.sidecar import file_labels

    try:
        write_audio(tmp, audio, sample_rate, row["format"], labels=file_labels(row))
        if hashlib.sha256(Path(tmp).read_bytes()).hexdigest() != row["sha256"]:
            return False
        os.replace(tmp, target)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _remake_render(cat: Catalog, row: dict, backend) -> tuple:
    from farm.model import Template
    from farm.patches import load_patch
    from farm.render import RenderJob, render_loops

    found = cat.db.execute("SELECT path FROM templates WHERE id = ?", [row["template_id"]]).fetchone()
    if not found or not (cat.root / found[0] / "template.json").is_file():
        raise FarmError("its template is missing")
    patch = load_patch(row["patch"])
    if patch.content_hash != row["patch_hash"]:
        raise FarmError(f"patch {row['patch']} was edited since the loop was rendered")
    if (backend.name, backend.version) != (row["renderer"], row["renderer_version"]):
        raise FarmError(f"rendered by {row['renderer']} {row['renderer_version']}, "
                        f"this machine has {backend.name} {backend.version}")
    template = Template.load(cat.root / found[0])
    job = RenderJob(template=template, template_dir=cat.root / found[0], part=row["part"], patch=patch,
                    sample_rate=row["sample_rate"])
    [loop] = render_loops([job], backend)
    return loop.audio, loop.sample_rate


def _remake_permutation(cat: Catalog, row: dict, backend) -> Iterator[tuple]:
    """The permutation's audio as it may have been made: Rubber Band's high-quality mode first
    (the default), then the fast one."""
    from farm.permute.pipeline import (DEFAULT_BLEED_THRESHOLD, PARENT_FIELDS, Permutation, _parent,
                                       _template_dir, make_permutation)

    parent_row = dict(next(cat.db.query("SELECT * FROM loops WHERE id = ?", [row["parent_id"]])))
    info = {k: parent_row[k] for k in PARENT_FIELDS}
    parent = _parent(cat.root, info, _template_dir(cat, parent_row))
    target = cat.db.execute("SELECT target_lufs FROM patches WHERE content_hash = ?",
                            [parent_row["patch_hash"]]).fetchone()
    perm = Permutation(parent.id, row["operation"], cat.row_sidecar(row["id"])["params"], row["id"])
    for high_quality in (True, False):
        made = make_permutation(parent, perm, target_lufs=float(target[0]) if target else parent_row["lufs"],
                                bleed_threshold=DEFAULT_BLEED_THRESHOLD, high_quality=high_quality, backend=backend)
        yield made.audio, parent.sample_rate
        if row["operation"] not in ("pitch", "stretch"):
            return


def repair(root: str | Path, *, backend: str = "embedded", progress: bool = False) -> RepairReport:
    """``farm check --repair``: restore missing or damaged loop files (re-made, placed only when
    byte-identical to the catalog's) and rewrite sidecars from the catalog."""
    from farm.progress import progress as progress_bar
    from farm.render import get_backend
    from farm.sidecar import sidecar_path, write_sidecar

    report = RepairReport()
    first = check_catalog(root)
    if first.damage:
        raise FarmError(first.damage[0], file=Path(root) / "catalog.db")
    with Catalog(root) as cat:
        broken = _broken_audio(cat)
        engine = get_backend(backend) if broken else None
        try:
            for row in progress_bar(broken, "repair", "loop", disable=not progress or len(broken) < 2):
                where = f"{row['id']} {row['path']}"
                try:
                    candidates = ([_remake_render(cat, row, engine)] if row["operation"] == "render"
                                  else _remake_permutation(cat, row, engine))
                    if any(_place(cat.root, row, audio, sr) for audio, sr in candidates):
                        report.restored.append(where)
                    else:
                        report.failed.append(f"{where}: made again, its bytes differ from the catalog's")
                except FarmError as err:
                    report.failed.append(f"{where}: {err.message}")
        finally:
            if engine is not None:
                engine.close()
        for loop_id, rel in cat.db.execute("SELECT id, sidecar FROM loops ORDER BY id").fetchall():
            expected = cat.row_sidecar(loop_id)
            try:
                have = cat.loop_sidecar(loop_id)
            except FarmError:
                have = None
            if have is None or any(have.get(k) != v for k, v in expected.items() if k != "created_at"):
                write_sidecar(cat.root / sidecar_path(expected["path"]), expected)
                report.sidecars.append(f"{loop_id} {rel}")
    return report
