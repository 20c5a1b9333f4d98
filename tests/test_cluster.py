"""Render nodes: a real `dask scheduler` and `farm node` processes on 127.0.0.1, started and
stopped here. A night on the nodes equals a local night byte for byte; a node killed mid-night
loses nothing; a hung render is killed on its node and retried on another; a task failing on
every node fails for good with its log."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from farm.batch import load_config, run_batch
from farm.catalog import Catalog
from nights import write_night

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
TESTS = Path(__file__).parent


class Cluster:
    """A scheduler and its nodes, each in a process group of its own."""

    def __init__(self, tmp: Path):
        self.tmp, self.nodes = tmp, {}
        file = tmp / "scheduler.json"
        self.scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)], stdout=subprocess.DEVNULL, stderr=open(tmp / "scheduler.log", "w"),
            start_new_session=True)
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        import json

        time.sleep(0.2)
        self.address = json.loads(file.read_text())["address"]

    def add(self, name: str, **env) -> None:
        env = dict(os.environ, PYTHONPATH=str(TESTS), **env)  # the test backends, for the nodes' renderers
        self.nodes[name] = subprocess.Popen(
            [str(BIN / "farm"), "node", self.address, "--name", name, "--resources",
             "embedded=1,hanging=1,flaky-node=1",
             "--scratch", str(self.tmp / f"scratch-{name}")],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{name}.log", "w"), env=env, start_new_session=True)

    def wait_for(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(count, timeout=60)

    def kill(self, name: str) -> None:
        os.killpg(self.nodes.pop(name).pid, signal.SIGKILL)

    def stop(self) -> None:
        for proc in [*self.nodes.values(), self.scheduler]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    c.add("a")
    c.add("b")
    c.wait_for(2)
    yield c
    c.stop()


def rows(root: Path, sql: str, params=()) -> list[tuple]:
    with sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True) as conn:
        return conn.execute(sql, params).fetchall()


MANY = {"style": "synthwave", "bars": 4, "templates_per_style": 2, "parts": ("chords", "bass", "arp", "melody", "drums"),
        "patches": ("warm-rhodes", "analog-pad", "sub-bass", "fm-bass", "pluck-arp", "glass-arp", "pwm-lead",
                    "saw-lead", "kit-808", "lofi-kit"), "patches_per_part": 2}


def night(tmp: Path, name: str, **fields) -> Path:
    import json

    fields = {"parts": ("chords", "bass", "drums"), "patches": ("warm-rhodes", "sub-bass", "kit-808"), **fields}
    options = fields.pop("backend_options", None)
    config = write_night(tmp / f"{name}.toml", tmp / name, **fields)
    if options:  # a TOML inline table
        items = ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
        config.write_text(config.read_text() + f"backend_options = {{ {items} }}\n")
    return config


def catalogued(root: Path) -> int:
    """Loops in the catalog so far (0 while the writer is still creating it)."""
    try:
        return rows(root, "SELECT count(*) FROM loops")[0][0] if (root / "catalog.db").exists() else 0
    except sqlite3.OperationalError:
        return 0


def files(root: Path) -> dict[str, bytes]:
    return {path: (root / path).read_bytes() for (path,) in rows(root, "SELECT path FROM loops")}


def test_a_night_on_two_nodes_equals_a_local_night_byte_for_byte(cluster, tmp_path):
    config = load_config(night(tmp_path, "nodes", parts=("chords", "bass", "drums", "melody"),
                               patches=("warm-rhodes", "analog-pad", "sub-bass", "kit-808", "pwm-lead")))
    summary = run_batch(config, progress=False, cluster=cluster.address)
    local = run_batch(load_config(night(tmp_path, "local", parts=("chords", "bass", "drums", "melody"),
                                        patches=("warm-rhodes", "analog-pad", "sub-bass", "kit-808", "pwm-lead"))),
                      progress=False)
    assert summary.failed == local.failed == 0 and summary.new_loops == local.new_loops == 5
    ours, theirs = tmp_path / "nodes", tmp_path / "local"
    assert rows(ours, "SELECT id, sha256, path FROM loops ORDER BY id") == \
        rows(theirs, "SELECT id, sha256, path FROM loops ORDER BY id")
    assert files(ours) == files(theirs)
    assert Catalog(ours, readonly=True).check().ok
    # the nodes rendered in their own folders and kept nothing of it
    for name in ("a", "b"):
        assert not list((tmp_path / f"scratch-{name}" / "loops").rglob("*.flac"))


def test_a_node_killed_mid_night_loses_nothing(cluster, tmp_path):
    config = load_config(night(tmp_path, "night", **MANY))
    done = {}
    runner = threading.Thread(target=lambda: done.setdefault("summary", run_batch(
        config, progress=False, cluster=cluster.address)))
    runner.start()
    root = tmp_path / "night"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill node a once the night is under way
        if catalogued(root) >= 2:
            break
        time.sleep(0.05)
    cluster.kill("a")
    runner.join(300)
    summary = done["summary"]
    assert summary.failed == 0 and summary.new_loops == rows(root, "SELECT count(*) FROM tasks")[0][0]
    assert rows(root, "SELECT status, count(*) FROM tasks GROUP BY status") == [("done", summary.new_loops)]
    assert rows(root, "SELECT count(DISTINCT path), count(*) FROM loops") == [(summary.new_loops,) * 2]
    assert Catalog(root, readonly=True).check().ok
    run_batch(load_config(night(tmp_path, "local", **MANY)), progress=False)
    assert files(root) == files(tmp_path / "local")


def test_a_hung_render_is_killed_on_its_node_and_retried_on_another(cluster, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    markers = tmp_path / "markers"
    markers.mkdir()
    config = load_config(night(tmp_path, "night", timeout_s=8, backend="hanging", plugins=["hanging_backend"],
                               backend_options={"marker_dir": str(markers)}))
    summary = run_batch(config, progress=False, cluster=cluster.address)
    root = tmp_path / "night"
    assert summary.failed == 0 and summary.new_loops == 3
    ((attempts, status, error),) = rows(root, "SELECT attempts, status, error FROM tasks WHERE attempts > 1")
    assert (attempts, status) == (2, "done")
    assert error.startswith("tcp://127.0.0.1:") and "timed out after 8 s" in error
    hung = int((markers / "hung").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)  # the hung renderer was killed on its node
    assert Catalog(root, readonly=True).check().ok


def test_a_task_failing_on_every_node_fails_for_good_with_its_log(cluster, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    cluster.add("c")
    cluster.wait_for(3)
    config = load_config(night(tmp_path, "night", parts=("bass",), patches=("sub-bass",), backend="hanging",
                               plugins=["hanging_backend"], backend_options={"marker_dir": str(tmp_path / "none")}))
    summary = run_batch(config, progress=False, cluster=cluster.address)
    root = tmp_path / "night"
    assert summary.failed == 1 and summary.new_loops == 0
    ((attempts, status, error, log),) = rows(root, "SELECT attempts, status, error, log FROM tasks")
    assert (attempts, status) == (3, "failed")
    assert "No such file or directory" in error and "Traceback" in log
    assert Catalog(root, readonly=True).check().ok


# numpy's routines for other CPUs (NPY_DISABLE_CPU_FEATURES): without AVX-512 a loop's bytes and
# figures are this machine's; without AVX2 as well (a CPU from before 2013) its brightness is not
NO_AVX512 = "X86_V4 AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
NO_AVX2 = "X86_V3 " + NO_AVX512


def _avx512() -> bool:
    from numpy._core._multiarray_umath import __cpu_features__

    return bool(__cpu_features__.get("AVX512_SKX") and __cpu_features__.get("AVX2"))


@pytest.mark.skipif(not _avx512(), reason="nodes on numpy's routines for other CPUs need AVX-512 here")
def test_a_node_that_renders_other_bytes_gets_none_of_the_night(tmp_path):
    from distributed import Client

    c = Cluster(tmp_path)
    try:
        c.add("old", NPY_DISABLE_CPU_FEATURES=NO_AVX2)
        c.wait_for(1)
        out = subprocess.run([str(BIN / "farm"), "batch", "--config", str(night(tmp_path, "refused")),
                              "--cluster", c.address, "--no-progress"], capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert f"no render node at {c.address} renders the bytes this machine does" in out.stderr
        assert "it renders other bytes than this machine: " in out.stderr and "the figures of warm-rhodes" in out.stderr
        assert not (tmp_path / "refused").exists()

        c.add("avx2", NPY_DISABLE_CPU_FEATURES=NO_AVX512)  # the same bytes: it gets the night
        c.wait_for(2)
        summary = run_batch(load_config(night(tmp_path, "nodes")), progress=False, cluster=c.address)
        local = run_batch(load_config(night(tmp_path, "local")), progress=False)
        assert summary.failed == local.failed == 0 and summary.new_loops == local.new_loops == 3
        assert rows(tmp_path / "nodes", "SELECT id, sha256, lufs, true_peak_db FROM loops ORDER BY id") == \
            rows(tmp_path / "local", "SELECT id, sha256, lufs, true_peak_db FROM loops ORDER BY id")
        assert files(tmp_path / "nodes") == files(tmp_path / "local")
        with Client(c.address, timeout=30) as client:
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        assert [names[node] for node in summary.refused_nodes] == ["old"]
        assert any(line.startswith("render node ") and "not used: it renders other bytes" in line
                   for line in summary.lines())
        assert not list((tmp_path / "scratch-old").rglob("*.flac"))
    finally:
        c.stop()


def test_no_node_for_the_backend_is_one_line_before_anything_is_written(cluster, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    config = night(tmp_path, "night", backend="full-disk", plugins=["hanging_backend"],
                   backend_options={"full_flag": str(tmp_path / "no-flag")})
    out = subprocess.run([str(BIN / "farm"), "batch", "--config", str(config), "--cluster", cluster.address,
                          "--no-progress"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert f"no render node at {cluster.address} offers 'full-disk' (start one: farm node" in out.stderr
    assert not (tmp_path / "night").exists()
    unreachable = subprocess.run([str(BIN / "farm"), "batch", "--config", str(night(tmp_path, "other")),
                                  "--cluster", "tcp://127.0.0.1:9", "--no-progress"], capture_output=True, text=True)
    assert unreachable.returncode == 2 and "cannot reach the scheduler at tcp://127.0.0.1:9" in unreachable.stderr
    assert not (tmp_path / "other").exists()


def test_the_writer_killed_mid_night_resumes_on_the_same_cluster(cluster, tmp_path):
    config = night(tmp_path, "night", **MANY)
    text = config.read_text() + f'[cluster]\naddress = "{cluster.address}"\n'
    config.write_text(text)
    writer = subprocess.Popen([str(BIN / "farm"), "batch", "--config", str(config), "--no-progress"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    root = tmp_path / "night"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if catalogued(root) >= 2:
            break
        time.sleep(0.05)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    made = rows(root, "SELECT count(*) FROM loops")[0][0]
    assert 2 <= made < rows(root, "SELECT count(*) FROM tasks")[0][0]  # killed mid-night
    resumed = subprocess.run([str(BIN / "farm"), "batch", "--resume", "--root", str(root), "--no-progress"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert rows(root, "SELECT status, count(*) FROM tasks GROUP BY status") == \
        [("done", rows(root, "SELECT count(*) FROM loops")[0][0])]
    assert Catalog(root, readonly=True).check().ok
    run_batch(load_config(night(tmp_path, "local", **MANY)), progress=False)
    assert files(root) == files(tmp_path / "local")


def test_a_node_that_fails_three_tasks_gets_no_more_of_the_batch(cluster, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    cluster.add("bad", FARM_TEST_BAD_NODE="1")
    cluster.wait_for(3)
    config = load_config(night(tmp_path, "night", **dict(MANY, backend="flaky-node", plugins=["hanging_backend"])))
    summary = run_batch(config, progress=False, cluster=cluster.address)
    root = tmp_path / "night"
    assert summary.failed == 0 and summary.new_loops == rows(root, "SELECT count(*) FROM tasks")[0][0] > 6
    from distributed import Client

    with Client(cluster.address) as client:
        bad = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "bad")
    failed_there = rows(root, f"SELECT count(*) FROM tasks WHERE error LIKE '{bad}:%'")[0][0]
    assert 1 <= failed_there <= 3  # the bad node grabs tasks fast; after 3 failures it is given none
    assert rows(root, "SELECT max(attempts) FROM tasks")[0][0] <= 2  # each retried on a good node


def test_nodes_sharing_the_catalog_folder_write_into_it_and_the_night_is_the_same(cluster, tmp_path):
    config = night(tmp_path, "shared")
    config.write_text(config.read_text() + "[cluster]\nshared_root = true\n")
    summary = run_batch(load_config(config), progress=False, cluster=cluster.address)
    local = run_batch(load_config(night(tmp_path, "local")), progress=False)
    assert summary.failed == 0 and summary.new_loops == local.new_loops == 3
    assert files(tmp_path / "shared") == files(tmp_path / "local")
    assert Catalog(tmp_path / "shared", readonly=True).check().ok
    for name in ("a", "b"):  # nothing went through the nodes' own folders
        assert not list((tmp_path / f"scratch-{name}").rglob("*.flac"))
