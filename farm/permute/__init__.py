"""Stage 4: permutations. One rendered loop becomes tens of exactly labelled variations.

* ``splice``: bars re-cut into new progressions (AABB, ABAB, ... and one-chord vamps), allowed
  when the style's grammar accepts them; splices whose cuts let a foreign chord's tail bleed in
  are rejected by the machine with the measured figure (:mod:`farm.permute.splice`).
* ``pitch`` / ``stretch``: Rubber Band (pedalboard, in-process, float32) on a circularly padded
  loop, so the seam stays clean; labels transposed and respelled, or re-timed to the exact new
  length in samples (:mod:`farm.permute.shift`).
* ``repatch``: the loop's part MIDI rendered again through another patch of the same role.

Every permutation is a catalog row naming its parent, operation and parameters; its id is the
content address of those three, so nothing is made twice (:mod:`farm.permute.pipeline`).
"""
from farm.permute.pipeline import (OPERATIONS, PermuteReport, PermuteSettings, permutation_task, permute, plan_tasks,
                                   run_stage)
from farm.permute.shift import (pitch_shift, retempo_template, stretch_to_bpm, time_stretch, transpose_key,
                                transpose_template)
from farm.permute.splice import (BLEED_WINDOW_S, DEFAULT_BLEED_THRESHOLD, DEFAULT_PATTERNS, CutBleed, SplicePlan,
                                 bleed_verdict, derived_id, foreign_share, measure_bleed, plan_splices,
                                 splice_audio, splice_template)

__all__ = [
    "OPERATIONS", "PermuteReport", "PermuteSettings", "permutation_task", "permute",
    "plan_tasks", "run_stage", "pitch_shift", "retempo_template", "stretch_to_bpm", "time_stretch",
    "transpose_key", "transpose_template", "BLEED_WINDOW_S", "DEFAULT_BLEED_THRESHOLD", "DEFAULT_PATTERNS",
    "CutBleed", "SplicePlan", "bleed_verdict", "derived_id", "foreign_share", "measure_bleed", "plan_splices",
    "splice_audio", "splice_template", "STAGE",
]


def _plan_batch(run):
    """The batch's permute stage: one task per permutation of the night's parents (``[permute]``)."""
    from farm.batch import TaskSpec
    from farm.permute.pipeline import iter_tasks

    table = run.config.stages.get("permute")
    if table is None:  # no [permute] table in the batch config: the night makes no permutations
        return []
    settings = PermuteSettings.from_table(table, run.config.source)
    return (TaskSpec(loop_id, params) for loop_id, params in iter_tasks(run.catalog, settings,
                                                                          batch_id=run.batch_id))


def _check_table(table: dict, path) -> None:
    PermuteSettings.from_table(table, path)


def _stage():
    from farm.batch import Stage

    return Stage("permute", _plan_batch, task="farm.permute.pipeline:permutation_task",
                 config_table=_check_table)


def __getattr__(name):
    # ``farm.batch`` names this stage as "farm.permute:STAGE"; built on first use so importing
    # farm.permute does not import the batch machinery.
    if name == "STAGE":
        return _stage()
    raise AttributeError(name)
