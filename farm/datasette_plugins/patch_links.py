"""Datasette plugin (loaded by ``farm datasette`` with --plugins-dir): a loop's ``patch_hash`` cell
links to the ``patches`` row it names, as a foreign key would."""
from urllib.parse import quote

from datasette import hookimpl
from markupsafe import Markup, escape


@hookimpl
def render_cell(value, column, table, database, datasette):
    if column != "patch_hash" or table not in ("loops",) or not isinstance(value, str) or not value:
        return None
    path = datasette.urls.table(database, "patches") + "/" + quote(value, safe="")
    return Markup(f'<a href="{escape(path)}">{escape(value[:16])}…</a>')
