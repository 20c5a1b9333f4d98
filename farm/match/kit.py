"""``farm kit``: construction kits, one loop per role, whose labels stay exact.

A kit is built around an *anchor* loop (``--from``, or one picked by ``--seed`` among the loops of
the kit's first harmonic role). Every other role gets the loop :mod:`farm.match.search` ranks best
among those that hold *the same chords bar by bar* as the anchor (same pitch classes and bass,
after the transposition it takes): only then are the kit's chord labels exact for every stem.
Each member's fit with the members already chosen counts as much as its fit with the anchor.
A member that must move (up to 2 semitones) or change tempo (up to 5 BPM) is played by the
``pitch``/``stretch`` permutation of its loop, made now if the catalog lacks it.

Planning reads the catalog only; nothing is written until every role has its loop, so a kit that
cannot be built is one line and no file. :mod:`farm.match.kit_files` writes the folder.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from farm.errors import FarmError
from farm.match.fit import Fit, rhythm, spectrum, transpose_mask
from farm.match.search import Match, find_matches, load_query, parse_bars

PARTS = ("chords", "bass", "arp", "melody", "drums")
KIT_ROLES = ("drums", "bass", "chords", "melody")
HARMONIC_FIRST = ("chords", "melody", "arp", "bass")  # which role anchors a kit picked by seed
MAX_ANCHORS = 40  # anchors tried (in seeded order) before a kit is declared impossible
MAX_SWAPS = 8  # members replaced by the next best before a kit whose mix fails its labels is given up
SHORTLIST = 60  # candidates per role taken from the matcher


class KitUnmet(FarmError):
    """The kit's constraints cannot be met (exit 2, nothing written)."""


@dataclass
class Member:
    """One role's loop: ``source`` (the matched loop's row), the permutation it takes
    (``transform``: ``{"operation", "params", "id"}`` or None) and ``loop_id``, the loop the stem
    plays (the permutation's id when transformed)."""

    role: str
    source: dict
    transform: dict | None
    fit: Fit | None
    onsets: object = None
    energy: object = None

    @property
    def loop_id(self) -> str:
        return self.transform["id"] if self.transform else self.source["id"]


@dataclass
class KitPlan:
    """The members chosen, in the kit's role order, and each role's next best (``alternates``)."""

    anchor_id: str
    roles: tuple[str, ...]
    members: list[Member]
    style: str | None
    seed: int
    alternates: dict[str, list[Member]]

    def swap(self, role: str) -> None:
        """Replace ``role``'s member by its next best."""
        i = next(i for i, m in enumerate(self.members) if m.role == role)
        self.members[i] = self.alternates[role].pop(0)


def check_roles(roles: Sequence[str] | str) -> tuple[str, ...]:
    """The kit's roles (parts), in order: known, no repeats, at least one."""
    if isinstance(roles, str):
        roles = [r.strip() for r in roles.split(",") if r.strip()]
    roles = tuple(roles)
    unknown = [r for r in roles if r not in PARTS]
    if not roles or unknown:
        raise FarmError(f"unknown role {unknown[0]!r} (roles: {', '.join(PARTS)})" if unknown
                        else "name at least one role", field="roles")
    if len(set(roles)) != len(roles):
        raise FarmError(f"{', '.join(roles)} names a role twice", field="roles")
    return roles


def plan_kit(cat, *, roles: Sequence[str] | str = KIT_ROLES, style: str | None = None, seed: int = 0,
             from_loop: str | None = None) -> KitPlan:
    """Choose every role's loop (reads ``cat`` only). KitUnmet when no anchor tried can be completed."""
    roles = check_roles(roles)
    if from_loop is not None:
        (anchor,) = cat.resolve_ids([from_loop])
        part, status = cat.db.execute("SELECT part, status FROM loops WHERE id = ?", [anchor]).fetchone()
        if part not in roles:
            raise FarmError(f"is a {part} loop and the kit's roles are {', '.join(roles)}", field="from")
        if status == "rejected":
            raise FarmError("is rejected; a kit is built from loops that are not", field="from")
        return _plan_around(cat, anchor, roles, style, seed, random.Random(seed))
    role = next((r for r in HARMONIC_FIRST if r in roles), roles[0])
    sql = "SELECT id FROM loops WHERE part = ? AND status != 'rejected'" + (" AND style = ?" if style else "")
    anchors = [r[0] for r in cat.db.execute(sql + " ORDER BY id", [role] + ([style] if style else []))]
    if not anchors:
        raise KitUnmet(f"no {role} loop{f' of style {style}' if style else ''} to build a kit on "
                       "(not rejected)", file=cat.path, field="style" if style else "roles")
    random.Random(seed).shuffle(anchors)
    first = None
    for anchor in anchors[:MAX_ANCHORS]:
        try:
            return _plan_around(cat, anchor, roles, style, seed, None)
        except KitUnmet as err:
            first = first or err
    raise KitUnmet(f"{first.message} (and for the other {min(len(anchors), MAX_ANCHORS) - 1} "
                   f"{role} loops tried)" if len(anchors) > 1 else first.message, file=first.file, field=first.field)


