"""Learning-rate sweeps and seed studies: K models, one vectorized training pass.

A sweep starts every rate from identical initial weights, so only the rate differs, and
trains them together on the model axis. The `chain` protocol instead continues each rate from
the previous rate's final weights (weights never reset between rates): sequential, and not a
fair comparison, but it is how a widely shared table of this experiment was produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from backprop_cli.data import Dataset
from backprop_cli.errors import ConfigError
from backprop_cli.experiment import dataset, fit, network, seeds_share_a_pass
from backprop_cli.metrics import epochs_to
from backprop_cli.training import TrainResult

if TYPE_CHECKING:
    from backprop_cli.config import Config


DEFAULT_SWEEP_RATES = [0.1, 0.2, 0.5, 0.8, 1.0, 2.0]  # the classic six-panel figure's rates
MAX_RATES = 100_000  # a sweep this wide is a memory error, not a study


def check_rates(rates: Sequence[float], given: str = "") -> list[float]:
    """The rates of a sweep, checked: at least one, each finite and > 0, none twice, at most
    MAX_RATES. `given` (e.g. `--lrs 0.1,-1`) prefixes the message; a ConfigError otherwise."""
    where = f"{given}: " if given else ""
    try:
        found = [float(r) for r in rates]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}learning rates must be numbers (got {list(rates)!r:.60})") from None
    if not found:
        raise ConfigError(f"{where}no learning rates given")
    if len(found) > MAX_RATES:
        raise ConfigError(f"{where}at most {MAX_RATES:,} rates (got {len(found):,})")
    bad = [r for r in found if not (math.isfinite(r) and r > 0)]
    if bad:
        raise ConfigError(f"{where}every learning rate must be finite and > 0 (got {bad[0]:g})")
    twice = sorted({r for r in found if found.count(r) > 1})
    if twice:
        raise ConfigError(f"learning rate {twice[0]!r} is given twice: each rate trains once")
    return found


def default_rates(cfg: Config) -> list[float]:
    """The rates a sweep compares when none are given: sweep.learning_rates, else the six classic ones."""
    return list(cfg.sweep.learning_rates) if cfg.sweep is not None else list(DEFAULT_SWEEP_RATES)


def log_spaced(low: float, high: float, n: int) -> list[float]:
    """n learning rates from low to high, evenly spaced on a log scale."""
    return [float(r) for r in np.geomspace(low, high, n)]


@dataclass
class Entry:
    """One model of a study: its label value (rate or seed) and where its result lives."""

    value: float
    result: TrainResult
    model: int
    start_params: list  # initial [(weights, biases)] of this model

    @property
    def losses(self) -> np.ndarray:
        return self.result.history["loss"][: self.result.epochs_run[self.model], self.model]

    @property
    def status(self) -> str:
        return self.result.status[self.model]

    def final_loss(self) -> Optional[float]:
        return self.result.final("loss", self.model)

    def best_loss(self) -> Optional[float]:
        return self.result.best("loss", self.model)

    def epochs_to(self, target: float) -> Optional[int]:
        """The first epoch whose recorded loss is at or below `target` (None if never)."""
        return epochs_to(self.losses, self.result.epochs, target)

    def params(self) -> np.ndarray:
        return self.result.net.theta[self.model]


def running(callback: Optional[Callable], offset: int) -> Optional[Callable]:
    """The callback of one of several passes in a row, which sees one running epoch count
    (pass i's epoch k is offset + k), so a progress display can span them all."""
    if callback is None:
        return None
    return lambda epoch, loss, seen: callback(offset + epoch, loss, seen)


def check_no_changes(cfg: Config) -> None:
    """A sweep gives each model its own rate: training.lr_changes (one rate for every model)
    has no place in it."""
    if cfg.training.lr_changes:
        raise ConfigError(
            f"{cfg.name}: training.lr_changes sets one rate for every model; a sweep gives each model its own "
            "(train the config, or drop lr_changes)"
        )


def sweep_learning_rates(
    cfg: Config,
    data: Dataset,
    rates: Sequence[float],
    chain: bool = False,
    callback: Optional[Callable] = None,
    before: Optional[Callable] = None,
) -> list[Entry]:
    """Train one model per rate; batched on the model axis, or chained one after another.

    Chained, the callback sees one running epoch count across the rates (rate i's epoch k is
    i * epochs + k), so a progress display can span the whole chain. `before` is called with
    the batched network before its first epoch (a live page shows its starting weights).
    """
    if not chain:
        net = network(cfg, n_models=len(rates))
        if before is not None:
            before(net)
        start = net.get_params(0)
        result = fit(cfg, data, net, learning_rates=list(rates), callback=callback)
        return [Entry(rate, result, k, start) for k, rate in enumerate(rates)]
    entries, previous = [], None
    for i, rate in enumerate(rates):
        net = network(cfg)
        if previous is not None:
            net.set_params(previous)
        start = net.get_params(0)
        result = fit(cfg, data, net, learning_rates=[rate], callback=running(callback, i * cfg.training.epochs))
        entries.append(Entry(rate, result, 0, start))
        previous = net.get_params(0)
        if result.status[0] == "interrupted":
            break
    return entries


def seed_study(
    cfg: Config, data: Dataset, seeds: Sequence[int], callback: Optional[Callable] = None, source: str = "config"
) -> list[Entry]:
    """Train one model per seed, each exactly as `train --seed N` would: the seed draws the
    initial weights and, where the config depends on it, the data, its split and the batch
    order. Seeds that decide only the initial weights train in one batched pass; otherwise
    one pass per seed, one after another (the callback then sees one running epoch count)."""
    if seeds_share_a_pass(cfg):
        net = network(cfg, seeds=list(seeds))
        starts = [net.get_params(k) for k in range(len(seeds))]
        result = fit(cfg, data, net, callback=callback)
        return [Entry(seed, result, k, starts[k]) for k, seed in enumerate(seeds)]
    entries = []
    for i, seed in enumerate(seeds):
        mine = cfg.model_copy(deep=True)
        mine.seed = seed
        net = network(mine)
        start = net.get_params(0)
        result = fit(mine, dataset(mine, source), net, callback=running(callback, i * cfg.training.epochs))
        entries.append(Entry(seed, result, 0, start))
        if result.status[0] == "interrupted":
            break
    return entries


def seed_passes(cfg: Config, seeds: Sequence[int]) -> int:
    """How many training passes a seed study takes: one, or one per seed (see seed_study)."""
    return 1 if seeds_share_a_pass(cfg) else len(seeds)
