"""PNG plots as bytes (the caller writes them atomically). matplotlib is imported lazily:
importing it costs most of a second, which `backprop --help` must not pay.

Figures are drawn for speed: matplotlib's object-oriented API on the Agg canvas (no pyplot
state), fixed margins instead of a layout engine (which draws every figure twice to measure
its tick labels), at most a handful of ticks, and plain tick labels on log axes (mathtext,
matplotlib's default there, costs tens of milliseconds a figure).
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np

from backprop_cli.metrics import class_indices
from backprop_cli.network import neuron_names, param_names

MAX_DIAGRAM_NEURONS = 32  # larger networks are not drawn: their labels would overlap

Curves = dict  # label -> (epochs, values)


F = TypeVar("F", bound=Callable[..., bytes])


def _quiet(draw: F) -> F:
    """A diverged curve's inf and huge values overflow the log scale's transforms: harmless for
    the picture, so the plot says nothing about them (the run's status does)."""

    @functools.wraps(draw)
    def quiet(*args: Any, **kwargs: Any) -> bytes:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return draw(*args, **kwargs)

    return quiet  # type: ignore[return-value]


def _figure(
    width: float = 7.0,
    height: float = 4.5,
    left: float = 0.8,
    right: float = 0.25,
    bottom: float = 0.55,
    top: float = 0.45,
) -> Any:
    """A figure with fixed margins in inches (room for tick labels, axis labels and a title)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return fig


def _axes(fig: Any, rows: int = 1, cols: int = 1, **kw: Any) -> Any:
    return fig.subplots(rows, cols, **kw)


def _few_ticks(ax: Any, n: int = 6) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(n, integer=True))
    if ax.get_yscale() != "log":
        ax.yaxis.set_major_locator(MaxNLocator(n))


def _log_y(ax: Any) -> None:
    """A log y axis whose tick labels are plain numbers (0.01, not 10^-2 in mathtext)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())  # a dozen unlabelled ticks a decade: time, no information


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()


def spans_decades(values: Any) -> bool:
    """True when the positive finite values span more than one decade: the one rule for
    drawing (or charting) a curve on a log scale."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size > 1 and v.max() / v.min() > 10 and np.all(np.asarray(values)[np.isfinite(values)] > 0))


@_quiet
def loss_plot(curves: Curves, title: str, ylabel: str = "loss") -> bytes:
    """One axis, one line per curve {label: (epochs, values)}; log scale when the values span decades."""
    fig = _figure()
    ax = _axes(fig)
    all_values = np.concatenate([np.asarray(v, float) for _, v in curves.values()]) if curves else np.array([])
    for label, (epochs, values) in curves.items():
        ax.plot(epochs, values, label=label, linewidth=1.2 if len(curves) < 10 else 0.6)
    if spans_decades(all_values):
        _log_y(ax)
    _few_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if 1 < len(curves) <= 12:
        ax.legend()
    return _png(fig)


@_quiet
def metric_plot(epochs: Any, curves: dict, ylabel: str, title: str = "") -> bytes:
    """A metric's curves (accuracy: training and validation) on an axis fitted to their range."""
    fig = _figure()
    ax = _axes(fig)
    for label, values in curves.items():
        ax.plot(epochs[: len(values)], values, label=label)
    _few_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel)
    ax.grid(True, alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return _png(fig)


def _short(label: str) -> str:
    """'learning_rate=0.0537918' -> 'lr=0.0538': a panel title that fits a small panel."""
    name, _, value = label.partition("=")
    try:
        return f"{'lr' if name == 'learning_rate' else name}={float(value):.3g}" if value else label
    except ValueError:
        return label


def _small_multiples(curves: Curves, title: str) -> bytes:
    """Many curves as a grid of cells in one axes, all on one shared scale (stated in the title):
    64 full axes take seconds to draw, one axes with 64 lines a tenth of that."""
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Rectangle

    n = len(curves)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = _figure(1.5 * cols + 0.4, 1.1 * rows + 0.8, left=0.2, right=0.2, bottom=0.2, top=0.7)
    ax = _axes(fig)
    ax.axis("off")
    values = np.concatenate([np.asarray(v, float) for _, v in curves.values()])
    log = spans_decades(values)
    shown = np.log10(np.where(values > 0, values, np.nan)) if log else values
    finite = shown[np.isfinite(shown)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    first = min(float(e[0]) for e, _ in curves.values() if len(e))
    last = max(float(e[-1]) for e, _ in curves.values() if len(e))
    span = last - first if last > first else 1.0
    segments, boxes = [], []
    for i, (label, (epochs, v)) in enumerate(curves.items()):
        x0, y0 = i % cols, rows - 1 - i // cols
        y = np.asarray(v, float)
        y = np.log10(np.where(y > 0, y, np.nan)) if log else y
        xs = x0 + 0.08 + 0.84 * (np.asarray(epochs, float) - first) / span
        segments.append(np.c_[xs, y0 + 0.1 + 0.62 * (y - lo) / (hi - lo)])
        boxes.append(Rectangle((x0 + 0.03, y0 + 0.04), 0.94, 0.92))
        ax.text(x0 + 0.5, y0 + 0.8, _short(label), ha="center", va="center", fontsize=7)
    ax.add_collection(LineCollection(segments, linewidths=1.0, colors="C0"))
    ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor="0.75", linewidths=0.5))
    ax.set_xlim(0, cols)
    ax.set_ylim(0, rows)
    low, high = (10**lo, 10**hi) if log else (lo, hi)
    fig.suptitle(
        f"{title}\nevery panel: epochs {first:g} to {last:g}; loss {low:.3g} to {high:.3g}"
        f"{' (log scale)' if log else ''}, shared",
        fontsize=10,
    )
    return _png(fig)


