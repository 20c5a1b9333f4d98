"""Stage 1: rule sets (TOML) -> musically labelled MIDI templates.

A rule set (``templates/<style>.toml``) says which keys, modes, tempi, meters, lengths, chord
progressions and parts a style may have; :func:`generate_template` turns it and a seed into a
:class:`farm.model.Template` with one Standard MIDI File per part, and :func:`write_template`
stores it content-addressed as ``<out>/<id>/``. Same rules + seed = same bytes, in any process.
"""
from farm.templates.build import (GENERATOR_VERSION, PPQ, GeneratedTemplate, generate, generate_template,
                                  template_id, write_template)
from farm.templates.midi import Note, Track, merge_parts, midi_bytes
from farm.templates.grammar import progression_is_valid, sample_progression
from farm.templates.rules import (PART_NAMES, TEMPLATES_DIR, Rules, beat_steps, find_rules, list_styles,
                                  load_rules, steps_per_bar, templates_dir)

__all__ = [
    "TEMPLATES_DIR", "PART_NAMES", "GENERATOR_VERSION", "PPQ", "Rules", "GeneratedTemplate",
    "load_rules", "find_rules", "list_styles", "templates_dir", "generate_template", "write_template",
    "generate", "progression_is_valid", "sample_progression", "midi_bytes", "merge_parts", "Note", "Track", "template_id",
    "steps_per_bar", "beat_steps",
]
