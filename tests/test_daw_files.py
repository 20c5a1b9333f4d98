"""Files a DAW reads: library FLACs carry their labels as Vorbis comments, `farm render` WAVs their
acid and smpl chunks, key names are spelled as DAWs spell them, and drum loops carry no key."""
from __future__ import annotations

import json
import sqlite3
import struct

import pytest
import soundfile
from click.testing import CliRunner
from mutagen.flac import FLAC

from farm.batch import load_config, run_batch
from farm.cli import main
from farm.export import riff_chunks
from farm.model import daw_key_name, loop_name


@pytest.mark.parametrize("short, daw", [("Am", "Am"), ("F#m", "F#m"), ("Bb", "Bb"), ("Bbdor", "Bbm"),
                                        ("Ahm", "Am"), ("C", "C")])
def test_key_names_as_daws_spell_them(short, daw):
    assert daw_key_name(short) == daw
    assert loop_name(120, "chords", "warm-rhodes", short, "0123456789abcdef") == \
        f"LF_120_chords_warm-rhodes_{daw}_0123456789abcdef"
    assert loop_name(120, "drums", "lofi-kit", short, "0123456789abcdef") == "LF_120_drums_lofi-kit_0123456789abcdef"


@pytest.fixture(scope="module")
def dorian_night(tmp_path_factory):
    base = tmp_path_factory.mktemp("daw")
    root = base / "library"
    config = base / "night.toml"  # deep-house seed 0: B-flat dorian
    config.write_text("\n".join([
        f'root = "{root}"', 'styles = ["deep-house"]', "templates_per_style = 1", "seed = 0", "bars = 2",
        'parts = ["chords", "drums"]', 'patches = ["warm-rhodes", "tight-808"]', "workers = 1"]) + "\n")
    assert run_batch(load_config(config), progress=False).failed == 0
    conn = sqlite3.connect(root / "catalog.db")
    conn.row_factory = sqlite3.Row
    rows = {r["part"]: dict(r) for r in conn.execute("SELECT * FROM loops")}
    conn.close()
    return root, rows


def test_library_flacs_carry_their_labels_and_drums_no_key(dorian_night):
    root, rows = dorian_night
    chords, drums = rows["chords"], rows["drums"]
    assert chords["key"] == "Bbdor"  # the label keeps the mode; the file name says Bbm
    assert chords["name"] == f"LF_{chords['bpm']:g}_chords_warm-rhodes_Bbm_{chords['id']}"
    tags = FLAC(root / chords["path"])
    assert tags["KEY"] == ["Bbm"] and tags["MODE"] == ["dorian"] and tags["BPM"] == [f"{chords['bpm']:g}"]
    assert tags["METER"] == [chords["meter"]] and tags["BARS"] == [str(chords["bars"])]
    assert tags["CHORDS"] == [chords["progression"]] and tags["LOOPFARM_ID"] == [chords["id"]]
    drum_tags = FLAC(root / drums["path"])
    assert "KEY" not in drum_tags and "MODE" not in drum_tags and drum_tags["BPM"] == [f"{drums['bpm']:g}"]
    assert drums["name"] == f"LF_{drums['bpm']:g}_drums_tight-808_{drums['id']}"
    sidecar = json.loads((root / drums["sidecar"]).read_text())
    assert "Bbdor" not in sidecar["tags"] and "dorian" not in sidecar["tags"]  # not found by a key it has not
    # the tags do not touch the sound: the samples are what the sidecar measured
    audio, sr = soundfile.read(root / chords["path"], dtype="float32")
    assert audio.shape == (chords["samples"], 2) and sr == chords["sample_rate"]


def test_farm_render_wavs_carry_acid_and_smpl(dorian_night, tmp_path):
    root, rows = dorian_night
    template = root / "templates" / rows["chords"]["template_id"]
    result = CliRunner().invoke(main, ["render", "--template", str(template), "--patch", "warm-rhodes",
                                       "--part", "chords", "--out", str(tmp_path), "--format", "wav24"])
    assert result.exit_code == 0, result.output
    (wav,) = tmp_path.glob("*.wav")
    assert "_Bbm_" in wav.name
    chunks = dict(riff_chunks(wav.read_bytes()))
    flags, root_note, _, _, beats, den, num, bpm = struct.unpack("<IHHfIHHf", chunks[b"acid"])
    assert root_note == 0x30 + 10 and flags & 0x02 and (num, den) == (4, 4) and beats == 8
    assert abs(bpm - rows["chords"]["bpm"]) < 1e-3
    unity = struct.unpack_from("<9I", chunks[b"smpl"])[3]
    start, end = struct.unpack_from("<6I", chunks[b"smpl"], 36)[2:4]
    frames = soundfile.info(str(wav)).frames
    assert unity == 70 and (start, end) == (0, frames - 1)
