"""A study's results, read from its store: the cell table (grid.csv, and grid.parquet), the
terminal's ranking, the plots (heatmap.png, landscape.png, box.png, search.png), the run
folders to keep and summary.json, written last. `grid` trains a study; this module reports it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from backprop_cli.diagnostics import QUANTITIES
from backprop_cli.files import atomic_write, write_json
from backprop_cli.metrics import SCORES_AND_ERRORS, is_score
from backprop_cli.painter import Job as PlotJob
from backprop_cli.painter import Painter
from backprop_cli.run_folders import csv_text, now_iso, number
from backprop_cli.run_folders.cells import Cells, folder_name, text
from backprop_cli.store import STATUSES, Store
from backprop_cli.studies import study_status

# the columns of grid.csv a study can be sorted by
# with diagnostics, each cell's largest dead and saturated fractions of a layer at the end
DIAGNOSED = ("dead_fraction", "saturated_fraction")
SORTABLE = ("final_loss", "best_loss", *SCORES_AND_ERRORS, "epochs_to_target", "epochs_run", *DIAGNOSED)

RUN_FOLDERS_UP_TO = 64  # studies this small get a run folder per cell unless told otherwise

TOP = 20  # rows the terminal shows of a large study


def table(cells: Cells, store: Store) -> list[dict]:
    """grid.csv's rows, in cell order, of every cell with numbers: values, seed, losses, final
    metrics, epochs to the target, epochs run, status and the cell's folder name."""
    done = store.done() | (store.field("status") > 0)
    columns = [c for c in store.layout.columns if c != "loss"]
    finals = {c: np.asarray(store.arrays[f"final.{c}"]) for c in store.layout.columns}
    best = store.field("best_loss")
    reached = store.field("epochs_to_target")
    ran = store.field("epochs_run")
    status = store.field("status")
    diagnosed: Optional[tuple] = None
    if "diagnostics.values" in store.arrays:
        diagnosed = store.arrays["diagnostics.values"], store.arrays["diagnostics.epochs"]
    rows = []
    for i in map(int, np.flatnonzero(done)):
        row: dict[str, Any] = {**cells.values(i), "seed": cells.seed(i)}
        row["final_loss"] = _num(finals["loss"][i])
        row["best_loss"] = _num(best[i])
        for c in columns:
            v = _num(finals[c][i])
            if v is not None:
                row[c] = v
        row["epochs_to_target"] = int(reached[i]) if reached[i] >= 0 else None
        row.update(epochs_run=int(ran[i]), status=STATUSES[int(status[i])], run=folder_name(i, len(cells)))
        if diagnosed is not None:
            row.update(_end_fractions(diagnosed, i))
        rows.append(row)
    return rows


def _end_fractions(diagnosed: tuple, i: int) -> dict[str, Optional[float]]:
    """Cell i's largest dead and saturated fractions of a layer at its last record (None where
    no layer has such units)."""
    values, epochs = diagnosed
    recorded = np.flatnonzero(np.asarray(epochs[i]) >= 0)
    found: dict[str, Optional[float]] = {name: None for name in DIAGNOSED}
    if recorded.size:
        end = np.asarray(values[i, recorded[-1]])
        for name in DIAGNOSED:
            column = end[:, QUANTITIES.index(name)]
            found[name] = float(np.nanmax(column)) if np.isfinite(column).any() else None
    return found


def _num(x: Any) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


def by_value(rows: list[dict], grid: dict[str, list]) -> list[tuple[str, str, int, int, Optional[float]]]:
    """For each value of each grid key with several (up to 24): (key, value, cells that reached
    the target, cells, median epochs to reach it)."""
    found = []
    for key, values in grid.items():
        if not 2 <= len(values) <= 24:
            continue
        mine: dict[str, list] = {text(v): [] for v in values}
        for r in rows:
            mine[text(r[key])].append(r.get("epochs_to_target"))
        for value in values:
            got = mine[text(value)]
            hits = [h for h in got if h is not None]
            found.append((key, text(value), len(hits), len(got), float(np.median(hits)) if hits else None))
    return found


def sort_rows(rows: list[dict], by: str) -> list[dict]:
    """Rows best first by `by` (losses, errors and epochs ascending, scores such as accuracy
    and R^2 descending); rows without a value last."""
    sign = -1.0 if is_score(by) else 1.0
    have = [r for r in rows if isinstance(r.get(by), (int, float)) and np.isfinite(r[by])]
    rest = [r for r in rows if not (isinstance(r.get(by), (int, float)) and np.isfinite(r[by]))]
    return sorted(have, key=lambda r: sign * r[by]) + rest


