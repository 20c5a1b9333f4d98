"""A night on render nodes: the writer's side of Dask distributed (``farm batch --cluster``).

``ClusterPool`` has the local pool's ``run`` and ``close``: the writer hands it the same tasks and
gets the same callbacks, so it inserts rows exactly as in a local night and never knows where a
task ran. Each task goes to a node (``farm.batch.node.run_on_node``) with the files it reads; what
comes back is checked (every audio file against its sidecar's sha256) and written into the catalog
root under temporary names, then renamed, before the writer is told.

Before a node gets a task of an embedded night it renders the probe (``farm.batch.probe``), and
so does this machine: a node whose bytes differ from this machine's gets none of the night (a
loop's id names its inputs, so every machine must render the same bytes for it).

Faults: a node that dies mid-task has its task run elsewhere by Dask; a task that fails (a hung
render is killed on its node after its timeout) is retried on a node it has not failed on, up to
``max_attempts``; a node that fails 3 tasks of a batch gets no more of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterable

from farm.errors import FarmError
from farm.batch.pool import TaskQueue

NODE_FAILURES_ALLOWED = 3  # task failures on one node before a batch stops using it
NODE_WAIT_S = 60.0  # how long a night waits for a render node when none is there
PROBED_BACKENDS = ("embedded",)  # the backends this machine can render too, so can compare

_VERDICTS: dict[str, str | None] = {}  # node address -> why it is not used (None: it renders our bytes)


def check_cluster(address: str, backend: str) -> None:
    """FarmError (one line) unless the scheduler at ``address`` answers and has a node for ``backend``
    that renders the bytes this machine does."""
    from farm.qa import QALimits

    ClusterPool(address, root=Path("."), backend=backend, backend_options={}, plugins=(), qa=QALimits(),
                timeout_s=1.0).close()


class ClusterPool:
    """Tasks of one batch on the Dask cluster at ``address``."""

    def __init__(self, address: str, *, root: Path, backend: str, backend_options: dict, plugins, qa,
                 timeout_s: float, shared_root: bool = False, connect_timeout_s: float = 10.0):
        from distributed import Client

        self.root = Path(root)
        self.backend = backend
        self.shared_root = shared_root
        self.spec = {"backend": backend, "backend_options": dict(backend_options), "plugins": list(plugins),
                     "qa": dataclasses.asdict(qa), "timeout_s": float(timeout_s)}
        try:
            self.client = Client(address, timeout=connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise FarmError(f"cannot reach the scheduler at {address}: {err}", field="cluster.address") from None
        self.refused: dict[str, str] = {}  # node address -> why it gets none of the night
        self.run_id = uuid.uuid4().hex[:8]
        try:
            self.nodes = self._nodes()
        except FarmError:
            self.client.close()
            raise
        if not self.nodes:
            self.client.close()
            if self.refused:
                why = "; ".join(f"{node}: {reason}" for node, reason in sorted(self.refused.items()))
                raise FarmError(f"no render node at {address} renders the bytes this machine does; {why}",
                                field="cluster.address")
            raise FarmError(f"no render node at {address} offers {backend!r} (start one: farm node {address})",
                            field="cluster.address")
        self._cache: dict[str, dict[str, bytes]] = {}

    def _slots(self, banned: set[str]) -> int:
        """Tasks in flight at most: the threads of the nodes still in use (at least 1)."""
        info = self.client.scheduler_info()["workers"]
        return max(1, sum(w.get("nthreads", 1) for a, w in info.items()
                          if a not in banned and a not in self.refused
                          and w.get("resources", {}).get(self.backend, 0) > 0))

    def _nodes(self) -> set[str]:
        """The workers that advertise this backend as a resource and render this machine's bytes
        (a node seen for the first time renders the probe first)."""
        info = self.client.scheduler_info()["workers"]
        nodes = {address for address, w in info.items() if w.get("resources", {}).get(self.backend, 0) > 0}
        if self.backend in PROBED_BACKENDS:
            self._probe(sorted(nodes - set(_VERDICTS)))
            self.refused.update({node: _VERDICTS[node] for node in nodes if _VERDICTS[node]})
            nodes = {node for node in nodes if _VERDICTS[node] is None}
        return nodes

    def _probe(self, nodes: list[str]) -> None:
        """Render the probe on ``nodes`` and here, and note which nodes differ, and how."""
        if not nodes:
            return
        from farm.batch.node import probe_on_node
        from farm.batch.probe import Probe, machine_probe

        futures = {node: self.client.submit(probe_on_node, workers=[node], allow_other_workers=False, pure=False,
                                            key=f"farm-probe-{self.run_id}-{node}") for node in nodes}
        ours = machine_probe()  # rendered meanwhile, in a process of its own
        for node, future in futures.items():
            try:
                answer = future.result()
            except Exception as err:  # noqa: BLE001 - a node lost while probing: not used
                _VERDICTS[node] = f"its render probe failed: {type(err).__name__}: {err}"
                continue
            if "error" in answer:
                _VERDICTS[node] = f"its render probe failed: {answer['error']}"
                continue
            theirs = Probe.from_json(answer["probe"])
            differ = ours.differences(theirs)
            _VERDICTS[node] = None if not differ else (
                f"it renders other bytes than this machine: {'; '.join(differ)} (probe {theirs.digest}, "
                f"here {ours.digest}; another CPU or library build)")

    # -- files going out ---------------------------------------------------------------------
    def _folder(self, rel: str) -> dict[str, bytes]:
        if rel not in self._cache:
            folder = self.root / rel
            self._cache[rel] = {f"{rel}/{p.name}": p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        return self._cache[rel]

    def _outgoing(self, task) -> tuple[dict, dict]:
        """``(params for the node, files it needs)``: templates, patch files, a permutation's parent."""
        params, files = json.loads(json.dumps(task.params)), {}
        if self.shared_root:
            return params, files
        for spec in params.get("loops", ()):
            files.update(self._folder(spec.get("template_dir", params.get("template_dir"))))
            patch = Path(spec["patch_path"])
            node_dir = f"patches/{spec['patch_hash']}"
            for sibling in sorted(patch.parent.glob(patch.stem + ".*")):
                files[f"{node_dir}/{sibling.name}"] = sibling.read_bytes()
            spec["patch_path"] = f"{node_dir}/{patch.name}"  # relative: the node's own root
        if "parent" in params:
            files.update(self._folder(params["template_dir"]))
            files[params["parent"]["path"]] = (self.root / params["parent"]["path"]).read_bytes()
        return params, files

    # -- files coming back -------------------------------------------------------------------
    def _arrive(self, result: dict) -> None:
        """Check and write what a node sent back; FarmError (the task failed) when it is not whole."""
        from farm.files import atomic_write_bytes, inside
        from farm.sidecar import file_sha256, sidecar_path

        for sidecar in result["sidecars"]:
            audio_rel, side_rel = sidecar["path"], sidecar_path(sidecar["path"]).as_posix()
            if self.shared_root:
                if file_sha256(self.root / audio_rel) != sidecar["sha256"]:
                    raise FarmError("is not the audio its sidecar describes (sha256)", file=self.root / audio_rel)
                continue
            audio, side = result["files"].get(audio_rel), result["files"].get(side_rel)
            if audio is None or side is None:
                raise FarmError("the node sent a sidecar without its files", field=audio_rel)
            if hashlib.sha256(audio).hexdigest() != sidecar["sha256"]:
                raise FarmError("arrived damaged (sha256 differs from its sidecar's)", field=audio_rel)
            if json.loads(side) != json.loads(json.dumps(sidecar)):
                raise FarmError("arrived damaged (not the sidecar the node reported)", field=side_rel)
            atomic_write_bytes(inside(self.root, audio_rel, "path"), audio)  # audio first: a sidecar means whole
            atomic_write_bytes(inside(self.root, side_rel, "path"), side)

    # -- running -----------------------------------------------------------------------------
    def run(self, tasks: Iterable, *, max_attempts: int, on_start: Callable, on_done: Callable,
            on_error: Callable) -> None:
        """Run every task on the nodes; the callbacks (in this process) record what happens."""
        from distributed import as_completed

        from farm.batch.node import run_on_node

        failed_on: dict[int, set[str]] = defaultdict(set)
        node_failures: Counter = Counter()
        banned: set[str] = set()
        futures = {}

        def submit(task):
            nodes = self._nodes() - banned
            deadline = time.monotonic() + NODE_WAIT_S
            while not nodes and time.monotonic() < deadline:  # a node lost a moment ago; others joining
                time.sleep(0.5)
                nodes = self._nodes() - banned
            allowed = sorted(nodes - failed_on[task.id]) or sorted(nodes)
            if not allowed:
                raise FarmError(f"no render node left for the batch ({len(banned)} failed "
                                f"{NODE_FAILURES_ALLOWED} tasks each)", field="cluster")
            task.attempts += 1
            on_start(task, 0)
            params, files = self._outgoing(task)
            batch = dict(self.spec, task_id=task.id, stage=task.stage, files=files,
                         shared_root=str(self.root.resolve()) if self.shared_root else None)
            future = self.client.submit(run_on_node, task.function, params, batch, workers=allowed,
                                        allow_other_workers=False, resources={self.backend: 1}, pure=False,
                                        key=f"farm-{self.run_id}-{task.id}-{task.attempts}")
            futures[future] = (task, time.monotonic())
            return future

        # Tasks are handed out as slots free up (not all at once), so a node that starts failing
        # is dropped before it is queued more of the batch.
        queue = TaskQueue(tasks)
        pending = as_completed([], loop=self.client.loop)

        def top_up():
            # Not while a result waits to be read: a failing node fails fast, and would be handed
            # the next task before its third failure is counted. Reading the result tops up again.
            while queue and len(futures) < self._slots(banned) and not any(f.done() for f in futures):
                pending.add(submit(queue.popleft()))

        top_up()
        for future in pending:
            task, started = futures.pop(future)
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - a node lost past Dask's own retries (KilledWorker), ...
                result = {"status": "error", "node": None, "error": f"{type(err).__name__}: {err}", "log": "",
                          "seconds": time.monotonic() - started}
            if result["status"] == "done":
                try:
                    self._arrive(result)
                except (FarmError, OSError) as err:
                    result.update(status="error", error=err.line() if isinstance(err, FarmError) else str(err))
            if result["status"] == "done":
                on_done(task, result["sidecars"], result["log"], result["seconds"])
                top_up()
                continue
            node = result.get("node")
            if node:
                failed_on[task.id].add(node)
                node_failures[node] += 1
                if node_failures[node] >= NODE_FAILURES_ALLOWED:
                    banned.add(node)
            final = task.attempts >= max_attempts
            on_error(task, f"{node or 'a node'}: {result['error']}", result.get("log", ""), result["seconds"], final)
            if not final:
                queue.appendleft(task)
            top_up()

    def close(self) -> None:
        self.client.close()
