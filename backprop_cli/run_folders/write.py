"""Writing run folders: create them uniquely, write their files atomically, summary.json last,
and mark a run that something stopped outside the loop."""

from __future__ import annotations

import io
import json
import math
import os
import platform
import shutil
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional, Union

import numpy as np

from backprop_cli import __version__
from backprop_cli.checkpoint import Checkpoint
from backprop_cli.config import Config, config_to_yaml
from backprop_cli.data import Dataset
from backprop_cli.errors import BackpropError, ConfigError, OutputError, RunError
from backprop_cli.files import atomic_write, read_json, write_json
from backprop_cli.network import Network
from backprop_cli.painter import Job, Painter
from backprop_cli.run_folders.read import (
    CHECKPOINT_ARRAYS,
    CHECKPOINT_META,
    LoadedRun,
    csv_text,
    load_run,
    read_checkpoint,
)
from backprop_cli.training import TrainResult, evaluate

if TYPE_CHECKING:
    from backprop_cli.animation import Snapshots


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Defer Ctrl-C and SIGTERM while a run's files are saved, then deliver them."""
    pending = []

    def handler(signum: int, frame: Any) -> None:
        pending.append(signum)

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            raise KeyboardInterrupt


def process() -> dict[str, Any]:
    """Which process is writing a run: a `running` run whose process is gone is stale."""
    return {"pid": os.getpid(), "host": platform.node()}


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def iso(seconds: float) -> str:
    """Unix seconds as now_iso writes a time (local time zone, whole seconds)."""
    return datetime.fromtimestamp(seconds, timezone.utc).astimezone().isoformat(timespec="seconds")


def versions() -> dict:
    """Package versions, and NumPy's BLAS: matrix products round differently under different BLAS
    kernels, so bit-identical reruns need the same library and OPENBLAS_CORETYPE."""
    blas: dict[str, Optional[str]] = {"name": None, "version": None}
    try:
        built = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = {"name": built.get("name"), "version": built.get("version")}
    except (TypeError, KeyError, AttributeError):  # NumPy < 1.26 has no mode="dicts": not recorded
        pass
    blas["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    return {"backprop": __version__, "numpy": np.__version__, "python": platform.python_version(), "blas": blas}


MAX_NAME = 100  # characters of a run or study name: a folder name adds a time stamp to it


def safe_name(name: str) -> str:
    """A run or study name as its folder is named: letters, digits, '-', '_' and '.' kept,
    anything else '_', and no leading dot (no hidden folders): the one rule, for creating
    folders and for finding them again. A name over MAX_NAME characters is a ConfigError."""
    if len(name) > MAX_NAME:
        raise ConfigError(f"--name {name[:20]}...: {len(name)} characters; at most {MAX_NAME}")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"
    return "_" + safe[1:] if safe.startswith(".") else safe


def create_run_dir(root: Path, name: str) -> Path:
    """Make a new, never reused folder root/<name>-<YYYYmmdd-HHMMSS>[-N]."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{root}: cannot create the runs folder: {e.strerror}") from None
    if not root.is_dir():
        raise RunError(f"{root}: the runs root is not a folder")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = safe_name(name)
    for n in range(1, 10000):
        path = root / (f"{safe}-{stamp}" if n == 1 else f"{safe}-{stamp}-{n}")
        try:
            path.mkdir()  # fails if it exists: two runs in the same second get different names
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise RunError(f"{root}: cannot create a run folder: {e.strerror}") from None
    raise RunError(f"{root}: too many runs named {safe}-{stamp}")


# -- writing ----------------------------------------------------------------------------------


def number(x: Optional[float]) -> str:
    """A float at full precision (repr round-trips); empty for None and NaN."""
    if x is None or math.isnan(float(x)):
        return ""
    return repr(float(x))


def numbers(values: np.ndarray) -> list[str]:
    """`number` of every value of a column, without a Python call per value (a sweep's history
    holds hundreds of thousands)."""
    return ["" if text == "nan" else text for text in map(repr, values.tolist())]


def history_csv(epochs: np.ndarray, columns: dict, model: int = 0) -> str:
    names = list(columns)
    cells = [numbers(columns[c][: len(epochs), model]) for c in names]
    return csv_text([["epoch"] + names, *zip(epochs.tolist(), *cells)])


def weights_json(net: Network, model: int = 0) -> str:
    layers = [{"weights": w.tolist(), "biases": None if b is None else b.tolist()} for w, b in net.get_params(model)]
    return json.dumps({"layers": layers}, indent=1) + "\n"


def finite_or_none(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else x


def start_run(root: Path, cfg: Config, extra: Optional[dict] = None) -> Path:
    """Create the folder and write config.yaml and a summary with status `running`."""
    run = create_run_dir(root, cfg.name or "run")
    try:
        write_config(run, cfg)
        running = {"name": cfg.name, "status": "running", "started_at": now_iso(), **process()}
        write_json(run / "summary.json", {**running, **(extra or {})})
    except OSError as e:  # a full disk: a folder of config.yaml alone would be listed corrupt
        shutil.rmtree(run, ignore_errors=True)
        raise RunError(f"{run}: cannot write: {e.strerror} (nothing was kept)") from None
    return run


def write_config(run: Path, cfg: Config) -> None:
    """config.yaml: the config as resolved (again at the end of a live run, with its rate
    changes as training.lr_changes, so the folder reproduces what ran)."""
    atomic_write(run / "config.yaml", config_to_yaml(cfg))


LIVE_FILE = "live.json"  # while a run trains with --live: its page's address (owner-only)


def mark_live(run: Path, url: Optional[str]) -> None:
    """Record (or, with None, remove) the address of a run's live page, for `serve` to link."""
    path = run / LIVE_FILE
    if url is None:
        path.unlink(missing_ok=True)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "pid": os.getpid()}, f)


