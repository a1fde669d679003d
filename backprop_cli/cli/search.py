"""`backprop search`: random or quasi-random trials over config keys, batched where the maths
allows, into the same study store, table and plots as `backprop sweep`."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, out
from backprop_cli.cli.display import Counter
from backprop_cli.cli.options import (
    ConfigFile,
    Diagnose,
    DiagnoseEvery,
    Epochs,
    Executor,
    PlotSet,
    Quiet,
    RunsDir,
    Sets,
    TensorBoard,
    board_option,
    diagnose_overrides,
    parse_seeds,
)
from backprop_cli.cli.sweep import (
    CellPlots,
    Chunk,
    ExecutorOption,
    History,
    Memory,
    RunFolders,
    Scheduler,
    Sort,
    StudyName,
    StudyOptions,
    Timeout,
    Workers,
    run_study,
    study_options,
)


@app.command()
@cli_errors
def search(
    ctx: typer.Context,
    config: ConfigFile,
    space: Annotated[
        Optional[List[str]],
        typer.Option(
            "--space",
            metavar="KEY=DIST",
            help="A config key and its distribution: log:A:B, uniform:A:B, int:A:B or choice:V1,V2 (repeatable).",
        ),
    ] = None,
    trials: Annotated[int, typer.Option("--trials", metavar="N", help="How many points of the space to train.")] = 64,
    sampler: Annotated[
        str,
        typer.Option(
            "--sampler",
            metavar="NAME",
            help="random; sobol (quasi-random; the search extra); tpe (Optuna's, adaptive; the optuna extra).",
        ),
    ] = "random",
    generation: Annotated[
        int,
        typer.Option(
            "--generation", metavar="N", min=1, help="With --sampler tpe: trials asked and trained at a time."
        ),
    ] = 32,
    search_seed: Annotated[
        int, typer.Option("--search-seed", metavar="N", min=0, help="The seed the trials are drawn with.")
    ] = 0,
    seeds: Annotated[
        Optional[str], typer.Option("--seeds", metavar="SEEDS", help="Train every trial once per seed: START:STOP.")
    ] = None,
    halving: Annotated[
        bool, typer.Option("--halving", help="Successive halving: rungs that keep the best 1/eta of the trials.")
    ] = False,
    eta: Annotated[int, typer.Option("--eta", metavar="N", min=2, help="With --halving: keep 1/N each rung.")] = 3,
    min_epochs: Annotated[
        Optional[int],
        typer.Option("--min-epochs", metavar="N", min=1, help="With --halving: the first rung's epochs."),
    ] = None,
    metric: Annotated[
        Optional[str],
        typer.Option(
            "--metric",
            metavar="COLUMN",
            help="With --halving or --sampler tpe: what ranks trials (default val_loss, else loss).",
        ),
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
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
    tensorboard: TensorBoard = None,
    diagnose: Diagnose = False,
    diagnose_every: DiagnoseEvery = None,
) -> None:
    """Train trials drawn at random (or from a Sobol sequence) over config keys and compare them.

    Trials that differ only in learning rate, optimizer scalars (and seed, where the data does
    not depend on it) train together as the models of batched passes.

    Example: backprop search configs/moons.yaml --space training.learning_rate=log:1e-3:1 --trials 256
    """
    from backprop_cli import grid as g
    from backprop_cli.run_folders.cells import Trials
    from backprop_cli.search import SAMPLERS, parse_space, sample

    if trials < 1:
        raise UsageError(f"--trials {trials}: must be >= 1")
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler {sampler}: one of {', '.join(SAMPLERS)}")
    dists = parse_space(space or [])
    seed_list = parse_seeds(seeds) if seeds is not None else None
    options = study_options(
        trials * (len(seed_list) if seed_list else 1), name, sort, plots, run_folders, history, memory, chunk_models,
        workers, executor, scheduler, quiet,
    )  # fmt: skip
    options.tensorboard = board_option(tensorboard)
    options.timeout = timeout
    most = g.max_cells(options.budget) // (len(seed_list) if seed_list else 1)
    if trials > most:
        raise UsageError(f"--trials {trials:,}: at most {most:,} fit this machine (see --memory)")
    if not halving and min_epochs is not None:
        raise UsageError("--min-epochs goes with --halving")
    if not halving and metric is not None and sampler != "tpe":
        raise UsageError("--metric goes with --halving or --sampler tpe")
    if sampler == "tpe" and halving:
        raise UsageError("--halving goes with the random and sobol samplers (tpe chooses its trials itself)")
    if generation != 32 and sampler != "tpe":
        raise UsageError("--generation goes with --sampler tpe")
    if halving:
        if name is not None:
            raise UsageError("--halving: a halving search is not resumed; run it without --name")
        if options.every != 1:
            raise UsageError("--halving: rungs continue every trial's history; not with --history every:N")
        options.halving = (eta, min_epochs or 0, metric)
    overrides = {"training.epochs": (epochs, "--epochs"), **diagnose_overrides(diagnose, diagnose_every)}
    asked: dict = {  # what the search asked for, in grid.json (a resume asks the same)
        "config": str(Path(config).resolve()),
        "space": list(space or []),
        "sampler": sampler,
        "search_seed": search_seed,
        "set": list(sets or []),
        "overrides": {k: v for k, (v, _) in overrides.items() if v is not None},
    }
    if sampler == "tpe":
        return _tpe(
            ctx, config, dists, trials, generation, search_seed, seed_list, overrides, sets or [], metric, name,
            {**asked, "generation": generation, "metric": metric}, runs_dir, options,
        )  # fmt: skip
    points = sample(dists, trials, sampler, search_seed)
    cells = Trials(config, points, seed_list, overrides, sets or [], limit=g.max_cells(options.budget))
    asked.update(trials=points, seeds=seed_list)
    if halving:
        epochs_all = cells.combos[0].cfg.training.epochs
        first = min_epochs or max(1, epochs_all // eta ** max(1, round(math.log(max(trials, 2), eta)) - 1))
        options.halving = (eta, first, metric)
        asked["halving"] = {"eta": eta, "min_epochs": first, "metric": metric}
    run_study(ctx, config, cells, asked, "search", runs_dir, options)


def _tpe(
    ctx: typer.Context,
    config: Path,
    dists: list,
    trials: int,
    generation: int,
    search_seed: int,
    seed_list: Optional[Sequence[int]],
    overrides: dict,
    sets: list[str],
    metric: Optional[str],
    name: Optional[str],
    asked: dict,
    runs_dir: Path,
    options: StudyOptions,
) -> None:
    """An adaptive search: Optuna's TPE asks for a generation of trials, they train as batched
    passes (the chunks kept in memory), their results are told back; then the study is written
    as any search's. Not resumed: every run is a new folder."""
    import numpy as np

    from backprop_cli import grid as g
    from backprop_cli.metrics import is_score
    from backprop_cli.run_folders.cells import Trials
    from backprop_cli.search import OPTUNA_FILE, adaptive, optuna_distributions
    from backprop_cli.store import STATUSES
    from backprop_cli.studies import default_target

    optuna_distributions(dists)  # the extra and the choices, before a folder is made
    n_seeds = len(seed_list) if seed_list else 1
    first = Trials(config, [{d.key: _probe(d) for d in dists}], seed_list, overrides, sets)
    columns = g.layout(first, 1).columns
    metric = metric or ("val_loss" if "val_loss" in columns else "loss")
    if metric not in columns:
        raise UsageError(f"--metric {metric}: the trials record {', '.join(columns)}")
    target = default_target(first.combos[0].cfg)
    folder = g.new_study(runs_dir, first.name, name, asked, "search")
    chunks: list = []
    done = [0]
    n_workers = options.workers or os.cpu_count() or 1
    with Counter("models trained", trials * n_seeds, options.quiet) as progress:
        options.say_connecting()

        def train(points: list[dict]) -> list[Optional[float]]:
            offset = done[0]
            cells = Trials(config, points, seed_list, overrides, sets, limit=g.max_cells(options.budget))
            jobs = g.plan(cells, range(len(cells)), str(config), target, options.every, options.budget)
            found: list[list[float]] = [[] for _ in points]
            diverged = STATUSES.index("diverged")
            for chunk in g.execute(jobs, n_workers, options.executor.value, options.scheduler, options.timeout):
                for row, cell in enumerate(chunk.cells):
                    # a diverged trial is told failed, whatever its last finite value
                    value = np.nan if chunk.fields["status"][row] == diverged else chunk.finals[metric][row]
                    found[int(cell) // n_seeds].append(float(value))
                chunk.cells = chunk.cells + offset
                chunks.append(chunk)
                done[0] += len(chunk.cells)
                progress(done[0])
                if g.interrupted(chunk):
                    raise KeyboardInterrupt
            done[0] = offset + len(cells)
            return [float(np.mean(v)) if v and np.all(np.isfinite(v)) else None for v in found]

        try:
            points, interrupted = adaptive(
                dists, trials, generation, search_seed, folder / OPTUNA_FILE, is_score(metric), train
            )
        except BaseException as e:  # a trial refused (or anything else): nothing half-made is left
            if not isinstance(e, KeyboardInterrupt):
                shutil.rmtree(folder, ignore_errors=True)
            raise
    cells = Trials(config, points, seed_list, overrides, sets)
    run_study(ctx, config, cells, {**asked, "trials": points, "seeds": list(seed_list) if seed_list else None}, "search", runs_dir, options,
              adaptive=(folder, chunks, interrupted))  # fmt: skip
    if not options.quiet:
        out.print(
            f"Optuna study: {folder / OPTUNA_FILE} (optuna-dashboard sqlite:///{folder / OPTUNA_FILE})", soft_wrap=True
        )


def _probe(d: Any) -> Any:
    """A value of a distribution, to validate and lay out the config before the first generation."""
    return d.choices[0] if d.kind == "choice" else (int(d.low) if d.kind == "int" else d.low)
