"""File primitives: checked reads, atomic writes (with a directory fsync) and JSON.

Every error names the user's path, never a temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from backprop_cli.errors import BackpropError, RunError


def check_file(path: Path, what: str, error: type[BackpropError]) -> None:
    """Raise `error` naming `what` unless `path` exists and is not a folder."""
    if not path.exists():
        raise error(f"{path}: {what} not found")
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what}")


def read_text(path: Path, what: str, error: type[BackpropError]) -> str:
    """The UTF-8 text of `path`; a missing file, a folder or bad bytes raise `error` naming `what`."""
    check_file(path, what, error)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (UTF-8 expected)") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write text or bytes to `path` via a temporary file in the same folder: fsync, rename,
    then fsync the folder so the rename itself survives a crash."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened (some file systems): the rename stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_json(path: Path, data: dict) -> None:
    """Write `data` as indented JSON, atomically; NaN and infinity are refused."""
    atomic_write(path, json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n")


def read_json(path: Path) -> dict:
    """A JSON object from a run folder's file; anything else raises RunError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise RunError(f"{path}: not a text file (UTF-8 expected)") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read: {e.strerror}") from None
    if not text.strip():
        raise RunError(f"{path}: empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: corrupt JSON (truncated?): {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: corrupt: expected a JSON object")
    return data
