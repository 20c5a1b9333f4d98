"""Files appear whole or not at all: write to a temporary name beside the target, then rename."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from farm.errors import FarmError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any error the temporary file is removed and ``path`` is untouched. The temporary name
    keeps the target's suffix so libraries that pick a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    # mkstemp makes 0600 files; a finished output gets the user's usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def is_temp_name(name: str) -> bool:
    """Whether a file or folder name is one of ``atomic_path``/``atomic_dir``'s temporary names
    (``.<stem>.<random>.part<suffix>``): a write still under way, or one that was interrupted."""
    return name.startswith(".") and ".part" in name


def check_writable_dir(path: str | Path, field: str) -> None:
    """Create the folder ``path`` if needed and prove a file can be made in it; a FarmError naming
    ``path`` and ``field`` (the option that chose it) otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", suffix=".part"):
            pass
    except OSError as err:
        raise FarmError(f"cannot write here: {err.strerror or err}", file=path, field=field) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it is renamed to ``path``.

    If ``path`` already exists (the same content-addressed output written before) the new copy
    is discarded: content addressing makes the two identical.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    # mkdtemp makes 0700 folders; a finished output gets the user's usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def missing_dirs(path: str | Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet: what writing into it will create."""
    path = Path(path)
    return [d for d in (path, *path.parents) if not d.exists()]


@contextlib.contextmanager
def removed_if_left_empty(folders: Iterable[Path]) -> Iterator[None]:
    """On an error inside, remove those of ``folders`` that are empty (deepest first): a step that
    fails leaves no empty folder it made, and keeps the files it finished."""
    folders = sorted(set(map(Path, folders)), key=lambda d: len(d.parts), reverse=True)
    try:
        yield
    except BaseException:
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only an empty folder goes
        raise


def safe_relative_path(value: str) -> bool:
    """A relative POSIX path that stays inside its folder: no absolute path, no ``..``, no
    backslash or NUL, no empty part."""
    if not isinstance(value, str) or not value or "\\" in value or "\0" in value:
        return False
    parts = value.split("/")
    return not value.startswith("/") and all(p and p not in (".", "..") for p in parts)


def inside(folder: str | Path, rel: str, field: str | None = None) -> Path:
    """``folder / rel``, refused (FarmError naming ``field``) unless ``rel`` is a safe relative
    path whose target, links resolved, stays inside ``folder``: the check before every write to
    a path built from names."""
    folder = Path(folder)
    target = folder / rel
    if not safe_relative_path(rel) or not target.resolve().is_relative_to(folder.resolve()):
        raise FarmError(f"{rel!r} would lead outside {folder}", file=folder, field=field)
    return target


MAX_TOML_BYTES = 1 << 20  # rule sets, patches and batch configs are a few KiB


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict; text that is not UTF-8 or not TOML is a FarmError naming the file.

    A missing file raises ``FileNotFoundError``, for the caller to say what it was looking for.
    """
    import tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise FarmError(f"invalid TOML: {err}", file=path) from None
    if len(text) > MAX_TOML_BYTES:
        raise FarmError(f"is {len(text):,} characters; a Loop Farm TOML is under {MAX_TOML_BYTES:,}", file=path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FarmError(f"invalid TOML: {err}", file=path) from None
    except RecursionError:
        raise FarmError("invalid TOML: nested too deeply", file=path) from None
