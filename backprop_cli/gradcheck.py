"""Gradient checks: the analytic gradient of every weight and bias (the training code path,
`Network.loss_and_grad`) against finite differences, judged per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from backprop_cli.data import Dataset
from backprop_cli.errors import DivergedError
from backprop_cli.experiment import fit, network
from backprop_cli.losses import LOSSES
from backprop_cli.network import Network

if TYPE_CHECKING:
    from backprop_cli.config import Config


def noise_floor(loss: float, h: float, threshold: float) -> float:
    """Denominator floor of the relative error.

    Finite differences carry round-off of about eps * |L| / h (eps = 2.2e-16). Gradients below
    noise / threshold (noise = 10 eps max(|L|, 1) / h) cannot be resolved to the threshold
    relatively, so they are judged by their absolute error against that noise instead.
    """
    return 10 * np.finfo(np.float64).eps * max(abs(loss), 1.0) / h / threshold


@dataclass
class LayerCheck:
    layer: int
    n_params: int
    max_abs: float
    max_rel: float
    worst: str  # name of the parameter with the largest relative error
    passed: bool


@dataclass
class GradCheck:
    epoch: int
    loss: float
    layers: list
    threshold: float

    @property
    def passed(self) -> bool:
        return all(layer.passed for layer in self.layers)


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> np.ndarray:
    """|a - n| / max(|a|, |n|, floor), elementwise."""
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return np.abs(analytic - numeric) / scale


def check_gradients(
    net: Network,
    data: Dataset,
    loss: str,
    epoch: int,
    eps: float,
    threshold: float,
    analytic: Optional[np.ndarray] = None,
    method: str = "five_point",
) -> GradCheck:
    """Compare the analytic gradient (or `analytic`, if given) with finite differences at net's weights.

    The default five-point central difference has error O(h^4) and round-off about
    eps * |L| / h: near 1e-12 with h = 1e-4, where the classic two-point formula needs
    h = 1e-6 and so carries round-off near 1e-10.
    """
    loss_fn = LOSSES[loss]
    X, Y = data.X.astype(np.float64), data.Y.astype(np.float64)
    with np.errstate(over="ignore"):
        value = float(net.loss_and_grad(X, Y, loss_fn, net.workspace(len(X)))[0])
        grad = net.grad[0].copy() if analytic is None else np.asarray(analytic, float)
        net.numerical_grad(X, Y, loss_fn, eps, method)
    numeric = net.grad[0].copy()
    names = net.param_names()
    rel = relative_error(grad, numeric, noise_floor(value, eps, threshold))
    err = np.abs(grad - numeric)
    layers = []
    for l in range(net.n_layers):
        idx = [p for p, name in enumerate(names) if name.layer == l]
        worst = idx[int(np.argmax(rel[idx]))]
        layers.append(
            LayerCheck(
                l + 1,
                len(idx),
                float(err[idx].max()),
                float(rel[idx].max()),
                names[worst].name,
                bool(rel[idx].max() <= threshold),
            )
        )
    return GradCheck(epoch, value, layers, threshold)


DEFAULT_STEP = {"five_point": 1e-4, "central": 1e-6, "forward": 1e-6}


def gradcheck(
    cfg: Config,
    data: Dataset,
    epochs: int = 0,
    eps: Optional[float] = None,
    threshold: float = 1e-6,
    method: str = "five_point",
) -> list:
    """Check at the initial weights and, with epochs > 0, again after that many epochs (float64)."""
    cfg = cfg.model_copy(deep=True)
    cfg.training.dtype = "float64"
    data = Dataset(data.X.astype(np.float64), data.Y.astype(np.float64), classification=data.classification)
    eps = DEFAULT_STEP[method] if eps is None else eps
    net = network(cfg)
    reports = [check_gradients(net, data, cfg.training.loss, 0, eps, threshold, method=method)]
    if epochs:
        cfg.training.epochs = epochs
        result = fit(cfg, data, net)
        if result.status[0] != "completed":
            raise DivergedError(
                f"training {result.status[0]} at epoch {result.diverged_at[0] or result.epochs_run[0]} "
                f"of {epochs}, before the second check"
            )
        reports.append(check_gradients(net, data, cfg.training.loss, epochs, eps, threshold, method=method))
    return reports
