"""``farm match``: the catalogued loops that fit a loop, best first, each with why.

A candidate has the query's meter and bar count, is not rejected, and plays at the query's key
and tempo either as it is or after one permutation of a rendered loop that exists or can be made:
a transposition of up to ``MAX_SEMITONES`` (``pitch``) or a tempo change of up to ``MAX_BPM_CHANGE``
(``stretch``). Scores are :mod:`farm.match.fit`'s. The SQL picks the candidates with their chords
and packed fingerprints (``loops.fp_packed``); harmony is scored once per distinct progression,
rhythm and spectrum for all candidates at once in numpy; only the top ``limit`` are explained.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from farm.errors import FarmError
from farm.match.fit import UNSCORED, WEIGHTS, Bar, Fit, best_transposition, locks, mask, same_chords

MAX_SEMITONES = 2
MAX_BPM_CHANGE = 5.0
_SAME_BPM = 1e-6

# The columns a candidate needs; its chords as "[pcs]|bass;..." bar by bar, its band energies.
_COLUMNS = ("id, name, part, role, patch, key, key_tonic, key_mode, bpm, meter, bars, operation, status, progression, "
            "style, sample_rate, lufs, parent_id, {harmony} AS harmony, "
            "json_extract(fingerprint, '$.energy') AS energy")


def harmony_column(cat) -> str:
    """``loops.harmony``; in a catalog of schema 4 read before any write open has added it, the
    subquery it is a copy of."""
    from farm.catalog.rows import HARMONY_SQL

    have = {r[1] for r in cat.conn.execute("PRAGMA table_info(loops)")}
    return "harmony" if "harmony" in have else HARMONY_SQL


@dataclass
class Match:
    """One loop that fits: its labels, its ``fit`` and the permutation it takes (``transform``:
    ``{"operation", "params", "id"}`` of a permutation to make, or None when it plays as it is)."""

    id: str
    name: str
    part: str
    role: str
    patch: str
    key: str
    bpm: float
    operation: str
    fit: Fit
    transform: dict | None = None
    row: dict | None = field(default=None, repr=False)  # the candidate's columns, chords included

    @property
    def score(self) -> float:
        return self.fit.score

    def to_dict(self) -> dict:
        fit = asdict(self.fit)
        return {"id": self.id, "name": self.name, "part": self.part, "role": self.role, "patch": self.patch,
                "key": self.key, "bpm": self.bpm, "operation": self.operation, "score": round(self.score, 4),
                "lufs": self.row.get("lufs") if self.row else None,
                "harmony": _round(fit["harmony"]), "rhythm": _round(fit["rhythm"]),
                "spectrum": _round(fit["spectrum"]), "semitones": fit["semitones"], "play_bpm": fit["bpm"],
                "transform": self.transform, "why": fit["why"]}


def _round(x):
    return None if x is None else round(x, 4)


@dataclass
class Query:
    """The loop matched against: its row fields, bars, key scale mask and fingerprint, and the
    catalog's SQL for a loop's chords (:func:`harmony_column`)."""

    row: dict
    bars: tuple[Bar, ...]
    scale: int
    onsets: np.ndarray | None
    energy: np.ndarray | None
    harmony_sql: str = "harmony"


@lru_cache(maxsize=65536)
def parse_bars(text: str | None) -> tuple[Bar, ...]:
    """The bars of a candidate's ``harmony`` column ("[9, 0, 4]|9;[2, 5, 9]|2")."""
    if not text:
        return ()
    out = []
    for item in text.split(";"):
        pcs, bass = item.split("|")
        out.append(Bar(mask(json.loads(pcs)), int(bass)))
    return tuple(out)


# The scale of each mode in semitones from its tonic (what ``farm.theory.scale_pcs`` spells through
# music21, kept here so that a match does not load music21).
MODE_STEPS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
              "harmonic_minor": (0, 2, 3, 5, 7, 8, 11), "dorian": (0, 2, 3, 5, 7, 9, 10)}


