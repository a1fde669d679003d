"""`backprop sweep`: a grid over any config keys (and seeds), batched where the maths allows.

Every cell of the grid is a config: the base config with one value per grid key (and a seed).
Cells that differ only in what a K-model pass can vary per model, the learning rate, the
optimizer's scalar hyperparameters (momentum, rho, beta1, beta2, eps, weight_decay) and (when
the data and the batch order do not depend on the seed) the seed, form one group and train
together on the model axis; any other difference (shapes, activations, losses, optimizers,
nesterov, ...) makes a group of its own. Groups are independent jobs: they run one after
another, in worker processes, or on a Dask cluster, and each writes its cells' run folders.
The same group always computes the same numbers, whatever runs it.

A study folder `<name>-grid-<time>/` holds `grid.json` (what was asked), one run folder per
cell (`cell_001/`, ...), then `grid.csv`, the plots and `summary.json`, written last. Run again
with the same grid and `--name`, it skips the cells whose run folder completed.
"""

from __future__ import annotations

import itertools
import json
import shutil
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from backprop_cli.config import Config, config_to_yaml, load_config, parse_value
from backprop_cli.datasets import GENERATORS
from backprop_cli.errors import BackpropError, ConfigError, OverrideError
from backprop_cli.experiment import check_memory, dataset, fit, network
from backprop_cli.files import atomic_write, read_json, write_json
from backprop_cli.metrics import is_score
from backprop_cli.optimizers import Optimizer
from backprop_cli.painter import Job, Painter
from backprop_cli.run_folders import (
    create_run_dir,
    csv_text,
    finish_run,
    no_interrupts,
    now_iso,
    number,
    read_history,
)
from backprop_cli.studies import default_target
from backprop_cli.training import make_optimizer

GRID_FILE = "grid.json"
MAX_CELLS = 10_000
# the columns of grid.csv a study can be sorted by
SORTABLE = ("final_loss", "best_loss", "accuracy", "mae", "r2", "val_loss", "val_accuracy", "val_mae", "val_r2",
            "epochs_to_target", "epochs_run")  # fmt: skip


@dataclass
class Cell:
    """One point of the grid: its values (grid key -> value) and its config (with its seed)."""

    index: int
    values: dict[str, Any]
    cfg: Config

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def folder(self) -> str:
        return f"cell_{self.index:03d}"

    def label(self) -> str:
        return ", ".join(f"{k}={_text(v)}" for k, v in self.values.items()) + f", seed={self.seed}"


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """`KEY=V1,V2,...` items as {key: [values]}; each value read as `--set` reads one (YAML:
    `0.5`, `tanh`, `[2, 3, 1]`), the list as a YAML flow sequence."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise OverrideError(f"--grid {item}: expected KEY=V1,V2,... (e.g. model.activation=sigmoid,tanh)")
        values = parse_value(f"[{text}]", f"--grid {key}")
        if not isinstance(values, list) or not values:
            raise OverrideError(f"--grid {item}: expected KEY=V1,V2,...")
        if key in grid:
            raise OverrideError(f"--grid {key}: given twice; put every value in one --grid")
        if key == "seed":
            raise OverrideError("--grid seed: use --seeds START:STOP for the seed axis")
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            raise OverrideError(f"--grid {key}: value {_text(twice[0])} is given twice")
        grid[key] = values
    return grid


def build_cells(
    config: Path, grid: dict[str, list], seeds: Optional[Sequence[int]], overrides: dict, sets: Sequence[str]
) -> list[Cell]:
    """Every cell's validated config, in grid order (last key fastest, then seeds). A cell
    that does not validate is a ConfigError naming the cell."""
    combos = list(itertools.product(*grid.values()))
    n = len(combos) * (len(seeds) if seeds else 1)
    if n > MAX_CELLS:
        raise ConfigError(f"the grid has {n:,} cells; at most {MAX_CELLS:,}")
    cells: list[Cell] = []
    for combo in combos:
        values = dict(zip(grid, combo))
        for seed in seeds if seeds else [None]:
            cell_overrides = {**overrides, **{k: (v, f"--grid {k}={_text(v)}") for k, v in values.items()}}
            if seed is not None:
                cell_overrides["seed"] = (seed, f"--seeds {seed}")
            try:
                cfg = load_config(config, cell_overrides, tuple(sets))
            except BackpropError as e:
                where = ", ".join(f"{k}={_text(v)}" for k, v in values.items())
                raise ConfigError(f"grid cell {where}{f', seed={seed}' if seed is not None else ''}: {e}") from None
            cells.append(Cell(len(cells) + 1, values, cfg))
    return cells


def seeds_share_a_pass(cfg: Config) -> bool:
    """Whether models with different seeds may train in one pass: only when the seed decides
    nothing but the initial weights (no generated data, no validation split, full batch)."""
    d = cfg.data
    return d.builtin not in GENERATORS and not d.validation and cfg.training.batch_size is None


# what one K-model pass can vary per model, besides the seed: the learning rate and the
# optimizers' scalar hyperparameters, each a (K, 1) column
PER_MODEL = ("learning_rate", *Optimizer.SCALARS)


def _batch_key(cell: Cell) -> str:
    data = cell.cfg.model_dump(mode="json")
    for key in PER_MODEL:
        data["training"].pop(key)
    data["name"] = None
    if seeds_share_a_pass(cell.cfg):
        data.pop("seed")
    return json.dumps(data, sort_keys=True)


def groups(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Cells that can share a K-model pass, together; groups in the order of their first cell."""
    found: dict[str, list[Cell]] = {}
    for cell in cells:
        found.setdefault(_batch_key(cell), []).append(cell)
    return list(found.values())


