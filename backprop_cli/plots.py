"""PNG plots as bytes (the caller writes them atomically). matplotlib is imported lazily:
importing it costs most of a second, which `backprop --help` must not pay.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np

from backprop_cli.metrics import class_indices
from backprop_cli.network import neuron_names, param_names

MAX_DIAGRAM_NEURONS = 32  # larger networks are not drawn: their labels would overlap

Curves = dict  # label -> (epochs, values)


def _figure(width=7.0, height=4.5):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # "tight" lays these simple figures out as well as "constrained" in 60% of the time
    return Figure(figsize=(width, height), dpi=100, layout="tight")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def spans_decades(values: Any) -> bool:
    """True when the positive finite values span more than one decade: the one rule for
    drawing (or charting) a curve on a log scale."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size > 1 and v.max() / v.min() > 10 and np.all(np.asarray(values)[np.isfinite(values)] > 0))


def loss_plot(curves: Curves, title: str, ylabel: str = "loss") -> bytes:
    """One axis, one line per curve {label: (epochs, values)}; log scale when the values span decades."""
    fig = _figure()
    ax = fig.subplots()
    all_values = np.concatenate([np.asarray(v, float) for _, v in curves.values()]) if curves else np.array([])
    for label, (epochs, values) in curves.items():
        ax.plot(epochs, values, label=label, linewidth=1.2 if len(curves) < 10 else 0.6)
    if spans_decades(all_values):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if 1 < len(curves) <= 12:
        ax.legend()
    return _png(fig)


def metric_plot(epochs, curves: dict, ylabel: str) -> bytes:
    fig = _figure()
    ax = fig.subplots()
    for label, values in curves.items():
        ax.plot(epochs[: len(values)], values, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return _png(fig)


def loss_grid(curves: Curves, title: str) -> bytes:
    """One panel per curve (the classic six-panel learning-rate figure).

    Up to 9 curves: 3 columns of full-size panels; more: a near-square grid of smaller ones.
    """
    n = len(curves)
    cols = min(3, n) if n <= 9 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    size = 1.0 if n <= 9 else 0.6
    fig = _figure(4.0 * cols * size, 3.0 * rows * size)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (label, (epochs, values)) in zip(axes, curves.items()):
        ax.plot(epochs, values, linewidth=1.2)
        if spans_decades(values):
            ax.set_yscale("log")
        if n > 9:  # small panels: a short title that does not run into its neighbours
            name, _, value = label.partition("=")
            label = f"{'lr' if name == 'learning_rate' else name}={float(value):.3g}" if value else label
        ax.set_title(label, fontsize=None if n <= 9 else 8)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _png(fig)


def decision_boundary(predict, X, Y, class_names) -> bytes:
    """Class regions of a 2-input classifier with the training points on top.

    `predict` maps raw inputs (m, 2) to outputs (m, n_out).
    """
    fig = _figure(6, 5)
    ax = fig.subplots()
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0)) + 0.1
    lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    out = predict(np.c_[gx.ravel(), gy.ravel()])
    labels = class_indices(out).astype(int)
    y = class_indices(Y).astype(int)
    k = max(int(labels.max()), int(y.max())) + 1
    ax.contourf(
        gx, gy, labels.reshape(gx.shape), levels=np.arange(k + 1) - 0.5, cmap="tab10", alpha=0.25, vmin=0, vmax=9
    )
    for c in range(k):
        pts = X[y == c]
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        ax.scatter(pts[:, 0], pts[:, 1], s=14, color=f"C{c}", edgecolors="k", linewidths=0.3, label=name)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("decision boundary")
    return _png(fig)


def network_diagram(sizes: Sequence[int], params: list, title: str) -> bytes:
    """The network as in textbooks: neurons in columns, each edge labelled wN with its value,
    coloured by sign (blue +, red -) and as wide as its magnitude; biases beside their neurons."""
    fig = _figure(2.4 * len(sizes) + 1, 1.2 * max(sizes) + 1.5)
    ax = fig.subplots()
    ax.axis("off")
    pos = {}
    for l, size in enumerate(sizes):
        for i in range(size):
            pos[l, i] = (l * 3.0, (size - 1) / 2.0 - i)
    biggest = max(float(np.abs(w).max()) for w, _ in params) or 1.0
    for p in param_names(sizes, bias=False):
        assert p.col is not None  # weights only
        (x0, y0), (x1, y1) = pos[p.layer, p.col], pos[p.layer + 1, p.row]
        value = params[p.layer][0][p.row, p.col]
        ax.plot(
            [x0, x1],
            [y0, y1],
            color="tab:blue" if value >= 0 else "tab:red",
            linewidth=0.5 + 3.0 * abs(value) / biggest,
            alpha=0.8,
            zorder=1,
        )
        t = 0.28  # near the source neuron, where edges into different targets part
        ax.text(
            x0 + t * (x1 - x0),
            y0 + t * (y1 - y0),
            f"{p.name}={value:.3g}",
            fontsize=7,
            ha="center",
            va="center",
            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8),
        )
    for l, names in enumerate(neuron_names(sizes)):
        for i, label in enumerate(names):
            x, y = pos[l, i]
            ax.scatter([x], [y], s=900, color="white", edgecolors="black", zorder=2)
            ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=3)
            if l > 0 and params[l - 1][1] is not None:
                ax.text(x + 0.35, y + 0.3, f"b={params[l - 1][1][i]:.3g}", fontsize=7, color="dimgray")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    return _png(fig)
