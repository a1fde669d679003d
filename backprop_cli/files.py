"""File primitives: checked reads, atomic writes (with a directory fsync) and JSON.

Reads accept regular files only (a FIFO or a device such as /dev/zero would block or never
end) up to a size limit; writes go only to regular files or new paths (never through a
symlink, onto a FIFO or a device), with the permissions of the umask (or of the file they
replace). Every error names the user's path, never a temporary file.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Optional

from backprop_cli.errors import BackpropError, OutputError, RunError

MiB = 2**20
MAX_DEPTH = 100  # levels of nesting a JSON file or a config may hold (the parsers recurse per level)


def _kind(mode: int) -> str:
    """What a non-regular file is, in a word."""
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def check_file(path: Path, what: str, error: type[BackpropError], limit: Optional[int] = None) -> None:
    """Raise `error` naming `what` unless `path` is an existing regular file (symlinks
    followed) of at most `limit` bytes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is a {_kind(st.st_mode)}, not a regular file; give a {what}")
    if limit is not None and st.st_size > limit:
        raise error(f"{path}: {st.st_size / MiB:.1f} MiB, over the {limit / MiB:g} MiB limit for a {what}")


def not_own(path: Path, limit: int) -> Optional[str]:
    """Why `path` is not a regular file of its own folder of at most `limit` bytes (a symbolic
    link, a FIFO or device, too large, missing), in a few words; None when it is one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot read: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"a {_kind(st.st_mode)}, not a regular file"
    if st.st_size > limit:
        return f"{st.st_size / MiB:.1f} MiB, over the {limit / MiB:g} MiB limit"
    return None


def read_text(path: Path, what: str, error: type[BackpropError], limit: Optional[int] = None) -> str:
    """The UTF-8 text of `path`; a missing or special file, one over `limit` bytes, or bad bytes
    raise `error` naming `what`."""
    check_file(path, what, error, limit)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (UTF-8 expected)") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write text or bytes to `path` via a temporary file in the same folder: fsync, rename,
    then fsync the folder so the rename itself survives a crash.

    `path` must be new or a regular file (OutputError otherwise: a rename would replace a
    symlink, FIFO or device node itself). The file gets the mode of the file it replaces, or
    0666 less the umask. An OSError names `path`, never the temporary file.
    """
    path = Path(path)
    mode = stat.S_IMODE(os.lstat(path).st_mode) if _regular_or_new(path) else 0o666 & ~_umask()
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp makes 0600 whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    _fsync_dir(path.parent)


def writable(path: Path) -> None:
    """Refuse, before anything is written, a path atomic_write could not write: one that is
    not a regular file or new (OutputError), or in a folder this process cannot write to."""
    _regular_or_new(path)
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the folder {path.parent} is not writable")


def _regular_or_new(path: Path) -> bool:
    """True for an existing regular file (not through a symlink); False for a new path; an
    OutputError for anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(
            f"{path}: is a {_kind(st.st_mode)}; writing would replace it (give a regular file or a new path)"
        )
    return True


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


RUN_FILE_LIMIT = 256 * MiB

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON `text` nest, found without parsing it (the
    parser recurses once per level: 100,000 levels are a RecursionError); linear in the text."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for bracket in brackets:
        if bracket in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        else:
            depth -= 1
    return deepest


def read_json(path: Path) -> dict:
    """A JSON object from a run folder's file; anything else raises RunError naming the file."""
    if path.exists():
        check_file(path, "run file", RunError, RUN_FILE_LIMIT)
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
    if json_depth(text) > MAX_DEPTH:
        raise RunError(f"{path}: corrupt: nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: corrupt JSON (truncated?): {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: corrupt: expected a JSON object")
    return data
