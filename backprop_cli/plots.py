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

from backprop_cli.metrics import is_score

Curves = dict  # label -> (epochs, values)


F = TypeVar("F", bound=Callable[..., bytes])


def quiet_overflow(draw: F) -> F:
    """A diverged curve's inf and huge values overflow the log scale's transforms: harmless for
    the picture, so the plot says nothing about them (the run's status does)."""

    @functools.wraps(draw)
    def quiet(*args: Any, **kwargs: Any) -> bytes:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return draw(*args, **kwargs)

    return quiet  # type: ignore[return-value]


def new_figure(
    width: float = 7.0,
    height: float = 4.5,
    left: float = 0.8,
    right: float = 0.25,
    bottom: float = 0.55,
    top: float = 0.45,
) -> Any:
    """A figure with fixed margins in inches (room for tick labels, axis labels and a title).

    Its text is drawn as written: a run name, feature or class name with `$...$` in it is no
    mathtext formula (which drops the plot when it does not parse) but those characters."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["text.parse_math"] = False  # read as each text is made, tick labels too
    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return fig


def new_axes(fig: Any, rows: int = 1, cols: int = 1, **kw: Any) -> Any:
    return fig.subplots(rows, cols, **kw)


def _few_ticks(ax: Any, n: int = 6) -> None:
    from matplotlib.ticker import MaxNLocator

    # round steps (0, 20, 40, ... for 100 epochs, not 0, 30, 60, 90)
    ax.xaxis.set_major_locator(MaxNLocator(n, integer=True, steps=[1, 2, 2.5, 5, 10]))
    if ax.get_yscale() != "log":
        ax.yaxis.set_major_locator(MaxNLocator(n, steps=[1, 2, 2.5, 5, 10]))


def log_y(ax: Any, values: Any = None) -> None:
    """A log y axis whose tick labels are plain numbers (0.01, not 10^-2 in mathtext), for the
    data drawn on `ax` (or `values`, for axes that share one scale)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_yscale("log")
    # within two and a half decades a label a decade leaves two or three labels: add 2x and 5x
    if values is None:
        lo, hi = ax.dataLim.y0, ax.dataLim.y1
    else:
        v = np.asarray(values, float)
        v = v[np.isfinite(v) & (v > 0)]
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    narrow = 0 < lo < hi and math.log10(hi / lo) < 2.5
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,), numticks=8))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())  # a dozen unlabelled ticks a decade: time, no information


def png_bytes(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buf = io.BytesIO()
    canvas.print_png(buf, pil_kwargs={"compress_level": 1})  # zlib at 6 spends 10-40 ms a plot
    return buf.getvalue()


def spans_decades(values: Any) -> bool:
    """True when the positive finite values span more than one decade: the one rule for
    drawing (or charting) a curve on a log scale."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size > 1 and v.max() / v.min() > 10 and np.all(np.asarray(values)[np.isfinite(values)] > 0))


@quiet_overflow
def loss_plot(curves: Curves, title: str, ylabel: str = "loss") -> bytes:
    """One axis, one line per curve {label: (epochs, values)}; log scale when the values span decades."""
    fig = new_figure()
    ax = new_axes(fig)
    _curves(ax, curves, ylabel)
    ax.set_title(title)
    return png_bytes(fig)


VALIDATION = " (validation)"  # a curve named `<name> (validation)` is <name>'s validation curve


def _curves(ax: Any, curves: Curves, ylabel: str) -> None:
    all_values = np.concatenate([np.asarray(v, float) for _, v in curves.values()]) if curves else np.array([])
    drawn: dict[str, Any] = {}
    for label, (epochs, values) in curves.items():
        # `<name> (validation)` beside `<name>`: the same colour, dashed
        twin = drawn.get(label.removesuffix(VALIDATION))
        style = {"color": twin.get_color(), "linestyle": "--"} if twin is not None else {}
        (drawn[label],) = ax.plot(epochs, values, label=label, linewidth=1.2 if len(curves) < 10 else 0.6, **style)
    if spans_decades(all_values):
        log_y(ax)
    _few_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if 1 < len(curves) <= 12:
        ax.legend(fontsize=8)


@quiet_overflow
def study_plot(
    curves: Curves, values: Sequence[float], label: str, title: str, target: Optional[float] = None
) -> bytes:
    """A sweep's or seed study's loss curves, coloured along a colormap by their value (a
    learning rate on a log scale when the values span decades) with a colorbar instead of a
    legend, and the target loss as a dashed line. Seeds are not an order: up to 10 of them
    get a qualitative palette and a legend; more, the colormap, whose colorbar says that
    neighbouring seeds look alike."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize

    fig = new_figure(7.8, 4.5, right=1.25)
    ax = new_axes(fig)
    v = np.asarray(values, float)
    lo, hi = float(v.min()), float(v.max())
    norm = LogNorm(lo, hi) if spans_decades(v) else Normalize(lo, hi if hi > lo else lo + 1)
    cmap = colormaps["viridis"]
    all_values = np.concatenate([np.asarray(c, float) for _, c in curves.values()])
    palette = label == "seed" and len(v) <= 10
    for i, (value, (epochs, losses)) in enumerate(zip(v, curves.values())):
        color = colormaps["tab10"](i) if palette else cmap(norm(value))
        ax.plot(epochs, losses, color=color, linewidth=1.3 if len(curves) < 10 else 0.8, label=f"seed {value:g}")
    if spans_decades(all_values):
        log_y(ax)
    if target is not None:
        ax.axhline(target, color="0.3", linestyle="--", linewidth=1.0)
        ax.text(
            0.99,
            target,
            f" target {target:g}",
            transform=ax.get_yaxis_transform(),
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.3",
        )
    _few_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if palette:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        return png_bytes(fig)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02, fraction=0.05)
    bar.set_label(label if label != "seed" else f"seed ({len(v)} seeds: neighbours look alike)")
    if isinstance(norm, LogNorm):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        subs = (1.0, 2.0, 5.0) if math.log10(hi / lo) < 2 else (1.0,)  # as on a log loss axis
        bar.ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    elif np.all(v == np.round(v)):  # seeds: whole numbers
        from matplotlib.ticker import MaxNLocator

        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return png_bytes(fig)


