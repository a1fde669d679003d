"""`backprop sweep`: a grid over any config keys and seeds, batched where the maths allows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out, painter
from backprop_cli.cli.display import Column, Counter, fmt, metric, print_table, warn
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
        typer.Option("--workers", metavar="N", min=1, help="Processes for the chunks (default: the cores)."),
    ] = None,
    executor: Annotated[Executor, typer.Option("--executor", help="Where the chunks run.")] = Executor.local,
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
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Draw the plots of every cell's run folder.")
    ] = False,
    run_folders: Annotated[
        Optional[str],
        typer.Option(
            "--run-folders",
            metavar="WHICH",
            help="Cells that get a complete run folder: all, none or best:N (default: all up to 64 cells, else none).",
        ),
    ] = None,
    history: Annotated[
        Optional[str],
        typer.Option("--history", metavar="KEEP", help="Epochs of each cell's history to keep: all or every:N."),
    ] = None,
    memory: Annotated[
        Optional[float],
        typer.Option(
            "--memory", metavar="GIB", min=0.01, help="Memory for training at once (default: a quarter of RAM)."
        ),
    ] = None,
    chunk_models: Annotated[
        Optional[int],
        typer.Option("--chunk", metavar="N", min=1, help="Models per pass at most (default: what fits the cache)."),
    ] = None,
    epochs: Epochs = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
) -> None:
    """Train every cell of a grid over config keys (and seeds) and compare them.

    Cells that differ only in learning rate, optimizer scalars (and seed, when the data does
    not depend on it) train together in batched passes; the numbers of every cell go into the
    study's store, and small studies get a run folder per cell.

    Example: backprop sweep configs/xor.yaml --grid model.activation=sigmoid,tanh --seeds 0:30
    """
    from backprop_cli import grid as g
    from backprop_cli.experiment import GiB
    from backprop_cli.run_folders import guarded, now_iso
    from backprop_cli.run_folders.cells import Cells, spec
    from backprop_cli.store import Store
    from backprop_cli.studies import default_target

    if not grid and seeds is None:
        raise UsageError("give at least one --grid KEY=V1,V2,... (or --seeds)")
    if scheduler is not None and executor is not Executor.dask:
        raise UsageError("--scheduler goes with --executor dask")
    if sort not in g.SORTABLE:
        raise UsageError(f"--sort {sort}: not a column of grid.csv; one of {', '.join(g.SORTABLE)}")
    asked_grid = g.parse_grid(grid or [])
    seed_list = parse_seeds(seeds) if seeds is not None else None
    every = g.parse_history(history)
    overrides = {"training.epochs": (epochs, "--epochs")}
    n_cells = g.count_cells(asked_grid, seed_list)
    policy = g.parse_run_folders(run_folders, n_cells)
    budget = int(memory * GiB) if memory is not None else g.memory_budget()
    cells = Cells(config, asked_grid, seed_list, overrides, sets or [], limit=g.max_cells(budget))
    asked = spec(config, asked_grid, seed_list, sets or [], overrides)
    target = default_target(cells.combos[0].cfg)
    shape = g.layout(cells, every)
    found = g.find_study(runs_dir, name, asked)
    if found is None or not Store.exists(found):
        g.check_disk(shape, runs_dir, max(c.cfg.training.epochs for c in cells.combos))
    folder = found or g.new_study(runs_dir, cells.name, name, asked)
    with guarded(folder), g.locked(folder):
        store = Store.open(folder, writable=True) if Store.exists(folder) else Store.create(folder, shape)
        done = store.done()
        todo = [i for i in range(len(cells)) if not done[i]]
        jobs = g.plan(cells, todo, str(config), target, every, budget, chunk_models)
        n_workers = workers or os.cpu_count() or 1
        skipped = f"; {len(cells) - len(todo):,} finished before, skipped" if len(todo) < len(cells) else ""
        skipped += f"; {len(jobs):,} chunk{'s' if len(jobs) != 1 else ''} to train"
        started = now_iso()
        interrupted = False
        try:  # from the first line printed on, Ctrl-C keeps what finished
            if not quiet:
                groups_all = len(cells.groups())
                out.print(
                    f"{len(cells):,} cells in {groups_all:,} batched group{'s' if groups_all != 1 else ''}"
                    f"{skipped}: {folder}",
                    soft_wrap=True,
                )
            with Counter("models trained", len(todo), quiet) as progress:
                trained = 0
                for chunk in g.execute(jobs, n_workers, executor.value, scheduler):
                    store.write(chunk)
                    trained += len(chunk.cells)
                    progress(trained)
                    if g.interrupted(chunk):  # Ctrl-C inside training
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
            if not quiet:
                err.print("stopping: the chunk in progress is kept where it finished...")
        rows, warnings = g.write_results(
            folder, cells, store, asked_grid, asked, sort, cells.name, painter(ctx), started, len(jobs), interrupted,
            policy,
        )  # fmt: skip
        warn(warnings)
        which = g.folders_for(policy, cells, rows, sort)
        if which and not interrupted:
            with Counter("run folders written", len(which), quiet) as written:
                for n, i in enumerate(which, 1):
                    if store.done()[i]:
                        g.export_cell(folder, i, plots=plots)
                    written(n)
    if quiet:
        out.print(str(folder), soft_wrap=True)
    else:
        ranked = g.sort_rows(rows, sort)
        _table(ranked if len(rows) <= g.RUN_FOLDERS_UP_TO else ranked[: g.TOP], list(asked_grid), sort, len(rows))
        for key, value, reached, n, median in g.by_value(rows, asked_grid):
            when = f" (median epochs to reach it: {median:g})" if median is not None else ""
            out.print(f"{key}={value}: {reached} of {n} cells reached loss {target:g}{when}")
        out.print(f"grid folder: {folder}", soft_wrap=True)
    if interrupted:
        finished = int(store.done().sum())
        again = "the same command with --name to go on" if name else "with --name NAME to make a grid resumable"
        err.print(f"Interrupted; {finished} of {len(cells)} cells finished. Run {again}.")
        raise typer.Exit(130)
    if rows and all(r["status"] == "diverged" for r in rows):
        err.print(f"Error: every cell diverged: {folder}", soft_wrap=True)
        raise typer.Exit(1)


def _table(rows: list[dict], keys: list[str], sort: str, total: int) -> None:
    from backprop_cli.metrics import SCORES_AND_ERRORS

    shown = ("accuracy", "val_loss", "val_accuracy", "r2")
    extra = [c for c in SCORES_AND_ERRORS if c in shown and any(c in r for r in rows)]
    # a key's last part names its column where no other key ends the same (learning_rate, not
    # training.learning_rate): at 80 columns the numbers fit beside the keys
    last = [".".join(k.split(".")[-2:]) if k.split(".")[-1].isdigit() else k.split(".")[-1] for k in keys]
    names = [short if last.count(short) == 1 else k for k, short in zip(keys, last)]
    columns = [Column(name, justify="left", keep=True) for name in names] + [Column("seed")]
    columns += [Column("final loss"), Column("best loss", drop=2)]
    columns += [Column(c, drop=1) for c in extra] + [Column("to target", drop=2), Column("epochs", drop=3)]
    columns.append(Column("status", justify="left"))
    columns.append(Column("run", justify="left", keep=True))
    table = []
    for r in rows:
        cells = [fmt(r[k], 6) if isinstance(r[k], float) else str(r[k]) for k in keys]
        cells += [str(r["seed"]), fmt(r.get("final_loss"), 6), fmt(r.get("best_loss"), 6)]
        cells += [metric(c, r.get(c)) for c in extra] + [str(r.get("epochs_to_target") or "-")]
        cells += [str(r.get("epochs_run", "")), str(r["status"]), r["run"]]
        table.append(cells)
    title = (
        f"grid cells, best {sort} first" if len(rows) == total else f"the best {len(rows)} of {total:,} cells by {sort}"
    )
    print_table(title, columns, table)