def scale_mask(tonic: str, mode: str) -> int:
    """The key's scale as a 12-bit mask of pitch classes."""
    from farm.model import note_name_to_pc

    return mask((note_name_to_pc(tonic) + step) % 12 for step in MODE_STEPS[mode])


def load_query(cat, loop_id: str) -> Query:
    (loop_id,) = cat.resolve_ids([loop_id])
    from farm.fingerprint import unpack

    harmony = harmony_column(cat)
    row = next(cat.query(f"SELECT {_COLUMNS.format(harmony=harmony)}, fp_packed FROM loops WHERE id = ?", [loop_id]))
    onsets, energy = unpack(row["fp_packed"]) if row["fp_packed"] else (None, None)
    return Query(row, parse_bars(row["harmony"]), scale_mask(row["key_tonic"], row["key_mode"]), onsets, energy,
                 harmony)


def find_matches(cat, loop_id: str, *, role: str | None = None, limit: int = 10,
                 exclude: set[str] | None = None, style: str | None = None) -> list[Match]:
    """The best ``limit`` loops of an open catalog that fit ``loop_id`` (see :func:`match`);
    ``exclude``: loop ids left out; ``style``: only loops of this style."""
    query = load_query(cat, loop_id)
    return rank(cat, query, candidates(cat, query, role, exclude or set(), style), limit)


def match(catalog_root: str | Path, loop_id: str, *, role: str | None = None, limit: int = 10) -> list[Match]:
    """``farm match``: the catalogued loops that fit ``loop_id`` (an id or a unique prefix), best first.

    ``role``: only loops of this part or patch role (chords, bass, arp, melody, drums, pad, keys,
    lead); without it, every part but the loop's own. FarmError (one line) for an unknown loop, a
    role no loop has, or no candidate at all.
    """
    from farm.catalog import Catalog

    if not isinstance(limit, int) or limit < 1:
        raise FarmError(f"must be a whole number of at least 1, got {limit!r}", field="limit")
    with Catalog(catalog_root, readonly=True) as cat:
        found = find_matches(cat, loop_id, role=role, limit=limit)
        if not found:
            raise FarmError(_none_found(cat, loop_id, role), file=cat.path, field="role" if role else "loop")
        return found


def _none_found(cat, loop_id: str, role: str | None) -> str:
    if role and not cat.conn.execute("SELECT 1 FROM loops WHERE part = ? OR role = ? LIMIT 1", [role, role]).fetchone():
        return f"no catalogued loop has the part or role {role!r}"
    row = cat.loop(loop_id)
    what = f"{role} loop" if role else "loop of another part"
    return (f"no {what} fits {row['id']}: none is {row['bars']} bars of {row['meter']} within "
            f"{MAX_BPM_CHANGE:g} BPM of {row['bpm']:g} and reachable in key {row['key']} (not rejected)")


