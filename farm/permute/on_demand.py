"""One permutation made when something asks for it (a kit that needs a loop a tone higher).

It is the same permutation a night would make: the same id (the content address of parent,
operation and parameters), the same audio, checks, files and catalog row; asking twice makes it
once.
"""
from __future__ import annotations

from farm.errors import FarmError
from farm.model import Template
from farm.permute.pipeline import (PARENT_FIELDS, Parent, Permutation, _template_dir, make_permutation,
                                   write_permutation)
from farm.permute.splice import derived_id

ON_DEMAND = ("pitch", "stretch")


def permute_one(cat, parent_id: str, operation: str, params: dict, *, batch_id: str | None = None) -> str:
    """The id of ``operation`` with ``params`` of the rendered loop ``parent_id``, made, checked and
    catalogued in ``cat`` (open for writing, its writer lock held) unless it is there already."""
    from farm.catalog import read_loop_audio

    if operation not in ON_DEMAND:
        raise FarmError(f"{operation!r} is not made on demand (only {', '.join(ON_DEMAND)})", field="operation")
    loop_id = derived_id(parent_id, operation, params)
    if cat.has_loop(loop_id):
        return loop_id
    row = next(cat.db.query("SELECT * FROM loops WHERE id = ?", [parent_id]))
    if row["operation"] != "render":
        raise FarmError(f"permutations are made of rendered loops; this is a {row['operation']}",
                        file=cat.path, field=parent_id)
    rel = _template_dir(cat, row)
    template = Template.load(cat.root / rel)
    audio, sr = read_loop_audio(cat.root / row["path"], row["sha256"])
    info = {k: row[k] for k in PARENT_FIELDS}
    parent = Parent(info, template, cat.root / rel, audio, sr)
    target = cat.db.execute("SELECT target_lufs FROM patches WHERE content_hash = ?", [row["patch_hash"]]).fetchone()
    target_lufs = float(target[0]) if target else float(row["lufs"])
    perm = Permutation(parent_id, operation, params, loop_id)
    made = make_permutation(parent, perm, target_lufs=target_lufs)
    sidecar = write_permutation(cat.root, parent, perm, made, target_lufs=target_lufs, batch_id=batch_id)
    cat.ingest_loop(sidecar)
    return loop_id
