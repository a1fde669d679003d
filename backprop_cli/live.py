"""A live run: the state a browser page shows while the network trains, and the controls it
sends back (pause, step, resume, stop, a new learning rate, a slower pace).

`Live` is a training callback. After every epoch it costs one clock reading unless a control
is pending; at most `RATE` times a second it publishes a snapshot (the new points of the
curves, the weights, the class regions or fitted curve, the gradient norms by layer) as JSON
bytes that the server (`server`) hands to each page. The loop never waits for a page: a
closed tab changes nothing. Controls reach the loop between epochs, on the training thread,
so a rate change takes effect from the next epoch exactly and is recorded as
`training.lr_changes`: training the saved config again gives the same weights bit for bit.
No HTTP, no printing, no files here.
"""

from __future__ import annotations

import json
import math
import threading
import time
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from backprop_cli.animation import panel_kind
from backprop_cli.data import Dataset
from backprop_cli.metrics import class_indices
from backprop_cli.network import Network, neuron_names
from backprop_cli.pictures import MAX_DIAGRAM_NEURONS, boundary_grid, fit_grid
from backprop_cli.training import rate_in_effect

if TYPE_CHECKING:
    from backprop_cli.config import Config

RATE = 10.0  # snapshots a second, at most, whatever the epoch rate
CURVE_POINTS = 1000  # per curve: past it every other point is dropped and the stride doubles
GRID = 48  # class regions: GRID x GRID points
MAX_POINTS = 2000  # data points drawn on the page
MAX_DELAY = 2.0  # seconds per epoch at the slowest pace
ACTIONS = ("pause", "resume", "step", "stop", "rate", "delay", "select")


class ControlError(ValueError):
    """A control the run cannot take (a bad value, or a rate change in a sweep)."""


def _round(values: Any, digits: int = 6) -> Any:
    """Values as JSON-ready (nested) lists in `digits` significant digits, non-finite ones as
    None: m / 10^d with m a whole number is the double nearest the short decimal, so JSON
    writes it short. Vectorized: a snapshot rounds thousands of values."""
    x = np.asarray(values, float)
    finite = np.isfinite(x) & (x != 0)
    with np.errstate(all="ignore"):
        d = np.where(finite, digits - 1 - np.floor(np.log10(np.abs(np.where(finite, x, 1.0)))), 0)
        up = d >= 0  # 10^d is exact for 0 <= d <= 22; for d < 0 multiply by 10^-d
        m = np.rint(np.where(up, x * 10.0 ** np.where(up, d, 0), x / 10.0 ** np.where(up, 0, -d)))
        rounded = np.where(up, m / 10.0 ** np.where(up, d, 0), m * 10.0 ** np.where(up, 0, -d))
    rounded = np.where(finite, rounded, x)
    if np.isfinite(x).all():
        return rounded.tolist()
    return np.where(np.isfinite(x), rounded.astype(object), np.array(None)).tolist()


