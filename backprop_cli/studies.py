"""Study folders: a learning-rate sweep or a seed study written out.

Files: store/ (every model's history, weights and state as arrays: see `store`), <kind>.csv
(one row per model), history.csv (one loss column per model), loss_curves.png, loss_grid.png
(sweeps), summary.json and, for sweeps, one complete run folder per rate (loadable by predict).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from backprop_cli.animation import Snapshots, gif_job
from backprop_cli.config import Config, config_to_yaml
from backprop_cli.data import Dataset
from backprop_cli.differences import Progress
from backprop_cli.events import Cell, write_cells
from backprop_cli.files import atomic_write, write_json
from backprop_cli.painter import Job, Painter
from backprop_cli.run_folders import (
    create_run_dir,
    csv_text,
    finish_run,
    finite_or_none,
    no_interrupts,
    now_iso,
    number,
    numbers,
    versions,
)
from backprop_cli.store import Chunk, Layout, Store
from backprop_cli.sweep import Entry

MAX_CSV_WEIGHTS = 64
DEFAULT_TARGET = 0.01


def default_target(cfg: Config) -> float:
    """The loss that counts as reached when none is given: sweep.target, else 0.01."""
    return cfg.sweep.target if cfg.sweep else DEFAULT_TARGET


def start_study(cfg: Config, root: Path, kind: str) -> Path:
    """A new folder root/<name>-<kind>-<time> (kind: sweep, chain or seeds)."""
    return create_run_dir(root, f"{cfg.name}-{kind}")


def value_names(values: list[float]) -> list[str]:
    """How each model's value (rate or seed) is written in names: 6 significant digits, or all
    of them where two values would otherwise read alike (0.1 and 0.1000001)."""
    short = [f"{v:g}" for v in values]
    return [s if short.count(s) == 1 else repr(float(v)) for s, v in zip(short, values)]


def study_csv(label: str, entries: list[Entry], target: float, param_names: list[str]) -> str:
    """One row per model: label, final_loss, best_loss, epochs_to_target, status, w1..wP (P <= 64)."""
    header = [label, "final_loss", "best_loss", "epochs_to_target", "status"]
    with_weights = 0 < len(param_names) <= MAX_CSV_WEIGHTS
    if with_weights:
        header += param_names
    rows: list[list[Any]] = [header]
    for e in entries:
        row = [repr(e.value), number(e.final_loss()), number(e.best_loss()), e.epochs_to(target) or "", e.status]
        if with_weights:
            row += [repr(float(v)) for v in e.params()]
        rows.append(row)
    return csv_text(rows)


def study_history_csv(label: str, entries: list[Entry]) -> str:
    epochs = max((e.result.epochs for e in entries), key=len)
    columns = [numbers(e.losses) + [""] * (len(epochs) - len(e.losses)) for e in entries]
    names = value_names([e.value for e in entries])
    return csv_text([["epoch"] + [f"{label}={name}" for name in names], *zip(epochs.tolist(), *columns)])


def write_study(
    folder: Path,
    kind: str,
    label: str,
    cfg: Config,
    data: Dataset,
    entries: list[Entry],
    target: float,
    param_names: list[str],
    per_model_runs: bool,
    extra: dict,
    painter: Optional[Painter] = None,
    run_plots: bool = False,
    progress: Optional[Progress] = None,
    snapshots: Optional[Snapshots] = None,
) -> list:
    """Write a sweep or seed-study folder; returns warnings.

    The study's own plots (and with `snapshots`, training.gif: one panel per model) are drawn
    by `painter` (default: here) while the per-model run folders are written; those get their
    plots too with `run_plots`. `progress(done, total)` counts the run folders written.
    """
    painter = painter or Painter(background=False)
    with no_interrupts():
        write_store(folder, cfg, entries, target)
        atomic_write(folder / f"{kind}.csv", study_csv(label, entries, target, param_names))
        atomic_write(folder / "history.csv", study_history_csv(label, entries))
        names = value_names([e.value for e in entries])
        curves = {f"{label}={name}": (e.result.epochs[: len(e.losses)], e.losses) for name, e in zip(names, entries)}
        title = f"{cfg.name}: {cfg.training.loss} loss"
        chained = " (chained)" if extra.get("protocol") == "chain" else ""  # the report says what that means
        values = [float(e.value) for e in entries]
        jobs: list[Job] = [
            (folder / "loss_curves.png", "study_plot", (curves, values, label, f"{title} by {label}{chained}", target))
        ]
        if per_model_runs:
            jobs.append((folder / "loss_grid.png", "loss_grid", (curves, title + chained)))
        if snapshots is not None:
            short = "lr" if label == "learning_rate" else label
            titles = [f"{short}={name}" for name in names]
            title = f"{cfg.name} by {label}"
            jobs.append(gif_job(folder / "training.gif", title, entries[0].result, data, snapshots, names=titles))
        painter.submit(jobs)
    warnings: list[str] = []
    if per_model_runs:
        if progress is not None:
            progress(0, len(entries))
        for i, (name, e) in enumerate(zip(names, entries)):
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.training.learning_rate = float(e.value)
            run_cfg.name = f"{cfg.name}-lr{name}"
            run_cfg.model.weights = [w.tolist() for w, _ in e.start_params]
            run_cfg.model.init_from = None  # the weights above are where it started
            if cfg.model.bias:
                run_cfg.model.biases = [b.tolist() for _, b in e.start_params]
            run = folder / f"lr_{name}"
            run.mkdir()
            atomic_write(run / "config.yaml", config_to_yaml(run_cfg))
            _, written = finish_run(
                run,
                run_cfg,
                data,
                e.result,
                model=e.model,
                learning_rate=float(e.value),
                extra={"started_at": extra.get("started_at"), "sweep": str(folder)},
                painter=painter,
                plots=run_plots,
            )
            warnings += written
            if progress is not None:
                progress(i + 1, len(entries))
    warnings = painter.collect() + warnings
    summary = {
        "name": cfg.name,
        "kind": kind,
        "status": study_status([e.status for e in entries]),
        "target": target,
        "models": [
            {
                label: e.value,
                "status": e.status,
                "final_loss": finite_or_none(e.final_loss()),
                "best_loss": finite_or_none(e.best_loss()),
                "epochs_to_target": e.epochs_to(target),
                "epochs_run": e.result.epochs_run[e.model],
            }
            for e in entries
        ],
        "duration_s": round(sum({id(e.result): e.result.duration_s for e in entries}.values()), 6),
        **extra,
        "finished_at": now_iso(),
        "versions": versions(),
    }
    with no_interrupts():
        write_json(folder / "summary.json", summary)
    if cfg.training.tensorboard:
        short = "lr" if label == "learning_rate" else label
        cells = (
            Cell(
                f"{short}_{name}",
                {label: e.value},
                e.result.epochs[: len(e.losses)],
                {c: v[: len(e.losses), e.model] for c, v in e.result.history.items()},
                e.result.net.theta[e.model],
                cfg.model,
            )
            for name, e in zip(value_names([e.value for e in entries]), entries)
        )
        write_cells(Path(cfg.training.tensorboard) / folder.name, cells)
    return warnings


def write_store(folder: Path, cfg: Config, entries: list[Entry], target: float) -> Store:
    """The study's store (see `store`): one row per model, as a grid keeps its cells, so every
    study reads alike however it was trained (one batched pass, a chain, a pass per seed)."""
    from backprop_cli.run_folders.cells import optimizer_moments

    results: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        results.setdefault(id(e.result), []).append(i)
    first = entries[0].result
    es = cfg.training.early_stopping
    shape = Layout(
        len(entries),
        list(first.history),
        max(len(e.result.epochs) for e in entries),
        first.net.n_params,
        optimizer_moments([cfg.training.optimizer]),
        es is not None and es.restore_best,
    )
    store = Store.create(folder, shape)
    started = time.time()
    for rows in results.values():
        result = entries[rows[0]].result
        models = [entries[i].model for i in rows]
        if models != list(range(result.net.K)) or result.state is None:
            continue  # not a whole pass (a chain cut short): the CSVs hold it
        store.write(Chunk.from_result(rows, result, 1, started - result.duration_s, target))
    return store


def study_status(statuses: Sequence[str], interrupted: bool = False) -> str:
    """A study's status from its models' (the one rule for every kind of study): interrupted
    when stopped (or any model was), else completed when any model completed, else diverged
    when any diverged, else failed (nothing trained)."""
    if interrupted or "interrupted" in statuses:
        return "interrupted"
    if "completed" in statuses:
        return "completed"
    return "diverged" if "diverged" in statuses else "failed"


def targets_reached(entries: list[Entry], target: float) -> tuple[int, Optional[float]]:
    """How many models reached `target`, and the median epoch at which they did."""
    hits = [r for r in (e.epochs_to(target) for e in entries) if r is not None]
    return len(hits), float(np.median(hits)) if hits else None
