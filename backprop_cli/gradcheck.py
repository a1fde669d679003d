"""Gradient checks: the analytic gradient (the training code path, `Network.loss_and_grad`)
against finite differences, judged per layer.

With dropout, both use the masks training draws for the first batch of the checked epoch,
held fixed across the difference steps; with l1 or weight_decay, both are gradients of the
penalised loss (L + l1 sum |w| + weight_decay / 2 sum w^2, what training descends), and a
parameter whose difference steps cross 0 under l1 is a kink. Clipping is not a gradient: it is
not checked.

Parameters whose difference stencil moves a relu unit across its kink are counted as "kink"
and not judged: the loss has no derivative there to compare with. On a net the size of digits,
differences for every parameter cost more than training, so a seeded sample of each layer's
parameters may be checked instead (CS231n's sparse gradient check); the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from backprop_cli.data import Dataset
from backprop_cli.differences import FiniteDifferences, Progress
from backprop_cli.errors import ConfigError
from backprop_cli.experiment import fit, network, require_completed
from backprop_cli.initializers import random_streams
from backprop_cli.losses import LOSSES
from backprop_cli.network import Network
from backprop_cli.regularization import Dropout

if TYPE_CHECKING:
    from backprop_cli.config import Config

DEFAULT_STEP = {"five_point": 1e-4, "central": 1e-6, "forward": 1e-6}
SAMPLE_PER_LAYER = 64  # parameters checked per layer unless all are asked for


def noise_floor(loss: float, h: float, threshold: float) -> float:
    """Denominator floor of the relative error.

    Finite differences carry round-off of about eps * |L| / h (eps = 2.2e-16). Gradients below
    noise / threshold (noise = 10 eps max(|L|, 1) / h) cannot be resolved to the threshold
    relatively, so they are judged by their absolute error against that noise instead.
    """
    return 10 * float(np.finfo(np.float64).eps) * max(abs(loss), 1.0) / h / threshold


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> np.ndarray:
    """|a - n| / max(|a|, |n|, floor), elementwise."""
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return np.abs(analytic - numeric) / scale


@dataclass
class LayerCheck:
    layer: int  # 1-based
    n_params: int  # in the layer
    checked: int  # how many were compared (all, or a sample)
    kinks: int  # of those, how many straddle a relu kink (shown, not judged)
    max_abs: float  # over the judged parameters
    max_rel: float
    worst: str  # name of the judged parameter with the largest relative error ("-" if none)
    passed: bool


@dataclass
class GradCheck:
    epoch: int
    loss: float
    layers: list[LayerCheck]
    threshold: float
    sampled: bool  # a sample of each layer's parameters, not all of them

    @property
    def passed(self) -> bool:
        return all(layer.passed for layer in self.layers)


def likely_cause(report: GradCheck, activations: list[str], loss: str) -> str:
    """Where a wrong gradient most likely comes from: an error in a layer's delta reaches every
    layer before it, so the deepest failing layer names it."""
    failing = [layer for layer in report.layers if not layer.passed]
    if not failing:
        return ""
    deepest = failing[-1]
    where = f"layer {deepest.layer} at {deepest.worst} (relative error {deepest.max_rel:.3g})"
    if deepest.layer == len(report.layers):
        cause = f"the output delta: the derivative of {loss} through the {activations[-1]} output"
    else:
        cause = f"the derivative of {activations[deepest.layer - 1]} in hidden layer {deepest.layer}"
    return f"{where}; likely cause: {cause}"


def _checked_params(net: Network, sample: Optional[int], seed: int) -> list[np.ndarray]:
    """Per layer, the flat indices of the parameters to check: all, or a seeded sample."""
    rng = np.random.default_rng(seed)
    names = net.param_names()
    chosen = []
    for l in range(net.n_layers):
        idx = np.array([p for p, name in enumerate(names) if name.layer == l])
        if sample is not None and len(idx) > sample:
            idx = np.sort(rng.choice(idx, sample, replace=False))
        chosen.append(idx)
    return chosen


def check_gradients(
    net: Network,
    data: Dataset,
    loss: str,
    epoch: int,
    eps: float,
    threshold: float,
    analytic: Optional[np.ndarray] = None,
    method: str = "five_point",
    sample: Optional[int] = None,
    seed: int = 0,
    progress: Optional[Progress] = None,
    dropout: Optional[list[np.ndarray]] = None,
    l1: float = 0.0,
    l2: float = 0.0,
) -> GradCheck:
    """Compare the analytic gradient (or `analytic`, if given) with finite differences at the
    weights of net's model 0.

    With `dropout` (one mask per hidden layer, as training draws them) both use those masks,
    held fixed across the difference steps; with `l1` and `l2` (weight_decay) both are of the
    penalised loss L + l1 sum |w| + l2 / 2 sum w^2, whose gradient training follows.

    The default five-point central difference has error O(h^4) and round-off about
    eps * |L| / h: near 1e-12 with h = 1e-4, where the classic two-point formula needs
    h = 1e-6 and so carries round-off near 1e-10.
    """
    loss_fn = LOSSES[loss]
    X, Y = data.X.astype(np.float64), data.Y.astype(np.float64)
    ws = net.workspace(len(X))
    with np.errstate(over="ignore"):
        if dropout is None:
            value = net.loss_and_grad(X, Y, loss_fn, ws)
        else:
            value = net.loss_and_grad_dropped(X, Y, loss_fn, ws, dropout)
    theta = net.theta[0]
    value = value + l1 * np.abs(theta).sum() + l2 / 2 * (theta * theta).sum()
    grad = net.grad[0] + l1 * np.sign(theta) + l2 * theta if analytic is None else np.asarray(analytic, float)
    layers_idx = _checked_params(net, sample, seed)
    params = np.concatenate(layers_idx)
    fd = FiniteDifferences(net, len(X), method, eps, kinks=True)
    numeric, kinked = fd.gradient(X, Y, loss_fn, value, params, progress, dropout, l1, l2)
    numeric, kinked = numeric[0], kinked[0]
    names = net.param_names()
    rel = relative_error(grad[params], numeric, noise_floor(float(value[0]), eps, threshold))
    err = np.abs(grad[params] - numeric)
    layers, at = [], 0
    for l, idx in enumerate(layers_idx):
        part = slice(at, at + len(idx))
        at += len(idx)
        judged = ~kinked[part]
        layer_rel, layer_err = rel[part][judged], err[part][judged]
        worst = names[idx[judged][int(np.argmax(layer_rel))]].name if judged.any() else "-"
        layers.append(
            LayerCheck(
                layer=l + 1,
                n_params=sum(1 for name in names if name.layer == l),
                checked=len(idx),
                kinks=int((~judged).sum()),
                max_abs=float(layer_err.max()) if judged.any() else 0.0,
                max_rel=float(layer_rel.max()) if judged.any() else 0.0,
                worst=worst,
                passed=bool(not judged.any() or layer_rel.max() <= threshold),
            )
        )
    return GradCheck(epoch, float(value[0]), layers, threshold, sampled=bool(sample is not None and at < len(names)))


def gradcheck(
    cfg: Config,
    data: Dataset,
    epochs: int = 0,
    eps: Optional[float] = None,
    threshold: float = 1e-6,
    method: str = "five_point",
    sample: Optional[int] = SAMPLE_PER_LAYER,
    progress: Optional[Progress] = None,
) -> list[GradCheck]:
    """Check at the initial weights and, with epochs > 0, again after that many epochs (float64).

    `sample`: parameters checked per layer (a sample seeded by the config's seed); None checks all.
    """
    if epochs > cfg.training.epochs:
        raise ConfigError(
            f"--epochs {epochs}: the run trains {cfg.training.epochs} epochs (training.epochs); "
            f"set training.epochs to {epochs} or more to check after that many"
        )
    cfg = cfg.model_copy(deep=True)
    cfg.training.dtype = "float64"  # the one change: the checks need double precision

    def f64(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
        return None if a is None else a.astype(np.float64)

    data = Dataset(
        data.X.astype(np.float64), data.Y.astype(np.float64), f64(data.X_val), f64(data.Y_val),
        classification=data.classification,
    )  # fmt: skip
    eps = DEFAULT_STEP[method] if eps is None else eps
    net = network(cfg)
    t = cfg.training
    rates = cfg.model.dropout_rates
    masks = Dropout(np.array([rates]), net.sizes[1:-1], net.dtype, random_streams(cfg.seed)[3]) if any(rates) else None

    def check(epoch: int) -> GradCheck:
        return check_gradients(
            net,
            data,
            t.loss,
            epoch,
            eps,
            threshold,
            method=method,
            sample=sample,
            seed=cfg.seed,
            progress=progress,
            # the masks of the first batch of epoch + 1, as training would draw them
            dropout=None if masks is None else [m.copy() for m in masks.masks(len(data.X))],
            l1=t.l1,
            l2=t.weight_decay,
        )

    reports = [check(0)]
    if epochs:
        # the config's own training, stopped after `epochs` (its schedule runs over all of them)
        result = fit(cfg, data, net, stop_after=epochs)
        require_completed(result, f"the check after {epochs} epochs")
        saved = result.checkpoint(0)
        if masks is not None and saved is not None and saved.dropout_order is not None:
            masks.rng.bit_generator.state = saved.dropout_order
        reports.append(check(result.epochs_run[0]))
    return reports
