"""A whole config's pieces: its data, its network, its training. Thin adapters from a `Config`
to the sections and plain values that `data` and `train` take, for the modules above them
(sweeps, checks, run folders, the command line) and for notebooks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from backprop_cli.checkpoint import Checkpoint
from backprop_cli.data import Dataset, load_data
from backprop_cli.diagnostics import Recorder
from backprop_cli.errors import ConfigError, DivergedError
from backprop_cli.initializers import random_streams
from backprop_cli.losses import LOSSES
from backprop_cli.metrics import Metrics
from backprop_cli.network import Network
from backprop_cli.optimizers import Optimizer
from backprop_cli.training import Callback, TrainResult, build_network, train

if TYPE_CHECKING:
    from backprop_cli.config import Config


GiB = 2**30


def memory_needed(cfg: Config, n_models: int = 1, n_samples: Optional[int] = None) -> int:
    """A generous estimate of the bytes training K = n_models models of the config takes:
    parameters with their gradients, snapshots and optimizer state; activations, deltas and
    scratch per batch; the data and its copies."""
    sizes = cfg.model.layers
    n = known_samples(cfg, n_samples)
    itemsize = 4 if cfg.training.dtype == "float32" else 8
    params = sum(o * i + o for i, o in zip(sizes, sizes[1:]))
    batch = min(cfg.training.batch_size or n, n) if n else 0
    return (
        n_models * params * itemsize * 8
        + n_models * batch * sum(sizes[1:]) * itemsize * 4
        + n * (sizes[0] + sizes[-1]) * 8 * 4
    )


def known_samples(cfg: Config, n_samples: Optional[int]) -> int:
    """The sample count when it is known before loading (inline or generated data), else 0."""
    d = cfg.data
    return n_samples or (len(d.inputs) if d.inputs else d.n_samples if d.builtin else 0)


def check_memory(cfg: Config, source: str, n_models: int = 1, n_samples: Optional[int] = None) -> None:
    """Refuse, with the estimate, a config (and model count) that would not fit in this machine's
    memory: a MemoryError deep in NumPy helps nobody."""
    need = memory_needed(cfg, n_models, n_samples)
    # the history the loop keeps in memory: a loss and (at least) one metric per epoch and model
    history = n_models * cfg.training.epochs * 2 * 8
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not knowable here: do not guess
        return
    if need > 0.8 * have:
        models = f" x {n_models:,} models" if n_models > 1 else ""
        n = known_samples(cfg, n_samples)
        samples = f" on {n:,} samples" if n else ""
        raise ConfigError(
            f"{source}: model.layers {cfg.model.layers}{models}{samples} needs about {need / GiB:.1f} GiB of "
            f"memory; this machine has {have / GiB:.1f} GiB"
        )
    if history > 0.8 * have:  # a run of 1e20 epochs trained until its history filled memory
        raise ConfigError(
            f"{source}: training.epochs {cfg.training.epochs:,}: the history of that many epochs needs about "
            f"{history / GiB:,.1f} GiB of memory; this machine has {have / GiB:.1f} GiB"
        )


def dataset(cfg: Config, source: str) -> Dataset:
    """The config's data (its seed's data stream); `source` names the config file in messages."""
    check_memory(cfg, source)
    data = load_data(cfg.data, cfg.model, cfg.training.loss, cfg.training.dtype, source, random_streams(cfg.seed)[0])
    check_monitor(cfg, data, source)
    return data


def recorded(data: Dataset) -> list[str]:
    """The history columns a run on `data` records: loss, its metrics, and val_ of each."""
    found = ["loss", *Metrics(data.Y, data.classification).names]
    return found + ["val_" + c for c in found] if data.X_val is not None else found


def check_monitor(cfg: Config, data: Dataset, source: str) -> None:
    """Early stopping must watch a column the run records (accuracy needs a classifier)."""
    es = cfg.training.early_stopping
    if es is not None and es.monitor not in (columns := recorded(data)):
        raise ConfigError(
            f"{source}: training.early_stopping.monitor: '{es.monitor}' is not recorded by this run "
            f"({'classification' if data.classification else 'regression'}); it records {', '.join(columns)}"
        )


def seeds_share_a_pass(cfg: Config) -> bool:
    """Whether models with different seeds may train in one pass: only when the seed decides
    nothing but the initial weights (no generated data, no validation split, full batch, no
    dropout)."""
    from backprop_cli.datasets import GENERATORS

    d = cfg.data
    return (
        d.builtin not in GENERATORS
        and not d.validation
        and cfg.training.batch_size is None
        and not any(cfg.model.dropout_rates)
    )


def network(cfg: Config, n_models: int = 1, seeds: Optional[Sequence[int]] = None) -> Network:
    """K = n_models copies of the config's initial weights (or one model per seed of `seeds`)."""
    return build_network(cfg.model, cfg.training.dtype, cfg.seed, n_models, seeds)


def require_completed(result: TrainResult, before: str) -> None:
    """Training that a later step depends on (explain's step, gradcheck's second check) must
    have completed: a Ctrl-C it caught is raised again (there is no run to keep), and a
    divergence is a DivergedError saying what it came `before`."""
    status = result.status[0]
    if status == "interrupted":
        raise KeyboardInterrupt
    if status != "completed":
        raise DivergedError(
            f"training {status} at epoch {result.diverged_at[0] or result.epochs_run[0]}, before {before}"
        )


def fit(
    cfg: Config,
    data: Dataset,
    net: Network,
    learning_rates: Optional[Sequence[Any]] = None,
    callback: Optional[Callback] = None,
    start_epoch: int = 0,
    optimizer: Optional[Optimizer] = None,
    resume: Optional[Sequence[Optional[Checkpoint]]] = None,
    stop_after: Optional[int] = None,
    horizon: Optional[int] = None,
    per_model: Optional[Mapping[str, Sequence[Any]]] = None,
    lr_changes: Optional[Mapping[int, float]] = None,
) -> TrainResult:
    """Train `net` in place as the config's training section says (see `training.train`);
    with training.diagnostics, the result carries their `Recorder`."""
    t = cfg.training
    recorder = None
    if t.diagnose_every is not None:
        epochs = t.epochs if stop_after is None else min(t.epochs, stop_after)
        recorder = Recorder(net, data.X, data.Y, LOSSES[t.loss], t.diagnose_every, epochs, start_epoch)
        if callback is not None:
            inner, record = callback, recorder

            def callback(epoch: int, loss: Any, seen: Any) -> None:
                inner(epoch, loss, seen)
                record(epoch, loss, seen)

        else:
            callback = recorder
    result = train(
        t, data, net, cfg.seed, learning_rates, callback, start_epoch, optimizer, resume, stop_after,
        horizon, cfg.model.dropout_rates, per_model, lr_changes,
    )  # fmt: skip
    if recorder is not None:
        recorder.finish(result.net.theta, result.epochs_run, result.restored_epoch)
        result.diagnostics = recorder
    return result
