"""Regularization inside the loop: dropout's masks, the L1 penalty and gradient clipping.

Each setting is per model, as the learning rate is, so the K cells of a grid that differ only in
them train in one pass. One update of a model, in PyTorch's order (an explicit L1 term in the
loss, then `clip_grad_value_`, then `clip_grad_norm_`, then the optimizer's step):

    g = dL/dtheta                       the data loss's gradient, through the dropout masks
    g = g + l1 * sign(theta)            every parameter, biases included (as weight_decay); sign(0) = 0
    g = clip(g, -V, V)                  training.clip_grad_value
    g = g * min(1, C / (||g|| + 1e-6))  training.clip_grad_norm: ||g|| over all of the model's parameters
    theta = optimizer(theta, g)         which first adds weight_decay * theta to g

Dropout is inverted dropout: while training, hidden unit j of layer l is kept with probability
1 - P_l, and a kept unit's activation is divided by 1 - P_l (PyTorch's `nn.Dropout`: the mask is
keep / (1 - P), the activation times the mask); the deltas flowing back through it are
multiplied by the same mask. Prediction, validation and every evaluation use no masks. The
masks come from their own random stream of the seed (`initializers.random_streams`), so a run
with dropout is reproducible and changing P changes no other randomness. One uniform draw per
hidden layer and batch, (samples x units), is shared by the pass's models (they share a seed:
see `experiment.seeds_share_a_pass`) and compared with each model's own P, so every model's
masks are the ones its plain run would draw. The draw is `rng.random((samples, units))`,
layer by layer, a batch at a time.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from numpy.random import Generator


class Dropout:
    """The masks of K models' hidden layers: rates (K, H) for H hidden layers of `units`."""

    def __init__(self, rates: np.ndarray, units: Sequence[int], dtype: np.dtype, rng: Generator) -> None:
        K = rates.shape[0]
        # 1 / (1 - P), divided once: keep * it is bit for bit keep / (1 - P), and cheaper
        self.keep_scale = [(1.0 / (1.0 - rates[:, l])).reshape(K, 1, 1) for l in range(len(units))]
        self.p = [rates[:, l].reshape(K, 1, 1) for l in range(len(units))]
        self.units, self.dtype, self.rng, self.K = list(units), dtype, rng, K
        self._buffers: dict[int, tuple[list, list, list]] = {}

    def masks(self, n: int) -> list[np.ndarray]:
        """Draw the masks of a batch of n samples: one (K, n, units) array per hidden layer,
        keep / (1 - P) (a buffer, overwritten by the next draw)."""
        buffers = self._buffers.get(n)
        if buffers is None:
            buffers = (
                [np.empty((n, u)) for u in self.units],
                [np.empty((self.K, n, u), bool) for u in self.units],
                [np.empty((self.K, n, u), self.dtype) for u in self.units],
            )
            self._buffers[n] = buffers
        for u, keep, mask, p, scale in zip(*buffers, self.p, self.keep_scale):
            self.rng.random(out=u)
            np.greater_equal(u, p, out=keep)
            np.multiply(keep, scale, out=mask)
        return buffers[2]

    def state(self) -> dict:
        """The mask stream's state: what a continuation needs to draw the same next masks."""
        return dict(self.rng.bit_generator.state)


class GradientTerms:
    """L1 and clipping of K models' gradients (K, P), in place; per-model settings as (K, 1)
    columns (None where no model uses one)."""

    def __init__(
        self,
        l1: Optional[np.ndarray],
        clip_value: Optional[np.ndarray],
        clip_norm: Optional[np.ndarray],
        frozen: Optional[np.ndarray],
        shape: tuple[int, ...],
        dtype: np.dtype,
    ) -> None:
        self.l1, self.clip_value, self.clip_norm, self.frozen = l1, clip_value, clip_norm, frozen
        self.buf = np.empty(shape, dtype)
        self.norm = np.empty((shape[0], 1), dtype)

    def apply(self, theta: np.ndarray, grad: np.ndarray) -> None:
        if self.l1 is not None:
            np.sign(theta, out=self.buf)
            self.buf *= self.l1
            grad += self.buf
        if self.frozen is not None and (self.clip_value is not None or self.clip_norm is not None):
            grad[:, self.frozen] = 0.0  # frozen parameters have no gradient to clip (nor count in the norm)
        if self.clip_value is not None:
            np.clip(grad, -self.clip_value, self.clip_value, out=grad)
        if self.clip_norm is not None:
            np.multiply(grad, grad, out=self.buf)
            np.add.reduce(self.buf, axis=1, keepdims=True, out=self.norm)
            np.sqrt(self.norm, out=self.norm)
            self.norm += 1e-6
            np.divide(self.clip_norm, self.norm, out=self.norm)
            np.minimum(self.norm, 1.0, out=self.norm)
            grad *= self.norm


def column(values: Sequence[Optional[float]], dtype: np.dtype, off: float = 0.0) -> Optional[np.ndarray]:
    """Per-model settings as a (K, 1) column, `off` standing for a model without one; None when
    no model has one (the loop then pays nothing for it)."""
    if all(v is None or v == off for v in values):
        return None
    return np.array([off if v is None else v for v in values], dtype).reshape(-1, 1)
