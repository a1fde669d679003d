"""A run folder's diagnostics: diagnostics.csv, gradients.png and units.png written with the
run, and `diagnose`'s reading of them (or, for a run trained without them, one pass over its
saved weights and data)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from backprop_cli.diagnostics import QUANTITIES, Finding, findings, from_rows, healthy, measure, rows, sample_rows
from backprop_cli.errors import BackpropError, RunError
from backprop_cli.files import RUN_FILE_LIMIT, atomic_write, read_text
from backprop_cli.losses import LOSSES
from backprop_cli.network import layer_names
from backprop_cli.run_folders.read import csv_text, load_run, read_history

if TYPE_CHECKING:
    from backprop_cli.config import Config
    from backprop_cli.painter import Job
    from backprop_cli.training import TrainResult

DIAGNOSTICS = "diagnostics.csv"


def write_diagnostics(
    run: Path, cfg: Config, result: TrainResult, model: int, learning_rate: Any
) -> tuple[list[Job], dict]:
    """Write diagnostics.csv of model `model` of `result` (recorded with training.diagnostics);
    returns the plot jobs (gradients.png, units.png) and summary.json's `diagnostics`."""
    epochs, values = result.diagnostics.table(model)
    atomic_write(run / DIAGNOSTICS, csv_text(rows(epochs, values)))
    names = layer_names(cfg.model.activations)
    jobs: list[Job] = []
    if len(epochs):
        q = {name: i for i, name in enumerate(QUANTITIES)}
        jobs = [
            (run / "gradients.png", "layer_plots.gradients",
             (epochs, values[:, :, q["grad_norm_weights"]], names, f"{run.name}: gradient norm by layer")),
            (run / "units.png", "layer_plots.units",
             (epochs, values[:, :, q["saturated_fraction"]], values[:, :, q["dead_fraction"]], names,
              f"{run.name}: saturated and dead units")),
        ]  # fmt: skip
    ran = result.epochs_run[model]
    start = int(result.epochs[0]) - 1 if len(result.epochs) else 0
    found = findings(
        epochs, values, cfg.model.activations, result.epochs[:ran], result.history["loss"][:ran, model],
        learning_rate, result.diverged_at[model], cfg.model.init, cfg.data.scale, start,
    )  # fmt: skip
    return jobs, {
        "every": cfg.training.diagnose_every,
        "records": len(epochs),
        "findings": [f.text for f in found],
    }


@dataclass
class Diagnosis:
    """What `backprop diagnose` reports about one run."""

    run: Path
    names: list[str]
    epochs: np.ndarray  # recorded epochs (R,)
    values: np.ndarray  # (R, layers, quantities)
    findings: list[Finding]
    recorded: bool  # False: one pass over the saved weights at the end
    summary: str = ""  # a healthy run's line
    notes: list[str] = field(default_factory=list)

    def shown(self) -> list[int]:
        """The rows a table shows: the start, the middle and the end of training."""
        R = len(self.epochs)
        return sorted({0, R // 2, R - 1}) if R else []

    def to_json(self) -> dict:
        layers = []
        for i in self.shown():
            for l, name in enumerate(self.names):
                entry: dict[str, Any] = {"epoch": int(self.epochs[i]), "layer": l + 1, "name": name}
                for q, v in zip(QUANTITIES, self.values[i, l]):
                    entry[q] = float(v) if np.isfinite(v) else None
                layers.append(entry)
        return {
            "run": str(self.run),
            "recorded": self.recorded,
            "epochs": [int(e) for e in self.epochs],
            "table": layers,
            "findings": [f.to_json() for f in self.findings],
            "healthy": None if self.findings else self.summary,
            "notes": self.notes,
        }


def diagnose(folder: Path) -> Diagnosis:
    """The diagnosis of a run folder: from its diagnostics.csv, or from one forward and backward
    pass over its saved weights and training data at the end."""
    from backprop_cli.experiment import dataset

    loaded = load_run(folder)
    cfg = loaded.cfg
    acts = cfg.model.activations
    notes = []
    try:
        epochs_h, history = read_history(folder)
    except (BackpropError, OSError) as e:  # the weights tell the rest: the loss-based rules are skipped
        epochs_h, history = None, {}
        notes.append(f"{e}: the rules that read the loss (rising, plateau) are not applied")
    losses = np.asarray(history.get("loss", []), float)
    loss_epochs = np.asarray(epochs_h if epochs_h is not None else np.arange(1, len(losses) + 1))
    last = int(loaded.summary.get("last_epoch") or (loss_epochs[-1] if len(loss_epochs) else 0))
    path = folder / DIAGNOSTICS
    start: Optional[int] = None
    if path.exists():
        text = read_text(path, "diagnostics file", RunError, RUN_FILE_LIMIT)
        try:
            header, *body = csv.reader(io.StringIO(text))
            epochs, values = from_rows(header, body, len(acts), last)
        except ValueError as e:  # also a file with no header: nothing to unpack
            raise RunError(f"{path}: corrupt diagnostics: {e}") from None
        recorded = True
        start = int(loaded.summary.get("start_epoch") or 0)
        saved = loaded.summary.get("saved_weights") or {}
        if isinstance(saved, dict) and saved.get("weights") == "restored":
            notes.append(f"the last row measures the weights restore_best kept: epoch {saved.get('epoch')}'s")
    else:
        data = dataset(cfg, str(folder / "config.yaml"))
        picked = sample_rows(len(data.X))
        net = loaded.net
        values = measure(
            net, data.X[picked].astype(net.dtype), data.Y[picked].astype(net.dtype), LOSSES[cfg.training.loss]
        )
        epochs = np.array([last])
        recorded = False
        notes.append(
            "no diagnostics were recorded (train with --diagnose, or training.diagnostics: true): these are the "
            "saved weights at the end, from one forward and backward pass over the training data"
        )
    diverged = loaded.summary.get("diverged_at_epoch")
    found = findings(
        epochs, values, acts, loss_epochs, losses, cfg.training.learning_rate, diverged, cfg.model.init,
        cfg.data.scale, start,
    )  # fmt: skip
    return Diagnosis(folder, layer_names(acts), epochs, values, found, recorded, healthy(epochs, values, losses), notes)


def first_line(found: list[str], run: Optional[Path] = None) -> Optional[str]:
    """The short line `train` prints when the diagnostics found something."""
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"diagnose: {found[0]}{more}" + (f" See: backprop diagnose {run}" if run is not None else "")