def record_failure(run: Path, summary: dict, error: str) -> None:
    """Mark a run that could not write its files `failed`, with the reason. On a full disk the
    summary may not fit: then the run's partial files go (its config stays) to make room, and
    when even that summary cannot be written, the folder goes: never one that says `running`."""
    summary.update(status="failed", error=error)
    try:
        write_json(run / "summary.json", summary)
        return
    except OSError:
        pass
    for path in run.iterdir():
        if path.name not in ("config.yaml", "summary.json") and path.is_file():
            path.unlink(missing_ok=True)
    try:
        write_json(run / "summary.json", summary)
    except OSError:
        shutil.rmtree(run, ignore_errors=True)


@dataclass
class Continuation:
    """Where a run continued with `--from` starts: the epoch its history goes on from, the
    checkpoint to resume (None: from the weights alone), what its summary records about its
    origin, and a warning saying what starts afresh (None: nothing)."""

    start_epoch: int
    checkpoint: Optional[Checkpoint]
    extra: dict
    warning: Optional[str]


def continue_from(path: Path, cfg: Config, net: Network) -> Continuation:
    """Start `net` (and the config's recorded initial weights) where a run stopped.

    With the run's checkpoint (checkpoint.json and .npz), the continuation is exact: the
    weights after its last epoch, the optimizer's state, the batch order and early stopping's
    state go on. Without one (an older run folder, or one cut short mid-epoch), it starts from
    the saved weights, and the warning says what restarts.
    """
    previous = load_run(path)
    if previous.net.sizes != net.sizes or previous.cfg.model.bias != cfg.model.bias:
        raise ConfigError(
            f"{path}: cannot continue from this run: its network {previous.net.sizes} "
            f"does not match the config's {net.sizes}"
        )
    start_epoch = int(previous.summary.get("last_epoch", previous.summary.get("epochs_run", 0)) or 0)
    saved = read_checkpoint(previous.path, net.n_params)
    fresh = _restarts(cfg, previous, saved)
    if saved is not None:
        if saved.optimizer != cfg.training.optimizer:
            saved.moments, saved.step = {}, 0
        else:
            from backprop_cli.training import make_optimizer

            expected = set(make_optimizer(cfg.training, (1, 1), np.dtype("float64")).moments())
            if set(saved.moments) != expected:
                raise RunError(
                    f"{previous.path / CHECKPOINT_ARRAYS}: corrupt checkpoint: optimizer state "
                    f"{sorted(saved.moments)}, {saved.optimizer} keeps {sorted(expected)}"
                )
        net.theta[0] = saved.theta
        start_epoch = saved.epoch
    else:
        net.set_params(previous.net.get_params(0))
    start = net.get_params(0)
    # the new run's config.yaml records its starting weights, so it reproduces on its own
    cfg.model.weights = [w.tolist() for w, _ in start]
    cfg.model.init_from = None
    cfg.model.biases = [b.tolist() for _, b in start if b is not None] if cfg.model.bias else None
    extra: dict[str, Any] = {"started_from": str(previous.path), "start_epoch": start_epoch}
    restored = previous.summary.get("saved_weights", {}).get("weights") == "restored"
    exact = not fresh and (saved is not None or not restored)
    extra["continued"] = "exactly" if exact else f"afresh: {', '.join(fresh) or 'the last weights'}"
    warning = None
    if saved is None and (fresh or restored):
        origin = "weights.json (the best epoch's weights, restored)" if restored else "weights.json"
        warning = f"{previous.path}: has no checkpoint (an older run folder, or one cut short mid-epoch): "
        warning += f"continuing from {origin}" + (f", with {_and(fresh)} starting afresh" if fresh else "")
    elif fresh:
        warning = f"{previous.path}: trained otherwise: continuing with {_and(fresh)} starting afresh"
    return Continuation(start_epoch, saved, extra, warning)


