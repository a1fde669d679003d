"""Pictures of what a network computes and holds, as PNG bytes: the class regions of a 2-input
classifier, the learned curve of a 1-input regression, the network with its weights, and a
confusion matrix. The `draw_*` functions draw on a given axes, for these files and for the
frames of training.gif (`animation`). Curves of numbers over epochs live in `plots`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from backprop_cli.metrics import class_indices
from backprop_cli.network import neuron_names, param_names
from backprop_cli.plots import new_axes, new_figure, png_bytes, quiet_overflow

MAX_DIAGRAM_NEURONS = 32  # larger networks are not drawn: their labels would overlap


def boundary_grid(X: np.ndarray, n: int = 200) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """The n x n grid of raw inputs a decision boundary is drawn on: its extent (x0, x1, y0, y1)
    and its points (n * n, 2), rows of constant y."""
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0)) + 0.1
    lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])), np.c_[gx.ravel(), gy.ravel()]


def class_colors(k: int) -> np.ndarray:
    from matplotlib import colormaps

    return np.asarray(colormaps["tab10"](np.arange(k) % 10))[:, :3]


def boundary_rgb(outputs: np.ndarray, k: int) -> np.ndarray:
    """The class-region image (side, side, 3) of a classifier's outputs on a square grid: each
    point in its predicted class's colour, mixed with white by how unsure the network is
    (white at chance, 1/k; 55% colour at certainty)."""
    side = int(round(np.sqrt(len(outputs))))
    if outputs.shape[1] == 1:
        p1 = np.clip(outputs[:, 0], 0, 1)
        probs = np.c_[1 - p1, p1]
    else:
        probs = outputs
    labels = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    weight = np.clip((confidence - 1 / k) / (1 - 1 / k), 0, 1)[:, None] * 0.55
    rgb = 1 - weight * (1 - class_colors(k)[labels])
    return rgb.reshape(side, side, 3)


def draw_boundary(
    ax: Any,
    extent: tuple[float, float, float, float],
    outputs: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    class_names: Optional[Sequence],
    feature_names: Sequence[str] = ("x1", "x2"),
    X_val: Optional[np.ndarray] = None,
    Y_val: Optional[np.ndarray] = None,
) -> Any:
    """Class regions of a 2-input classifier on `ax`, shaded by the network's confidence (white
    where it is unsure), the 0.5 contour for one output, and the training points (filled) and
    validation points (open triangles) on top. Returns the image (for a colorbar)."""
    side = int(round(np.sqrt(len(outputs))))
    y = class_indices(Y).astype(int)
    k = max(outputs.shape[1], 2, int(y.max()) + 1)
    colors = class_colors(k)
    image = ax.imshow(boundary_rgb(outputs, k), origin="lower", extent=extent, aspect="auto", interpolation="nearest")
    p1 = np.clip(outputs[:, 0], 0, 1)
    if outputs.shape[1] == 1:
        gx = np.linspace(extent[0], extent[1], side)
        gy = np.linspace(extent[2], extent[3], side)
        if p1.min() < 0.5 < p1.max():
            ax.contour(gx, gy, p1.reshape(side, side), levels=[0.5], colors="0.2", linewidths=1.0)
    for c in range(k):
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        pts = X[y == c]
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=32, color=colors[c], edgecolors="k", linewidths=0.5, label=name)
    if X_val is not None and Y_val is not None and len(X_val):
        yv = class_indices(Y_val).astype(int)
        ax.scatter(
            X_val[:, 0],
            X_val[:, 1],
            s=46,
            marker="^",
            facecolors="none",
            edgecolors=[colors[c] for c in yv],
            linewidths=1.4,
            label="_validation",  # the legend gets a neutral marker below: each point has its class's colour
        )
        ax.scatter([], [], s=46, marker="^", facecolors="none", edgecolors="0.3", linewidths=1.4, label="validation")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(feature_names[0] if len(feature_names) > 0 else "x1")
    ax.set_ylabel(feature_names[1] if len(feature_names) > 1 else "x2")
    return image


@quiet_overflow
def decision_boundary(
    extent: tuple[float, float, float, float],
    outputs: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    class_names: Optional[list],
    title: str = "decision boundary",
    feature_names: Sequence[str] = ("x1", "x2"),
    X_val: Optional[np.ndarray] = None,
    Y_val: Optional[np.ndarray] = None,
) -> bytes:
    """decision_boundary.png: `draw_boundary` with a legend and a title.

    `outputs` (n * n, n_out) are the network's outputs at the points of `boundary_grid`.
    """
    fig = new_figure(6.5, 5.2, left=0.8, bottom=0.6, top=0.6)
    ax = new_axes(fig)
    draw_boundary(ax, extent, outputs, X, Y, class_names, feature_names, X_val, Y_val)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    ax.set_title(f"{title}\nshading: the network's confidence (white: unsure)", fontsize=10)
    return png_bytes(fig)


def draw_fit(
    ax: Any,
    grid: np.ndarray,
    outputs: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    X_val: Optional[np.ndarray] = None,
    Y_val: Optional[np.ndarray] = None,
    names: tuple[str, str] = ("x", "y"),
) -> None:
    """A 1-input regression on `ax`: the learned function over the grid, the data as points."""
    ax.scatter(X[:, 0], Y[:, 0], s=14, color="0.35", alpha=0.7, label="training data")
    if X_val is not None and Y_val is not None and len(X_val):
        ax.scatter(
            X_val[:, 0],
            Y_val[:, 0],
            s=22,
            marker="^",
            facecolors="none",
            edgecolors="tab:orange",
            label="validation data",
        )
    ax.plot(grid, outputs[:, 0], color="tab:blue", linewidth=2.0, label="network")
    lo, hi = float(np.nanmin(Y)), float(np.nanmax(Y))
    pad = 0.15 * (hi - lo) + 1e-9
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.grid(True, alpha=0.3)


@quiet_overflow
def fit_plot(
    grid: np.ndarray,
    outputs: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    title: str,
    X_val: Optional[np.ndarray] = None,
    Y_val: Optional[np.ndarray] = None,
    names: tuple[str, str] = ("x", "y"),
) -> bytes:
    """fit.png: the function a 1-input regression network learned, over its data."""
    fig = new_figure(7.0, 4.5)
    ax = new_axes(fig)
    draw_fit(ax, grid, outputs, X, Y, X_val, Y_val, names)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return png_bytes(fig)


def fit_grid(X: np.ndarray, n: int = 400) -> np.ndarray:
    """The inputs (n, 1) a 1-input regression's learned function is drawn at."""
    lo, hi = float(X.min()), float(X.max())
    pad = 0.05 * (hi - lo)
    return np.linspace(lo - pad, hi + pad, n)[:, None]