def candidates(cat, query: Query, role: str | None, exclude: set[str],
               style: str | None = None) -> "Candidates":
    """Every candidate with its three scores (numpy arrays, one entry per candidate)."""
    q = query.row
    where = ["meter = ?", "bars = ?", "sample_rate = ?", "bpm BETWEEN ? AND ?", "status != 'rejected'", "id != ?",
             "(operation = 'render' OR abs(bpm - ?) < ?)"]
    params = [q["meter"], q["bars"], q["sample_rate"], q["bpm"] - MAX_BPM_CHANGE - _SAME_BPM,
              q["bpm"] + MAX_BPM_CHANGE + _SAME_BPM, q["id"], q["bpm"], _SAME_BPM]
    if style:
        where.append("style = ?")
        params.append(style)
    if role:
        where.append("(part = ? OR role = ?)")
        params += [role, role]
    else:
        where.append("part != ?")
        params.append(q["part"])
    cursor = cat.conn.execute(
        f"SELECT id, part, operation, bpm, parent_id, params, fp_packed, {query.harmony_sql} "
        f"FROM loops WHERE {' AND '.join(where)}", params)  # in index order: rank() orders by score, then id
    rows = [r for r in cursor if r[0] not in exclude] if exclude else cursor.fetchall()
    if not rows:
        return Candidates([], [], np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=bool))
    ids, parts, operations, bpms, parents, op_params, packed, chords = (list(c) for c in zip(*rows))
    moved = (np.abs(np.asarray(bpms, dtype=np.float64) - q["bpm"]) > _SAME_BPM).tolist()
    # Harmony is scored once per distinct (progression, may transpose) and shared by every loop
    # that has it: a catalog has few progressions and many loops of each.
    q_drums = q["part"] == "drums" or not query.bars
    shifts_all = tuple(range(-MAX_SEMITONES, MAX_SEMITONES + 1))
    memo: dict[tuple, tuple[int, float] | None] = {}

    def fit(key: tuple) -> tuple[int, float] | None:  # (semitones, harmony); None: a different length
        if key not in memo:
            is_drums, text, fixed = key
            bars = parse_bars(text)
            if is_drums or not bars or q_drums:
                memo[key] = (0, float("nan"))
            elif len(bars) != len(query.bars):
                memo[key] = None
            else:
                memo[key] = best_transposition(query.bars, bars, query.scale, (0,) if fixed else shifts_all)
        return memo[key]

    fits = [fit((part == "drums", text, m or op != "render"))
            for part, text, m, op in zip(parts, chords, moved, operations)]
    keep = [i for i, f in enumerate(fits) if f is not None]
    if len(keep) < len(rows):
        ids, parts, operations, parents, op_params, packed, moved, fits = (
            [col[i] for i in keep] for col in (ids, parts, operations, parents, op_params, packed, moved, fits))
    perms = {(parents[i], op, _param(op, op_params[i])): i for i, op in enumerate(operations)
             if op in ("pitch", "stretch") and not moved[i]}
    semitones = [f[0] for f in fits]
    harmony = [f[1] for f in fits]
    retempo = moved
    found = Candidates(ids, parts, np.asarray(harmony), np.asarray(semitones, dtype=int), np.asarray(retempo, dtype=bool))
    found.score_prints(query, packed)
    found.drop_duplicate_sounds(cat, query, perms)
    return found


def _param(operation: str, text: str | None):
    """The value a pitch (semitones) or stretch (bpm, to 3 decimals) permutation's params hold."""
    value = json.loads(text or "{}").get("semitones" if operation == "pitch" else "bpm")
    return int(value) if operation == "pitch" else round(float(value), 3)