@_quiet
def loss_grid(curves: Curves, title: str) -> bytes:
    """One panel per curve (the classic six-panel learning-rate figure).

    Up to 9 curves: 3 columns of full-size panels; more: small multiples on one shared scale.
    """
    n = len(curves)
    if n > 9:
        return _small_multiples(curves, title)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(4.0 * cols, 3.0 * rows + 0.4, top=0.75)
    fig.subplots_adjust(wspace=0.4, hspace=0.45)
    # the panels share their epoch axis: its tick labels and title only under the bottom row
    axes = np.atleast_1d(_axes(fig, rows, cols, squeeze=False, sharex=True)).ravel()
    for i, (ax, (label, (epochs, values))) in enumerate(zip(axes, curves.items())):
        ax.plot(epochs, values, linewidth=1.2)
        if spans_decades(values):
            _log_y(ax)
        _few_ticks(ax, 4)
        ax.set_title(label)
        if i + cols >= n:
            ax.set_xlabel("epoch")
            ax.xaxis.set_tick_params(labelbottom=True)
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _png(fig)


def boundary_grid(X: np.ndarray, n: int = 200) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """The n x n grid of raw inputs a decision boundary is drawn on: its extent (x0, x1, y0, y1)
    and its points (n * n, 2), rows of constant y."""
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0)) + 0.1
    lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])), np.c_[gx.ravel(), gy.ravel()]


@_quiet
def decision_boundary(
    extent: tuple[float, float, float, float],
    outputs: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    class_names: Optional[list],
) -> bytes:
    """Class regions of a 2-input classifier with the training points on top.

    `outputs` (n * n, n_out) are the network's outputs at the points of `boundary_grid`.
    """
    fig = _figure(6, 5)
    ax = _axes(fig)
    side = int(round(np.sqrt(len(outputs))))
    labels = class_indices(outputs).astype(int)
    y = class_indices(Y).astype(int)
    k = max(int(labels.max()), int(y.max())) + 1
    # the class regions as an image: one pixel per grid point (contourf traces every region's edge)
    ax.imshow(
        labels.reshape(side, side),
        origin="lower",
        extent=extent,
        aspect="auto",
        interpolation="nearest",
        cmap="tab10",
        alpha=0.25,
        vmin=-0.5,
        vmax=9.5,
    )
    for c in range(k):
        pts = X[y == c]
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        ax.scatter(pts[:, 0], pts[:, 1], s=14, color=f"C{c}", edgecolors="k", linewidths=0.3, label=name)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("decision boundary")
    return _png(fig)


@_quiet
def network_diagram(sizes: Sequence[int], params: list, title: str) -> bytes:
    """The network as in textbooks: neurons in columns, each edge labelled wN with its value,
    coloured by sign (blue +, red -) and as wide as its magnitude; biases beside their neurons."""
    fig = _figure(2.4 * len(sizes) + 1, 1.2 * max(sizes) + 1.5, left=0.1, right=0.1, bottom=0.1)
    ax = _axes(fig)
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
    xy = np.array(list(pos.values()))
    ax.scatter(xy[:, 0], xy[:, 1], s=900, color="white", edgecolors="black", zorder=2)
    for l, names in enumerate(neuron_names(sizes)):
        for i, label in enumerate(names):
            x, y = pos[l, i]
            ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=3)
            if l > 0 and params[l - 1][1] is not None:
                ax.text(x + 0.35, y + 0.3, f"b={params[l - 1][1][i]:.3g}", fontsize=7, color="dimgray")
    ax.set_title(title)
    # room for the circles and for the bias labels right of the last column
    half = (max(sizes) - 1) / 2.0
    ax.set_xlim(-0.6, 3.0 * (len(sizes) - 1) + 1.2)
    ax.set_ylim(-half - 0.6, half + 0.7)
    return _png(fig)
