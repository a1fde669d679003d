"""`backprop sweep`: a grid over any config keys and seeds, batched where the maths allows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out, painter
from backprop_cli.cli.display import Column, Counter, fmt, metric, print_table, warn
from backprop_cli.cli.options import (
    LR,
    ConfigFile,
    Diagnose,
    DiagnoseEvery,
    Epochs,
    Executor,
    PlotSet,
    Quiet,
    RunsDir,
    Seed,
    Sets,
    TensorBoard,
    board_option,
    diagnose_overrides,
    parse_seeds,
    positive,
)

# the options `sweep` and `search` share
Workers = Annotated[
    Optional[int], typer.Option("--workers", metavar="N", min=1, help="Processes for the chunks (default: the cores).")
]
ExecutorOption = Annotated[Executor, typer.Option("--executor", help="Where the chunks run.")]
Scheduler = Annotated[
    Optional[str], typer.Option("--scheduler", metavar="ADDRESS", help="With --executor dask: a running cluster.")
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="SECONDS", min=0.1, help="With --scheduler: how long to wait for the scheduler to answer."
    ),
]
StudyName = Annotated[
    Optional[str], typer.Option("--name", metavar="NAME", help="The study's name; the same name and study resumes it.")
]
Sort = Annotated[
    str, typer.Option("--sort", metavar="COLUMN", help="Order of the table: final_loss, val_accuracy, ...")
]
CellPlots = Annotated[
    PlotSet,
    typer.Option(
        "--plots", help="summary: the study's own plots; all: also every cell's run-folder plots (as sweep-lr)."
    ),
]
RunFolders = Annotated[
    Optional[str],
    typer.Option(
        "--run-folders",
        metavar="WHICH",
        help="Cells that get a complete run folder: all, none or best:N (default: all up to 64 cells, else none).",
    ),
]
History = Annotated[
    Optional[str],
    typer.Option("--history", metavar="KEEP", help="Epochs of each cell's history to keep: all or every:N."),
]
Memory = Annotated[
    Optional[float],
    typer.Option("--memory", metavar="GIB", min=0.01, help="Memory for training at once (default: a quarter of RAM)."),
]
Chunk = Annotated[
    Optional[int],
    typer.Option("--chunk", metavar="N", min=1, help="Models per pass at most (default: what fits the cache)."),
]


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
    workers: Workers = None,
    executor: ExecutorOption = Executor.local,
    scheduler: Scheduler = None,
    timeout: Timeout = 10.0,
    name: StudyName = None,
    sort: Sort = "final_loss",
    plots: CellPlots = PlotSet.summary,
    run_folders: RunFolders = None,
    history: History = None,
    memory: Memory = None,
    chunk_models: Chunk = None,
    epochs: Epochs = None,
    lr: LR = None,
    seed: Seed = None,
    target: Annotated[
        Optional[float],
        typer.Option("--target", metavar="LOSS", help="The loss that counts as reached (sweep.target)."),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
    tensorboard: TensorBoard = None,
    diagnose: Diagnose = False,
    diagnose_every: DiagnoseEvery = None,
) -> None:
    """Train every cell of a grid over config keys (and seeds) and compare them.

    Cells that differ only in learning rate, optimizer scalars (and seed, when the data does
    not depend on it) train together in batched passes; the numbers of every cell go into the
    study's store, and small studies get a run folder per cell.

    Example: backprop sweep configs/xor.yaml --grid model.activation=sigmoid,tanh --seeds 0:30
    """
    from backprop_cli import grid as g
    from backprop_cli.run_folders.cells import Cells, spec

    if not grid and seeds is None:
        raise UsageError("give at least one --grid KEY=V1,V2,... (or --seeds)")
    asked_grid = g.parse_grid(grid or [])
    seed_list = parse_seeds(seeds) if seeds is not None else None
    options = study_options(
        g.count_cells(asked_grid, seed_list), name, sort, plots, run_folders, history, memory, chunk_models, workers,
        executor, scheduler, quiet,
    )  # fmt: skip
    options.tensorboard = board_option(tensorboard)
    options.target = positive(target, "--target")
    options.timeout = timeout
    if seed is not None and seeds is not None:
        raise UsageError("--seed goes with a grid of one seed; --seeds makes the seeds an axis of the grid")
    overrides = {"training.epochs": (epochs, "--epochs"), **diagnose_overrides(diagnose, diagnose_every)}
    overrides.update({"training.learning_rate": (lr, "--lr"), "seed": (seed, "--seed")})
    for key, (value, flag) in overrides.items():  # a flag and a --grid axis over the same key: say which wins
        if value is not None and any(k == key or k.startswith(key + ".") for k in asked_grid):
            raise UsageError(f"{flag}: {key} is a --grid key; give its values there")
    cells = Cells(config, asked_grid, seed_list, overrides, sets or [], limit=g.max_cells(options.budget))
    asked = spec(config, asked_grid, seed_list, sets or [], overrides)
    run_study(ctx, config, cells, asked, "grid", runs_dir, options)


def study_options(
    n_cells: int,
    name: Optional[str],
    sort: str,
    plots: PlotSet,
    run_folders: Optional[str],
    history: Optional[str],
    memory: Optional[float],
    chunk_models: Optional[int],
    workers: Optional[int],
    executor: Executor,
    scheduler: Optional[str],
    quiet: bool,
) -> StudyOptions:
    """The shared options, checked (before any cell is built)."""
    from backprop_cli import grid as g
    from backprop_cli import results
    from backprop_cli.experiment import GiB

    if scheduler is not None and executor is not Executor.dask:
        raise UsageError("--scheduler goes with --executor dask")
    if scheduler is not None:
        scheduler = g.check_scheduler(scheduler)
    if sort not in results.SORTABLE:
        raise UsageError(f"--sort {sort}: not a column of grid.csv; one of {', '.join(results.SORTABLE)}")
    every = g.parse_history(history)
    policy = g.parse_run_folders(run_folders, n_cells, every)
    machine = g.memory_budget(1.0)
    if memory is not None and memory * GiB > machine:
        raise UsageError(f"--memory {memory:g}: this machine has {machine / GiB:.1f} GiB")
    budget = int(memory * GiB) if memory is not None else g.memory_budget()
    drawn = plots is PlotSet.all
    return StudyOptions(name, sort, drawn, policy, every, budget, chunk_models, workers, executor, scheduler, quiet)


@dataclass
class StudyOptions:
    """What `sweep` and `search` share besides their cells."""

    name: Optional[str]
    sort: str
    plots: bool
    policy: str
    every: int
    budget: int
    chunk_models: Optional[int]
    workers: Optional[int]
    executor: Executor
    scheduler: Optional[str]
    quiet: bool
    halving: Optional[tuple[int, int, Optional[str]]] = None  # eta, min_epochs, metric (search --halving)
    tensorboard: Optional[Path] = None  # --tensorboard DIR, or the config's training.tensorboard
    target: Optional[float] = None  # --target LOSS, else the config's sweep.target (or 0.01)
    timeout: float = 10.0  # --timeout SECONDS: to reach a Dask scheduler

    def say_connecting(self) -> None:
        """Before the first chunk goes to a Dask scheduler: what the silence until then is."""
        if self.scheduler is not None and not self.quiet:
            err.print(f"connecting to the Dask scheduler at {self.scheduler} (--timeout {self.timeout:g} s)...")


def run_study(
    ctx: typer.Context,
    config: Path,
    cells: Any,
    asked: dict,
    kind: str,
    runs_dir: Path,
    o: StudyOptions,
    adaptive: Optional[tuple[Path, list, bool]] = None,
) -> None:
    """Train a study's cells into its store (resuming a folder asked the same), write its
    results and print its table: the one code path of `sweep` and `search`. `adaptive` is an
    adaptive search's (folder, chunks trained, interrupted): its cells are written, not trained."""
    from backprop_cli import grid as g
    from backprop_cli import results
    from backprop_cli.run_folders import guarded, now_iso
    from backprop_cli.run_folders.cells import export_cell
    from backprop_cli.store import Store
    from backprop_cli.studies import default_target

    name, sort, quiet = o.name, o.sort, o.quiet
    target = o.target if o.target is not None else default_target(cells.combos[0].cfg)
    if o.halving is not None and any(c.cfg.training.diagnostics for c in cells.combos):
        raise UsageError("--halving: rungs continue every trial; diagnostics are recorded by grids and plain searches")
    if o.tensorboard is None and cells.combos[0].cfg.training.tensorboard:
        board_option(Path(cells.combos[0].cfg.training.tensorboard))  # the extra, before anything trains
    shape = g.layout(cells, o.every)
    if o.halving is not None:
        eta, min_epochs, metric = o.halving
        metric = metric or ("val_loss" if "val_loss" in shape.columns else "loss")
        if metric not in shape.columns:
            raise UsageError(f"--metric {metric}: the trials record {', '.join(shape.columns)}")
        if len({c.cfg.training.epochs for c in cells.combos}) > 1:
            raise UsageError("--halving: every trial must train the same training.epochs")
        o.halving = (eta, min_epochs, metric)
    found = g.find_study(runs_dir, name, asked, kind) if adaptive is None else adaptive[0]
    if found is None or not Store.exists(found):
        g.check_disk(shape, runs_dir, max(c.cfg.training.epochs for c in cells.combos))
    folder = found or g.new_study(runs_dir, cells.name, name, asked, kind)
    if adaptive is not None:
        from backprop_cli.files import write_json

        write_json(folder / g.GRID_FILE, asked)  # the trials, now that they are known
    keys = list(cells.grid)
    with guarded(folder), g.locked(folder):
        store = Store.open(folder, writable=True) if Store.exists(folder) else Store.create(folder, shape)
        done = store.done()
        todo = [i for i in range(len(cells)) if not done[i]]
        jobs = g.plan(cells, todo, str(config), target, o.every, o.budget, o.chunk_models) if adaptive is None else []
        n_workers = o.workers or os.cpu_count() or 1
        skipped = f"; {len(cells) - len(todo):,} finished before, skipped" if len(todo) < len(cells) else ""
        if adaptive is None:
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
            if adaptive is not None:
                for chunk in adaptive[1]:
                    store.write(chunk)
                interrupted = adaptive[2]
            elif o.halving is None:
                with Counter("models trained", len(todo), quiet) as progress:
                    trained = 0
                    o.say_connecting()
                    for chunk in g.execute(jobs, n_workers, o.executor.value, o.scheduler, o.timeout):
                        store.write(chunk)
                        trained += len(chunk.cells)
                        progress(trained)
                        if g.interrupted(chunk):  # Ctrl-C inside training
                            raise KeyboardInterrupt
            else:
                _halving(cells, store, jobs, todo, o, n_workers)
        except KeyboardInterrupt:
            interrupted = True
            if not quiet:  # in this process a chunk stops after its epoch; workers' chunks are dropped
                pooled = o.executor.value == "dask" or (n_workers > 1 and len(jobs) > 1)  # as g.execute runs them
                said = (
                    "chunks in progress are dropped (--name resumes them)"
                    if pooled
                    else "the chunk in progress is kept where it finished"
                )
                err.print(f"stopping: {said}...")
        rows, warnings = results.write_results(
            folder, cells, store, cells.grid, asked, sort, name or cells.name, painter(ctx), started, len(jobs), interrupted,
            o.policy, kind,
        )  # fmt: skip
        warn(warnings)
        which = results.folders_for(o.policy, cells, rows, sort)
        if which and not interrupted:
            with Counter("run folders written", len(which), quiet) as written:
                for n, i in enumerate(which, 1):
                    if store.done()[i]:
                        export_cell(folder, i, plots=o.plots)
                    written(n)
        board = o.tensorboard or cells.combos[0].cfg.training.tensorboard
        if board:
            from backprop_cli.events import STUDY_LIMIT

            boards = results.write_board(Path(board) / folder.name, cells, store)
            if not quiet:
                more = (
                    f" (the first {STUDY_LIMIT}; at most {STUDY_LIMIT} are written)" if len(rows) > STUDY_LIMIT else ""
                )
                err.print(f"TensorBoard: {boards} cells under {Path(board) / folder.name}{more}", soft_wrap=True)
    if quiet:
        out.print(str(folder), soft_wrap=True)
    else:
        ranked = results.sort_rows(rows, sort)
        _table(ranked if len(rows) <= results.RUN_FOLDERS_UP_TO else ranked[: results.TOP], keys, sort, len(rows))
        for key, value, reached, n, median in results.by_value(rows, cells.grid):
            when = f" (median epochs to reach it: {median:g})" if median is not None else ""
            out.print(f"{key}={value}: {reached} of {n} cells reached loss {target:g}{when}")
        out.print(f"{kind} folder: {folder}", soft_wrap=True)
    if interrupted:
        finished = int(store.done().sum())
        if adaptive is not None:
            err.print(f"Interrupted; {finished} of {len(cells)} cells finished (a tpe search is not resumed).")
            raise typer.Exit(130)
        again = "the same command with --name to go on" if name else f"with --name NAME to make a {kind} resumable"
        err.print(f"Interrupted; {finished} of {len(cells)} cells finished. Run {again}.")
        raise typer.Exit(130)
    if rows and all(r["status"] == "diverged" for r in rows):
        err.print(f"Error: every cell diverged: {folder}", soft_wrap=True)
        raise typer.Exit(1)


