"""``farm match``, ``farm kit``, ``farm kits``: thin click wrappers over ``farm.match``."""
from __future__ import annotations

import json

import click

from farm.cli import root_option
from farm.match.kit import KIT_ROLES, PARTS


@click.command()
@click.argument("loop_id")
@click.option("--role", help=f"Only loops of this part or patch role ({', '.join(PARTS)}, pad, keys, lead); "
                             "default: every part but the loop's own.")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON, with each score's reason.")
@root_option
def match(loop_id, role, limit, as_json, root):
    """Loops that fit LOOP_ID (an id or a unique prefix), best first.

    Scored on harmony (the chords bar by bar, after a transposition of up to 2 semitones),
    rhythm (the bass on the kick; other parts' onsets apart) and spectrum (bands not masked).
    A loop at another key or tempo (up to 5 BPM) is offered when the permutation that brings it
    there exists or can be made; "plays as" says which.

    \b
    Example: farm match 3c22309c --role bass --limit 5
    """
    from farm.match import match as find

    found = find(root, loop_id, role=role, limit=limit)
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in found], indent=2))
        return
    from farm.catalog import format_rows

    rows = []
    for m in found:
        d = m.to_dict()
        t = m.transform
        made = "catalogued" if t and t["exists"] else "to make"
        plays = ("as it is" if not t else f"pitch {t['params']['semitones']:+d} ({made})"
                 if t["operation"] == "pitch" else f"stretch {m.row['bpm']:g}->{m.bpm:g} ({made})")
        rows.append((f"{d['score']:.2f}", _score(d["harmony"]), _score(d["rhythm"]), _score(d["spectrum"]), m.part,
                     m.patch, "-" if m.part == "drums" else m.key, f"{m.bpm:g}", plays, m.id))
    click.echo(format_rows(["score", "harmony", "rhythm", "spectrum", "part", "patch", "key", "bpm", "plays",
                            "id"], rows))


def _score(x) -> str:
    return "-" if x is None else f"{x:.2f}"


@click.command()
@click.option("--style", help="Only loops of this style.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Which kit: picks the loop it is built on (with --from, among each role's best three).")
@click.option("--roles", default=",".join(KIT_ROLES), show_default=True,
              help=f"Comma-separated parts, one loop each ({', '.join(PARTS)}).")
@click.option("--from", "from_loop", metavar="LOOP_ID", help="Build the kit on this loop.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder the kit folder goes in (default: ROOT/kits).")
@click.option("--json", "as_json", is_flag=True, help="Output the kit's record as JSON.")
@root_option
def kit(style, seed, roles, from_loop, out, as_json, root):
    """Build a construction kit: one loop per role, same chords bar by bar, one key and tempo.

    Writes a folder of aligned stems (float32 WAV, exactly one length), a mix balanced by
    loudness per role with its true peak under -1 dBTP, each part's MIDI, kit.json (key, bpm,
    meter, chords per bar, each stem's loop and transform) and kit.png; catalogues the kit as
    pending (farm approve --kits ID). Permutations a member needs are made and catalogued.

    \b
    Example: farm kit --style lofi-hiphop --seed 3
    """
    from farm.match import build_kit

    record = build_kit(root, roles=roles, style=style, seed=seed, from_loop=from_loop, out=out)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"{'made' if record['new'] else 'already catalogued'}: kit {record['id']} ({record['status']})")
    click.echo(f"{record['folder']}")
    click.echo(f"{record['key'] or 'no key'}, {record['bpm']:g} BPM, {record['meter']}, {record['bars']} bars: "
               f"{record['progression']}")
    for m in record["members"]:
        t = m["transform"]
        how = "" if not t else (f" (pitch {t['params']['semitones']:+d} of {m['source_id']})" if t["operation"] == "pitch"
                                else f" (stretch to {t['params']['bpm']:g} BPM of {m['source_id']})")
        click.echo(f"  {m['role']:<7} {m['loop_id']}{how}  {m['gain_db']:+.1f} dB")


@click.command()
@click.option("--status", type=click.Choice(["pending", "approved", "rejected"]), help="Only kits in this state.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@root_option
def kits(status, as_json, root):
    """The catalogued kits, newest first.

    \b
    Example: farm kits --status pending
    """
    from farm.catalog import format_rows
    from farm.match import list_kits

    found = list_kits(root, status=status)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    columns = ["id", "status", "key", "bpm", "meter", "bars", "progression", "roles", "path"]
    click.echo(format_rows(columns, [[k[c] if c != "roles" else ",".join(k[c]) for c in columns] for k in found]))


commands = [match, kit, kits]
