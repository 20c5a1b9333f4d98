"""The catalog, the machine checks and the sidecars, without rendering: real templates, loops
synthesised from their labelled chord tones, written, hashed and ingested as the batch does."""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from farm.audio import integrated_lufs, write_audio
from farm.catalog import (Catalog, bind_params, catalog_stats, check_catalog, review, run_query, run_sql,
                          saved_queries, show_loop, sql_params)
from farm.cli import main
from farm.errors import FarmError
from farm.model import Key, content_id, loop_name
from farm.qa import QALimits, loop_features, machine_check, onset_times, rms_db, spectral_centroid_hz
from farm.sidecar import (camelot, file_sha256, loop_path, make_sidecar, read_sidecar, sidecar_path,
                          template_labels, validate_sidecar, write_sidecar)

SR = 44100
STYLES = ("lofi-hiphop", "deep-house", "jazz-ii-V-I")


def chord_audio(template, sr=SR, octave=4) -> np.ndarray:
    """Each bar: sines on the bar's labelled pitch classes, stereo float32, exact loop length."""
    n = template.loop_samples(sr)
    out = np.zeros(n, dtype=np.float64)
    for chord in template.chords:
        a, b = template.bar_start_sample(chord.bar, sr), template.bar_start_sample(chord.bar + 1, sr)
        t = np.arange(b - a) / sr
        for pc in chord.pitch_classes:
            f = 440.0 * 2 ** ((pc - 9) / 12 + (octave - 4))
            out[a:b] += 0.1 * np.sin(2 * np.pi * f * t) * np.minimum(1.0, t / 0.01)
    return np.stack([out, out]).astype(np.float32)


def add_loop(cat: Catalog, template, rel: str, part: str, patch: str, role: str, *, parent=None,
             operation="render", params=None, octave=4) -> dict:
    """Write a loop file and its sidecar the way the batch does, then ingest it."""
    audio = chord_audio(template, octave=octave)
    labels = template_labels(template, SR)
    loop_id = content_id(template.id, part, patch, operation, json.dumps(params))
    name = loop_name(template.bpm, part, patch, labels["key"], loop_id)
    path = loop_path(template.style, name, "flac24")
    write_audio(cat.root / path, audio, SR, "flac24")
    feats = loop_features(audio, SR)
    sidecar = make_sidecar(
        id=loop_id, name=name, template_id=template.id, part=part, role=role, patch=patch, patch_hash="0" * 64,
        renderer="test", renderer_version="1", format="flac24", sample_rate=SR, channels=2,
        samples=feats.samples, duration_s=feats.duration_s, lufs=integrated_lufs(audio, SR), true_peak_db=-6.0,
        rms_db=feats.rms_db, onsets=feats.onsets, centroid_hz=feats.centroid_hz, path=path,
        midi=f"{rel}/{part}.mid", sha256=file_sha256(cat.root / path), tags=[template.style, part, role, patch],
        batch_id="test", parent_id=parent, operation=operation, params=params or {}, **labels)
    write_sidecar(cat.root / sidecar_path(path), sidecar)
    assert cat.ingest_loop(sidecar) is True
    return sidecar


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from farm.templates import find_rules, generate_template, load_rules, write_template

    root = tmp_path_factory.mktemp("catalog") / "library"
    sidecars = []
    with Catalog(root) as cat:
        for i, style in enumerate(STYLES):
            gen = generate_template(load_rules(find_rules(style)), 100 + i, bars=4)
            write_template(gen, root / "templates")
            rel = f"templates/{gen.template.id}"
            cat.add_template(gen.template, rel)
            sidecars.append(add_loop(cat, gen.template, rel, "chords", "test-keys", "keys"))
            sidecars.append(add_loop(cat, gen.template, rel, "bass", "test-bass", "bass", octave=2))
        parent = sidecars[0]
        from farm.model import Template

        template = Template.load(root / "templates" / parent["template_id"])
        sidecars.append(add_loop(cat, template, f"templates/{template.id}", "chords", "test-keys", "keys",
                                 parent=parent["id"], operation="pitch", params={"semitones": 2},
                                 octave=5))  # its own sound: no two rows hold the same audio
    return root, sidecars


