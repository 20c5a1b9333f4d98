"""Synth patches: how a part sounds, as a TOML file in ``patches/``.

A patch names the roles it can play (``chords``, ``pad``, ``keys``, ``bass``, ``lead``, ``arp``,
``drums``), one sound, an ordered chain of pedalboard effects, a loudness target and the tail to
render past the loop end. The sound is one of three kinds: ``[embedded]`` a General MIDI SoundFont
program played by FluidSynth (below), ``[faust]`` a Faust instrument in a ``.dsp`` beside the TOML
(``farm.patches.faust``), or ``[plugin]`` a hosted VST2/VST3/LV2 instrument
(``farm.patches.plugin``); each carries the same MIDI transforms. An optional ``[reaper]`` table names the ``.RfxChain`` the REAPER backend uses.

Example::

    name = "warm-rhodes"
    roles = ["keys", "chords"]
    target_lufs = -16.0          # integrated loudness, LUFS (ITU-R BS.1770)
    tail_s = 2.5                 # seconds rendered past the loop end, folded into its start

    [embedded]
    soundfont = "default"        # the General MIDI SoundFont, or a path (relative to this file)
    program = 4                  # 0-127; drum kits are programs of bank 128
    velocity_curve = 0.8         # exponent: out = 127 * (in / 127) ** curve
    reverb = { room_size = 0.4, level = 0.5 }

    [[embedded.cc]]              # a controller swept once per loop (filter sweep)
    number = 74
    from = 40
    to = 100
    shape = "triangle"

    [[effects]]
    plugin = "Reverb"
    room_size = 0.4

    [reaper]
    fxchain = "warm-rhodes.RfxChain"

Modules: ``model`` (the data classes), ``load`` (finding and loading, content hash, effects),
``parse`` (checking a TOML field by field), ``soundfont`` (a SoundFont's presets), ``faust`` and
``plugin`` (those kinds' tables), ``describe`` (`farm patches`). Everything is importable from ``farm.patches``.

``reaper_fxchain`` keeps the path the ``[reaper]`` table names even when the file is not there yet:
embedded rendering never reads it, and the REAPER backend says clearly when it is missing.
"""
from farm.patches.describe import describe_patch, patch_summary, patch_table, preset_name  # noqa: F401
from farm.patches.load import (apply_effects, build_effects, default_soundfont, list_patches, load_patch,  # noqa: F401
                               patch_digest, patch_path, patches_for_part, scan_patches)
from farm.patches.model import (CC_SHAPES, DEFAULT_SOUNDFONTS, DRUM_BANK, EFFECT_PLUGINS,  # noqa: F401
                                INTERPOLATIONS, NYQUIST_HZ, PATCHES_DIR, ROLES, CCAutomation, Chorus, Effect,
                                EmbeddedSound, Patch, Reverb)
from farm.patches.parse import effect_parameters  # noqa: F401
from farm.patches.soundfont import soundfont_presets  # noqa: F401
