"""Optimizers that update a flat parameter array in place, looked up by name in `OPTIMIZERS`.

Parameters and gradients are (K, P): K models, P parameters each. The learning rate is a
(K, 1) column so each model can have its own. Conventions follow PyTorch, so results can be
compared with it:

- sgd:      theta -= lr * g
- momentum: v = mu v + g; theta -= lr * v  (nesterov: theta -= lr * (g + mu v))
- rmsprop:  s = rho s + (1 - rho) g^2; theta -= lr * g / (sqrt(s) + eps)
- adam:     m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
            theta -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

`weight_decay` adds wd * theta to the gradient of every parameter first (coupled L2).

Each optimizer takes only the hyperparameters it uses; `hyperparameters` names them (they are
also the config keys under `training`), so a caller can pass exactly those.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


class Optimizer:
    """Base: holds one scratch buffer shaped like the parameters (K, P) and the step count."""

    hyperparameters: tuple[str, ...] = ()
    # the config key of each scalar hyperparameter -> its attribute (a float, or (K, 1) per model)
    SCALARS = {
        "weight_decay": "weight_decay",
        "momentum": "mu",
        "rho": "rho",
        "beta1": "b1",
        "beta2": "b2",
        "eps": "eps",
    }

    def __init__(self, shape: tuple[int, ...], dtype: DTypeLike, weight_decay: float = 0.0) -> None:
        self.buf = np.zeros(shape, dtype)
        self.weight_decay: float | np.ndarray = weight_decay
        self.decays = bool(weight_decay)
        self.t = 0

    def per_model(self, key: str, values: np.ndarray) -> None:
        """Give each of the K models its own value of a scalar hyperparameter (config key
        `key`): a (K, 1) column, as the learning rate is, so K cells of a grid that differ only
        in it train in one pass."""
        setattr(self, self.SCALARS[key], np.asarray(values, self.buf.dtype).reshape(-1, 1))
        self.decays = bool(np.any(self.weight_decay))

    def _decay(self, theta: np.ndarray, grad: np.ndarray) -> None:
        if self.decays:
            np.multiply(theta, self.weight_decay, out=self.buf)
            grad += self.buf

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: np.ndarray) -> None:
        """Update theta (K, P) in place from grad (K, P) with per-model rates lr (K, 1)."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """The terms of the last step besides the gradient, by name, each (K, P): what a hand
        check of that step needs (empty for plain SGD)."""
        return {}

    def moments(self) -> dict[str, np.ndarray]:
        """The arrays the next step reads, by name, each (K, P) and live: with the step count
        `t`, all a continuation needs (a checkpoint)."""
        return {}

    def restore(self, model: int, moments: dict[str, np.ndarray], step: int) -> None:
        """Put model `model`'s saved moments (each (P,)) and the step count back."""
        mine = self.moments()
        if set(moments) != set(mine):
            raise ValueError(f"optimizer state {sorted(moments)}, expected {sorted(mine)}")
        for name, values in moments.items():
            mine[name][model] = values
        self.t = step


class SGD(Optimizer):
    def step(self, theta: np.ndarray, grad: np.ndarray, lr: np.ndarray) -> None:
        if self.decays:
            self._decay(theta, grad)
        np.multiply(grad, lr, out=self.buf)
        theta -= self.buf


class Momentum(Optimizer):
    hyperparameters = ("momentum", "nesterov")

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: DTypeLike,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        nesterov: bool = False,
    ) -> None:
        super().__init__(shape, dtype, weight_decay)
        self.mu, self.nesterov = momentum, nesterov
        self.v = np.zeros(shape, dtype)

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: np.ndarray) -> None:
        self._decay(theta, grad)
        self.v *= self.mu
        self.v += grad
        if self.nesterov:
            np.multiply(self.v, self.mu, out=self.buf)
            self.buf += grad
        else:
            np.copyto(self.buf, self.v)
        self.buf *= lr
        theta -= self.buf

    def state(self) -> dict[str, np.ndarray]:
        return {"v": self.v}

    def moments(self) -> dict[str, np.ndarray]:
        return {"v": self.v}


class RMSProp(Optimizer):
    hyperparameters = ("rho", "eps")

    def __init__(
        self, shape: tuple[int, ...], dtype: DTypeLike, weight_decay: float = 0.0, rho: float = 0.9, eps: float = 1e-8
    ) -> None:
        super().__init__(shape, dtype, weight_decay)
        self.rho, self.eps = rho, eps
        self.s = np.zeros(shape, dtype)

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: np.ndarray) -> None:
        self._decay(theta, grad)
        self.s *= self.rho
        np.multiply(grad, grad, out=self.buf)
        self.buf *= 1.0 - self.rho
        self.s += self.buf
        np.sqrt(self.s, out=self.buf)
        self.buf += self.eps
        np.divide(grad, self.buf, out=self.buf)
        self.buf *= lr
        theta -= self.buf

    def state(self) -> dict[str, np.ndarray]:
        return {"s": self.s}

    def moments(self) -> dict[str, np.ndarray]:
        return {"s": self.s}


class Adam(Optimizer):
    hyperparameters = ("beta1", "beta2", "eps")

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: DTypeLike,
        weight_decay: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(shape, dtype, weight_decay)
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: np.ndarray) -> None:
        self._decay(theta, grad)
        self.t += 1
        self.m *= self.b1
        np.multiply(grad, 1.0 - self.b1, out=self.buf)
        self.m += self.buf
        self.v *= self.b2
        np.multiply(grad, grad, out=self.buf)
        self.buf *= 1.0 - self.b2
        self.v += self.buf
        # buf = sqrt(v_hat) + eps; then the step lr * m_hat / buf
        np.multiply(self.v, 1.0 / (1.0 - self.b2**self.t), out=self.buf)
        np.sqrt(self.buf, out=self.buf)
        self.buf += self.eps
        np.divide(self.m, self.buf, out=self.buf)
        self.buf *= lr
        self.buf *= 1.0 / (1.0 - self.b1**self.t)
        theta -= self.buf

    def state(self) -> dict[str, np.ndarray]:
        return {
            "m": self.m,
            "v": self.v,
            "m_hat": self.m / (1.0 - self.b1**self.t),
            "v_hat": self.v / (1.0 - self.b2**self.t),
        }

    def moments(self) -> dict[str, np.ndarray]:
        return {"m": self.m, "v": self.v}


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "rmsprop": RMSProp, "adam": Adam}