class _Curves:
    """The history's columns for the page, every `stride`-th epoch, at most CURVE_POINTS
    points: past that, only every other point is kept, and the stride doubles."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.epochs = np.zeros(0, int)
        self.values: dict[str, np.ndarray] = {}
        self.stride = 1
        self.generation = 0  # how many times the points were thinned: a page's copy is then stale

    def add(self, first_epoch: int, n: int, rows_of: Callable[[np.ndarray], dict]) -> None:
        """n new epochs from first_epoch; `rows_of(offsets)` reads each column's rows (m, K)
        at those offsets among them: only the epochs kept are read."""
        keep = np.arange((1 - first_epoch) % self.stride, n, self.stride)
        if len(keep):
            rows = rows_of(keep)
            self.epochs = np.concatenate([self.epochs, first_epoch + keep])
            for c in self.columns:
                new = np.asarray(rows[c], float).reshape(len(keep), -1)
                self.values[c] = np.concatenate([self.values[c], new]) if c in self.values else new
        while len(self.epochs) > CURVE_POINTS:
            self.stride *= 2
            kept = (self.epochs - 1) % self.stride == 0
            self.epochs = self.epochs[kept]
            self.values = {c: v[kept] for c, v in self.values.items()}
            self.generation += 1

    def tail(self, start: int = 0) -> dict:
        """The points from the `start`-th on (`reset`: all of them, to replace a page's)."""
        part: dict[str, Any] = {"reset": start == 0, "epochs": self.epochs[start:].tolist()}
        part["values"] = {c: _round(v[start:]) for c, v in self.values.items()}
        return part


class Live:
    """What the page of a run of `cfg` shows and steers; with `rates`, of a learning-rate
    sweep (one model per rate, named by `labels`), whose rates are not the page's to change.
    `changes` is what the loop reads as its lr_changes; `paused`: wait for Run or Step
    before the first epoch. `wait` (wait for a page before training) and `address` (the
    page's URL, recorded in the run folder) are the server's to set."""

    def __init__(
        self,
        cfg: Config,
        data: Dataset,
        rates: Optional[Sequence[float]] = None,
        labels: Optional[Sequence[str]] = None,
        paused: bool = False,
    ) -> None:
        t, m = cfg.training, cfg.model
        self.name, self.data, self.epochs = cfg.name or "run", data, t.epochs
        self.changes: dict[int, float] = dict(t.lr_changes or {})
        self.added: dict[int, float] = {}  # the changes made from the page
        given = list(rates) if rates is not None else [t.learning_rate]
        self.K = len(given)
        # the base rate of each model (layer 1's where a model has one per layer)
        self.rates = [float(np.ravel(r)[0]) for r in given]
        self.steer_rate = rates is None and np.ndim(t.learning_rate) == 0
        # why the page may not change the rate (None: it may)
        self.rate_note = (
            None
            if self.steer_rate
            else "each model of a sweep trains at its own rate"
            if rates is not None
            else "this run has one rate per layer; a change sets one rate for every layer (lr_changes)"
        )
        self.notice: Optional[Callable[[str], None]] = None  # hears that a page connected
        self.on_hold: Optional[Callable[[bool], None]] = None  # hears pauses (True) and resumes
        self.labels = list(labels or [self.name])
        self.wait = True
        self.address: Optional[str] = None
        self.net: Optional[Network] = None  # the network training, from `begin`: its gradients
        self.cond = threading.Condition()
        self.commands: list[tuple[str, Any]] = []
        self.hold = paused  # whether the loop must look at the controls after an epoch
        self.paused, self.steps, self.delay, self.selected = paused, 0, 0.0, 0
        self.version, self.message, self.finished, self.stop_requested = 0, b"", False, False
        self.connected = threading.Event()  # set by the server when a page listens
        self.start_epoch, self.epoch, self.status = 0, 0, "waiting"
        self.note: Optional[str] = None
        self.held = 0.0  # seconds the page held the loop (paused, or at a slower pace)
        self.curves: Optional[_Curves] = None
        self.due, self.rows = 0.0, 0  # next snapshot time; history rows already in the curves
        self.probe = Network(m.layers, m.activations, m.bias, 1, np.dtype(t.dtype))
        self.kind = panel_kind(self.probe, data.classification)
        self.grid, self.extent, self.fit_x = self._grid()
        self.drawable = sum(m.layers) <= MAX_DIAGRAM_NEURONS
        starts, offset = [], 0
        for n_out, n_in in zip(m.layers[1:], m.layers[:-1]):
            starts.append(offset)
            offset += n_out * n_in + (n_out if m.bias else 0)
        self.layer_starts = np.array(starts)
        self.meta = self._meta(t.loss)

    # -- what the page draws ----------------------------------------------------------

    def _grid(self) -> tuple[Optional[np.ndarray], Any, Any]:
        """The picture's points (scaled as the network reads them), extent and raw x's."""
        X = self.data.X_raw if self.data.X_raw is not None else self.data.X
        if self.kind == "boundary":
            extent, points = boundary_grid(X, GRID)
            return self.data.scaler.apply(points), extent, None
        if self.kind == "fit":
            points = fit_grid(X, 120)
            return self.data.scaler.apply(points), None, _round(points[:, 0])
        return None, None, None

    def _meta(self, loss: str) -> dict:
        d, net = self.data, self.probe
        X = d.X_raw if d.X_raw is not None else d.X
        shown = slice(0, MAX_POINTS if self.kind in ("boundary", "fit") else 0)  # only a picture shows them
        if d.classification:
            targets: list = class_indices(d.Y[shown]).astype(int).tolist()
        else:
            targets = _round(d.Y[shown, 0])
        return {
            "name": self.name,
            "labels": self.labels,
            "layers": net.sizes,
            "activations": net.activations,
            "neurons": neuron_names(net.sizes),
            "feature_names": [str(f) for f in d.feature_names],
            "class_names": [str(c) for c in d.class_names] if d.class_names else None,
            "classification": d.classification,
            "loss": loss,
            "epochs": self.epochs,
            "panel": self.kind,
            "extent": self.extent,
            "grid": GRID if self.kind == "boundary" else None,
            "fit_x": self.fit_x,
            "points": {"x": _round(X[shown]), "y": targets, "total": len(X)},
            "steer_rate": self.steer_rate,
            "rate_note": self.rate_note,
            "drawable": self.drawable,
        }

    def _picture(self, theta: np.ndarray) -> Optional[dict]:
        """The selected model's class regions (class and certainty 0-100 per grid point) or
        fitted curve, from its weights."""
        if self.grid is None:
            return None
        self.probe.theta[0] = theta
        with np.errstate(all="ignore"):
            out = self.probe.predict(self.grid, 0)
        if self.kind == "fit":
            return {"y": _round(out[:, 0], 5)}
        probs = np.c_[1 - out[:, 0], out[:, 0]] if out.shape[1] == 1 else out
        k = probs.shape[1]
        sure = np.clip((np.nan_to_num(probs.max(axis=1)) - 1 / k) / (1 - 1 / k), 0, 1)
        return {"class": np.nan_to_num(probs).argmax(axis=1).tolist(), "sure": np.rint(100 * sure).astype(int).tolist()}

    def _snapshot(self, epoch: int, theta: np.ndarray, lr: Any, losses: Any, grad: Optional[np.ndarray]) -> dict:
        k = self.selected
        state: dict[str, Any] = {
            "epoch": epoch,
            "status": self.status,
            "start_epoch": self.start_epoch,
            "paused": self.paused,
            "delay": self.delay,
            "selected": k,
            "loss": _round(losses),
            "learning_rate": _round(lr),
            "next_rate": _round(self._rates(epoch + 1)) if epoch + 1 in self.changes else None,
            "note": self.note,
            "changes": [{"epoch": e, "learning_rate": r} for e, r in sorted(self.added.items())],
            "picture": self._picture(theta[k]),
        }
        if self.drawable:
            self.probe.theta[0] = theta[k]
            state["weights"] = [
                {"w": _round(w), "b": None if b is None else _round(b)} for w, b in self.probe.get_params(0)
            ]
        if grad is not None:
            squares = np.add.reduceat(grad[k] ** 2, self.layer_starts)
            state["grad_norms"] = _round(np.sqrt(squares))
        return state

    def _publish(self, epoch: int, theta: np.ndarray, lr: Any, losses: Any, grad: Optional[np.ndarray]) -> None:
        state = self._snapshot(epoch, theta, lr, losses, grad)
        with self.cond:
            self.epoch = epoch
            self.message = json.dumps(state, separators=(",", ":")).encode()
            self.version += 1
            self.cond.notify_all()

    def curves_since(self, generation: int, sent: int) -> tuple[Optional[bytes], int, int]:
        """The curve points one page has not had, as JSON (None: none), and what it then has
        (generation, points): each page's stream keeps its own count, so a page that skips
        snapshots (it gets the latest, never a queue) misses no point. Called with the lock."""
        curves = self.curves
        if curves is None:
            return None, generation, sent
        start = sent if generation == curves.generation else 0
        if start == len(curves.epochs) and start:
            return None, generation, sent
        data = json.dumps({"curves": curves.tail(start)}, separators=(",", ":")).encode()
        return data, curves.generation, len(curves.epochs)

    # -- the training loop's side -----------------------------------------------------

    def begin(self, net: Network, start_epoch: int = 0) -> None:
        """Show the starting weights of `net` (as epoch `start_epoch`), wait for a page to
        connect (unless `wait` is off) and, while paused, for Run or Step. A stop before the
        first epoch is a KeyboardInterrupt: nothing was trained."""
        self.net, self.start_epoch, self.epoch = net, start_epoch, start_epoch
        theta, wait = net.theta, self.wait
        losses = np.full(self.K, np.nan)

        def show() -> None:
            self.status = "paused" if self.paused else "running"
            self._publish(start_epoch, theta, self._rates(start_epoch + 1), losses, None)

        show()
        while wait and not self.connected.wait(0.25):
            pass
        if wait and self.notice is not None:
            self.notice(
                "page connected: " + ("paused; Run or Step on the page starts training" if self.paused else "training")
            )
        while True:
            with self.cond:
                if not self.commands and self.paused:
                    self.cond.wait(0.25)
                changed = self._apply(start_epoch, None)
            if self.stop_requested:
                self.end("stopped", "Stopped before the first epoch: nothing was trained.")
                raise KeyboardInterrupt
            if changed or not self.paused:
                show()
            if not self.paused:
                return

    def _rates(self, epoch: int) -> np.ndarray:
        """Each model's base rate at `epoch`, lr_changes included."""
        return np.array([rate_in_effect(r, self.changes, epoch) for r in self.rates])

    def __call__(self, epoch: int, loss: np.ndarray, seen: Any) -> None:
        # after every epoch: kept to two tests and a clock reading (the loop's cost)
        if self.hold:
            self._steer(epoch, loss, seen)
        elif perf_counter() >= self.due:
            self.due = perf_counter() + 1 / RATE
            self._update(epoch, loss, seen)

    def _update(self, epoch: int, loss: np.ndarray, seen: Any) -> None:
        """Publish: the history rows since the last snapshot go to the curves."""
        rows = seen.index + 1
        if self.curves is None:
            self.curves = _Curves(seen.columns)
        if rows > self.rows:
            done, history = self.rows, seen.history
            with self.cond:  # a page that connects reads the curves on a server thread
                self.curves.add(
                    self.start_epoch + done + 1,
                    rows - done,
                    lambda at: {c: history.value(c, done + at) for c in seen.columns},
                )
            self.rows = rows
        self._publish(epoch, seen.theta, seen.lr[:, 0], loss, self.net.grad if self.net is not None else None)

    def _steer(self, epoch: int, loss: np.ndarray, seen: Any) -> None:
        """The controls, between epochs: apply what came; while paused, wait here."""
        with self.cond:
            self._apply(epoch, seen)
            if self.steps:
                self.steps -= 1
                self.paused = self.steps == 0
        shown, held, told = False, time.perf_counter(), False
        while self.paused and not seen.stopping:
            if not shown:  # the paused epoch, and again after each control
                self.status = "paused"
                self._update(epoch, loss, seen)
                if self.on_hold is not None and not told:
                    self.on_hold(True)
                shown = told = True
            with self.cond:
                if not self.commands:
                    self.cond.wait(0.25)
                shown = not self._apply(epoch, seen)
        if self.on_hold is not None and told:
            self.on_hold(False)
        with self.cond:
            self.status = "running"
            self.hold = bool(self.paused or self.steps or self.delay or self.commands)
            delay = self.delay
        now = time.perf_counter()
        if shown or now >= self.due:
            self.due = now + 1 / RATE
            self._update(epoch, loss, seen)
        if delay:
            time.sleep(delay)
        self.held += time.perf_counter() - held

    def _apply(self, epoch: int, seen: Any) -> bool:
        """The pending controls, in order (the lock is held); whether there were any."""
        commands, self.commands = self.commands, []
        for action, value in commands:
            if action == "pause":
                self.paused, self.steps = True, 0
            elif action == "resume":
                self.paused, self.steps = False, 0
            elif action == "step":
                self.paused, self.steps = False, value
            elif action == "stop":
                self.stop_requested, self.paused, self.status = True, False, "stopping"
                if seen is not None:
                    seen.request_stop()
            elif action == "rate":
                self.changes[epoch + 1] = self.added[epoch + 1] = value
            elif action == "delay":
                self.delay = value
            elif action == "select":
                self.selected = value
        return bool(commands)

    # -- the server's side ------------------------------------------------------------

    def control(self, action: str, value: Any = None) -> None:
        """A control from the page, checked here and applied by the loop after the epoch in
        progress (or at once while paused)."""
        if action not in ACTIONS:
            raise ControlError(f"unknown action {action!r:.40} (valid: {', '.join(ACTIONS)})")
        if self.finished:
            raise ControlError("training has ended")
        if action == "step":
            value = 1 if value is None else value
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
                raise ControlError("step: a whole number of epochs from 1 to 1,000,000")
        elif action == "rate":
            if self.rate_note is not None:
                raise ControlError(f"rate: {self.rate_note}")
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not (math.isfinite(value) and value > 0)
            ):
                raise ControlError("rate: a learning rate is a finite number > 0")
            value = float(value)
        elif action == "delay":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= MAX_DELAY:
                raise ControlError(f"delay: seconds per epoch from 0 to {MAX_DELAY:g}")
            value = float(value)
        elif action == "select":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.K:
                raise ControlError(f"select: a model from 0 to {self.K - 1}")
        with self.cond:
            self.commands.append((action, value))
            self.hold = True
            self.cond.notify_all()

    def saving(self) -> None:
        """Training has ended; the run's files are being written (seconds, for a long history)."""
        self._restate("saving")

    def finish(self, status: str, history: dict, theta: np.ndarray, note: Optional[str] = None) -> None:
        """The end: the epochs since the last snapshot and the saved weights, with the run's
        status (completed, interrupted, diverged, ...) and a `note` on what the page shows
        (the weights restore_best kept); the pages' streams then close."""
        self.status, self.note = status, note
        rows = len(history["loss"])
        if self.curves is None:
            self.curves = _Curves(list(history))
        if rows > self.rows:
            done = self.rows
            with self.cond:
                self.curves.add(
                    self.start_epoch + done + 1, rows - done, lambda at: {c: v[done + at] for c, v in history.items()}
                )
            self.rows = rows
        losses = history["loss"][-1] if rows else np.full(self.K, np.nan)
        self._publish(self.start_epoch + rows, theta, self._rates(self.start_epoch + rows), losses, None)
        self.end(status)

    def end(self, status: str, note: Optional[str] = None) -> None:
        """Training is over (after `finish`, or when it failed): the last snapshot says so
        with `status` (and `note`), and the pages' streams close."""
        with self.cond:
            if not self.finished:
                self._restate(status, note)
                self.finished = True
                self.cond.notify_all()

    def _restate(self, status: str, note: Optional[str] = None) -> None:
        """The last snapshot again, with another status (and note)."""
        with self.cond:
            self.status = status
            if self.message:
                state = json.loads(self.message)
                state.update(status=status, **({"note": note} if note else {}))
                self.message = json.dumps(state, separators=(",", ":")).encode()
                self.version += 1
                self.cond.notify_all()

    def recorded_changes(self, last_epoch: int) -> dict[int, float]:
        """training.lr_changes as the run used them: the config's and the page's, up to the
        last epoch trained (a change for an epoch that never ran is not kept)."""
        return {e: r for e, r in sorted(self.changes.items()) if e <= last_epoch}
