"""Look inside training: gradient checks and a step-by-step account of one update.

`gradcheck` compares the analytic gradient of every weight and bias (the training code path,
`Network.loss_and_grad`) with central finite differences. `explain_step` lays out one
full-batch training step as tables: forward pass (z and a of every neuron), loss, backward
pass (delta of every neuron), gradients and the update, with textbook names: w1, w2, ...
numbered layer by layer and row by row; b1, b2, ...; neurons x1.., h1.., o1...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from backprop_cli.config import Config
from backprop_cli.data import Dataset
from backprop_cli.errors import RunError
from backprop_cli.losses import LOSSES
from backprop_cli.network import Network
from backprop_cli.train import build_network, train


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


def check_gradients(net: Network, data: Dataset, cfg: Config, epoch: int, eps: float, threshold: float,
                    analytic: Optional[np.ndarray] = None, method: str = "five_point") -> GradCheck:
    """Compare the analytic gradient (or `analytic`, if given) with finite differences at net's weights.

    The default five-point central difference has error O(h^4) and round-off about
    eps * |L| / h: near 1e-12 with h = 1e-4, where the classic two-point formula needs
    h = 1e-6 and so carries round-off near 1e-10.
    """
    loss_fn = LOSSES[cfg.training.loss]
    X, Y = data.X.astype(np.float64), data.Y.astype(np.float64)
    with np.errstate(over="ignore"):
        loss = float(net.loss_and_grad(X, Y, loss_fn, net.workspace(len(X)))[0])
        grad = net.grad[0].copy() if analytic is None else np.asarray(analytic, float)
        net.numerical_grad(X, Y, loss_fn, eps, method)
    numeric = net.grad[0].copy()
    names = net.param_names()
    rel = relative_error(grad, numeric, noise_floor(loss, eps, threshold))
    err = np.abs(grad - numeric)
    layers = []
    for l in range(net.n_layers):
        idx = [p for p, name in enumerate(names) if name[1] == l]
        worst = idx[int(np.argmax(rel[idx]))]
        layers.append(LayerCheck(l + 1, len(idx), float(err[idx].max()), float(rel[idx].max()), names[worst][0],
                                 bool(rel[idx].max() <= threshold)))
    return GradCheck(epoch, loss, layers, threshold)


DEFAULT_STEP = {"five_point": 1e-4, "central": 1e-6, "forward": 1e-6}


def gradcheck(cfg: Config, data: Dataset, epochs: int = 0, eps: Optional[float] = None, threshold: float = 1e-6,
              method: str = "five_point") -> list:
    """Check at the initial weights and, with epochs > 0, again after that many epochs (float64)."""
    cfg = cfg.model_copy(deep=True)
    cfg.training.dtype = "float64"
    data = Dataset(data.X.astype(np.float64), data.Y.astype(np.float64), classification=data.classification)
    eps = DEFAULT_STEP[method] if eps is None else eps
    net = build_network(cfg)
    reports = [check_gradients(net, data, cfg, 0, eps, threshold, method=method)]
    if epochs:
        cfg.training.epochs = epochs
        result = train(cfg, data, net)
        if result.status[0] != "completed":
            raise RunError(f"training {result.status[0]} at epoch {result.diverged_at[0] or result.epochs_run[0]} "
                           f"of {epochs}, before the second check")
        reports.append(check_gradients(net, data, cfg, epochs, eps, threshold, method=method))
    return reports


# -- explain ------------------------------------------------------------------------------------


@dataclass
class Section:
    """One table of the explanation: a title, column headers and rows of values."""

    title: str
    headers: list
    rows: list = field(default_factory=list)
    note: str = ""


def neuron_names(sizes) -> list:
    """[[x1, x2], [h1, h2], ..., [o1, ...]]: hidden neurons numbered across hidden layers."""
    names, hidden = [[f"x{i + 1}" for i in range(sizes[0])]], 0
    for size in sizes[1:-1]:
        names.append([f"h{hidden + i + 1}" for i in range(size)])
        hidden += size
    names.append([f"o{i + 1}" for i in range(sizes[-1])])
    return names


def g(x) -> str:
    """At least 6 significant digits: enough to check a hand calculation."""
    return f"{float(x):.9g}"


def explain_step(cfg: Config, data: Dataset, epoch: int = 1, sample: int = 1):
    """Tables for training step `epoch` (1-based), showing neuron values for sample `sample`.

    The step is a full-batch step (as in training without batch_size); gradients are over the
    whole batch, while z, a and delta are shown for the chosen sample. Returns (sections,
    weights before the step, weights after).
    """
    cfg = cfg.model_copy(deep=True)
    cfg.training.batch_size = None
    cfg.training.epochs = epoch
    net = build_network(cfg)
    before = {}

    def keep_weights(e, loss):
        if e == epoch - 1:
            before["theta"] = net.theta.copy()

    result = train(cfg, data, net, callback=keep_weights)
    if result.status[0] != "completed":
        return None, None, result
    old = before.get("theta", None)
    if old is None:  # epoch 1: the initial weights
        old = build_network(cfg).theta.copy()
    new = net.theta.copy()
    probe = build_network(cfg)
    probe.theta[:] = old
    X, Y = data.X, data.Y
    ws = probe.workspace(len(X))
    loss_fn = LOSSES[cfg.training.loss]
    with np.errstate(over="ignore"):
        loss = float(probe.loss_and_grad(X, Y, loss_fn, ws)[0])
    grad = probe.grad[0].copy()
    zs, acts = probe.trace(X)
    i = sample - 1
    names = neuron_names(probe.sizes)
    sections = []
    fwd = Section(f"forward pass (sample {sample}: inputs {', '.join(g(v) for v in X[i])})", ["layer", "neuron", "z (net input)", "a (activation)"])
    for n, v in zip(names[0], X[i]):
        fwd.rows.append(["input", n, "", g(v)])
    for l in range(probe.n_layers):
        kind = "output" if l == probe.n_layers - 1 else f"hidden {l + 1}"
        for n, z, a in zip(names[l + 1], zs[l][i], acts[l + 1][i]):
            fwd.rows.append([f"{kind} ({probe.activations[l]})", n, g(z), g(a)])
    sections.append(fwd)
    sample_loss = float(loss_fn.value(acts[-1][i : i + 1][None], Y[i : i + 1])[0])
    lossec = Section(f"loss ({cfg.training.loss})", ["neuron", "output", "target"])
    for n, a, y in zip(names[-1], acts[-1][i], Y[i]):
        lossec.rows.append([n, g(a), g(y)])
    lossec.note = f"loss over the batch of {len(X)}: {g(loss)}" + (f"; sample {sample} alone: {g(sample_loss)}" if len(X) > 1 else "")
    sections.append(lossec)
    back = Section(f"backward pass (sample {sample}): delta = dL/dz", ["layer", "neuron", "delta"])
    for l in range(probe.n_layers - 1, -1, -1):
        kind = "output" if l == probe.n_layers - 1 else f"hidden {l + 1}"
        for n, d in zip(names[l + 1], ws.D[l][0, i]):
            back.rows.append([kind, n, g(d)])
    sections.append(back)
    lr = cfg.training.learning_rate
    upd = Section(f"gradients and update (learning rate {g(lr)}, optimizer {cfg.training.optimizer})",
                  ["parameter", "connects", "old", "dL/dparam", "new"])
    for p, (pname, layer, kind, row, col) in enumerate(probe.param_names()):
        to = names[layer + 1][row]
        connects = f"{names[layer][col]} -> {to}" if kind == "weight" else f"bias of {to}"
        upd.rows.append([pname, connects, g(old[0, p]), g(grad[p]), g(new[0, p])])
    if cfg.training.optimizer == "sgd" and not cfg.training.weight_decay:
        upd.note = "new = old - learning_rate * dL/dparam"
    sections.append(upd)
    return sections, (probe.get_params(0), old, new), result