def fresh(library, tmp_path) -> Path:
    root, _ = library
    shutil.copytree(root, tmp_path / "library")
    return tmp_path / "library"


# -- machine checks and features ------------------------------------------------------------------
def real_loop(library):
    """A real loop signal: the chord tones of a generated template, exact loop length, with its template."""
    from farm.model import Template

    root, sidecars = library
    template = Template.load(root / "templates" / sidecars[0]["template_id"])
    return chord_audio(template), template.loop_samples(SR)


def measured_lufs(audio) -> float:
    import pyloudnorm

    return pyloudnorm.Meter(SR).integrated_loudness(np.asarray(audio, dtype=np.float64).T)


def test_a_good_loop_passes_every_machine_check(library):
    audio, n = real_loop(library)
    target = measured_lufs(audio)
    assert machine_check(audio, SR, expected_samples=n, target_lufs=target) is None
    assert machine_check(audio, SR, expected_samples=n, target_lufs=target + 2.5) is None  # within 3 LU
    assert machine_check(audio, SR, expected_samples=n, target_lufs=target + 2.5,
                         limits=QALimits(loudness_tolerance_lu=1.0)).startswith("loudness: ")


@pytest.mark.parametrize("defect", ["silence", "clipping", "NaN", "wrong length", "loudness"])
def test_each_machine_check_rejects_its_defect_with_the_reason(library, defect):
    audio, n = real_loop(library)
    target = measured_lufs(audio)
    if defect == "silence":  # the loop 75 dB down: below the -60 dBFS floor
        bad = audio * np.float32(10 ** (-75 / 20))
        level = 20 * math.log10(math.sqrt(float(np.mean(bad.astype(np.float64) ** 2))))
        expected = f"silence: RMS {level:.1f} dBFS is below -60 dBFS"
    elif defect == "clipping":  # driven 4x into the ceiling
        bad = np.clip(audio * 4, -1, 1)
        expected = f"clipping: {int(np.count_nonzero(np.abs(bad) >= 0.999))} samples at full scale"
    elif defect == "NaN":
        bad = audio.copy()
        bad[0, [10, 5000, n - 1]] = np.nan
        bad[1, 77] = np.inf
        expected = "NaN: 4 samples are NaN or infinite"
    elif defect == "wrong length":  # 10 ms short
        bad = audio[:, :-441]
        expected = f"wrong length: {n - 441} samples, expected {n}"
    else:  # 6 dB under the patch's target
        bad = audio * np.float32(0.5)
        expected = None
    reason = machine_check(bad, SR, expected_samples=n, target_lufs=target)
    if expected is not None:
        assert reason == expected
    else:
        lufs = float(reason.split()[1])
        assert reason.startswith("loudness: ") and "more than 3 LU from the target" in reason
        assert lufs == pytest.approx(measured_lufs(bad), abs=0.06) and lufs == pytest.approx(target - 6.02, abs=0.1)
    assert reason.startswith(defect + ": ")
    mono = audio[:1]
    assert machine_check(mono, SR, expected_samples=n) == f"wrong length: shape (1, {n}), expected (2, {n})"


def test_features_measure_level_onsets_and_brightness():
    n = SR * 4
    t = np.arange(n) / SR
    sine = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    steady = np.stack([sine, sine])
    assert rms_db(steady) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert spectral_centroid_hz(steady, SR) == pytest.approx(1000, abs=15)
    assert onset_times(steady, SR).size == 0  # a steady tone has no onsets
    clicks = np.zeros((2, n), dtype=np.float32)
    rng = np.random.default_rng(1)
    hits = [0.25, 0.75, 1.0, 1.5, 2.125, 2.5, 3.0, 3.5]
    for when in hits:
        start = int(when * SR)
        clicks[:, start:start + 3000] += (np.exp(-np.arange(3000) / 400) * rng.standard_normal(3000) * 0.3)
    found = onset_times(clicks, SR)
    assert found.size == len(hits)
    assert np.max(np.abs(found - hits)) < 0.03
    feats = loop_features(clicks, SR)
    assert (feats.channels, feats.samples, feats.onsets) == (2, n, len(hits))
    assert feats.duration_s == pytest.approx(4.0)