def _halving(cells: Any, store: Any, jobs: list, todo: list[int], o: StudyOptions, n_workers: int) -> None:
    """Successive halving: every rung trains the trials alive as batched passes, continuing
    each from its checkpoint in the store, then keeps the best 1/eta by the metric."""
    from backprop_cli import grid as g

    assert o.halving is not None
    eta, min_epochs, metric = o.halving
    epochs = cells.combos[0].cfg.training.epochs
    steps = g.rungs(min_epochs, eta, epochs)
    alive, start = list(todo), 0
    sizes = [len(todo)]
    for _ in steps[1:]:
        sizes.append(max(1, -(-sizes[-1] // eta)))
    with Counter("trial rungs trained", sum(sizes), o.quiet) as progress:
        trained = 0
        o.say_connecting()
        for r, stop in enumerate(steps):
            for chunk in g.execute(
                g.halving_plan(cells, store, alive, start, stop, jobs),
                n_workers,
                o.executor.value,
                o.scheduler,
                o.timeout,
            ):
                store.write(chunk)
                trained += len(chunk.cells)
                progress(trained)
                if g.interrupted(chunk):
                    raise KeyboardInterrupt
            if not o.quiet:
                err.print(f"rung {r + 1} of {len(steps)}: {len(alive):,} trials trained to epoch {stop:,}")
            if stop == epochs:
                break
            alive, start = g.survivors_of(store, alive, metric or "loss", eta), stop


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
    diagnosed = [c for c in ("dead_fraction", "saturated_fraction") if any(r.get(c) is not None for r in rows)]
    columns += [Column(c.split("_")[0], drop=1) for c in diagnosed]
    columns.append(Column("status", justify="left"))
    columns.append(Column("run", justify="left", keep=True))
    table = []
    for r in rows:
        cells = [fmt(r[k], 6) if isinstance(r[k], float) else str(r[k]) for k in keys]
        cells += [str(r["seed"]), fmt(r.get("final_loss"), 6), fmt(r.get("best_loss"), 6)]
        cells += [metric(c, r.get(c)) for c in extra] + [str(r.get("epochs_to_target") or "-")]
        cells += [str(r.get("epochs_run", ""))]
        cells += ["-" if r.get(c) is None else f"{100 * r[c]:.0f}%" for c in diagnosed]
        cells += [str(r["status"]), r["run"]]
        table.append(cells)
    title = (
        f"grid cells, best {sort} first" if len(rows) == total else f"the best {len(rows)} of {total:,} cells by {sort}"
    )
    print_table(title, columns, table)