def csv_columns(rows: list[dict], keys: Sequence[str]) -> list[str]:
    columns = list(keys) + ["seed", "final_loss", "best_loss"]
    columns += [c for c in SCORES_AND_ERRORS if any(c in r for r in rows)]
    columns += ["epochs_to_target", "epochs_run"] + [c for c in DIAGNOSED if any(c in r for r in rows)]
    return columns + ["status", "run"]


def grid_csv(rows: list[dict], keys: Sequence[str]) -> str:
    columns = csv_columns(rows, keys)
    lines: list[list[Any]] = [columns]
    for r in rows:  # in cell order, as `table` gives them
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append(
                text(v)
                if isinstance(v, (list, dict))
                else number(v)
                if isinstance(v, float)
                else ("" if v is None else v)
            )
        lines.append(cells)
    return csv_text(lines)


def parquet_job(path: Path, rows: list[dict], keys: Sequence[str]) -> list[PlotJob]:
    """grid.parquet beside grid.csv, where pyarrow is installed (the `parquet` extra): the same
    table with typed columns, as a painter job (see `tables`)."""
    from backprop_cli.tables import have_parquet

    if not have_parquet():
        return []
    columns = csv_columns(rows, keys)
    data = {c: [text(r.get(c)) if isinstance(r.get(c), (list, dict)) else r.get(c) for r in rows] for c in columns}
    return [(path, "tables.parquet", (data,))]


def search_jobs(folder: Path, rows: list[dict], asked: dict, metric: str, name: str) -> list[PlotJob]:
    """search.png: each trial's metric against each key of the space."""
    usable = [r for r in rows if isinstance(r.get(metric), (int, float)) and np.isfinite(r[metric])]
    if not usable:
        return []
    panels = {}
    for item in asked.get("space") or []:
        key, _, dist = item.partition("=")
        xs = [r[key] if isinstance(r[key], (int, float)) else text(r[key]) for r in usable]
        panels[key] = (xs, [r[metric] for r in usable], dist.startswith("log:"))
    return [(folder / "search.png", "search_plot", (panels, metric, name))]


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def landscape_job(folder: Path, cells: Cells, store: Store, grid: dict, keys: list, name: str) -> PlotJob:
    """landscape.png: the trainability map of two numeric keys with many values (the mean
    over seeds of each cell's mean loss over training; diverged where any seed diverged)."""
    a, b = keys
    n_a, n_b = len(grid[a]), len(grid[b])
    loss = np.asarray(store.arrays["history.loss"])
    ran = store.field("epochs_run")
    status = store.field("status")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # each cell's mean loss over its finite epochs, in log space (a geometric mean): the
        # last losses of a run that diverges are huge and would drown the rest
        kept = np.isfinite(loss) & (loss > 0) & (np.arange(loss.shape[1]) < ran[:, None])
        logs = np.where(kept, np.log(np.where(kept, loss, 1.0)), 0.0)
        counts = kept.sum(axis=1)
        mean = np.where(counts > 0, np.exp(logs.sum(axis=1) / np.maximum(counts, 1)), np.nan)
    sums, seen = np.zeros((n_a, n_b)), np.zeros((n_a, n_b))
    diverged = np.zeros((n_a, n_b), bool)
    ia, ib = cells.keys.index(a), cells.keys.index(b)
    for i in range(len(cells)):
        at, _ = cells.position(i)
        r, c = at[ia], at[ib]
        if np.isfinite(mean[i]):
            sums[r, c] += np.log(mean[i])
            seen[r, c] += 1
        diverged[r, c] |= status[i] == STATUSES.index("diverged")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(seen > 0, np.exp(sums / np.maximum(seen, 1)), np.nan)  # over seeds, geometric too
    return (folder / "landscape.png", "landscape", (means, diverged, (grid[a], grid[b]), (a, b), name))


