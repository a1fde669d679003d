"""`explain`: one full-batch training step laid out as tables, and their rendering as markdown
or CSV.

The tables: forward pass (z and a of every neuron), loss, backward pass (delta of every
neuron), gradients and the update, with the textbook names of `network.param_names` and
`network.neuron_names` (w1, w2, ...; b1, b2, ...; neurons x1.., h1.., o1..).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from backprop_cli.checkpoint import Checkpoint
from backprop_cli.data import Dataset
from backprop_cli.errors import ConfigError, DivergedError
from backprop_cli.experiment import fit, network, require_completed
from backprop_cli.files import atomic_write
from backprop_cli.initializers import random_streams
from backprop_cli.losses import LOSSES
from backprop_cli.network import Network, frozen_mask, layer_kinds, neuron_names
from backprop_cli.regularization import Dropout, GradientTerms, column
from backprop_cli.training import make_optimizer, make_schedule, rate_array, rate_in_effect

if TYPE_CHECKING:
    from backprop_cli.config import Config, TrainingConfig


@dataclass
class Section:
    """One table of the explanation: a title, column headers and rows of values."""

    title: str
    headers: list
    stage: str  # forward, loss, backward or update: the `stage` column of the tidy CSV
    rows: list = field(default_factory=list)
    note: str = ""


def g(x) -> str:
    """At least 6 significant digits: enough to check a hand calculation (and 0, never -0)."""
    return f"{float(x) + 0.0:.9g}"


def explain_step(cfg: Config, data: Dataset, epoch: int = 1, sample: int = 1):
    """Tables for training step `epoch` (1-based), showing neuron values for sample `sample`.

    The weights before the step are the run's own: `epoch - 1` epochs of the config as it is
    (its schedule, batch size and early stopping included), stopped early; the step is the
    run's epoch `epoch`, a full-batch step (for a minibatch run: one full-batch step from its
    weights and optimizer state at the start of that epoch, said in a note). Gradients are
    over the whole batch, while z, a and delta are shown for the chosen sample. Returns
    (sections, (parameters before the step as [(weights, biases)], flat weights before, flat
    weights after)). Raises DivergedError if training does not reach the step.
    """
    t = cfg.training
    if epoch < 1:
        raise ConfigError(f"--epoch {epoch}: must be >= 1 (1 = the first step)")
    if not 1 <= sample <= len(data.X):
        raise ConfigError(f"--sample {sample}: must be between 1 and {len(data.X)} (the training samples)")
    if epoch > t.epochs:
        raise ConfigError(
            f"--epoch {epoch}: the run trains {t.epochs} epochs (training.epochs); "
            f"set training.epochs to {epoch} or more to explain that step"
        )
    net = network(cfg)
    before = None
    if epoch > 1:
        result = fit(cfg, data, net, stop_after=epoch - 1)
        require_completed(result, f"step {epoch} could be explained")
        if result.epochs_run[0] < epoch - 1:
            raise DivergedError(
                f"training stopped at epoch {result.epochs_run[0]} ({result.stop_reason[0]}), "
                f"before step {epoch} could be explained"
            )
        before = result.checkpoint(0)
    old = net.theta.copy() if before is None else before.theta[None].copy()
    # the step itself: one full-batch epoch, continued from the run's state at its start
    step_cfg = cfg
    if t.batch_size is not None and t.batch_size < len(data.X):
        step_cfg = cfg.model_copy(deep=True)
        step_cfg.training.batch_size = None
    optimizer = make_optimizer(t, net.theta.shape, net.dtype)
    stepped = fit(
        step_cfg, data, net, start_epoch=epoch - 1, optimizer=optimizer, resume=[before], stop_after=1, horizon=t.epochs
    )
    require_completed(stepped, f"step {epoch} could be explained")
    new = stepped.state.theta.copy() if stepped.state is not None else net.theta.copy()
    probe = network(cfg)
    probe.theta[:] = old
    X, Y = data.X, data.Y
    ws = probe.workspace(len(X))
    loss_fn = LOSSES[cfg.training.loss]
    masks = _step_masks(cfg, probe, before, len(X))
    with np.errstate(over="ignore"):
        if masks is None:
            loss = float(probe.loss_and_grad(X, Y, loss_fn, ws)[0])
        else:
            loss = float(probe.loss_and_grad_dropped(X, Y, loss_fn, ws, masks)[0])
    grad = probe.grad[0].copy()
    zs, acts = _trace(probe, X, masks)
    i = sample - 1
    names = neuron_names(probe.sizes)
    sections = []
    fwd = Section(
        f"forward pass (sample {sample}: inputs {', '.join(g(v) for v in X[i])})",
        ["layer", "neuron", "z (net input)", "a (activation)", *(["dropout mask", "a x mask"] if masks else [])],
        "forward",
    )
    for n, v in zip(names[0], X[i]):
        fwd.rows.append(["input", n, "", g(v), *(["", ""] if masks else [])])
    kinds = layer_kinds(probe.n_layers)
    for l, kind in enumerate(kinds):
        for j, (n, z, a) in enumerate(zip(names[l + 1], zs[l][i], acts[l + 1][i])):
            dropped = []
            if masks is not None:
                kept = masks[l][0, i, j] if l < probe.n_layers - 1 else None
                dropped = ["", ""] if kept is None else [g(kept), g(a * kept)]
            fwd.rows.append([f"{kind} ({probe.activations[l]})", n, g(z), g(a), *dropped])
    if masks is not None:
        rates_said = ", ".join(g(v) for v in cfg.model.dropout_rates)
        fwd.note = (
            f"dropout {rates_said} (by hidden layer): a unit is kept with probability 1 - P, its mask 1 / (1 - P), "
            f"dropped: 0; the next layer takes a x mask, and the deltas flowing back are multiplied by the mask"
        )
    sections.append(fwd)
    sample_loss = float(loss_fn.value(acts[-1][i : i + 1][None], Y[i : i + 1], zs[-1][i : i + 1][None])[0])
    lossec = Section(f"loss ({cfg.training.loss})", ["neuron", "output", "target"], "loss")
    for n, a, y in zip(names[-1], acts[-1][i], Y[i]):
        lossec.rows.append([n, g(a), g(y)])
    lossec.note = f"loss over the batch of {len(X)}: {g(loss)}" + (
        f"; sample {sample} alone: {g(sample_loss)}" if len(X) > 1 else ""
    )
    sections.append(lossec)
    back = Section(f"backward pass (sample {sample}): delta = dL/dz", ["layer", "neuron", "delta"], "backward")
    for l in range(probe.n_layers - 1, -1, -1):
        kind = kinds[l]
        for n, d in zip(names[l + 1], ws.D[l][0, i]):
            back.rows.append([kind, n, g(d)])
    sections.append(back)
    configured = rate_array([t.learning_rate], probe)  # (1, 1), or (1, P) with a rate per layer
    base = rate_array([rate_in_effect(t.learning_rate, t.lr_changes, epoch)], probe)  # lr_changes' rate
    rates = (base * make_schedule(t, configured).factor(epoch, t.epochs)).ravel()
    per_layer = rates.size > 1
    state = {name: values[0] for name, values in optimizer.state().items()}
    frozen = frozen_mask(probe.sizes, probe.bias, t.freeze)
    if per_layer:
        first = [rates[[p.layer for p in probe.param_names()].index(l)] for l in range(probe.n_layers)]
        said = f"learning rates by layer {', '.join(g(r) for r in first)}"
    else:
        said = f"learning rate {g(rates[0])}"
    terms, clipped = _gradient_terms(t, old, grad, frozen)
    upd = Section(
        f"gradients and update ({said}, optimizer {t.optimizer})",
        [
            "parameter",
            "connects",
            "old",
            "dL/dparam",
            *terms,
            *(["learning_rate"] if per_layer else []),
            *state,
            "new",
        ],
        "update",
    )
    for p, (pname, layer, _kind, row, col) in enumerate(probe.param_names()):
        to = names[layer + 1][row]
        connects = f"{names[layer][col]} -> {to}" if col is not None else f"bias of {to}"
        label = f"{pname} (frozen)" if frozen[p] else pname
        rate = [g(rates[p])] if per_layer else []
        extra = [g(v[p]) for v in terms.values()]
        upd.rows.append(
            [label, connects, g(old[0, p]), g(grad[p]), *extra, *rate, *(g(v[p]) for v in state.values()), g(new[0, p])]
        )
    if clipped is not None:
        upd.note = clipped + "; "
    upd.note += update_rule(t, optimizer.t or epoch) + (
        "; frozen parameters keep their values (training.freeze)" if frozen.any() else ""
    )
    if step_cfg is not cfg:
        upd.note += (
            f"; the run trains in minibatches of {t.batch_size}: this is one full-batch step from its weights "
            f"and optimizer state at the start of epoch {epoch}"
        )
    sections.append(_norms(probe, grad, kinds))
    sections.append(upd)
    return sections, (probe.get_params(0), old, new)


def _norms(probe: Network, grad: np.ndarray, kinds: list[str]) -> Section:
    """Each layer's gradient norm at this step (||dL/dW||, ||dL/db||): how far back the
    gradient reaches (see `backprop diagnose`)."""
    section = Section("gradient norm by layer", ["layer", "norm dL/dW", "norm dL/db"], "norms")
    layer = np.array([p.layer for p in probe.param_names()])
    bias = np.array([p.kind == "bias" for p in probe.param_names()])
    for l, kind in enumerate(kinds):
        w = grad[(layer == l) & ~bias]
        b = grad[(layer == l) & bias]
        section.rows.append(
            [f"{kind} ({probe.activations[l]})", g(float(np.sqrt(w @ w))), g(float(np.sqrt(b @ b))) if b.size else ""]
        )
    section.note = "the Euclidean norm of the layer's dL/dparam column below, before any clipping or penalty"
    return section


def _step_masks(cfg: Config, probe: Network, before: Optional[Checkpoint], n: int) -> Optional[list[np.ndarray]]:
    """The dropout masks the step draws (None without dropout): the mask stream as the run
    left it at the start of the step, one draw for the step's full batch."""
    rates = cfg.model.dropout_rates
    if not any(rates):
        return None
    drop = Dropout(np.array([rates]), probe.sizes[1:-1], probe.dtype, random_streams(cfg.seed)[3])
    if before is not None and before.dropout_order is not None:
        drop.rng.bit_generator.state = before.dropout_order
    return [m.copy() for m in drop.masks(n)]


