"""The ``farm`` command.

Each stage keeps its commands in its own module here (``farm.cli.templates`` ...), and every
command is a thin click wrapper over a Python function that does the same thing.
"""
from __future__ import annotations

import importlib
import importlib.util
import sqlite3
import sys

import click

from farm import __version__
from farm.errors import FarmError

# Stage command modules, in pipeline order. Each defines ``commands``: a list of click commands.
COMMAND_MODULES = (
    "farm.cli.templates",
    "farm.cli.render",
    "farm.cli.catalog",
    "farm.cli.permute",
    "farm.cli.match",
    "farm.cli.review",
    "farm.cli.reaper",
    "farm.cli.nodes",
)


class FarmGroup(click.Group):
    """Turns a FarmError anywhere below into one line on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FarmError as err:
            click.echo(f"error: {err.line()}", err=True)
            sys.exit(err.exit_code)
        except sqlite3.DatabaseError as err:
            # Damage that the checks on opening could not see (a page going bad mid-command).
            click.echo(f"error: catalog.db: the catalog is damaged ({err}); run `farm check`", err=True)
            sys.exit(2)
        except click.UsageError as err:
            # A bad option or argument is bad input too: one line, like every other error.
            message = " ".join(err.format_message().split())
            command = err.ctx.command_path if err.ctx is not None else "farm"
            click.echo(f"error: {message} (see: {command} --help)", err=True)
            sys.exit(2)


@click.group(cls=FarmGroup)
@click.version_option(__version__, prog_name="farm")
def main():
    """Loop Farm: rules in, a labelled loop library out."""


for _name in COMMAND_MODULES:
    if importlib.util.find_spec(_name) is not None:
        for _command in importlib.import_module(_name).commands:
            main.add_command(_command)
