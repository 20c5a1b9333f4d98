"""The review room: a Starlette app over one catalog (``farm review``).

A thin layer: each route turns a request into a call of the functions the CLI uses
(``farm.catalog.review`` and ``undo``, ``farm.queue``, ``farm.review.plot_loop``,
``farm.room.preview``) and the result into JSON, audio or a picture. It holds no SQL of its own.

Safety, in order of each request (``Guard``):

* bound to loopback, the ``Host`` header must be a loopback name (a page elsewhere cannot reach
  it by DNS rebinding);
* with a token (always, when bound to anything but loopback) every request carries it: the
  ``farm_token`` cookie the page gets from ``/?token=...``, or an ``X-Farm-Token`` header;
* a write is a POST of JSON with an ``Origin`` that is this server and an ``X-Farm-Review``
  header (a form on another site can send neither); ``--read-only`` serves no write at all;
* audio and pictures are found by loop id in the catalog, never by a path from the request, and
  anything else is a 404.
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from farm.catalog import MACHINE_STATUS_SQL, SCHEMA_VERSION, Catalog, default_reviewer
from farm.catalog import review as review_loops
from farm.catalog import undo as undo_decision
from farm.errors import FarmError
from farm.queue import Filters, matching_ids, queue_counts, queue_page

STATIC = Path(__file__).parent / "static"
# The only files served from disk besides catalogued ones: name -> (file, media type).
STATIC_FILES = {"room.js": ("room.js", "text/javascript"), "room.css": ("room.css", "text/css")}
LOOP_ID = re.compile(r"^[0-9a-f]{16}$")
REJECT_REASONS = ("muddy", "thin", "clicks or pops", "out of tune", "wrong chord", "bleed", "boring", "too loud",
                  "too quiet", "other")
MEDIA_TYPES = {".flac": "audio/flac", ".wav": "audio/wav"}
KIT_FILES = {"mix.wav": "audio/wav", "kit.png": "image/png"}  # the files of a kit folder the room serves
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class Guard:
    """ASGI middleware: host, token, origin and read-only checks before any route runs."""

    def __init__(self, app, *, host: str, port: int, token: str | None, read_only: bool):
        self.app, self.token, self.read_only = app, token, read_only
        # Bound to loopback, only loopback names reach it (a page elsewhere cannot by DNS
        # rebinding). Bound to another address, people use whatever name or address leads there,
        # and the token (required then) is what keeps others out.
        names = set(LOOPBACK) if host in LOOPBACK else set()
        self.hosts = {f"{name}:{port}" for name in names} | ({*names} if port == 80 else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        refusal = self.refuse(request)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if self.token and request.url.path == "/" and request.query_params.get("token") == self.token:
            # The printed URL carries the token once; the page keeps it as a cookie.
            response = Response(status_code=303, headers={"Location": "/"})
            response.set_cookie("farm_token", self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    def refuse(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if self.hosts and host not in self.hosts:
            return PlainTextResponse("unknown host\n", status_code=421)
        if self.token:
            given = (request.headers.get("x-farm-token") or request.cookies.get("farm_token")
                     or request.query_params.get("token") or "")
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                return PlainTextResponse("a token is required: open the URL farm review printed\n", status_code=403)
        if request.method not in ("GET", "HEAD"):
            if self.read_only:
                return PlainTextResponse("this review room is read-only\n", status_code=405)
            origin = request.headers.get("origin")
            if origin != f"http://{host}" or request.headers.get("x-farm-review") != "1":
                return PlainTextResponse("a write must come from the review page itself\n", status_code=403)
        return None


def _error(err: FarmError, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": err.line()}, status_code=status)


def _loop_id(request: Request) -> str:
    loop_id = request.path_params["loop_id"]
    if not LOOP_ID.match(loop_id):
        raise LookupError(loop_id)
    return loop_id


def make_app(root: str | Path = "library", *, read_only: bool = False, token: str | None = None,
             host: str = "127.0.0.1", port: int = 8000, reviewer: str | None = None) -> Guard:
    """The review room over the catalog at ``root``: an ASGI app (uvicorn serves it)."""
    from farm.room import preview

    root = Path(root)
    reviewer = reviewer or default_reviewer()
    # A missing, damaged or foreign catalog is one line before the server starts; a catalog made
    # by an older Loop Farm is brought up to date here (the queue reads the newer columns).
    with Catalog(root, readonly=True) as cat:
        version = cat.db.execute("PRAGMA user_version").fetchone()[0]
    if version < SCHEMA_VERSION:
        if read_only:
            raise FarmError("was made by an older Loop Farm: open it once without --read-only to bring it up "
                            "to date", file=root / "catalog.db")
        Catalog(root, create=False).close()

    def catalog() -> Catalog:
        return Catalog(root, readonly=True, verify=False)  # verified once, above

    def loop_row(cat: Catalog, loop_id: str) -> dict:
        if not cat.has_loop(loop_id):
            raise LookupError(loop_id)
        return cat.loop(loop_id)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def static(request: Request) -> Response:
        entry = STATIC_FILES.get(request.path_params["name"])
        if entry is None:
            raise LookupError(request.path_params["name"])
        return FileResponse(STATIC / entry[0], media_type=entry[1])

    def config(request: Request) -> Response:
        return JSONResponse({"read_only": read_only, "reviewer": reviewer, "reasons": REJECT_REASONS,
                             "catalog": str(root)})

    def queue(request: Request) -> Response:
        filters = Filters.from_query(dict(request.query_params))
        offset, limit = _int(request, "offset", 0), _int(request, "limit", 50)
        with catalog() as cat:
            result = queue_page(cat, filters, offset, limit)
            body = {"loops": result.loops, "total": result.total, "offset": result.offset, "limit": result.limit,
                    "filters": filters.as_dict()}
            if request.query_params.get("counts") != "0":
                body["counts"] = queue_counts(cat, filters)
        return JSONResponse(body)

    def loop_detail(request: Request) -> Response:
        loop_id = _loop_id(request)
        lock = _lock(request)
        with catalog() as cat:
            info = loop_row(cat, loop_id)
            lineage = _lineage(cat, info)
            parts = _template_parts(cat, info)
            machine = cat.db.execute(f"SELECT {MACHINE_STATUS_SQL} FROM loops WHERE id = ?", [loop_id]).fetchone()[0]
        info["machine"] = "rejected" if machine == "rejected" else "passed"
        info["locked"] = preview.locked_labels(info, lock)
        info["lineage"], info["parts"] = lineage, parts
        return JSONResponse(info)

    def audio(request: Request) -> Response:
        loop_id = _loop_id(request)
        lock = _lock(request)
        with catalog() as cat:
            info = loop_row(cat, loop_id)
        path = preview.locked_audio(root, info, lock)
        if not path.is_file():
            raise LookupError(loop_id)
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"))

    def context(request: Request) -> Response:
        """Another part of a loop's template through a patch, at the loop's (or the lock's) key
        and tempo."""
        loop_id = _loop_id(request)
        part, patch = request.path_params["part"], request.path_params["patch"]
        with catalog() as cat:
            info = loop_row(cat, loop_id)
            template = cat.db.execute("SELECT path, key_tonic, key_mode, bpm FROM templates WHERE id = ?",
                                      [info["template_id"]]).fetchone()
        if template is None:
            raise LookupError(loop_id)
        lock = _lock(request)
        rendered = preview.context_audio(root, template[0], info["template_id"], part, patch)
        target = preview.Lock(lock.key or _loop_key(info), lock.bpm or info["bpm"])
        as_row = {"id": f"{info['template_id']}-{part}-{patch}", "part": part, "key_tonic": template[1],
                  "key_mode": template[2], "tonic_pc": _pc(template[1]), "bpm": template[3], "bars": info["bars"],
                  "meter": info["meter"]}
        path = preview.locked_file(root, rendered, as_row, target)
        return FileResponse(path, media_type="audio/wav")

    def matches(request: Request) -> Response:
        """The loops that fit this one (``farm match``), best first."""
        from farm.match import find_matches

        loop_id = _loop_id(request)
        with catalog() as cat:
            loop_row(cat, loop_id)
            found = find_matches(cat, loop_id, limit=max(1, min(_int(request, "limit", 6), 50)))
        return JSONResponse([m.to_dict() for m in found])

    def kits(request: Request) -> Response:
        """Catalogued kits (``farm kits``): all, or those holding ``?loop=ID``."""
        from farm.match import list_kits

        loop = request.query_params.get("loop")
        if loop is not None and not LOOP_ID.match(loop):
            raise FarmError("is not a loop id", field="loop")
        return JSONResponse([_public_kit(k) for k in list_kits(root, loop_id=loop)])

    def kit_file(request: Request) -> Response:
        """A kit's mix or picture, found by the kit's id in the catalog."""
        from farm.match import list_kits

        kit_id, name = request.path_params["kit_id"], request.path_params["name"]
        if not LOOP_ID.match(kit_id) or name not in KIT_FILES:
            raise LookupError(kit_id)
        found = list_kits(root, kit_id=kit_id)
        if not found:
            raise LookupError(kit_id)
        path = Path(found[0]["folder"]) / name
        if not path.is_file():
            raise LookupError(kit_id)
        return FileResponse(path, media_type=KIT_FILES[name])

    async def decide_kit(request: Request) -> Response:
        from farm.catalog import review_kits

        body = await _json(request)
        kit_id = str(body.get("id", ""))
        if not LOOP_ID.match(kit_id):
            raise FarmError("is not a kit id", field="id")
        changed = review_kits(root, [kit_id], status=_decision(body), reason=body.get("reason"), reviewer=reviewer)
        return JSONResponse({"id": kit_id, "status": _decision(body), "changed": list(changed)})

    def plot(request: Request) -> Response:
        from farm.review import plot_loop

        loop_id = _loop_id(request)
        with catalog() as cat:
            loop_row(cat, loop_id)
        return FileResponse(plot_loop(root, loop_id), media_type="image/png")

    async def decide(request: Request) -> Response:
        body = await _json(request)
        loop_id = str(body.get("id", ""))
        if not LOOP_ID.match(loop_id):
            raise FarmError("is not a loop id", field="id")
        status = _decision(body)
        changed = review_loops(root, [loop_id], status=status, reason=body.get("reason"), reviewer=reviewer)
        return JSONResponse({"id": loop_id, "status": status, "changed": list(changed)})

    async def undo(request: Request) -> Response:
        body = await _json(request)
        loop_id = str(body.get("id", ""))
        if not LOOP_ID.match(loop_id):
            raise FarmError("is not a loop id", field="id")
        return JSONResponse(undo_decision(root, loop_id, reviewer))

    async def bulk(request: Request) -> Response:
        """A decision over every loop the filters select; ``expected`` must be the count the
        reviewer confirmed (the queue changed since: nothing is done)."""
        body = await _json(request)
        filters = Filters.from_query(body.get("filters") or {})
        status = _decision(body)
        include = body.get("include_machine_rejected") is True
        count = bulk_count(filters, status, include)
        if body.get("expected") != count["would_decide"]:
            raise FarmError(f"the filtered set holds {count['would_decide']} loops now, not {body.get('expected')}; "
                            "look again and confirm", field="expected")
        condition, params = filters.where()
        with Catalog(root, create=False) as cat:
            result = cat.review(where=condition, params=params, status=status, reason=body.get("reason"),
                                reviewer=reviewer, include_machine_rejected=include)
        return JSONResponse({"status": status, "changed": len(result), "unchanged": result.unchanged,
                             "machine_rejected_left": len(result.machine_rejected)})

    def bulk_count(filters: Filters, status: str, include: bool) -> dict:
        with catalog() as cat:
            ids = matching_ids(cat, filters)
            held = 0
            if status == "approved" and not include:
                condition, params = filters.where()
                held = cat.db.execute(
                    f"SELECT count(*) FROM loops WHERE {condition} AND status = 'rejected' AND "
                    f"{MACHINE_STATUS_SQL} = 'rejected'", params).fetchone()[0]
        return {"matching": len(ids), "machine_rejected_left": held, "would_decide": len(ids) - held}

    def bulk_preview(request: Request) -> Response:
        filters = Filters.from_query(dict(request.query_params))
        status = {"approve": "approved", "reject": "rejected"}.get(request.query_params.get("decision"), "approved")
        return JSONResponse(bulk_count(filters, status, request.query_params.get("include_machine_rejected") == "1"))

    routes = [
        Route("/", page), Route("/static/{name}", static), Route("/api/config", config),
        Route("/api/queue", queue), Route("/api/bulk", bulk_preview), Route("/api/loops/{loop_id}", loop_detail),
        Route("/audio/{loop_id}", audio), Route("/audio/{loop_id}/context/{part}/{patch}", context),
        Route("/plot/{loop_id}.png", plot), Route("/api/loops/{loop_id}/matches", matches),
        Route("/api/kits", kits), Route("/kits/{kit_id}/{name}", kit_file),
    ]
    if not read_only:
        routes += [Route("/api/decide", decide, methods=["POST"]), Route("/api/undo", undo, methods=["POST"]),
                   Route("/api/bulk", bulk, methods=["POST"]), Route("/api/kits/decide", decide_kit, methods=["POST"])]

    async def farm_error(request: Request, err: FarmError) -> Response:
        return _error(err)

    async def not_found(request: Request, err: Exception) -> Response:
        return PlainTextResponse("not found\n", status_code=404)

    app = Starlette(routes=routes, exception_handlers={FarmError: farm_error, LookupError: not_found, 404: not_found})
    return Guard(app, host=host, port=port, token=token, read_only=read_only)


# -- helpers ----------------------------------------------------------------------------------
def _lock(request: Request):
    """The project key and tempo a request asks to preview in (``?key=Am&bpm=120``)."""
    from farm.room.preview import Lock

    return Lock.parse(request.query_params.get("key"), request.query_params.get("bpm"))


def _decision(body: dict) -> str:
    """The catalog status of a write's ``decision`` (approve, reject)."""
    status = {"approve": "approved", "reject": "rejected"}.get(body.get("decision"))
    if status is None:
        raise FarmError("is not approve or reject", field="decision")
    return status


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text in (None, ""):
        return default
    try:
        return int(text)
    except ValueError:
        raise FarmError(f"{text!r} is not a whole number", field=name) from None


async def _json(request: Request) -> dict:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise FarmError("a write is JSON (Content-Type: application/json)", field="content-type")
    body = await request.body()
    if len(body) > 65536:
        raise FarmError("is over 64 KiB", field="body")
    try:
        data = json.loads(body)
    except ValueError:
        raise FarmError("is not JSON", field="body") from None
    if not isinstance(data, dict):
        raise FarmError("is not a JSON object", field="body")
    return data


def _pc(tonic: str) -> int:
    from farm.model import note_name_to_pc

    return note_name_to_pc(tonic)


def _loop_key(info: dict):
    from farm.model import Key

    return Key(info["key_tonic"], info["key_mode"])


def _public_kit(record: dict) -> dict:
    """A kit record as the page gets it: no file system paths."""
    return {k: v for k, v in record.items() if k not in ("folder", "path")}


def _lineage(cat: Catalog, info: dict) -> dict:
    """The loop's parent, its siblings (the parent's other children) and its own children."""
    def rows(sql: str, params) -> list[dict]:
        return [dict(r) for r in cat.db.query(
            f"SELECT id, name, operation, params, key, bpm, status FROM loops WHERE {sql} ORDER BY operation, id",
            params)]

    parent = rows("id = ?", [info["parent_id"]]) if info["parent_id"] else []
    siblings = rows("parent_id = ? AND id != ?", [info["parent_id"], info["id"]]) if info["parent_id"] else []
    return {"parent": parent[0] if parent else None, "siblings": siblings,
            "children": rows("parent_id = ?", [info["id"]])}


def _template_parts(cat: Catalog, info: dict) -> list[dict]:
    """The template's other parts: for each, the catalogued renders of it (loop id, patch,
    loudness) and every patch that can play it (rendered on demand)."""
    from farm.patches import patches_for_part

    if not info["template_id"]:
        return []
    row = cat.db.execute("SELECT parts FROM templates WHERE id = ?", [info["template_id"]]).fetchone()
    names = json.loads(row[0]) if row else []
    out = []
    for part in names:
        if part == info["part"]:
            continue
        # one catalogued render per patch: an approved one when there is one
        renders = [dict(r) for r in cat.db.query(
            "SELECT id, patch, lufs, status FROM (SELECT id, patch, lufs, status, row_number() OVER (PARTITION BY "
            "patch ORDER BY status = 'approved' DESC, status = 'pending' DESC, id) AS n FROM loops "
            "WHERE template_id = ? AND part = ? AND operation = 'render') WHERE n = 1 ORDER BY patch",
            [info["template_id"], part])]
        patches = [{"name": p.name, "target_lufs": p.target_lufs} for p in patches_for_part(part)]
        out.append({"part": part, "renders": renders, "patches": patches})
    return out
