"""``farm permute``: a thin wrapper over farm.permute.permute."""
from __future__ import annotations

import click

from farm.permute.pipeline import OPERATIONS
from farm.permute.shift import DEFAULT_BPM_STEPS, DEFAULT_SEMITONES
from farm.permute.splice import DEFAULT_BLEED_THRESHOLD


def _ops(ctx, param, value: str) -> tuple[str, ...]:
    # checked by PermuteSettings, which names the field in one error line
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


@click.command()
@click.option("--where", default="1", show_default=True,
              help="SQL condition on the loops table picking the parent loops, e.g. \"part = 'chords'\".")
@click.option("--ops", default=",".join(OPERATIONS), show_default=True, callback=_ops,
              help="Comma-separated operations.")
@click.option("--semitones", default=DEFAULT_SEMITONES, show_default=True, type=int,
              help="pitch: shift by -N..-1 and +1..+N semitones.")
@click.option("--bpm-steps", default=DEFAULT_BPM_STEPS, show_default=True, type=int,
              help="stretch: -N..-1 and +1..+N BPM.")
@click.option("--bleed-threshold", default=DEFAULT_BLEED_THRESHOLD, show_default=True,
              type=float,
              help="splice: reject when a cut brings in more than this share of foreign pitch-class energy.")
@click.option("--pattern", "patterns", multiple=True,
              help="splice: re-cut pattern such as AABB (repeatable; default AABB, ABAB, ABBA).")
@click.option("--patch", "patches", multiple=True, help="repatch: only these patches (repeatable).")
@click.option("--limit", type=int, default=None, help="At most this many parent loops, newest first.")
@click.option("--backend", default="embedded", show_default=True, help="Renderer for repatch.")
@click.option("--root", type=click.Path(file_okay=False), default="library", show_default=True,
              envvar="FARM_ROOT", help="Catalog root (holds catalog.db); also from $FARM_ROOT.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def permute(where, ops, semitones, bpm_steps, bleed_threshold, patterns, patches, limit, backend, root,
            no_progress):
    """Make labelled permutations of catalogued loops: splice, pitch, stretch, repatch.

    Every new loop is catalogued as pending (or rejected by the machine checks, with the reason),
    with its parent, operation and parameters; running again makes nothing twice.

    \b
    Example: farm permute --where "part = 'chords'" --ops pitch,stretch
    """
    from farm.permute.pipeline import permute as run

    options = {"patches": tuple(patches), "limit": limit, "backend": backend}
    if patterns:
        options["patterns"] = tuple(patterns)
    report = run(root, where, ops, semitones=semitones, bpm_steps=bpm_steps, bleed_threshold=bleed_threshold,
                 progress=not no_progress, **options)
    for line in report.lines():
        click.echo(line)


commands = [permute]