# -- sidecars --------------------------------------------------------------------------------------
def test_camelot_codes_follow_the_wheel():
    assert camelot(Key("A", "minor")) == "8A" and camelot(Key("C", "major")) == "8B"
    assert camelot(Key("E", "minor")) == "9A" and camelot(Key("G", "major")) == "9B"
    assert camelot(Key("F#", "minor")) == "11A" and camelot(Key("Db", "major")) == "3B"
    assert camelot(Key("D", "minor")) == "7A" and camelot(Key("B", "major")) == "1B"
    assert camelot(Key("A", "harmonic_minor")) == "8A"
    assert camelot(Key("D", "dorian")) == "8A"  # the key signature of A minor


def test_sidecar_round_trip_and_validation(library):
    root, sidecars = library
    data = sidecars[0]
    assert read_sidecar(root / sidecar_path(data["path"])) == data
    assert data["progression"] == " ".join(c["symbol"] for c in data["chords"])
    bad = dict(data)
    del bad["sha256"]
    with pytest.raises(FarmError, match="sha256: missing"):
        validate_sidecar(bad)
    with pytest.raises(FarmError, match="bars"):
        validate_sidecar(dict(data, bars=3))
    with pytest.raises(FarmError, match="parent_id"):
        validate_sidecar(dict(data, operation="pitch"))
    with pytest.raises(FarmError, match="status"):
        validate_sidecar(dict(data, status="maybe"))
    with pytest.raises(FarmError, match="path: must be relative"):
        validate_sidecar(dict(data, path="/abs/x.flac"))


# -- the catalog -----------------------------------------------------------------------------------
def test_ingest_is_idempotent_and_fills_loops_and_chords(library, tmp_path):
    root = fresh(library, tmp_path)
    _, sidecars = library
    with Catalog(root) as cat:
        assert cat.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cat.ingest_loop(sidecars[1]) is False
        assert cat.db.execute("SELECT count(*) FROM loops").fetchone()[0] == len(sidecars)
        for sc in sidecars:
            got = cat.db.execute("SELECT bar, symbol, roman, root_pc, pitch_classes, bass_pc FROM chords "
                                 "WHERE loop_id = ? ORDER BY bar", [sc["id"]]).fetchall()
            assert got == [(c["bar"], c["symbol"], c["roman"], c["root_pc"], json.dumps(c["pitch_classes"]),
                            c["bass_pc"]) for c in sc["chords"]]
            row = cat.db.execute("SELECT key, bpm, camelot, status, parent_id, operation FROM loops WHERE id = ?",
                                 [sc["id"]]).fetchone()
            assert row == (sc["key"], sc["bpm"], sc["camelot"], "pending", sc["parent_id"], sc["operation"])
        hits = {r["id"] for r in cat.db["loops"].search('"test-bass"')}
        assert hits == {s["id"] for s in sidecars if s["patch"] == "test-bass"}


