"""``farm patches`` and ``farm render``: thin wrappers over farm.patches and farm.render.run."""
from __future__ import annotations

import sys

import click

from farm.patches import ROLES
from farm.render import SAMPLE_RATES


@click.command()
@click.argument("name", required=False)
@click.option("--show", "show", metavar="NAME", help="Show one patch in full.")
@click.option("--role", type=click.Choice(ROLES), default=None, help="Only the patches that can play this role.")
@click.option("--dir", "patches_dir", type=click.Path(file_okay=False), default=None,
              help="Patch directory (default: the project's patches/, or $FARM_PATCHES_DIR).")
def patches(name, show, role, patches_dir):
    """List the synth patches, or show one (NAME or --show NAME).

    A patch file that does not load is one error line each (exit 1); the others are still listed.

    \b
    Example: farm patches --role bass
    """
    from farm.patches import describe_patch, load_patch, patch_table, scan_patches

    name = name or show
    if name:
        click.echo(describe_patch(load_patch(name, patches_dir)))
        return
    good, broken = scan_patches(patches_dir)
    found = [p for p in good if role is None or role in p.roles]
    if found:
        click.echo(patch_table(found))
        click.echo(f"\n{len(found)} patches; farm patches NAME shows one in full", err=True)
    else:
        click.echo("no patches" + (f" for role {role}" if role else ""))
    for err in broken:
        click.echo(f"error: {err.line()}", err=True)
    if broken:
        sys.exit(1)


@click.command()
@click.option("--template", "template_dir", required=True, type=click.Path(),
              help="Template directory (holds template.json and the part MIDI files).")
@click.option("--patch", required=True, help="Patch name (patches/NAME.toml) or a .toml path.")
@click.option("--part", default=None, help="Render only this part (default: every part the patch fits).")
@click.option("--out", type=click.Path(file_okay=False), help="Output directory (required unless --rpp-only).")
@click.option("-j", "--jobs", default=1, show_default=True, type=int, help="Worker processes.")
@click.option("--sample-rate", default=44100, show_default=True,
              type=click.Choice([str(s) for s in SAMPLE_RATES]), help="Hz.")
@click.option("--format", "fmt", default="flac24", show_default=True,
              type=click.Choice(["flac24", "wav24", "wav32f"]))
@click.option("--backend", default="embedded", show_default=True, help="Renderer backend.")
@click.option("--rpp-only", type=click.Path(file_okay=False), default=None,
              help="REAPER: write the RPP projects into this directory and stop.")
@click.option("--via", type=click.Choice(["process", "reapy"]), default=None,
              help="REAPER: start reaper processes (default) or use the running REAPER through reapy.")
@click.option("--reaper", "reaper_path", type=click.Path(), default=None,
              help="REAPER: the reaper executable (else $FARM_REAPER, farm.toml, PATH).")
@click.option("--instances", type=click.IntRange(1, 64), default=None, help="REAPER: parallel reaper processes.")
def render(template_dir, patch, part, out, jobs, sample_rate, fmt, backend, rpp_only, via, reaper_path,
           instances):
    """Render a template's parts through a patch into exact, seamless loop files.

    \b
    Example: farm render --template my-templates/c9dfcaa090f96eef --patch warm-rhodes --out loops
    """
    from farm.errors import FarmError
    from farm.render.run import plan_jobs, render as render_template

    options = {k: v for k, v in (("via", via), ("reaper", reaper_path), ("instances", instances)) if v is not None}
    if (options or rpp_only) and backend != "reaper":
        raise FarmError("--rpp-only, --via, --reaper and --instances need --backend reaper", field="backend")
    if rpp_only:
        from farm.render.reaper import write_projects

        for path in write_projects(plan_jobs(template_dir, patch, part, int(sample_rate)), rpp_only):
            click.echo(str(path))
        return
    if out is None:
        raise FarmError("missing (where the loops go)", field="--out")
    for path in render_template(template_dir, patch, part=part, out=out, sample_rate=int(sample_rate),
                                fmt=fmt, jobs=jobs, backend=backend, progress=True, backend_options=options):
        click.echo(str(path))


commands = [patches, render]
