"""The batch configuration: a night's TOML, read and checked field by field (``load_config``)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from farm.errors import FarmError, unknown_name
from farm.files import read_toml
from farm.model import PART_ROLES
from farm.qa import QA_RANGES, QALimits


DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "nightly.toml"
LOG_EXCERPT_CHARS = 2000
WORKER_START_TIMEOUT_S = 120.0  # a worker must have its renderer warm within this


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchConfig:
    """What a night renders (see ``farm/nightly.toml`` for every field, documented)."""

    root: Path = Path("library")
    styles: tuple[str, ...] | str = "all"
    templates_per_style: int = 1
    seed: int = 1
    bars: int | None = None
    parts: tuple[str, ...] | str = "all"
    patches: tuple[str, ...] | str = "all"
    patches_per_part: int | None = None
    sample_rate: int = 44100
    format: str = "flac24"
    workers: int = 2
    timeout_s: float = 300.0
    max_attempts: int = 3
    backend: str = "embedded"
    backend_options: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    qa: QALimits = QALimits()
    stages: dict = field(default_factory=dict)  # TOML tables of later stages, by stage name
    cluster: dict = field(default_factory=dict)  # [cluster]: address (Dask scheduler), shared_root
    source: str | None = None  # the TOML file it was read from

    def to_dict(self) -> dict:
        """JSON-able form, stored with the batch so ``--resume`` runs exactly the same job."""
        d = dataclasses.asdict(self)
        d["root"] = str(self.root)
        d["qa"] = dataclasses.asdict(self.qa)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BatchConfig":
        d = dict(d)
        d["root"] = Path(d["root"])
        d["qa"] = QALimits(**d["qa"])
        for key in ("styles", "parts", "patches", "plugins"):
            if isinstance(d[key], list):
                d[key] = tuple(d[key])
        return cls(**d)


_KEYS = {f.name for f in dataclasses.fields(BatchConfig)} - {"qa", "stages", "source"} | {"qa"}


def load_config(path: str | Path | None = None, **overrides) -> BatchConfig:
    """Read and validate a batch TOML (default ``farm/nightly.toml``); ``overrides`` win.

    Every problem is one FarmError naming the file and the field; nothing is written.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = read_toml(path)
    except FileNotFoundError:
        raise FarmError("no such batch config", file=path) from None
    return parse_config(data, path, **overrides)


def parse_config(data: dict, path: str | Path | None = None, **overrides) -> BatchConfig:
    """Validate a batch config given as a dict (the parsed TOML)."""

    def fail(key: str, message: str):
        raise FarmError(message, file=path, field=key)

    from farm.batch.plan import stages  # the stages name their own TOML tables

    stage_tables = {s.name: s for s in stages() if s.config_table}
    for key in data:
        if key not in _KEYS and key not in stage_tables:
            fail(key, f"unknown field (known: {', '.join(sorted(_KEYS | set(stage_tables)))})")

    def integer(key, lo, hi, default):
        value = data.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(key, f"expected a whole number {lo}..{hi}, got {value!r}")
        return value

    def names(key):
        value = data.get(key, "all")
        if value == "all":
            return "all"
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            fail(key, f'expected "all" or a non-empty list of names, got {value!r}')
        return tuple(dict.fromkeys(value))

    from farm.audio import FORMATS
    from farm.render import SAMPLE_RATES

    root = data.get("root", "library")
    if not isinstance(root, str) or not root:
        fail("root", "expected a directory path")
    if Path(root).exists() and not Path(root).is_dir():
        fail("root", f"{root} is a file, not a directory")
    sample_rate = data.get("sample_rate", 44100)
    if sample_rate not in SAMPLE_RATES or isinstance(sample_rate, bool):
        fail("sample_rate", f"{sample_rate!r} is not one of {', '.join(map(str, SAMPLE_RATES))}")
    fmt = data.get("format", "flac24")
    if fmt not in FORMATS:
        fail("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    timeout = data.get("timeout_s", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
        fail("timeout_s", f"expected seconds > 0, got {timeout!r}")
    backend = data.get("backend", "embedded")
    if not isinstance(backend, str) or not backend:
        fail("backend", "expected a backend name")
    options = data.get("backend_options", {})
    if not isinstance(options, dict):
        fail("backend_options", "expected a table")
    cluster = data.get("cluster", {})
    if not isinstance(cluster, dict):
        fail("cluster", "expected a table")
    for key, value in cluster.items():
        if key == "address" and not (isinstance(value, str) and value.strip() and " " not in value):
            fail("cluster.address", f"expected a scheduler address such as tcp://10.0.0.5:8786, got {value!r}")
        elif key == "shared_root" and not isinstance(value, bool):
            fail("cluster.shared_root", f"expected true or false, got {value!r}")
        elif key not in ("address", "shared_root"):
            fail(f"cluster.{key}", "unknown field (known: address, shared_root)")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        fail("plugins", "expected a list of module names")
    qa_table = data.get("qa", {})
    if not isinstance(qa_table, dict):
        fail("qa", "expected a table")
    qa_fields = {f.name: f for f in dataclasses.fields(QALimits)}
    for key, value in qa_table.items():
        if key not in qa_fields:
            fail(f"qa.{key}", f"unknown field (known: {', '.join(qa_fields)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"qa.{key}", f"expected a number, got {value!r}")
        low, high = QA_RANGES[key]
        if not (math.isfinite(value) and low <= value <= high):
            fail(f"qa.{key}", f"expected a number {low:g}..{high:g}, got {value!r}")
        if isinstance(low, int) and value != int(value):
            fail(f"qa.{key}", f"expected a whole number, got {value!r}")
    qa = QALimits(**{k: type(getattr(QALimits(), k))(v) for k, v in qa_table.items()})

    config = BatchConfig(
        root=Path(root), styles=names("styles"),
        templates_per_style=integer("templates_per_style", 1, 1000, 1),
        seed=integer("seed", 0, 2**31 - 1, 1), bars=integer("bars", 1, 32, None),
        parts=names("parts"), patches=names("patches"),
        patches_per_part=integer("patches_per_part", 1, 1000, None),
        sample_rate=sample_rate, format=fmt, workers=integer("workers", 1, 256, 2),
        timeout_s=float(timeout), max_attempts=integer("max_attempts", 1, 100, 3),
        backend=backend, backend_options=dict(options), plugins=tuple(plugins), qa=qa,
        stages={name: data[name] for name in stage_tables if name in data}, cluster=dict(cluster),
        source=str(path) if path is not None else None)
    if config.parts != "all":
        for part in config.parts:
            if part not in PART_ROLES:
                fail("parts", unknown_name("part", part, PART_ROLES))
    for name, table in config.stages.items():
        if not isinstance(table, dict):
            fail(name, "expected a table")
        stage_tables[name].config_table(table, path)  # raises FarmError naming the field
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "root" in overrides:
        overrides["root"] = Path(overrides["root"])
    if "cluster" in overrides:  # --cluster ADDRESS: the address, the rest of [cluster] kept
        overrides["cluster"] = {**config.cluster, "address": overrides["cluster"]}
    return dataclasses.replace(config, **overrides)


