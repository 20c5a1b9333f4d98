"""``farm node``: thin click wrappers over ``farm.batch.node`` (render nodes on Dask distributed)."""
from __future__ import annotations

import click


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


commands = [node]