def _trace(probe: Network, X: np.ndarray, masks: Optional[list[np.ndarray]]) -> tuple[list, list]:
    """Net inputs and activations of model 0 ([z1..zL], [a0=X, a1..aL]); with dropout, each
    layer's z from the previous layer's activations times their masks (a is before the mask)."""
    if masks is None:
        return probe.trace(X)
    zs: list[np.ndarray] = []
    As = [X]
    a = X
    with np.errstate(over="ignore"):
        for l in range(probe.n_layers):
            w, b = probe.W[l][0], probe.b[l]
            z = a @ w.T + (b[0] if b is not None else 0.0)
            h = probe.acts[l].forward(z, np.empty_like(z))
            zs.append(z)
            As.append(h)
            a = h * masks[l][0] if l < probe.n_layers - 1 else h
    return zs, As


def _gradient_terms(
    t: TrainingConfig, old: np.ndarray, grad: np.ndarray, frozen: np.ndarray
) -> tuple[dict, Optional[str]]:
    """The update table's columns between dL/dparam and the optimizer (l1's term, the clipped
    gradient), and a note on the clipping; computed by the loop's own `GradientTerms`."""
    columns: dict[str, np.ndarray] = {}
    if t.l1:
        columns["l1 * sign(old)"] = t.l1 * np.sign(old[0])
    if t.clip_grad_value is None and t.clip_grad_norm is None:
        return columns, None
    g_ = grad[None].copy()
    terms = GradientTerms(
        column([t.l1], g_.dtype),
        column([t.clip_grad_value], g_.dtype, np.inf),
        column([t.clip_grad_norm], g_.dtype, np.inf),
        frozen if frozen.any() else None,
        g_.shape,
        g_.dtype,
    )
    before = g_[0] + (t.l1 * np.sign(old[0]) if t.l1 else 0.0)
    if t.clip_grad_value is not None:  # the norm clip_grad_norm sees: after the value clipping
        before = np.clip(before, -t.clip_grad_value, t.clip_grad_value)
    terms.apply(old.copy(), g_)
    columns["g (clipped)"] = g_[0]
    how = []
    if t.clip_grad_value is not None:
        how.append(f"each to [-{g(t.clip_grad_value)}, {g(t.clip_grad_value)}]")
    if t.clip_grad_norm is not None:
        how.append(f"then scaled by min(1, {g(t.clip_grad_norm)} / (norm + 1e-6))")
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.sqrt(np.sum(before**2)))
    which = "after clipping each value" if t.clip_grad_value is not None else "before clipping"
    said = f"gradient clipped {', '.join(how)}" + (f" (its norm {which}: {g(norm)})" if t.clip_grad_norm else "")
    return columns, said


