"""What happens around each epoch of the K models, kept out of the loop's hot path.

`History` records each epoch's loss and metrics (growing by doubling, so memory follows the
epochs actually run). The stopping policies each have one per-epoch method over the K models,
the way Keras keeps EarlyStopping and TerminateOnNaN out of `fit`: `Divergence` (always on),
`EarlyStopping` and `StopAtLoss` (only when configured, so a plain run does not pay for them).
A policy stops a model through `Models.stop`, which freezes its weights while the rest train on.
"""

from __future__ import annotations

import math
import signal
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np

from backprop_cli.checkpoint import EarlyState
from backprop_cli.losses import Loss
from backprop_cli.metrics import Metrics
from backprop_cli.network import Network

if TYPE_CHECKING:
    from backprop_cli.config import EarlyStoppingConfig


class Models:
    """Per-model state of K models trained in one pass: which still train, and how each ended."""

    def __init__(self, theta: np.ndarray, lr: np.ndarray, epochs: int) -> None:
        K = theta.shape[0]
        self.theta, self.lr = theta, lr
        self.active = np.ones(K, bool)
        self.any_stopped = False
        self.frozen = theta.copy()  # the weights each stopped model keeps
        self.status = ["completed"] * K  # completed | diverged | interrupted
        self.reason = ["epochs"] * K  # epochs | early_stopping | stop_at_loss | diverged | interrupted
        self.epochs_run = [epochs] * K
        self.diverged_at: list[Optional[int]] = [None] * K

    def stop(self, k: int, weights: np.ndarray, reason: str, status: str, ran: int) -> None:
        """Freeze model k at `weights` after `ran` epochs; its learning rate becomes 0."""
        self.active[k], self.any_stopped = False, True
        self.frozen[k] = weights
        self.theta[k] = weights
        self.lr[k] = 0.0
        self.status[k], self.reason[k], self.epochs_run[k] = status, reason, ran

    def interrupt(self, done: int) -> None:
        """Ctrl-C after `done` finished epochs: every model still training ends interrupted."""
        for k in np.flatnonzero(self.active):
            self.status[k], self.reason[k], self.epochs_run[k] = "interrupted", "interrupted", done
        if self.any_stopped:
            self.restore_stopped()

    def restore_stopped(self) -> None:
        """Put stopped models back to their frozen weights (a stateful optimizer may move them)."""
        self.theta[~self.active] = self.frozen[~self.active]


class History:
    """Loss and metric columns (epochs, K): training loss and raw metric sums per epoch, and
    validation loss and metrics measured with the weights each epoch starts from."""

    def __init__(
        self, K: int, epochs: int, metrics: Metrics, validation: Optional[tuple] = None, loss: Optional[Loss] = None
    ) -> None:
        self.K, self.epochs, self.metrics = K, epochs, metrics
        self.columns = ["loss"] + metrics.names
        self.validation = validation  # (X_val, Y_val, Metrics of the validation targets)
        self.loss = loss
        if validation is not None:
            self.columns += ["val_loss"] + ["val_" + name for name in validation[2].names]
        self.capacity = min(epochs, 4096)
        # every row up to the epochs run is written for all K models, so the buffers need no
        # filling (finish() puts NaN past each model's end): np.empty, not np.full
        self.data = {c: np.empty((self.capacity, K)) for c in self.columns}
        self._bind()

    def _bind(self) -> None:
        """The columns `record` writes, looked up once (and again after `grow`)."""
        self.loss_column = self.data["loss"]
        self.metric_columns = [self.data[name] for name in self.metrics.names]

    def grow(self) -> None:
        """Double the rows (up to the configured epochs); called when epoch index == capacity."""
        old, self.capacity = self.capacity, min(self.epochs, 2 * self.capacity)
        for c in self.columns:
            self.data[c] = np.concatenate([self.data[c], np.empty((self.capacity - old, self.K))])
        self._bind()

    def validate(self, e: int, net: Network) -> None:
        """Validation loss and metrics of epoch index e, at the current weights."""
        assert self.validation is not None and self.loss is not None
        X, Y, metrics = self.validation
        ws = net.workspace(len(X))
        out = net.forward_into(X, ws)
        self.data["val_loss"][e] = self.loss.value(out, Y, ws.Z)
        for name, value in zip(metrics.names, metrics.finish(metrics.sums(out, Y))):
            self.data["val_" + name][e] = value

    def record(self, e: int, loss: np.ndarray, sums: Optional[list]) -> None:
        """Training loss (K,) and raw metric sums of epoch index e."""
        self.loss_column[e] = loss
        if sums is not None:
            for column, value in zip(self.metric_columns, sums):
                column[e] = value

    def value(self, column: str, e: int | slice) -> np.ndarray:
        """One epoch's values (K,) of a column (or a slice of epochs' rows), training metrics
        finished from their raw sums."""
        names = self.metrics.names
        if column in names:
            return self.metrics.finish([self.data[c][e] for c in names])[names.index(column)]
        return self.data[column][e]

    def finish(self, epochs_run: list[int]) -> dict[str, np.ndarray]:
        """The columns trimmed to the epochs run, metrics finished, NaN past each model's end."""
        names = self.metrics.names
        rows = max(epochs_run)
        if names:  # the rows written only: past them the buffers hold whatever np.empty found
            for name, values in zip(names, self.metrics.finish([self.data[c][:rows] for c in names])):
                self.data[name] = values
        for k, ran in enumerate(epochs_run):
            if ran < rows:  # a model that stopped early: nothing recorded past its end
                for column in self.data.values():
                    column[ran:, k] = np.nan
        return {c: v[:rows] for c, v in self.data.items()}


