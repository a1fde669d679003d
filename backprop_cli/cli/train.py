"""`backprop train`: one run, a run continued from another (--from), or a seed study (--seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out, painter
from backprop_cli.cli.display import Reporter, fmt, metric, output, predictions_table, sparkline, study_table, warn
from backprop_cli.cli.options import (
    LR,
    Diagnose,
    DiagnoseEvery,
    Epochs,
    Frames,
    FramesByOption,
    Quiet,
    RunsDir,
    Seed,
    Sets,
    TensorBoard,
    animation_options,
    diagnose_options,
    load,
    load_data,
    parse_seeds,
    positive,
    tensorboard_option,
)
from backprop_cli.cli.serve import Host, LiveOption, OpenBrowser, Paused, Port, check_live, live_page

if TYPE_CHECKING:
    from backprop_cli.config import Config
    from backprop_cli.data import Dataset
    from backprop_cli.live import Live
    from backprop_cli.painter import Painter
    from backprop_cli.training import TrainResult


@app.command()
@cli_errors
def train(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Argument(metavar="[CONFIG]", help="YAML config file (with --from, by default the run's own config)."),
    ] = None,
    epochs: Epochs = None,
    lr: LR = None,
    seed: Seed = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Override the run name.")] = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
    seeds: Annotated[
        Optional[str],
        typer.Option("--seeds", metavar="SEEDS", help="Train once per seed, batched: START:STOP or 1,2,3."),
    ] = None,
    target: Annotated[
        Optional[float], typer.Option("--target", metavar="LOSS", help="With --seeds: the loss that counts as reached.")
    ] = None,
    from_run: Annotated[
        Optional[Path],
        typer.Option(
            "--from", metavar="RUN", help="Start from this run's final weights (a path, a run name, or latest)."
        ),
    ] = None,
    animate: Annotated[
        bool, typer.Option("--animate", help="Also write training.gif: the network learning (training.animate).")
    ] = False,
    frames: Frames = None,
    frames_by: FramesByOption = None,
    tensorboard: TensorBoard = None,
    diagnose: Diagnose = False,
    diagnose_every: DiagnoseEvery = None,
    live: LiveOption = False,
    port: Port = 0,
    host: Host = "127.0.0.1",
    open_browser: OpenBrowser = False,
    paused: Paused = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the config as resolved (after --set and the flags) and exit.")
    ] = False,
) -> None:
    """Train the network a config describes and write a run folder.

    Example: backprop train configs/xor.yaml --epochs 5000 --lr 0.5
    """
    own = config is None
    if config is None:
        if from_run is None:
            raise UsageError("Missing argument 'CONFIG': the YAML config to train (or --from RUN, with the run's own)")
        config = _own_config(from_run, runs_dir)
    cfg = load(config, epochs, lr, seed, name, sets, initial=not own)
    animation_options(cfg, animate, frames, frames_by)
    tensorboard_option(cfg, tensorboard)
    diagnose_options(cfg, diagnose, diagnose_every)
    check_live(live, port, host, open_browser, paused)
    if print_config:
        from backprop_cli.config import config_to_yaml

        out.print(config_to_yaml(cfg), end="", soft_wrap=True)
        return
    if seeds is not None:
        if from_run is not None:
            raise UsageError("--from goes with a single run, not with --seeds")
        if seed is not None:
            raise UsageError("--seed goes with a single run; --seeds trains one model per seed")
        if live:
            raise UsageError("--live goes with a single run (or sweep-lr); a seed study trains without a page")
        if cfg.training.diagnostics is not None:
            raise UsageError(
                "--diagnose with --seeds: a seed study keeps no run folder per seed; use "
                "backprop sweep CONFIG --seeds SEEDS --diagnose (each seed a cell with its diagnostics)"
            )
        return _train_seeds(
            cfg, config, parse_seeds(seeds), runs_dir, quiet, positive(target, "--target"), painter(ctx)
        )
    if target is not None:
        raise UsageError("--target goes with --seeds (a single run stops at a loss with training.stop_at_loss)")
    data = load_data(cfg, config)
    if not live:
        return _train_one(cfg, data, runs_dir, quiet, from_run, painter(ctx))
    with live_page(cfg, data, host, port, open_browser, paused) as page:
        _train_one(cfg, data, runs_dir, quiet, from_run, painter(ctx), page)


def _own_config(from_run: Path, runs_dir: Path) -> Path:
    """`train --from RUN` without a config: the run's config.yaml (its data paths absolute)."""
    from backprop_cli.run_folders import resolve_run
    from backprop_cli.run_folders.read import not_a_run

    path = resolve_run(from_run, runs_dir) / "config.yaml"
    if not path.is_file():
        raise not_a_run(path.parent)
    return path


