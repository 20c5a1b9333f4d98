"""A real full disk and a real read-only library: a small tmpfs mounted for the test (as root;
skipped where mounting is not allowed). Every command is one line and exit 2 where it cannot
write, reads where it only reads, and nothing is lost, duplicated or half-written."""
from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.catalog import Catalog
from farm.cli import main


@pytest.fixture
def disk(tmp_path):
    """A 3 MiB tmpfs at tmp_path/disk; ``disk.resize(mib)``, ``disk.read_only(flag)``."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")

    class Disk:
        path = mount

        def remount(self, options: str):
            subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)

    try:
        yield Disk()
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def night(tmp_path: Path, root: Path, patches=("warm-rhodes", "dry-piano-chords", "sub-bass", "finger-bass",
                                                "lofi-kit")) -> Path:
    config = tmp_path / "night.toml"
    config.write_text("\n".join([
        f'root = "{root}"', 'styles = ["lofi-hiphop"]', "templates_per_style = 1", "seed = 3", "bars = 4",
        'parts = ["chords", "bass", "drums"]', f"patches = {list(patches)!r}".replace("'", '"'),
        "workers = 1"]) + "\n")
    return config


def rows(root: Path, sql: str):
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_full_disk_stops_the_night_for_resume_and_loses_no_task(disk, tmp_path):
    root = disk.path / "library"
    result = CliRunner().invoke(main, ["batch", "--config", str(night(tmp_path, root)), "--no-progress"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "No space left on device" in line or "no space left on device" in line
    assert "`farm batch --resume`" in line and "Traceback" not in result.output
    assert rows(root, "SELECT count(*) FROM tasks WHERE status = 'failed'") == [(0,)]  # no attempt used up
    disk.remount("size=64M")
    result = CliRunner().invoke(main, ["batch", "--resume", "--root", str(root), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert rows(root, "SELECT DISTINCT status FROM tasks") == [("done",)]
    assert rows(root, "SELECT count(*) FROM loops") == rows(root, "SELECT count(*) FROM tasks") == [(5,)]
    assert Catalog(root, readonly=True).check().ok


def test_decisions_on_a_full_disk_and_a_read_only_library_are_one_line(disk, tmp_path):
    disk.remount("size=64M")
    root = disk.path / "library"
    config = night(tmp_path, root, patches=("warm-rhodes", "sub-bass", "lofi-kit"))
    assert CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"]).exit_code == 0
    (loop_id,) = rows(root, "SELECT id FROM loops WHERE part = 'bass'")[0]
    filler = disk.path / "filler"
    with open(filler, "wb") as f:  # the disk fills up
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    runner = CliRunner()
    for args in (["approve", loop_id], ["reject", loop_id, "--reason", "thin"]):
        result = runner.invoke(main, [*args, "--root", str(root)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "no space left on device" in result.stderr.lower() and "Traceback" not in result.output
    result = runner.invoke(main, ["stats", "--root", str(root)])  # reading needs no room
    assert result.exit_code == 0 and "loops: 3" in result.output
    filler.unlink()
    disk.remount("ro")
    before = rows(root, "SELECT id, status FROM loops ORDER BY id")
    for args in (["approve", loop_id], ["undo", loop_id], ["batch", "--resume"]):
        result = runner.invoke(main, [*args, "--root", str(root)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, (args, result.output)
        assert "read-only file system" in result.stderr and "--resume" not in result.stderr
    for args in (["stats"], ["show", loop_id], ["sql", "SELECT count(*) FROM loops"], ["check", "--no-progress"],
                 ["export", "--status", "any", "--out", str(tmp_path / "pack"), "--no-progress"]):
        result = runner.invoke(main, [*args, "--root", str(root)])
        assert result.exit_code == 0, (args, result.output)
    assert rows(root, "SELECT id, status FROM loops ORDER BY id") == before
    assert len(list((tmp_path / "pack").rglob("*.wav"))) == 3
    # the review room on a read-only library listens and looks only
    import signal
    import sys

    room = subprocess.Popen([sys.executable, "-c", "from farm.cli import main; main()", "review", "--root", str(root),
                             "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert room.stdout.readline().strip() == f"{root} cannot be written: serving it read-only"
        assert "(read-only): http://127.0.0.1:" in room.stdout.readline()
    finally:
        room.send_signal(signal.SIGINT)
        room.wait(timeout=20)


def test_resume_without_its_root_says_where_the_last_batch_ran(tmp_path, monkeypatch):
    root = tmp_path / "elsewhere" / "library"
    config = night(tmp_path, root, patches=("sub-bass",))
    assert CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"]).exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["batch", "--resume"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: library/catalog.db: no catalog here, nothing to resume; the last batch "
                                     f"ran in {root}: `farm batch --resume --root {root}`")
    assert CliRunner().invoke(main, ["batch", "--resume", "--root", str(root), "--no-progress"]).exit_code == 0
