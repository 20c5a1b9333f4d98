"""The `farm` command as a whole: every stage's commands are there, and bad input is one line."""
from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner

from farm.cli import main
from farm.errors import FarmError
from farm.render import get_backend


def test_every_stage_contributes_its_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("styles", "generate", "patches", "render", "batch", "sql", "query", "show", "stats",
                    "approve", "reject", "check", "permute", "plot", "export", "doctor", "reaper", "patch"):
        assert f"  {command} " in result.output or f"  {command}\n" in result.output, command


def test_the_command_table_names_what_each_stage_module_defines():
    """`farm` loads a command's module only when it runs, from a table: the table must say where
    every command is, and a command must start without loading the other stages."""
    import importlib
    import subprocess
    import sys

    from farm.cli import COMMANDS

    for module, names in COMMANDS.items():
        assert tuple(c.name for c in importlib.import_module(module).commands) == names, module
    code = ("import sys; from farm.cli import main; sys.argv = ['farm', 'match', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('farm.cli.', 'farm.render', 'farm.patches', "
            "'music21', 'dawdreamer', 'pedalboard'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out.strip().splitlines()[-1])
    assert "farm.cli.match" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("music21", "dawdreamer", "pedalboard")], loaded
    assert not [m for m in loaded if m.startswith(("farm.render", "farm.patches", "farm.cli.render"))], loaded


@pytest.mark.parametrize("args, names", [
    (["patches", "--role", "vocals"], "--role"),
    (["generate", "--bogus"], "--bogus"),
    (["no-such-command"], "no-such-command"),
])
def test_a_bad_option_is_one_error_line_and_exit_2(args, names):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0]
    assert result.stdout == ""


def test_unknown_backend_names_every_built_in_one():
    with pytest.raises(FarmError) as err:
        get_backend("no-such-backend")
    assert err.value.field == "backend"
    assert "embedded" in err.value.message and "reaper" in err.value.message


def _commands(group, path=()):
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))


@pytest.mark.parametrize("path, command", list(_commands(main)), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_help_ends_with_an_example_the_command_accepts(path, command):
    out = CliRunner().invoke(main, [*path, "--help"]).output
    last = out.split("\nOptions:")[0].strip().splitlines()[-1].strip()
    assert last.startswith("Example: farm " + " ".join(path)), last
    # the example parses: every option and argument in it is one the command takes
    args = shlex.split(last.removeprefix("Example: farm "))[len(path):]
    if isinstance(command, click.Group):  # the example names one of its commands
        command, args = command.commands[args[0]], args[1:]
    with command.make_context(" ".join(path), args) as ctx:
        assert ctx.params