def _restarts(cfg: Config, previous: LoadedRun, saved: Optional[Checkpoint]) -> list[str]:
    """What a continuation of `previous` under `cfg` cannot carry over and starts afresh."""
    t = cfg.training
    fresh = []
    if saved is None:
        fresh.append(f"the {t.optimizer} optimizer's state" if t.optimizer != "sgd" else "")
    elif saved.optimizer != t.optimizer:
        fresh.append(f"the optimizer ({saved.optimizer} before, {t.optimizer} now; {saved.optimizer}'s state dropped)")
    if saved is None and t.batch_size:
        fresh.append("the minibatch order")
    if t.early_stopping is not None and (saved is None or saved.monitor != t.early_stopping.monitor):
        fresh.append("early stopping's patience and best value")
    return [f for f in fresh if f]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def write_checkpoint(run: Path, checkpoint: Checkpoint) -> None:
    """checkpoint.npz (the arrays) and checkpoint.json (the rest), each atomically."""
    buf = io.BytesIO()
    np.savez(buf, **checkpoint.arrays())  # type: ignore[arg-type]  # (NumPy's stub reads a name as allow_pickle)
    atomic_write(run / CHECKPOINT_ARRAYS, buf.getvalue())
    write_json(run / CHECKPOINT_META, checkpoint.meta())


def saved_weights(cfg: Config, data: Dataset, result: TrainResult, model: int, last_epoch: int) -> dict:
    """What weights.json holds, and its own loss and metrics: the final weights (after the last
    epoch's update) or, with restore_best, the weights that the best epoch started from."""
    restored = result.restored_epoch[model] if result.restored_epoch else None
    numbers = {k: finite_or_none(v) for k, v in evaluate(result.net, data, cfg.training.loss, model).items()}
    if restored is not None:
        return {"weights": "restored", "epoch": restored, **numbers}
    return {"weights": "final", "epoch": last_epoch, **numbers}


def summary_for(
    cfg: Config,
    data: Dataset,
    result: TrainResult,
    model: int,
    learning_rate: Union[float, list[float]],
    seed: int,
    extra: Optional[dict] = None,
) -> dict:
    summary = {
        "name": cfg.name,
        "status": result.status[model],
        "stop_reason": result.stop_reason[model],
        "epochs_run": result.epochs_run[model],
        "final_loss": finite_or_none(result.final("loss", model)),
        "best_loss": finite_or_none(result.best("loss", model)),
        "learning_rate": learning_rate,
        "seed": seed,
        "duration_s": round(result.duration_s, 6),
    }
    for column in result.history:
        if column != "loss":
            summary[column] = finite_or_none(result.final(column, model))
    if result.diverged_at[model] is not None:
        summary["diverged_at_epoch"] = result.diverged_at[model]
    if result.stop_reason[model] == "early_stopping" or result.best_epoch[model]:
        summary["best_epoch"] = result.best_epoch[model]
    summary["last_epoch"] = int(result.epochs[0] - 1 + result.epochs_run[model]) if len(result.epochs) else 0
    if cfg.training.lr_changes:
        changes = sorted(cfg.training.lr_changes.items())
        summary["lr_changes"] = [{"epoch": e, "learning_rate": r} for e, r in changes]
    summary["saved_weights"] = saved_weights(cfg, data, result, model, summary["last_epoch"])
    summary.update(extra or {})
    summary["versions"] = versions()
    return summary


