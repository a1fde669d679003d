"""backprop: a YAML-driven neural-network trainer with a from-scratch NumPy engine.

In Python (a notebook): `import backprop_cli as bp`, then `bp.train`, `bp.load`, `bp.sweep_lr`,
`bp.runs` (see `backprop_cli.api`). Importing the package loads none of them:
the command line starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command's first import: nothing more than it needs (see launch)
    from typing import Any

__version__ = "0.1.0"

__all__ = ["Run", "Study", "load", "runs", "sweep_lr", "train"]


def _progress(epochs: int, start: int, label: str) -> Any:
    """The command line's progress display (Rich: a live bar at a terminal, lines elsewhere,
    which Jupyter shows as output)."""
    from backprop_cli.cli.display import Reporter

    return Reporter(epochs, start, label=label)


def train(config: Any, progress: bool = True, **kwargs: Any) -> Any:
    """Train a config (a path or a dict; keyword overrides as `--set` does) and return its
    Run. `progress=False` shows nothing. See `backprop_cli.api.train`."""
    from backprop_cli import api

    return api.train(config, progress=_progress if progress else None, **kwargs)


def sweep_lr(config: Any, rates: Any = None, progress: bool = True, **kwargs: Any) -> Any:
    """One model per learning rate, batched; returns the Study. See `backprop_cli.api.sweep_lr`."""
    from backprop_cli import api

    return api.sweep_lr(config, rates, progress=_progress if progress else None, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("Run", "Study", "load", "runs"):
        from backprop_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'backprop_cli' has no attribute {name!r}")
