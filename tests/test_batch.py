"""The nightly batch end to end: real templates, real embedded renders, real worker processes.

Covers: a full batch through the CLI (audio, sidecars and rows agree with the templates), a
re-run that renders nothing, a real ``farm batch`` process killed with SIGKILL and resumed, a
hung task killed by its timeout and retried, broken configs, and ``farm check`` catching a
tampered file and an orphan.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
from click.testing import CliRunner

from farm.batch import Worker, load_config, render_task, run_batch
from farm.catalog import Catalog
from farm.cli import main
from farm.errors import FarmError
from farm.model import PART_ROLES, Template
from farm.qa import QALimits

PROJECT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
FARM = str(Path(sys.executable).parent / "farm")
PATCHES = ["warm-rhodes", "dusty-pad", "sub-bass", "lofi-kit", "flute-lead"]


def write_config(path: Path, root: Path, **changes) -> Path:
    """A small batch: one style, one 2-bar template, a few patches; ``changes`` override."""
    config = {"root": str(root), "styles": ["lofi-hiphop"], "templates_per_style": 1, "seed": 7, "bars": 2,
              "patches": PATCHES, "workers": 2, "timeout_s": 120, **changes}
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for name, table in config.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_loops(root: Path, patches=PATCHES) -> int:
    """Loops a small batch must make: every (template part, listed patch whose roles fit it),
    counted from the template.json and patch TOML files themselves."""
    roles = {p: tomllib.loads((PROJECT / "patches" / f"{p}.toml").read_text())["roles"] for p in patches}
    total = 0
    for tdir in (root / "templates").iterdir():
        template = json.loads((tdir / "template.json").read_text())
        for part in template["parts"]:
            total += sum(1 for p in patches if set(roles[p]) & set(PART_ROLES[part["name"]]))
    return total


def rows(root: Path, sql: str, params=()):
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def poll(root: Path, sql: str, params=()):
    """``rows`` while another process may be creating the catalog: None until it can answer."""
    try:
        return rows(root, sql, params) if (root / "catalog.db").exists() else None
    except sqlite3.OperationalError:
        return None


def alive(pid: int) -> bool:
    """A process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """One real batch through the CLI with -j 2; tests that change it work on a copy."""
    base = tmp_path_factory.mktemp("night")
    root = base / "library"
    config = write_config(base / "night.toml", root)
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "-j", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    return root, config, result.output


def test_batch_renders_labels_and_catalogues_every_loop(night):
    root, _, output = night
    n = expected_loops(root)
    assert n >= 4
    assert f"{n} new loops" in output
    assert rows(root, "SELECT count(*) FROM loops")[0][0] == n
    assert rows(root, "SELECT status, count(*) FROM tasks GROUP BY status") == [("done", n)]
    (template_dir,) = list((root / "templates").iterdir())
    template = Template.load(template_dir)
    sr = 44100
    meter = pyloudnorm.Meter(sr)
    for (sidecar_rel,) in rows(root, "SELECT sidecar FROM loops"):
        sidecar = json.loads((root / sidecar_rel).read_text())
        # Labels: exactly the template's, chord by chord, in the sidecar and in the chords table.
        assert sidecar["template_id"] == template.id
        assert (sidecar["key"], sidecar["bpm"], sidecar["meter"], sidecar["bars"]) == (
            template.key.short, template.bpm, str(template.meter), template.bars)
        assert [{k: c[k] for k in ("bar", "symbol", "roman", "root_pc", "pitch_classes", "bass_pc")}
                for c in sidecar["chords"]] == [c.to_dict() for c in template.chords]
        db_chords = rows(root, "SELECT bar, symbol, roman, pitch_classes FROM chords WHERE loop_id = ? ORDER BY bar",
                         [sidecar["id"]])
        assert db_chords == [(c.bar, c.symbol, c.roman, json.dumps(list(c.pitch_classes))) for c in template.chords]
        assert sidecar["role"] in PART_ROLES[sidecar["part"]]
        assert (root / sidecar["midi"]).is_file()
        # The audio: exact loop length, stereo, at the patch's loudness, as the sidecar says.
        audio, file_sr = soundfile.read(root / sidecar["path"], always_2d=True)
        assert file_sr == sr == sidecar["sample_rate"]
        assert audio.shape == (template.loop_samples(sr), 2) == (sidecar["samples"], sidecar["channels"])
        target = tomllib.loads((PROJECT / "patches" / f"{sidecar['patch']}.toml").read_text())["target_lufs"]
        assert abs(meter.integrated_loudness(audio) - target) < 1.0
        assert abs(sidecar["lufs"] - target) < 1.0
        assert sidecar["status"] == "pending" and sidecar["reject_reason"] is None
        assert 20 < sidecar["centroid_hz"] < 20000
        if sidecar["part"] in ("drums", "bass"):  # struck parts: one onset per distinct note start
            import pretty_midi

            starts = {round(n.start, 2) for i in pretty_midi.PrettyMIDI(str(root / sidecar["midi"])).instruments
                      for n in i.notes}
            assert 0.6 * len(starts) <= sidecar["onsets"] <= 1.4 * len(starts)
    # The chords loop sounds the labelled chords: each bar's strongest pitch class is a chord tone.
    from farm.audio import bar_chroma, read_audio

    (path,) = rows(root, "SELECT path FROM loops WHERE patch = 'warm-rhodes'")[0]
    bars = bar_chroma(read_audio(root / path)[0], sr, template)
    for chord, profile in zip(template.chords, bars):
        assert int(np.argmax(profile)) in chord.pitch_classes
    check = CliRunner().invoke(main, ["check", "--root", str(root), "--no-progress"])
    assert check.exit_code == 0, check.output
    assert check.output.strip().endswith("ok")
    # Every saved query runs on a real night's catalog.
    from farm.catalog import run_query, saved_queries

    for name in saved_queries():
        columns, _ = run_query(root, name)
        assert columns
    columns, got = run_query(root, "batch_tasks")
    assert [(r[columns.index("status")], r[columns.index("tasks")]) for r in got] == [("done", n)]


