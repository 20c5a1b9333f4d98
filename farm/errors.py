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