def test_every_saved_query_runs_and_answers_its_question(library):
    root, sidecars = library
    queries = saved_queries()
    assert len(queries) >= 10
    for name, q in queries.items():
        assert q.description and not q.description.startswith("-")
        columns, rows = run_query(root, name)  # every query runs with its defaults
        assert columns, name
    one = sidecars[2]
    bar3 = one["chords"][2]
    expected = {s["id"] for s in sidecars if s["role"] != "drums"
                and any(c["bar"] == 3 and c["symbol"] == bar3["symbol"] for c in s["chords"])}
    columns, rows = run_query(root, "chord_in_bar", {"symbol": bar3["symbol"], "bar": "3"})
    assert {r[0] for r in rows} == expected and one["id"] in expected
    columns, rows = run_query(root, "roman_in_bar", {"roman": bar3["roman"], "bar": "3"})
    assert one["id"] in {r[0] for r in rows}
    columns, rows = run_query(root, "key", {"key": one["key"]})
    assert {r[0] for r in rows} == {s["id"] for s in sidecars if s["key"] == one["key"]}
    columns, rows = run_query(root, "bpm_range", {"min_bpm": str(one["bpm"]), "max_bpm": str(one["bpm"])})
    assert {r[0] for r in rows} == {s["id"] for s in sidecars if s["bpm"] == one["bpm"]}
    bpms = [r[columns.index("bpm")] for r in run_query(root, "bpm_range", {"min_bpm": "0", "max_bpm": "999"})[1]]
    assert bpms == sorted(bpms) and len(bpms) == len(sidecars)
    columns, rows = run_query(root, "role", {"role": "bass"})
    assert {r[0] for r in rows} == {s["id"] for s in sidecars if s["role"] == "bass"}
    # Camelot neighbours computed here from the wheel: same code, +-1 same letter, relative key.
    n, letter = int(one["camelot"][:-1]), one["camelot"][-1]
    near = {f"{n}{letter}", f"{n % 12 + 1}{letter}", f"{(n - 2) % 12 + 1}{letter}", f"{n}{'B' if letter == 'A' else 'A'}"}
    columns, rows = run_query(root, "compatible", {"camelot": one["camelot"], "bpm": str(one["bpm"]),
                                                   "bpm_tolerance": "0"})
    assert {r[0] for r in rows} == {s["id"] for s in sidecars if s["camelot"] in near and s["bpm"] == one["bpm"]}
    columns, rows = run_query(root, "permutations", {"parent_id": sidecars[0]["id"]})
    assert [r[0] for r in rows] == [sidecars[-1]["id"]] and rows[0][columns.index("operation")] == "pitch"
    columns, rows = run_query(root, "search", {"q": "bass"})
    assert {r[0] for r in rows} == {s["id"] for s in sidecars if s["part"] == "bass"}
    columns, rows = run_query(root, "review_queue", {"style": "deep-house"})
    assert {r[columns.index("style")] for r in rows} == {"deep-house"}
    columns, rows = run_query(root, "patches")
    assert dict((r[0], r[1]) for r in rows) == {"test-keys": 4, "test-bass": 3}


def test_saved_query_parameters():
    assert sql_params("SELECT * FROM t WHERE a = :a AND b = ':no' -- :nor\n AND c = :c AND d = :a") == ("a", "c")
    q = saved_queries()["chord_in_bar"]
    assert set(q.params) == {"symbol", "bar", "limit"}
    assert bind_params(q, {"symbol": "Am7"}) == {"symbol": "Am7", "bar": 3, "limit": 100}
    with pytest.raises(FarmError, match="unknown parameter"):
        bind_params(q, {"chord": "Am7"})


def test_filters_use_the_indexes(library):
    root, _ = library
    conn = sqlite3.connect(f"file:{root / 'catalog.db'}?mode=ro", uri=True)
    queries = saved_queries()
    expect = {"key": "loops_key_bpm", "bpm_range": "loops_bpm", "role": "loops_role_key_bpm",
              "chord_in_bar": "chords_symbol_bar", "compatible": "loops_camelot_bpm"}
    for name, index in expect.items():
        q = queries[name]
        plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + q.sql, bind_params(q, {})))
        assert index in plan, (name, plan)
        assert "TEMP B-TREE" not in plan or name == "compatible", (name, plan)