def finish_run(
    run: Path,
    cfg: Config,
    data: Dataset,
    result: TrainResult,
    model: int = 0,
    learning_rate: Optional[Union[float, list[float]]] = None,
    extra: Optional[dict] = None,
    painter: Optional[Painter] = None,
    plots: bool = True,
    snapshots: Optional[Snapshots] = None,
) -> tuple[dict, list]:
    """Write history, weights, data.json and (with `plots`) the plots, then summary.json last.

    `painter` draws the plots (default: here, in this process), and with `snapshots` (taken
    during training) training.gif. Returns the summary and warnings (a plot that failed is a
    warning, not a lost run).
    """
    lr = cfg.training.learning_rate if learning_rate is None else learning_rate
    summary = summary_for(cfg, data, result, model, lr, cfg.seed, extra)
    summary.setdefault("started_at", now_iso())
    summary.setdefault("finished_at", now_iso())
    with no_interrupts():
        jobs = plot_jobs(run, cfg, data, result, model) if plots else []
        if result.diagnostics is not None:
            from backprop_cli.run_folders.diagnosed import write_diagnostics

            diagnosis_jobs, summary["diagnostics"] = write_diagnostics(run, cfg, result, model, lr)
            jobs += diagnosis_jobs if plots else []
        if snapshots is not None:
            from backprop_cli.animation import gif_job

            jobs.append(
                gif_job(run / "training.gif", run.name, result, data, snapshots, summary["saved_weights"].get("loss"))
            )
        # the plots are drawn (by the painter's worker) while the files are written
        drawer = painter or Painter(background=False)
        drawer.submit(jobs)
        try:
            rows = result.epochs_run[model]
            columns = result.history
            if result.rates is not None:  # lr_changes: the rate each epoch's update used
                columns = {**columns, "learning_rate": result.rates}
            atomic_write(run / "history.csv", history_csv(result.epochs[:rows], columns, model))
            atomic_write(run / "weights.json", weights_json(result.net, model))
            write_json(run / "data.json", data.meta())
            checkpoint = result.checkpoint(model)
            if checkpoint is not None:
                write_checkpoint(run, checkpoint)
        except OSError as e:
            drawer.collect()
            record_failure(run, summary, f"cannot write: {e.strerror}")
            kept = "" if run.exists() else " (nothing was kept)"
            raise RunError(f"{run}: cannot write the run files: {e.strerror}{kept}") from None
        # with no plots of its own, do not wait for whatever else the painter is drawing
        warnings = drawer.collect() if jobs else []
        write_json(run / "summary.json", summary)
    return summary, warnings


