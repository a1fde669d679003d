"""`backprop sweep`: a grid over any config keys and seeds, batched where the maths allows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out, painter
from backprop_cli.cli.display import Column, Steps, fmt, metric, print_table, warn
from backprop_cli.cli.options import ConfigFile, Epochs, Executor, Quiet, RunsDir, Sets, parse_seeds


@app.command()
@cli_errors
def sweep(
    ctx: typer.Context,
    config: ConfigFile,
    grid: Annotated[
        Optional[List[str]],
        typer.Option(
            "--grid", metavar="KEY=V1,V2", help="A config key and its values, as --set reads them (repeatable)."
        ),
    ] = None,
    seeds: Annotated[
        Optional[str], typer.Option("--seeds", metavar="SEEDS", help="A seed axis: START:STOP or 1,2,3.")
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", metavar="N", min=1, help="Processes for the groups (default: the cores)."),
    ] = None,
    executor: Annotated[Executor, typer.Option("--executor", help="Where the groups run.")] = Executor.local,
    scheduler: Annotated[
        Optional[str], typer.Option("--scheduler", metavar="ADDRESS", help="With --executor dask: a running cluster.")
    ] = None,
    name: Annotated[
        Optional[str],
        typer.Option("--name", metavar="NAME", help="The study's name; the same name and grid resumes it."),
    ] = None,
    sort: Annotated[
        str, typer.Option("--sort", metavar="COLUMN", help="Order of the table: final_loss, val_accuracy, ...")
    ] = "final_loss",
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw every cell's run-folder plots.")] = False,
    epochs: Epochs = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
) -> None:
    """Train every cell of a grid over config keys (and seeds) and compare them.

    Cells that differ only in learning rate (and seed, when the data does not depend on it)
    train together in one batched pass; other groups run in parallel worker processes.

    Example: backprop sweep configs/xor.yaml --grid model.activation=sigmoid,tanh --seeds 0:30
    """
    from backprop_cli import grid as g
    from backprop_cli.run_folders import guarded, now_iso
    from backprop_cli.studies import default_target

    if not grid and seeds is None:
        raise UsageError("give at least one --grid KEY=V1,V2,... (or --seeds)")
    if scheduler is not None and executor is not Executor.dask:
        raise UsageError("--scheduler goes with --executor dask")
    if sort not in g.SORTABLE:
        raise UsageError(f"--sort {sort}: not a column of grid.csv; one of {', '.join(g.SORTABLE)}")
    asked_grid = g.parse_grid(grid or [])
    seed_list = parse_seeds(seeds) if seeds is not None else None
    overrides = {"training.epochs": (epochs, "--epochs")}
    cells = g.build_cells(config, asked_grid, seed_list, overrides, sets or [])
    asked = g.spec(config, asked_grid, seed_list, sets or [], overrides)
    folder, resumed = g.study_folder(runs_dir, cells[0].cfg.name or "grid", name, asked)
    done_rows = {c.folder: r for c in cells if resumed and (r := g.finished(folder, c)) is not None}
    todo = [c for c in cells if c.folder not in done_rows]
    jobs = g.groups(todo)
    n_workers = workers or os.cpu_count() or 1
    skipped = f"; {len(done_rows)} finished before, skipped" if done_rows else ""
    rows = list(done_rows.values())
    started = now_iso()
    interrupted = False
    with guarded(folder):
        try:  # from the first line printed on, Ctrl-C keeps what finished
            with Steps(f"{len(todo)} cells", quiet) as progress:
                if not quiet:
                    groups_all = len(g.groups(cells))
                    out.print(f"{len(cells)} cells in {groups_all} batched groups{skipped}: {folder}", soft_wrap=True)
                progress(0, len(todo))
                for group_rows in g.execute(jobs, folder, str(config), n_workers, executor.value, scheduler, plots):
                    rows += group_rows
                    progress(len(rows) - len(done_rows), len(todo))
                    if any(r["status"] == "interrupted" for r in group_rows):  # Ctrl-C inside training
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
        warn(g.write_results(folder, rows, asked_grid, asked, sort, cells[0].cfg.name or "grid", painter(ctx),
                             started, len(jobs), interrupted))  # fmt: skip
    if quiet:
        out.print(str(folder), soft_wrap=True)
    else:
        _table(g.sort_rows(rows, sort), list(asked_grid), sort)
        target = default_target(cells[0].cfg)
        for key, value, reached, n, median in g.by_value(rows, asked_grid):
            when = f" (median epochs to reach it: {median:g})" if median is not None else ""
            out.print(f"{key}={value}: {reached} of {n} cells reached loss {target:g}{when}")
        out.print(f"grid folder: {folder}", soft_wrap=True)
    if interrupted:
        finished = sum(r["status"] == "completed" for r in rows)
        again = "the same command with --name to go on" if name else "with --name NAME to make a grid resumable"
        err.print(f"Interrupted; {finished} of {len(cells)} cells finished. Run {again}.")
        raise typer.Exit(130)
    if rows and all(r["status"] == "diverged" for r in rows):
        err.print(f"Error: every cell diverged: {folder}", soft_wrap=True)
        raise typer.Exit(1)


def _table(rows: list[dict], keys: list[str], sort: str) -> None:
    extra = [c for c in ("accuracy", "val_loss", "val_accuracy", "r2") if any(c in r for r in rows)]
    columns = [Column(k, justify="left", keep=True) for k in keys] + [Column("seed")]
    columns += [Column("final loss"), Column("best loss", drop=2)]
    columns += [Column(c, drop=1) for c in extra] + [Column("to target", drop=2), Column("epochs", drop=3)]
    columns.append(Column("status", justify="left"))
    columns.append(Column("run", justify="left", drop=4))
    table = []
    for r in rows:
        cells = [str(r[k]) for k in keys] + [str(r["seed"]), fmt(r.get("final_loss"), 6), fmt(r.get("best_loss"), 6)]
        cells += [metric(c, r.get(c)) for c in extra] + [str(r.get("epochs_to_target") or "-")]
        cells += [str(r.get("epochs_run", "")), str(r["status"]), r["run"]]
        table.append(cells)
    print_table(f"grid cells, best {sort} first", columns, table)