def test_a_second_run_renders_nothing_new(night, tmp_path):
    root, config, _ = night
    copy = tmp_path / "library"
    shutil.copytree(root, copy)
    before = rows(copy, "SELECT id, sha256 FROM loops ORDER BY id")
    summary = run_batch(load_config(config), root=copy, progress=False)
    assert summary.new_loops == 0 and summary.failed == 0
    assert summary.skipped == len(before)
    assert rows(copy, "SELECT id, sha256 FROM loops ORDER BY id") == before
    assert rows(copy, "SELECT count(*) FROM batches WHERE status = 'done'")[0][0] == 2


def test_the_same_night_in_one_worker_gives_the_same_loops_and_bytes(night, tmp_path):
    """Same rules + seed + patches = the same loops, byte for byte, however the work was shared out:
    the night above ran on 2 workers, this one on 1 (each worker renders other loops in between)."""
    root, config, _ = night
    again = tmp_path / "library"
    summary = run_batch(load_config(config), root=again, workers=1, progress=False)
    assert summary.failed == 0
    query = "SELECT id, path, sha256, samples, lufs FROM loops ORDER BY id"
    assert rows(again, query) == rows(root, query) and len(rows(root, query)) == expected_loops(root)
    for (path,) in rows(root, "SELECT path FROM loops"):
        assert (again / path).read_bytes() == (root / path).read_bytes()


def test_check_catches_a_tampered_file_and_an_orphan(night, tmp_path):
    root, _, _ = night
    copy = tmp_path / "library"
    shutil.copytree(root, copy)
    (path,) = rows(copy, "SELECT path FROM loops ORDER BY id LIMIT 1")[0]
    data = bytearray((copy / path).read_bytes())
    data[-100] ^= 0xFF
    (copy / path).write_bytes(bytes(data))
    orphan = copy / "loops" / "lofi-hiphop" / "LF_90_chords_stray_Am_0000000000000000.flac"
    shutil.copy(copy / path, orphan)
    result = CliRunner().invoke(main, ["check", "--root", str(copy), "--no-progress"])
    assert result.exit_code == 1
    assert f"sha256 mismatch: " in result.output and path in result.output
    assert f"file without a row: {orphan.relative_to(copy)}" in result.output
    report = Catalog(copy, readonly=True).check()
    assert [m.split()[1] for m in report.mismatched] == [path]
    assert report.orphans == [str(orphan.relative_to(copy))] and not report.missing


