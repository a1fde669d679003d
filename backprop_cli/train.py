"""The training loop: full-batch or minibatch gradient descent over K models at once.

It reports each epoch through a callback and never prints or writes files. One epoch is:
forward pass, loss, backward pass, update. The loss recorded for epoch k is the loss of epoch
k's forward pass, before its update (with minibatches: the mean over the epoch's batches).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from backprop_cli.config import Config
from backprop_cli.data import Dataset
from backprop_cli.initializers import init_params, random_streams
from backprop_cli.losses import LOSSES
from backprop_cli.network import Network
from backprop_cli.optimizers import OPTIMIZERS

Callback = Callable[[int, np.ndarray], None]


def build_network(cfg: Config, n_models: int = 1, seeds: Optional[Sequence[int]] = None) -> Network:
    """A network with K = n_models copies of the config's initial weights.

    With `seeds`, model k is initialized from seed k's stream instead (a seed study); explicit
    `model.weights`/`model.biases` override the initializer for every model.
    """
    m = cfg.model
    K = len(seeds) if seeds is not None else n_models
    net = Network(m.layers, cfg.activations, m.bias, K, np.dtype(cfg.training.dtype))
    for k, seed in enumerate(seeds if seeds is not None else [cfg.seed]):
        layers = init_params(m.init, m.layers, random_streams(seed)[1], m.bias)
        if m.weights is not None:
            layers = [(np.asarray(w, float), b) for w, (_, b) in zip(m.weights, layers)]
        if m.biases is not None:
            layers = [(w, np.asarray(b, float)) for (w, _), b in zip(layers, m.biases)]
        net.set_params(layers, model=None if seeds is None else k)
    return net


def lr_factor(cfg: Config, epoch: int) -> float:
    """Multiplier of the base learning rate at `epoch` (1-based) under the configured schedule."""
    t = cfg.training
    if t.lr_schedule == "step":
        return t.lr_gamma ** ((epoch - 1) // t.lr_step_size)
    if t.lr_schedule == "exponential":
        return t.lr_gamma ** (epoch - 1)
    if t.lr_schedule == "cosine":
        # from 1 at epoch 1 to lr_min / lr at the last epoch
        floor = t.lr_min / t.learning_rate
        progress = (epoch - 1) / max(t.epochs - 1, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


class Metrics:
    """Per-epoch metrics besides the loss, from outputs (K, n, n_out) and targets (n, n_out).

    Classification: accuracy (argmax for several outputs, threshold 0.5 for one). Regression
    with more than one sample and non-constant targets: mae and r2. `sums` returns per-model
    raw sums over a batch (hit counts; absolute and squared errors), which the loop records
    as they are; `finish` turns raw epoch sums into metric values, once, after the loop.
    """

    def __init__(self, Y: np.ndarray, classification: bool):
        self.names: list[str] = []
        self.classification = classification
        self.multi = Y.shape[1] > 1
        self.n_values = Y.shape[0] if (classification and self.multi) else Y.size
        self.Y = Y
        if classification:
            self.names = ["accuracy"]
            self.labels = Y.argmax(axis=1) if self.multi else Y > 0.5
        elif Y.shape[0] > 1 and float(((Y - Y.mean(axis=0)) ** 2).sum()) > 0:
            self.names = ["mae", "r2"]
            self.sst = float(((Y - Y.mean(axis=0)) ** 2).sum())

    def sums(self, out: np.ndarray, Y: np.ndarray) -> list:
        if self.classification:
            labels = self.labels if Y is self.Y else (Y.argmax(axis=1) if self.multi else Y > 0.5)
            hits = out.argmax(axis=2) == labels if self.multi else (out > 0.5) == labels
            if len(out) == 1:
                # one model: count_nonzero skips the bool -> int cast of a reduction (~1.5 us)
                return [np.count_nonzero(hits)]
            return [np.add.reduce(hits, axis=tuple(range(1, hits.ndim)))]
        err = out - Y
        return [np.add.reduce(np.abs(err), axis=(1, 2)), np.add.reduce(err * err, axis=(1, 2))]

    def finish(self, sums: list) -> list:
        """Raw sums (arrays of any shape) -> metric values in the order of `names`."""
        if self.classification:
            return [sums[0] / self.n_values]
        return [sums[0] / self.n_values, 1.0 - sums[1] / self.sst]


@dataclass
class TrainResult:
    """History columns (epochs_run, K), per-model status, and the network with final weights."""

    net: Network
    history: dict
    epochs: np.ndarray  # epoch numbers of the history rows
    status: list  # per model: completed | diverged | interrupted
    stop_reason: list  # per model: epochs | early_stopping | stop_at_loss | diverged | interrupted
    epochs_run: list
    diverged_at: list  # per model: epoch of the first non-finite loss, or None
    best_epoch: list = field(default_factory=list)
    duration_s: float = 0.0

    def final(self, column: str, model: int = 0) -> Optional[float]:
        """The last value of a history column for one model (None when it has none)."""
        values = self.history[column][: self.epochs_run[model], model]
        return float(values[-1]) if len(values) else None

    def best(self, column: str = "loss", model: int = 0) -> Optional[float]:
        values = self.history[column][: self.epochs_run[model], model]
        return float(np.min(values)) if len(values) else None


def train(
    cfg: Config,
    data: Dataset,
    net: Network,
    learning_rates: Optional[Sequence[float]] = None,
    callback: Optional[Callback] = None,
    start_epoch: int = 0,
) -> TrainResult:
    """Train the K models of `net` in place on `data`; model k uses learning_rates[k].

    A model whose loss turns non-finite is marked diverged at that epoch and frozen at its last
    finite weights while the others go on; early stopping and stop_at_loss freeze a model the
    same way. Ctrl-C (KeyboardInterrupt) ends training with status interrupted and the weights
    of the last finished epoch. Validation metrics of epoch k use the same weights as epoch
    k's training loss (the weights before its updates).
    """
    t = cfg.training
    K, dtype = net.K, net.dtype
    rates = learning_rates if learning_rates is not None else [t.learning_rate] * K
    base_lr = np.asarray(rates, dtype).reshape(K, 1)
    lr = base_lr.copy()
    loss_fn = LOSSES[t.loss]
    opt = OPTIMIZERS[t.optimizer](
        net.theta.shape, dtype, weight_decay=t.weight_decay, momentum=t.momentum, nesterov=t.nesterov,
        rho=t.rho, beta1=t.beta1, beta2=t.beta2, eps=t.eps,
    )
    X, Y, n = data.X, data.Y, len(data.X)
    batch = t.batch_size if t.batch_size and t.batch_size < n else n
    starts = range(0, n, batch)
    shuffle_rng = random_streams(cfg.seed)[2]
    if batch < n:
        X_shuffled, Y_shuffled = np.empty_like(X), np.empty_like(Y)
    metrics = Metrics(Y, data.classification)
    has_val = data.X_val is not None
    val_metrics = Metrics(data.Y_val, data.classification) if has_val else None
    columns = ["loss"] + metrics.names
    if has_val:
        columns += ["val_loss"] + ["val_" + name for name in val_metrics.names]
    E = t.epochs
    # history grows by doubling, so memory follows the epochs actually run, not t.epochs
    capacity = min(E, 4096)
    history = {c: np.full((capacity, K), np.nan) for c in columns}
    loss_hist = history["loss"]
    es = t.early_stopping if t.early_stopping and t.early_stopping.monitor in columns else None
    maximize = es is not None and es.monitor.endswith("accuracy")
    best = np.full(K, -np.inf if maximize else np.inf)
    best_epoch, wait = [0] * K, np.zeros(K, int)
    best_theta = net.theta.copy() if es is not None and es.restore_best else None

    theta = net.theta
    snaps = [theta.copy(), theta.copy()]  # weights at the start of the last two epochs
    active, frozen, any_frozen = np.ones(K, bool), theta.copy(), False
    status, reason = ["completed"] * K, ["epochs"] * K
    epochs_run, diverged_at = [E] * K, [None] * K
    # flags the loop tests every epoch, as locals
    numerical = t.gradient == "numerical"
    scheduled = t.lr_schedule != "constant"
    stop_at = t.stop_at_loss
    minibatch = batch < n
    metric_names = metrics.names
    grad = net.grad
    full_ws = net.workspace(n)
    done, current = 0, -1

    def freeze(k: int, weights: np.ndarray, why: str, state: str, ran: int) -> None:
        nonlocal any_frozen
        active[k], any_frozen = False, True
        frozen[k], lr[k] = weights, 0.0
        status[k], reason[k], epochs_run[k] = state, why, ran

    started = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for e in range(E):
                epoch = start_epoch + e + 1
                if e == capacity:
                    capacity = min(E, 2 * capacity)
                    for c in columns:
                        history[c] = np.concatenate([history[c], np.full((capacity - e, K), np.nan)])
                    loss_hist = history["loss"]
                snap = snaps[e & 1]
                snap[...] = theta
                current = e
                if scheduled:
                    np.multiply(base_lr, lr_factor(cfg, e + 1), out=lr)
                    lr[~active] = 0.0
                # validation, with the weights this epoch starts from
                if has_val:
                    out = net.forward_into(data.X_val, net.workspace(len(data.X_val)))
                    history["val_loss"][e] = loss_fn.value(out, data.Y_val)
                    for name, value in zip(val_metrics.names, val_metrics.finish(val_metrics.sums(out, data.Y_val))):
                        history["val_" + name][e] = value
                if minibatch:
                    order = shuffle_rng.permutation(n)
                    np.take(X, order, axis=0, out=X_shuffled)
                    np.take(Y, order, axis=0, out=Y_shuffled)
                    Xe, Ye = X_shuffled, Y_shuffled
                else:
                    Xe, Ye = X, Y
                loss, sums = 0.0, None
                for s in starts:
                    if minibatch:
                        Xb, Yb = Xe[s : s + batch], Ye[s : s + batch]
                        ws = net.workspace(len(Xb))
                    else:
                        Xb, Yb, ws = X, Y, full_ws
                    # forward, loss and backward: the gradients land in net.grad
                    if numerical:
                        batch_loss = net.numerical_grad(Xb, Yb, loss_fn, t.gradient_epsilon, t.gradient_method)
                        net.forward_into(Xb, ws)
                    else:
                        batch_loss = net.loss_and_grad(Xb, Yb, loss_fn, ws)
                    loss = loss + batch_loss if minibatch else batch_loss
                    if metric_names:
                        part = metrics.sums(ws.A[-1], Yb)
                        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
                    # update every model; frozen ones are put back below
                    opt.step(theta, grad, lr)
                if minibatch:
                    loss = loss / len(starts)
                if any_frozen:
                    theta[~active] = frozen[~active]
                # record (train metrics as raw sums, finished after the loop)
                loss_hist[e] = loss
                if sums is not None:
                    for name, value in zip(metric_names, sums):
                        history[name][e] = value
                done = e + 1
                # a non-finite loss: the model diverged; freeze it at its last finite weights
                if not math.isfinite(loss.sum() if K > 1 else loss[0]):
                    for k in np.flatnonzero(~np.isfinite(loss) & active):
                        good = snap[k] if np.all(np.isfinite(snap[k])) else snaps[(e + 1) & 1][k]
                        freeze(k, good, "diverged", "diverged", e)
                        diverged_at[k] = epoch
                        theta[k] = good
                if es is not None:
                    value = history[es.monitor][e]
                    if es.monitor in metrics.names:
                        value = metrics.finish([history[c][e] for c in metrics.names])[metrics.names.index(es.monitor)]
                    improved = ((value > best + es.min_delta) if maximize else (value < best - es.min_delta)) & active
                    if improved.any():
                        best[improved] = value[improved]
                        wait[improved] = 0
                        for k in np.flatnonzero(improved):
                            best_epoch[k] = epoch
                        if best_theta is not None:
                            best_theta[improved] = snap[improved]
                    wait[~improved] += 1
                    for k in np.flatnonzero((wait >= es.patience) & active):
                        freeze(k, theta[k] if best_theta is None else best_theta[k], "early_stopping", "completed", e + 1)
                        theta[k] = frozen[k]
                if stop_at is not None:
                    for k in np.flatnonzero((loss <= stop_at) & active):
                        freeze(k, theta[k], "stop_at_loss", "completed", e + 1)
                if callback is not None:
                    callback(epoch, loss)
                if any_frozen and not active.any():
                    break
    except KeyboardInterrupt:
        if current == done:
            # the epoch in progress did not finish: back to the weights it started from
            np.copyto(theta, snaps[current & 1])
        for k in np.flatnonzero(active):
            status[k], reason[k], epochs_run[k] = "interrupted", "interrupted", done
        if any_frozen:
            theta[~active] = frozen[~active]
    if best_theta is not None:
        # restore_best also applies when training ran to the last epoch
        for k in range(K):
            if reason[k] == "epochs" and best_epoch[k]:
                theta[k] = best_theta[k]
    duration = time.perf_counter() - started
    if metrics.names:
        for name, values in zip(metrics.names, metrics.finish([history[c] for c in metrics.names])):
            history[name] = values
    rows = max(epochs_run)
    for k in range(K):
        for column in history.values():
            column[epochs_run[k] :, k] = np.nan
    return TrainResult(
        net=net,
        history={c: v[:rows] for c, v in history.items()},
        epochs=np.arange(start_epoch + 1, start_epoch + rows + 1),
        status=status,
        stop_reason=reason,
        epochs_run=epochs_run,
        diverged_at=diverged_at,
        best_epoch=best_epoch,
        duration_s=duration,
    )