def _train_one(
    cfg: Config,
    data: Dataset,
    runs_dir: Path,
    quiet: bool,
    from_run: Optional[Path],
    worker: Painter,
    live: Optional[Live] = None,
) -> None:
    from backprop_cli.api import train_run

    def progress(epochs: int, start: int, label: str) -> Reporter:
        shown = Reporter(epochs, start, quiet, label)
        if live is not None:  # the page's pauses show on the bar
            live.on_hold = shown.hold
        return shown

    def notice(text: str) -> None:
        if not quiet:
            err.print(text)

    trained = train_run(cfg, data, runs_dir, progress, from_run, worker, notice, live)
    result, summary, warnings, run = trained.result, trained.summary, trained.warnings, trained.run
    if live is not None and live.added:
        changes = ", ".join(f"{rate:g} from epoch {epoch}" for epoch, rate in sorted(live.added.items()))
        notice(f"learning rate changed on the page: {changes} (saved as training.lr_changes)")
    start_epoch = trained.start_epoch
    if trained.interrupted_while_saving:
        err.print(f"Interrupted while saving; the run was saved ({result.status[0]}): {run}", soft_wrap=True)
        raise typer.Exit(130)
    warn(warnings)
    _print_summary(cfg, data, result, summary, run, quiet)
    status = result.status[0]
    if status == "diverged":
        err.print(
            f"Error: training diverged at epoch {result.diverged_at[0]} (learning rate {fmt(cfg.training.learning_rate)}): "
            f"the loss became non-finite; try a smaller --lr. History and last finite weights: {run}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if status == "interrupted":
        err.print(
            f"Interrupted after epoch {start_epoch + result.epochs_run[0]}; run saved as interrupted: {run}",
            soft_wrap=True,
        )
        raise typer.Exit(130)


def _print_summary(cfg: Config, data: Dataset, result: TrainResult, summary: dict, run: Path, quiet: bool) -> None:
    if quiet:
        out.print(str(run), soft_wrap=True)
        return
    from backprop_cli.metrics import class_name, target_names
    from backprop_cli.plots import spans_decades

    out.print(
        f"final loss ({cfg.training.loss}): {metric('loss', result.final('loss'))} after {result.epochs_run[0]} epochs "
        f"in {result.duration_s:.2f} s ({result.status[0]}, stopped by: {result.stop_reason[0]})"
    )
    hist = result.history["loss"][: result.epochs_run[0], 0]
    if len(hist) > 1:
        out.print(f"loss curve{' (log scale)' if spans_decades(hist) else ''}: {sparkline(hist)}")
    if len(data.X) <= 20:
        pred = result.net.predict(data.X)[0]
        outputs = data.output_names
        targets = target_names(outputs)
        X_show = data.X_raw if data.X_raw is not None else data.X
        rows = []
        for i in range(len(data.X)):
            cells = (
                [fmt(float(v), 6) for v in X_show[i]]
                + [fmt(float(v), 6) for v in data.Y[i]]
                + [output(v) for v in pred[i]]
            )
            if data.class_names:
                cells.append(str(class_name(pred[i], data.class_names)))
            rows.append(cells)
        predictions_table(
            data.feature_names, targets + outputs, rows, bool(data.class_names), title="predictions (final weights)"
        )
    for column in result.history:
        if column != "loss":
            value = result.final(column)
            if value is not None:
                out.print(f"{column}: {metric(column, value)}")
    saved = summary["saved_weights"]
    numbers = ", ".join(f"{k} {metric(k, v)}" for k, v in saved.items() if k not in ("weights", "epoch"))
    if saved["weights"] == "restored":
        out.print(f"restored the weights of epoch {saved['epoch']} (restore_best): {numbers}")
    else:
        out.print(f"saved weights (after epoch {saved['epoch']}): {numbers}")
    if "diagnostics" in summary:
        from backprop_cli.run_folders.diagnosed import first_line

        found = summary["diagnostics"]["findings"]
        out.print(first_line(found, run) or "diagnose: no problems found", soft_wrap=not out.is_terminal)
    out.print(f"run folder: {run}", soft_wrap=True)


def _train_seeds(
    cfg: Config,
    config: Path,
    seeds: Sequence[int],
    runs_dir: Path,
    quiet: bool,
    target: Optional[float],
    worker: Painter,
) -> None:
    from backprop_cli.animation import chain, check_models, snapshots_for
    from backprop_cli.experiment import check_memory
    from backprop_cli.network import param_names
    from backprop_cli.run_folders import guarded, now_iso
    from backprop_cli.studies import default_target, start_study, targets_reached, write_study
    from backprop_cli.sweep import seed_passes, seed_study

    target = default_target(cfg) if target is None else target
    check_memory(cfg, str(config), n_models=len(seeds))
    passes = seed_passes(cfg, seeds)
    if cfg.training.animate:
        check_models(len(seeds), "seeds")
        if passes > 1:
            raise UsageError(
                "--animate with --seeds draws the seeds of one batched pass; here each seed draws its own data or "
                "batch order and trains alone: animate one seed with train --seed N --animate"
            )
    data = load_data(cfg, config)
    seeds = list(seeds)
    names = [p.name for p in param_names(cfg.model.layers, cfg.model.bias)]
    started = now_iso()
    folder = start_study(cfg, runs_dir, "seeds")
    with guarded(folder):
        shots = snapshots_for(cfg, seeds=seeds)
        with Reporter(cfg.training.epochs * passes, 0, quiet, label=f"{len(seeds)} seeds") as report:
            entries = seed_study(cfg, data, seeds, callback=chain(report, shots), source=str(config))
        reached, median = targets_reached(entries, target)
        if shots is not None and not quiet:
            err.print(f"drawing training.gif ({shots.frames} frames, {len(seeds)} panels)...")
        extra = {"seeds": seeds, "started_at": started, "reached_target": reached, "median_epochs_to_target": median}
        warn(
            write_study(
                folder, "seeds", "seed", cfg, data, entries, target, names, False, extra, worker, snapshots=shots
            )
        )
    if quiet:
        out.print(str(folder), soft_wrap=True)
    else:
        study_table(entries, "seed", target)
        out.print(
            f"{reached} of {len(seeds)} seeds reached loss {target:g} "
            f"(median epochs to reach it: {'-' if median is None else f'{median:g}'})"
        )
        out.print(f"seeds folder: {folder}", soft_wrap=True)
    if any(e.status == "interrupted" for e in entries):
        raise typer.Exit(130)
    if all(e.status == "diverged" for e in entries):
        err.print(f"Error: every seed diverged; try a smaller --lr. The study: {folder}", soft_wrap=True)
        raise typer.Exit(1)
