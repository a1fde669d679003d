"""The command line: a thin Typer/Rich edge over the UI-free core.

The only module that imports typer and rich. Core errors become one line on stderr and an
exit code (2: usage, config or data; 1: runtime failure); Ctrl-C and SIGTERM give 130.
Heavy modules (numpy, pydantic, matplotlib) are imported inside the commands so that
`backprop --help` starts fast.
"""

from __future__ import annotations

import functools
import math
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typing_extensions import Annotated

from backprop_cli import __version__
from backprop_cli.errors import BackpropError, UsageError

app = typer.Typer(
    name="backprop",
    help="Train small neural networks from YAML configs with a from-scratch NumPy backprop engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
runs_app = typer.Typer(help="List, show and compare run folders.", no_args_is_help=False, rich_markup_mode=None)
app.add_typer(runs_app, name="runs")

# Piped or captured output has no width of its own: use a wide one rather than cut tables at 80.
# No markup or emoji codes: messages and tables echo user text ("a:b:" must not become an emoji).
out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, emoji=False, width=None if sys.stderr.isatty() else 200)
_debug = {"on": False}

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Root folder for run folders.")]
Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Override training.epochs.")]
LR = Annotated[Optional[float], typer.Option("--lr", help="Override training.learning_rate.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Override seed.")]
Sets = Annotated[Optional[List[str]], typer.Option("--set", help="Override any key: dotted.key=value (YAML value); repeatable.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the run folder's path (and errors).")]


def _version(value: bool):
    if value:
        out.print(f"backprop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
):
    """backprop: YAML-driven neural-network training with a NumPy engine you can check by hand."""
    _debug["on"] = debug


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cli_errors(fn):
    """Map core exceptions to `Error: ...` on stderr and an exit code; Ctrl-C/SIGTERM to 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:
            previous = None
        try:
            return fn(*args, **kwargs)
        except BackpropError as e:
            if _debug["on"]:
                raise
            err.print(f"Error: {e}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None
        except OSError as e:
            if _debug["on"]:
                raise
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"Error: {where}{e.strerror or e}", soft_wrap=True)
            raise typer.Exit(1) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


# -- helpers ------------------------------------------------------------------------------------


class guard_run:
    """Mark a run or study folder interrupted or failed if anything escapes while it is open."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self):
        return self.folder

    def __exit__(self, kind, value, tb):
        if kind is None:
            return False
        from backprop_cli.runs import mark_run, read_json

        try:
            status = read_json(self.folder / "summary.json").get("status") if (self.folder / "summary.json").exists() else None
        except BackpropError:
            status = None
        if status in (None, "running"):
            if issubclass(kind, KeyboardInterrupt):
                mark_run(self.folder, "interrupted")
            else:
                mark_run(self.folder, "failed", str(value))
        return False


def _load(config: Path, epochs=None, lr=None, seed=None, name=None, sets=None):
    from backprop_cli.config import load_config

    overrides = {
        "training.epochs": (epochs, "--epochs"),
        "training.learning_rate": (lr, "--lr"),
        "seed": (seed, "--seed"),
        "name": (name, "--name"),
    }
    return load_config(config, overrides, tuple(sets or ()))


def _load_data(cfg, config: Path):
    from backprop_cli.data import load_data
    from backprop_cli.initializers import random_streams

    return load_data(cfg, str(config), random_streams(cfg.seed)[0])


def fmt(x, digits: int = 6) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def sparkline(values, width: int = 48) -> str:
    """A one-line chart of a curve (log scale when it spans decades)."""
    import numpy as np

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ""
    if v.size > width:
        edges = np.linspace(0, v.size, width + 1).astype(int)
        v = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    if np.all(v > 0) and v.max() / v.min() > 10:
        v = np.log10(v)
    lo, hi = v.min(), v.max()
    blocks = "▁▂▃▄▅▆▇█"
    if hi == lo:
        return blocks[3] * v.size
    return "".join(blocks[int(round((x - lo) / (hi - lo) * 7))] for x in v)


