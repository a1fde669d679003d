"""Dense feed-forward networks: forward pass with caches, backward pass by the chain rule.

All parameters of K models live in one flat array `theta` (K, P). Layer l's weights are a
view W[l] (K, n_out, n_in), row i holding the weights into neuron i, and its biases a view
b[l] (K, 1, n_out). Gradients use the same layout in `grad`. The flat layout lets an optimizer
update every parameter of every model in a couple of NumPy calls, and lets K models (learning
rates of a sweep, seeds of a study) train in one vectorized pass; K = 1 for a plain run.

Samples run along rows: a batch X is (n, n_in), activations are (K, n, n_units), so layer l
computes A[l] = f(A[l-1] @ W[l]^T + b[l]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import numpy as np
from numpy.typing import DTypeLike

from backprop_cli.activations import ACTIVATIONS
from backprop_cli.initializers import Params
from backprop_cli.losses import Loss

CONTIGUOUS_FROM = 16  # models from which a forward pass multiplies by contiguous copies of W^T
PREDICT_VALUES = 2**21  # one layer's outputs at once when predicting (16 MiB of float64): rows in chunks


class ParamName(NamedTuple):
    """One flat parameter: its textbook name, layer (0-based), kind, receiving neuron (row)
    and sending neuron (col, None for a bias)."""

    name: str
    layer: int
    kind: str  # "weight" or "bias"
    row: int
    col: Optional[int]


def param_names(sizes: Sequence[int], bias: bool = True) -> list[ParamName]:
    """Names of a network's parameters in flat order: weights w1, w2, ... numbered layer by
    layer and row by row (row i holds the weights into neuron i); biases b1, b2, ... likewise.
    This is the one place the textbook numbering is decided."""
    names, w_count, b_count = [], 0, 0
    for l, (n_out, n_in) in enumerate(zip(sizes[1:], sizes[:-1])):
        for r in range(n_out):
            for c in range(n_in):
                w_count += 1
                names.append(ParamName(f"w{w_count}", l, "weight", r, c))
        if bias:
            for r in range(n_out):
                b_count += 1
                names.append(ParamName(f"b{b_count}", l, "bias", r, None))
    return names


FREEZE_GROUPS = "weights, biases, layerN, layerN.weights or layerN.biases (N from 1)"
_KINDS = {"weights": "weight", "biases": "bias"}


def frozen_mask(sizes: Sequence[int], bias: bool, groups: Sequence[str]) -> np.ndarray:
    """Which flat parameters (P,) the groups name: `weights`, `biases`, `layerN`,
    `layerN.weights`, `layerN.biases` (N from 1). Raises ValueError naming a group that is not
    one of those, or names a layer or biases the network does not have."""
    names = param_names(sizes, bias)
    mask = np.zeros(len(names), bool)
    n_layers = len(sizes) - 1
    for group in groups:
        layer_part, _, kind_part = group.partition(".")
        layer: Optional[int]
        kind: Optional[str]
        if group in ("weights", "biases"):
            layer, kind = None, group
        elif layer_part.startswith("layer") and layer_part[5:].isdigit() and kind_part in ("", "weights", "biases"):
            layer, kind = int(layer_part[5:]), kind_part or None
            if not 1 <= layer <= n_layers:
                raise ValueError(f"'{group}': the network has layers 1 to {n_layers}")
        else:
            raise ValueError(f"'{group}' is not a parameter group ({FREEZE_GROUPS})")
        if kind == "biases" and not bias:
            raise ValueError(f"'{group}': the network has no biases (model.bias is false)")
        for p, name in enumerate(names):
            if (layer is None or name.layer == layer - 1) and (kind is None or name.kind == _KINDS[kind]):
                mask[p] = True
    return mask


def neuron_names(sizes: Sequence[int]) -> list[list[str]]:
    """[[x1, x2], [h1, h2], ..., [o1, ...]]: inputs, hidden neurons numbered across hidden
    layers, outputs."""
    names, hidden = [[f"x{i + 1}" for i in range(sizes[0])]], 0
    for size in sizes[1:-1]:
        names.append([f"h{hidden + i + 1}" for i in range(size)])
        hidden += size
    names.append([f"o{i + 1}" for i in range(sizes[-1])])
    return names


def layer_kinds(n_layers: int) -> list[str]:
    """["hidden 1", ..., "output"]: how every table and legend names the layers."""
    return [f"hidden {l + 1}" for l in range(n_layers - 1)] + ["output"]


def layer_names(activations: Sequence[str]) -> list[str]:
    """["hidden 1 (sigmoid)", ..., "output (softmax)"]."""
    return [f"{kind} ({act})" for kind, act in zip(layer_kinds(len(activations)), activations)]


@dataclass
class Workspace:
    """Buffers for one batch size, reused every step so the hot loop allocates nothing.

    A[l] and D[l] (l = 1..L) are the activations and deltas (dL/dz) of layer l, (K, n, units);
    S[l] is scratch of the same shape; DT[l] is D[l] transposed to (K, units, n). Z holds the
    output layer's net inputs (the logits), which bce and cross_entropy are computed from;
    hidden layers compute their activations in place.
    """

    Z: np.ndarray = field(default_factory=lambda: np.empty(0))

    A: list = field(default_factory=list)
    D: list = field(default_factory=list)
    S: list = field(default_factory=list)
    DT: list = field(default_factory=list)
    forward: list = field(default_factory=list)
    backward: list = field(default_factory=list)
    ones: Optional[np.ndarray] = None  # (1, n): sums over samples by a product (many models)
    dropped: list = field(default_factory=list)  # with dropout: hidden activations times their masks


class Network:
    """K dense networks of identical shape; `sizes` = [n_in, hidden..., n_out]."""

    def __init__(
        self,
        sizes: Sequence[int],
        activations: Sequence[str],
        bias: bool = True,
        n_models: int = 1,
        dtype: DTypeLike = np.float64,
    ) -> None:
        if len(activations) != len(sizes) - 1:
            raise ValueError("need one activation per layer")
        self.sizes = list(sizes)
        self.activations = list(activations)
        self.acts = [ACTIVATIONS[name] for name in activations]
        self.bias = bias
        self.K = n_models
        self.dtype = np.dtype(dtype)
        shapes = list(zip(self.sizes[1:], self.sizes[:-1]))
        self.n_params = sum(o * i + (o if bias else 0) for o, i in shapes)
        self.theta = np.zeros((n_models, self.n_params), self.dtype)
        self.grad = np.zeros_like(self.theta)
        self.W, self.b = self.views(self.theta)
        self.gW, self.gb = self.views(self.grad)
        self.WT = [w.transpose(0, 2, 1) for w in self.W]
        # with many models, each forward pass first copies W^T into a contiguous (K, in, out)
        # buffer: NumPy's matmul runs about 3x faster on it than on the strided view into theta
        # (a copy costs a fifth of that), while for a few models the extra call costs more
        self.WTc = [np.empty(w.shape, self.dtype) if n_models >= CONTIGUOUS_FROM else None for w in self.WT]
        self._workspaces: dict[int, Workspace] = {}

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def views(self, flat: np.ndarray) -> tuple[list[np.ndarray], list[Optional[np.ndarray]]]:
        """Split a flat (K, P) array into per-layer weight and bias views."""
        K, off = flat.shape[0], 0
        W: list[np.ndarray] = []
        b: list[Optional[np.ndarray]] = []
        for n_out, n_in in zip(self.sizes[1:], self.sizes[:-1]):
            W.append(flat[:, off : off + n_out * n_in].reshape(K, n_out, n_in))
            off += n_out * n_in
            if self.bias:
                b.append(flat[:, off : off + n_out].reshape(K, 1, n_out))
                off += n_out
            else:
                b.append(None)
        return W, b

    # -- parameters ---------------------------------------------------------------------

    def set_params(self, layers: Sequence[Params], model: Optional[int] = None) -> None:
        """Set parameters from [(weights (out, in), biases (out,) or None), ...].

        `model` selects one model; None sets all K to the same values.
        """
        idx: slice | int = slice(None) if model is None else model
        for l, (w, b) in enumerate(layers):
            self.W[l][idx] = w
            bias = self.b[l]
            if bias is not None and b is not None:
                bias[idx] = np.reshape(b, (1, -1))

    def get_params(self, model: int = 0) -> list[Params]:
        """Return [(weights (out, in), biases (out,) or None), ...] for one model, as copies."""
        return [(w[model].copy(), None if b is None else b[model, 0].copy()) for w, b in zip(self.W, self.b)]

    def param_names(self) -> list[ParamName]:
        """Textbook names of the flat parameters, in the order of `theta`'s columns."""
        return param_names(self.sizes, self.bias)

    # -- forward and backward -------------------------------------------------------------

    def workspace(self, n: int) -> Workspace:
        """The buffers for batches of n samples (created on first use, then reused)."""
        ws = self._workspaces.get(n)
        if ws is None:
            ws = Workspace()
            for l, units in enumerate(self.sizes[1:]):
                shape = (self.K, n, units)
                ws.A.append(np.empty(shape, self.dtype))
                ws.D.append(np.empty(shape, self.dtype))
                # hidden layers' scratch only holds f'; the output layer's also serves the loss
                narrow = self.acts[l].grad_dtype if l < self.n_layers - 1 else None
                ws.S.append(np.empty(shape, narrow or self.dtype))
                ws.DT.append(ws.D[-1].transpose(0, 2, 1))
            # the output layer's logits: their own buffer, or the outputs themselves for identity
            ws.Z = ws.A[-1] if self.activations[-1] == "identity" else np.empty_like(ws.A[-1])
            # each pass's per-layer operands, looked up once (the backward pass's last layer first)
            nets = ws.A[:-1] + [ws.Z]  # where each layer's net input z goes
            ws.forward = [
                (W_T, WTc, b, act.forward, z, out)
                for W_T, WTc, b, act, z, out in zip(self.WT, self.WTc, self.b, self.acts, nets, ws.A)
            ]
            for l in range(self.n_layers - 1, -1, -1):
                # a layer of one unit takes its delta back by an outer product: with many models, a
                # broadcast multiply gives the same numbers (no sums) about twice as fast as matmul
                outer = self.K >= CONTIGUOUS_FROM and self.sizes[l + 1] == 1
                product = np.multiply if outer else np.matmul
                back = (product, self.W[l], ws.D[l - 1], self.acts[l - 1].grad, ws.S[l - 1]) if l else None
                ws.backward.append((ws.D[l], ws.DT[l], self.gW[l], self.gb[l], ws.A[l - 1] if l else None, back))
            if self.K >= CONTIGUOUS_FROM:
                ws.ones = np.ones((1, n), self.dtype)
            self._workspaces[n] = ws
        return ws

    def forward_into(self, X: np.ndarray, ws: Workspace) -> np.ndarray:
        """Forward pass of X (n, n_in) into ws.A; returns the outputs (K, n, n_out).

        Callers run it inside np.errstate(over="ignore") (see activations).
        """
        a = X
        for W_T, WTc, b, forward, z, out in ws.forward:
            if WTc is not None:
                np.copyto(WTc, W_T)
                W_T = WTc
            np.matmul(a, W_T, out=z)
            if b is not None:
                z += b
            forward(z, out)
            a = out
        return a

    def loss_and_grad(self, X: np.ndarray, Y: np.ndarray, loss: Loss, ws: Workspace) -> np.ndarray:
        """Forward, loss and backward on one batch; fills self.grad and returns the loss (K,)."""
        out = self.forward_into(X, ws)
        value = loss.delta(out, Y, ws.Z, self.acts[-1], ws.D[-1], ws.S[-1])
        ones = ws.ones
        for D, DT, gW, gb, A_prev, back in ws.backward:
            # dL/dW[l] = delta[l]^T @ a[l-1]; dL/db[l] = sum of delta[l] over samples
            np.matmul(DT, X if A_prev is None else A_prev, out=gW)
            if gb is not None:
                if ones is None:
                    # np.add.reduce, not np.sum: the same sum without np.sum's Python wrapper
                    np.add.reduce(D, axis=1, keepdims=True, out=gb)
                else:  # many models: a row of ones times delta sums 4x faster than the reduction
                    np.matmul(ones, D, out=gb)
            if back is not None:
                # delta[l-1] = (delta[l] @ W[l]) * f'(z[l-1]), f' computed from a[l-1]
                product, W, D_prev, grad_fn, S_prev = back
                product(D, W, out=D_prev)
                D_prev *= grad_fn(A_prev, S_prev)
        return value

    def loss_and_grad_dropped(
        self, X: np.ndarray, Y: np.ndarray, loss: Loss, ws: Workspace, masks: Sequence[np.ndarray]
    ) -> np.ndarray:
        """`loss_and_grad` with inverted dropout (see `regularization`): hidden layer l's
        activations times masks[l] (K, n, units) feed layer l + 1, and the deltas flowing back
        into layer l are multiplied by the same mask before its activation's derivative."""
        value = loss.delta(self.forward_dropped(X, ws, masks), Y, ws.Z, self.acts[-1], ws.D[-1], ws.S[-1])
        ones = ws.ones
        for i, (D, DT, gW, gb, A_prev, back) in enumerate(ws.backward):
            l = self.n_layers - 1 - i
            np.matmul(DT, X if l == 0 else ws.dropped[l - 1], out=gW)
            if gb is not None:
                if ones is None:
                    np.add.reduce(D, axis=1, keepdims=True, out=gb)
                else:
                    np.matmul(ones, D, out=gb)
            if back is not None:
                product, W, D_prev, grad_fn, S_prev = back
                product(D, W, out=D_prev)
                D_prev *= masks[l - 1]
                D_prev *= grad_fn(A_prev, S_prev)
        return value

    def forward_dropped(self, X: np.ndarray, ws: Workspace, masks: Sequence[np.ndarray]) -> np.ndarray:
        """`forward_into` with hidden layer l's activations (ws.A[l]) times masks[l] (K or 1, n,
        units) as the next layer's inputs (ws.dropped[l]); returns the outputs (K, n, n_out).
        A loop of its own: one forward pass with a mask branch per layer cost the plain XOR
        loop 7% (measured), and a plain run pays nothing for dropout."""
        if not ws.dropped:
            ws.dropped = [np.empty_like(a) for a in ws.A[:-1]]
        a = X
        for l, (W_T, WTc, b, forward, z, out) in enumerate(ws.forward):
            if WTc is not None:
                np.copyto(WTc, W_T)
                W_T = WTc
            np.matmul(a, W_T, out=z)
            if b is not None:
                z += b
            forward(z, out)
            a = out
            if l < self.n_layers - 1:
                a = np.multiply(out, masks[l], out=ws.dropped[l])
        return a

    def loss_only(self, X: np.ndarray, Y: np.ndarray, loss: Loss, ws: Workspace) -> np.ndarray:
        """Forward pass and loss (K,) without gradients."""
        return loss.value(self.forward_into(X, ws), Y, ws.Z)

    def predict(self, X: np.ndarray, model: Optional[int] = None) -> np.ndarray:
        """Outputs (K, n, n_out) for inputs X (n, n_in), as a new array.

        With `model`, only that model runs and its outputs (n, n_out) are returned. Many rows
        run in chunks of rows, so a wide layer over a 200 x 200 picture grid or a large CSV
        needs megabytes, not gigabytes.
        """
        rows = self._chunk_rows(1 if model is not None else self.K)
        if len(X) > rows:
            parts = [self.predict(X[i : i + rows], model) for i in range(0, len(X), rows)]
            return np.concatenate(parts, axis=-2)
        if model is not None:
            return self.trace(X, model)[1][-1]
        with np.errstate(over="ignore"):
            return self.forward_into(np.asarray(X, self.dtype), self.workspace(len(X))).copy()

    def _chunk_rows(self, models: int) -> int:
        """Rows whose values at the widest layer, for `models` models, fit PREDICT_VALUES."""
        return max(1, PREDICT_VALUES // (models * max(self.sizes)))

    def logits_and_outputs(self, X: np.ndarray, model: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The output layer's net inputs and outputs, each (n, n_out), of one model: `trace`'s
        last z and a, in chunks of rows (the hidden layers of a large data set are not kept)."""
        rows = self._chunk_rows(1)
        logits, outputs = [], []
        for i in range(0, max(len(X), 1), rows):
            zs, activations = self.trace(X[i : i + rows], model)
            logits.append(zs[-1])
            outputs.append(activations[-1])
        return np.concatenate(logits), np.concatenate(outputs)

    def trace(self, X: np.ndarray, model: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Forward pass keeping net inputs: returns ([z1..zL], [a0=X, a1..aL]) for one model."""
        zs: list[np.ndarray] = []
        As = [np.asarray(X, self.dtype)]
        with np.errstate(over="ignore"):
            for l in range(self.n_layers):
                z = As[-1] @ self.W[l][model].T
                b = self.b[l]
                if b is not None:
                    z = z + b[model]
                zs.append(z)
                As.append(self.acts[l].forward(z, np.empty_like(z)))
        return zs, As
