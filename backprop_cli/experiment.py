"""A whole config's pieces: its data, its network, its training. Thin adapters from a `Config`
to the sections and plain values that `data` and `train` take, for the modules above them
(sweeps, checks, run folders, the command line) and for notebooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from backprop_cli.data import Dataset, load_data
from backprop_cli.initializers import random_streams
from backprop_cli.network import Network
from backprop_cli.optimizers import Optimizer
from backprop_cli.train import Callback, TrainResult, build_network, train

if TYPE_CHECKING:
    from backprop_cli.config import Config


def dataset(cfg: Config, source: str) -> Dataset:
    """The config's data (its seed's data stream); `source` names the config file in messages."""
    return load_data(cfg.data, cfg.model, cfg.training.loss, cfg.training.dtype, source, random_streams(cfg.seed)[0])


def network(cfg: Config, n_models: int = 1, seeds: Optional[Sequence[int]] = None) -> Network:
    """K = n_models copies of the config's initial weights (or one model per seed of `seeds`)."""
    return build_network(cfg.model, cfg.training.dtype, cfg.seed, n_models, seeds)


def fit(
    cfg: Config,
    data: Dataset,
    net: Network,
    learning_rates: Optional[Sequence[float]] = None,
    callback: Optional[Callback] = None,
    start_epoch: int = 0,
    optimizer: Optional[Optimizer] = None,
) -> TrainResult:
    """Train `net` in place as the config's training section says."""
    return train(cfg.training, data, net, cfg.seed, learning_rates, callback, start_epoch, optimizer)