def run_group(cells: Sequence[Cell], folder: Path, source: str, plots: bool = False) -> list[dict]:
    """Train a group's cells in one pass and write their run folders; returns their rows.

    A job for any executor: plain arguments in, plain rows out, the files written by the job.
    """
    folder = Path(folder)
    first = cells[0].cfg
    check_memory(first, source, n_models=len(cells))
    data = dataset(first, source)
    seeds = [c.cfg.seed for c in cells]
    net = network(first, seeds=seeds) if len(set(seeds)) > 1 else network(first, n_models=len(cells))
    rates = [c.cfg.training.learning_rate for c in cells]
    optimizer = make_optimizer(first.training, net.theta.shape, net.dtype)
    for key in Optimizer.SCALARS:
        values = [getattr(c.cfg.training, key) for c in cells]
        if len(set(values)) > 1:
            optimizer.per_model(key, np.array(values))
    result = fit(first, data, net, learning_rates=rates, optimizer=optimizer)
    target = default_target(first)
    rows = []
    for k, cell in enumerate(cells):
        run = folder / cell.folder
        if run.exists():
            shutil.rmtree(run)
        run.mkdir()
        cell.cfg.name = f"{first.name}-{cell.folder}"
        with no_interrupts():
            atomic_write(run / "config.yaml", config_to_yaml(cell.cfg))
        summary, _ = finish_run(
            run,
            cell.cfg,
            data,
            result,
            model=k,
            learning_rate=rates[k],
            extra={"grid_cell": cell.values, "batched_with": len(cells)},
            plots=plots,
        )
        hits = np.flatnonzero(result.history["loss"][:, k] <= target)
        summary["epochs_to_target"] = int(result.epochs[hits[0]]) if hits.size else None
        rows.append(row(cell, summary))
    return rows


def row(cell: Cell, summary: dict) -> dict:
    """grid.csv's row of a cell: its values, seed, losses, final metrics, epochs, status, folder."""
    found = {**cell.values, "seed": cell.seed}
    for key in ("final_loss", "best_loss"):
        found[key] = summary.get(key)
    for key in ("accuracy", "mae", "r2", "val_loss", "val_accuracy", "val_mae", "val_r2"):
        if key in summary:
            found[key] = summary[key]
    found["epochs_to_target"] = summary.get("epochs_to_target")
    found.update(epochs_run=summary.get("epochs_run"), status=summary.get("status"), run=cell.folder)
    return found


def finished(folder: Path, cell: Cell) -> Optional[dict]:
    """The row of a cell whose run folder completed in an earlier run of the grid, else None."""
    run = Path(folder) / cell.folder
    try:
        summary = read_json(run / "summary.json") if (run / "summary.json").exists() else None
        if not summary or summary.get("status") != "completed":
            return None
        epochs, columns = read_history(run)
    except BackpropError:
        return None
    hits = np.flatnonzero(columns["loss"] <= default_target(cell.cfg)) if "loss" in columns else np.array([])
    summary["epochs_to_target"] = int(epochs[hits[0]]) if hits.size else None
    return row(cell, summary)


def spec(config: Path, grid: dict, seeds: Optional[Sequence[int]], sets: Sequence[str], overrides: dict) -> dict:
    """What a grid study asks for: the same spec means the same cells (for resuming)."""
    return {
        "config": str(Path(config).resolve()),
        "grid": grid,
        "seeds": list(seeds) if seeds else None,
        "set": list(sets),
        "overrides": {k: v for k, (v, _) in overrides.items() if v is not None},
    }


def study_folder(root: Path, cfg_name: str, name: Optional[str], asked: dict) -> tuple[Path, bool]:
    """The study folder: with `name`, the newest `<name>-grid-*` asked the same (resumed: True),
    else a new one. A folder of that name asked differently is never reused."""
    if name:
        for path in sorted(Path(root).glob(f"{name}-grid-*"), reverse=True):
            try:
                if read_json(path / GRID_FILE) == json.loads(json.dumps(asked)):
                    return path, True
            except BackpropError:
                continue
    folder = create_run_dir(root, f"{name or cfg_name}-grid")
    write_json(folder / GRID_FILE, asked)
    write_json(
        folder / "summary.json",
        {"name": name or cfg_name, "kind": "grid", "status": "running", "started_at": now_iso()},
    )
    return folder, False