MAX_EDGE_LABELS = 24  # more weights than this: no value on each edge (weights.json has them)


def draw_network(
    ax: Any,
    sizes: Sequence[int],
    params: list,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
    scale: Optional[float] = None,
) -> None:
    """The network as in textbooks on `ax`: neurons in columns (x1.., h1.., o1..), each edge
    coloured by its weight's sign (blue +, red -) and as wide as its magnitude relative to
    `scale` (default: the largest), labelled wN=value when there are few; biases bN=value
    under their neurons; input and output names outside the first and last columns."""
    ax.axis("off")
    pos = {}
    for l, size in enumerate(sizes):
        for i in range(size):
            pos[l, i] = (l * 3.0, (size - 1) / 2.0 - i)
    biggest = scale or max(float(np.abs(w).max()) for w, _ in params) or 1.0
    names = param_names(sizes, bias=any(b is not None for _, b in params))
    weights = [p for p in names if p.kind == "weight"]
    labelled = len(weights) <= MAX_EDGE_LABELS
    big = max(sizes) > 6
    for p in weights:
        assert p.col is not None
        (x0, y0), (x1, y1) = pos[p.layer, p.col], pos[p.layer + 1, p.row]
        value = params[p.layer][0][p.row, p.col]
        ax.plot(
            [x0, x1],
            [y0, y1],
            color="tab:blue" if value >= 0 else "tab:red",
            linewidth=0.4 + 3.2 * min(abs(value) / biggest, 1.0),
            alpha=0.75,
            zorder=1,
        )
        if labelled:
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
    xy = np.array(list(pos.values()))
    ax.scatter(xy[:, 0], xy[:, 1], s=500 if big else 900, color="white", edgecolors="black", zorder=2)
    for l, labels in enumerate(neuron_names(sizes)):
        for i, label in enumerate(labels):
            x, y = pos[l, i]
            ax.text(x, y, label, ha="center", va="center", fontsize=7 if big else 9, zorder=3)
    radius = (500 if big else 900) ** 0.5 / 2  # the neurons' circles, in points
    for p in names:
        if p.kind == "bias":  # right under its neuron, whatever the figure's scale
            value = params[p.layer][1][p.row]
            ax.annotate(
                f"{p.name}={value:.3g}",
                pos[p.layer + 1, p.row],
                xytext=(0, -radius - 1.5),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=6.5 if big else 7,
                color="0.25",
                zorder=3,
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85),
            )
    if input_names and list(input_names) != neuron_names(sizes)[0]:
        for i, name in enumerate(input_names):
            ax.text(pos[0, i][0] - 0.45, pos[0, i][1], str(name), ha="right", va="center", fontsize=8)
    if output_names and len(output_names) == sizes[-1] and not str(output_names[0]).startswith("output"):
        last = len(sizes) - 1
        for i, name in enumerate(output_names):
            ax.text(pos[last, i][0] + 0.45, pos[last, i][1], str(name), ha="left", va="center", fontsize=8)
    half = (max(sizes) - 1) / 2.0
    left = 2.4 if input_names and list(input_names) != neuron_names(sizes)[0] else 0.6
    ax.set_xlim(-left, 3.0 * (len(sizes) - 1) + 2.2)
    ax.set_ylim(-half - 0.7, half + 0.7)


