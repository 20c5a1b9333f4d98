"""``farm node``, ``farm bundle``, ``farm import``: thin click wrappers over ``farm.batch.node`` and
``farm.bundle`` (render nodes, and loops carried between catalogs)."""
from __future__ import annotations

import click

from farm.cli import root_option


@click.command()
@click.argument("address")
@click.option("--nthreads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Tasks at once (each in a renderer process of its own).")
@click.option("--nworkers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Dask worker processes on this machine.")
@click.option("--resources", help="What this node renders, as Dask resources (default: embedded=NTHREADS; "
                                  "a REAPER machine adds reaper=N).")
@click.option("--scratch", type=click.Path(file_okay=False), help="The node's working folder (default: a new "
                                                                    "temporary folder).")
@click.option("--name", help="The node's name in the scheduler (default: its address).")
def node(address, nthreads, nworkers, resources, scratch, name):
    """Become a render node of the Dask scheduler at ADDRESS, until stopped (Ctrl-C).

    Start the scheduler first (`dask scheduler`, it prints its address); then `farm batch
    --cluster ADDRESS` runs a night's tasks here. The renderer is started before the first task.

    \b
    Example: farm node tcp://127.0.0.1:8786 --nthreads 2
    """
    from farm.batch.node import start_node

    start_node(address, nthreads=nthreads, nworkers=nworkers, resources=resources, scratch=scratch, name=name)


@click.command()
@click.option("--batch", "batch_id", metavar="ID", help="The loops of this batch.")
@click.option("--where", help="The loops matching this SQL condition on loops.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The bundle file to write (.tar.gz).")
@root_option
def bundle(batch_id, where, out, root):
    """Pack loops (audio, sidecars, their templates' MIDI) and a manifest of sha256 and sizes
    into one compressed file, to carry them to another catalog (farm import).

    \b
    Example: farm bundle --where "status = 'approved'" --out approved.tar.gz
    """
    from farm.bundle import bundle as make

    result = make(root, out, batch=batch_id, where=where)
    click.echo(f"bundled {result.loops} loop{'s' if result.loops != 1 else ''} ({result.files} files, "
               f"{result.bytes / 1e6:.1f} MB) into {result.path}")


@click.command(name="import")
@click.argument("bundle_file", type=click.Path(dir_okay=False))
@root_option
def import_(bundle_file, root):
    """Verify a bundle whole, then adopt its loops into the catalog at --root (importing twice adds
    nothing; a damaged bundle changes nothing).

    \b
    Example: farm import approved.tar.gz --root library
    """
    from farm.bundle import import_bundle

    result = import_bundle(bundle_file, root)
    click.echo(f"imported {result.added} new loop{'s' if result.added != 1 else ''} of {result.loops} "
               f"({result.loops - result.added} already catalogued); {result.files_written} files written")


commands = [node, bundle, import_]