def execute(
    jobs: Sequence[list[Cell]],
    folder: Path,
    source: str,
    workers: int,
    executor: str = "local",
    scheduler: Optional[str] = None,
    plots: bool = False,
) -> Iterator[list[dict]]:
    """Run the groups: here (one worker), in worker processes, or on Dask; yields each group's
    rows as it finishes."""
    if executor == "dask":
        yield from _dask(jobs, folder, source, workers, scheduler, plots)
        return
    if workers <= 1 or len(jobs) <= 1:
        for cells in jobs:
            yield run_group(cells, folder, source, plots)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures: list[Future] = [pool.submit(run_group, cells, folder, source, plots) for cells in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _dask(
    jobs: Sequence[list[Cell]], folder: Path, source: str, workers: int, scheduler: Optional[str], plots: bool
) -> Iterator[list[dict]]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("--executor dask needs dask.distributed: pip install 'backprop[dask]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(run_group, cells, folder, source, plots, pure=False) for cells in jobs]
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def by_value(rows: list[dict], grid: dict[str, list]) -> list[tuple[str, str, int, int, Optional[float]]]:
    """For each value of each grid key with several: (key, value, cells that reached the
    target, cells, median epochs to reach it)."""
    found = []
    for key, values in grid.items():
        if len(values) < 2:
            continue
        for value in values:
            mine = [r for r in rows if r.get(key) == value]
            hits = [r["epochs_to_target"] for r in mine if r.get("epochs_to_target") is not None]
            found.append((key, _text(value), len(hits), len(mine), float(np.median(hits)) if hits else None))
    return found


def sort_rows(rows: list[dict], by: str) -> list[dict]:
    """Rows best first by `by` (losses, errors and epochs ascending, scores such as accuracy
    and R^2 descending); rows without a value last."""
    sign = -1.0 if is_score(by) else 1.0
    have = [r for r in rows if isinstance(r.get(by), (int, float)) and np.isfinite(r[by])]
    rest = [r for r in rows if r not in have]
    return sorted(have, key=lambda r: sign * r[by]) + rest


def grid_csv(rows: list[dict], keys: Sequence[str]) -> str:
    columns = list(keys) + ["seed", "final_loss", "best_loss"]
    extra = [
        c
        for c in ("accuracy", "mae", "r2", "val_loss", "val_accuracy", "val_mae", "val_r2")
        if any(c in r for r in rows)
    ]
    columns += extra + ["epochs_to_target", "epochs_run", "status", "run"]
    lines: list[list[Any]] = [columns]
    for r in sorted(rows, key=lambda r: r["run"]):
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append(
                _text(v)
                if isinstance(v, (list, dict))
                else number(v)
                if isinstance(v, float)
                else ("" if v is None else v)
            )
        lines.append(cells)
    return csv_text(lines)


def plot_jobs(folder: Path, rows: list[dict], grid: dict[str, list], metric: str, title: str) -> list[Job]:
    """heatmap.png (two grid keys: the metric's mean over seeds in each cell) and box.png (per
    grid key, the metric over seeds and the other keys, one box per value)."""
    jobs: list[Job] = []
    keys = [k for k, v in grid.items() if len(v) > 1]
    usable = [r for r in rows if isinstance(r.get(metric), (int, float)) and np.isfinite(r[metric])]
    if not usable:
        return jobs
    if len(keys) == 2:
        a, b = keys
        table = np.full((len(grid[a]), len(grid[b])), np.nan)
        for i, va in enumerate(grid[a]):
            for j, vb in enumerate(grid[b]):
                hits = [r[metric] for r in usable if r[a] == va and r[b] == vb]
                if hits:
                    table[i, j] = float(np.mean(hits))
        labels = ([_text(v) for v in grid[a]], [_text(v) for v in grid[b]])
        jobs.append((folder / "heatmap.png", "heatmap", (table, labels, (a, b), metric, title)))
    if keys:
        groups_ = {k: [(_text(v), [r[metric] for r in usable if r[k] == v]) for v in grid[k]] for k in keys}
        jobs.append((folder / "box.png", "box_plots", (groups_, metric, title)))
    return jobs


def write_results(
    folder: Path,
    rows: list[dict],
    grid: dict,
    asked: dict,
    metric: str,
    name: str,
    painter: Optional[Painter],
    started: str,
    groups_run: int,
    interrupted: bool,
) -> list[str]:
    """grid.csv, the plots and summary.json (last) of a grid study; returns plot warnings."""
    atomic_write(folder / "grid.csv", grid_csv(rows, list(grid)))
    warnings = (painter or Painter(background=False)).draw(plot_jobs(folder, rows, grid, metric, f"{name}: {metric}"))
    statuses = [r["status"] for r in rows]
    status = "interrupted" if interrupted else "completed" if "completed" in statuses else "diverged"
    best = sort_rows(rows, metric)[0] if rows else None
    write_json(folder / "summary.json", {
        "name": name, "kind": "grid", "status": status, "grid": grid, "seeds": asked.get("seeds"),
        "cells": len(rows), "groups": groups_run, "sort": metric,
        "best": best, "started_at": started, "finished_at": now_iso(),
        "models": [{"run": r["run"], "status": r["status"], "final_loss": r.get("final_loss")} for r in rows],
    })  # fmt: skip
    return warnings