def plot_jobs(
    folder: Path,
    rows: list[dict],
    grid: dict[str, list],
    metric: str,
    title: str,
    cells: Optional[Cells] = None,
    store: Optional[Store] = None,
) -> list[PlotJob]:
    """heatmap.png (two grid keys: the metric's mean over seeds in each cell, one pixel a cell
    for large grids) and box.png (per grid key with at most 16 values, the metric over seeds
    and the other keys, one box per value)."""
    jobs: list[PlotJob] = []
    keys = [k for k, v in grid.items() if len(v) > 1]
    usable = [r for r in rows if isinstance(r.get(metric), (int, float)) and np.isfinite(r[metric])]
    if not usable:
        return jobs
    if len(keys) == 2:
        a, b = keys
        where_a = {text(v): i for i, v in enumerate(grid[a])}
        where_b = {text(v): j for j, v in enumerate(grid[b])}
        sums = np.zeros((len(grid[a]), len(grid[b])))
        counts = np.zeros_like(sums)
        for r in usable:
            i, j = where_a[text(r[a])], where_b[text(r[b])]
            sums[i, j] += r[metric]
            counts[i, j] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        labels = ([text(v) for v in grid[a]], [text(v) for v in grid[b]])
        jobs.append((folder / "heatmap.png", "heatmap", (means, labels, (a, b), metric, title)))
    if (
        len(keys) == 2
        and cells is not None
        and store is not None
        and all(_numeric(grid[k]) and len(grid[k]) >= 16 for k in keys)
    ):
        jobs.append(landscape_job(folder, cells, store, grid, keys, title.split(":")[0]))
    boxed = [k for k in keys if len(grid[k]) <= 16]
    if boxed:
        groups_ = {}
        for k in boxed:
            found: dict[str, list] = {text(v): [] for v in grid[k]}
            for r in usable:
                found[text(r[k])].append(r[metric])
            groups_[k] = list(found.items())
        jobs.append((folder / "box.png", "box_plots", (groups_, metric, title)))
    return jobs


def write_results(
    folder: Path,
    cells: Cells,
    store: Store,
    grid: dict,
    asked: dict,
    metric: str,
    name: str,
    painter: Optional[Painter],
    started: str,
    chunks_run: int,
    interrupted: bool,
    run_folders: str,
    kind: str = "grid",
) -> tuple[list[dict], list[str]]:
    """grid.csv (and grid.parquet with pyarrow), the plots and summary.json (last) of a grid
    study; returns the rows and plot warnings. summary.json's size does not grow with the
    cells (a study of at most 64 cells also lists them under `models`, as it always did)."""
    rows = table(cells, store)
    atomic_write(folder / "grid.csv", grid_csv(rows, list(grid)))
    jobs = parquet_job(folder / "grid.parquet", rows, list(grid))
    if kind == "search":
        jobs += search_jobs(folder, rows, asked, metric, name)
    else:
        jobs += plot_jobs(folder, rows, grid, metric, f"{name}: {metric}", cells, store)
    warnings = (painter or Painter(background=False)).draw(jobs)
    parquet = (folder / "grid.parquet").exists()
    statuses = [r["status"] for r in rows]
    counts = {s: statuses.count(s) for s in STATUSES[1:] if s in statuses}
    best = sort_rows(rows, metric)[0] if rows else None
    summary: dict[str, Any] = {
        "name": name, "kind": kind, "status": study_status(statuses, interrupted),
        **({"grid": grid} if kind == "grid" else {"space": asked.get("space"), "sampler": asked.get("sampler")}),
        "seeds": asked.get("seeds"), "cells": len(cells), "trained": int(store.done().sum()), "statuses": counts,
        "groups": len(cells.groups()), "chunks": chunks_run, "sort": metric, "best": best,
        "run_folders": run_folders, "store": {"folder": "store", "bytes": store.layout.nbytes(),
        "history_every": store.layout.every}, "parquet": parquet, "started_at": started, "finished_at": now_iso(),
    }  # fmt: skip
    if len(cells) <= RUN_FOLDERS_UP_TO:
        summary["models"] = [{"run": r["run"], "status": r["status"], "final_loss": r.get("final_loss")} for r in rows]
    write_json(folder / "summary.json", summary)
    return rows, warnings


def folders_for(policy: str, cells: Cells, rows: list[dict], sort: str) -> list[int]:
    """The cells that get a run folder under `--run-folders` policy all, none or best:N."""
    if policy == "all":
        return list(range(len(cells)))
    if policy == "none":
        return []
    n = int(policy.split(":", 1)[1])
    return [int(r["run"].split("_")[1]) - 1 for r in sort_rows(rows, sort)[:n]]  # cell_0417 -> 416


def write_board(folder: Path, cells: Cells, store: Store) -> int:
    """The study's trained cells as TensorBoard runs under `folder` (see `events`), in cell
    order; returns how many were written."""
    from backprop_cli.events import Cell, write_cells

    weights = store.arrays["weights"]

    def each() -> Iterator[Cell]:
        for i in map(int, np.flatnonzero(store.done())):
            epochs, columns = store.history(i)
            yield Cell(folder_name(i, len(cells)), {**cells.values(i), "seed": cells.seed(i)}, epochs, columns,
                       np.asarray(weights[i][: store.n_params(i)]), cells.combo(i).cfg.model)  # fmt: skip

    return write_cells(folder, each())
