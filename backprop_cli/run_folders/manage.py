"""Removing run and study folders: only folders backprop wrote, never one still training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

from backprop_cli.errors import RunError, RunNotFoundError
from backprop_cli.run_folders.read import list_runs, read_summary, status_of

STATUSES = ("completed", "diverged", "interrupted", "failed", "running", "stale", "corrupt", "unknown")


def check_removable(path: Path) -> None:
    """Refuse a folder that is not a run or study folder (a typo must never delete a user's
    folder) or that is still training."""
    if not path.exists():
        raise RunNotFoundError(f"{path}: no such run folder")
    if path.is_symlink() or not path.is_dir():
        raise RunNotFoundError(f"{path}: not a run folder (a {'symbolic link' if path.is_symlink() else 'file'})")
    if not (path / "config.yaml").exists() and not (path / "summary.json").exists():
        raise RunNotFoundError(f"{path}: not a run or study folder (no config.yaml or summary.json); nothing removed")
    try:
        summary = read_summary(path)
    except (RunError, RunNotFoundError):
        return  # a corrupt folder may go
    if status_of(summary) == "running":
        raise RunError(f"{path}: still training (pid {summary.get('pid')} on {summary.get('host')}); stop it first")


def remove(path: Path) -> None:
    """Delete a checked run or study folder: renamed out of the listing at once, then removed."""
    gone = path.with_name(f".{path.name}.removing-{os.getpid()}")
    os.rename(path, gone)
    shutil.rmtree(gone)


def matching(root: Path, statuses: Sequence[str] = (), name: Optional[str] = None) -> list[Path]:
    """The run and study folders under `root` with one of `statuses` (all when empty) whose
    name contains `name`, newest first."""
    from fnmatch import fnmatch

    found = []
    for path, summary in list_runs(root, studies=True):
        if statuses and status_of(summary) not in statuses:
            continue
        if name and not (name in path.name or fnmatch(path.name, name)):
            continue
        found.append(path)
    return found
