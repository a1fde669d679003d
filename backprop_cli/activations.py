"""Activation functions and their derivatives, looked up by name in `ACTIVATIONS`.

Each function writes into `out` (which may be its input) so the training loop can reuse
buffers. Derivatives are written in terms of the activation's output `a`, which is all the
backward pass keeps: sigmoid' = a(1 - a), tanh' = 1 - a^2, relu'(z) = [a > 0] (so relu'(0) = 0).
The callers run inside `np.errstate(over="ignore")`: exp(1000) -> inf gives sigmoid = 0 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

LEAKY_SLOPE = 0.01


def _sigmoid(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.negative(z, out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def _sigmoid_grad(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.subtract(1.0, a, out=out)
    return np.multiply(out, a, out=out)


def _tanh(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.tanh(z, out=out)


def _tanh_grad(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.square(a, out=out)
    return np.subtract(1.0, out, out=out)


@lru_cache(maxsize=32)
def _zeros(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A read-only array of zeros, shared by every call with the same shape and dtype."""
    zeros = np.zeros(shape, dtype)
    zeros.flags.writeable = False
    return zeros


def _relu(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    # NumPy's maximum against a scalar runs an unvectorized loop; against an array of zeros it
    # is vectorized, with the same bits (README, Performance).
    return np.maximum(z, _zeros(z.shape, z.dtype), out=out)


def _relu_grad(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.greater(a, 0.0, out=out, casting="unsafe")


def _leaky_relu(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    # max(z, 0.01 z) is z for z >= 0 and 0.01 z below.
    return np.maximum(z, z * LEAKY_SLOPE, out=out)


def _leaky_relu_grad(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    # a > 0 exactly where z > 0; the derivative is 1 there and 0.01 elsewhere.
    np.greater(a, 0.0, out=out, casting="unsafe")
    out *= 1.0 - LEAKY_SLOPE
    out += LEAKY_SLOPE
    return out


def _identity(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    if out is not z:
        np.copyto(out, z)
    return out


def _identity_grad(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    out.fill(1.0)
    return out


def _softmax(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    # Subtracting the row maximum keeps exp() from overflowing; the result is unchanged.
    np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


@dataclass(frozen=True)
class Activation:
    """An activation: `forward(z, out)` and `grad(a, out)`, its derivative from its output.

    `grad` is None for softmax, whose Jacobian is not elementwise; it is only allowed as the
    output activation with cross-entropy, where the output delta is simply a - y.
    """

    name: str
    forward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    grad: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]]
    hidden_ok: bool = True
    grad_dtype: Optional[type] = None  # a narrower buffer type for `grad` in hidden layers


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_grad),
    "tanh": Activation("tanh", _tanh, _tanh_grad),
    # relu' is 0 or 1: a bool mask moves 1 byte per element where float64 moves 8
    "relu": Activation("relu", _relu, _relu_grad, grad_dtype=bool),
    "leaky_relu": Activation("leaky_relu", _leaky_relu, _leaky_relu_grad),
    "identity": Activation("identity", _identity, _identity_grad),
    "softmax": Activation("softmax", _softmax, None, hidden_ok=False),
}

HIDDEN_ACTIVATIONS = [name for name, act in ACTIVATIONS.items() if act.hidden_ok]


def apply(name: str, z: np.ndarray) -> np.ndarray:
    """Return f(z) as a new array, silencing the harmless exp() overflow of saturated units."""
    with np.errstate(over="ignore"):
        return ACTIVATIONS[name].forward(z, np.empty_like(z))