@quiet_overflow
def loss_panels(groups: dict[str, Curves], title: str) -> bytes:
    """Loss curves grouped by loss function {loss: curves}: one axis per loss, since an sse and
    a bce value are not on one scale; each axis labelled with its loss."""
    n = max(len(groups), 1)
    fig = new_figure(6.0 * n + 1.0, 4.5)
    fig.subplots_adjust(wspace=0.3)
    axes = np.atleast_1d(new_axes(fig, 1, n, squeeze=False)).ravel()
    for ax, (loss, curves) in zip(axes, groups.items()):
        _curves(ax, curves, f"loss ({loss})")
        if len(curves) == 1:  # a panel of one run still names it (the legend names two or more)
            ax.legend(fontsize=8)
        ax.set_title(f"{title}: {loss}" if n > 1 else title)
    return png_bytes(fig)


@quiet_overflow
def metric_plot(epochs: Any, curves: dict, ylabel: str, title: str = "") -> bytes:
    """A metric's curves (accuracy: training and validation) on an axis fitted to their range."""
    fig = new_figure()
    ax = new_axes(fig)
    for label, values in curves.items():
        ax.plot(epochs[: len(values)], values, label=label)
    if is_score(ylabel):  # a score's best, 1, is labelled
        low = min(float(np.nanmin(v)) for v in curves.values() if np.isfinite(v).any()) if curves else 0.0
        ax.set_ylim(max(0.0, low - 0.05), 1.02)
    _few_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel)
    ax.grid(True, alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return png_bytes(fig)


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
    fig = new_figure(1.5 * cols + 0.4, 1.1 * rows + 0.8, left=0.2, right=0.2, bottom=0.2, top=0.7)
    ax = new_axes(fig)
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
    return png_bytes(fig)


@quiet_overflow
def loss_grid(curves: Curves, title: str) -> bytes:
    """One panel per curve (the classic six-panel learning-rate figure).

    Up to 9 curves: 3 columns of full-size panels; more: small multiples on one shared scale.
    """
    n = len(curves)
    if n > 9:
        return _small_multiples(curves, title)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = new_figure(4.0 * cols, 3.0 * rows + 0.4, top=0.75)
    fig.subplots_adjust(wspace=0.25, hspace=0.45)
    # the panels share both axes, so their curves compare at a glance: epoch tick labels under
    # the bottom row, loss tick labels left of the first column, one scale (log across decades)
    axes = np.atleast_1d(new_axes(fig, rows, cols, squeeze=False, sharex=True, sharey=True)).ravel()
    everything = np.concatenate([np.asarray(v, float) for _, v in curves.values()])
    log = spans_decades(everything)
    for i, (ax, (label, (epochs, values))) in enumerate(zip(axes, curves.items())):
        ax.plot(epochs, values, linewidth=1.2)
        if log and i == 0:
            log_y(ax, everything)
        _few_ticks(ax, 4)
        ax.set_title(label)
        if i + cols >= n:
            ax.set_xlabel("epoch")
            ax.xaxis.set_tick_params(labelbottom=True)
        if i % cols == 0:
            ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return png_bytes(fig)


@quiet_overflow
def heatmap(table: Any, labels: tuple, keys: tuple, metric: str, title: str) -> bytes:
    """A grid study's metric over two keys: rows the first key's values, columns the second's
    (mean over seeds). Up to 12 x 12 cells each cell's value is written in it; a larger grid is
    an image with one pixel (at least) a cell and a few labelled ticks. The colour bar is in
    the metric's own units, on a log scale when the values span decades."""
    from matplotlib.colors import LogNorm, Normalize

    values = np.asarray(table, float)
    rows, cols = values.shape
    small = rows * cols <= 144
    if small:
        fig = new_figure(
            max(4.5, 1.1 * cols + 2.6), max(3.5, 0.6 * rows + 1.8), left=1.6, right=1.2, bottom=0.9, top=0.5
        )
    else:  # one pixel a cell at least, at 100 dpi
        width, height = max(6.0, cols / 100 + 3.2), max(4.5, rows / 100 + 1.6)
        fig = new_figure(width, height, left=1.6, right=1.6, bottom=0.9, top=0.5)
    ax = new_axes(fig)
    finite = values[np.isfinite(values)]
    reverse = is_score(metric)
    log = not reverse and spans_decades(finite)
    norm = (
        LogNorm(finite.min(), finite.max())
        if log
        else Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
    )
    cmap = "viridis" if reverse else "viridis_r"
    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    if small:
        shade = norm(np.where(np.isfinite(values), values, np.nan))
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                text = "-" if not np.isfinite(v) else (f"{v:.4f}" if reverse else f"{v:.3g}")
                dark = np.isfinite(v) and (shade[i, j] < 0.5) == reverse
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
        ax.set_xticks(range(cols), labels[1])
        ax.set_yticks(range(rows), labels[0])
    else:
        for axis, n, names in ((ax.xaxis, cols, labels[1]), (ax.yaxis, rows, labels[0])):
            ticks = sorted({int(round(t)) for t in np.linspace(0, n - 1, min(n, 7))})
            axis.set_ticks(ticks, [_tick(names[t]) for t in ticks])
        ax.set_title(f"{title} (mean over seeds; {rows} x {cols} cells, one pixel each)", fontsize=10)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label(metric + (" (log scale)" if log else ""))
    if log:
        from matplotlib.ticker import FuncFormatter

        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if small:
        ax.set_title(f"{title} (mean over seeds)", fontsize=10)
    return png_bytes(fig)


@quiet_overflow
def landscape(mean_loss: Any, diverged: Any, axes_values: tuple, keys: tuple, title: str) -> bytes:
    """A trainability map (as in Sohl-Dickstein 2024): one pixel a cell, the first key's values
    up the y axis and the second's along x (log axes for log-spaced values), cells that trained
    in blue and cells that diverged in red, each shaded by its mean loss over training (the
    geometric mean over its finite epochs: a diverging run's last finite losses are huge)
    on a scale of its own colour (2nd to 98th percentile; darker: lower), with a colour bar
    for each."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.ticker import FuncFormatter

    loss = np.asarray(mean_loss, float)
    bad = np.asarray(diverged, bool)
    ys, xs = (np.asarray(v, float) for v in axes_values)
    # the light ends of the blues and reds are left out: every cell stays visibly blue or red
    blues, reds = (ListedColormap(colormaps[name](np.linspace(0.2, 0.85, 256))) for name in ("Blues_r", "Reds_r"))

    def scale(mask: np.ndarray) -> LogNorm:
        v = loss[mask & np.isfinite(loss) & (loss > 0)]
        lo, hi = (np.percentile(v, 2), np.percentile(v, 98)) if v.size else (1e-3, 1.0)
        return LogNorm(lo, max(hi, lo * 1.01))

    norms = (scale(~bad), scale(bad))
    shades = [np.ma.filled(np.clip(n(np.where(np.isfinite(loss) & (loss > 0), loss, 1.0)), 0, 1), 1.0) for n in norms]
    rgb = np.where(bad[..., None], reds(shades[1])[..., :3], blues(shades[0])[..., :3])
    rows, cols = loss.shape
    width, height = max(6.5, cols / 100 + 3.6), max(5.0, rows / 100 + 1.6)
    fig = new_figure(width, height, left=1.0, right=2.6, bottom=0.8, top=0.5)
    ax = new_axes(fig)

    def edges(v: np.ndarray) -> tuple[float, float, bool]:
        log = bool(v.size > 2 and np.all(v > 0) and np.allclose(np.diff(np.log(v)), np.log(v[1] / v[0])))
        lo_, hi_ = (np.log10(v[0]), np.log10(v[-1])) if log else (v[0], v[-1])
        half = (hi_ - lo_) / max(v.size - 1, 1) / 2
        return lo_ - half, hi_ + half, log

    x0, x1, xlog = edges(xs)
    y0, y1, ylog = edges(ys)
    ax.imshow(rgb, origin="lower", extent=(x0, x1, y0, y1), aspect="auto", interpolation="nearest")
    for axis, log in ((ax.xaxis, xlog), (ax.yaxis, ylog)):
        if log:
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{10**v:.3g}"))
    ax.set_xlabel(keys[1] + (" (log scale)" if xlog else ""))
    ax.set_ylabel(keys[0] + (" (log scale)" if ylog else ""))
    ax.set_title(f"{title}: {int((~bad).sum()):,} trained (blue), {int(bad.sum()):,} diverged (red)", fontsize=10)
    bars = ((blues, norms[0], "trained: mean loss", 2.3), (reds, norms[1], "diverged: mean loss (geometric)", 1.1))
    for cmap, norm, label, inches in bars:
        cax = fig.add_axes((1 - inches / width, 0.8 / height, 0.18 / width, 1 - 1.3 / height))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))  # 0.01, not 10^-2
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    return png_bytes(fig)


@quiet_overflow
def search_plot(panels: dict, metric: str, title: str) -> bytes:
    """A search's trials: one panel per key, each trial's metric against its value (log axes
    for log-distributed keys and a metric spanning decades; choices as categories)."""
    n = len(panels)
    fig = new_figure(4.2 * n + 0.6, 4.0, left=0.8, bottom=0.9, top=0.6)
    fig.subplots_adjust(wspace=0.35)
    axes = np.atleast_1d(new_axes(fig, 1, n, squeeze=False)).ravel()
    everything = np.concatenate([np.asarray(ys, float) for _, ys, _ in panels.values()])
    log = not is_score(metric) and spans_decades(everything)
    for ax, (key, (xs, ys, xlog)) in zip(axes, panels.items()):
        if xs and isinstance(xs[0], str):  # a choice: one column per value, spread a little to be seen
            names = sorted(set(xs))
            ax.set_xticks(range(len(names)), names)
            spread = np.random.default_rng(0).uniform(-0.15, 0.15, len(xs))
            xs = [names.index(x) + d for x, d in zip(xs, spread)]
        ax.scatter(xs, ys, s=10, alpha=0.7)
        if xlog:
            ax.set_xscale("log")
        if log:
            log_y(ax, everything)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    trials = len(next(iter(panels.values()))[1]) if panels else 0
    fig.suptitle(f"{title}: {metric} of {trials} trials", fontsize=10)
    return png_bytes(fig)


def _tick(label: str) -> str:
    """A tick label of a long axis: numbers to 3 significant digits."""
    try:
        return f"{float(label):.3g}"
    except ValueError:
        return label


@quiet_overflow
def box_plots(groups: dict, metric: str, title: str) -> bytes:
    """One panel per grid key: a box of the metric (over seeds and the other keys) per value."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(groups)
    fig = new_figure(4.2 * n + 0.6, 4.4, left=0.8, bottom=1.3, top=0.6)
    fig.subplots_adjust(wspace=0.35)
    axes = np.atleast_1d(new_axes(fig, 1, n, squeeze=False)).ravel()
    everything = np.concatenate([np.asarray(v, float) for g in groups.values() for _, v in g if len(v)])
    log = not is_score(metric) and spans_decades(everything)
    for ax, (key, boxes) in zip(axes, groups.items()):
        data = [np.asarray(v, float) for _, v in boxes]
        ax.boxplot(data, tick_labels=[label for label, _ in boxes], showmeans=True)
        if log:
            log_y(ax)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(True, axis="y", alpha=0.3)
        if len(boxes) > 4:
            ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"{title}: spread over seeds and the other keys", fontsize=10)
    key = [  # what matplotlib's box plot draws, said once under the panels
        Patch(facecolor="none", edgecolor="black", label="middle half (25% to 75%)"),
        Line2D([], [], color="C1", label="median"),
        Line2D([], [], color="C2", marker="^", linestyle="none", label="mean"),
        Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="none", label="beyond 1.5 boxes"),
        Line2D([], [], color="black", label="whiskers: the rest"),
    ]
    fig.legend(handles=key, loc="lower center", ncol=5, fontsize=8, frameon=False)
    return png_bytes(fig)