def _plan_around(cat, anchor: str, roles: tuple[str, ...], style: str | None, seed: int,
                 rng: random.Random | None) -> KitPlan:
    """Every role's loop for the kit on ``anchor``; ``rng`` (with --from) picks among the best three."""
    query = load_query(cat, anchor)
    q = query.row
    prints = _prints(cat, [anchor])
    members = [Member(q["part"], q, None, None, *prints.get(anchor, (None, None)))]
    # the chords every harmonic stem must hold: the anchor's, or (drums anchor) the first chosen's
    reference = query.bars if q["part"] != "drums" and query.bars else None  # a drum loop's chords are its template's, not heard
    alternates: dict[str, list[Member]] = {}
    for role in roles:
        if role == q["part"]:
            continue
        taken = {m.source["id"] for m in members} | {m.loop_id for m in members}
        found = [m for m in find_matches(cat, anchor, role=role, limit=SHORTLIST, exclude=taken, style=style)
                 if m.part == role]
        if role != "drums":
            found = [m for m in found if _holds(m, reference)]
        if not found:
            raise KitUnmet(_unmet(q, role, style), file=cat.path, field="roles")
        more = _prints(cat, [m.id for m in found])
        ranked = sorted(found, key=lambda m: (-_with_members(m, more.get(m.id), members), m.id))
        pick = ranked[rng.randrange(min(3, len(ranked)))] if rng is not None and seed else ranked[0]
        members.append(Member(role, pick.row, pick.transform, pick.fit, *more.get(pick.id, (None, None))))
        alternates[role] = [Member(role, m.row, m.transform, m.fit, *more.get(m.id, (None, None)))
                            for m in ranked if m is not pick]
        if reference is None and role != "drums":
            reference = tuple(_moved(b, pick.fit.semitones) for b in parse_bars(pick.row["harmony"]))
    order = {r: i for i, r in enumerate(roles)}
    members.sort(key=lambda m: order[m.role])
    return KitPlan(anchor, roles, members, style, seed, alternates)


def _moved(bar, semitones: int):
    from farm.match.fit import Bar

    return Bar(transpose_mask(bar.tones, semitones), (bar.bass_pc + semitones) % 12)


def _holds(m: Match, reference) -> bool:
    """Whether a harmonic candidate holds the reference chords bar by bar (tones and bass)."""
    bars = tuple(_moved(b, m.fit.semitones) for b in parse_bars(m.row["harmony"]))
    return bool(bars) and (reference is None or bars == tuple(reference))


def _unmet(q: dict, role: str, style: str | None) -> str:
    where = f" of style {style}" if style else ""
    chords = "" if q["part"] == "drums" else f", the same chords bar by bar ({q['progression']}) within 2 semitones"
    return (f"no {role} loop{where} fits the kit on {q['id']} ({q['bars']} bars of {q['meter']}, "
            f"{q['bpm']:g} BPM within 5{chords})")


def _prints(cat, ids: list[str]) -> dict:
    """``{loop id: (onsets, energy)}`` from the packed fingerprints (as ``farm match`` scores them)."""
    from farm.fingerprint import unpack

    out = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for loop_id, blob in cat.db.execute(
                f"SELECT id, fp_packed FROM loops WHERE id IN ({','.join('?' * len(chunk))}) "
                "AND fp_packed IS NOT NULL", chunk):
            out[loop_id] = unpack(blob)
    return out


