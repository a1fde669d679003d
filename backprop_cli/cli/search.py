"""`backprop search`: random or quasi-random trials over config keys, batched where the maths
allows, into the same study store, table and plots as `backprop sweep`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors
from backprop_cli.cli.options import ConfigFile, Epochs, Executor, Quiet, RunsDir, Sets, parse_seeds
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
        str, typer.Option("--sampler", metavar="NAME", help="random, or sobol (quasi-random; needs the search extra).")
    ] = "random",
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
            "--metric", metavar="COLUMN", help="With --halving: what ranks trials (default val_loss, else loss)."
        ),
    ] = None,
    workers: Workers = None,
    executor: ExecutorOption = Executor.local,
    scheduler: Scheduler = None,
    name: StudyName = None,
    sort: Sort = "final_loss",
    plots: CellPlots = False,
    run_folders: RunFolders = None,
    history: History = None,
    memory: Memory = None,
    chunk_models: Chunk = None,
    epochs: Epochs = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
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
    most = g.max_cells(options.budget) // (len(seed_list) if seed_list else 1)
    if trials > most:
        raise UsageError(f"--trials {trials:,}: at most {most:,} fit this machine (see --memory)")
    if not halving and (min_epochs is not None or metric is not None):
        raise UsageError("--min-epochs and --metric go with --halving")
    if halving:
        if name is not None:
            raise UsageError("--halving: a halving search is not resumed; run it without --name")
        if options.every != 1:
            raise UsageError("--halving: rungs continue every trial's history; not with --history every:N")
        options.halving = (eta, min_epochs or 0, metric)
    points = sample(dists, trials, sampler, search_seed)
    overrides = {"training.epochs": (epochs, "--epochs")}
    cells = Trials(config, points, seed_list, overrides, sets or [], limit=g.max_cells(options.budget))
    asked = {
        "config": str(Path(config).resolve()),
        "space": list(space or []),
        "sampler": sampler,
        "search_seed": search_seed,
        "trials": points,
        "seeds": seed_list,
        "set": list(sets or []),
        "overrides": {k: v for k, (v, _) in overrides.items() if v is not None},
    }
    if halving:
        epochs_all = cells.combos[0].cfg.training.epochs
        first = min_epochs or max(1, epochs_all // eta ** max(1, round(math.log(max(trials, 2), eta)) - 1))
        options.halving = (eta, first, metric)
        asked["halving"] = {"eta": eta, "min_epochs": first, "metric": metric}
    run_study(ctx, config, cells, asked, "search", runs_dir, options)
