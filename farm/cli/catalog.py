"""``farm batch``, ``sql``, ``query``, ``show``, ``stats``, ``approve``, ``reject``, ``check``.

Thin click wrappers over ``farm.batch`` and ``farm.catalog``.
"""
from __future__ import annotations

import json
import sys

from pathlib import Path

import click

from farm import catalog as cat
from farm.cli import root_option
from farm.errors import FarmError, unknown_name


def _format_options(f):
    f = click.option("--json", "fmt", flag_value="json", help="Output a JSON list of objects.")(f)
    f = click.option("--csv", "fmt", flag_value="csv", help="Output CSV with a header row.")(f)
    f = click.option("--table", "fmt", flag_value="table", default=True, help="Output an aligned table (default).")(f)
    return f


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        if "=" not in item:
            raise FarmError(f"expected NAME=VALUE, got {item!r}", field="--param")
        name, value = item.split("=", 1)
        out[name.strip().lstrip(":")] = value
    return out


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Batch TOML (default: farm/nightly.toml, documented there).")
@click.option("--resume", is_flag=True, help="Finish the batch that was interrupted, with its own config.")
@click.option("-j", "--workers", type=click.IntRange(1, 256), help="Worker processes (default: from the config).")
@click.option("--backend", help="Renderer backend (default: from the config, normally embedded).")
@click.option("--root", type=click.Path(file_okay=False), help="Catalog root (default: from the config).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Base seed (default: from the config).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--reaper", "reaper_path", type=click.Path(),
              help="REAPER backend: the reaper executable (else backend_options, $FARM_REAPER, PATH).")
@click.option("--via", type=click.Choice(["process", "reapy"]),
              help="REAPER backend: reaper processes (default) or the running REAPER through reapy (-j 1).")
@click.option("--rpp-only", type=click.Path(file_okay=False), metavar="DIR",
              help="REAPER backend: write the night's REAPER projects (and their templates) to DIR and "
                   "stop; nothing is rendered or catalogued.")
@click.option("--cluster", metavar="ADDRESS", help="Run the tasks on the render nodes of this Dask scheduler "
                                                   "(farm node ADDRESS starts one); default: [cluster] address, "
                                                   "else the local worker pool.")
def batch(config_path, resume, workers, backend, root, seed, no_progress, reaper_path, via, rpp_only, cluster):
    """Run the nightly batch: templates -> rendered loops -> checks, sidecars, catalog.

    Kill it at any moment; `farm batch --resume` finishes it without duplicating or losing a
    loop. Exits 1 when some loop failed for good (see `farm query failed_tasks`).

    \b
    Example: farm batch --root library -j 2
    """
    from farm.batch import load_config, run_batch, write_night_projects

    if rpp_only:
        if resume:
            raise FarmError("--rpp-only writes a new night's projects: not with --resume", field="--rpp-only")
        config = load_config(config_path, backend=backend, seed=seed)
        if config.backend != "reaper":
            raise FarmError(f"--rpp-only needs --backend reaper (the config's backend is {config.backend!r})",
                            field="backend")
        paths, loops, templates = write_night_projects(config, rpp_only)
        for path in paths:
            click.echo(str(path))
        click.echo(f"{loops} loops of {templates} templates in {len(paths)} REAPER "
                   f"project{'' if len(paths) == 1 else 's'} under {rpp_only}; nothing rendered or catalogued")
        return
    config = None
    if not resume or config_path:
        config = load_config(config_path, backend=backend, seed=seed)
    reaper_options = {k: v for k, v in (("reaper", reaper_path), ("via", via)) if v is not None}
    if reaper_options:  # merged into the config's [backend_options], so --resume keeps them
        import dataclasses

        if config is None or config.backend != "reaper":
            raise FarmError("--reaper and --via need --backend reaper (not with a bare --resume)", field="backend")
        if via == "reapy" and (workers or config.workers) > 1:
            raise FarmError("--via reapy renders in the one running REAPER: use -j 1", field="--via")
        config = dataclasses.replace(config, backend_options={**config.backend_options, **reaper_options})
    if resume and root is None:
        root = str(config.root) if config else str(load_config().root)
    summary = run_batch(config, resume=resume, root=root, workers=workers, progress=not no_progress, cluster=cluster)
    if summary.batch_id == "(none)":
        click.echo("no unfinished batch to resume"
                   + (f"; adopted {summary.adopted} loops, removed {summary.removed} unfinished files"
                      if summary.adopted or summary.removed else ""))
        return
    for line in summary.lines():
        click.echo(line)
    if summary.failed:
        sys.exit(1)


timeout_option = click.option("--timeout", type=float, default=30.0, show_default=True,
                              help="Stop a statement still running after this many seconds.")


