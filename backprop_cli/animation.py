"""training.gif: the network learning, frame by frame.

Inside the loop, `Snapshots` (a training callback) copies the flat weights at a few chosen
epochs; that is all training pays. After training, `frames` evaluates each snapshot where the
picture needs it (the class regions of a 2-input classifier, the curve of a 1-input
regression) and `training_gif` draws them: one figure built once, its artists updated frame
by frame (an image's pixels, a line collection's colours and widths, a marker), each frame
rendered on the Agg canvas and the frames joined into a GIF by Pillow, which matplotlib
already depends on.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from backprop_cli.errors import ConfigError
from backprop_cli.experiment import network
from backprop_cli.metrics import class_indices
from backprop_cli.network import Network, neuron_names
from backprop_cli.painter import Job
from backprop_cli.pictures import boundary_grid, boundary_rgb, class_colors, fit_grid
from backprop_cli.plots import log_y, new_figure, quiet_overflow, spans_decades

if TYPE_CHECKING:
    from backprop_cli.config import Config
    from backprop_cli.data import Dataset
    from backprop_cli.training import TrainResult

DEFAULT_FRAMES = 60
MAX_PANELS = 9  # a sweep or seed study animates one panel per model, at most this many
MAX_ANIMATED_NEURONS = 64  # the network panel: more neurons than this are not drawn
GRID = 100  # the class regions' resolution in each frame
DENSE = 4  # candidate snapshots per frame, for frames chosen by the loss


class Snapshots:
    """A training callback that keeps the weights each chosen epoch starts from.

    Frame k shows the weights epoch k starts from (those its recorded loss was measured
    with): the initial weights for epoch 1, else the weights after epoch k - 1's update.
    The loss curve is known only at the end, so candidates are taken densely (`DENSE` times
    the frames, evenly spaced, and log-spaced ones); `choose` picks the frames then: by the
    loss (`by="loss"`, the default: equal steps of the loss's change, on a log scale when it
    spans decades, with a quarter of the frames evenly spaced so no stretch goes unseen) or
    evenly by epoch (`by="epoch"`). Each call costs one integer comparison, and a copy at a
    snapshot.
    """

    def __init__(
        self, theta: np.ndarray, epochs: int, start: int = 0, frames: int = DEFAULT_FRAMES, by: str = "loss"
    ) -> None:
        self.start, self.epochs, self.frames, self.by = start, epochs, frames, by
        self.linear = sorted({int(k) for k in np.round(np.linspace(1, epochs, frames))})
        dense = sorted({int(k) for k in np.round(np.linspace(1, epochs, DENSE * frames))}) if by == "loss" else []
        self.log = _log_spaced(epochs, frames) if by == "loss" else []
        self.wanted = sorted(set(self.linear) | set(dense) | set(self.log))
        self.taken: dict[int, np.ndarray] = {1: theta.copy()}
        self.i = 1 if len(self.wanted) > 1 else len(self.wanted)
        self.next = self._epoch_before(self.i)

    def _epoch_before(self, i: int) -> int:
        """The callback epoch whose weights start wanted[i] (-1 when there is none left)."""
        return self.start + self.wanted[i] - 1 if i < len(self.wanted) else -1

    def __call__(self, epoch: int, loss: np.ndarray, seen: Any) -> None:
        if epoch == self.next:
            self.taken[epoch - self.start + 1] = seen.theta.copy()
            self.i += 1
            self.next = self._epoch_before(self.i)

    def choose(self, losses: np.ndarray) -> list[int]:
        """The epochs (1-based, of this training) to draw, `frames` of them (fewer where the
        run has fewer epochs)."""
        taken = [k for k in self.wanted if k in self.taken and k - 1 < len(losses)]
        if len(taken) <= self.frames or not len(losses):  # a run that stopped early: every snapshot
            return taken
        if self.by == "epoch":
            return [k for k in self.linear if k in self.taken and k - 1 < len(losses)] or taken
        curve = np.nanmean(np.asarray(losses, float), axis=1) if np.ndim(losses) == 2 else np.asarray(losses, float)
        finite = np.isfinite(curve)
        if not finite.all():  # a diverged model: the curve up to its last finite loss
            curve = np.where(finite, curve, np.nan)
        values = np.log(np.clip(curve, 1e-300, None)) if spans_decades(curve[np.isfinite(curve)]) else curve
        # minibatch noise would count as change: the curve is smoothed over a window of about
        # a quarter of the epochs between two frames first
        window = max(1, len(values) // (4 * self.frames))
        if window > 1:
            kernel = np.ones(window) / window
            padded = np.concatenate([np.full(window - 1, values[0]), values])
            values = np.convolve(np.nan_to_num(padded, nan=float(np.nanmean(values))), kernel, mode="valid")
        if np.nanmin(values) < values[0]:
            # progress: how far the best loss so far has come down (noise on a plateau sets few
            # new bests; a rise after the best is no learning to show)
            change = values[0] - np.fmin.accumulate(values)
        else:  # a loss that only rises (diverging): follow its change
            change = np.concatenate([[0.0], np.cumsum(np.nan_to_num(np.abs(np.diff(values)), nan=0.0))])
        even = max(2, self.frames // 4)
        picked = {taken[0], taken[-1]}
        grid = np.array(taken)
        picked |= {taken[int(np.argmin(np.abs(grid - t)))] for t in np.linspace(1, taken[-1], even)}
        if change[-1] > 0:
            at = np.array([change[k - 1] for k in taken])
            for goal in np.linspace(0, change[-1], self.frames - even):
                picked.add(taken[int(np.argmin(np.abs(at - goal)))])
        rest = [k for k in taken if k not in picked]  # fill up evenly where steps of the loss coincide
        while len(picked) < self.frames and rest:
            gaps = sorted(picked)
            widest = max(range(len(gaps) - 1), key=lambda i: gaps[i + 1] - gaps[i])
            middle = (gaps[widest] + gaps[widest + 1]) / 2
            k = min(rest, key=lambda k: abs(k - middle))
            picked.add(k)
            rest.remove(k)
        return sorted(picked)[: self.frames] if len(picked) > self.frames else sorted(picked)


def _log_spaced(epochs: int, frames: int) -> list[int]:
    """About `frames` distinct epochs from 1 to `epochs`, log-spaced: rounding merges the first
    few, so more points are asked for until enough distinct ones remain."""
    n, found = frames, [1]
    while n <= 20 * frames:
        found = sorted({int(k) for k in np.round(np.geomspace(1, epochs, n))})
        if len(found) >= min(frames, epochs):
            break
        n += max(frames // 4, 1)
    if len(found) > frames:  # thin evenly to the number asked for, keeping both ends
        found = [found[i] for i in sorted({int(i) for i in np.round(np.linspace(0, len(found) - 1, frames))})]
    return found


def snapshots_for(cfg: Config, n_models: int = 1, seeds: Optional[list[int]] = None) -> Optional[Snapshots]:
    """Snapshots for a config's training.gif when it animates (else None), from the initial
    weights that `experiment.network` builds for it: one model, a sweep's n_models copies, or
    one model per seed."""
    if not cfg.training.animate:
        return None
    initial = network(cfg, n_models=n_models, seeds=seeds).theta
    return Snapshots(initial, cfg.training.epochs, 0, cfg.training.frames, cfg.training.frames_by)


def check_models(n: int, what: str) -> None:
    """A study animates one panel per model: refuse more than MAX_PANELS, saying so."""
    if n > MAX_PANELS:
        raise ConfigError(
            f"--animate draws one panel per model, at most {MAX_PANELS}; this study has {n} {what}: "
            f"animate fewer, or train one of them with --animate"
        )


def chain(*callbacks: Any) -> Any:
    """One training callback that calls each of `callbacks` (None ones left out)."""
    called = [c for c in callbacks if c is not None]
    if len(called) == 1:
        return called[0]

    def each(epoch: int, loss: np.ndarray, seen: Any) -> None:
        for callback in called:
            callback(epoch, loss, seen)

    return each


def panel_kind(net: Network, classification: bool) -> str:
    """What a model's panel shows: `boundary` (2-input classifier), `fit` (1-input, 1-output
    regression) or `network` (any other net small enough to draw)."""
    if classification and net.sizes[0] == 2:
        return "boundary"
    if not classification and net.sizes[0] == 1 and net.sizes[-1] == 1:
        return "fit"
    return "network"


def frames(
    net: Network,
    snapshots: Snapshots,
    losses: np.ndarray,
    final: Optional[np.ndarray],
    final_loss: Optional[np.ndarray],
    X_raw: np.ndarray,
    scaler: Any,
    classification: bool,
    restored: Optional[int] = None,
) -> dict[str, Any]:
    """What each frame shows, as plain arrays for `training_gif`: per frame its epoch, each
    model's loss and either the network's outputs over the picture's grid or its parameters.

    `losses` (epochs, K) is the history; `final`/`final_loss` the saved weights (K, P) and
    their loss, drawn as the last frame: at the epoch after the last (the weights after its
    update, where the curve would go on), or, when restore_best kept epoch `restored`'s
    weights, at that epoch, on the curve.
    """
    kind = panel_kind(net, classification)
    probe = Network(net.sizes, net.activations, net.bias, n_models=net.K, dtype=net.dtype)
    grid: Optional[np.ndarray] = None
    extent = None
    if kind == "boundary":
        extent, grid = boundary_grid(X_raw, GRID)
    elif kind == "fit":
        grid = fit_grid(X_raw, 200)
    scaled = scaler.apply(grid) if grid is not None else None
    epochs = snapshots.choose(losses[:, np.isfinite(losses).all(axis=0)] if losses.size else losses)
    first = snapshots.start  # a continuation (--from) numbers its epochs on from its origin's
    shots = [(f"epoch {first + k}", k, snapshots.taken[k], losses[k - 1]) for k in epochs if k - 1 < len(losses)]
    if final is not None and final_loss is not None:
        if restored is not None:
            label = f"restored weights of epoch {restored} (restore_best)"
            shots.append((label, restored - first, final, final_loss))
        else:
            shots.append((f"final weights (after epoch {first + len(losses)})", len(losses) + 1, final, final_loss))
    out: dict[str, Any] = {"kind": kind, "extent": extent, "grid": grid, "labels": [], "epochs": [], "losses": []}
    out["first"] = first  # the epoch before this training's first: the loss panel's x starts after it
    out.update(outputs=[], params=[])
    for label, k, theta, loss in shots:
        probe.theta[...] = theta
        out["labels"].append(label)
        out["epochs"].append(k)
        out["losses"].append(np.asarray(loss, float))
        out["params"].append([probe.get_params(m) for m in range(net.K)])
        if scaled is not None:
            with np.errstate(all="ignore"):
                out["outputs"].append(np.stack([probe.predict(scaled, m) for m in range(net.K)]))
    return out


def gif_job(
    path: Path,
    title: str,
    result: TrainResult,
    data: Dataset,
    snapshots: Snapshots,
    saved_loss: Optional[float] = None,
    names: Sequence[str] = (),
) -> Job:
    """training.gif as a painter job: the snapshots evaluated here, into plain arrays, and drawn
    by `training_gif` there. One run (with `saved_loss`, a last frame of its saved weights), or a
    study's models, one panel each, titled by `names`."""
    net = result.net
    losses = result.history["loss"][: max(result.epochs_run)]
    final = final_loss = None
    if saved_loss is not None:
        final, final_loss = net.theta.copy(), np.array([saved_loss])
    X = data.X_raw if data.X_raw is not None else data.X
    restored = result.restored_epoch[0] if result.restored_epoch and net.K == 1 else None
    shown = frames(net, snapshots, losses, final, final_loss, X, data.scaler, data.classification, restored)
    if result.diagnostics is not None and net.K == 1:  # a run's gradient norms by layer, where they fit
        from backprop_cli.diagnostics import Q
        from backprop_cli.network import layer_names

        epochs, values = result.diagnostics.table(0)
        shown["gradients"] = (epochs, values[:, :, Q["grad_norm_weights"]], layer_names(net.activations))
    args = (shown, X, data.Y, net.sizes, title, losses[:, 0], tuple(names), data.class_names, data.feature_names)
    return (path, "animation.training_gif", args)


# -- drawing ----------------------------------------------------------------------------------


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
        ax.set_yscale("log")
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
