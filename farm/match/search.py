"""``farm match``: the catalogued loops that fit a loop, best first, each with why.

A candidate has the query's meter and bar count, is not rejected, and plays at the query's key
and tempo either as it is or after one permutation of a rendered loop that exists or can be made:
a transposition of up to ``MAX_SEMITONES`` (``pitch``) or a tempo change of up to ``MAX_BPM_CHANGE``
(``stretch``). Scores are :mod:`farm.match.fit`'s. The SQL picks the candidates; harmony is scored
once per distinct progression; fingerprints are read only for the candidates that can still reach
the top ``limit`` (harmony and spectrum are known first, rhythm is at most 1).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from farm.errors import FarmError
from farm.match.fit import WEIGHTS, Bar, Fit, best_transposition, locks, mask, rhythm, same_chords, spectrum

MAX_SEMITONES = 2
MAX_BPM_CHANGE = 5.0
_SAME_BPM = 1e-6
_CHUNK = 256  # fingerprints read at a time

# The columns a candidate needs; its chords as "[pcs]|bass;..." bar by bar, its band energies.
_COLUMNS = ("id, name, part, role, patch, key, key_tonic, key_mode, bpm, meter, bars, operation, status, progression, "
            "style, sample_rate, lufs, parent_id, "
            "(SELECT group_concat(x, ';') FROM (SELECT pitch_classes || '|' || bass_pc AS x FROM chords "
            "WHERE loop_id = loops.id ORDER BY bar)) AS harmony, "
            "json_extract(fingerprint, '$.energy') AS energy")


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
    """The loop matched against: its row fields, bars, key scale mask and fingerprint."""

    row: dict
    bars: tuple[Bar, ...]
    scale: int
    onsets: np.ndarray | None
    energy: np.ndarray | None


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


def load_query(cat, loop_id: str) -> Query:
    from farm.theory import scale_pcs

    (loop_id,) = cat.resolve_ids([loop_id])
    row = next(cat.db.query(f"SELECT {_COLUMNS}, fingerprint FROM loops WHERE id = ?", [loop_id]))
    onsets = energy = None
    if row["fingerprint"]:
        fp = json.loads(row["fingerprint"])
        onsets, energy = np.asarray(fp["onsets"], dtype=np.float32), np.asarray(fp["energy"], dtype=np.float32)
    return Query(row, parse_bars(row["harmony"]), mask(scale_pcs(row["key_tonic"], row["key_mode"])), onsets, energy)


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
    if role and not cat.db.execute("SELECT 1 FROM loops WHERE part = ? OR role = ? LIMIT 1", [role, role]).fetchone():
        return f"no catalogued loop has the part or role {role!r}"
    row = cat.loop(loop_id)
    what = f"{role} loop" if role else "loop of another part"
    return (f"no {what} fits {row['id']}: none is {row['bars']} bars of {row['meter']} within "
            f"{MAX_BPM_CHANGE:g} BPM of {row['bpm']:g} and reachable in key {row['key']} (not rejected)")


def candidates(cat, query: Query, role: str | None, exclude: set[str],
               style: str | None = None) -> list[tuple[dict, Fit]]:
    """Every candidate with its harmony and spectrum scored (rhythm still to come)."""
    q = query.row
    where = ["meter = ?", "bars = ?", "sample_rate = ?", "bpm BETWEEN ? AND ?", "status != 'rejected'", "id != ?",
             "(operation = 'render' OR abs(bpm - ?) < ?)"]
    params = [q["meter"], q["bars"], q["sample_rate"], q["bpm"] - MAX_BPM_CHANGE - _SAME_BPM, q["bpm"] + MAX_BPM_CHANGE + _SAME_BPM,
              q["id"], q["bpm"], _SAME_BPM]
    if style:
        where.append("style = ?")
        params.append(style)
    if role:
        where.append("(part = ? OR role = ?)")
        params += [role, role]
    else:
        where.append("part != ?")
        params.append(q["part"])
    rows = cat.db.execute(f"SELECT {_COLUMNS} FROM loops WHERE {' AND '.join(where)} ORDER BY id", params)
    names = [d[0] for d in rows.description]
    q_drums = q["part"] == "drums" or not query.bars
    out, to_make = [], {}
    harmony_memo: dict[tuple[str, tuple[int, ...]], tuple[int, float]] = {}
    for values in rows:
        row = dict(zip(names, values))
        if row["id"] in exclude:
            continue
        bars = parse_bars(row["harmony"])
        drums = row["part"] == "drums" or not bars
        retempo = abs(row["bpm"] - q["bpm"]) > _SAME_BPM
        shifts = (0,) if drums or retempo or row["operation"] != "render" else tuple(
            range(-MAX_SEMITONES, MAX_SEMITONES + 1))
        semitones, h = 0, None
        if not (drums or q_drums):
            if len(bars) != len(query.bars):
                continue
            memo = (row["harmony"], shifts)
            if memo not in harmony_memo:
                harmony_memo[memo] = best_transposition(query.bars, bars, query.scale, shifts)
            semitones, h = harmony_memo[memo]
        energy = np.asarray(json.loads(row["energy"]), dtype=np.float32) if row["energy"] else None
        s = spectrum(query.energy, energy) if energy is not None and query.energy is not None else None
        fit = Fit(h, None, s, semitones, round(q["bpm"], 3))
        if semitones or retempo:
            op, op_params = ("pitch", {"semitones": semitones}) if semitones else ("stretch", {"bpm": round(q["bpm"], 3)})
            from farm.permute import derived_id

            transform = {"operation": op, "params": op_params, "id": derived_id(row["id"], op, op_params)}
            row["transform"] = transform
            to_make[transform["id"]] = len(out)
        out.append((row, fit))
    # One sound, one entry: a pitch or stretch permutation already catalogued is offered as its
    # parent's transform (scored from the parent, so a kit does not change once the permutation it
    # made exists); one that was rejected is not offered again.
    status = {}
    ids = list(to_make)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        status.update(cat.db.execute(f"SELECT id, status FROM loops WHERE id IN ({','.join('?' * len(chunk))})",
                                     chunk).fetchall())
    kept = []
    for row, fit in out:
        transform = row.get("transform")
        if transform is not None:
            if status.get(transform["id"]) == "rejected":
                continue
            transform["exists"] = transform["id"] in status
        elif row["id"] in to_make:
            continue  # offered by its parent
        kept.append((row, fit))
    return kept


def _upper_bound(fit: Fit) -> float:
    return Fit(fit.harmony, 1.0, fit.spectrum).score


def rank(cat, query: Query, scored: list[tuple[dict, Fit]], limit: int) -> list[Match]:
    """The top ``limit`` by full score; fingerprints read best-first until no other can reach them."""
    order = sorted(scored, key=lambda rf: (-_upper_bound(rf[1]), rf[0]["id"]))
    done: list[tuple[dict, Fit]] = []
    for start in range(0, len(order), _CHUNK):
        chunk = order[start:start + _CHUNK]
        if len(done) >= limit:
            kth = sorted((f.score for _, f in done), reverse=True)[limit - 1]
            if _upper_bound(chunk[0][1]) < kth - 1e-12:
                break
        prints = _onsets(cat, [r["id"] for r, _ in chunk])
        for row, fit in chunk:
            onsets = prints.get(row["id"])
            if onsets is not None and query.onsets is not None and onsets.shape == query.onsets.shape:
                fit.rhythm = rhythm(query.row["part"], query.onsets, row["part"], onsets)
            done.append((row, fit))
    done.sort(key=lambda rf: (-rf[1].score, rf[0]["id"]))
    out = []
    for row, fit in done[:limit]:
        fit.why = explain(query, row, fit)
        key = row["key"]
        if fit.semitones:
            from farm.model import Key
            from farm.permute import transpose_key

            key = transpose_key(Key(row["key_tonic"], row["key_mode"]), fit.semitones).short
        out.append(Match(row["id"], row["name"], row["part"], row["role"], row["patch"], key, fit.bpm,
                         row["operation"], fit, row.get("transform"), row))
    return out


def _onsets(cat, ids: list[str]) -> dict[str, np.ndarray]:
    rows = cat.db.execute(f"SELECT id, json_extract(fingerprint, '$.onsets') FROM loops "
                          f"WHERE id IN ({','.join('?' * len(ids))}) AND fingerprint IS NOT NULL", ids)
    return {i: np.asarray(json.loads(text), dtype=np.float32) for i, text in rows}


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
