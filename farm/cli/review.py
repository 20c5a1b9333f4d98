"""``farm plot`` and ``farm export``: thin click wrappers over ``farm.review`` and ``farm.export``."""
from __future__ import annotations

import click

from farm.audio import FORMATS
from farm.errors import FarmError
from farm.export import GROUPINGS, STATUS_CHOICES

root_option = click.option(
    "--root", type=click.Path(file_okay=False), default="library", show_default=True, envvar="FARM_ROOT",
    help="Catalog root (holds catalog.db); also from $FARM_ROOT.")


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--where", help="SQL condition on loops, e.g. \"status = 'pending' AND part = 'chords'\".")
@click.option("--out", help="Folder for the PNGs (default: <root>/plots).")
@root_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def plot(ids, where, out, root, no_progress):
    """Draw loops for review: waveform, spectrogram and per-bar chroma against the chord labels.

    One PNG per loop named by id (or a unique prefix of 6+ characters) and/or matching --where,
    written to <root>/plots/<loop name>.png unless --out says otherwise.

    \b
    Example: farm plot --where "part = 'chords'" --out plots
    """
    from farm.review import plot_loops

    paths = plot_loops(root, ids, where, out, progress=not no_progress)
    for path in paths:
        click.echo(str(path))
    if not paths:
        click.echo("no loop matches; nothing drawn", err=True)


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--where", help="SQL condition on loops, e.g. \"key = 'Am' AND bpm BETWEEN 85 AND 95\".")
@click.option("--out", required=True, help="Folder to export into (created if needed).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="wav24", show_default=True,
              help="wav24 and wav32f carry acid + smpl chunks; flac24 carries Vorbis comments.")
@click.option("--status", type=click.Choice(STATUS_CHOICES), default="approved", show_default=True,
              help="Export only loops with this status (any: every status).")
@click.option("--group-by", type=click.Choice(GROUPINGS), default="style", show_default=True,
              help="Subfolders by style, by key (Camelot-ordered: 08A-Am), by part, or none.")
@click.option("--kits", is_flag=True, help="Export kits (IDS are kit ids) as construction-kit folders: stems, mix, "
                                          "MIDI, kit.json, kit.png.")
@root_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def export(ids, where, out, fmt, status, group_by, kits, root, no_progress):
    """Copy loops into a folder a producer drops into a DAW (default: every approved loop).

    Splice-style names, a JSON sidecar (and the MIDI) beside each file, a catalog.csv of the
    folder; WAV files carry tempo, beats, meter and root note (acid) and a loop over the whole
    file (smpl). Running it again writes nothing new.

    \b
    With --kits, kits instead of loops (default: every approved kit), one folder each.

    \b
    Example: farm export --where "part = 'bass'" --group-by key --out export/bass
    """
    from farm.export import export as run_export
    from farm.export import export_summary

    if kits:
        from farm.kit_export import export_kits

        if where:
            raise FarmError("--kits takes kit ids or --status, not --where", field="where")
        folders = export_kits(root, out, ids=ids, status=status, fmt=fmt)
        click.echo(f"exported {len(folders)} kit{'s' if len(folders) != 1 else ''} to {out}")
        for folder in folders:
            click.echo(f"  {folder}")
        return

    result = run_export(root, out, where, status, fmt, ids=ids, group_by=group_by, progress=not no_progress)
    for line in export_summary(result, out):
        click.echo(line)


@click.command()
@root_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs a token.")
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port (0: any free one).")
@click.option("--read-only", is_flag=True, help="Listen and look only: no decision can be made.")
@click.option("--token", envvar="FARM_REVIEW_TOKEN",
              help="Access token every request must carry (made and printed when the host is not loopback).")
@click.option("--reviewer", help="Who decides (default: $USER).")
def review(root, host, port, read_only, token, reviewer):
    """Serve the review room: hear, judge and approve loops in a browser.

    Prints its URL and runs until Ctrl-C. Keys on the page: space play/stop, a approve,
    r reject (pick a reason), s skip, u undo, j/k next/previous.

    \b
    Example: farm review --root library --port 8000
    """
    from farm.room import serve

    serve(root, host=host, port=port, read_only=read_only, token=token, reviewer=reviewer,
          announce=lambda line: click.echo(line))


commands = [plot, export, review]