class Policy(Protocol):
    """Something that looks at every epoch's losses (K,) and may stop models."""

    def after_epoch(self, e: int, epoch: int, loss: np.ndarray) -> None: ...


class Divergence:
    """A model whose loss turns non-finite is diverged: it keeps its last finite weights."""

    def __init__(self, models: Models, snaps: list[np.ndarray]) -> None:
        self.models, self.snaps = models, snaps

    def after_epoch(self, e: int, epoch: int, loss: np.ndarray) -> None:
        if math.isfinite(loss.sum()):
            return
        models = self.models
        for k in np.flatnonzero(~np.isfinite(loss) & models.active):
            # the weights this epoch started from, or the epoch before's if those are not finite
            snap = self.snaps[e & 1][k]
            good = snap if np.all(np.isfinite(snap)) else self.snaps[(e + 1) & 1][k]
            models.stop(int(k), good, "diverged", "diverged", e)
            models.diverged_at[k] = epoch


class EarlyStopping:
    """Stop a model after `patience` epochs without an improvement of `monitor` by `min_delta`;
    with `restore_best`, end with the weights of its best epoch (also when it ran to the end)."""

    def __init__(self, es: EarlyStoppingConfig, models: Models, history: History, snaps: list[np.ndarray]) -> None:
        self.monitor, self.patience, self.min_delta = es.monitor, es.patience, es.min_delta
        self.models, self.history, self.snaps = models, history, snaps
        K = len(models.active)
        self.maximize = es.monitor.endswith("accuracy")
        self.best = np.full(K, -np.inf if self.maximize else np.inf)
        self.best_epoch = [0] * K
        self.wait = np.zeros(K, int)
        self.best_theta = models.theta.copy() if es.restore_best else None
        self.restored: list[Optional[int]] = [None] * K  # per model: the epoch whose weights it ends with

    def after_epoch(self, e: int, epoch: int, loss: np.ndarray) -> None:
        models = self.models
        value = self.history.value(self.monitor, e)
        if self.maximize:
            improved = (value > self.best + self.min_delta) & models.active
        else:
            improved = (value < self.best - self.min_delta) & models.active
        if improved.any():
            self.best[improved] = value[improved]
            self.wait[improved] = 0
            for k in np.flatnonzero(improved):
                self.best_epoch[k] = epoch
            if self.best_theta is not None:
                # the loss of epoch e is measured at the weights the epoch started from
                self.best_theta[improved] = self.snaps[e & 1][improved]
        self.wait[~improved] += 1
        for k in np.flatnonzero((self.wait >= self.patience) & models.active):
            weights = models.theta[k] if self.best_theta is None else self.best_theta[k]
            models.stop(int(k), weights.copy(), "early_stopping", "completed", e + 1)
            if self.best_theta is not None:
                self.restored[k] = self.best_epoch[k]

    def state(self, k: int) -> EarlyState:
        """Model k's state, for a checkpoint."""
        best = float(self.best[k])
        return EarlyState(
            best if math.isfinite(best) else None,
            self.best_epoch[k],
            int(self.wait[k]),
            None if self.best_theta is None else self.best_theta[k].copy(),
        )

    def resume(self, k: int, saved: EarlyState) -> None:
        """Go on from model k's saved state (a run continued from a checkpoint)."""
        if saved.best is not None:
            self.best[k] = saved.best
        self.best_epoch[k], self.wait[k] = saved.best_epoch, saved.wait
        if self.best_theta is not None and saved.best_theta is not None:
            self.best_theta[k] = saved.best_theta

    def finish(self) -> None:
        """restore_best for the models that ran to the last epoch."""
        if self.best_theta is None:
            return
        for k, reason in enumerate(self.models.reason):
            if reason == "epochs" and self.best_epoch[k]:
                self.models.theta[k] = self.best_theta[k]
                self.restored[k] = self.best_epoch[k]


class StopAtLoss:
    """Stop a model once its training loss is at or below `threshold`."""

    def __init__(self, threshold: float, models: Models) -> None:
        self.threshold, self.models = threshold, models

    def after_epoch(self, e: int, epoch: int, loss: np.ndarray) -> None:
        models = self.models
        for k in np.flatnonzero((loss <= self.threshold) & models.active):
            models.stop(int(k), models.theta[k].copy(), "stop_at_loss", "completed", e + 1)


class Interruption:
    """Ctrl-C and SIGTERM while training end it after the epoch in progress: the weights, the
    optimizer's state and the batch order then agree, so the run continues exactly from a
    checkpoint. A second signal interrupts at once (KeyboardInterrupt). Off the main thread,
    where Python lets no one handle signals, this does nothing and a KeyboardInterrupt comes
    as it comes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                # only a signal Python already handles (Ctrl-C; SIGTERM under `backprop`): one
                # that is ignored or kills the process by default stays as it is
                if callable(signal.getsignal(s)):
                    self.old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)
