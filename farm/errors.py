"""One error type the CLI turns into one clear line and exit code 2."""
from __future__ import annotations

from pathlib import Path


class FarmError(Exception):
    """Bad input or a failed stage, said in one line: ``<file>: <field>: <message>``.

    ``file`` is the file at fault (a TOML, a MIDI, a WAV, the catalog ...); ``field`` the key,
    table or part inside it. Either may be omitted when it does not apply.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        super().__init__(self.line())

    def line(self) -> str:
        where = ": ".join(x for x in (self.file, self.field) if x)
        return f"{where}: {self.message}" if where else self.message


def closest(name: str, known) -> str | None:
    """The known name closest to a mistyped ``name`` (case and spelling), or None when none is close."""
    import difflib

    known = list(known)
    lowered = {k.lower(): k for k in known}
    text = str(name).lower()
    starts = [k for k in lowered if text and (k.startswith(text) or text.startswith(k))]
    if len(starts) == 1:  # "lofi" -> "lofi-hiphop"
        return lowered[starts[0]]
    match = difflib.get_close_matches(text, list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def unknown_name(kind: str, name, known) -> str:
    """``unknown style 'lofi'; did you mean 'lofi-hiphop'? (known: ...)``: the message for a name
    that is not one of ``known``, suggesting the closest."""
    known = list(known)
    guess = closest(name, known)
    hint = f"; did you mean {guess!r}?" if guess else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(known) or 'none'})"
