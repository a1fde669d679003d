"""Finite differences on the model axis: a numerical gradient evaluated as perturbed copies.

A numerical gradient of P parameters needs S loss evaluations per parameter (the stencil).
Instead of S * P forward passes of one model, each (model, parameter, step) triple becomes one
model of a probe network, and chunks of them run in one vectorized forward pass, the way a
sweep trains K learning rates at once. The probe's buffers are allocated once and bounded in
memory. The formulas, and the nudged values theta_p + step, are the same as one at a time:

    central:    (L(t + h) - L(t - h)) / 2h                                   error O(h^2)
    forward:    (L(t + h) - L(t)) / h                                        error O(h)
    five_point: (-L(t + 2h) + 8 L(t + h) - 8 L(t - h) + L(t - 2h)) / 12h     error O(h^4)

With `kinks`, the probe also reports each parameter whose stencil moves a relu or leaky_relu
unit across its kink (the unit's output changes sign against the unperturbed network's for
some sample): there the loss is not differentiable and a difference quotient means nothing.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from backprop_cli.losses import Loss
from backprop_cli.network import Network

STEPS = {"central": (1.0, -1.0), "forward": (1.0,), "five_point": (2.0, 1.0, -1.0, -2.0)}
KINKED = ("relu", "leaky_relu")
MEMORY_BUDGET = 64 * 2**20  # bytes of probe buffers (activations, deltas, scratch, parameters)

Progress = Callable[[int, int], None]


def _combine(method: str, L: np.ndarray, base: np.ndarray, eps: float) -> np.ndarray:
    """The difference quotient from losses L (..., S) in the order of STEPS[method]."""
    if method == "central":
        return (L[..., 0] - L[..., 1]) / (2 * eps)
    if method == "five_point":
        return (-L[..., 0] + 8 * L[..., 1] - 8 * L[..., 2] + L[..., 3]) / (12 * eps)
    return (L[..., 0] - base) / eps


class FiniteDifferences:
    """Numerical gradients of a network's K models; reuse one object across calls (its probe
    network and buffers are allocated once)."""

    def __init__(
        self, net: Network, n_samples: int, method: str, eps: float, kinks: bool = False, budget: int = MEMORY_BUDGET
    ) -> None:
        self.net, self.method, self.eps, self.kinks = net, method, eps, kinks
        self.steps = np.array(STEPS[method]) * eps
        S, P = len(self.steps), net.n_params
        units = sum(net.sizes[1:])
        per_model = net.dtype.itemsize * (4 * n_samples * units + 2 * P) + (n_samples * units if kinks else 0)
        wanted = net.K * P * S
        self.chunk = int(max(S, min(wanted, budget // max(per_model, 1))))
        self.probe = Network(net.sizes, net.activations, net.bias, self.chunk, net.dtype)
        self.watched = [l for l, name in enumerate(net.activations[:-1]) if name in KINKED] if kinks else []

    def gradient(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        loss: Loss,
        base: np.ndarray,
        params: Optional[Sequence[int] | np.ndarray] = None,
        progress: Optional[Progress] = None,
        dropout: Optional[Sequence[np.ndarray]] = None,
        l1: float = 0.0,
        l2: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Differences of the loss for `params` (default: all) of every model.

        `base` is the loss (K,) at the current weights (the forward formula needs it). With
        `dropout` (one mask (1, n, units) per hidden layer) every evaluation uses those masks;
        with `l1` or `l2` the loss differenced is L + l1 sum |theta| + l2 / 2 sum theta^2, and a
        parameter whose stencil crosses 0 under l1 (the kink of |theta|) is a kink. Returns
        the gradient (K, len(params)) and the kink flags (K, len(params)), all False unless
        the object watches kinks.
        """
        net, probe = self.net, self.probe
        idx = np.arange(net.n_params) if params is None else np.asarray(params, dtype=np.intp)
        K, Q, S = net.K, len(idx), len(self.steps)
        # one row per (model, parameter, step), in that order
        k_of = np.repeat(np.arange(K), Q * S)
        p_of = np.tile(np.repeat(idx, S), K)
        step_of = np.tile(self.steps, K * Q)
        losses = np.empty(K * Q * S)
        kinked = np.zeros(K * Q * S, bool)
        masks = self._masks(X) if self.watched else None
        ws = probe.workspace(len(X))
        rows = np.arange(self.chunk)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for start in range(0, len(k_of), self.chunk):
                stop = min(start + self.chunk, len(k_of))
                c = stop - start
                k, p = k_of[start:stop], p_of[start:stop]
                probe.theta[:c] = net.theta[k]
                probe.theta[rows[:c], p] = net.theta[k, p] + step_of[start:stop]
                if dropout is None:
                    losses[start:stop] = probe.loss_only(X, Y, loss, ws)[:c]
                else:
                    losses[start:stop] = loss.value(probe.forward_dropped(X, ws, dropout), Y, ws.Z)[:c]
                if l1 or l2:
                    nudged = probe.theta[:c]
                    losses[start:stop] += l1 * np.abs(nudged).sum(axis=1) + l2 / 2 * (nudged * nudged).sum(axis=1)
                if l1 and self.kinks:
                    at = net.theta[k, p]
                    kinked[start:stop] |= (at == 0) | (np.sign(at) != np.sign(at + step_of[start:stop]))
                if masks is not None:
                    for l, mask in zip(self.watched, masks):
                        changed = (ws.A[l][:c] > 0) != mask[k]
                        kinked[start:stop] |= changed.reshape(c, -1).any(axis=1)
                if progress is not None:
                    progress(stop // S, K * Q)
        grad = _combine(self.method, losses.reshape(K, Q, S), np.asarray(base)[:, None], self.eps)
        return grad, np.asarray(kinked.reshape(K, Q, S).any(axis=2))

    def _masks(self, X: np.ndarray) -> list[np.ndarray]:
        """Which units are on (output > 0) at the unperturbed weights, per watched layer: (K, n, units)."""
        net = self.net
        ws = net.workspace(len(X))
        with np.errstate(over="ignore"):
            net.forward_into(X, ws)
        return [ws.A[l] > 0 for l in self.watched]
