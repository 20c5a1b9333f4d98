"""The review room (``farm review``): hear, judge and approve loops in a browser.

``farm.room.app`` is the web app, ``farm.room.preview`` the key/tempo-locked previews and the
in-context renders it plays, ``static/`` the page (plain JavaScript and CSS, no library).
"""
from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from farm.errors import FarmError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def room_url(host: str, port: int, token: str | None) -> str:
    """The URL a person opens (with the token once, when there is one)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(root: str | Path = "library", *, host: str = "127.0.0.1", port: int = 8000, read_only: bool = False,
          token: str | None = None, reviewer: str | None = None, announce=print) -> None:
    """``farm review``: serve the review room until Ctrl-C (then stop cleanly).

    Bound to loopback it needs no token unless one is given; bound to any other address it
    always needs one, and makes one (printed in the URL) when none is given.
    """
    import uvicorn

    from farm.room.app import make_app

    if not 0 <= port <= 65535:
        raise FarmError(f"{port} is not a TCP port", field="--port")
    catalog = Path(root) / "catalog.db"
    unwritable = catalog.is_file() and not (os.access(root, os.W_OK) and os.access(catalog, os.W_OK))
    if unwritable and not read_only:  # a library on a read-only disk: listen and look only
        read_only = True
        announce(f"{root} cannot be written: serving it read-only")
    if host not in LOOPBACK_HOSTS and not token:
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < 16:
        raise FarmError("is shorter than 16 characters", field="--token")
    app = make_app(root, read_only=read_only, token=token, host=host, port=port, reviewer=reviewer)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sockets = [socket.create_server((host, port), family=family, backlog=config.backlog)]
    except OSError as err:  # the listening socket is made here: its failure is one line, not a log
        reason = str(err.strerror or err).split(" (while")[0]
        raise FarmError(f"cannot listen on {host}:{port}: {reason}", field="--port") from None
    # What uvicorn would import once serving (its protocols, its event loop) is imported before the
    # URL is printed: a Ctrl-C that lands inside an import is swallowed by Python, and one sent
    # right after the URL appeared was lost that way now and then.
    config.load()
    if hasattr(config, "get_loop_factory"):  # uvicorn 0.36 and later
        config.get_loop_factory()
    else:
        config.setup_event_loop()
    bound_port = sockets[0].getsockname()[1]
    if bound_port != port:  # --port 0: the system chose one
        app.hosts |= {h.replace(f":{port}", f":{bound_port}") for h in app.hosts}
    announce(f"review room for {root}{' (read-only)' if read_only else ''}: {room_url(host, bound_port, token)}")
    announce("Ctrl-C stops it")
    try:
        server.run(sockets=sockets)  # uvicorn turns Ctrl-C (SIGINT) and SIGTERM into a clean shutdown
    except KeyboardInterrupt:
        pass
    announce("review room stopped")