class Reporter:
    """Progress for a training loop: a Rich bar on a terminal, plain lines otherwise.

    The loop calls it every epoch; it redraws at most every 0.1 s (plain lines: every 10%).
    """

    def __init__(self, total: int, start: int = 0, quiet: bool = False, label: str = "training"):
        self.total, self.start, self.quiet, self.label = total, start, quiet, label
        self.live = not quiet and out.is_terminal
        self.next_line = 0
        self.last = 0.0
        self.progress = None

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("epoch {task.fields[epoch]}/{task.fields[last]}"),
                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=out, transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=self.total, epoch=self.start, last=self.start + self.total, loss="-")
        return self

    def __call__(self, epoch, loss) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if self.live:
            if now - self.last >= 0.1 or epoch == self.start + self.total:
                self.last = now
                self.progress.update(self.task, completed=epoch - self.start, epoch=epoch, loss=_loss_text(loss))
        elif epoch - self.start >= self.next_line:
            out.print(f"epoch {epoch}/{self.start + self.total}  loss {_loss_text(loss)}")
            self.next_line += max(self.total // 10, 1)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)


def _loss_text(loss) -> str:
    values = [float(v) for v in loss]
    finite = [v for v in values if math.isfinite(v)]
    if len(values) == 1:
        return fmt(values[0], 6)
    return f"min {fmt(min(finite), 4)}" if finite else "nan"


def _parse_seeds(text: str) -> list:
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            seeds = list(range(int(a), int(b)))
        else:
            seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text}: expected START:STOP (e.g. 0:30) or a list like 1,2,3") from None
    if not seeds or min(seeds) < 0:
        raise UsageError(f"--seeds {text}: needs at least one seed, all >= 0")
    return seeds


# -- train --------------------------------------------------------------------------------------