@quiet_overflow
def network_diagram(
    sizes: Sequence[int],
    params: list,
    title: str,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
) -> bytes:
    """network.png: `draw_network` with a title and a legend for colour and width."""
    from matplotlib.lines import Line2D

    height = (0.55 if max(sizes) > 6 else 1.0) * max(sizes) + 2.2
    fig = new_figure(2.4 * len(sizes) + 2.6, height, left=0.1, right=0.1, bottom=0.7, top=0.5)
    ax = new_axes(fig)
    draw_network(ax, sizes, params, input_names, output_names)
    biggest = max(float(np.abs(w).max()) for w, _ in params) or 1.0
    handles = [
        Line2D([], [], color="tab:blue", linewidth=2.0, label="positive weight"),
        Line2D([], [], color="tab:red", linewidth=2.0, label="negative weight"),
        Line2D([], [], color="0.4", linewidth=3.6, label=f"|w| = {biggest:.3g} (widest)"),
        Line2D([], [], color="0.4", linewidth=0.4 + 1.6, label=f"|w| = {biggest / 2:.3g}"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7.5, frameon=False)
    extra = (
        ""
        if sum(sizes[l] * sizes[l + 1] for l in range(len(sizes) - 1)) <= MAX_EDGE_LABELS
        else (" (every value: weights.json)")
    )
    ax.set_title(title + extra)
    return png_bytes(fig)


@quiet_overflow
def confusion_plot(matrix: Any, names: Sequence[str], title: str) -> bytes:
    """A confusion matrix: true classes down, predicted classes across, each cell's count
    written in it and shaded by its share of the true class's samples."""
    counts = np.asarray(matrix, dtype=float)
    k = len(names)
    side = max(3.5, 0.7 * k + 2.0)
    fig = new_figure(side + 1.0, side, left=1.4, right=0.3, bottom=0.8, top=0.5)
    ax = new_axes(fig)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=color, fontsize=10 if k <= 10 else 7)
    tilt = k > 4
    ax.set_xticks(range(k), [str(n) for n in names], rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_yticks(range(k), [str(n) for n in names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    return png_bytes(fig)
