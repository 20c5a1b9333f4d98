"""Bundles: loops carried between catalog roots in one file, verified whole before anything is
written; a corpus of bad bundles changes nothing."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from farm.bundle import bundle, import_bundle
from farm.catalog import Catalog
from nights import make_night

FARM = str(Path(sys.executable).parent / "farm")


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    from farm.permute import permute

    root = make_night(tmp_path_factory.mktemp("bundle"), parts=("chords", "bass"), patches=("warm-rhodes", "sub-bass"))
    permute(root, "part = 'chords'", ["pitch"], semitones=1, progress=False)
    return root


@pytest.fixture(scope="module")
def good(night, tmp_path_factory) -> Path:
    return bundle(night, tmp_path_factory.mktemp("b") / "night.tar.gz", where="1").path


def rows(root: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in (".batch.lock", ".catalog-verified")}


def test_a_bundle_carries_loops_to_another_root_exactly_and_twice_adds_nothing(night, good, tmp_path):
    again = bundle(night, tmp_path / "again.tar.gz", where="1")
    assert again.path.read_bytes() == good.read_bytes()  # the same loops, the same bytes
    out = subprocess.run([FARM, "import", str(good), "--root", str(tmp_path / "other")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("imported 4 new loops of 4")
    other = tmp_path / "other"
    columns = "id, name, path, sha256, status, key, bpm, progression, parent_id, operation, fp_packed"
    assert rows(other, f"SELECT {columns} FROM loops ORDER BY id") == rows(night, f"SELECT {columns} FROM loops ORDER BY id")
    assert [json.loads(r[0]) for r in rows(other, "SELECT fingerprint FROM loops ORDER BY id")] == \
        [json.loads(r[0]) for r in rows(night, "SELECT fingerprint FROM loops ORDER BY id")]
    assert rows(other, "SELECT * FROM chords ORDER BY loop_id, bar") == rows(night, "SELECT * FROM chords ORDER BY loop_id, bar")
    for (path, midi) in rows(night, "SELECT path, midi FROM loops"):
        assert (other / path).read_bytes() == (night / path).read_bytes()
        if midi:
            assert (other / midi).read_bytes() == (night / midi).read_bytes()
    assert Catalog(other, readonly=True).check().ok
    before = tree(other)
    result = import_bundle(good, other)
    assert (result.added, result.files_written) == (0, 0)
    assert {k: v for k, v in tree(other).items() if not k.startswith("catalog.db")} == \
        {k: v for k, v in before.items() if not k.startswith("catalog.db")}


def _members(good: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(good, "r:gz") as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, None


def _bad_bundles(good: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    members = _members(good)
    manifest = json.loads(members[0][1])
    audio = next(i for i, (m, _) in enumerate(members) if m.name.endswith(".flac"))
    grown = [(m, d) for m, d in members]
    info, data = grown[audio]
    grown[audio] = _file(info.name, data + b"\0" * 10)
    flipped = [(m, d) for m, d in members]
    flipped[audio] = _file(info.name, bytes([data[0] ^ 1]) + data[1:])
    unlisted_manifest = dict(manifest, files={k: v for k, v in manifest["files"].items() if k != info.name})
    raw = good.read_bytes()
    cases = {
        "truncated": (raw[: len(raw) // 2], "is damaged or truncated"),
        "not a bundle": (b"not a tar.gz at all\n", "is damaged or truncated"),
        "absolute path": ([members[0], _file("/tmp/evil.flac", b"x")], "is an absolute path or leads outside"),
        "dot dot": ([members[0], _file("loops/../../evil.flac", b"x")], "is an absolute path or leads outside"),
        "symlink": ([members[0], _special("loops/link.flac", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
        "hard link": ([members[0], _special("loops/hard.flac", tarfile.LNKTYPE, members[1][0].name)], "is a link"),
        "device": ([members[0], _special("loops/dev", tarfile.CHRTYPE)], "is a device file"),
        "folder": ([members[0], _special("loops/x", tarfile.DIRTYPE)], "is a folder"),
        "duplicate": (members + [members[1]], "is in the bundle twice"),
        "larger than the manifest": (grown, "the manifest says"),
        "damaged member": (flipped, "is damaged (its sha256 is not the manifest's)"),
        "not in the manifest": ([_file("manifest.json", json.dumps(unlisted_manifest).encode())] + members[1:],
                                "is not in the manifest"),
        "member missing": (members[:-1], "lacks 1 file(s) its manifest lists"),
        "no manifest first": (members[1:], "the first member must be manifest.json"),
        "manifest not json": ([_file("manifest.json", b"{nope")] + members[1:], "its manifest is not JSON"),
    }
    out = {}
    for name, (content, message) in cases.items():
        path = tmp / (name.replace(" ", "-") + ".tar.gz")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _write(path, content)
        out[name] = (path, message)
    return out


def test_a_bad_bundle_is_one_line_exit_2_and_changes_nothing(night, good, tmp_path):
    existing = Path(shutil.copytree(night, tmp_path / "existing"))
    for case, (path, message) in _bad_bundles(good, tmp_path).items():
        for root in (tmp_path / "new", existing):
            before = tree(root) if root.exists() else None
            out = subprocess.run([FARM, "import", str(path), "--root", str(root)], capture_output=True, text=True)
            assert out.returncode == 2, (case, out.stdout, out.stderr)
            assert out.stderr.count("\n") == 1 and message in out.stderr, (case, out.stderr)
            assert str(path) in out.stderr, case  # the line names the bundle
            assert (tree(root) if root.exists() else None) == before, case


def test_bundle_needs_a_selection_and_names_what_it_lacks(night, tmp_path):
    out = subprocess.run([FARM, "bundle", "--out", str(tmp_path / "x.tar.gz"), "--root", str(night)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "give --batch ID or --where CONDITION" in out.stderr
    out = subprocess.run([FARM, "bundle", "--batch", "no-such-batch", "--out", str(tmp_path / "x.tar.gz"),
                          "--root", str(night)], capture_output=True, text=True)
    assert out.returncode == 2 and "no loop to bundle in batch no-such-batch" in out.stderr
    assert not (tmp_path / "x.tar.gz").exists()
    digest = hashlib.sha256((night / "catalog.db").read_bytes()).hexdigest()
    batch = rows(night, "SELECT id FROM batches")[0][0]
    made = bundle(night, tmp_path / "batch.tar.gz", batch=batch)
    assert made.loops == rows(night, f"SELECT count(*) FROM loops WHERE batch_id = '{batch}'")[0][0]
    assert hashlib.sha256((night / "catalog.db").read_bytes()).hexdigest() == digest
