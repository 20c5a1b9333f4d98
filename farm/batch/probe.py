"""Does this machine render the bytes another does? A short fixed render through every path a
night takes, so a render node can be compared with the machine that holds the catalog.

A loop's id names its inputs, not its bytes, so two machines must render the same bytes for the
same id. The same code and libraries can still differ between CPUs: numpy picks SIMD routines
for the CPU it runs on (without AVX2 a loop's brightness comes out other in the last bit),
libfaust's JIT compiles for the host, and a library may be another build. The probe renders one
SoundFont loop, one polyphonic Faust loop with a parameter sweep, one Faust drum kit loop (each
finished: fold, DC blocker, loudness, true peak) and one Rubber Band pitch shift, and keeps a
sha256 of each one's audio and the exact figures its sidecar would carry (loudness, true peak,
level, onsets, brightness, the onset fingerprint). It runs in a fresh process, as a night's
workers do, in about 2.5 s: ``python -m farm.batch.probe`` prints it as JSON.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

from farm.errors import FarmError

PROBE_PATCHES = ("warm-rhodes", "analog-pad", "kit-909")  # SoundFont; Faust voices and a sweep; Faust drums
PROBE_SECONDS = 120.0  # a probe that takes longer is a hung renderer


@dataclass(frozen=True)
class Probe:
    """What one machine rendered: ``(what, audio sha256, figures)`` for each path, in order."""

    parts: tuple[tuple[str, str, str], ...]

    @property
    def digest(self) -> str:
        """One sha256 (hex, 16 characters) for the whole probe: equal digests, equal bytes."""
        return hashlib.sha256(json.dumps(self.parts).encode()).hexdigest()[:16]

    def differences(self, other: "Probe") -> list[str]:
        """What ``other`` rendered differently, e.g. ``["the audio of analog-pad", "the figures of
        kit-909 (true_peak_db)"]``; empty when it rendered the same bytes."""
        mine, theirs = {p[0]: p for p in self.parts}, {p[0]: p for p in other.parts}
        audio, figures, keys = [], [], {}
        for what in dict.fromkeys([*mine, *theirs]):
            if what not in mine or what not in theirs or mine[what][1] != theirs[what][1]:
                audio.append(what)
            elif mine[what][2] != theirs[what][2]:
                figures.append(what)
                ours, others = json.loads(mine[what][2]), json.loads(theirs[what][2])
                keys.update(dict.fromkeys(k for k in {**ours, **others} if ours.get(k) != others.get(k)))
        out = [f"the audio of {', '.join(audio)}"] if audio else []
        if figures:
            out.append(f"the figures of {', '.join(figures)} ({', '.join(keys)})")
        return out

    def to_json(self) -> str:
        return json.dumps({"parts": self.parts})

    @classmethod
    def from_json(cls, text: str) -> "Probe":
        return cls(tuple(tuple(p) for p in json.loads(text)["parts"]))


def render_probe() -> Probe:
    """Render the probe in this process (see the module's text)."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from farm.audio import normalise_loudness
    from farm.fingerprint import loop_fingerprint
    from farm.model import Meter, Template
    from farm.patches import load_patch
    from farm.permute.shift import pitch_shift
    from farm.qa import loop_features
    from farm.render import TRUE_PEAK_CEILING_DBTP, RenderJob, get_backend, render_loops
    from farm.templates import find_rules, generate_template, load_rules, write_template

    def part(what: str, audio: np.ndarray, lufs: float, true_peak: float) -> tuple[str, str, str]:
        # the figures a sidecar carries: loudness, true peak, features and the onset fingerprint
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        features = dataclasses.asdict(loop_features(audio, 44100))
        fingerprint = loop_fingerprint(audio, 44100, template.bpm, str(template.meter), template.bars)
        figures = json.dumps({"lufs": float(lufs), "true_peak_db": float(true_peak), **features,
                              "fingerprint": fingerprint}, sort_keys=True)
        return what, hashlib.sha256(audio.tobytes()).hexdigest(), figures

    rules = dataclasses.replace(load_rules(find_rules("synthwave")), tempo=(120, 120), meters=(Meter(4, 4),))
    backend = get_backend("embedded")
    parts = []
    try:
        with tempfile.TemporaryDirectory(prefix="farm-probe-") as work:
            folder = write_template(generate_template(rules, 1, bars=2), Path(work) / "template")
            template = Template.load(folder)
            for name in PROBE_PATCHES:
                patch = load_patch(name)
                fits = next(p.name for p in template.parts if patch.fits(p.name))
                [loop] = render_loops([RenderJob(template, folder, fits, patch, 44100)], backend)
                parts.append(part(name, loop.audio, loop.lufs, loop.true_peak_db))
                if name == PROBE_PATCHES[0]:
                    shifted = normalise_loudness(pitch_shift(loop.audio, 44100, 2), 44100, patch.target_lufs,
                                                 ceiling_dbtp=TRUE_PEAK_CEILING_DBTP)
                    parts.append(part("pitch shift", *shifted))
    finally:
        backend.close()
    return Probe(tuple(parts))


@lru_cache(maxsize=1)
def machine_probe(timeout_s: float = PROBE_SECONDS) -> Probe:
    """This machine's probe, rendered in a fresh process (once per process); FarmError (one line)
    when it cannot be rendered here."""
    try:
        done = subprocess.run([sys.executable, "-m", "farm.batch.probe"], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise FarmError(f"the render probe took over {timeout_s:g} s (a hung renderer?)", field="probe") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FarmError(f"the render probe failed: {last}", field="probe")
    return Probe.from_json(done.stdout)


def main() -> None:
    try:
        print(render_probe().to_json())
    except FarmError as err:
        print(err.line(), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
