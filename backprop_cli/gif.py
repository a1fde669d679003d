"""training.gif drawn from `animation.frames`: one figure built once, its artists updated frame
by frame (an image's pixels, a line collection's colours and widths, a marker, a panel's
title), each frame rendered on the Agg canvas and the frames joined into a GIF by Pillow,
which matplotlib already depends on. Run in the drawing worker (see `painter`).
"""

from __future__ import annotations

import io
from typing import Any, Optional, Sequence

import numpy as np

from backprop_cli.metrics import class_indices
from backprop_cli.network import neuron_names
from backprop_cli.pictures import boundary_rgb, class_colors
from backprop_cli.plots import log_y, new_figure, quiet_overflow, spans_decades

MAX_ANIMATED_NEURONS = 64  # the network panel: more neurons than this are not drawn


class _NetworkPanel:
    """The network on an axes, drawn once; `update` recolours and rewidens its edges."""

    def __init__(self, ax: Any, sizes: Sequence[int], scale: float) -> None:
        from matplotlib.collections import LineCollection

        ax.axis("off")
        self.sizes, self.scale = sizes, scale
        pos = {(l, i): (l * 3.0, (n - 1) / 2.0 - i) for l, n in enumerate(sizes) for i in range(n)}
        segments = [
            [pos[l, c], pos[l + 1, r]]
            for l in range(len(sizes) - 1)
            for r in range(sizes[l + 1])
            for c in range(sizes[l])
        ]
        self.edges = LineCollection(segments, zorder=1, alpha=0.8)
        ax.add_collection(self.edges)
        xy = np.array(list(pos.values()))
        tall = max(sizes) > 10
        nodes = ax.scatter(xy[:, 0], xy[:, 1], s=60 if tall else 500, color="white", edgecolors="black", zorder=2)
        self.artists: list[Any] = [self.edges, nodes]  # neurons over the edges: both redrawn
        if not tall:
            for l, names in enumerate(neuron_names(sizes)):
                for i, name in enumerate(names):
                    self.artists.append(ax.text(*pos[l, i], name, ha="center", va="center", fontsize=8, zorder=3))
        half = (max(sizes) - 1) / 2.0
        ax.set_xlim(-0.7, 3.0 * (len(sizes) - 1) + 0.7)
        ax.set_ylim(-half - 0.7, half + 0.7)

    def update(self, params: list) -> None:
        w = np.concatenate([W.ravel() for W, _ in params])  # row by row: the segments' order
        self.edges.set_color(np.where(w[:, None] >= 0, [[0.12, 0.47, 0.71]], [[0.84, 0.15, 0.16]]).tolist())
        self.edges.set_linewidth(0.3 + 3.0 * np.minimum(np.abs(w) / self.scale, 1.0))


