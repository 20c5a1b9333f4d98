"""A mistyped name is answered with the closest known one; a broken patch file does not hide the others."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.catalog import run_query
from farm.cli import main
from farm.errors import FarmError, closest
from farm.patches import PATCHES_DIR, load_patch, scan_patches
from farm.templates.rules import find_rules


@pytest.mark.parametrize("typed, known, expected", [
    ("lofi", ["deep-house", "lofi-hiphop", "synthwave"], "lofi-hiphop"),
    ("warm-rodes", ["warm-rhodes", "sub-bass"], "warm-rhodes"),
    ("Chords", ["chords", "bass"], "chords"),
    ("zzz", ["chords", "bass"], None),
])
def test_closest(typed, known, expected):
    assert closest(typed, known) == expected


def test_functions_and_commands_suggest_the_closest_name(tmp_path):
    with pytest.raises(FarmError, match="did you mean 'lofi-hiphop'"):
        find_rules("lofi")
    with pytest.raises(FarmError, match="did you mean 'warm-rhodes'"):
        load_patch("warm-rodes")
    runner = CliRunner()
    cases = [
        (["generate", "--style", "synthwav", "--out", str(tmp_path / "t")], "did you mean 'synthwave'?"),
        (["patches", "sub-bas"], "did you mean 'sub-bass'?"),
        (["patches", "--role", "baas"], "'baas' is not one of"),
    ]
    config = tmp_path / "night.toml"
    config.write_text('parts = ["chord"]\n')
    cases.append((["batch", "--config", str(config), "--root", str(tmp_path / "lib")], "did you mean 'chords'?"))
    for args, expected in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and expected in result.stderr, (args, result.output)
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "t").exists() and not (tmp_path / "lib").exists()


def test_a_saved_query_name_is_suggested(tmp_path):
    with pytest.raises(FarmError, match="did you mean 'review_queue'"):
        run_query(tmp_path, "review_que")


def test_a_broken_patch_is_one_line_and_the_others_are_listed(tmp_path):
    folder = tmp_path / "patches"
    folder.mkdir()
    for name in ("warm-rhodes", "sub-bass"):
        shutil.copy(Path(PATCHES_DIR) / f"{name}.toml", folder)
    (folder / "broken.toml").write_text('name = "broken"\nroles = [chords\n')
    (folder / "bad-role.toml").write_text((Path(PATCHES_DIR) / "sub-bass.toml").read_text().replace(
        'roles = ["bass"]', 'roles = ["bas"]').replace('name = "sub-bass"', 'name = "bad-role"'))
    good, broken = scan_patches(folder)
    assert [p.name for p in good] == ["sub-bass", "warm-rhodes"]
    assert [Path(e.file).name for e in broken] == ["bad-role.toml", "broken.toml"]
    result = CliRunner().invoke(main, ["patches", "--dir", str(folder)])
    assert result.exit_code == 1
    assert "sub-bass" in result.stdout and "warm-rhodes" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert "bad-role.toml: roles[0]: unknown role 'bas'; did you mean 'bass'?" in errors[0]
    assert "broken.toml: invalid TOML" in errors[1] and "line 2" in errors[1]