class Candidates:
    """Candidates as parallel arrays: ids, parts, harmony (NaN: not scored), the semitones each
    needs, whether it needs a new tempo; ``rhythm`` and ``spectrum`` (NaN: no fingerprint)."""

    def __init__(self, ids, parts, harmony, semitones, retempo):
        self.ids, self.parts = ids, parts
        self.harmony, self.semitones, self.retempo = harmony, semitones, retempo
        self.rhythm = np.full(len(ids), np.nan)
        self.spectrum = np.full(len(ids), np.nan)
        self.keep = np.ones(len(ids), dtype=bool)
        self.exists: dict[int, bool] = {}  # candidate index -> its transform is catalogued

    def score_prints(self, query: Query, packed: list) -> None:
        """Rhythm and spectrum of every candidate with a fingerprint on the query's grid, at once."""
        if query.onsets is None:
            return
        size = 14 + query.onsets.size
        rows = [i for i, b in enumerate(packed) if b is not None and len(b) == size]
        if not rows:
            return
        raw = np.frombuffer(b"".join(packed[i] for i in rows), dtype=np.uint8).reshape(len(rows), size)
        energy = raw[:, 2:14].copy().view("<f4").astype(np.float64)
        # Onsets are bytes (0-255 for 0-1): dot products and norms of the bytes are exact integers,
        # and a cosine does not see the /255.
        onsets = raw[:, 14:].reshape(len(rows), 3, -1).astype(np.int64)
        q_onsets = np.rint(query.onsets * 255.0).astype(np.int64)
        q_energy = query.energy.astype(np.float64)
        idx = np.asarray(rows)
        self.spectrum[idx] = 1.0 - np.minimum(energy, q_energy).sum(axis=1)
        low = _cosines(onsets[:, 0], q_onsets[0])
        upper = 1.0 - _cosines(onsets[:, 1] + onsets[:, 2], q_onsets[1] + q_onsets[2])
        lock_of = {part: locks(query.row["part"], part) for part in set(self.parts)}
        lock = np.asarray([lock_of[self.parts[i]] for i in rows])
        self.rhythm[idx] = np.where(lock, low, upper)

    def drop_duplicate_sounds(self, cat, query: Query, perms: dict) -> None:
        """One sound, one entry: a catalogued pitch or stretch permutation is offered as its
        parent's transform (scored from the parent, so a kit does not change once what it made
        exists); one that was rejected is not offered again."""
        q = query.row
        rejected = {(p, op, _param(op, params)) for p, op, params in cat.conn.execute(
            "SELECT parent_id, operation, params FROM loops WHERE operation IN ('pitch', 'stretch') AND "
            "status = 'rejected' AND bpm BETWEEN ? AND ? AND meter = ? AND bars = ?",  # a range: indexed
            [q["bpm"] - _SAME_BPM, q["bpm"] + _SAME_BPM, q["meter"], q["bars"]])}
        # Only a candidate named by a rejected or a catalogued permutation can change: look those up.
        index = {loop_id: i for i, loop_id in enumerate(self.ids)}

        def wants(key: tuple) -> int | None:  # the candidate whose offer is exactly ``key``
            i = index.get(key[0])
            offer = None if i is None else self.offer(i, q["bpm"])
            return i if offer is not None and (offer[0], next(iter(offer[1].values()))) == key[1:] else None

        for key in rejected:
            i = wants(key)
            if i is not None:
                self.keep[i] = False
        for key, j in perms.items():
            i = wants(key)
            if i is not None and key not in rejected:
                self.keep[j] = False  # offered by its parent
                self.exists[i] = True

    def offer(self, i: int, bpm: float) -> tuple[str, dict] | None:
        """The permutation candidate ``i`` needs: ``(operation, params)``, or None."""
        if self.semitones[i]:
            return "pitch", {"semitones": int(self.semitones[i])}
        if self.retempo[i]:
            return "stretch", {"bpm": round(bpm, 3)}
        return None

    def scores(self) -> np.ndarray:
        """``Fit.score`` of every candidate (harmony left out for drums; unmeasured counts 0.5)."""
        h = np.where(np.isnan(self.harmony), 0.0, self.harmony)
        r = np.where(np.isnan(self.rhythm), UNSCORED, self.rhythm)
        s = np.where(np.isnan(self.spectrum), UNSCORED, self.spectrum)
        with_h = WEIGHTS["harmony"] * h + WEIGHTS["rhythm"] * r + WEIGHTS["spectrum"] * s
        without = (WEIGHTS["rhythm"] * r + WEIGHTS["spectrum"] * s) / (WEIGHTS["rhythm"] + WEIGHTS["spectrum"])
        return np.where(np.isnan(self.harmony), without, with_h)