def _with_members(m: Match, prints, members: list[Member]) -> float:
    """A candidate's score with the anchor averaged with its rhythm and spectrum fit with each other
    member chosen so far (their harmony is exact by construction)."""
    scores = [m.score]
    for other in members[1:]:
        if prints is None or other.onsets is None or prints[0].shape != other.onsets.shape:
            continue
        drums = "drums" in (m.part, other.role)
        scores.append(Fit(None if drums else 1.0, rhythm(m.part, prints[0], other.role, other.onsets),
                          spectrum(prints[1], other.energy)).score)
    return sum(scores) / len(scores)


def build_kit(catalog_root: str | Path, *, roles: Sequence[str] | str = KIT_ROLES, style: str | None = None,
              seed: int = 0, from_loop: str | None = None, out: str | Path | None = None) -> dict:
    """``farm kit``: plan a kit, check its mix against its labels, make the permutations it
    needs, write its folder under ``out`` (default ``<root>/kits``) and catalogue it as pending.

    A member whose permutation fails the machine checks, or a mix that does not confirm the
    labels (``kit_files.label_problem``), is replaced by the next best loop of its role (for the
    labels: the drums, whose kick may cover the bass), up to ``MAX_SWAPS`` times; then KitUnmet.
    Returns the kit's record (``kit_files.kit_record``, with ``new``): a kit already catalogued
    (same members, same gains) is returned as it is, nothing rewritten.
    """
    from farm.catalog import Catalog
    from farm.catalog.lock import writer_lock
    from farm.match.kit_files import assemble, catalogue_kit, kit_folder, kit_record, label_problem, write_kit
    from farm.permute.on_demand import commit

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FarmError(f"must be a whole number of at least 0, got {seed!r}", field="seed")
    with Catalog(catalog_root, create=False) as cat, writer_lock(cat.root, "kit"):
        plan = plan_kit(cat, roles=roles, style=style, seed=seed, from_loop=from_loop)
        folder_parent = kit_folder(cat.root, out)
        prepared: dict[str, object] = {}
        for _ in range(MAX_SWAPS + 1):
            sources, failed = [], None
            for m in plan.members:
                row, audio, reason = _member_audio(cat, m, prepared)
                if reason:
                    failed = (m.role, f"the {m.transform['operation']} permutation {m.loop_id} the {m.role} "
                                      f"stem needs is rejected ({reason})")
                    break
                sources.append((row, audio))
            if failed is None:
                kit = assemble(cat, plan, sources)
                problem = label_problem(kit)
                failed = None if problem is None else ("drums" if "drums" in plan.alternates else None, problem)
            if failed is None:
                break
            role, why = failed
            if role is None or not plan.alternates.get(role):
                raise KitUnmet(f"no kit on {plan.anchor_id} holds its labels: {why}", file=cat.path, field="kit")
            plan.swap(role)
        else:
            raise KitUnmet(f"no kit on {plan.anchor_id} holds its labels after {MAX_SWAPS} tries: {why}",
                           file=cat.path, field="kit")
        found = kit_record(cat, kit.id)
        if found is not None:
            return dict(found, new=False)
        for m in plan.members:
            if m.transform and not cat.has_loop(m.loop_id):
                commit(cat, prepared[m.loop_id])
        write_kit(kit, folder_parent)
        try:
            catalogue_kit(cat, kit, folder_parent)
        except BaseException:
            import shutil

            shutil.rmtree(folder_parent / kit.name, ignore_errors=True)  # no folder without its row
            raise
        return dict(kit_record(cat, kit.id), new=True)


def _member_audio(cat, m: Member, prepared: dict):
    """``(row with chords, float32 audio, machine-check reason)`` of the loop a member plays;
    a permutation not yet catalogued is computed in memory (kept in ``prepared`` by id)."""
    from farm.catalog import read_loop_audio
    from farm.permute.on_demand import prepare

    if m.transform and not cat.has_loop(m.loop_id):
        if m.loop_id not in prepared:
            prepared[m.loop_id] = prepare(cat, m.source["id"], m.transform["operation"], m.transform["params"])
        p = prepared[m.loop_id]
        return p.row(), p.audio, p.reject_reason
    row = next(cat.db.query("SELECT * FROM loops WHERE id = ?", [m.loop_id]))
    row["chords"] = cat.loop_chords(m.loop_id)
    audio, _sr = read_loop_audio(cat.root / row["path"], row["sha256"])
    return row, audio, row["reject_reason"] if row["status"] == "rejected" else None