@app.command()
@cli_errors
def train(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    epochs: Epochs = None,
    lr: LR = None,
    seed: Seed = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Override the run name.")] = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Train once per seed, batched: START:STOP or 1,2,3.")] = None,
    target: Annotated[Optional[float], typer.Option("--target", help="With --seeds: the loss that counts as reached.")] = None,
    from_run: Annotated[Optional[Path], typer.Option("--from", help="Start from this run's final weights.")] = None,
):
    """Train the network a config describes and write a run folder.

    Example: backprop train configs/xor.yaml --epochs 5000 --lr 0.5
    """
    cfg = _load(config, epochs, lr, seed, name, sets)
    if seeds is not None:
        return _train_seeds(cfg, config, _parse_seeds(seeds), runs_dir, quiet, target)
    data = _load_data(cfg, config)
    from backprop_cli.runs import finish_run, load_run, now_iso, start_run
    from backprop_cli.train import build_network
    from backprop_cli.train import train as run_training

    net = build_network(cfg)
    start_epoch, extra = 0, {}
    if from_run is not None:
        previous = load_run(from_run)
        if previous.net.sizes != net.sizes or previous.cfg.model.bias != cfg.model.bias:
            raise UsageError(f"--from {from_run}: its network {previous.net.sizes} does not match the config's {net.sizes}")
        start = previous.net.get_params(0)
        net.set_params(start)
        # the new run's config.yaml records its starting weights, so it reproduces on its own
        cfg.model.weights = [w.tolist() for w, _ in start]
        cfg.model.biases = [b.tolist() for _, b in start] if cfg.model.bias else None
        start_epoch = int(previous.summary.get("last_epoch", previous.summary.get("epochs_run", 0)) or 0)
        extra = {"started_from": str(from_run), "start_epoch": start_epoch}
    extra["started_at"] = now_iso()
    run = start_run(runs_dir, cfg, extra)
    with guard_run(run):
        with Reporter(cfg.training.epochs, start_epoch, quiet) as report:
            result = run_training(cfg, data, net, callback=report, start_epoch=start_epoch)
        warnings = finish_run(run, cfg, data, result, extra=extra)
    for w in warnings:
        err.print(f"Warning: {w}")
    _print_train_summary(cfg, data, result, run, quiet)
    status = result.status[0]
    if status == "diverged":
        err.print(
            f"Error: training diverged at epoch {result.diverged_at[0]} (learning rate {fmt(cfg.training.learning_rate)}): "
            f"the loss became non-finite; try a smaller --lr. History and last finite weights: {run}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if status == "interrupted":
        err.print(f"Interrupted after epoch {start_epoch + result.epochs_run[0]}; run saved as interrupted: {run}", soft_wrap=True)
        raise typer.Exit(130)


def _print_train_summary(cfg, data, result, run: Path, quiet: bool) -> None:
    if quiet:
        out.print(str(run), soft_wrap=True)
        return
    import numpy as np

    final = result.final("loss")
    out.print(f"final loss ({cfg.training.loss}): {fmt(final, 8)} after {result.epochs_run[0]} epochs "
              f"in {result.duration_s:.2f} s ({result.status[0]}, stopped by: {result.stop_reason[0]})")
    hist = result.history["loss"][: result.epochs_run[0], 0]
    if len(hist) > 1:
        scale = " (log scale)" if np.all(hist > 0) and hist.max() / hist.min() > 10 else ""
        out.print(f"loss curve{scale}: {sparkline(hist)}")
    if len(data.X) <= 20:
        pred = result.net.predict(data.X)[0]
        table = Table(title="predictions (final weights)")
        for name in data.feature_names:
            table.add_column(name, justify="right")
        n_out = data.Y.shape[1]
        for j in range(n_out):
            table.add_column("target" if n_out == 1 else f"target{j + 1}", justify="right")
        for j in range(n_out):
            table.add_column("output" if n_out == 1 else f"output{j + 1}", justify="right")
        if data.class_names:
            table.add_column("class", justify="left")
        X_show = data.X_raw if data.X_raw is not None else data.X
        for i in range(len(data.X)):
            cells = [fmt(float(v), 6) for v in X_show[i]] + [fmt(float(v), 6) for v in data.Y[i]] + [f"{v:.4f}" for v in pred[i]]
            if data.class_names:
                cells.append(str(_class_of(pred[i], data.class_names)))
            table.add_row(*cells)
        out.print(table)
    for column in result.history:
        if column != "loss":
            value = result.final(column)
            if value is not None:
                out.print(f"{column}: {fmt(value, 6)}")
    out.print(f"run folder: {run}", soft_wrap=True)


def _class_of(output, class_names):
    """The predicted class: its name where known, else its index (threshold 0.5 for one output)."""
    idx = int(output.argmax()) if len(output) > 1 else int(output[0] > 0.5)
    if class_names and idx < len(class_names):
        return class_names[idx]
    return idx


def _emit(text: str, output: Optional[Path], what: str) -> None:
    """Write text to stdout, or atomically to `output` and say so."""
    if output is None:
        sys.stdout.write(text)
        return
    from backprop_cli.runs import atomic_write

    atomic_write(output, text)
    out.print(f"wrote {what} to {output}", soft_wrap=True)


# -- predict ----------------------------------------------------------------------------------------


def _parse_row(text: str, n: int, what: str):
    """Split '0 1' or '0,1' into n finite floats; raise UsageError naming the problem."""
    parts = [p for p in text.replace(",", " ").split()]
    if len(parts) != n:
        raise UsageError(f"{what}: expected {n} value{'s' if n != 1 else ''}, got {len(parts)}")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise UsageError(f"{what}: '{p}' is not a number") from None
        if not math.isfinite(v):
            raise UsageError(f"{what}: '{p}' is not a finite number")
        values.append(v)
    return values


def _prediction_records(loaded, rows):
    import numpy as np

    X = np.asarray(rows, float).reshape(len(rows), loaded.net.sizes[0])
    Y = loaded.predict(X)
    classification = loaded.meta.get("classification", False)
    records = []
    for x, y in zip(X, Y):
        rec = {"input": x.tolist(), "output": y.tolist()}
        if classification:
            rec["class"] = _class_of(y, loaded.class_names)
        records.append(rec)
    return records


def _print_records(loaded, records, as_json: bool) -> None:
    import json

    if as_json:
        out.print(json.dumps(records), soft_wrap=True)
        return
    n_out = loaded.net.sizes[-1]
    table = Table()
    for name in loaded.feature_names:
        table.add_column(name, justify="right")
    for j in range(n_out):
        table.add_column("output" if n_out == 1 else f"output{j + 1}", justify="right")
    if records and "class" in records[0]:
        table.add_column("class")
    for rec in records:
        cells = [fmt(v, 6) for v in rec["input"]] + [f"{v:.4f}" for v in rec["output"]]
        if "class" in rec:
            cells.append(str(rec["class"]))
        table.add_row(*cells)
    out.print(table)


def _interactive(loaded) -> None:
    """Prompt for each input by name; a whole row at the first prompt works too. Ends at q or EOF."""
    names = loaded.feature_names
    n = len(names)
    stdin = sys.stdin
    while True:
        values = []
        while len(values) < n:
            prompt = f"{names[len(values)]}: "
            out.print(prompt, end="")
            sys.stdout.flush()
            line = stdin.readline()
            if not line:  # end of input
                out.print()
                return
            text = line.strip()
            if text.lower() in ("q", "quit", "exit"):
                return
            if not text:
                continue
            parts = text.replace(",", " ").split()
            try:
                if not values and len(parts) > 1:
                    values = _parse_row(text, n, "input")
                else:
                    values += _parse_row(text, 1, names[len(values)])
            except UsageError as e:
                err.print(f"{e} (try again, or q to quit)")
        rec = _prediction_records(loaded, [values])[0]
        outputs = ", ".join(f"{v:.4f}" for v in rec["output"])
        line = f"output{'s' if len(rec['output']) > 1 else ''}: {outputs}"
        if "class" in rec:
            line += f"  class: {rec['class']}"
        out.print(line)


@app.command()
@cli_errors
def predict(
    run: Annotated[Optional[Path], typer.Argument(help="Run folder; default: the latest completed run.")] = None,
    runs_dir: RunsDir = Path("runs"),
    inputs: Annotated[Optional[List[str]], typer.Option("--input", help="One input row, e.g. 0,1 (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Predict every row of this CSV file.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="With --csv: write the CSV here instead of stdout.")] = None,
    truth_table: Annotated[bool, typer.Option("--truth-table", help="Every 0/1 input combination (up to 8 inputs).")] = False,
):
    """Ask a trained network: at a prompt (default), for --input rows, a --csv file, or a --truth-table.

    Example: backprop predict runs/xor-20261123-200239 --input 0,1 --input 1,1
    """
    from backprop_cli.runs import latest_completed, load_run

    loaded = load_run(run if run is not None else latest_completed(runs_dir))
    n = loaded.net.sizes[0]
    if output is not None and csv_file is None:
        raise UsageError("--output goes with --csv")
    if truth_table:
        if n > 8:
            raise UsageError(f"--truth-table: the network has {n} inputs (at most 8)")
        import itertools

        rows = [list(map(float, bits)) for bits in itertools.product([0, 1], repeat=n)]
        _print_records(loaded, _prediction_records(loaded, rows), as_json)
    elif inputs:
        rows = [_parse_row(text, n, f"--input {text}") for text in inputs]
        _print_records(loaded, _prediction_records(loaded, rows), as_json)
    elif csv_file is not None:
        from backprop_cli.data import read_inputs_csv

        records = _prediction_records(loaded, read_inputs_csv(csv_file, loaded.feature_names).tolist())
        if as_json:
            _print_records(loaded, records, True)
            return
        n_out = loaded.net.sizes[-1]
        header = list(loaded.feature_names) + (["output"] if n_out == 1 else [f"output{j + 1}" for j in range(n_out)])
        if records and "class" in records[0]:
            header.append("class")
        lines = [",".join(header)]
        for rec in records:
            cells = [repr(v) for v in rec["input"]] + [repr(v) for v in rec["output"]]
            if "class" in rec:
                cells.append(str(rec["class"]))
            lines.append(",".join(cells))
        _emit("\n".join(lines) + "\n", output, f"{len(records)} predictions")
    else:
        out.print(f"{loaded.path}: type {n} input value{'s' if n != 1 else ''} (q or Ctrl-D to quit)")
        _interactive(loaded)


# -- sweeps and seed studies -----------------------------------------------------------------------


def _parse_rates(lrs: Optional[str], log_range: Optional[str], cfg) -> list:
    from backprop_cli.config import DEFAULT_SWEEP_RATES

    if lrs is not None and log_range is not None:
        raise UsageError("give --lrs or --log-range, not both")
    if log_range is not None:
        parts = log_range.split(":")
        try:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
            if len(parts) != 3:
                raise ValueError
        except (ValueError, IndexError):
            raise UsageError(f"--log-range {log_range}: expected MIN:MAX:N, e.g. 0.01:10:7") from None
        if not (0 < lo <= hi and math.isfinite(hi)) or n < 1:
            raise UsageError(f"--log-range {log_range}: needs 0 < MIN <= MAX and N >= 1")
        return [lo * (hi / lo) ** (i / (n - 1)) if n > 1 else lo for i in range(n)]
    if lrs is not None:
        try:
            rates = [float(x) for x in lrs.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--lrs {lrs}: expected numbers separated by commas, e.g. 0.1,0.5,1") from None
        if not rates:
            raise UsageError("--lrs: the list of learning rates is empty")
        bad = [r for r in rates if not (math.isfinite(r) and r > 0)]
        if bad:
            raise UsageError(f"--lrs {lrs}: every learning rate must be finite and > 0 (got {bad[0]:g})")
        return rates
    if cfg.sweep is not None:
        return list(cfg.sweep.learning_rates)
    return list(DEFAULT_SWEEP_RATES)


def _study_table(entries, label: str, target: float) -> Table:
    """One row per model: value, final and best loss, first epoch at the target, status."""
    completed = [e for e in entries if e.status == "completed" and e.final_loss() is not None]
    best = min(completed, key=lambda e: e.final_loss()) if completed else None
    table = Table(title=f"by {label} (target loss {target:g}; best final loss in green)")
    for col in (label, "final loss", "best loss", "epochs to target", "status"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for e in entries:
        table.add_row(f"{e.value:g}", fmt(e.final_loss(), 8), fmt(e.best_loss(), 8), str(e.epochs_to(target) or "-"),
                      e.status, style="bold green" if e is best else None)
    return table


def _weights_table(entries, label: str, names, data) -> Table:
    """Final weights (and final outputs for at most 4 samples) per model: the classic table."""
    table = Table(title="final weights" + (" and outputs" if len(data.X) <= 4 else ""))
    table.add_column(label, justify="right")
    for name in names:
        table.add_column(name, justify="right")
    outputs = len(data.X) <= 4
    if outputs:
        for i in range(len(data.X)):
            for j in range(data.Y.shape[1]):
                table.add_column(f"out{j + 1}" if len(data.X) == 1 else f"s{i + 1}.out{j + 1}", justify="right")
    for e in entries:
        cells = [f"{e.value:g}"] + [fmt(float(v), 6) for v in e.params()]
        if outputs:
            cells += [fmt(float(v), 6) for v in e.result.net.predict(data.X, e.model).ravel()]
        table.add_row(*cells)
    return table


def _study_target(cfg, target: Optional[float]) -> float:
    """--target, else sweep.target from the config, else 0.01; finite and > 0."""
    if target is None:
        return cfg.sweep.target if cfg.sweep else 0.01
    if not (math.isfinite(target) and target > 0):
        raise UsageError(f"--target {target:g}: must be finite and > 0")
    return target


def _start_study(cfg, runs_dir: Path, suffix: str) -> Path:
    from backprop_cli.runs import create_run_dir

    return create_run_dir(runs_dir, f"{cfg.name}-{suffix}")


def _save_study(folder: Path, kind: str, label: str, cfg, data, entries, target: float, names, per_model: bool, extra) -> None:
    """Write a sweep or seed-study folder (marked failed if that fails) and show any warnings."""
    from backprop_cli.runs import write_study

    with guard_run(folder):
        warnings = write_study(folder, kind, label, cfg, data, entries, target, names, per_model, extra)
    for w in warnings:
        err.print(f"Warning: {w}")


@app.command("sweep-lr")
@cli_errors
def sweep_lr(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    lrs: Annotated[Optional[str], typer.Option("--lrs", help="Comma-separated learning rates.")] = None,
    log_range: Annotated[Optional[str], typer.Option("--log-range", help="MIN:MAX:N log-spaced rates.")] = None,
    target: Annotated[Optional[float], typer.Option("--target", help="Loss that counts as reached (default: sweep.target or 0.01).")] = None,
    chain: Annotated[bool, typer.Option("--chain", help="Continue each rate from the previous rate's final weights.")] = False,
    epochs: Epochs = None,
    seed: Seed = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Quiet = False,
    sets: Sets = None,
):
    """Compare learning rates: all train together from identical initial weights.

    Example: backprop sweep-lr configs/worked_example.yaml --lrs 0.1,0.2,0.5,0.8,1.0,2.0
    """
    cfg = _load(config, epochs, None, seed, None, sets)
    rates = _parse_rates(lrs, log_range, cfg)
    target = _study_target(cfg, target)
    data = _load_data(cfg, config)
    from backprop_cli.network import Network
    from backprop_cli.runs import now_iso
    from backprop_cli.sweep import sweep_learning_rates

    started = now_iso()
    folder = _start_study(cfg, runs_dir, "chain" if chain else "sweep")
    total = cfg.training.epochs * (len(rates) if chain else 1)
    with guard_run(folder), Reporter(total, 0, quiet, label="sweep") as report:
        entries = sweep_learning_rates(cfg, data, rates, chain=chain, callback=report)
    names = [p[0] for p in Network(cfg.model.layers, cfg.activations, cfg.model.bias).param_names()]
    extra = {"protocol": "chain" if chain else "batched", "learning_rates": rates, "started_at": started}
    _save_study(folder, "sweep", "learning_rate", cfg, data, entries, target, names, True, extra)
    if quiet:
        out.print(str(folder), soft_wrap=True)
    else:
        out.print(_study_table(entries, "learning_rate", target))
        if len(names) <= 16:
            out.print(_weights_table(entries, "learning_rate", names, data))
        out.print(f"sweep folder: {folder}", soft_wrap=True)
    statuses = [e.status for e in entries]
    if "interrupted" in statuses:
        raise typer.Exit(130)
    if "completed" not in statuses:
        err.print("Error: every learning rate diverged")
        raise typer.Exit(1)


def _train_seeds(cfg, config: Path, seeds: list, runs_dir: Path, quiet: bool, target: Optional[float]):
    import numpy as np

    from backprop_cli.runs import now_iso
    from backprop_cli.sweep import seed_study

    target = _study_target(cfg, target)
    data = _load_data(cfg, config)
    started = now_iso()
    folder = _start_study(cfg, runs_dir, "seeds")
    with guard_run(folder), Reporter(cfg.training.epochs, 0, quiet, label=f"{len(seeds)} seeds") as report:
        entries = seed_study(cfg, data, seeds, callback=report)
    reached = [e.epochs_to(target) for e in entries]
    hits = [r for r in reached if r is not None]
    extra = {
        "seeds": seeds, "started_at": started, "reached_target": len(hits),
        "median_epochs_to_target": float(np.median(hits)) if hits else None,
    }
    _save_study(folder, "seeds", "seed", cfg, data, entries, target, [], False, extra)
    if quiet:
        out.print(str(folder), soft_wrap=True)
    else:
        out.print(_study_table(entries, "seed", target))
        median = f"{np.median(hits):g}" if hits else "-"
        out.print(f"{len(hits)} of {len(seeds)} seeds reached loss {target:g} (median epochs to reach it: {median})")
        out.print(f"seeds folder: {folder}", soft_wrap=True)
    if any(e.status == "interrupted" for e in entries):
        raise typer.Exit(130)


# -- gradcheck and explain -----------------------------------------------------------------------


@app.command()
@cli_errors
def gradcheck(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    epochs: Annotated[int, typer.Option("--epochs", help="Also check after this many training epochs.")] = 0,
    epsilon: Annotated[Optional[float], typer.Option("--epsilon", help="Finite-difference step h (default 1e-4 for five-point, 1e-6 for central).")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Largest relative error that passes.")] = 1e-6,
    method: Annotated[str, typer.Option("--method", help="five-point (error O(h^4)) or central (the classic (L(w+h) - L(w-h)) / 2h).")] = "five-point",
    sets: Sets = None,
):
    """Compare backprop's gradient of every weight and bias with central finite differences.

    Relative error = |analytic - numeric| / max(|analytic|, |numeric|, floor), where the floor
    (10 * 2.2e-16 * max(|loss|, 1) / h / threshold) keeps gradients below the finite differences'
    round-off from failing spuriously. Exit 0 on pass, 1 on fail.

    Example: backprop gradcheck configs/xor.yaml --epochs 100
    """
    if epochs < 0:
        raise UsageError(f"--epochs {epochs}: must be >= 0")
    if method not in ("five-point", "central"):
        raise UsageError(f"--method {method}: expected five-point or central")
    if (epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon))) or not (threshold > 0 and math.isfinite(threshold)):
        raise UsageError("--epsilon and --threshold must be finite and > 0")
    cfg = _load(config, sets=sets)
    data = _load_data(cfg, config)
    from backprop_cli.inspect_step import gradcheck as check

    reports = check(cfg, data, epochs, epsilon, threshold, method.replace("-", "_"))
    for rep in reports:
        where = "at the initial weights" if rep.epoch == 0 else f"after {rep.epoch} epochs"
        table = Table(title=f"gradient check {where} (loss {fmt(rep.loss, 8)}, {method} differences, threshold {threshold:g})")
        for col in ("layer", "parameters", "max abs error", "max rel error", "worst", "result"):
            table.add_column(col, justify="right" if col not in ("worst", "result") else "left")
        for layer in rep.layers:
            table.add_row(str(layer.layer), str(layer.n_params), f"{layer.max_abs:.3e}", f"{layer.max_rel:.3e}", layer.worst,
                          "pass" if layer.passed else "FAIL", style=None if layer.passed else "bold red")
        out.print(table)
    if all(rep.passed for rep in reports):
        out.print("gradient check passed")
    else:
        err.print("Error: gradient check failed: analytic and numerical gradients disagree")
        raise typer.Exit(1)


def _render_sections(sections, fmt_name: str) -> str:
    import csv as csvmod
    import io

    buf = io.StringIO()
    for s in sections:
        if fmt_name == "markdown":
            buf.write(f"### {s.title}\n\n| " + " | ".join(s.headers) + " |\n|" + "---|" * len(s.headers) + "\n")
            for row in s.rows:
                buf.write("| " + " | ".join(row) + " |\n")
            buf.write(f"\n{s.note}\n\n" if s.note else "\n")
        else:
            writer = csvmod.writer(buf, lineterminator="\n")
            writer.writerow(["section"] + s.headers)
            for row in s.rows:
                writer.writerow([s.title] + row)
            buf.write("\n")
    return buf.getvalue()


@app.command()
@cli_errors
def explain(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    epoch: Annotated[int, typer.Option("--epoch", help="Which training step to explain (1 = the first).")] = 1,
    sample: Annotated[int, typer.Option("--sample", help="Which sample's neuron values to show (1-based).")] = 1,
    out_format: Annotated[Optional[str], typer.Option("--format", help="markdown or csv (with --output).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Write the tables to this file.")] = None,
    diagram: Annotated[Optional[Path], typer.Option("--diagram", help="Draw the network with this step's weights (PNG).")] = None,
    sets: Sets = None,
):
    """Show one training step by hand: forward pass, loss, deltas, gradients and the update.

    Example: backprop explain configs/worked_example.yaml --format markdown --output step1.md
    """
    if out_format is not None and out_format not in ("markdown", "csv"):
        raise UsageError(f"--format {out_format}: expected markdown or csv")
    if output is not None and out_format is None:
        out_format = "csv" if output.suffix == ".csv" else "markdown"
    if epoch < 1:
        raise UsageError(f"--epoch {epoch}: must be >= 1")
    cfg = _load(config, sets=sets)
    data = _load_data(cfg, config)
    if not 1 <= sample <= len(data.X):
        raise UsageError(f"--sample {sample}: must be between 1 and {len(data.X)} (the training samples)")
    from backprop_cli.inspect_step import explain_step

    sections, weights, result = explain_step(cfg, data, epoch, sample)
    if sections is None:
        raise UsageError(f"--epoch {epoch}: training {result.status[0]} at epoch {result.diverged_at[0] or result.epochs_run[0]} before that step")
    if out_format is not None:
        _emit(_render_sections(sections, out_format), output, f"epoch {epoch}'s step")
    else:
        if cfg.training.batch_size:
            out.print("note: explain shows a full-batch step (training.batch_size is ignored here)")
        for s in sections:
            table = Table(title=f"epoch {epoch}: {s.title}", title_justify="left")
            for h in s.headers:
                table.add_column(h, justify="left" if h in ("layer", "neuron", "parameter", "connects") else "right")
            for row in s.rows:
                table.add_row(*row)
            out.print(table)
            if s.note:
                out.print(s.note)
    if diagram is not None:
        from backprop_cli import plots
        from backprop_cli.runs import atomic_write

        if sum(cfg.model.layers) > 32:
            raise UsageError(f"--diagram: the network has {sum(cfg.model.layers)} neurons (at most 32 can be drawn)")
        atomic_write(diagram, plots.network_diagram(cfg.model.layers, weights[0], f"{cfg.name}: weights used in epoch {epoch}"))
        out.print(f"wrote {diagram}")


# -- validate, schema, init -----------------------------------------------------------------------


@app.command()
@cli_errors
def validate(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    sets: Sets = None,
):
    """Check a config and its data fully, without training (exit 0 or 2).

    Example: backprop validate configs/xor.yaml
    """
    cfg = _load(config, sets=sets)
    data = _load_data(cfg, config)
    from backprop_cli.network import Network

    n_params = Network(cfg.model.layers, cfg.activations, cfg.model.bias).n_params
    shape = "-".join(map(str, cfg.model.layers))
    val = f", {len(data.X_val)} validation" if data.X_val is not None else ""
    out.print(
        f"{config}: OK: {shape} network ({'/'.join(dict.fromkeys(cfg.activations))}), {n_params} parameters, "
        f"loss {cfg.training.loss}, {len(data.X)} training samples{val}",
        soft_wrap=True,
    )


@app.command()
@cli_errors
def schema():
    """Print the JSON Schema of the config file (for editor completion).

    Example: backprop schema > backprop.schema.json
    """
    import json

    from backprop_cli.config import json_schema

    out.print_json(json.dumps(json_schema()))


TEMPLATES = ("xor", "classification", "regression")


@app.command()
@cli_errors
def init(
    path: Annotated[Optional[Path], typer.Argument(help="Where to write the config (default: <template>.yaml).")] = None,
    template: Annotated[str, typer.Option("--template", "-t", help="xor, classification or regression.")] = "xor",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
):
    """Write a commented starting config.

    Example: backprop init --template classification my_classifier.yaml
    """
    if template not in TEMPLATES:
        raise UsageError(f"--template {template}: expected one of {', '.join(TEMPLATES)}")
    path = path or Path(f"{template}.yaml")
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists (use --force to overwrite)")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder")
    from backprop_cli.runs import atomic_write

    text = (Path(__file__).parent / "templates" / f"{template}.yaml").read_text(encoding="utf-8")
    atomic_write(path, text)
    out.print(f"wrote {path}; train it with: backprop train {path}", soft_wrap=True)


# -- runs ---------------------------------------------------------------------------------------------


@runs_app.callback(invoke_without_command=True)
@cli_errors
def runs_list(ctx: typer.Context, runs_dir: RunsDir = Path("runs")):
    """List runs, newest first (name, date, status, epochs, final loss, accuracy, learning rate).

    Example: backprop runs --runs-dir runs
    """
    if ctx.invoked_subcommand is not None:
        return
    from backprop_cli.runs import list_runs

    found = list_runs(runs_dir, studies=True)
    if not found:
        out.print(f"no runs under {runs_dir}")
        return
    table = Table(title=f"runs in {runs_dir}")
    for col in ("run", "date", "status", "epochs", "final loss", "accuracy", "learning rate"):
        table.add_column(col, justify="left" if col in ("run", "date", "status") else "right")
    for path, s in found:
        if "kind" in s:  # a sweep or seed study
            losses = [m.get("final_loss") for m in s.get("models", []) if m.get("final_loss") is not None]
            rates = s.get("learning_rates")
            table.add_row(f"{path.name} ({s['kind']})", (s.get("started_at") or "")[:19].replace("T", " "), s.get("status", "?"),
                          "", f"best {fmt(min(losses), 6)}" if losses else "-", "",
                          f"{len(rates)} rates" if rates else "")
            continue
        table.add_row(path.name, (s.get("started_at") or "")[:19].replace("T", " "), s.get("status", "?"),
                      str(s.get("last_epoch", s.get("epochs_run", ""))), fmt(s.get("final_loss"), 6),
                      fmt(s.get("accuracy"), 4) if s.get("accuracy") is not None else "-", fmt(s.get("learning_rate"), 6))
    out.print(table)


def _resolve_run(run: Path, runs_dir: Path) -> Path:
    """A run given as a path, or as a folder name under the runs root."""
    if run.exists() or run.is_absolute():
        return run
    candidate = runs_dir / run
    return candidate if candidate.exists() else run


@runs_app.command("show")
@cli_errors
def runs_show(
    run: Annotated[Path, typer.Argument(help="Run folder (or its name under --runs-dir).")],
    runs_dir: RunsDir = Path("runs"),
):
    """Print a run's summary and config.

    Example: backprop runs show runs/xor-20261123-200239
    """
    from backprop_cli.runs import read_json

    path = _resolve_run(run, runs_dir)
    if not (path / "summary.json").exists():
        raise UsageError(f"{path}: not a run folder (no summary.json)")
    summary = read_json(path / "summary.json")
    table = Table(title=str(path), show_header=False)
    table.add_column("key")
    table.add_column("value")

    def pairs(d: dict, prefix: str = ""):
        # nested dicts (versions.blas) as dotted keys: "blas.name scipy-openblas"
        for k, v in d.items():
            yield from pairs(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k} {'-' if v is None else v}"]

    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(pairs(value))
        elif isinstance(value, list):
            value = f"{len(value)} entries" if value and isinstance(value[0], dict) else ", ".join(map(str, value))
        table.add_row(key, fmt(value, 10) if isinstance(value, float) else str(value))
    out.print(table)
    if (path / "config.yaml").exists():
        out.print("config.yaml:")
        out.print((path / "config.yaml").read_text(encoding="utf-8"), end="")


@runs_app.command("compare")
@cli_errors
def runs_compare(
    runs: Annotated[List[Path], typer.Argument(help="Two or more run folders.")],
    runs_dir: RunsDir = Path("runs"),
    output: Annotated[Optional[Path], typer.Option("--output", help="Where to write the plot (default: <runs-dir>/compare-<time>.png).")] = None,
):
    """Put runs' summaries side by side and plot their loss curves on one axis.

    Example: backprop runs compare runs/xor-20261123-200239 runs/xor_3hidden-20261123-200301
    """
    import csv as csvmod
    from datetime import datetime

    import numpy as np

    from backprop_cli import plots
    from backprop_cli.runs import atomic_write, read_json

    if len(runs) < 2:
        raise UsageError("runs compare: give at least two run folders")
    paths = [_resolve_run(r, runs_dir) for r in runs]
    summaries, curves = [], {}
    for path in paths:
        if not (path / "summary.json").exists() or not (path / "history.csv").exists():
            raise UsageError(f"{path}: not a run folder (no summary.json and history.csv)")
        summaries.append(read_json(path / "summary.json"))
        with open(path / "history.csv", newline="") as f:
            rows = list(csvmod.DictReader(f))
        if rows and "loss" in rows[0]:
            epochs = np.array([int(r["epoch"]) for r in rows])
            curves[path.name] = (epochs, np.array([float(r["loss"]) if r["loss"] else np.nan for r in rows]))
    keys = ["status", "stop_reason", "last_epoch", "final_loss", "best_loss", "accuracy", "val_loss", "val_accuracy",
            "learning_rate", "seed", "duration_s"]
    table = Table(title="run comparison")
    table.add_column("")
    for path in paths:
        table.add_column(path.name, justify="right")
    for key in keys:
        values = [s.get(key) for s in summaries]
        if all(v is None for v in values):
            continue
        table.add_row(key, *[fmt(v, 8) if isinstance(v, float) else ("-" if v is None else str(v)) for v in values])
    out.print(table)
    if curves:
        output = output or Path(runs_dir) / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}.png"
        longest = max((e for e, _ in curves.values()), key=len)
        padded = {name: np.interp(longest, e, v, right=np.nan) if len(e) != len(longest) else v for name, (e, v) in curves.items()}
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(output, plots.loss_plot(longest, padded, "loss curves"))
            out.print(f"plot: {output}", soft_wrap=True)
        except OSError as e:
            err.print(f"Warning: {output}: plot not written: {e.strerror}")


def main() -> None:
    app(prog_name="backprop")