@click.command()
@click.argument("sql")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Bind :NAME in the SQL.")
@_format_options
@timeout_option
@root_option
def sql(sql, params, fmt, timeout, root):
    """Run SQL on the catalog, read-only; it creates no file and stops after --timeout seconds.

    \b
    Example: farm sql "SELECT key, count(*) FROM loops GROUP BY key"
    """
    from farm.catalog import parse_value

    columns, rows = cat.run_sql(root, sql, {k: parse_value(v) for k, v in _params(params).items()},
                                timeout_s=timeout)
    click.echo(cat.format_rows(columns, rows, fmt))


@click.command()
@click.argument("name", required=False)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Set a :NAME parameter.")
@click.option("--sql", "show_sql", is_flag=True, help="Print the query's SQL instead of running it.")
@_format_options
@timeout_option
@root_option
def query(name, params, show_sql, fmt, timeout, root):
    """Run a saved query from catalog/queries/ (without NAME: list them).

    \b
    Example: farm query chord_in_bar --param symbol=Dm7 --param bar=3
    """
    queries = cat.saved_queries()
    if not name:
        for q in queries.values():
            defaults = " ".join(f"{p}={q.defaults.get(p, '?')}" for p in q.params)
            click.echo(f"{q.name:18} {q.description}" + (f"\n{'':18} params: {defaults}" if defaults else ""))
        return
    if show_sql:
        if name not in queries:
            raise FarmError(unknown_name("saved query", name, queries), field="name")
        click.echo(queries[name].sql.rstrip())
        return
    columns, rows = cat.run_query(root, name, _params(params), timeout_s=timeout)
    click.echo(cat.format_rows(columns, rows, fmt))


@click.command()
@click.argument("loop_id")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@root_option
def show(loop_id, as_json, root):
    """Everything about one loop (id or a unique prefix of at least 6 characters).

    \b
    Example: farm show 3c22309c
    """
    info = cat.show_loop(root, loop_id)
    if isinstance(info.get("fingerprint"), str):
        info["fingerprint"] = json.loads(info["fingerprint"])
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    skip = {"chords", "reviews", "children", "params", "tags"}
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "fingerprint" and value:  # a summary: the whole grid is in --json and the sidecar
            fp = value
            steps, share = len(fp["onsets"][0]), fp["energy"]
            value = (f"{steps} steps ({fp['steps_per_beat']} a beat); energy low {share[0]:.2f}, "
                     f"mid {share[1]:.2f}, high {share[2]:.2f}")
        if key not in skip:
            if isinstance(value, float):  # measurements to 3 decimals (--json has every digit)
                value = round(value, 3)
            click.echo(f"{key:<{width}}  {'' if value is None else value}")
    click.echo(f"{'tags':<{width}}  {info['tags']}")
    if info["params"]:
        click.echo(f"{'params':<{width}}  {json.dumps(info['params'], sort_keys=True)}")
    click.echo("chords:")
    click.echo(cat.format_rows(["bar", "symbol", "roman", "pitch_classes", "start_s", "end_s"],
                               [(c["bar"], c["symbol"], c["roman"], c["pitch_classes"], f"{c['start_s']:.3f}",
                                 f"{c['end_s']:.3f}") for c in info["chords"]]))
    for r in info["reviews"]:
        click.echo(f"review: {r['reviewed_at']} {r['reviewer']}: {r['previous_status']} -> {r['status']}"
                   + (f" ({r['reason']})" if r["reason"] else ""))
    if info["children"]:
        click.echo(f"permutations: {' '.join(info['children'])}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@root_option
def stats(as_json, root):
    """Counts: loops by status, style, part and key; the latest batches.

    \b
    Example: farm stats --root library
    """
    s = cat.catalog_stats(root)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(f"loops: {s['loops']} ({s['hours_of_audio'] * 60:.1f} min of audio) from {s['templates']} "
               f"templates and {s['patches']} patches; {s['reviews']} reviews")
    for title in ("by_status", "by_style", "by_part", "by_operation", "by_key", "reject_reasons"):
        if s[title]:
            click.echo(f"{title.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in s[title].items()))
    for b in s["batches"]:
        tasks = ", ".join(f"{k} {v}" for k, v in b["tasks"].items())
        click.echo(f"batch {b['id']}: {b['status']}, started {b['started_at']}"
                   + (f", finished {b['finished_at']}" if b["finished_at"] else "") + f"; tasks: {tasks or 'none'}")


def _review(status, ids, where, reason, reviewer, root, include_machine_rejected=False, kits=False):
    if kits:
        if where:
            raise FarmError("--kits takes kit ids, not --where", field="where")
        result = cat.review_kits(root, ids, status=status, reason=reason, reviewer=reviewer)
        for line in result.lines():
            click.echo(line)
        return
    result = cat.review(root, ids, where, status=status, reason=reason, reviewer=reviewer,
                        include_machine_rejected=include_machine_rejected)
    for line in result.lines():
        click.echo(line)


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--where", help='SQL condition on loops, e.g. "patch = \'warm-rhodes\' AND status = \'pending\'".')
@click.option("--reviewer", help="Who decides (default: $USER).")
@click.option("--include-machine-rejected", is_flag=True,
              help="With --where: approve loops the machine checks rejected too.")
@click.option("--kits", is_flag=True, help="IDS are kits (farm kits lists them), not loops.")
@root_option
def approve(ids, where, reviewer, include_machine_rejected, kits, root):
    """Approve loops by id (or unique prefix) or --where; recorded in reviews.

    --where leaves loops the machine checks rejected as they are unless --include-machine-rejected;
    a loop already approved is left alone (no review row).

    \b
    Example: farm approve --where "style = 'lofi-hiphop' AND part = 'bass'"
    """
    _review("approved", ids, where, None, reviewer, root, include_machine_rejected, kits)


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--reason", help="Why (required; kept with the loop and the review).")
@click.option("--where", help="SQL condition on loops.")
@click.option("--reviewer", help="Who decides (default: $USER).")
@click.option("--kits", is_flag=True, help="IDS are kits (farm kits lists them), not loops.")
@root_option
def reject(ids, reason, where, reviewer, kits, root):
    """Reject loops by id (or unique prefix) or --where, with a reason; nothing is deleted.

    \b
    Example: farm reject 3c22309c --reason "muddy low end"
    """
    _review("rejected", ids, where, reason, reviewer, root, kits=kits)


@click.command()
@click.argument("loop_id")
@click.option("--reviewer", help="Who takes it back (default: $USER).")
@root_option
def undo(loop_id, reviewer, root):
    """Take back the latest decision on a loop: its status and reason return to what they were.

    The review row stays, marked undone with who and when.

    \b
    Example: farm undo 3c22309c
    """
    state = cat.undo(root, loop_id, reviewer)
    click.echo(f"{state['id']}: {state['status']}" + (f" ({state['reject_reason']})" if state["reject_reason"] else ""))


@click.command()
@root_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--repair", is_flag=True,
              help="Make missing or damaged loop files again (kept only when byte-identical to the catalog's) "
                   "and rewrite sidecars from the catalog, then check.")
