"""Loss functions, looked up by name in `LOSSES`.

Arrays carry a leading model axis: outputs `a` and the output layer's net inputs (logits) `z`
are (K, n_samples, n_out), targets `y` are (n_samples, n_out) shared by the K models, and every
loss value is a (K,) vector.

| loss          | value                                              | dL/dz (output delta)        |
|---------------|----------------------------------------------------|-----------------------------|
| mse           | mean over samples and outputs of (a - y)^2         | 2 (a - y) f'(z) / (n m)     |
| sse           | 1/2 sum over samples and outputs of (a - y)^2      | (a - y) f'(z)               |
| bce           | mean of -[y log a + (1 - y) log(1 - a)], a = sigmoid(z) | (a - y) / (n m)        |
| cross_entropy | mean over samples of -sum_k y_k log a_k, a = softmax(z) | (a - y) / n            |

bce and cross_entropy only follow their own output activation (the config checks it), so both
are computed from the logits, as PyTorch's BCEWithLogitsLoss and CrossEntropyLoss do:
bce = mean of softplus(z) - y z, with softplus(z) = log(1 + e^z) = logaddexp(0, z);
cross_entropy = mean over samples of sum_k y_k (logsumexp(z) - z_k). Both stay exact where
the output saturates (a rounds to 0 or 1), where log(a) would lose everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from backprop_cli.activations import Activation


def _squared_sum(e: np.ndarray, scratch: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Per-model sum of squares times `scale`, (K,), of e (K, n, m)."""
    if e.shape[0] == 1:
        # one model: vdot is one NumPy call where multiply, reduce and scale are three
        return np.array((scale * np.vdot(e, e),))
    np.multiply(e, e, out=scratch)
    total = np.add.reduce(scratch, axis=(-2, -1))
    total *= scale
    return total


def _mse_value(a: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    e = a - y
    return _squared_sum(e, e, 1.0 / (a.shape[-2] * a.shape[-1]))


def _sse_value(a: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    e = a - y
    return _squared_sum(e, e, 0.5)


def _bce_value(a: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    # -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] = softplus(z) - y z
    terms = np.logaddexp(0.0, z)
    terms -= y * z
    return np.add.reduce(terms, axis=(-2, -1)) / (z.shape[-2] * z.shape[-1])


def _ce_value(a: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    # -sum_k y_k log softmax(z)_k = sum_k y_k (logsumexp(z) - z_k); the row maximum keeps exp finite
    top = z.max(axis=-1, keepdims=True)
    lse = np.log(np.add.reduce(np.exp(z - top), axis=-1, keepdims=True))
    lse += top
    terms = lse - z
    terms *= y
    return np.add.reduce(terms, axis=(-2, -1)) / z.shape[-2]


def _mse_delta(
    a: np.ndarray, y: np.ndarray, z: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray
) -> np.ndarray:
    n_m = a.shape[-2] * a.shape[-1]
    np.subtract(a, y, out=out)
    loss = _squared_sum(out, scratch, 1.0 / n_m)
    out *= 2.0 / n_m
    if act.name != "identity":
        assert act.grad is not None, "softmax feeds only cross_entropy (config check)"
        out *= act.grad(a, scratch)
    return loss


def _sse_delta(
    a: np.ndarray, y: np.ndarray, z: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray
) -> np.ndarray:
    np.subtract(a, y, out=out)
    loss = _squared_sum(out, scratch, 0.5)
    if act.name != "identity":
        assert act.grad is not None, "softmax feeds only cross_entropy (config check)"
        out *= act.grad(a, scratch)
    return loss


def _bce_delta(
    a: np.ndarray, y: np.ndarray, z: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray
) -> np.ndarray:
    # With a sigmoid output, dL/dz = dL/da * a(1 - a) collapses to (a - y) / (n m).
    np.subtract(a, y, out=out)
    out *= 1.0 / (a.shape[-2] * a.shape[-1])
    return _bce_value(a, y, z)


def _ce_delta(
    a: np.ndarray, y: np.ndarray, z: np.ndarray, act: Activation, out: np.ndarray, scratch: np.ndarray
) -> np.ndarray:
    # With a softmax output and targets summing to 1, dL/dz collapses to (a - y) / n.
    np.subtract(a, y, out=out)
    out *= 1.0 / a.shape[-2]
    return _ce_value(a, y, z)


@dataclass(frozen=True)
class Loss:
    """A loss: `value(a, y, z)` -> (K,), and `delta(a, y, z, act, out, scratch)`.

    `delta` writes dL/dz of the output layer into `out` and returns the loss value; `scratch`
    is a buffer shaped like `a`. `output_activations` lists the output activations it accepts
    (None: any except softmax).
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    delta: Callable[[np.ndarray, np.ndarray, np.ndarray, Activation, np.ndarray, np.ndarray], np.ndarray]
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
