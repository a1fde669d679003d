"""Why a network does not learn, layer by layer: per-layer quantities recorded while it trains,
and the rules that turn them into findings. No printing, no files.

Recorded (`training.diagnostics`), for each layer and model, at epoch 1, every `every`
epochs and at the end of training, on the training inputs (or `SAMPLE` of them, evenly spaced
through the set, when it has more), with the weights as they are after that epoch's update:

- `grad_norm_weights`, `grad_norm_biases`: the Euclidean norm of the loss's gradient with
  respect to the layer's weights (its biases), from one forward and backward pass;
- `update_ratio`: ||W after the epoch - W before it|| / ||W before it|| (the weights only);
- `activation_mean`, `activation_std`: over the layer's units and the samples;
- `saturated_fraction` (sigmoid and tanh layers): the fraction of units saturated on more than
  half of the samples, a sigmoid output below `SIGMOID_LOW` or above `SIGMOID_HIGH`, a tanh
  output with |a| above `TANH_HIGH`;
- `dead_fraction` (relu and leaky_relu layers): the fraction of units whose net input is at or
  below 0 on every sample.

The end-of-training record uses the weights the run keeps (restore_best's, where it restored
some), so `diagnose` of a run trained without diagnostics, one pass over its saved weights and
data, gives the same end-of-training numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from backprop_cli.losses import Loss
from backprop_cli.network import Network, layer_names

SAMPLE = 1024
SIGMOID_LOW, SIGMOID_HIGH, TANH_HIGH = 0.01, 0.99, 0.99
QUANTITIES = (
    "grad_norm_weights",
    "grad_norm_biases",
    "update_ratio",
    "activation_mean",
    "activation_std",
    "saturated_fraction",
    "dead_fraction",
)
Q = {name: i for i, name in enumerate(QUANTITIES)}

# the thresholds of the findings (README: Diagnosing training)
VANISHING_RATIO = 100.0  # a layer's gradient norm below 1/100 of a later layer's at epoch 1
DEAD_FRACTION = 0.25  # a relu layer with a quarter of its units dead at the end
SATURATED_FRACTION = 0.5  # a hidden layer with half of its units saturated at the end
RISING_WINDOW, RISING_SHARE = 50, 0.6  # the loss rose in 60% of the last 50 epochs
PLATEAU_BAND = 0.01  # a plateau: the loss stays within 1% of where the stretch began ...
PLATEAU_SHARE, PLATEAU_MIN = 0.2, 100  # ... for 20% of the epochs (at least 100) ...
PLATEAU_LEVEL = 0.1  # ... at 10% or more of the first epoch's loss (not a converged tail)
CONVERGED = 0.1  # a loss at a tenth of where it began: saturated or dead units are then no finding


def sample_rows(n: int) -> np.ndarray:
    """The training rows the diagnostics pass uses: all, or SAMPLE evenly spaced ones."""
    if n <= SAMPLE:
        return np.arange(n)
    return np.linspace(0, n - 1, SAMPLE).round().astype(np.int64)


def measure(probe: Network, X: np.ndarray, Y: np.ndarray, loss: Loss) -> np.ndarray:
    """Every quantity but update_ratio for each model and layer of `probe` (K, layers,
    quantities), NaN where a quantity does not apply, from one forward and backward pass."""
    K, L = probe.K, probe.n_layers
    found = np.full((K, L, len(QUANTITIES)), np.nan)
    ws = probe.workspace(len(X))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        probe.loss_and_grad(X, Y, loss, ws)
        for l in range(L):
            found[:, l, Q["grad_norm_weights"]] = np.sqrt(np.square(probe.gW[l]).sum(axis=(1, 2)))
            gb = probe.gb[l]
            if gb is not None:
                found[:, l, Q["grad_norm_biases"]] = np.sqrt(np.square(gb).sum(axis=(1, 2)))
            A = ws.A[l] if l < L - 1 or probe.activations[-1] != "identity" else ws.Z  # (K, n, units)
            found[:, l, Q["activation_mean"]] = A.mean(axis=(1, 2))
            found[:, l, Q["activation_std"]] = A.std(axis=(1, 2))
            act = probe.activations[l]
            if act == "sigmoid":
                saturated = (A < SIGMOID_LOW) | (A > SIGMOID_HIGH)
            elif act == "tanh":
                saturated = np.abs(A) > TANH_HIGH
            else:
                saturated = None
            if saturated is not None:
                found[:, l, Q["saturated_fraction"]] = (saturated.mean(axis=1) > 0.5).mean(axis=-1)
            if act in ("relu", "leaky_relu"):  # a <= 0 exactly where z <= 0
                found[:, l, Q["dead_fraction"]] = np.all(A <= 0, axis=1).mean(axis=-1)
    return found


def update_ratios(net: Network, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """||W after - W before|| / ||W before|| per model and layer (K, layers)."""
    found = np.full((before.shape[0], net.n_layers), np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for l, (w0, w1) in enumerate(zip(net.views(before)[0], net.views(after)[0])):
            size = np.sqrt(np.square(w0).sum(axis=(1, 2)))
            change = np.sqrt(np.square(w1 - w0).sum(axis=(1, 2)))
            found[:, l] = np.where(size > 0, change / np.where(size > 0, size, 1.0), np.nan)
    return found


def planned(every: int, epochs: int, start_epoch: int = 0) -> list[int]:
    """The epochs recorded: the start (epoch 0, or where a continuation starts: the weights
    before any update), every `every`th epoch after it, and the last."""
    last = start_epoch + epochs
    return sorted({start_epoch, last, *range(start_epoch + every, last + 1, every)})


class Recorder:
    """The training callback that records the diagnostics of `net`'s K models on `X, Y`."""

    def __init__(
        self, net: Network, X: np.ndarray, Y: np.ndarray, loss: Loss, every: int, epochs: int, start_epoch: int = 0
    ) -> None:
        rows = sample_rows(len(X))
        self.net, self.X, self.Y, self.loss = net, X[rows], Y[rows], loss
        self.probe = Network(net.sizes, net.activations, net.bias, net.K, net.dtype)
        self.epochs = planned(every, epochs, start_epoch)
        self.wanted = set(self.epochs[1:-1])  # the last is recorded by `finish`, with the kept weights
        self.before = set(e - 1 for e in self.epochs[1:])  # epochs whose end is a recorded epoch's start
        self.previous = net.theta.copy()  # the weights at the start of the next recorded epoch
        self.start = start_epoch
        self.final: Optional[tuple[np.ndarray, np.ndarray]] = None  # per model: epoch, values
        # (epoch, (K, layers, quantities)); the first, the weights before any update
        self.records: list[tuple[int, np.ndarray]] = [(start_epoch, self._record(net.theta, None))]

    def _record(self, theta: np.ndarray, previous: Optional[np.ndarray]) -> np.ndarray:
        self.probe.theta[...] = theta
        values = measure(self.probe, self.X, self.Y, self.loss)
        if previous is not None:
            values[:, :, Q["update_ratio"]] = update_ratios(self.net, previous, theta)
        return values

    def __call__(self, epoch: int, loss: Any, seen: Any) -> None:
        if epoch in self.wanted:
            self.records.append((epoch, self._record(seen.theta, self.previous)))
        if epoch in self.before:
            self.previous[...] = seen.theta

    def finish(self, theta: np.ndarray, epochs_run: Sequence[int], restored: Sequence[Any] = ()) -> None:
        """The end-of-training record of each model: at its last epoch, with the weights it
        keeps (`theta`, after restore_best); update_ratio where that epoch's start is known."""
        ends = np.array([self.start + ran for ran in epochs_run])
        known = all(int(e) - 1 in self.before for e in ends) and not any(r is not None for r in restored)
        self.final = (ends, self._record(theta, self.previous if known else None))

    def table(self, model: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Model `model`'s records: epochs (R,) and values (R, layers, quantities), the last
        at its end of training."""
        epochs = [e for e, _ in self.records]
        values = [v[model] for _, v in self.records]
        if self.final is not None:
            end = int(self.final[0][model])
            keep = [i for i, e in enumerate(epochs) if e < end]
            epochs, values = [epochs[i] for i in keep] + [end], [values[i] for i in keep] + [self.final[1][model]]
        if not values:
            return np.zeros(0, np.int64), np.zeros((0, self.net.n_layers, len(QUANTITIES)))
        return np.array(epochs), np.stack(values)


def rows(epochs: np.ndarray, values: np.ndarray) -> list[list[Any]]:
    """diagnostics.csv's rows: epoch, layer (from 1), quantity, value (inf where a diverged run
    overflowed); NaN (a quantity that does not apply, or is not known) left out."""
    found: list[list[Any]] = [["epoch", "layer", "quantity", "value"]]
    for epoch, per_layer in zip(epochs, values):
        for l, quantities in enumerate(per_layer):
            for name, v in zip(QUANTITIES, quantities):
                if not np.isnan(v):
                    found.append([int(epoch), l + 1, name, repr(float(v))])
    return found


def from_rows(header: Sequence[str], records: Any, n_layers: int, last_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """diagnostics.csv's rows (lists of strings after its header) back to epochs (R,) and
    values (R, layers, quantities). Raises ValueError naming the line and what is wrong."""
    if [h.lstrip("\ufeff") for h in header] != ["epoch", "layer", "quantity", "value"]:
        raise ValueError(f"line 1: the header is {','.join(header)}; expected epoch,layer,quantity,value")
    found: dict[int, np.ndarray] = {}
    for line, row in enumerate(records, start=2):
        if len(row) != 4:
            raise ValueError(f"line {line}: {len(row)} fields; expected 4")
        epoch_text, layer_text, name, value_text = row
        if not (epoch_text.isdigit() and layer_text.isdigit()) or len(epoch_text) > 9:
            raise ValueError(f"line {line}: epoch {epoch_text!r}, layer {layer_text!r}: expected whole numbers")
        epoch, layer = int(epoch_text), int(layer_text)
        if epoch > last_epoch:
            raise ValueError(f"line {line}: epoch {epoch}, after the run's last ({last_epoch})")
        if not 1 <= layer <= n_layers:
            raise ValueError(f"line {line}: layer {layer}; the network has layers 1 to {n_layers}")
        if name not in Q:
            raise ValueError(f"line {line}: unknown quantity {name!r}")
        try:
            value = float(value_text)
        except ValueError:
            raise ValueError(f"line {line}: value {value_text!r} is not a number") from None
        if (
            np.isnan(value)
            or (name.endswith("_fraction") and not 0 <= value <= 1)
            or (value < 0 and name != "activation_mean")
        ):
            raise ValueError(f"line {line}: {name} {value_text}: out of range")
        slot = found.setdefault(epoch, np.full((n_layers, len(QUANTITIES)), np.nan))
        if not np.isnan(slot[layer - 1, Q[name]]):
            raise ValueError(f"line {line}: epoch {epoch}, layer {layer}, {name} given twice")
        slot[layer - 1, Q[name]] = value
    if not found:
        raise ValueError("no records")
    epochs = sorted(found)
    return np.array(epochs, np.int64), np.stack([found[e] for e in epochs])


# -- findings --------------------------------------------------------------------------------


@dataclass
class Finding:
    """One thing the rules found: its kind, the layer it names (from 1, None for the whole
    network), what it says (evidence and what to try)."""

    kind: str
    text: str
    layer: Optional[int] = None
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "text": self.text, "evidence": self.evidence}


def _g(x: float) -> str:
    return f"{x:.2g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ratio(x: float) -> str:
    """1/1,259 or 1/1.2e+20: how many times smaller."""
    return "1/inf" if not np.isfinite(x) else f"1/{x:,.0f}" if x < 1e6 else f"1/{x:.1e}"


def findings(
    epochs: np.ndarray,
    values: np.ndarray,
    activations: Sequence[str],
    loss_epochs: np.ndarray,
    losses: np.ndarray,
    learning_rate: Any,
    diverged_at: Optional[int] = None,
    init: str = "uniform",
    scale: str = "none",
    start: Optional[int] = 0,
) -> list[Finding]:
    """What the rules find in one model's diagnostics (epochs, values as `Recorder.table`
    gives) and loss history; an empty list for a healthy run. `init` and `scale` (the
    config's) shape the advice; `start` is the epoch of the record that holds the initial
    weights (None: there is none, as for a run diagnosed afterwards)."""
    names = layer_names(activations)
    L = len(activations)
    found: list[Finding] = []
    rate = (
        f"learning rate {learning_rate:g}"
        if np.ndim(learning_rate) == 0
        else "learning rates " + ", ".join(f"{r:g}" for r in learning_rate)
    )
    finite_losses = losses[np.isfinite(losses)]
    # the loss fell to a tenth of where it began: saturated or dead units are then how the
    # network solved the task, not why it failed
    learned = finite_losses.size > 1 and finite_losses[-1] <= CONVERGED * finite_losses[0]
    if diverged_at is not None:
        found.append(
            Finding(
                "diverged",
                f"the loss became non-finite at epoch {diverged_at} ({rate}): the learning rate is too high. "
                "Try a smaller learning rate, or clip_grad_norm.",
                evidence={"epoch": diverged_at},
            )
        )
    if init == "zeros" and L > 1:
        found.append(
            Finding(
                "symmetric",
                "init zeros: every unit of a layer starts alike, gets the same gradient and stays alike (the "
                "symmetry is never broken). Try init uniform, xavier or he.",
            )
        )
    if len(epochs) and start is not None and int(epochs[0]) == start:
        norms = values[0, :, Q["grad_norm_weights"]]
        for l in range(L - 1):
            later = norms[l + 1 :]
            if not np.isfinite(norms[l]) or not np.any(np.isfinite(later)):
                continue
            top = int(l + 1 + np.nanargmax(later))
            if norms[l] * VANISHING_RATIO < norms[top]:
                ratio = norms[top] / norms[l] if norms[l] > 0 else np.inf
                whose = "the output layer's" if top == L - 1 else f"layer {top + 1}'s"
                at = "at the start" if start == 0 else f"at epoch {start}, where training started"
                size = (
                    f"gradient norm {_g(norms[l])}, {_ratio(ratio)} of"
                    if norms[l] > 0
                    else "no gradient at all, against"
                )
                text = f"{names[l]}: {size} {whose} {at}: vanishing gradients"
                saturated = values[0, l, Q["saturated_fraction"]]
                if np.isfinite(saturated) and saturated > 0:
                    text += f"; {_pct(saturated)} of its units saturated"
                scaled = "relu with he init" if init in ("xavier", "he") else "tanh or relu, or xavier/he init"
                text += f". Try {scaled}."
                found.append(
                    Finding("vanishing", text, l + 1, {"epoch": start, "norm": float(norms[l]), "ratio": float(ratio)})
                )
                break  # the first such layer; the ones before it fare no better
    if len(epochs) and not learned:
        end = values[-1]
        last = int(epochs[-1])
        cure_dead = "Try a smaller learning rate, leaky_relu or he init."
        for l in range(L):
            dead = end[l, Q["dead_fraction"]]
            if np.isfinite(dead) and dead >= DEAD_FRACTION:
                series = values[:, l, Q["dead_fraction"]]
                since = len(series)
                while since > 0 and series[since - 1] >= DEAD_FRACTION:
                    since -= 1
                when = (
                    f" (over {_pct(DEAD_FRACTION)} since epoch {int(epochs[since])})" if since < len(series) - 1 else ""
                )
                found.append(
                    Finding(
                        "dead",
                        f"{names[l]}: {_pct(dead)} of units dead at the end (epoch {last}){when} ({rate}). "
                        + ("Try a smaller learning rate or leaky_relu." if init == "he" else cure_dead),
                        l + 1,
                        {"fraction": float(dead), "since": int(epochs[since])},
                    )
                )
        saturated = [
            l
            for l in range(L - 1)
            if np.isfinite(end[l, Q["saturated_fraction"]])
            and end[l, Q["saturated_fraction"]] >= SATURATED_FRACTION
            and not any(f.kind == "vanishing" and f.layer == l + 1 for f in found)
        ]
        if saturated:
            which = ", ".join(f"{names[l]} {_pct(end[l, Q['saturated_fraction']])}" for l in saturated)
            tries = [] if init in ("xavier", "he") else ["smaller initial weights (xavier)"]
            tries += [] if scale != "none" else ["scaled inputs (data.scale: standard)"]
            tries.append("a smaller learning rate")
            found.append(
                Finding(
                    "saturated",
                    f"saturated units at the end (epoch {last}): {which}; they pass almost no gradient back. "
                    f"Try {', '.join(tries[:-1])}{' or ' if len(tries) > 1 else ''}{tries[-1]}.",
                    saturated[0] + 1,
                    {"layers": [l + 1 for l in saturated], "epoch": last},
                )
            )
    losses, loss_epochs = finite_losses, loss_epochs[np.isfinite(losses)]
    if len(losses) > RISING_WINDOW:
        window = np.diff(losses[-RISING_WINDOW - 1 :])
        rose = int((window > 0).sum())
        if rose >= RISING_SHARE * RISING_WINDOW:
            growing = ""
            if len(epochs) >= 2:
                total = _total_norms(values)
                if total[-1] > total[0]:
                    growing = " with growing gradient norms"
            found.append(
                Finding(
                    "rising",
                    f"loss rose in {rose} of the last {RISING_WINDOW} epochs{growing} ({rate}): learning rate too high? "
                    "Try a smaller learning rate.",
                    evidence={"rose": rose, "window": RISING_WINDOW},
                )
            )
    if len(losses) >= PLATEAU_MIN:
        a, best = 0, (0, 0)
        for b in range(1, len(losses) + 1):
            if b == len(losses) or abs(losses[b] - losses[a]) > PLATEAU_BAND * abs(losses[a]):
                if b - a > best[1] - best[0]:
                    best = (a, b)
                a = b
        a, b = best
        length = b - a
        if length >= max(PLATEAU_MIN, PLATEAU_SHARE * len(losses)) and losses[a] >= PLATEAU_LEVEL * losses[0]:
            inside = (epochs >= loss_epochs[a]) & (epochs <= loss_epochs[b - 1]) if len(epochs) else np.zeros(0, bool)
            grad = ""
            if inside.any():
                most = float(_total_norms(values[inside]).max())
                grad = f" while the gradient norm stayed below {_g(most)}" if most > 0 else " with no gradient at all"
            advice = (
                "; the findings above say why."
                if found
                else ". Try momentum or adam, a larger learning rate, or other initial weights (--seeds)."
            )
            found.append(
                Finding(
                    "plateau",
                    f"loss flat for {length} epochs (epochs {int(loss_epochs[a])} to {int(loss_epochs[b - 1])}, within "
                    f"{_pct(PLATEAU_BAND)} of {_g(float(losses[a]))}){grad}: a plateau{advice}",
                    evidence={"from": int(loss_epochs[a]), "to": int(loss_epochs[b - 1]), "loss": float(losses[a])},
                )
            )
    order = ["diverged", "symmetric", "rising", "vanishing", "dead", "saturated", "plateau"]  # likeliest cause first
    return sorted(found, key=lambda f: order.index(f.kind))


def _total_norms(values: np.ndarray) -> np.ndarray:
    """Each record's gradient norm over every weight and bias of the network (R,)."""
    parts = values[:, :, [Q["grad_norm_weights"], Q["grad_norm_biases"]]]
    return np.sqrt(np.nansum(np.square(parts), axis=(1, 2)))


def healthy(epochs: np.ndarray, values: np.ndarray, losses: np.ndarray) -> str:
    """What a run with no findings says: how its gradients reach the layers, and its loss."""
    said = "no problems found"
    if len(epochs):
        norms = values[0, :, Q["grad_norm_weights"]]
        finite = norms[np.isfinite(norms) & (norms > 0)]
        if finite.size > 1:
            spread = finite.max() / finite.min()
            at = "in the initial weights" if int(epochs[0]) == 0 else f"at epoch {int(epochs[0])}"
            if spread < 2:
                said += f": the layers' gradient norms are within a factor of 2 of each other {at}"
            else:
                said += f": the smallest layer's gradient norm is {_ratio(spread)} of the largest's {at}"
    finite_losses = losses[np.isfinite(losses)]
    if finite_losses.size:
        said += f"; the loss went from {_g(float(finite_losses[0]))} to {_g(float(finite_losses[-1]))}"
    return said + "."
