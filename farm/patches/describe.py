"""Describing patches to a person: the `farm patches` table and one patch in full."""
from __future__ import annotations

from typing import Sequence

from farm.patches.model import Patch
from farm.patches.soundfont import soundfont_presets


# -- describing -------------------------------------------------------------------------------
def preset_name(patch: Patch) -> str:
    """What makes the sound, in a few words: the SoundFont's name for the patch's bank and program
    ("Rhodes EP"), the Faust file, or the hosted plugin."""
    if patch.faust:
        return patch.faust.dsp.name
    if patch.plugin:
        plugin = patch.plugin.plugin
        if "://" in plugin:  # an LV2 URI: its host names the plugin
            return f"{plugin.split('://', 1)[1].split('.')[0]} (LV2)"
        return plugin.rsplit("/", 1)[-1]
    e = patch.embedded
    return soundfont_presets(e.soundfont).get((e.bank, e.program), "?")


def patch_summary(patch: Patch) -> dict[str, str]:
    """One row for ``farm patches``: name, kind, roles, sound, effects, loudness target, tail."""
    return {
        "name": patch.name,
        "kind": patch.kind,
        "roles": ", ".join(patch.roles),
        "sound": preset_name(patch),
        "effects": " > ".join(e.plugin for e in patch.effects) or "-",
        "target LUFS": f"{patch.target_lufs:.1f}",
        "tail s": f"{patch.tail_s:.1f}",
    }


def patch_table(patches: Sequence[Patch]) -> str:
    """``patch_summary`` rows as an aligned text table (numbers right-aligned), header first."""
    rows = [patch_summary(p) for p in patches]
    if not rows:
        return ""
    columns = list(rows[0])
    numeric = {"target LUFS", "tail s"}
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}

    def line(cells: dict) -> str:
        return "  ".join(cells[c].rjust(widths[c]) if c in numeric else cells[c].ljust(widths[c])
                         for c in columns).rstrip()

    return "\n".join([line({c: c for c in columns})] + [line(r) for r in rows])


def describe_patch(patch: Patch) -> str:
    """A patch spelled out in full, as ``farm patches NAME`` prints it."""
    e = patch.sound
    lines = [
        f"name:        {patch.name}",
        f"kind:        {patch.kind}",
        f"file:        {patch.path}",
        f"hash:        {patch.content_hash[:16]}",
        f"roles:       {', '.join(patch.roles)}",
    ]
    if patch.description:
        lines.append(f"description: {patch.description}")
    lines += [
        f"loudness:    {patch.target_lufs:g} LUFS integrated, true peak under -1 dBTP",
        f"tail:        {patch.tail_s:g} s rendered past the loop end and folded into its start",
    ] + _sound_lines(patch) + [
        f"midi:        octave {e.octave:+d}, velocity curve {e.velocity_curve:g}, "
        f"note length x{e.note_length:g}",
    ]
    for auto in e.cc:
        lines.append(f"automation:  CC{auto.number} {auto.start}->{auto.end} {auto.shape}, "
                     f"{auto.cycles} per loop")
    for auto in getattr(e, "automation", ()):
        lines.append(f"automation:  {auto.param} {auto.start:g}->{auto.end:g} {auto.shape}, {auto.cycles} per loop")
    for i, effect in enumerate(patch.effects, 1):
        params = ", ".join(f"{k}={v}" for k, v in effect.params.items())
        lines.append(f"effect {i}:    {effect.plugin}({params})")
    if patch.reaper_fxchain is not None:
        state = "present" if patch.reaper_fxchain.is_file() else "not created yet"
        lines.append(f"reaper:      {patch.reaper_fxchain.name} ({state})"
                     + (f", instrument {patch.reaper['instrument']}" if "instrument" in patch.reaper else ""))
    return "\n".join(lines)


def _sound_lines(patch: Patch) -> list[str]:
    e = patch.sound
    if patch.faust:
        set_ = dict(e.params)
        sliders = ", ".join(f"{s.label}={set_.get(s.label, s.init):g}" for s in e.sliders
                            if s.label not in ("freq", "gain", "gate"))
        return [f"faust:       {e.dsp} ({e.dsp.stat().st_size} bytes), {e.voices} voice{'' if e.voices == 1 else 's'}",
                f"parameters:  {sliders or 'none'}"]
    if patch.plugin:
        preset = f"{e.preset} ({e.from_preset} parameters)" if e.preset else "none (its defaults)"
        return [f"plugin:      {e.plugin}", f"preset:      {preset}",
                f"parameters:  {', '.join(f'{k}={v:g}' for k, v in e.params[e.from_preset:]) or 'none'}"]
    return [
        f"soundfont:   {e.soundfont} ({e.soundfont.stat().st_size} bytes)",
        f"preset:      bank {e.bank} program {e.program} \"{preset_name(patch)}\"",
        f"synth:       gain {e.gain:g}, {e.interpolation} interpolation, polyphony {e.polyphony}",
        f"reverb:      {_fields(e.reverb) if e.reverb else 'off'}",
        f"chorus:      {_fields(e.chorus) if e.chorus else 'off'}",
    ]


def _fields(obj) -> str:
    from dataclasses import asdict

    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in asdict(obj).items())
