"""`backprop sweep-lr`: learning rates compared in one batched pass (or chained)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out, painter
from backprop_cli.cli.display import Column, Reporter, Steps, fmt, print_table, study_table, value_texts, warn
from backprop_cli.cli.options import (
    ConfigFile,
    Diagnose,
    DiagnoseEvery,
    Epochs,
    Frames,
    FramesByOption,
    PlotSet,
    Quiet,
    RunsDir,
    Seed,
    Sets,
    TensorBoard,
    animation_options,
    diagnose_options,
    load,
    load_data,
    parse_list,
    positive,
    tensorboard_option,
)
from backprop_cli.cli.serve import Host, LiveOption, OpenBrowser, Paused, Port, check_live, live_page

if TYPE_CHECKING:
    from backprop_cli.config import Config
    from backprop_cli.data import Dataset
    from backprop_cli.sweep import Entry


def parse_rates(lrs: Optional[str], log_range: Optional[str], cfg: Config) -> list[float]:
    """--lrs, or --log-range MIN:MAX:N, or the config's (or the default) rates."""
    from backprop_cli.sweep import MAX_RATES, check_rates, default_rates, log_spaced

    if lrs is not None and log_range is not None:
        raise UsageError("give --lrs or --log-range, not both")
    if log_range is not None:
        parts = log_range.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise UsageError(f"--log-range {log_range}: expected MIN:MAX:N, e.g. 0.01:10:7") from None
        if not (0 < lo <= hi and math.isfinite(hi)) or n < 1:
            raise UsageError(f"--log-range {log_range}: needs 0 < MIN <= MAX and N >= 1")
        if n > MAX_RATES:
            raise UsageError(f"--log-range {log_range}: at most {MAX_RATES:,} rates")
        return log_spaced(lo, hi, n)
    if lrs is not None:
        rates = parse_list(lrs, float, "--lrs", "numbers separated by commas, e.g. 0.1,0.5,1", "learning rates")
        return check_rates(rates, f"--lrs {lrs}")
    return default_rates(cfg)


def weights_table(entries: list[Entry], label: str, names: list[str], data: Dataset) -> None:
    """Print final weights (and final outputs for at most 4 samples) per model: the classic table."""
    outputs = len(data.X) <= 4
    columns = [Column(label, keep=True)] + [Column(name) for name in names]
    if outputs:
        for i in range(len(data.X)):
            for j in range(data.Y.shape[1]):
                columns.append(Column(f"out{j + 1}" if len(data.X) == 1 else f"s{i + 1}.out{j + 1}"))
    rows = []
    for shown, e in zip(value_texts([e.value for e in entries]), entries):
        cells = [shown] + [fmt(float(v), 6) for v in e.params()]
        if outputs:
            cells += [fmt(float(v), 6) for v in e.result.net.predict(data.X, e.model).ravel()]
        rows.append(cells)
    print_table("final weights" + (" and outputs" if outputs else ""), columns, rows)


@app.command("sweep-lr")
@cli_errors
def sweep_lr(
    ctx: typer.Context,
    config: ConfigFile,
    lrs: Annotated[
        Optional[str], typer.Option("--lrs", metavar="RATES", help="Comma-separated learning rates.")
    ] = None,
    log_range: Annotated[
        Optional[str], typer.Option("--log-range", metavar="MIN:MAX:N", help="N log-spaced rates from MIN to MAX.")
    ] = None,
    target: Annotated[
        Optional[float],
        typer.Option("--target", metavar="LOSS", help="Loss that counts as reached (default: sweep.target or 0.01)."),
    ] = None,
    chain: Annotated[
        bool, typer.Option("--chain", help="Continue each rate from the previous rate's final weights.")
    ] = False,
    plots: Annotated[
        PlotSet,
        typer.Option("--plots", help="summary: the sweep's own plots; all: also every rate's run-folder plots."),
    ] = PlotSet.summary,
    animate: Annotated[
        bool, typer.Option("--animate", help="Also write training.gif: one panel per rate (at most 9).")
    ] = False,
    frames: Frames = None,
    frames_by: FramesByOption = None,
    epochs: Epochs = None,
    seed: Seed = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
    tensorboard: TensorBoard = None,
    diagnose: Diagnose = False,
    diagnose_every: DiagnoseEvery = None,
    live: LiveOption = False,
    port: Port = 0,
    host: Host = "127.0.0.1",
    open_browser: OpenBrowser = False,
    paused: Paused = False,
) -> None:
    """Compare learning rates: all train together from identical initial weights.

    Example: backprop sweep-lr configs/worked_example.yaml --lrs 0.1,0.2,0.5,0.8,1.0,2.0
    """
    cfg = load(config, epochs, None, seed, None, sets)
    animation_options(cfg, animate, frames, frames_by)
    tensorboard_option(cfg, tensorboard)
    diagnose_options(cfg, diagnose, diagnose_every)
    check_live(live, port, host, open_browser, paused)
    if live and chain:
        raise UsageError("--live shows a batched sweep, not --chain")
    rates = parse_rates(lrs, log_range, cfg)
    from backprop_cli.sweep import check_no_changes

    check_no_changes(cfg)  # before a live page is started
    from backprop_cli.experiment import check_memory

    check_memory(cfg, str(config), n_models=len(rates))
    positive(target, "--target")
    data = load_data(cfg, config)
    from backprop_cli.api import sweep_run
    from backprop_cli.network import param_names

    def progress(epochs: int, start: int, label: str) -> Reporter:
        shown = Reporter(epochs, start, quiet, label)
        if page is not None:  # the page's pauses show on the bar
            page.on_hold = shown.hold
        return shown

    def writing(n: int) -> Steps:
        return Steps(f"writing {n} run folders", quiet)

    with (
        live_page(cfg, data, host, port, open_browser, paused, rates, [f"lr {r}" for r in value_texts(rates)])
        if live
        else nullcontext() as page
    ):
        folder, entries, warnings, target = sweep_run(
            cfg, data, rates, runs_dir, chain, target, progress, painter(ctx), plots is PlotSet.all, writing, page,
            notice=None if quiet else err.print,
        )  # fmt: skip
    warn(warnings)
    names = [p.name for p in param_names(cfg.model.layers, cfg.model.bias)]
    if quiet:
        out.print(str(folder), soft_wrap=True)
    else:
        study_table(entries, "learning_rate", target)
        if len(names) <= 16:
            weights_table(entries, "learning_rate", names, data)
        out.print(f"sweep folder: {folder}", soft_wrap=True)
    statuses = [e.status for e in entries]
    if "interrupted" in statuses:
        raise typer.Exit(130)
    if "completed" not in statuses:
        err.print("Error: every learning rate diverged")
        raise typer.Exit(1)
