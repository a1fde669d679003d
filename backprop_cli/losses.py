"""Loss functions, looked up by name in `LOSSES`.

Arrays carry a leading model axis: outputs `a` are (K, n_samples, n_out), targets `y` are
(n_samples, n_out) shared by the K models, and every loss value is a (K,) vector.

| loss          | value                                              | dL/da                 |
|---------------|----------------------------------------------------|-----------------------|
| mse           | mean over samples and outputs of (a - y)^2         | 2 (a - y) / (n m)     |
| sse           | 1/2 sum over samples and outputs of (a - y)^2      | a - y                 |
| bce           | mean of -[y log a + (1 - y) log(1 - a)]            | (a - y) / (a (1 - a) n m) |
| cross_entropy | mean over samples of -sum_k y_k log a_k            | -y / (a n)            |

Logs are clamped at -100 (as PyTorch does), so a = 0 or 1 exactly gives a finite loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from backprop_cli.activations import Activation

LOG_FLOOR = -100.0


def _clamped_log(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    with np.errstate(divide="ignore"):
        out = np.log(x, out=out)
    return np.maximum(out, LOG_FLOOR, out=out)


def _squared_sum(e: np.ndarray, scratch: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Per-model sum of squares times `scale`, (K,), of e (K, n, m)."""
    if e.shape[0] == 1:
        # one model: vdot is one NumPy call where multiply, reduce and scale are three
        return np.array((scale * np.vdot(e, e),))
    np.multiply(e, e, out=scratch)
    total = np.add.reduce(scratch, axis=(-2, -1))
    total *= scale
    return total


def _mse_value(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    e = a - y
    return _squared_sum(e, e, 1.0 / (a.shape[-2] * a.shape[-1]))


def _sse_value(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    e = a - y
    return _squared_sum(e, e, 0.5)


def _bce_value(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    terms = y * _clamped_log(a) + (1.0 - y) * _clamped_log(1.0 - a)
    return -terms.sum(axis=(-2, -1)) / (a.shape[-2] * a.shape[-1])


def _ce_value(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -(y * _clamped_log(a)).sum(axis=(-2, -1)) / a.shape[-2]


def _mse_delta(a: np.ndarray, y: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    n_m = a.shape[-2] * a.shape[-1]
    np.subtract(a, y, out=out)
    loss = _squared_sum(out, scratch, 1.0 / n_m)
    out *= 2.0 / n_m
    if act.name != "identity":
        assert act.grad is not None, "softmax feeds only cross_entropy (config check)"
        out *= act.grad(a, scratch)
    return loss


def _sse_delta(a: np.ndarray, y: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    np.subtract(a, y, out=out)
    loss = _squared_sum(out, scratch, 0.5)
    if act.name != "identity":
        assert act.grad is not None, "softmax feeds only cross_entropy (config check)"
        out *= act.grad(a, scratch)
    return loss


def _bce_delta(a: np.ndarray, y: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    # With a sigmoid output, dL/dz = dL/da * a(1 - a) collapses to (a - y) / (n m).
    n_m = a.shape[-2] * a.shape[-1]
    loss = _bce_value(a, y)
    np.subtract(a, y, out=out)
    out *= 1.0 / n_m
    return loss


def _ce_delta(a: np.ndarray, y: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    # With a softmax output and targets summing to 1, dL/dz collapses to (a - y) / n.
    n = a.shape[-2]
    _clamped_log(a, out=scratch)
    scratch *= y
    loss = np.add.reduce(scratch, axis=(-2, -1))
    loss *= -1.0 / n
    np.subtract(a, y, out=out)
    out *= 1.0 / n
    return loss


@dataclass(frozen=True)
class Loss:
    """A loss: `value(a, y)` -> (K,), and `delta(a, y, act, out, scratch)`.

    `delta` writes dL/dz of the output layer into `out` and returns the loss value; `scratch`
    is a buffer shaped like `a`. `output_activations` lists the output activations it accepts
    (None: any except softmax).
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray], np.ndarray]
    delta: Callable[[np.ndarray, np.ndarray, Activation, np.ndarray, np.ndarray], np.ndarray]
    output_activations: Optional[tuple[str, ...]] = None

    def accepts(self, activation: str) -> bool:
        if self.output_activations is None:
            return activation != "softmax"
        return activation in self.output_activations


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", _mse_value, _mse_delta),
    "sse": Loss("sse", _sse_value, _sse_delta),
    "bce": Loss("bce", _bce_value, _bce_delta, ("sigmoid",)),
    "cross_entropy": Loss("cross_entropy", _ce_value, _ce_delta, ("softmax",)),
}
