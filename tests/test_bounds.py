"""Every number has a sane bound, and the error names the field that broke it: one line, exit 2,
nothing written, in a blink (no input may ask for minutes of work or gigabytes of memory)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.batch import load_config
from farm.cli import main
from farm.errors import FarmError
from farm.render.run import load_template
from farm.templates import find_rules, generate_template, load_rules, write_template


def one_line(args, cwd: Path | None = None) -> str:
    started = time.monotonic()
    result = CliRunner().invoke(main, args)
    assert time.monotonic() - started < 30, args
    assert result.exit_code == 2, (args, result.output)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output, result.output
    return result.stderr.strip()


@pytest.mark.parametrize("args, expected", [
    (["--bars", "100000"], "error: bars: must be a whole number 1..32, got 100000"),
    (["--count", "1000000000000"], "error: count: must be a whole number 1..100000, got 1000000000000"),
    (["--count", "0"], "error: count: must be a whole number 1..100000, got 0"),
    (["--seed", "-1"], "error: seed: must be a whole number"),
])
def test_farm_generate_bounds(tmp_path, args, expected):
    out = tmp_path / "templates"
    assert one_line(["generate", "--style", "lofi-hiphop", "--out", str(out), "-q", *args]).startswith(expected)
    assert not out.exists()


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path):
    line = one_line(["generate", "--style", "lofi-hiphop", "--out", "/proc/forbidden", "-q"])
    assert line.startswith("error: /proc/forbidden: out: cannot write here")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_template(generate_template(load_rules(find_rules("lofi-hiphop")), 1, bars=2),
                          tmp_path_factory.mktemp("good"))


@pytest.mark.parametrize("field, value, words", [
    ("bars", 1_000_000, "1000000 is out of range (1 to 64)"),
    ("meter", "99999/4", "the numerator must be 1 to 32"),
    ("meter", "4/1024", "a power of two up to 32"),
    ("bpm", 1e9, "is not a tempo"),
])
def test_template_json_numbers_that_would_ask_for_gigabytes_are_refused(good, tmp_path, field, value, words):
    target = tmp_path / good.name
    shutil.copytree(good, target)
    data = json.loads((target / "template.json").read_text())
    data[field] = value
    (target / "template.json").write_text(json.dumps(data))
    with pytest.raises(FarmError) as err:
        load_template(target)
    assert err.value.field == field and words in err.value.message
    line = one_line(["render", "--template", str(target), "--patch", "sub-bass", "--out", str(tmp_path / "o")])
    assert f"{field}:" in line and not (tmp_path / "o").exists()


def test_a_toml_nested_200000_levels_deep_is_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(FarmError, match="nested too deeply"):
        load_config(deep)
    assert one_line(["batch", "--config", str(deep), "--root", str(tmp_path / "lib")]) == \
        f"error: {deep}: invalid TOML: nested too deeply"
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    assert "a Loop Farm TOML is under" in one_line(["batch", "--config", str(huge), "--root", str(tmp_path / "lib")])
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("line, field", [
    ("clip_level = nan", "qa.clip_level"), ("clip_level = 2.0", "qa.clip_level"), ("silence_db = inf", "qa.silence_db"),
    ("clip_samples = 2.5", "qa.clip_samples"), ("loudness_tolerance_lu = -1", "qa.loudness_tolerance_lu"),
])
def test_qa_limits_are_finite_and_in_range(tmp_path, line, field):
    config = tmp_path / "night.toml"
    config.write_text(f"[qa]\n{line}\n")
    assert f"{config}: {field}: expected a" in one_line(["batch", "--config", str(config), "--root",
                                                           str(tmp_path / "lib"), "--no-progress"])
    assert not (tmp_path / "lib").exists()


def test_a_rule_file_nested_too_deeply_is_one_line(tmp_path):
    rules = tmp_path / "deep.toml"
    rules.write_text("name = " + "[" * 200_000 + "]" * 200_000 + "\n")
    assert one_line(["generate", "--rules", str(rules), "--out", str(tmp_path / "t"), "-q"]) == \
        f"error: {rules}: toml: invalid TOML: nested too deeply"
    assert not (tmp_path / "t").exists()
