"""A template.json a person edited by hand, or a template folder damaged on disk: every bad value
stops ``farm render`` with one line naming the file and the field, exit code 2, nothing written.
Valid templates written by farm.templates load exactly as they were written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.cli import main as farm_cli
from farm.errors import FarmError
from farm.model import Template
from farm.render.run import load_template, render
from farm.templates import find_rules, generate_template, load_rules, write_template


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A real generated template (chords, bass, melody, drums ...), in its folder named by its id."""
    out = tmp_path_factory.mktemp("good")
    return write_template(generate_template(load_rules(find_rules("lofi-hiphop")), 1, bars=2), out)


def edited(good: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``good`` (same folder name) whose template.json went through ``edit(data)``."""
    target = tmp_path / "lib" / good.name
    shutil.copytree(good, target)
    data = json.loads((target / "template.json").read_text())
    edit(data)
    (target / "template.json").write_text(json.dumps(data, indent=2))
    return target


def render_cli(template: Path, out: Path, patch: str = "warm-rhodes"):
    return CliRunner().invoke(farm_cli, ["render", "--template", str(template), "--patch", patch, "--out", str(out)])


def assert_one_line(result, prefix: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    assert "Traceback" not in result.output
    return lines[0]


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


def _delete(key):
    return lambda d: d.pop(key)


CASES = [  # (name, edit, field, words the message must hold)
    ("bpm-zero", _set("bpm", 0), "bpm", "not a tempo"),
    ("bpm-negative", _set("bpm", -90), "bpm", "not a tempo"),
    ("bpm-nan", _set("bpm", float("nan")), "bpm", "NaN"),
    ("bpm-text", _set("bpm", "90"), "bpm", 'the string "90"'),
    ("bars-zero", _set("bars", 0), "bars", "out of range (1 to 64)"),
    ("bars-negative", _set("bars", -2), "bars", "out of range (1 to 64)"),
    ("bars-text", _set("bars", "two"), "bars", 'expected a whole number, got the string "two"'),
    ("meter-zero-denominator", _set("meter", "4/0"), "meter", "power of two"),
    ("meter-not-power-of-two", _set("meter", "4/3"), "meter", "power of two"),
    ("meter-word", _set("meter", "waltz"), "meter", "not a time signature"),
    ("mode", _set("key", "mode", "lydian-ish"), "key.mode", 'unknown mode "lydian-ish"'),
    ("tonic", _set("key", "tonic", "H"), "key.tonic", '"H" is not a note name'),
    ("key-missing", _delete("key"), "key", "missing"),
    ("unknown-field", _set("mood", "sunny"), "mood", "unknown field"),
    ("ppq-zero", _set("ppq", 0), "ppq", "out of range"),
    ("channel", lambda d: d["parts"][0].update(channel=42), "parts[0].channel", "42 is out of range (0 to 15)"),
    ("part-name", lambda d: d["parts"][0].update(name="flute"), "parts[0].name", 'unknown part "flute"'),
    ("part-twice", lambda d: d["parts"][1].update(name=d["parts"][0]["name"]), "parts[1].name", "twice"),
    ("chords-text", _set("chords", "G/B Em7"), "chords", "expected a list"),
    ("no-parts", _set("parts", []), "parts", "empty"),
    ("id-path", _set("id", "../x"), "id", "cannot name a folder"),
    ("pitch-class", lambda d: d["chords"][1]["pitch_classes"].append(12), "chords[1].pitch_classes",
     "12 is not a pitch class"),
    ("chord-bar", lambda d: d["chords"][0].update(bar=9), "chords[0].bar", "past the template's"),
    ("id-not-folder", _set("id", "bogus"), "id", "not this folder's name"),
    ("empty-object", lambda d: d.clear(), "id", "missing"),
]


@pytest.mark.parametrize("name,edit,field,words", CASES, ids=[c[0] for c in CASES])
def test_bad_template_field_is_one_line_naming_it_exit_2_nothing_written(good, tmp_path, name, edit, field, words):
    template = edited(good, tmp_path, edit)
    path = template / "template.json"
    with pytest.raises(FarmError) as err:
        load_template(template)
    assert (err.value.file, err.value.field) == (str(path), field)
    assert words in err.value.message
    out = tmp_path / "out"
    line = assert_one_line(render_cli(template, out), f"error: {path}: {field}: ")
    assert words in line
    assert not out.exists()


def test_template_path_that_is_not_a_template_folder(good, tmp_path):
    out = tmp_path / "out"
    a_file = tmp_path / "afile.json"
    a_file.write_text("{}")
    assert_one_line(render_cli(a_file, out), f"error: {a_file}: template: not a template folder")
    assert_one_line(render_cli(tmp_path / "nowhere", out), f"error: {tmp_path / 'nowhere'}: template: no such")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line(render_cli(empty, out), f"error: {empty / 'template.json'}: template: no template.json here")
    broken = edited(good, tmp_path, lambda d: None)
    (broken / "template.json").write_text('{"id": ')
    assert_one_line(render_cli(broken, out), f"error: {broken / 'template.json'}: json: invalid JSON")
    (broken / "template.json").write_text("[]")
    assert_one_line(render_cli(broken, out), f"error: {broken / 'template.json'}: template: expected an object")
    renamed = tmp_path / "renamed"
    shutil.copytree(good, renamed)
    assert_one_line(render_cli(renamed, out), f"error: {renamed / 'template.json'}: id: \"{good.name}\" is not")
    with pytest.raises(FarmError) as err:
        render(a_file, "warm-rhodes", out=out, progress=False)
    assert err.value.field == "template"
    assert not out.exists()


@pytest.mark.parametrize("cut,words", [(0, "empty MIDI file (0 bytes)"), (100, "cut short: it stops after 100 bytes"),
                                       (10, "cut short: it stops after 10 bytes")])
def test_empty_or_cut_short_midi_says_so(good, tmp_path, cut, words):
    template = edited(good, tmp_path, lambda d: None)
    midi = template / "chords.mid"
    midi.write_bytes(midi.read_bytes()[:cut])
    out = tmp_path / "out"
    line = assert_one_line(render_cli(template, out), f"error: {midi}: parts.chords.midi: ")
    assert words in line and "EOFError" not in line
    with pytest.raises(FarmError) as err:
        render(template, "warm-rhodes", out=out, progress=False)
    assert (err.value.file, err.value.field) == (str(midi), "parts.chords.midi") and words in err.value.message
    assert not out.exists()


def test_valid_templates_load_as_written(good, tmp_path):
    """Every field of a generated template survives the checks unchanged, for every style; the
    optional channel defaults to 0 and a whole-number bpm reads as a float, as before."""
    from farm.templates import list_styles

    for i, rules in enumerate(list_styles()):
        g = generate_template(rules, i)
        path = write_template(g, tmp_path)
        assert Template.load(path) == g.template == Template.from_dict(g.template.to_dict())
    data = json.loads((good / "template.json").read_text())
    data["bpm"] = int(data["bpm"]) if float(data["bpm"]).is_integer() else data["bpm"]
    for part in data["parts"]:
        if part["channel"] == 0:
            del part["channel"]
    assert Template.from_dict(data) == Template.load(good)