def plot_jobs(run: Path, cfg: Config, data: Dataset, result: TrainResult, model: int) -> list[Job]:
    """loss.png, accuracy.png, decision_boundary.png and network.png where they apply, as jobs
    for a `Painter` (plain arrays: the decision boundary's grid is predicted here)."""
    from backprop_cli import pictures
    from backprop_cli.animation import panel_kind

    jobs: list[Job] = []
    rows = result.epochs_run[model]
    epochs = result.epochs[:rows]
    hist = {c: v[:rows, model] for c, v in result.history.items()}
    curves = {"training": (epochs, hist["loss"])}
    if "val_loss" in hist:
        curves["validation"] = (epochs, hist["val_loss"])
    if rows:
        jobs.append((run / "loss.png", "loss_plot", (curves, f"{cfg.name}: {cfg.training.loss} loss")))
        if "accuracy" in hist:
            acc = {"training": hist["accuracy"]}
            if "val_accuracy" in hist:
                acc["validation"] = hist["val_accuracy"]
            jobs.append((run / "accuracy.png", "metric_plot", (epochs, acc, "accuracy", f"{cfg.name}: accuracy")))
    net = result.net
    X_val = data.X_val_raw
    kind = panel_kind(net, data.classification)  # the one choice of picture, as the animation makes it
    if kind == "boundary" and data.X_raw is not None:
        extent, points = pictures.boundary_grid(data.X_raw)
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = net.predict(data.scaler.apply(points), model)
        jobs.append(
            (
                run / "decision_boundary.png",
                "pictures.decision_boundary",
                (
                    extent,
                    outputs,
                    data.X_raw,
                    data.Y,
                    data.class_names,
                    f"{run.name}: decision boundary",
                    data.feature_names,
                    X_val,
                    data.Y_val,
                ),
            )
        )
    if kind == "fit" and data.X_raw is not None:
        grid = pictures.fit_grid(data.X_raw)
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = net.predict(data.scaler.apply(grid), model)
        names = (data.feature_names[0] if data.feature_names else "x", "target")
        jobs.append(
            (
                run / "fit.png",
                "pictures.fit_plot",
                (
                    grid[:, 0],
                    outputs,
                    data.X_raw,
                    data.Y,
                    f"{run.name}: the learned function",
                    X_val,
                    data.Y_val,
                    names,
                ),
            )
        )
    if sum(net.sizes) <= pictures.MAX_DIAGRAM_NEURONS:
        jobs.append(
            (
                run / "network.png",
                "pictures.network_diagram",
                (net.sizes, net.get_params(model), f"{cfg.name}: final weights", data.feature_names, data.output_names),
            )
        )
    return jobs


RUN_FILES = (
    "config.yaml",
    "history.csv",
    "weights.json",
    "data.json",
    "summary.json",
    CHECKPOINT_META,
    CHECKPOINT_ARRAYS,
    "loss.png",
    "accuracy.png",
    "decision_boundary.png",
    "fit.png",
    "network.png",
    "training.gif",
    "diagnostics.csv",
    "gradients.png",
    "units.png",
)


def check_output(path: Path) -> None:
    """Refuse a user's output path that is one of a run folder's own files (a prediction CSV
    written over weights.json would destroy the run)."""
    folder = path.parent
    if path.name in RUN_FILES and ((folder / "summary.json").exists() or (folder / "config.yaml").exists()):
        raise OutputError(f"{path}: is a file of the run folder {path.parent}; write elsewhere")


def write_compare_plot(curves: dict, output: Path) -> None:
    """Several runs' loss curves {loss: {name: (epochs, values)}} at `output` (its folder made):
    one axis per loss function."""
    from backprop_cli import plots

    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, plots.loss_panels(curves, "loss curves"))


def mark_run(folder: Path, status: str, error: Optional[str] = None) -> None:
    """Record `status` (interrupted or failed) in a folder's summary.json, keeping what it had.

    Used when something stops a run outside the training loop; never raises.
    """
    try:
        summary = read_json(folder / "summary.json") if (folder / "summary.json").exists() else {}
    except RunError:
        summary = {}
    summary.update({"status": status, "finished_at": now_iso()})
    if error:
        summary["error"] = error
    try:
        with no_interrupts():
            write_json(folder / "summary.json", summary)
    except OSError:  # a full disk: a folder with no summary at all is no run anybody can list
        if not (folder / "summary.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
    except KeyboardInterrupt:
        pass


class guarded:
    """Mark a run or study folder interrupted or failed if anything escapes while it is open
    and its summary still says `running` (or there is none)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> Path:
        return self.folder

    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> Literal[False]:
        if kind is None:
            return False
        try:
            path = self.folder / "summary.json"
            status = read_json(path).get("status") if path.exists() else None
        except BackpropError:
            status = None
        if status in (None, "running"):
            if issubclass(kind, KeyboardInterrupt):
                mark_run(self.folder, "interrupted")
            else:
                mark_run(self.folder, "failed", str(value))
        return False