def test_farm_sql_is_read_only_and_speaks_table_csv_json(library):
    root, sidecars = library
    runner = CliRunner()
    result = runner.invoke(main, ["sql", "SELECT id, key FROM loops ORDER BY id", "--root", str(root), "--csv"])
    assert result.exit_code == 0
    got = list(csv.reader(io.StringIO(result.output)))
    assert got[0] == ["id", "key"] and sorted(got[1:]) == sorted([s["id"], s["key"]] for s in sidecars)
    result = runner.invoke(main, ["sql", "SELECT id, bpm FROM loops WHERE bpm > :b", "-p", "b=0", "--root", str(root),
                                  "--json"])
    assert {r["id"] for r in json.loads(result.output)} == {s["id"] for s in sidecars}
    result = runner.invoke(main, ["sql", "SELECT count(*) AS n FROM loops", "--root", str(root)])
    assert result.output.split() == ["n", "---", str(len(sidecars))]
    for statement in ("DELETE FROM loops", "UPDATE loops SET status = 'approved'", "DROP TABLE chords"):
        result = runner.invoke(main, ["sql", statement, "--root", str(root)])
        assert result.exit_code == 2 and "readonly" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert run_sql(root, "SELECT count(*) FROM loops")[1] == [(len(sidecars),)]
    for statement in ("DELETE FROM loops", "INSERT INTO reviews (loop_id) VALUES ('x')"):
        with pytest.raises(FarmError, match="readonly database"):
            run_sql(root, statement)
    # Nor does a read-only connection create files elsewhere.
    for statement in (f"ATTACH DATABASE '{root.parent / 'other.db'}' AS other", f"VACUUM INTO '{root.parent / 'copy.db'}'"):
        with pytest.raises(FarmError, match="a read-only connection attaches no other database"):
            run_sql(root, statement)
        result = runner.invoke(main, ["sql", statement, "--root", str(root)])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (root.parent / "other.db").exists() and not (root.parent / "copy.db").exists()
    assert run_sql(root, "SELECT count(*) FROM loops")[1] == [(len(sidecars),)]
    result = runner.invoke(main, ["sql", "SELECT nope FROM loops", "--root", str(root)])
    assert result.exit_code == 2 and "no such column: nope" in result.output
    result = runner.invoke(main, ["sql", "SELECT 1", "--root", str(root / "nowhere")])
    assert result.exit_code == 2 and "no catalog here" in result.output
    assert not (root / "nowhere").exists()


def test_a_chord_search_finds_the_loops_that_play_the_chord_not_the_drums(library, tmp_path):
    """Drum loops carry their template's chord labels, but the chord and roman searches answer with
    the loops that play them."""
    from farm.model import Template

    root = fresh(library, tmp_path)
    _, sidecars = library
    chords = sidecars[0]
    template = Template.load(root / "templates" / chords["template_id"])
    with Catalog(root) as cat:
        drums = add_loop(cat, template, f"templates/{template.id}", "drums", "test-kit", "drums")
    symbol = chords["chords"][2]["symbol"]
    found = {r[0] for r in run_query(root, "chord_in_bar", {"symbol": symbol, "bar": "3"})[1]}
    assert chords["id"] in found and drums["id"] not in found
    found = {r[0] for r in run_query(root, "roman_in_bar", {"roman": chords["chords"][2]["roman"], "bar": "3"})[1]}
    assert chords["id"] in found and drums["id"] not in found
    # the drum loop still has its labels, for SQL that asks for them
    assert (drums["id"],) in run_sql(root, "SELECT loop_id FROM chords WHERE bar = 3")[1]


def test_farm_query_show_and_stats(library):
    root, sidecars = library
    runner = CliRunner()
    listing = runner.invoke(main, ["query", "--root", str(root)])
    assert all(name in listing.output for name in saved_queries())
    one = sidecars[0]
    result = runner.invoke(main, ["query", "chord_in_bar", "--param", f"symbol={one['chords'][0]['symbol']}",
                                  "--param", "bar=1", "--root", str(root), "--json"])
    assert one["id"] in {r["id"] for r in json.loads(result.output)}
    result = runner.invoke(main, ["query", "no_such_query", "--root", str(root)])
    assert result.exit_code == 2 and "unknown saved query" in result.output
    result = runner.invoke(main, ["show", one["id"][:8], "--root", str(root)])
    assert result.exit_code == 0
    assert f"id                {one['id']}" in result.output and "file              ok" in result.output
    # measurements read to 3 decimals; --json keeps every digit
    assert f"\nlufs              {round(one['lufs'], 3)}\n" in result.output and round(one["lufs"], 3) != one["lufs"]
    for chord in one["chords"]:
        assert chord["symbol"] in result.output and chord["roman"] in result.output
    assert f"permutations: {sidecars[-1]['id']}" in result.output
    shown = json.loads(runner.invoke(main, ["show", one["id"], "--root", str(root), "--json"]).output)
    assert [c["pitch_classes"] for c in shown["chords"]] == [c["pitch_classes"] for c in one["chords"]]
    assert shown["lufs"] == one["lufs"]
    result = runner.invoke(main, ["show", "ffffffffff", "--root", str(root)])
    assert result.exit_code == 2 and "no loop has this id" in result.output
    info = show_loop(root, one["id"][:8])
    assert info["id"] == one["id"] and info["file"] == "ok" and info["children"] == [sidecars[-1]["id"]]
    assert [(c["bar"], c["symbol"], c["roman"], c["pitch_classes"]) for c in info["chords"]] == [
        (c["bar"], c["symbol"], c["roman"], c["pitch_classes"]) for c in one["chords"]]
    assert shown == json.loads(json.dumps(info))
    stats = json.loads(runner.invoke(main, ["stats", "--root", str(root), "--json"]).output)
    assert stats == json.loads(json.dumps(catalog_stats(root)))
    assert stats["loops"] == len(sidecars) and stats["by_status"] == {"pending": len(sidecars)}
    assert stats["by_part"] == {"chords": 4, "bass": 3} and stats["templates"] == len(STYLES)
    assert stats["by_operation"] == {"render": len(sidecars) - 1, "pitch": 1}
    assert f"loops: {len(sidecars)}" in runner.invoke(main, ["stats", "--root", str(root)]).output