def _cosines(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Cosine of each of ``rows`` (integers) with ``vector``, clipped to 0-1 (0 for a silent row)."""
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.int64) * float(np.dot(vector, vector)))
    dots = (rows @ vector).astype(np.float64)
    return np.clip(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0), 0.0, 1.0)


def rank(cat, query: Query, found: Candidates, limit: int) -> list[Match]:
    """The top ``limit`` candidates by score (ties by id), as Matches with their reasons."""
    from farm.model import Key, canonical_json, content_id

    scores = found.scores()
    kept = np.flatnonzero(found.keep)
    if kept.size > limit:  # only those that can make the top: rounding moves a score by under 1e-12
        floor = np.partition(scores[kept], kept.size - limit)[kept.size - limit]
        kept = kept[scores[kept] >= floor - 1e-9]
    order = sorted(kept, key=lambda i: (-round(float(scores[i]), 12), found.ids[i]))[:limit]
    out = []
    columns = _COLUMNS.format(harmony=query.harmony_sql)
    for i in order:
        row = next(cat.query(f"SELECT {columns} FROM loops WHERE id = ?", [found.ids[i]]))
        nan = lambda x: None if np.isnan(x) else float(x)  # noqa: E731
        fit = Fit(nan(found.harmony[i]), nan(found.rhythm[i]), nan(found.spectrum[i]), int(found.semitones[i]),
                  round(query.row["bpm"], 3))
        offer = found.offer(i, query.row["bpm"])
        if offer is not None:
            # the permutation's id, as farm.permute.derived_id makes it (without loading the permute stage)
            row["transform"] = {"operation": offer[0], "params": offer[1],
                                "id": content_id(row["id"], offer[0], canonical_json(offer[1])),
                                "exists": found.exists.get(i, False)}
        fit.why = explain(query, row, fit)
        key = row["key"]
        if fit.semitones:
            key = Key(row["key_tonic"], row["key_mode"]).transposed(fit.semitones).short
        out.append(Match(row["id"], row["name"], row["part"], row["role"], row["patch"], key, fit.bpm,
                         row["operation"], fit, row.get("transform"), row))
    return out


def explain(query: Query, row: dict, fit: Fit) -> list[str]:
    """One line per score and for the permutation it takes, as a person reads them."""
    q = query.row
    out = []
    if fit.harmony is None:
        out.append("harmony: not scored (drums have no chords)")
    else:
        bars = parse_bars(row["harmony"])
        same = sum(1 for a, b in zip(query.bars, bars) if a.tones == ((b.tones << (fit.semitones % 12)) | (
            b.tones >> (12 - fit.semitones % 12))) & 0xFFF)
        what = ("the same chords in every bar" if same == len(bars) else
                f"the same chord in {same} of {len(bars)} bars, the others scored by shared tones and key")
        if same == len(bars) and not same_chords(query.bars, bars, fit.semitones):
            what += " (other bass notes)"
        out.append(f"harmony {fit.harmony:.2f}: {what}")
    if fit.rhythm is None:
        out.append("rhythm: not scored (no fingerprint; run `farm fingerprint`)")
    elif locks(q["part"], row["part"]):
        out.append(f"rhythm {fit.rhythm:.2f}: low-band onsets together (bass on the kick)")
    else:
        out.append(f"rhythm {fit.rhythm:.2f}: mid/high onsets apart (1 - overlap of busy steps)")
    if fit.spectrum is None:
        out.append("spectrum: not scored (no fingerprint; run `farm fingerprint`)")
    else:
        out.append(f"spectrum {fit.spectrum:.2f}: 1 - overlap of low/mid/high energy shares")
    transform = row.get("transform")
    if transform and transform["operation"] == "pitch":
        out.append(f"transpose {fit.semitones:+d} semitones: pitch permutation {transform['id']} "
                   f"({'catalogued' if transform['exists'] else 'made on demand'})")
    elif transform:
        out.append(f"stretch {row['bpm']:g} -> {fit.bpm:g} BPM: stretch permutation {transform['id']} "
                   f"({'catalogued' if transform['exists'] else 'made on demand'})")
    elif row["operation"] != "render":
        out.append(f"plays as it is (a {row['operation']} permutation)")
    return out


def weights_line() -> str:
    return ", ".join(f"{k} {v:g}" for k, v in WEIGHTS.items())
