"""``farm styles`` and ``farm generate``: thin wrappers over :mod:`farm.templates`."""
from __future__ import annotations

from pathlib import Path

import click

from farm.errors import FarmError


class Whole(click.ParamType):
    """A whole number; anything else is one ``error: <field>: ...`` line (exit 2), like every bad input."""

    name = "integer"

    def __init__(self, field: str):
        self.field = field

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise FarmError(f"expected a whole number, got {value!r}", field=self.field) from None


def _range(lo_hi) -> str:
    lo, hi = lo_hi
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


@click.command("styles")
@click.option("--rules-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of rule sets (default: the project's templates/, or $FARM_TEMPLATES_DIR).")
def styles(rules_dir: Path | None):
    """List the rule sets: name, modes, tempo, meters, bars and parts.

    \b
    Example: farm styles
    """
    from farm.templates import list_styles, templates_dir

    d = rules_dir or templates_dir()
    if not d.is_dir():
        raise FarmError("no such folder", file=d, field="rules-dir")
    found = list_styles(d)
    rows = [("style", "modes", "bpm", "meters", "bars", "parts")]
    for r in found:
        rows.append((r.name, ",".join(r.modes), _range(r.tempo), ",".join(str(m) for m in r.meters),
                     ",".join(str(b) for b in r.bars), ",".join(r.part_names)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    described = [r for r in found if r.description]
    if described:
        click.echo()
    for r in described:
        click.echo(f"{r.name}: {r.description}")


@click.command("generate")
@click.option("--style", help="Style name: templates/<NAME>.toml (see `farm styles`).")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A rule-set TOML file instead of a style name.")
@click.option("--count", "-n", type=Whole("count"), default=1, show_default=True, help="How many templates.")
@click.option("--seed", "-s", type=Whole("seed"), default=0, show_default=True, help="Seed of the first template; then seed+1 ...")
@click.option("--bars", type=Whole("bars"), default=None, help="Force a bar count (default: the style's choice per seed).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("out/templates"),
              show_default=True, help="Output folder; each template goes to OUT/<template id>/.")
@click.option("--plot", is_flag=True, help="Also draw piano_roll.png in each template folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def generate(style, rules_file, count, seed, bars, out, plot, quiet):
    """Write labelled MIDI templates (template.json + one MIDI per part + all.mid).

    Prints each template's folder with its key, bpm, meter and chords.

    \b
    Example: farm generate --style lofi-hiphop --count 3 --seed 0 --out my-templates
    """
    from farm.model import Template
    from farm.templates import generate as generate_templates

    paths = generate_templates(style=style, rules=rules_file, count=count, seed=seed, out=out, bars=bars,
                               progress=not quiet, plot=plot)
    for p in paths:
        t = Template.load(p)
        chords = " ".join(c.symbol for c in t.chords)
        click.echo(f"{p}  {t.key.short} {t.bpm:g}bpm {t.meter} {t.bars} bars  {chords}")


commands = [styles, generate]