def test_people_approve_and_reject_and_nothing_is_deleted(library, tmp_path, monkeypatch):
    root = fresh(library, tmp_path)
    _, sidecars = library
    monkeypatch.setenv("USER", "ana")
    runner = CliRunner()
    first, second = sidecars[0]["id"], sidecars[1]["id"]
    result = runner.invoke(main, ["approve", first[:8], second, "--root", str(root)])
    assert result.exit_code == 0 and "approved 2 loops" in result.output
    result = runner.invoke(main, ["reject", "--where", "part = 'bass'", "--reason", "muddy low end",
                                  "--reviewer", "ben", "--root", str(root)])
    assert result.exit_code == 0 and "rejected 3 loops" in result.output
    with Catalog(root, readonly=True) as cat:
        status = dict(cat.db.execute("SELECT id, status FROM loops").fetchall())
        assert status[first] == "approved" and status[second] == "rejected"
        assert sum(s == "rejected" for s in status.values()) == 3 and len(status) == len(sidecars)
        reviews = cat.db.execute("SELECT loop_id, status, previous_status, reason, reviewer, reviewed_at "
                                 "FROM reviews ORDER BY id").fetchall()
        assert reviews[0][:5] == (first, "approved", "pending", None, "ana")
        assert (second, "rejected", "approved", "muddy low end", "ben") in [r[:5] for r in reviews]
        assert all(r[5].endswith("Z") for r in reviews)
        assert [r[0] for r in cat.db.execute("SELECT id FROM approved")] == [first]
        assert second not in {r[0] for r in cat.db.execute("SELECT id FROM pending_review")}
    sidecar = json.loads((root / sidecar_path(sidecars[1]["path"])).read_text())
    assert (sidecar["status"], sidecar["reject_reason"]) == ("rejected", "muddy low end")
    # All or nothing: one unknown id, or a broken condition, changes nothing.
    result = runner.invoke(main, ["approve", sidecars[2]["id"], "0123456789abcdef", "--root", str(root)])
    assert result.exit_code == 2 and "0123456789abcdef: no loop has this id" in result.output
    result = runner.invoke(main, ["approve", "--where", "nope = 1", "--root", str(root)])
    assert result.exit_code == 2 and "no such column" in result.output
    for no_reason in ([], ["--reason", " "]):
        result = runner.invoke(main, ["reject", sidecars[2]["id"], *no_reason, "--root", str(root)])
        assert result.exit_code == 2 and result.output.strip().splitlines() == [
            "error: reason: a rejection needs a reason (--reason TEXT)"]
    with pytest.raises(FarmError, match="needs a reason"):
        review(root, [sidecars[2]["id"]], status="rejected", reviewer="cy")
    assert run_sql(root, "SELECT status FROM loops WHERE id = ?", [sidecars[2]["id"]])[1] == [("pending",)]
    assert run_sql(root, "SELECT count(*) FROM reviews")[1] == [(len(reviews),)]
    # The same through the Python function: by id, and by condition (a second decision on a loop
    # is one more review; the first stays).
    assert review(root, [sidecars[2]["id"][:8]], status="approved", reviewer="cy") == [sidecars[2]["id"]]
    pitched = sidecars[-1]["id"]
    assert review(root, where="operation = 'pitch'", status="rejected", reason="too bright",
                  reviewer="cy") == [pitched]
    assert review(root, [pitched], status="approved", reviewer="dee") == [pitched]
    got = run_sql(root, "SELECT status, previous_status, reason, reviewer FROM reviews WHERE loop_id = ? "
                        "ORDER BY id", [pitched])[1]
    assert got == [("rejected", "pending", "too bright", "cy"), ("approved", "rejected", None, "dee")]
    # The CLI's other halves: a rejection by id, an approval by condition.
    result = runner.invoke(main, ["reject", pitched[:8], "--reason", "smeared", "--reviewer", "ed", "--root", str(root)])
    assert result.exit_code == 0 and result.output.splitlines() == ["rejected 1 loop", f"  {pitched}"]
    pending = [r[0] for r in run_sql(root, "SELECT id FROM loops WHERE status = 'pending' ORDER BY id")[1]]
    assert pending == [sidecars[4]["id"]]
    result = runner.invoke(main, ["approve", "--where", "status = 'pending'", "--reviewer", "ed", "--root", str(root)])
    assert result.exit_code == 0 and result.output.splitlines() == ["approved 1 loop", f"  {pending[0]}"]
    got = run_sql(root, "SELECT loop_id, status, reason, reviewer FROM reviews WHERE reviewer = 'ed' ORDER BY id")[1]
    assert got == [(pitched, "rejected", "smeared", "ed"), (pending[0], "approved", None, "ed")]
    assert run_sql(root, "SELECT count(*) FROM loops")[1] == [(len(sidecars),)]  # nothing deleted
    assert all((root / s["path"]).is_file() and (root / sidecar_path(s["path"])).is_file() for s in sidecars)
    assert check_catalog(root).ok
    result = CliRunner().invoke(main, ["check", "--root", str(root), "--no-progress"])
    assert result.exit_code == 0 and result.output.splitlines() == [f"{len(sidecars)} rows, {len(sidecars)} audio files", "ok"]


