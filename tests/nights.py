"""Small real nights for the tests: one rule set, a few parts and patches, rendered by `farm batch`."""
from __future__ import annotations

import json
from pathlib import Path

from farm.batch import load_config, run_batch


def write_night(config: Path, root: Path, *, style: str = "lofi-hiphop", seed: int = 7, bars: int = 2,
                parts=("chords",), patches=("warm-rhodes",), qa: dict | None = None, **extra) -> Path:
    """A batch TOML at ``config`` for one template of ``style``; ``extra`` adds top-level fields,
    ``qa`` a ``[qa]`` table."""
    fields = {"root": str(root), "styles": [style], "templates_per_style": 1, "seed": seed, "bars": bars,
              "parts": list(parts), "patches": list(patches), "workers": 1, "timeout_s": 120, **extra}
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
    if qa:
        text += "[qa]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in qa.items())
    config.write_text(text)
    return config


def make_night(base: Path, **fields) -> Path:
    """Render the night of ``write_night(base/night.toml, base/library, **fields)``; its root."""
    root = base / "library"
    summary = run_batch(load_config(write_night(base / "night.toml", root, **fields)), progress=False)
    assert summary.failed == 0
    return root