def update_rule(t: TrainingConfig, step: int) -> str:
    """The update the optimizer made at `step` (1-based), in the names of the update table's columns."""
    first = "g (clipped)" if t.clip_grad_value is not None or t.clip_grad_norm is not None else None
    first = first or ("dL/dparam + l1 * sign(old)" if t.l1 else "dL/dparam")
    g_ = f"{first} + weight_decay * old" if t.weight_decay else first
    if t.optimizer == "momentum":
        rule = (
            f"v = momentum * v_previous + g; new = old - learning_rate * {'(g + momentum * v)' if t.nesterov else 'v'}"
        )
    elif t.optimizer == "rmsprop":
        rule = "s = rho * s_previous + (1 - rho) * g^2; new = old - learning_rate * g / (sqrt(s) + eps)"
    elif t.optimizer == "adam":
        rule = (
            "m = beta1 * m_previous + (1 - beta1) * g; v = beta2 * v_previous + (1 - beta2) * g^2; "
            f"m_hat = m / (1 - beta1^{step}); v_hat = v / (1 - beta2^{step}); "
            "new = old - learning_rate * m_hat / (sqrt(v_hat) + eps)"
        )
    else:
        rule = "new = old - learning_rate * g"
    return f"g = {g_}; {rule}"


def write_diagram(path: Path, cfg: Config, params: list, epoch: int) -> None:
    """network.png-style drawing of the weights used in step `epoch`, written atomically to `path`."""
    from backprop_cli.pictures import network_diagram

    atomic_write(path, network_diagram(cfg.model.layers, params, f"{cfg.name}: weights used in epoch {epoch}"))


