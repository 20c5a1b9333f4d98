"""One permutation made when something asks for it (a kit that needs a loop a tone higher).

It is the same permutation a night would make: the same id (the content address of parent,
operation and parameters), the same audio, checks, files and catalog row; asking twice makes it
once. ``prepare`` computes it in memory (to be heard or checked first), ``commit`` writes and
catalogues what ``prepare`` made.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from farm.errors import FarmError
from farm.model import Template
from farm.permute.pipeline import (PARENT_FIELDS, Made, Parent, Permutation, _template_dir, make_permutation,
                                   write_permutation)
from farm.permute.splice import derived_id

ON_DEMAND = ("pitch", "stretch")


@dataclass
class Prepared:
    """A permutation computed, not yet written: ``reject_reason`` is what the machine checks say."""

    parent: Parent
    perm: Permutation
    made: Made
    target_lufs: float
    reject_reason: str | None

    @property
    def id(self) -> str:
        return self.perm.id

    @property
    def audio(self) -> np.ndarray:
        return self.made.audio

    def row(self) -> dict:
        """The catalog row it will have (the fields a reader of loops uses), chords included."""
        from farm.audio import integrated_lufs
        from farm.sidecar import template_labels

        info = self.parent.info
        return {**{k: info[k] for k in ("template_id", "part", "role", "patch", "patch_hash", "renderer",
                                        "renderer_version", "format", "sample_rate", "channels")},
                **template_labels(self.made.template, self.parent.sample_rate),
                "id": self.perm.id, "parent_id": self.parent.id, "operation": self.perm.operation,
                "params": json.dumps(self.perm.params, sort_keys=True), "midi": None,
                "lufs": float(integrated_lufs(self.made.audio, self.parent.sample_rate)),
                "status": "rejected" if self.reject_reason else "pending", "reject_reason": self.reject_reason}


def prepare(cat, parent_id: str, operation: str, params: dict) -> Prepared:
    """Compute ``operation`` with ``params`` of the rendered loop ``parent_id`` and run the machine
    checks on it, in memory."""
    from farm.catalog import read_loop_audio
    from farm.qa import QALimits, machine_check

    if operation not in ON_DEMAND:
        raise FarmError(f"{operation!r} is not made on demand (only {', '.join(ON_DEMAND)})", field="operation")
    row = next(cat.db.query("SELECT * FROM loops WHERE id = ?", [parent_id]))
    if row["operation"] != "render":
        raise FarmError(f"permutations are made of rendered loops; this is a {row['operation']}",
                        file=cat.path, field=parent_id)
    rel = _template_dir(cat, row)
    template = Template.load(cat.root / rel)
    audio, sr = read_loop_audio(cat.root / row["path"], row["sha256"])
    parent = Parent({k: row[k] for k in PARENT_FIELDS}, template, cat.root / rel, audio, sr)
    target = cat.db.execute("SELECT target_lufs FROM patches WHERE content_hash = ?", [row["patch_hash"]]).fetchone()
    target_lufs = float(target[0]) if target else float(row["lufs"])
    perm = Permutation(parent_id, operation, params, derived_id(parent_id, operation, params))
    made = make_permutation(parent, perm, target_lufs=target_lufs)
    reason = machine_check(made.audio, sr, expected_samples=made.template.loop_samples(sr), target_lufs=target_lufs,
                           lufs=made.lufs, expected_channels=int(row["channels"]),
                           limits=QALimits()) or made.reject_reason
    return Prepared(parent, perm, made, target_lufs, reason)


def commit(cat, prepared: Prepared, *, batch_id: str | None = None) -> str:
    """Write and catalogue a prepared permutation (in ``cat``, open for writing, its writer lock
    held); its id. One already catalogued is left as it is."""
    if not cat.has_loop(prepared.id):
        sidecar = write_permutation(cat.root, prepared.parent, prepared.perm, prepared.made,
                                    target_lufs=prepared.target_lufs, batch_id=batch_id)
        cat.ingest_loop(sidecar)
    return prepared.id


def permute_one(cat, parent_id: str, operation: str, params: dict, *, batch_id: str | None = None) -> str:
    """The id of ``operation`` with ``params`` of ``parent_id``, made and catalogued unless it is there."""
    loop_id = derived_id(parent_id, operation, params)
    if cat.has_loop(loop_id):
        return loop_id
    return commit(cat, prepare(cat, parent_id, operation, params), batch_id=batch_id)
