"""The catalog in Datasette: every saved query runs as a canned query, the schema's comments are the
column descriptions, and a loop's patch_hash links to its patch."""
from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from farm.catalog import saved_queries
from farm.cli import main
from nights import make_night
from farm.datasette import PLUGINS_DIR, datasette_metadata, schema_descriptions


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return make_night(tmp_path_factory.mktemp("datasette"), seed=2, parts=("chords", "bass"),
                      patches=("warm-rhodes", "sub-bass"))


def served(library, metadata, requests):
    """Run ``requests`` (paths) through a real Datasette app over the catalog, in-process."""
    from datasette.app import Datasette

    async def go():
        ds = Datasette([str(library / "catalog.db")], metadata=metadata, plugins_dir=str(PLUGINS_DIR))
        await ds.invoke_startup()
        return [await ds.client.get(path) for path in requests]

    return asyncio.run(go())


def test_every_saved_query_runs_as_a_canned_query(library):
    metadata = datasette_metadata()
    queries = saved_queries()
    canned = metadata["databases"]["catalog"]["queries"]
    assert set(canned) == set(queries)
    paths = []
    for name, query in queries.items():
        params = "&".join(f"{p}={query.defaults.get(p, '')}" for p in query.params)
        paths.append(f"/catalog/{name}.json?_shape=objects&{params}")
    for (name, query), response in zip(queries.items(), served(library, metadata, paths)):
        assert response.status_code == 200, (name, response.text[:300])
        body = response.json()
        assert body["ok"] is True and isinstance(body["rows"], list), name
        assert canned[name]["title"] == query.description and canned[name]["params"] == list(query.params)
    # a query with rows in this night: the review queue holds every pending loop
    (queue,) = served(library, metadata, ["/catalog/review_queue.json?_shape=array&style=%25&limit=50"])
    assert len(queue.json()) == 2


def test_schema_comments_describe_columns_and_patch_hash_links_to_its_patch(library):
    described = schema_descriptions()
    assert described["loops"]["columns"]["samples"] == "frames per channel"
    assert described["templates"]["columns"]["bpm"] == "quarter notes per minute"
    assert described["loops"]["description"].startswith("One audio file")
    metadata = datasette_metadata()
    (page, loops) = served(library, metadata, ["/catalog/loops", "/catalog/loops.json?_shape=array"])
    assert "frames per channel" in page.text
    hashes = {row["patch_hash"] for row in loops.json()}
    for value in hashes:
        assert f'href="/catalog/patches/{value}"' in page.text
    (patch,) = served(library, metadata, [f"/catalog/patches/{sorted(hashes)[0]}.json?_shape=array"])
    assert patch.json()[0]["name"] in {"warm-rhodes", "sub-bass"}


def test_farm_datasette_writes_the_metadata(library, tmp_path):
    out = tmp_path / "metadata.json"
    result = CliRunner().invoke(main, ["datasette", "--root", str(library), "--write-metadata", str(out)])
    assert result.exit_code == 0 and result.output.strip() == str(out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(datasette_metadata()))
    result = CliRunner().invoke(main, ["datasette", "--root", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no catalog here" in result.stderr
