"""Removing run and study folders: only folders backprop wrote, never one still training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

from backprop_cli.errors import RunError, RunNotFoundError
from backprop_cli.run_folders.read import list_runs, read_summary, status_of

STATUSES = ("completed", "diverged", "interrupted", "failed", "running", "stale", "corrupt", "unknown")


# what backprop writes into a run or study folder: anything else there (a user's notes, code,
# a nested runs folder) means the folder is not only backprop's, and it is not removed
WRITTEN_SUFFIXES = {
    ".png",
    ".gif",
    ".json",
    ".csv",
    ".npz",
    ".npy",
    ".html",
    ".onnx",
    ".safetensors",
    ".parquet",
    ".db",
}
WRITTEN_NAMES = {"config.yaml", "store"}


def _foreign(folder: Path, depth: int = 0) -> Optional[Path]:
    """The first entry of `folder` that backprop would not have written (None: none)."""
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):  # a lock or a temporary file of an atomic write
            continue
        if entry.is_symlink():
            return entry
        if entry.is_dir():
            is_run = (entry / "config.yaml").exists() or (entry / "summary.json").exists()
            if entry.name == "store" or (is_run and depth == 0):  # a study's store, its run folders
                inner = _foreign(entry, depth + 1)
                if inner is not None:
                    return inner
                continue
            return entry
        if entry.name not in WRITTEN_NAMES and entry.suffix not in WRITTEN_SUFFIXES:
            return entry
    return None


def check_removable(path: Path) -> Path:
    """The folder to remove (resolved), once it is certain backprop wrote it and nothing else is
    in it (a typo must never delete a user's folder), and it is not still training."""
    if not path.exists():
        raise RunNotFoundError(f"{path}: no such run folder")
    if path.is_symlink() or not path.is_dir():
        raise RunNotFoundError(f"{path}: not a run folder (a {'symbolic link' if path.is_symlink() else 'file'})")
    real = path.resolve()
    here = Path.cwd().resolve()
    if real == here or real in here.parents:
        raise RunNotFoundError(f"{path}: the current folder (or one that holds it); nothing removed")
    try:
        summary = read_summary(real)
    except (RunError, RunNotFoundError):
        raise RunNotFoundError(
            f"{path}: not a run or study folder backprop wrote (no readable summary.json); nothing removed"
        ) from None
    if "versions" not in summary and "kind" not in summary:
        raise RunNotFoundError(f"{path}: its summary.json was not written by backprop; nothing removed")
    foreign = _foreign(real)
    if foreign is not None:
        raise RunNotFoundError(
            f"{path}: holds {foreign.relative_to(real)}, which backprop did not write; nothing removed"
        )
    if status_of(summary) == "running":
        raise RunError(f"{path}: still training (pid {summary.get('pid')} on {summary.get('host')}); stop it first")
    return real


def remove(path: Path) -> None:
    """Delete a checked run or study folder: renamed out of the listing at once, then removed."""
    gone = path.with_name(f".{path.name}.removing-{os.getpid()}")
    os.rename(path, gone)
    shutil.rmtree(gone)


def matching(root: Path, statuses: Sequence[str] = (), name: Optional[str] = None) -> list[tuple[Path, dict]]:
    """The run and study folders under `root`, with their summaries, newest first: those with
    one of `statuses` (all when empty) whose name contains `name` or matches it as a glob."""
    from fnmatch import fnmatch

    return [
        (path, summary)
        for path, summary in list_runs(root, studies=True)
        if (not statuses or status_of(summary) in statuses)
        and (not name or name in path.name or fnmatch(path.name, name))
    ]