def test_check_and_reconcile_on_the_catalog_files(library, tmp_path):
    root = fresh(library, tmp_path)
    _, sidecars = library
    with Catalog(root) as cat:
        assert cat.check().ok
        (root / sidecars[0]["path"]).unlink()
        stray = root / "loops" / "x" / "stray.wav"
        stray.parent.mkdir()
        shutil.copy(root / sidecars[1]["path"], stray)
        report = cat.check()
        assert not report.ok
        assert report.missing == [f"{sidecars[0]['id']} {sidecars[0]['path']}"]
        assert report.orphans == ["loops/x/stray.wav"]
        adopted, removed = cat.reconcile()  # a stray file without a sidecar is not a loop
        assert adopted == [] and "loops/x/stray.wav" in removed
        assert cat.db.execute("SELECT count(*) FROM loops").fetchone()[0] == len(sidecars)


def test_tables_of_plain_text_print_as_tabulate_prints_them():
    """format_rows draws one-line ASCII tables itself (tabulate's import is a quarter of `farm
    match`'s start-up); the result is tabulate's, character for character, and anything else
    (numbers, None, wide or multi-line text) still goes through tabulate."""
    import random
    import string

    from tabulate import tabulate

    from farm.catalog import format_rows

    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + " .-+>()|"
    for _ in range(2000):
        ncol, nrow = rng.randint(1, 6), rng.randint(0, 5)
        text = lambda n: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))  # noqa: E731
        columns = [text(8) for _ in range(ncol)]
        rows = [[text(12) for _ in range(ncol)] for _ in range(nrow)]
        assert format_rows(columns, rows) == tabulate(rows, headers=columns, tablefmt="simple",
                                                      disable_numparse=True), (columns, rows)
    for rows in ([[1, 2.5, None]], [["日本", "a\nb", "x"]]):
        assert format_rows(["a", "b", "c"], rows) == tabulate(rows, headers=["a", "b", "c"], tablefmt="simple",
                                                              disable_numparse=True)