@quiet_overflow
def training_gif(
    data: dict[str, Any],
    X: np.ndarray,
    Y: np.ndarray,
    sizes: Sequence[int],
    title: str,
    history: np.ndarray,
    names: Sequence[str] = (),
    class_names: Optional[Sequence[str]] = None,
    feature_names: Sequence[str] = ("x1", "x2"),
) -> bytes:
    """The frames of `frames(...)` as an animated GIF.

    One model: the class regions (or the fitted curve), the network with its weights, and the
    loss curve with a marker at the frame's epoch, side by side. Several (a study): one panel
    per model, titled by `names`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    kind, K = data["kind"], len(data["losses"][0])
    single = K == 1
    if single:  # the picture (if not the network itself), the network if small enough, the loss
        panels = [kind] if kind != "network" else []
        panels += ["network"] if sum(sizes) <= MAX_ANIMATED_NEURONS else []
        panels.append("loss")
        panels += ["gradients"] if data.get("gradients") is not None else []
    else:
        panels = [kind] * K
    n = len(panels)
    cols = n if single else min(3, n)
    rows = int(np.ceil(n / cols))
    width, height = (3.6 * cols, 3.4 * rows + 0.6)
    fig = new_figure(width, height, left=0.5, right=0.2, bottom=0.55, top=0.6)
    fig.subplots_adjust(wspace=0.32, hspace=0.4)
    canvas = FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    heading = fig.suptitle("", fontsize=11)
    updates = []
    every = data.get("params") or []
    scale = max((float(np.abs(W).max()) for frame in every for m in frame for W, _ in m), default=0.0)
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        m = 0 if single else i
        if not single and i < len(names):  # each panel says its own model's loss, frame by frame
            panel_title = ax.set_title(names[i], fontsize=9)

            def retitle(f: int, i: int = i, text: Any = panel_title) -> None:
                text.set_text(f"{names[i]}: loss {float(data['losses'][f][i]):.4g}")

            updates.append((retitle, [panel_title]))
        if panel == "boundary":
            updates.append(_boundary_panel(ax, data, m, X, Y, class_names, feature_names))
        elif panel == "fit":
            updates.append(_fit_panel(ax, data, m, X, Y, feature_names))
        elif panel == "network":
            updates.append(_network_panel(ax, data, m, sizes, scale))
        elif panel == "gradients":
            updates.append(_gradient_panel(ax, data))
        else:
            updates.append(_loss_panel(ax, data, history))
    # what changes from frame to frame is drawn over a saved background (axes, ticks, labels)
    moving = [heading] + [artist for _, artists in updates for artist in artists]
    for artist in moving:
        artist.set_animated(True)
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    images = []
    for f, label in enumerate(data["labels"]):
        for update, _ in updates:
            update(f)
        loss = data["losses"][f]
        numbers = f"loss {loss[0]:.4g}" if single else f"best loss {np.nanmin(loss):.4g}"
        heading.set_text(f"{title}: {label}, {numbers}")
        canvas.restore_region(background)
        for artist in moving:
            fig.draw_artist(artist)
        rgba = np.asarray(canvas.buffer_rgba())
        images.append(Image.fromarray(rgba[..., :3]).quantize(colors=128, method=Image.Quantize.FASTOCTREE))
    buf = io.BytesIO()
    durations = [90] * (len(images) - 1) + [2000]  # hold the final frame
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buf.getvalue()


def _boundary_panel(ax: Any, data: dict, m: int, X: np.ndarray, Y: np.ndarray, class_names: Any, names: Any) -> Any:
    extent = data["extent"]
    k = max(Y.shape[1], 2)
    first = data["outputs"][0][m]
    image = ax.imshow(boundary_rgb(first, k), origin="lower", extent=extent, aspect="auto", interpolation="bilinear")
    y = class_indices(Y).astype(int)
    colors = class_colors(k)
    points = ax.scatter(X[:, 0], X[:, 1], s=10, color=colors[y], edgecolors="k", linewidths=0.3)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(names[0] if names else "x1", fontsize=8)
    ax.set_ylabel(names[1] if len(names) > 1 else "x2", fontsize=8)
    ax.tick_params(labelsize=7)

    def update(f: int) -> None:
        image.set_data(boundary_rgb(data["outputs"][f][m], k))

    return update, [image, points, *ax.spines.values()]


def _fit_panel(ax: Any, data: dict, m: int, X: np.ndarray, Y: np.ndarray, names: Any) -> Any:
    ax.scatter(X[:, 0], Y[:, 0], s=8, color="0.45", alpha=0.7)
    (line,) = ax.plot(data["grid"][:, 0], data["outputs"][0][m][:, 0], color="tab:blue", linewidth=2.0)
    lo, hi = float(Y.min()), float(Y.max())
    pad = 0.2 * (hi - lo) + 1e-9
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(names[0] if names else "x", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)

    def update(f: int) -> None:
        line.set_ydata(data["outputs"][f][m][:, 0])

    return update, [line]


def _network_panel(ax: Any, data: dict, m: int, sizes: Sequence[int], scale: float) -> Any:
    panel = _NetworkPanel(ax, sizes, scale or 1.0)

    def update(f: int) -> None:
        panel.update(data["params"][f][m])

    return update, panel.artists


def _gradient_panel(ax: Any, data: dict) -> Any:
    """Each layer's gradient norm over the recorded epochs (log scale; as gradients.png), with a
    line at the frame's epoch."""
    epochs, norms, names = data["gradients"]
    norms = np.asarray(norms, float)
    for l, name in enumerate(names):
        shown = np.isfinite(norms[:, l]) & (norms[:, l] > 0)
        ax.plot(np.asarray(epochs)[shown], norms[shown, l], linewidth=1.0, label=name)
    if np.any(np.isfinite(norms) & (norms > 0)):
        log_y(ax)  # plain tick labels: no mathtext in these figures
    cursor = ax.axvline(0, color="tab:red", linewidth=1.0)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel("gradient norm by layer", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="best")

    def update(f: int) -> None:
        cursor.set_xdata([int(data.get("first", 0)) + data["epochs"][f]] * 2)

    return update, [cursor]


def _loss_panel(ax: Any, data: dict, history: np.ndarray) -> Any:
    first = int(data.get("first", 0))
    epochs = np.arange(first + 1, first + len(history) + 1)
    ax.plot(epochs, history, color="tab:blue", linewidth=1.2)
    ax.set_xlim(first, first + len(history) * 1.03 + 1)  # room for the final weights' marker, after the last epoch
    if spans_decades(history):
        log_y(ax)
    marked = np.array([float(loss[0]) for loss in data["losses"]])  # every marker stays on the axes
    marked = marked[np.isfinite(marked)]
    if marked.size:
        low, high = ax.get_ylim()
        if marked.min() < low or marked.max() > high:
            log = ax.get_yscale() == "log"
            pad = 0.9 if log else 0.0
            ax.set_ylim(min(low, marked.min() * pad if log else marked.min() - 0.05 * (high - low)),
                        max(high, marked.max() / pad if log else marked.max() + 0.05 * (high - low)))  # fmt: skip
    (marker,) = ax.plot([], [], "o", color="tab:red", markersize=6)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)

    def update(f: int) -> None:
        marker.set_data([first + data["epochs"][f]], [data["losses"][f][0]])

    return update, [marker]