def check(root, no_progress, repair):
    """Verify the catalog: SQLite's integrity check, every row's file with its sha256 and a sidecar
    that agrees with the row, every audio file with a row.

    Exits 1 when anything is wrong.

    \b
    Example: farm check --root library --repair
    """
    if repair:
        from farm.repair import repair as run_repair

        for line in run_repair(root, progress=not no_progress).lines():
            click.echo(line)
    report = cat.check_catalog(root, progress=not no_progress)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(1)


@click.command()
@root_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address Datasette listens on.")
@click.option("--port", type=int, default=8001, show_default=True, help="TCP port.")
@click.option("--write-metadata", "metadata_out", type=click.Path(dir_okay=False),
              help="Only write the Datasette metadata (canned queries, column descriptions) to this file.")
def datasette(root, host, port, metadata_out):
    """Open the catalog in Datasette: saved queries as canned queries, schema comments as column
    descriptions, each loop's patch_hash linked to its patch.

    \b
    Example: farm datasette --root library --port 8001
    """
    import subprocess
    import tempfile

    from farm.datasette import datasette_command, write_metadata

    if metadata_out:
        click.echo(str(write_metadata(metadata_out)))
        return
    with tempfile.TemporaryDirectory(prefix="farm-datasette-") as tmp:
        command = datasette_command(root, write_metadata(Path(tmp) / "metadata.json"), host, port)
        click.echo(f"Datasette for {root}: http://{host}:{port}/ (Ctrl-C stops it)")
        try:
            sys.exit(subprocess.run(command).returncode)
        except KeyboardInterrupt:
            pass


@click.command()
@root_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def fingerprint(root, no_progress):
    """Give every loop catalogued before fingerprints existed its onset fingerprint (row and
    sidecar); a night fingerprints every loop it makes. Running it again does nothing.

    \b
    Example: farm fingerprint --root library
    """
    from farm.catalog.backfill import backfill_fingerprints

    done = backfill_fingerprints(root, progress=not no_progress)
    click.echo(f"fingerprinted {done} loop{'' if done == 1 else 's'}")


commands = [batch, sql, query, show, stats, approve, reject, undo, check, datasette, fingerprint]
