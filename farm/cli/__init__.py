"""The ``farm`` command.

Each stage keeps its commands in its own module here (``farm.cli.templates`` ...), and every
command is a thin click wrapper over a Python function that does the same thing.
"""
from __future__ import annotations

import importlib
import sqlite3
import sys

import click

from farm import __version__
from farm.errors import FarmError

# Each command's stage module, in pipeline order. A command's module is imported only when that
# command runs (or --help lists them all): `farm match` does not load the renderers, music21 or
# the patch models, so it starts in a fraction of the time. A test checks this table against the
# ``commands`` list each module defines.
COMMANDS = {
    "farm.cli.templates": ("styles", "generate"),
    "farm.cli.render": ("patches", "render"),
    "farm.cli.catalog": ("batch", "sql", "query", "show", "stats", "approve", "reject", "undo", "check",
                         "datasette", "fingerprint"),
    "farm.cli.permute": ("permute",),
    "farm.cli.match": ("match", "kit", "kits"),
    "farm.cli.review": ("plot", "export", "review"),
    "farm.cli.reaper": ("doctor", "reaper", "patch"),
    "farm.cli.nodes": ("node", "bundle", "import"),
}
_MODULE_OF = {name: module for module, names in COMMANDS.items() for name in names}


root_option = click.option(
    "--root", type=click.Path(file_okay=False), default="library", show_default=True, envvar="FARM_ROOT",
    help="Catalog root (holds catalog.db); also from $FARM_ROOT.")


class FarmGroup(click.Group):
    """Turns a FarmError anywhere below into one line on stderr and exit code 2; loads each
    command's module when the command is asked for."""

    def list_commands(self, ctx):
        return sorted(_MODULE_OF)

    def get_command(self, ctx, name):
        if name not in self.commands and name in _MODULE_OF:
            for command in importlib.import_module(_MODULE_OF[name]).commands:
                self.add_command(command)
        return self.commands.get(name)

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