def _start_batch(config: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([FARM, "batch", "--config", str(config), "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=config.parent)


def test_sigkill_at_any_moment_then_resume_loses_and_duplicates_nothing(tmp_path):
    root = tmp_path / "library"
    config = write_config(tmp_path / "night.toml", root, workers=1)
    # First kill: as soon as the first loop is in the catalog, mid-batch.
    proc = _start_batch(config)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (poll(root, "SELECT count(*) FROM loops") or [(0,)])[0][0] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the batch ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    total = expected_loops(root)
    done = rows(root, "SELECT count(*) FROM loops")[0][0]
    assert 1 <= done < total
    assert rows(root, "SELECT status FROM batches") == [("running",)]
    pids = {r[0] for r in rows(root, "SELECT worker_pid FROM tasks WHERE worker_pid IS NOT NULL")}
    # A plain `farm batch` refuses to start over an unfinished one.
    blocked = subprocess.run([FARM, "batch", "--config", str(config)], capture_output=True, text=True)
    assert blocked.returncode == 2 and "--resume" in blocked.stderr
    # Second kill: as soon as the resume has started, while it recovers and re-plans.
    proc = _start_batch(config, "--resume")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (poll(root, "SELECT resumed FROM batches") or [(0,)])[0][0] >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([FARM, "batch", "--resume", "--root", str(root), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "(resumed)" in resumed.stdout
    # The summary tells this run's loops from those made before the kills; together, the batch.
    new, earlier = map(int, re.search(r"(\d+) new loops? .* (\d+) made before the interruption", resumed.stdout).groups())
    assert new + earlier == total and earlier > 0
    # Exactly the loops of the batch: none lost, none twice, every file with its row and back.
    assert rows(root, "SELECT count(*), count(DISTINCT path), count(DISTINCT sha256) FROM loops")[0] == (total,) * 3
    assert rows(root, "SELECT status, count(*) FROM tasks GROUP BY status") == [("done", total)]
    assert rows(root, "SELECT status FROM batches") == [("done",)]
    check = subprocess.run([FARM, "check", "--root", str(root), "--no-progress"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert check.stdout.startswith(f"{total} rows, {total} audio files")
    # The workers died with their writer.
    time.sleep(0.2)
    assert pids and not any(alive(pid) for pid in pids)


def test_resume_adopts_finished_files_and_removes_unfinished_ones(night, tmp_path):
    """The moments between a worker's writes and the writer's insert, made on purpose."""
    root, _, _ = night
    copy = tmp_path / "library"
    shutil.copytree(root, copy)
    # Pretend the writer died while these were in flight: rows gone, tasks still running.
    with Catalog(copy) as cat:
        batch_id = cat.db.execute("SELECT id FROM batches").fetchone()[0]
        victims = cat.db.execute("SELECT id, path, sidecar FROM loops ORDER BY id LIMIT 2").fetchall()
        params = json.loads(cat.db.execute("SELECT params FROM tasks WHERE output_id = ?", [victims[0][0]]).fetchone()[0])
        with cat.db.atomic():
            for loop_id, _, _ in victims:
                cat.db.execute("DELETE FROM chords WHERE loop_id = ?", [loop_id])
                cat.db.execute("DELETE FROM loops WHERE id = ?", [loop_id])
                cat.db.execute("UPDATE tasks SET status = 'running' WHERE output_id = ?", [loop_id])
            cat.db.execute("UPDATE batches SET status = 'running'")
    adopted_id, _, _ = victims[0]
    unfinished_id, unfinished_path, unfinished_sidecar = victims[1]
    (copy / unfinished_sidecar).unlink()  # audio written, sidecar not yet: must be redone
    temp = copy / "loops" / "lofi-hiphop" / ".LF_x.abc123.part.flac"
    temp.write_bytes(b"half a file")
    # A worker call as the batch makes it, on the same inputs: the same bytes again.
    sidecar = render_task(params, Worker(copy, "embedded", {}, QALimits()))[0]
    assert sidecar["id"] == adopted_id

    summary = run_batch(root=copy, resume=True, progress=False)
    assert summary.batch_id == batch_id and summary.adopted == 1
    assert summary.removed >= 2  # the audio without a sidecar, the temporary file
    assert not temp.exists()
    with Catalog(copy, readonly=True) as cat:
        assert cat.has_loop(adopted_id) and cat.has_loop(unfinished_id)
        assert cat.check().ok
        statuses = dict(cat.db.execute("SELECT output_id, status FROM tasks").fetchall())
    assert statuses[adopted_id] == statuses[unfinished_id] == "done"


def test_a_hung_task_is_killed_by_its_timeout_and_retried(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    root = tmp_path / "library"
    marker = tmp_path / "markers"
    marker.mkdir()
    config = write_config(tmp_path / "night.toml", root, patches=["sub-bass", "lofi-kit"], workers=1,
                          timeout_s=10, backend="hanging", plugins=["hanging_backend"],
                          backend_options={"marker_dir": str(marker)})
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    hung_pid = int((marker / "hung").read_text())
    (task,) = rows(root, "SELECT output_id, attempts, status, error, worker_pid FROM tasks WHERE attempts > 1")
    output_id, attempts, status, error, pid = task
    assert attempts == 2 and status == "done"
    assert "timed out after 10 s" in error and str(hung_pid) in error
    assert pid != hung_pid  # retried on a fresh worker
    assert not alive(hung_pid)  # the hung worker was killed
    assert rows(root, "SELECT count(*) FROM loops WHERE id = ?", [output_id])[0][0] == 1
    assert rows(root, "SELECT count(*) FROM tasks WHERE status = 'done'")[0][0] == expected_loops(root, ["sub-bass", "lofi-kit"])
    assert Catalog(root, readonly=True).check().ok
    log = next((root / "logs").iterdir())
    assert any("hanging on purpose" in p.read_text() for p in log.iterdir())


def test_a_task_failing_every_attempt_is_marked_failed_with_its_log(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    root = tmp_path / "library"
    config = write_config(tmp_path / "night.toml", root, patches=["sub-bass"], workers=1, max_attempts=2,
                          backend="hanging", plugins=["hanging_backend"],
                          backend_options={"marker_dir": str(tmp_path / "no-such-dir")})
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "1 failed" in result.output
    ((attempts, status, error, log),) = rows(root, "SELECT attempts, status, error, log FROM tasks")
    assert (attempts, status) == (2, "failed")
    assert "No such file or directory" in error and "Traceback" in log
    assert rows(root, "SELECT count(*) FROM loops")[0][0] == 0
    assert Catalog(root, readonly=True).check().ok


def test_a_task_hanging_on_every_attempt_is_killed_each_time_then_failed_while_the_rest_finish(tmp_path, monkeypatch):
    """The drums loop hangs whenever it is rendered: each attempt is killed by its timeout, the
    next runs on a fresh worker, the third is the last; the task is failed with its error and
    log, every other loop of the night is catalogued, and workers that stop normally close
    their backend."""
    monkeypatch.syspath_prepend(str(TESTS))
    root = tmp_path / "library"
    marker = tmp_path / "markers"
    marker.mkdir()
    patches = ["sub-bass", "lofi-kit", "tight-808"]  # quick renders: the timeout can be short
    config = write_config(tmp_path / "night.toml", root, patches=patches, workers=2, timeout_s=4, max_attempts=3,
                          backend="hanging", plugins=["hanging_backend"],
                          backend_options={"marker_dir": str(marker), "hang_patch": "lofi-kit"})
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "1 failed" in result.output
    # Three attempts, each on its own worker, each killed.
    hung = sorted(int(p.name.split("-")[1]) for p in marker.glob("hung-*"))
    assert len(hung) == 3 and not any(alive(pid) for pid in hung)
    ((attempts, status, error, log, pid),) = rows(
        root, "SELECT attempts, status, error, log, worker_pid FROM tasks WHERE json_extract(params, '$.loops[0].patch') "
              "= 'lofi-kit'")
    assert (attempts, status) == (3, "failed") and pid == hung[-1]
    assert error == f"timed out after 4 s: worker {pid} killed"
    assert "hanging on purpose" in log
    # The rest of the night is done and catalogued.
    others = expected_loops(root, patches) - 1
    assert others >= 2
    assert rows(root, "SELECT status, count(*) FROM tasks WHERE json_extract(params, '$.loops[0].patch') != 'lofi-kit' "
                      "GROUP BY status") == [("done", others)]
    assert rows(root, "SELECT count(*), count(DISTINCT patch) FROM loops") == [(others, 2)]
    assert Catalog(root, readonly=True).check().ok
    assert rows(root, "SELECT status FROM batches") == [("done",)]
    # The two workers left at the end closed their backend when the batch told them to stop;
    # the killed ones could not.
    logs = (root / "logs").glob("*/worker-*.log")
    started = {int(m) for p in logs for m in re.findall(r"^worker (\d+) ready", p.read_text(), re.M)}
    closed = {int(p.name.split("-")[1]) for p in marker.glob("closed-*")} - {os.getpid()}
    assert len(closed) == 2 and closed <= started - set(hung)


@pytest.mark.parametrize("text, field", [
    ('styles = ["lofi-hiphop"]\nsample_rate = 22050\n', "sample_rate"),
    ('styles = ["no-such-style"]\n', "styles"),
    ('styles = ["lofi-hiphop"]\npatches = ["no-such-patch"]\n', "patches"),
    ('styles = ["lofi-hiphop"]\nworkerz = 2\n', "workerz"),
    ('styles = ["lofi-hiphop"]\n[qa]\nsilence = -60\n', "qa.silence"),
    ('styles = ["lofi-hiphop"]\nparts = ["kazoo"]\n', "parts"),
    ('styles = ["lofi-hiphop"]\nbackend = "no-such-renderer"\n', "backend"),
    ('styles = ["lofi-hiphop"]\n[permute]\nwhere = "bpm >"\n', "permute.where"),
    ('styles = ["lofi-hiphop"\n', None),
])
def test_a_broken_config_is_one_clear_error_and_writes_nothing(tmp_path, text, field):
    root = tmp_path / "library"
    config = tmp_path / "broken.toml"
    config.write_text(f'root = "{root}"\n' + text)
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert lines[0].startswith(f"error: {config}: ")  # the config file, and in it the field
    if field:
        assert f": {field}: " in lines[0]
    else:
        assert "invalid TOML" in lines[0]
    assert not root.exists()


def test_a_config_whose_root_is_a_file_is_one_clear_error(tmp_path):
    afile = tmp_path / "library"
    afile.write_text("not a catalog")
    config = tmp_path / "night.toml"
    config.write_text(f'root = "{afile}"\nstyles = ["lofi-hiphop"]\n')
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {config}: root: {afile} is a file, not a directory"
    assert afile.read_text() == "not a catalog"


def test_the_default_config_is_a_valid_small_night():
    config = load_config()
    assert config.root == Path("library") and config.workers == 2 and config.max_attempts == 3
    assert config.patches_per_part and config.bars


# -- a root that cannot be written ------------------------------------------------------------------
def test_a_full_disk_stops_the_batch_with_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    root = tmp_path / "library"
    full = tmp_path / "disk-is-full"
    full.touch()
    patches = ["sub-bass"]
    config = write_config(tmp_path / "night.toml", root, patches=patches, workers=1, backend="full-disk",
                          plugins=["hanging_backend"], backend_options={"full_flag": str(full)})
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    named = Path(line.split(": ")[1])
    # The sidecar that could not be written (not its temporary name), under the root.
    assert line.startswith("error: ") and "cannot write: No space left on device" in line and "--resume" in line
    assert named.suffix == ".json" and not named.name.startswith(".")
    assert named.parent.parent == root / "loops" and named.stem.startswith("LF_")
    # Nothing half-written: its audio went with it, no temporary file, no row; the task waits.
    assert [p for p in root.rglob("*") if p.is_file() and "loops" in p.parts] == []
    assert rows(root, "SELECT count(*) FROM loops")[0][0] == 0
    ((status, attempts, error),) = rows(root, "SELECT status, attempts, error FROM tasks WHERE error IS NOT NULL")
    assert (status, attempts) == ("pending", 0) and "No space left on device" in error
    assert rows(root, "SELECT status FROM batches") == [("running",)]
    report = Catalog(root, readonly=True).check()
    assert report.ok and report.rows == report.files == 0
    # Room again: --resume finishes the same batch, every loop with its row and file.
    full.unlink()
    summary = run_batch(root=root, resume=True, progress=False)
    assert summary.failed == 0 and summary.new_loops == expected_loops(root, patches)
    assert rows(root, "SELECT status, count(*) FROM tasks GROUP BY status") == [("done", summary.new_loops)]
    assert Catalog(root, readonly=True).check().ok


@contextlib.contextmanager
def read_only_dir(path: Path):
    """``path`` made unwritable, even for root (the immutable attribute); skip where impossible."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        undo = lambda: path.chmod(0o755)  # noqa: E731
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: E731
    else:
        pytest.skip("cannot make a directory read-only here")
    try:
        yield path
    finally:
        undo()


def test_a_read_only_root_is_one_clear_error_and_writes_nothing(tmp_path):
    with read_only_dir(tmp_path / "library") as root:
        config = write_config(tmp_path / "night.toml", root, patches=["sub-bass"], workers=1)
        with pytest.raises(FarmError, match="cannot write the catalog here") as caught:
            run_batch(load_config(config), progress=False)
        assert caught.value.file == str(root / "catalog.db")
        result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
        assert result.exit_code == 2
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"error: {root / 'catalog.db'}: cannot write the catalog here")
        assert list(root.iterdir()) == []


# -- REAPER: many loops per project -------------------------------------------------------------------
CHAINED = ["dry-piano-chords", "sub-bass", "lofi-kit"]  # patches that ship a .RfxChain


@pytest.fixture
def standin_reaper(tmp_path, monkeypatch):
    """A reaper "executable" that keeps a copy of each project it is given, then runs the stand-in
    (tests/standin/reaper; a test double, not REAPER). Returns (executable, folder of the copies)."""
    standin = PROJECT / "tests" / "standin" / "reaper"
    projects = tmp_path / "projects-seen"
    projects.mkdir()
    reaper = tmp_path / "bin" / "reaper"
    reaper.parent.mkdir()
    reaper.write_text(f"#!{sys.executable}\n"
                      "import os, shutil, sys\n"
                      "args = sys.argv[1:]\n"
                      "if '-renderproject' in args:\n"
                      "    project = args[args.index('-renderproject') + 1]\n"
                      f"    shutil.copy(project, os.path.join({str(projects)!r}, f'{{os.getpid()}}.rpp'))\n"
                      f"os.execv({sys.executable!r}, [{sys.executable!r}, {str(standin)!r}] + args)\n")
    reaper.chmod(0o755)
    for knob in ("SKIP", "SHORT", "SILENT", "ONCE", "HANG", "CRASH", "SLEEP", "LOG", "EXIT", "PER_REGION"):
        monkeypatch.delenv(f"FARM_STANDIN_{knob}", raising=False)
    return reaper, projects


def regions(rpp: Path) -> dict[str, tuple[float, float]]:
    """``{region name: (start s, end s)}`` of a project, as rppxml (REAPER's own parser) reads it."""
    import rppxml

    bounds: dict[int, list] = {}
    for line in rppxml.load(str(rpp)).children:
        if isinstance(line, list) and line and line[0] == "MARKER":
            bounds.setdefault(line[1], []).append(line)
    return {first[3]: (first[2], last[2]) for first, last in bounds.values()}


def night_loops(templates_dir: Path, patches) -> set[tuple[str, str, str]]:
    """(template id, part, patch) of every loop a night must make, from the template.json and
    patch TOML files themselves."""
    roles = {p: tomllib.loads((PROJECT / "patches" / f"{p}.toml").read_text())["roles"] for p in patches}
    out = set()
    for tdir in templates_dir.iterdir():
        template = json.loads((tdir / "template.json").read_text())
        out |= {(template["id"], part["name"], p) for part in template["parts"] for p in patches
                if set(roles[p]) & set(PART_ROLES[part["name"]])}
    return out


def test_the_reaper_backend_packs_loops_of_several_templates_in_one_project(tmp_path, monkeypatch, standin_reaper):
    """Through the stand-in REAPER: a render task packs the loops of several templates (up to
    loops_per_project), one REAPER run of one project with a region per loop; a second night
    renders nothing; the workers leave no REAPER work directory behind."""
    reaper, projects = standin_reaper
    scratch = tmp_path / "tmp"  # the workers' temporary directory (spawned: they read $TMPDIR)
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    root = tmp_path / "library"
    config = write_config(tmp_path / "night.toml", root, patches=CHAINED, templates_per_style=2, workers=1,
                          backend="reaper", backend_options={"reaper": str(reaper), "xvfb": False})
    monkeypatch.setenv("FARM_PROGRESS", "always")  # the bar, though this is no terminal
    result = CliRunner().invoke(main, ["batch", "--config", str(config)])  # with its progress bar
    assert result.exit_code == 0, result.output
    expected = night_loops(root / "templates", CHAINED)
    n = len(expected)
    assert len({t for t, _, _ in expected}) == 2 and n <= 64
    tasks = rows(root, "SELECT json_array_length(params, '$.loops') FROM tasks WHERE stage = 'render' "
                       "AND status = 'done'")
    assert tasks == [(n,)]  # both templates' loops in one task
    # One REAPER run of one project, a region for every loop of the night, both templates in it.
    (rpp,) = projects.iterdir()
    named = {tuple(name.split("_")[1:4]) for name in regions(rpp)}
    assert named == expected
    got = rows(root, "SELECT template_id, part, patch, renderer FROM loops")
    assert {r[:3] for r in got} == expected and {r[3] for r in got} == {"reaper"}
    assert Catalog(root, readonly=True).check().ok
    # The progress bar counts loops, not tasks: loops done, failed, and the rate.
    bar = [s for s in re.split(r"[\r\n]", result.stderr) if s.startswith("render: 100%")]
    assert bar and f"{n}/{n} loops, {n} done, 0 failed" in bar[-1]
    assert re.search(r"(loop/s|s/loop)\]$", bar[-1].strip())
    # The worker closed its backend on the way out: no REAPER work or instance directory is left.
    assert [p.name for p in scratch.iterdir() if p.name.startswith("farm-reaper-")] == []
    # A second night of the same config: every loop already catalogued, REAPER never started.
    summary = run_batch(load_config(config), progress=False)
    assert (summary.new_loops, summary.skipped, summary.failed) == (0, n, 0)
    assert len(list(projects.iterdir())) == 1


def test_resuming_a_reaper_task_renders_only_its_missing_loops(tmp_path, standin_reaper):
    """A task of many loops interrupted half-way: on --resume the loops whose sidecars were
    written are adopted, and REAPER renders a project of only the loop still missing."""
    reaper, projects = standin_reaper
    root = tmp_path / "library"
    config = write_config(tmp_path / "night.toml", root, patches=CHAINED, workers=1, backend="reaper",
                          backend_options={"reaper": str(reaper), "xvfb": False})
    assert run_batch(load_config(config), progress=False).failed == 0
    total = rows(root, "SELECT count(*) FROM loops")[0][0]
    (first,) = projects.iterdir()
    first.unlink()
    # The writer died with the task running: two loops written whole but not recorded, one of
    # them only half-written (its audio without its sidecar).
    with Catalog(root) as cat:
        victims = cat.db.execute("SELECT id, path, sidecar FROM loops ORDER BY id LIMIT 2").fetchall()
        with cat.db.atomic():
            for loop_id, _, _ in victims:
                cat.db.execute("DELETE FROM chords WHERE loop_id = ?", [loop_id])
                cat.db.execute("DELETE FROM loops WHERE id = ?", [loop_id])
            cat.db.execute("UPDATE tasks SET status = 'running'")
            cat.db.execute("UPDATE batches SET status = 'running'")
    (root / victims[1][2]).unlink()
    summary = run_batch(root=root, resume=True, progress=False)
    assert summary.adopted == 1 and summary.failed == 0
    (again,) = projects.iterdir()
    (name,) = regions(again)  # the one loop missing, alone in its project
    missing = rows(root, "SELECT template_id, part, patch FROM loops WHERE id = ?", [victims[1][0]])[0]
    assert tuple(name.split("_")[1:4]) == missing
    assert rows(root, "SELECT count(*) FROM loops")[0][0] == total
    assert rows(root, "SELECT status, count(*) FROM tasks GROUP BY status") == [("done", 1)]
    assert Catalog(root, readonly=True).check().ok


def test_a_failed_reaper_task_counts_every_loop_it_leaves_unmade(tmp_path, monkeypatch, standin_reaper):
    """REAPER dies on every run (the stand-in aborts): the task of many loops fails with REAPER's
    error, and the night says how many loops that left unmade, not "1 failed"."""
    reaper, projects = standin_reaper
    monkeypatch.setenv("FARM_STANDIN_CRASH", "1")
    root = tmp_path / "library"
    config = write_config(tmp_path / "night.toml", root, patches=CHAINED, workers=1, max_attempts=1,
                          backend="reaper", backend_options={"reaper": str(reaper), "xvfb": False, "retries": 0})
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 1, result.output
    n = expected_loops(root, CHAINED)
    assert n >= 3 and f"0 new loops (0 rejected by the machine checks), 0 already catalogued, {n} failed" in result.output
    ((size, status, error),) = rows(root, "SELECT json_array_length(params, '$.loops'), status, error FROM tasks")
    assert (size, status) == (n, "failed")
    assert f"{n} of {n} loops failed after 1 attempt(s)" in error and "REAPER exited with code" in error
    assert len(list(projects.iterdir())) == 1 and rows(root, "SELECT count(*) FROM loops") == [(0,)]


def test_a_reaper_night_with_a_patch_lacking_its_fx_chain_stops_before_writing_anything(tmp_path, standin_reaper):
    from farm.batch import check_patches
    from farm.patches import list_patches
    from farm.render import get_backend

    reaper, projects = standin_reaper
    root = tmp_path / "library"
    options = {"reaper": str(reaper), "xvfb": False}
    # a Faust patch's chain is made from its .dsp; every other patch needs one saved from REAPER
    chainless = [p.name for p in list_patches()
                 if p.kind != "faust" and (p.reaper_fxchain is None or not p.reaper_fxchain.is_file())]
    if not chainless:
        pytest.skip("every shipped patch has its FX chain")
    # patches = "all": the first patch without a chain is named (its file and field), with the
    # fix, and so are the others.
    config = write_config(tmp_path / "night.toml", root, patches="all", backend="reaper", backend_options=options)
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--no-progress"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    first = chainless[0]
    assert line.startswith(f"error: {PROJECT / 'patches' / first}.toml: reaper.fxchain: ")
    assert f"`farm patch pull {first} --track N`" in line and "leave it out of `patches`" in line
    assert str(config) in line
    assert all(name in line for name in chainless)
    assert not root.exists() and list(projects.iterdir()) == []
    # The Python function says the same, and patches of parts the night does not render are not asked.
    with pytest.raises(FarmError) as caught:
        run_batch(load_config(config), progress=False)
    assert (caught.value.file, caught.value.field) == (str(PROJECT / "patches" / f"{first}.toml"), "reaper.fxchain")
    assert not root.exists()
    drum_kits = [p for p in list_patches() if p.fits("drums") and p.name not in chainless]
    others = [p for p in list_patches() if not p.fits("drums") and p.name in chainless]
    assert drum_kits and others
    check_patches(load_config(config, parts=("drums",)), drum_kits + others, get_backend("reaper", **options))
    # The embedded backend needs no chain: the same patches are fine there.
    check_patches(load_config(config, backend="embedded"), list_patches(), get_backend("embedded"))


def test_rpp_only_writes_the_nights_projects_and_stops(tmp_path, standin_reaper):
    """`farm batch --rpp-only DIR`: the night's loops as regions of REAPER projects (read back with
    rppxml), packed across templates; no render, no catalog, no batch."""
    from farm.batch import write_night_projects
    from farm.patches import load_patch

    reaper, projects = standin_reaper
    root = tmp_path / "library"
    out = tmp_path / "rpp"
    config = write_config(tmp_path / "night.toml", root, patches=CHAINED, templates_per_style=2,
                          backend_options={"reaper": str(reaper), "xvfb": False})
    # Only with the REAPER backend: one line, nothing written.
    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--rpp-only", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: backend: --rpp-only needs --backend reaper (the config's backend is 'embedded')"]
    assert not out.exists()

    result = CliRunner().invoke(main, ["batch", "--config", str(config), "--backend", "reaper",
                                       "--rpp-only", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    *printed, last = result.output.strip().splitlines()
    paths = [Path(p) for p in printed]
    expected = night_loops(out / "templates", CHAINED)
    assert len({t for t, _, _ in expected}) == 2
    assert last == f"{len(expected)} loops of 2 templates in 1 REAPER project under {out}; nothing rendered or catalogued"
    assert paths == list(out.glob("*.rpp"))  # up to loops_per_project (64) loops per project
    seen = {}
    for path in paths:
        found = regions(path)
        for name, (start, end) in found.items():
            template_id, part, patch = key = tuple(name.split("_")[1:4])
            template = Template.load(out / "templates" / template_id)
            # The region lasts the loop and the patch's tail, to the sample.
            samples = template.loop_samples(44100) + round(load_patch(patch).tail_s * 44100)
            assert abs((end - start) * 44100 - samples) < 1
            seen[key] = path
    assert set(seen) == expected and len(seen) == len(expected)  # both templates' loops in one project
    # Nothing rendered, nothing catalogued, no REAPER started.
    assert not root.exists() and list(projects.iterdir()) == []
    assert not [p for p in out.rglob("*") if p.suffix in (".wav", ".flac", ".db")]
    # The Python function writes the same projects: the same regions, in the same order.
    again, loops, templates = write_night_projects(load_config(config, backend="reaper"), tmp_path / "rpp2")
    assert (loops, templates, len(again)) == (len(expected), 2, 1)
    assert list(regions(again[0]).items()) == list(regions(paths[0]).items())


def test_a_loop_failing_a_machine_check_is_catalogued_rejected_with_its_reason(night, tmp_path):
    """A real render judged by stricter limits (anything over -26 dBFS counts as full scale) is
    kept and catalogued as rejected, the reason in its row, its sidecar and the counts."""
    from farm.audio import read_audio

    root, _, _ = night
    copy = tmp_path / "library"
    shutil.copytree(root, copy)
    with Catalog(copy) as cat:
        (loop_id,) = cat.db.execute("SELECT id FROM loops WHERE patch = 'sub-bass'").fetchone()
        params = json.loads(cat.db.execute("SELECT params FROM tasks WHERE output_id = ?", [loop_id]).fetchone()[0])
        with cat.db.atomic():
            cat.db.execute("DELETE FROM chords WHERE loop_id = ?", [loop_id])
            cat.db.execute("DELETE FROM loops WHERE id = ?", [loop_id])
    strict = QALimits(clip_level=0.05)
    (sidecar,) = render_task(params, Worker(copy, "embedded", {}, strict))
    assert sidecar["id"] == loop_id and sidecar["status"] == "rejected"
    reason = sidecar["reject_reason"]
    audio, _ = read_audio(copy / sidecar["path"])
    over = int(np.count_nonzero(np.abs(audio) >= 0.05))
    assert reason.startswith("clipping: ") and abs(int(reason.split()[1]) - over) <= 2 and over >= 3
    with Catalog(copy) as cat:
        assert cat.ingest_loop(sidecar)
    shown = json.loads(CliRunner().invoke(main, ["show", loop_id, "--root", str(copy), "--json"]).output)
    assert (shown["status"], shown["reject_reason"], shown["file"]) == ("rejected", reason, "ok")
    stats = json.loads(CliRunner().invoke(main, ["stats", "--root", str(copy), "--json"]).output)
    assert stats["reject_reasons"] == {"clipping": 1}
    on_disk = json.loads((copy / shown["sidecar"]).read_text())
    assert (on_disk["status"], on_disk["reject_reason"]) == ("rejected", reason)
    assert Catalog(copy, readonly=True).check().ok


def test_the_default_night_renders_every_shipped_patch_of_every_kind():
    """The rotation moves a whole patches_per_part along per template, so the default night's 12
    templates reach every patch that fits one of their parts: Faust, plugin and SoundFont."""
    from farm.batch import BatchRun, plan_loops
    from farm.batch.plan import _patches, _styles
    from farm.templates import generate_template

    config = load_config()
    patches = _patches(config)
    generated = [generate_template(rules, config.seed + i, bars=config.bars)
                 for rules in _styles(config) for i in range(config.templates_per_style)]
    run = BatchRun(config, None, "", "embedded", "v", patches=patches,
                   templates=[(g.template, g.template.id) for g in generated])
    planned = {loop["patch"] for loop in plan_loops(run)}
    assert planned == {p.name for p in patches}
    assert {p.kind for p in patches} == {"faust", "plugin", "soundfont"}


def test_a_free_worker_takes_the_queued_task_it_is_warm_for():
    """A worker that compiled a patch (or decoded a parent) gets that patch's next task, from
    anywhere in the first AFFINITY_WINDOW queued; a fresh worker takes what no other is warm for."""
    from farm.batch.pool import AFFINITY_WINDOW, Task, TaskQueue, WorkerPool, _Slot

    def render(i, patch):
        return Task(i, "render", f"loop{i}", "farm.batch:render_task", {"loops": [{"patch_hash": patch}]})

    def permutation(i, parent):
        return Task(i, "permute", f"perm{i}", "farm.permute:permutation_task", {"parent": {"id": parent}})

    pool = WorkerPool.__new__(WorkerPool)
    a, b = (_Slot(process=None, conn=None, log_path=Path("unused")) for _ in range(2))
    pool.slots = [a, b]
    queue = TaskQueue([render(1, "pad"), render(2, "bass"), render(3, "pad"), render(4, "bass"), render(5, "pad"),
                   permutation(6, "p1"), permutation(7, "p2"), permutation(8, "p1")])
    order = [(slot, pool._next_task(queue, slot).id) for slot in (a, b, a, b, a, b)]
    # a plays pad, b plays bass: neither compiles the other's instrument
    assert [(s is a, i) for s, i in order] == [(True, 1), (False, 2), (True, 3), (False, 4), (True, 5), (False, 6)]
    assert pool._next_task(queue, b).id == 8  # b holds parent p1: its other permutation comes first
    assert pool._next_task(queue, a).id == 7
    assert not queue
    # beyond the window, order wins
    far = TaskQueue([render(i, "other") for i in range(AFFINITY_WINDOW)] + [render(999, "pad")])
    assert pool._next_task(far, a).id == 0


def test_the_pool_reads_a_night_s_tasks_as_it_needs_them():
    """A night of any length keeps a bounded window of its tasks in memory: the queue pulls from
    the writer's reader a few at a time, and a retried task goes back in front."""
    from farm.batch.pool import Task, TaskQueue

    pulled = []

    def night():
        for i in range(100_000):
            pulled.append(i)
            yield Task(i, "render", f"loop{i}", "farm.batch:render_task", {})

    queue = TaskQueue(night(), ahead=8)
    first = queue.popleft()
    assert first.id == 0 and len(pulled) == 8
    queue.appendleft(first)  # a retry
    assert [queue.popleft().id for _ in range(3)] == [0, 1, 2]
    assert len(pulled) <= 11


def test_a_worker_begins_its_next_task_while_the_writer_still_records_the_last(tmp_path, monkeypatch):
    """The next task already waits in the worker's pipe: while the writer is still busy with one
    result, the worker is running the next. Each task's log holds only its own lines, and every
    task is begun (and counted) once."""
    from farm.batch.pool import Task, WorkerPool

    monkeypatch.syspath_prepend(str(TESTS))
    marks = tmp_path / "marks"
    marks.mkdir()
    tasks = [Task(n, "render", f"out{n}", "hanging_backend:marking_task", {"marker_dir": str(marks), "n": n})
             for n in range(1, 7)]
    pool = WorkerPool(1, root=tmp_path, backend="embedded", backend_options={}, plugins=["hanging_backend"],
                      qa=QALimits(), log_dir=tmp_path / "logs", timeout_s=60)
    started, done, overlapped = [], {}, []

    def on_done(task, result, log, seconds):
        done[task.id] = log
        if task.id < 6:  # the writer "busy" with this result until the worker begins the next
            deadline = time.monotonic() + 30
            while not (marks / f"began-{task.id + 1}").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            overlapped.append((marks / f"began-{task.id + 1}").exists())

    try:
        pool.run(tasks, max_attempts=1, on_start=lambda task, pid: started.append(task.id), on_done=on_done,
                 on_error=lambda *a: pytest.fail(f"a task failed: {a}"))
    finally:
        pool.close()
    assert started == [1, 2, 3, 4, 5, 6] and all(t.attempts == 1 for t in tasks)
    # near the end of the queue a worker holds one task only: the last ones wait for nothing
    assert overlapped[:3] == [True, True, True]
    for n, log in done.items():
        assert re.findall(r"\] task (\d+): ", log) == [str(n)] and f"marking {n}" in log