TIDY = ["stage", "layer", "name", "connects", "quantity", "value"]
_NAMES = ("neuron", "parameter")


FORMATS = ("markdown", "csv")


def render(sections: list[Section], fmt: str) -> str:
    """The sections as markdown tables, or as one tidy CSV table: one value a row, with the
    stage, layer, neuron or parameter name, what it connects (parameters), the quantity (z, a,
    delta, old, dL/dparam, new, optimizer state, ...) and the value."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    buf = io.StringIO()
    if fmt == "markdown":
        for s in sections:
            buf.write(f"### {s.title}\n\n| " + " | ".join(s.headers) + " |\n|" + "---|" * len(s.headers) + "\n")
            for row in s.rows:
                buf.write("| " + " | ".join(row) + " |\n")
            buf.write(f"\n{s.note}\n\n" if s.note else "\n")
        return buf.getvalue()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TIDY)
    for s in sections:
        for row in s.rows:
            cells = dict(zip(s.headers, row))
            name = next((cells[h] for h in _NAMES if h in cells), "")
            layer = cells.get("layer", "output" if s.stage == "loss" else "")
            for quantity, value in cells.items():
                if quantity in ("layer", "connects", *_NAMES) or value == "":
                    continue
                writer.writerow([s.stage, layer, name, cells.get("connects", ""), quantity, value])
    return buf.getvalue()
