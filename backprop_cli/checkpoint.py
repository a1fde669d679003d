"""What continuing one model's training exactly needs, besides its config: a checkpoint.

Training K models leaves, for each model, its weights after the last finished epoch, the
optimizer's state (momentum's v, rmsprop's s, adam's m, v and step count t), the minibatch
stream's state, early stopping's state and the epoch count. `train(..., resume=...)` puts
them back, so 100 epochs and then 100 more give, bit for bit, what 200 straight give.

A checkpoint is plain data: `arrays()` (NumPy arrays, saved with `allow_pickle=False`) and
`meta()` (JSON-ready values); `from_saved` rebuilds it from the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

FORMAT = 1  # the layout of checkpoint.json and checkpoint.npz


@dataclass
class EarlyState:
    """Early stopping's state for one model: the best monitored value, its epoch, epochs
    waited since, and with restore_best the weights that best epoch started from."""

    best: Optional[float]  # None: nothing measured yet
    best_epoch: int
    wait: int
    best_theta: Optional[np.ndarray] = None


@dataclass
class Checkpoint:
    """One model's training state after `epoch` epochs (counted from the run's first)."""

    epoch: int
    theta: np.ndarray  # (P,) the weights after the last epoch's update (before restore_best)
    optimizer: str
    step: int  # the optimizer's step count (adam's t)
    moments: dict[str, np.ndarray] = field(default_factory=dict)  # optimizer state, each (P,)
    batch_order: Optional[dict] = None  # the minibatch stream's bit generator state
    dropout_order: Optional[dict] = None  # the dropout masks' stream's state
    early: Optional[EarlyState] = None
    monitor: Optional[str] = None  # the early-stopping column `early` watched

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays, by the names they are saved under."""
        found = {"theta": self.theta, **{f"optimizer.{k}": v for k, v in self.moments.items()}}
        if self.early is not None and self.early.best_theta is not None:
            found["early_stopping.best_theta"] = self.early.best_theta
        return found

    def meta(self) -> dict[str, Any]:
        """The rest, JSON-ready."""
        early = None
        if self.early is not None:
            early = {
                "monitor": self.monitor,
                "best": None if self.early.best is None else _finite(self.early.best),
                "best_epoch": self.early.best_epoch,
                "wait": self.early.wait,
            }
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "optimizer": self.optimizer,
            "step": self.step,
            "batch_order": self.batch_order,
            "dropout_order": self.dropout_order,
            "early_stopping": early,
        }

    @classmethod
    def from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Checkpoint:
        """A checkpoint from `meta()` and `arrays()` as saved (KeyError, TypeError or
        ValueError if they are not)."""
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        moments = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("optimizer.")}
        early, monitor = None, None
        es = meta.get("early_stopping")
        if es is not None:
            best = es["best"]
            if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
                raise ValueError(f"early_stopping.best: {best!r} is not a number")
            early = EarlyState(
                float(best) if best is not None else None,
                _count(es["best_epoch"], "early_stopping.best_epoch", 2**31),
                _count(es["wait"], "early_stopping.wait", 2**31),
                arrays.get("early_stopping.best_theta"),
            )
            monitor = str(es["monitor"])
        order, masks = meta.get("batch_order"), meta.get("dropout_order")
        if order is not None:
            _check_order(order, "batch_order")
        if masks is not None:
            _check_order(masks, "dropout_order")
        return cls(
            epoch=_count(meta["epoch"], "epoch", 2**31),
            theta=arrays["theta"],
            optimizer=str(meta["optimizer"]),
            step=_count(meta["step"], "step", 2**53),
            moments=moments,
            batch_order=order,
            dropout_order=masks,
            early=early,
            monitor=monitor,
        )


def _finite(x: float) -> Optional[float]:
    """inf (nothing seen yet) and NaN are not JSON: None."""
    return float(x) if np.isfinite(x) else None


def _count(value: object, name: str, limit: int) -> int:
    """A whole number in [0, limit) from JSON (not a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"{name}: {value!r:.40} is not a count (a whole number from 0)")
    return value


def _check_order(order: object, name: str) -> None:
    """A PCG64 bit generator's state, as NumPy's `bit_generator.state` gives it."""
    if not isinstance(order, dict) or order.get("bit_generator") != "PCG64":
        raise ValueError(f"{name}: not the state of a PCG64 generator")
    state = order.get("state")
    if not isinstance(state, dict):
        raise ValueError(f"{name}.state: not an object")
    for key in ("state", "inc"):
        _count(state.get(key), f"{name}.state.{key}", 2**128)
    _count(order.get("has_uint32"), f"{name}.has_uint32", 2)
    _count(order.get("uinteger"), f"{name}.uinteger", 2**32)
