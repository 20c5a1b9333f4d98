"""``farm doctor``, ``farm reaper setup|audition`` and ``farm patch pull``: thin wrappers over
farm.doctor and farm.reaper_live."""
from __future__ import annotations

import click


@click.command()
@click.option("--reaper", "reaper", type=click.Path(), default=None,
              help="REAPER executable (else $FARM_REAPER, farm.toml [reaper] path, PATH).")
@click.option("--dir", "directory", type=click.Path(), default=".", show_default=True,
              help="Where loops will be written (for the disk-space check).")
@click.option("--no-live", is_flag=True, help="Skip the reapy check (a running REAPER).")
def doctor(reaper, directory, no_live):
    """Report what this machine can render: one line per check, with the fix.

    Exits 1 when the embedded renderer cannot run (no FluidSynth library or SoundFont).

    \b
    Example: farm doctor --no-live
    """
    from farm.doctor import doctor as run_checks, exit_code, report

    checks = run_checks(reaper=reaper, directory=directory, check_live=not no_live)
    click.echo(report(checks))
    click.get_current_context().exit(exit_code(checks))


@click.group("reaper")
def reaper_group():
    """A running REAPER, through reapy: set-up and auditioning templates.

    \b
    Example: farm reaper setup
    """


@reaper_group.command("setup")
@click.option("--resource-dir", type=click.Path(file_okay=False), default=None,
              help="REAPER's resource directory (default: found from the running REAPER).")
def setup(resource_dir):
    """Configure REAPER for reapy, install the farm's JSFX and ReaScripts; then restart REAPER.

    \b
    Example: farm reaper setup --resource-dir ~/.config/REAPER
    """
    from farm.reaper_live import setup as run_setup

    for line in run_setup(resource_dir=resource_dir):
        click.echo(line)


@reaper_group.command("audition")
@click.argument("template", type=click.Path())
@click.option("--patch", required=True, help="Patch name (patches/NAME.toml).")
def audition(template, patch):
    """Put TEMPLATE's parts on tracks with the patch's FX chain in the open REAPER project.

    \b
    Example: farm reaper audition my-templates/c9dfcaa090f96eef --patch dry-piano-chords
    """
    from farm.reaper_live import audition as run_audition

    added, note = run_audition(template, patch)
    for number, name in added:
        click.echo(f"added track {number}: {name}")
    if note:
        click.echo(note)


@click.group("patch")
def patch_group():
    """Patches made in REAPER.

    \b
    Example: farm patch pull my-pad --track 2 --role chords
    """


@patch_group.command("pull")
@click.argument("name")
@click.option("--track", "track", required=True, type=int, help="Track number in REAPER (1 = first).")
@click.option("--role", "roles", multiple=True, help="Roles of a new patch (repeatable).")
@click.option("--dir", "patches_dir", type=click.Path(file_okay=False), default=None,
              help="Patch directory (default: the project's patches/, or $FARM_PATCHES_DIR).")
def pull(name, track, roles, patches_dir):
    """Save track N's FX chain from the running REAPER as patches/NAME.RfxChain (+ its TOML).

    \b
    Example: farm patch pull my-pad --track 2 --role chords
    """
    from farm.reaper_live import pull_patch

    chain, toml = pull_patch(name, track, patches_dir=patches_dir, roles=roles)
    click.echo(f"wrote {chain}")
    click.echo(f"patch {toml} uses it from the next render")


commands = [doctor, reaper_group, patch_group]
