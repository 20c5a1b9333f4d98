"""Synth patches: the shipped set, their validation, effect chains, content hashes and CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pedalboard
import pytest
from click.testing import CliRunner

from farm.cli import main as farm_cli
from farm.errors import FarmError
from farm.model import PART_ROLES
from farm.patches import (PATCHES_DIR, ROLES, build_effects, list_patches, load_patch, patches_for_part,
                          soundfont_presets)

SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "patches").glob("*.toml"))
TIME_EFFECTS = {"Reverb", "Delay", "Chorus", "Phaser"}

MINIMAL = '''name = "{name}"
roles = ["keys"]
target_lufs = -16.0

[embedded]
soundfont = "default"
program = 4
'''


def write_patch(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def test_shipped_patches_cover_every_role_and_load():
    patches = list_patches()
    assert [p.name for p in patches] == SHIPPED and len(patches) >= 16
    assert {role for p in patches for role in p.roles} == set(ROLES)
    for p in patches:
        assert -24 <= p.target_lufs <= -10 and p.tail_s > 0
        if p.kind != "soundfont":
            continue
        presets = soundfont_presets(p.embedded.soundfont)
        assert (p.embedded.bank, p.embedded.program) in presets
        assert p.reaper_fxchain is not None and p.reaper_fxchain.name == f"{p.name}.RfxChain"
        assert p.reaper_fxchain.parent == p.path.parent
        if "drums" in p.roles:
            assert p.embedded.bank == 128  # GM percussion kits


def test_there_is_a_dry_chords_patch_and_a_long_tail_patch():
    patches = list_patches()
    dry = [p for p in patches if "chords" in p.roles and p.kind == "soundfont" and not p.embedded.reverb
           and not p.embedded.chorus and not TIME_EFFECTS & {e.plugin for e in p.effects}]
    assert dry, "a chords patch with no reverb, delay or chorus (splices stay clean)"
    long_tail = [p for p in patches if any(e.plugin == "Delay" and e.params.get("feedback", 0) >= 0.5
                                           for e in p.effects) and p.tail_s >= 5]
    assert long_tail, "a patch whose echoes ring into the next bar"


def test_patches_for_part_follow_part_roles():
    patches = list_patches()
    for part, roles in PART_ROLES.items():
        chosen = patches_for_part(part, patches)
        assert chosen, part
        assert all(set(p.roles) & set(roles) for p in chosen)
        assert [p for p in patches if set(p.roles) & set(roles)] == chosen
    assert patches_for_part("no-such-part", patches) == []


def test_build_effects_is_the_chain_in_order_with_its_parameters():
    patch = load_patch("acid-bass")
    board = build_effects(patch)
    assert isinstance(board, pedalboard.Pedalboard)
    assert [type(p).__name__ for p in board] == [e.plugin for e in patch.effects]
    ladder = board[0]
    assert ladder.mode == pedalboard.LadderFilter.Mode.LPF24
    assert ladder.cutoff_hz == pytest.approx(900.0) and ladder.resonance == pytest.approx(0.6)
    assert build_effects(patch)[0] is not ladder  # fresh plugins, fresh state, every time


def test_content_hash_covers_the_toml_and_the_fxchain(tmp_path):
    path = write_patch(tmp_path, "hash-me", MINIMAL.format(name="hash-me") + '[reaper]\nfxchain = "hash-me.RfxChain"\n')
    before = load_patch(path)
    assert before.reaper_fxchain == tmp_path / "hash-me.RfxChain" and not before.reaper_fxchain.exists()
    (tmp_path / "hash-me.RfxChain").write_text("<VST \"VST3: Surge XT\" ...>\n")
    with_chain = load_patch(path)
    assert with_chain.content_hash != before.content_hash
    (tmp_path / "hash-me.RfxChain").write_text("<VST \"VST3: Vital\" ...>\n")
    assert load_patch(path).content_hash not in (before.content_hash, with_chain.content_hash)
    path.write_text(path.read_text().replace("-16.0", "-15.0"))
    assert load_patch(path).target_lufs == -15.0


BAD = [  # (what, edit of MINIMAL, field named in the error)
    ("bad role", lambda t: t.replace('["keys"]', '["keys", "vocals"]'), "roles[1]"),
    ("unknown key", lambda t: t + 'colour = "warm"\n', "embedded.colour"),
    ("missing program", lambda t: t.replace("program = 4", "bank = 5\nprogram = 4"), "embedded.program"),
    ("program out of range", lambda t: t.replace("program = 4", "program = 200"), "embedded.program"),
    ("missing soundfont", lambda t: t.replace('"default"', '"gone.sf2"'), "embedded.soundfont"),
    ("not a soundfont", lambda t: t.replace('"default"', '"fake.sf2"'), "embedded.soundfont"),
    ("interpolation", lambda t: t + 'interpolation = "cubic"\n', "embedded.interpolation"),
    ("reverb field", lambda t: t + "reverb = { size = 0.5 }\n", "embedded.reverb.size"),
    ("cc shape", lambda t: t + "[[embedded.cc]]\nnumber = 74\nfrom = 0\nto = 127\nshape = \"zigzag\"\n",
     "embedded.cc[0].shape"),
    ("unknown effect", lambda t: t + '[[effects]]\nplugin = "Reverb"\n[[effects]]\nplugin = "Chorus"\n'
                                     '[[effects]]\nplugin = "SpaceEcho"\n', "effects[2].plugin"),
    ("unknown parameter", lambda t: t + '[[effects]]\nplugin = "Reverb"\nroom = 0.4\n', "effects[0].room"),
    ("parameter range", lambda t: t + '[[effects]]\nplugin = "Reverb"\nroom_size = 3.0\n', "effects[0].room_size"),
    ("parameter type", lambda t: t + '[[effects]]\nplugin = "Delay"\nmix = "lots"\n', "effects[0].mix"),
    ("enum name", lambda t: t + '[[effects]]\nplugin = "LadderFilter"\nmode = "LPF48"\n', "effects[0].mode"),
    ("target", lambda t: t.replace("-16.0", '"loud"'), "target_lufs"),
    ("fxchain", lambda t: t + '[reaper]\nfxchain = "chain.txt"\n', "reaper.fxchain"),
]


@pytest.mark.parametrize("what,edit,field", BAD, ids=[b[0] for b in BAD])
def test_bad_patch_names_file_and_field(tmp_path, what, edit, field):
    (tmp_path / "fake.sf2").write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    path = write_patch(tmp_path, "bad", edit(MINIMAL.format(name="bad")))
    with pytest.raises(FarmError) as err:
        load_patch(path)
    assert err.value.file == str(path.resolve()) and err.value.field == field, err.value.line()


def test_name_must_match_file_and_toml_must_parse(tmp_path):
    with pytest.raises(FarmError) as err:
        load_patch(write_patch(tmp_path, "one", MINIMAL.format(name="other")))
    assert err.value.field == "name"
    with pytest.raises(FarmError) as err:
        load_patch(write_patch(tmp_path, "broken", "name = \n"))
    assert "invalid TOML" in err.value.message


def test_patches_cli_unknown_name_is_one_line_exit_2():
    result = CliRunner().invoke(farm_cli, ["patches", "no-such-patch"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "no-such-patch.toml: name: no such patch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_patches_dir_follows_the_environment(tmp_path):
    write_patch(tmp_path, "only-one", MINIMAL.format(name="only-one"))
    code = "from farm.patches import PATCHES_DIR, list_patches; print(PATCHES_DIR, [p.name for p in list_patches()])"
    env = dict(os.environ, FARM_PATCHES_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{tmp_path} ['only-one']"
    listing = CliRunner().invoke(farm_cli, ["patches", "--dir", str(tmp_path)])
    assert listing.exit_code == 0 and "only-one" in listing.stdout
    assert PATCHES_DIR.name == "patches"


# -- values that load but make no sense, and fields that were not checked --------------------------
EFFECT = '[[effects]]\nplugin = "{plugin}"\n{param} = {value}\n'

SENSELESS = [  # (what, edit of MINIMAL, field named, words the message says)
    ("nan gain", lambda t: t + "gain = nan\n", "embedded.gain", "nan is not a finite number"),
    ("inf loudness", lambda t: t.replace("-16.0", "-inf"), "target_lufs", "-inf is not a finite number"),
    ("nan tail", lambda t: t.replace("-16.0", "-16.0\ntail_s = nan"), "tail_s", "not a finite number"),
    ("nan synth reverb", lambda t: t + "reverb = { level = nan }\n", "embedded.reverb.level", "not a finite"),
    ("nan effect parameter", lambda t: t + EFFECT.format(plugin="Reverb", param="room_size", value="nan"),
     "effects[0].room_size", "nan is not a finite number"),
    ("negative cutoff", lambda t: t + EFFECT.format(plugin="LowpassFilter", param="cutoff_frequency_hz",
                                                    value="-100.0"),
     "effects[0].cutoff_frequency_hz", "above 0 Hz and below 22050 Hz"),
    ("cutoff past nyquist", lambda t: t + EFFECT.format(plugin="LowpassFilter", param="cutoff_frequency_hz",
                                                        value="1e9"),
     "effects[0].cutoff_frequency_hz", "below 22050 Hz"),
    ("cutoff at nyquist", lambda t: t + EFFECT.format(plugin="HighpassFilter", param="cutoff_frequency_hz",
                                                      value="22050.0"),
     "effects[0].cutoff_frequency_hz", "below 22050 Hz"),
    ("ladder cutoff 0", lambda t: t + EFFECT.format(plugin="LadderFilter", param="cutoff_hz", value="0.0"),
     "effects[0].cutoff_hz", "above 0 Hz"),
    ("phaser centre", lambda t: t + EFFECT.format(plugin="Phaser", param="centre_frequency_hz", value="30000.0"),
     "effects[0].centre_frequency_hz", "below 22050 Hz"),
    ("gate ratio below 1", lambda t: t + EFFECT.format(plugin="NoiseGate", param="ratio", value="0.5"),
     "effects[0].ratio", "must be 1..100"),
    ("chorus feedback", lambda t: t + EFFECT.format(plugin="Chorus", param="feedback", value="2.0"),
     "effects[0].feedback", "must be -1..1"),
    ("negative attack", lambda t: t + EFFECT.format(plugin="Compressor", param="attack_ms", value="-5.0"),
     "effects[0].attack_ms", "must be 0..10000 ms"),
    ("huge gain", lambda t: t + EFFECT.format(plugin="Gain", param="gain_db", value="1000.0"),
     "effects[0].gain_db", "must be -60..60 dB"),
    ("misspelt reaper field", lambda t: t + '[reaper]\nfxchian = "x.RfxChain"\n', "reaper.fxchian",
     "unknown field (allowed: fxchain, instrument)"),
    ("role twice", lambda t: t.replace('["keys"]', '["keys", "chords", "keys"]'), "roles",
     "'keys' is listed twice (roles[0] and roles[2])"),
    ("effect without plugin", lambda t: t + '[[effects]]\nroom_size = 0.4\n', "effects[0].plugin",
     "missing: every [[effects]] table names its plugin (one of Bitcrush"),
    ("soundfont is a folder", lambda t: t.replace('"default"', '"sounds"'), "embedded.soundfont",
     "is a folder, not a SoundFont file"),
]


@pytest.mark.parametrize("what,edit,field,words", SENSELESS, ids=[s[0] for s in SENSELESS])
def test_senseless_values_and_unchecked_fields_name_file_and_field(tmp_path, what, edit, field, words):
    (tmp_path / "sounds").mkdir()
    path = write_patch(tmp_path, "bad", edit(MINIMAL.format(name="bad")))
    with pytest.raises(FarmError) as err:
        load_patch(path)
    assert (err.value.file, err.value.field) == (str(path.resolve()), field), err.value.line()
    assert words in err.value.message


def test_edge_values_inside_the_ranges_load_and_build(tmp_path):
    text = MINIMAL.format(name="edges") + "".join([
        EFFECT.format(plugin="LowpassFilter", param="cutoff_frequency_hz", value="22049.0"),
        EFFECT.format(plugin="Chorus", param="feedback", value="-1.0"),
        EFFECT.format(plugin="NoiseGate", param="ratio", value="1"),
        EFFECT.format(plugin="Compressor", param="attack_ms", value="0.0"),
        EFFECT.format(plugin="Gain", param="gain_db", value="-60.0"),
    ])
    board = build_effects(load_patch(write_patch(tmp_path, "edges", text)))
    assert board[0].cutoff_frequency_hz == pytest.approx(22049.0) and board[1].feedback == -1.0
    assert board[2].ratio == 1.0 and board[3].attack_ms == 0.0 and board[4].gain_db == -60.0


@pytest.fixture(scope="module")
def template_dir(tmp_path_factory) -> Path:
    from farm.templates import find_rules, generate_template, load_rules, write_template

    out = tmp_path_factory.mktemp("templates")
    return write_template(generate_template(load_rules(find_rules("synthwave")), 7, bars=2), out)


@pytest.mark.parametrize("what,edit,field,words", [SENSELESS[i] for i in (0, 6, 14, 15, 16, 17)],
                         ids=[SENSELESS[i][0] for i in (0, 6, 14, 15, 16, 17)])
def test_render_with_a_senseless_patch_is_one_line_exit_2_and_no_file(tmp_path, template_dir, what, edit,
                                                                        field, words):
    (tmp_path / "sounds").mkdir()
    text = edit(MINIMAL.format(name="bad")).replace('roles = ["keys"]', 'roles = ["keys", "chords"]')
    path = write_patch(tmp_path, "bad", text)
    out = tmp_path / "out"
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(template_dir), "--patch", str(path),
                                           "--part", "chords", "--out", str(out)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path.resolve()}: {field}: ") and words in line
    assert not out.exists()


def test_a_patch_path_that_is_missing_or_a_folder_says_so(tmp_path, template_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    with pytest.raises(FarmError) as err:
        load_patch("./nosuch.toml")
    assert err.value.file == str(tmp_path / "nosuch.toml") and err.value.message == "patch file not found"
    with pytest.raises(FarmError) as err:
        load_patch("./p")
    assert err.value.file == str(tmp_path / "p") and "is a folder, not a patch file" in err.value.message
    for arg, line in (("./nosuch.toml", f"error: {tmp_path / 'nosuch.toml'}: name: patch file not found"),
                      ("./p", f"error: {tmp_path / 'p'}: name: is a folder, not a patch file (a .toml)"),
                      ("nosuch", f"error: {PATCHES_DIR / 'nosuch.toml'}: name: no such patch (known: ")):
        result = CliRunner().invoke(farm_cli, ["render", "--template", str(template_dir), "--patch", arg,
                                               "--part", "chords", "--out", "out"])
        assert result.exit_code == 2
        [printed] = result.stderr.strip().splitlines()
        assert printed.startswith(line), printed
        assert not (tmp_path / "out").exists()


class NaNBackend:
    """A renderer gone wrong: the loop and its tail, all NaN."""

    name = "nan-test"
    version = "0"

    def render_raw(self, jobs):
        import numpy as np

        return [np.full((2, job.loop_samples + 100), np.nan, dtype=np.float32) for job in jobs]

    def close(self):
        pass


def test_non_finite_audio_from_any_backend_is_refused_before_a_file_is_written(tmp_path, template_dir,
                                                                             monkeypatch):
    import numpy as np

    from farm.render import BACKENDS, finish_loop, render_loops
    from farm.render.run import plan_jobs

    [job] = plan_jobs(template_dir, "dry-piano-chords", "chords")
    for bad in (np.nan, np.inf):
        raw = np.zeros((2, job.loop_samples + 10), dtype=np.float32)
        raw[1, 5] = bad
        with pytest.raises(FarmError) as err:
            finish_loop(job, raw, "embedded", "test")
        assert err.value.file == str(job.patch.path) and "not finite" in err.value.message
    with pytest.raises(FarmError):
        render_loops([job], NaNBackend())
    monkeypatch.setitem(BACKENDS, "nan-test", NaNBackend)
    out = tmp_path / "out"
    monkeypatch.setenv("FARM_PROGRESS", "always")  # as on a terminal
    result = CliRunner().invoke(farm_cli, ["render", "--template", str(template_dir), "--patch",
                                           "dry-piano-chords", "--part", "chords", "--out", str(out),
                                           "--backend", "nan-test"])
    assert result.exit_code == 2
    # the progress bar had started; it is erased, so on a terminal the error is the one line left
    *bar, line = result.stderr.strip().splitlines()
    assert all(b.strip().startswith("render:") or not b.strip() for b in bar) and not bar[-1].strip()
    assert line == (f"error: {job.patch.path}: the nan-test renderer made audio that is not finite "
                    "(NaN or infinity) for part 'chords'; check the patch's gain and effect parameters")
    assert not out.exists()
