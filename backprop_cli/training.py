"""The training loop: full-batch or minibatch gradient descent over K models at once.

It reports each epoch through a callback and never prints or writes files. One epoch is:
forward pass, loss, backward pass, update. The loss recorded for epoch k is the loss of epoch
k's forward pass, before its update (with minibatches: the mean over the epoch's batches).
Everything around the epoch (history, divergence, early stopping, stop_at_loss) lives in
`policies`. The loop takes config sections (duck-typed), so importing it loads no pydantic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from math import isfinite
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from backprop_cli.checkpoint import Checkpoint
from backprop_cli.data import Dataset
from backprop_cli.differences import FiniteDifferences
from backprop_cli.initializers import init_params, random_streams
from backprop_cli.losses import LOSSES, Loss
from backprop_cli.metrics import Metrics
from backprop_cli.network import Network, Workspace, frozen_mask
from backprop_cli.optimizers import OPTIMIZERS, Optimizer
from backprop_cli.policies import Divergence, EarlyStopping, History, Interruption, Models, Policy, StopAtLoss
from backprop_cli.regularization import Dropout, GradientTerms, column
from backprop_cli.schedules import SCHEDULES, Schedule

if TYPE_CHECKING:
    from backprop_cli.config import ModelConfig, TrainingConfig


class Epoch:
    """What a callback may read about the epoch that just ended, besides its loss: the weights
    after its update (`theta`, K x P, live: copy what you keep) and any history column's
    values (K,) for it, such as `val_loss` or `accuracy`. One object, updated in place."""

    def __init__(self, history: History, theta: np.ndarray, lr: np.ndarray, interruption: Interruption) -> None:
        self.history, self.theta, self.index = history, theta, 0
        self.columns = history.columns
        self.lr = lr  # the rates the epoch's update used: (K, 1), or (K, P) with one rate per layer
        self._interruption = interruption

    def value(self, column: str) -> np.ndarray:
        return self.history.value(column, self.index)

    def request_stop(self) -> None:
        """End training after this epoch, as a Ctrl-C does (status interrupted, exactly resumable)."""
        self._interruption.requested = True

    @property
    def stopping(self) -> bool:
        """Whether training ends after this epoch (a Ctrl-C or `request_stop` came)."""
        return self._interruption.requested


Callback = Callable[[int, np.ndarray, Epoch], None]


def build_network(
    model: ModelConfig, dtype: str = "float64", seed: int = 0, n_models: int = 1, seeds: Optional[Sequence[int]] = None
) -> Network:
    """A network with K = n_models copies of the initial weights drawn from `seed`.

    With `seeds`, model k is initialized from seed k's stream instead (a seed study); explicit
    `model.weights`/`model.biases` (or `model.init_from`'s layers) override the initializer for every model.
    """
    K = len(seeds) if seeds is not None else n_models
    net = Network(model.layers, model.activations, model.bias, K, np.dtype(dtype))
    drawn: dict[int, list] = {}  # a study's cells repeat their few seeds
    for k, s in enumerate(seeds if seeds is not None else [seed]):
        if s not in drawn:
            drawn[s] = init_params(model.init, model.layers, random_streams(s)[1], model.bias)
        layers = drawn[s]
        if model.imported is not None:  # model.init_from's layers
            layers = model.imported
        if model.weights is not None:
            layers = [(np.asarray(w, float), b) for w, (_, b) in zip(model.weights, layers)]
        if model.biases is not None:
            layers = [(w, np.asarray(b, float)) for (w, _), b in zip(layers, model.biases)]
        net.set_params(layers, model=None if seeds is None else k)
    return net


def make_optimizer(t: TrainingConfig, shape: tuple[int, ...], dtype: np.dtype) -> Optimizer:
    """The configured optimizer, given only the hyperparameters it declares."""
    cls = OPTIMIZERS[t.optimizer]
    return cls(shape, dtype, t.weight_decay, **{name: getattr(t, name) for name in cls.hyperparameters})


def rate_array(rates: Sequence[Any], net: Network) -> np.ndarray:
    """Each model's learning rate as the array its gradient is scaled by: a (K, 1) column of
    one rate a model, or (K, P) where some model has one rate per layer (the weights and
    biases of layer l take rate l)."""
    K = net.K
    if all(np.ndim(r) == 0 for r in rates):
        return np.asarray(rates, net.dtype).reshape(K, 1)
    layer = np.array([p.layer for p in net.param_names()])
    found = np.empty((K, net.n_params), net.dtype)
    for k, r in enumerate(rates):
        found[k] = np.asarray(r, net.dtype)[layer] if np.ndim(r) else r
    return found


def rate_in_effect(learning_rate: Any, changes: Optional[Mapping[int, float]], epoch: int) -> Any:
    """The base learning rate of epoch `epoch`: the last of training.lr_changes at or before
    it, else the configured rate."""
    found = [e for e in changes or {} if e <= epoch]
    return changes[max(found)] if found and changes is not None else learning_rate


def make_schedule(t: TrainingConfig, base_rates: Optional[np.ndarray] = None) -> Schedule:
    """The configured learning-rate schedule, given only the settings it declares; a setting
    named `learning_rate` is each model's own base rate (`base_rates`, (K, 1)) where given."""
    cls = SCHEDULES[t.lr_schedule]
    values = {name: getattr(t, name) for name in cls.settings}
    if base_rates is not None and "learning_rate" in values:
        values["learning_rate"] = base_rates
    return cls(**values)


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
    # per model: the epoch whose starting weights restore_best put back (None: the final weights)
    restored_epoch: list = field(default_factory=list)
    # what a checkpoint reads: see `checkpoint`
    state: Optional[_State] = field(default=None, repr=False)
    # or, for a result rebuilt from a study's store, each model's checkpoint as stored
    saved: Optional[list] = field(default=None, repr=False)
    # with training.diagnostics: the `diagnostics.Recorder` that recorded them
    diagnostics: Any = field(default=None, repr=False)
    # with lr_changes (or a live run's): the learning rate each epoch's update used (epochs, K)
    rates: Optional[np.ndarray] = field(default=None, repr=False)

    def checkpoint(self, model: int = 0) -> Optional[Checkpoint]:
        """Model `model`'s state for continuing exactly (None where it cannot be: a second
        Ctrl-C or an interrupt off the main thread cut an epoch short)."""
        if self.saved is not None:
            return self.saved[model]
        s = self.state
        if s is None or not s.exact:
            return None
        moments = {name: values[model].copy() for name, values in s.optimizer.moments().items()}
        early = s.early.state(model) if s.early is not None else None
        return Checkpoint(
            epoch=int(self.epochs[0] - 1 + self.epochs_run[model]) if len(self.epochs) else s.start_epoch,
            theta=s.theta[model].copy(),
            optimizer=s.optimizer_name,
            step=s.optimizer.t,
            moments=moments,
            batch_order=s.batch_order,
            dropout_order=s.dropout_order,
            early=early,
            monitor=s.early.monitor if s.early is not None else None,
        )

    def final(self, column: str, model: int = 0) -> Optional[float]:
        """The last value of a history column for one model (None when it has none)."""
        values = self.history[column][: self.epochs_run[model], model]
        return float(values[-1]) if len(values) else None

    def best(self, column: str = "loss", model: int = 0) -> Optional[float]:
        values = self.history[column][: self.epochs_run[model], model]
        return float(np.min(values)) if len(values) else None


@dataclass
class _State:
    """The end of a training call as a continuation needs it."""

    theta: np.ndarray  # (K, P) the weights after the last epoch's update (before restore_best)
    optimizer: Optimizer
    optimizer_name: str
    batch_order: Optional[dict]
    early: Optional[EarlyStopping]
    start_epoch: int
    exact: bool
    dropout_order: Optional[dict] = None


class _Batches:
    """An epoch's batches (X, Y, workspace): the full set, or shuffled minibatches."""

    def __init__(
        self,
        net: Network,
        X: np.ndarray,
        Y: np.ndarray,
        batch_size: Optional[int],
        seed: int,
        order: Optional[dict] = None,
    ) -> None:
        n = len(X)
        self.X, self.Y, self.net = X, Y, net
        self.batch = batch_size if batch_size and batch_size < n else n
        self.minibatch = self.batch < n
        self.count = len(range(0, n, self.batch))
        self.full = [(X, Y, net.workspace(n))]
        if self.minibatch:
            self.rng = random_streams(seed)[2]
            if order is not None:  # a continuation: the stream goes on where it stopped
                self.rng.bit_generator.state = order
            self.X_shuffled, self.Y_shuffled = np.empty_like(X), np.empty_like(Y)

    def order(self) -> Optional[dict]:
        """The batch-order stream's state (None for full batches)."""
        return dict(self.rng.bit_generator.state) if self.minibatch else None

    def epoch(self) -> Iterator[tuple[np.ndarray, np.ndarray, Workspace]]:
        order = self.rng.permutation(len(self.X))
        np.take(self.X, order, axis=0, out=self.X_shuffled)
        np.take(self.Y, order, axis=0, out=self.Y_shuffled)
        for s in range(0, len(self.X), self.batch):
            Xb, Yb = self.X_shuffled[s : s + self.batch], self.Y_shuffled[s : s + self.batch]
            yield Xb, Yb, self.net.workspace(len(Xb))


def train(
    training: TrainingConfig,
    data: Dataset,
    net: Network,
    seed: int = 0,
    learning_rates: Optional[Sequence[Any]] = None,
    callback: Optional[Callback] = None,
    start_epoch: int = 0,
    optimizer: Optional[Optimizer] = None,
    resume: Optional[Sequence[Optional[Checkpoint]]] = None,
    stop_after: Optional[int] = None,
    horizon: Optional[int] = None,
    dropout: Sequence[float] = (),
    per_model: Optional[Mapping[str, Sequence[Any]]] = None,
    lr_changes: Optional[Mapping[int, float]] = None,
) -> TrainResult:
    """Train the K models of `net` in place on `data` for `training.epochs` epochs (at most
    `stop_after`); model k uses learning_rates[k].

    `dropout` is the hidden layers' dropout probabilities (model.dropout, one per hidden
    layer); `per_model` gives each model its own `l1`, `clip_grad_norm`, `clip_grad_value` or
    `dropout` (K values each, a dropout value one probability or one per hidden layer) in place
    of the config's (see `regularization`).

    `seed` drives the minibatch order; `optimizer` (default: the configured one, new) lets a
    caller read its state afterwards. Epochs are numbered from `start_epoch` + 1, and the
    learning-rate schedule runs over the epochs up to `horizon` (default: start_epoch +
    training.epochs), so `stop_after` ends early without changing any rate. `resume` (one
    checkpoint per model, or None for a model that starts afresh) continues a run exactly:
    weights, optimizer state, batch order and early stopping's state. `lr_changes` ({epoch:
    rate}, default training.lr_changes) sets every model's base rate from that epoch on; it is
    read as each epoch starts, so a live run may add to it between epochs, and with it the
    result records each epoch's rate (`rates`). A model whose loss
    turns non-finite is marked diverged at that epoch and frozen at its last finite weights
    while the others go on; early stopping and stop_at_loss freeze a model the same way. Ctrl-C
    or SIGTERM ends training after the epoch in progress with status interrupted (a second
    one, or a KeyboardInterrupt, at once, with the weights of the last finished epoch).
    Validation metrics of epoch k use the same weights as epoch k's training loss (the
    weights before its updates).
    """
    t = training
    K, dtype, theta, grad = net.K, net.dtype, net.theta, net.grad
    E = t.epochs if stop_after is None else max(0, min(t.epochs, stop_after))
    horizon = start_epoch + t.epochs if horizon is None else horizon
    changes = lr_changes if lr_changes is not None else getattr(t, "lr_changes", None)
    configured = [rate_in_effect(t.learning_rate, changes, start_epoch)] * K
    base_lr = rate_array(learning_rates if learning_rates is not None else configured, net)
    lr = base_lr.copy()
    schedule = make_schedule(t, base_lr) if t.lr_schedule != "constant" else None
    # a plain run's rate per epoch: each epoch's with a schedule, else where it changed (at, rate)
    used = np.empty((E, 1)) if changes is not None and K == 1 and schedule is not None else None
    steps = [(0, float(lr[0, 0]))] if changes is not None and K == 1 and schedule is None else None
    loss_fn = LOSSES[t.loss]
    opt = make_optimizer(t, theta.shape, dtype) if optimizer is None else optimizer
    saved = [c for c in resume or [] if c is not None]
    order = next((c.batch_order for c in saved if c.batch_order is not None), None)
    batches = _Batches(net, data.X, data.Y, t.batch_size, seed, order)
    minibatch = batches.minibatch
    metrics = Metrics(data.Y, data.classification)
    metric_sums = metrics.sums if metrics.names else None
    validation = None
    if data.X_val is not None and data.Y_val is not None:
        validation = (data.X_val, data.Y_val, Metrics(data.Y_val, data.classification))
    history = History(K, E, metrics, validation, loss_fn)

    gradient: Callable[[np.ndarray, np.ndarray, Loss, Workspace], np.ndarray] = net.loss_and_grad
    if t.gradient == "numerical":
        differences = FiniteDifferences(net, batches.batch, t.gradient_method, t.gradient_epsilon)

        def gradient(X: np.ndarray, Y: np.ndarray, loss: Loss, ws: Workspace) -> np.ndarray:
            value = net.loss_only(X, Y, loss, ws)  # also the outputs the metrics read
            grad[...] = differences.gradient(X, Y, loss, value)[0]
            return value

    for k, c in enumerate(resume or []):
        if c is not None:
            theta[k] = c.theta
            if c.moments or c.step:
                opt.restore(k, c.moments, c.step)
    frozen = frozen_mask(net.sizes, net.bias, t.freeze) if t.freeze else None
    settings = per_model or {}

    def each(key: str, default: Any) -> list:
        return list(settings.get(key, [default] * K))

    l1, clip_value, clip_norm = (
        column(each("l1", t.l1), dtype),
        column(each("clip_grad_value", t.clip_grad_value), dtype, np.inf),
        column(each("clip_grad_norm", t.clip_grad_norm), dtype, np.inf),
    )
    terms = None
    if l1 is not None or clip_value is not None or clip_norm is not None:  # else the loop pays nothing
        terms = GradientTerms(l1, clip_value, clip_norm, frozen, theta.shape, dtype)
    hidden = net.sizes[1:-1]
    rates = np.array(
        [np.broadcast_to(np.asarray(r, float), len(hidden)) for r in each("dropout", list(dropout) or 0.0)]
    )
    drop = None
    if hidden and rates.any():
        if t.gradient == "numerical":
            raise ValueError("model.dropout needs training.gradient: analytic")
        drop = Dropout(rates.reshape(K, len(hidden)), hidden, dtype, random_streams(seed)[3])
        masks = next((c.dropout_order for c in saved if c.dropout_order is not None), None)
        if masks is not None:  # a continuation: the mask stream goes on where it stopped
            drop.rng.bit_generator.state = masks
        dropped = net.loss_and_grad_dropped
        mask = drop.masks

        def gradient(X: np.ndarray, Y: np.ndarray, loss: Loss, ws: Workspace) -> np.ndarray:
            return dropped(X, Y, loss, ws, mask(len(X)))

    apply_terms = terms.apply if terms is not None else None
    kept = theta[:, frozen] if frozen is not None else None  # frozen parameters' values (a copy)
    snaps = [theta.copy(), theta.copy()]  # weights at the start of the last two epochs
    models = Models(theta, lr, E)
    diverged = Divergence(models, snaps).after_epoch  # always on; called when a loss is not finite
    stopping: list[Policy] = []
    early = None
    if t.early_stopping is not None:
        if t.early_stopping.monitor not in history.columns:
            raise ValueError(
                f"early_stopping.monitor {t.early_stopping.monitor} is not recorded; "
                f"the run records {', '.join(history.columns)}"
            )
        early = EarlyStopping(t.early_stopping, models, history, snaps)
        stopping.append(early)
    for k, c in enumerate(resume or []):
        if early is not None and c is not None and c.early is not None and c.monitor == early.monitor:
            early.resume(k, c.early)
    if t.stop_at_loss is not None:
        stopping.append(StopAtLoss(t.stop_at_loss, models))
    # the per-epoch calls, looked up once
    record, policies = history.record, [policy.after_epoch for policy in stopping]
    full, restore_stopped = batches.full, models.restore_stopped
    done, current = 0, -1
    exact = True
    interruption = Interruption()
    seen = Epoch(history, theta, lr, interruption)

    started = time.perf_counter()
    try:
        with interruption, np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for e in range(E):
                epoch = start_epoch + e + 1
                if e == history.capacity:
                    history.grow()
                snaps[e & 1][...] = theta
                current = e
                if changes and epoch in changes:
                    base_lr[...] = changes[epoch]
                    if schedule is None:
                        lr[models.active] = changes[epoch]
                        if steps is not None:
                            steps.append((e, float(lr[0, 0])))
                if schedule is not None:
                    np.multiply(base_lr, schedule.factor(epoch, horizon), out=lr)
                    lr[~models.active] = 0.0
                if validation is not None:
                    history.validate(e, net)
                loss: Any = 0.0  # (K,) after the first batch
                sums = None
                for Xb, Yb, ws in batches.epoch() if minibatch else full:
                    # forward, loss and backward: the gradients land in net.grad
                    batch_loss = gradient(Xb, Yb, loss_fn, ws)
                    if apply_terms is not None:  # l1 and clipping (see regularization)
                        apply_terms(theta, grad)
                    loss = loss + batch_loss if minibatch else batch_loss
                    if metric_sums is not None:
                        part = metric_sums(ws.A[-1], Yb)
                        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
                    # update every model; stopped ones are put back below, frozen parameters here
                    opt.step(theta, grad, lr)
                    if kept is not None:
                        theta[:, frozen] = kept
                if minibatch:
                    loss = loss / batches.count
                if models.any_stopped:
                    restore_stopped()
                record(e, loss, sums)
                if used is not None:
                    used[e] = lr[:, 0]
                done = e + 1
                if not isfinite(loss.sum() if K > 1 else loss[0]):
                    diverged(e, epoch, loss)
                for after_epoch in policies:
                    after_epoch(e, epoch, loss)
                if callback is not None:
                    seen.index = e
                    callback(epoch, loss, seen)
                if interruption.requested:
                    models.interrupt(done)
                    break
                if models.any_stopped and not models.active.any():
                    break
    except KeyboardInterrupt:
        if current == done:
            # the epoch in progress did not finish: back to the weights it started from (the
            # optimizer's state and the batch order may be part way through it: no checkpoint)
            np.copyto(theta, snaps[current & 1])
            exact = False
        models.interrupt(done)
    last = theta.copy()
    if early is not None and E == t.epochs:  # restore_best at the end, not where stop_after paused
        early.finish()
    duration = time.perf_counter() - started
    rows = max(models.epochs_run)
    return TrainResult(
        net=net,
        history=history.finish(models.epochs_run),
        epochs=np.arange(start_epoch + 1, start_epoch + rows + 1),
        status=models.status,
        stop_reason=models.reason,
        epochs_run=models.epochs_run,
        diverged_at=models.diverged_at,
        best_epoch=early.best_epoch if early is not None else [0] * K,
        duration_s=duration,
        restored_epoch=early.restored if early is not None else [None] * K,
        state=_State(
            last, opt, t.optimizer, batches.order(), early, start_epoch, exact, drop.state() if drop else None
        ),
        rates=used[:rows] if used is not None else _unrolled(steps, rows) if steps is not None else None,
    )


def _unrolled(steps: list[tuple[int, float]], rows: int) -> np.ndarray:
    """The rate of each of `rows` epochs, (rows, 1), from where it changed: (epoch index, rate)."""
    at = np.minimum([e for e, _ in steps] + [rows], rows)
    return np.repeat([rate for _, rate in steps], np.diff(at)).reshape(-1, 1)


def evaluate(net: Network, data: Dataset, loss: str, model: int = 0) -> dict[str, float]:
    """Loss and metrics of one model's current weights on the training data and, where there
    is some, the validation data: {"loss", metrics..., "val_loss", "val_" metrics...}."""
    loss_fn = LOSSES[loss]
    found: dict[str, float] = {}
    splits = [("", data.X, data.Y)]
    if data.X_val is not None and data.Y_val is not None:
        splits.append(("val_", data.X_val, data.Y_val))
    for prefix, X, Y in splits:
        zs, outputs = net.trace(X, model)
        a, z = outputs[-1][None], zs[-1][None]
        with np.errstate(over="ignore", invalid="ignore"):
            found[prefix + "loss"] = float(loss_fn.value(a, Y, z)[0])
            metrics = Metrics(Y, data.classification)
            for name, value in zip(metrics.names, metrics.finish(metrics.sums(a, Y))):
                found[prefix + name] = float(np.asarray(value).ravel()[0])
    return found
