"""training.gif: the network learning, frame by frame.

Inside the loop, `Snapshots` (a training callback) copies the flat weights at a few chosen
epochs; that is all training pays. After training, `frames` evaluates each snapshot where the
picture needs it (the class regions of a 2-input classifier, the curve of a 1-input
regression) and `gif_job` hands them to `gif.training_gif`, which draws them in the drawing
worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from backprop_cli.errors import ConfigError
from backprop_cli.experiment import network
from backprop_cli.network import Network
from backprop_cli.painter import Job
from backprop_cli.pictures import boundary_grid, fit_grid
from backprop_cli.plots import spans_decades

if TYPE_CHECKING:
    from backprop_cli.config import Config
    from backprop_cli.data import Dataset
    from backprop_cli.training import TrainResult

DEFAULT_FRAMES = 60
MAX_PANELS = 9  # a sweep or seed study animates one panel per model, at most this many
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
        last = float(epochs)  # as a float: a count past int64 (1e20 epochs) spaces as well
        self.linear = sorted({int(k) for k in np.round(np.linspace(1, last, frames))})
        dense = sorted({int(k) for k in np.round(np.linspace(1, last, DENSE * frames))}) if by == "loss" else []
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
        found = sorted({int(k) for k in np.round(np.geomspace(1, float(epochs), n))})
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
    return (path, "gif.training_gif", args)
