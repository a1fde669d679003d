"""Run folders: create them uniquely, write every file atomically, load them for predict.

A run folder holds config.yaml, history.csv, weights.json, data.json (input names, class
names, scaling), summary.json (written last; `status` says whether the run completed,
diverged, was interrupted or failed, or is still running) and PNG plots.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from backprop_cli import __version__
from backprop_cli.config import Config, config_to_yaml, load_config
from backprop_cli.data import Dataset, Scaler
from backprop_cli.errors import BackpropError, RunError, UsageError
from backprop_cli.network import Network
from backprop_cli.train import TrainResult, build_network

def atomic_write(path: Path, content) -> None:
    """Write text or bytes to `path` via a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextmanager
def no_interrupts():
    """Defer Ctrl-C and SIGTERM while a run's files are saved, then deliver them."""
    pending = []
    handler = lambda signum, frame: pending.append(signum)  # noqa: E731
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


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def versions() -> dict:
    """Package versions, and NumPy's BLAS: matrix products round differently under different BLAS
    kernels, so bit-identical reruns need the same library and OPENBLAS_CORETYPE."""
    import numpy

    blas = {"name": None, "version": None}
    try:
        built = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = {"name": built.get("name"), "version": built.get("version")}
    except (TypeError, KeyError, AttributeError):  # NumPy < 1.26 has no mode="dicts": not recorded
        pass
    blas["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    return {"backprop": __version__, "numpy": numpy.__version__, "python": platform.python_version(), "blas": blas}


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
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"
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


def _num(x) -> str:
    """A float at full precision (repr round-trips), empty for NaN."""
    x = float(x)
    return "" if math.isnan(x) else repr(x)


def history_csv(epochs, columns: dict, model: int = 0) -> str:
    names = list(columns)
    lines = [",".join(["epoch"] + names)]
    for i, epoch in enumerate(epochs):
        lines.append(",".join([str(int(epoch))] + [_num(columns[c][i, model]) for c in names]))
    return "\n".join(lines) + "\n"


def weights_json(net: Network, model: int = 0) -> str:
    layers = [
        {"weights": w.tolist(), "biases": None if b is None else b.tolist()}
        for w, b in net.get_params(model)
    ]
    return json.dumps({"layers": layers}, indent=1) + "\n"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _finite_or_none(x):
    return None if x is None or not math.isfinite(x) else x


def start_run(root: Path, cfg: Config, extra: Optional[dict] = None) -> Path:
    """Create the folder and write config.yaml and a summary with status `running`."""
    run = create_run_dir(root, cfg.name)
    try:
        atomic_write(run / "config.yaml", config_to_yaml(cfg))
        write_json(run / "summary.json", {"name": cfg.name, "status": "running", "started_at": now_iso(), **(extra or {})})
    except OSError as e:
        raise RunError(f"{run}: cannot write: {e.strerror}") from None
    return run


def summary_for(cfg: Config, result: TrainResult, model: int, learning_rate: float, seed: int, extra=None) -> dict:
    summary = {
        "name": cfg.name,
        "status": result.status[model],
        "stop_reason": result.stop_reason[model],
        "epochs_run": result.epochs_run[model],
        "final_loss": _finite_or_none(result.final("loss", model)),
        "best_loss": _finite_or_none(result.best("loss", model)),
        "learning_rate": learning_rate,
        "seed": seed,
        "duration_s": round(result.duration_s, 6),
    }
    for column in result.history:
        if column != "loss":
            summary[column] = _finite_or_none(result.final(column, model))
    if result.diverged_at[model] is not None:
        summary["diverged_at_epoch"] = result.diverged_at[model]
    if result.stop_reason[model] == "early_stopping" or result.best_epoch[model]:
        summary["best_epoch"] = result.best_epoch[model]
    summary["last_epoch"] = int(result.epochs[0] - 1 + result.epochs_run[model]) if len(result.epochs) else 0
    summary.update(extra or {})
    summary["versions"] = versions()
    return summary


def finish_run(run: Path, cfg: Config, data: Dataset, result: TrainResult, model: int = 0,
               learning_rate: Optional[float] = None, extra: Optional[dict] = None) -> list:
    """Write history, weights, data.json and plots, then summary.json last.

    Returns warnings (a plot that failed is a warning, not a lost run).
    """
    lr = cfg.training.learning_rate if learning_rate is None else learning_rate
    summary = summary_for(cfg, result, model, lr, cfg.seed, extra)
    summary.setdefault("started_at", now_iso())
    summary["finished_at"] = now_iso()
    with no_interrupts():
        try:
            rows = result.epochs_run[model]
            atomic_write(run / "history.csv", history_csv(result.epochs[:rows], result.history, model))
            atomic_write(run / "weights.json", weights_json(result.net, model))
            write_json(run / "data.json", data.meta())
        except OSError as e:
            summary["status"] = "failed"
            summary["error"] = f"cannot write: {e.strerror}"
            try:
                write_json(run / "summary.json", summary)
            except OSError:
                pass
            raise RunError(f"{run}: cannot write the run files: {e.strerror}") from None
        warnings = write_plots(run, cfg, data, result, model)
        write_json(run / "summary.json", summary)
    return warnings


def write_plots(run: Path, cfg: Config, data: Dataset, result: TrainResult, model: int) -> list:
    """loss.png, accuracy.png, decision_boundary.png and network.png where they apply."""
    from backprop_cli import plots

    warnings = []
    rows = result.epochs_run[model]
    epochs = result.epochs[:rows]
    hist = {c: v[:rows, model] for c, v in result.history.items()}

    def attempt(name, fn, *args):
        try:
            atomic_write(run / name, fn(*args))
        except Exception as e:  # a plot must never lose a run
            warnings.append(f"{run / name}: plot not written: {e}")

    curves = {"training": hist["loss"]}
    if "val_loss" in hist:
        curves["validation"] = hist["val_loss"]
    if rows:
        attempt("loss.png", plots.loss_plot, epochs, curves, f"{cfg.name}: {cfg.training.loss} loss")
        if "accuracy" in hist:
            acc = {"training": hist["accuracy"]}
            if "val_accuracy" in hist:
                acc["validation"] = hist["val_accuracy"]
            attempt("accuracy.png", plots.metric_plot, epochs, acc, "accuracy")
    net = result.net
    if data.classification and net.sizes[0] == 2:
        attempt("decision_boundary.png", plots.decision_boundary, lambda X: net.predict(data.scaler.apply(X), model),
                data.X_raw, data.Y, data.class_names)
    if sum(net.sizes) <= 32:
        attempt("network.png", plots.network_diagram, net.sizes, net.get_params(model), f"{cfg.name}: final weights")
    return warnings


# -- loading ----------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    path: Path
    cfg: Config
    net: Network
    meta: dict
    summary: dict

    @property
    def scaler(self) -> Scaler:
        return Scaler.from_json(self.meta.get("scaling", {}))

    @property
    def feature_names(self) -> list:
        return self.meta.get("feature_names") or [f"x{j + 1}" for j in range(self.net.sizes[0])]

    @property
    def class_names(self) -> Optional[list]:
        return self.meta.get("class_names")

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Outputs (n, n_out) for raw inputs (n, n_in), scaled as in training."""
        return self.net.predict(self.scaler.apply(np.asarray(X, float)))[0]


def read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read: {e.strerror}") from None
    if not text.strip():
        raise RunError(f"{path}: empty file")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: corrupt JSON (truncated?): {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: corrupt: expected a JSON object")
    return data


def load_run(path: Path) -> LoadedRun:
    """Load a run folder's config and final weights (never retrains)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such run folder")
    if not path.is_dir() or not (path / "config.yaml").exists():
        raise UsageError(f"{path}: not a run folder (no config.yaml)")
    try:
        cfg = load_config(path / "config.yaml")
    except BackpropError as e:
        raise RunError(f"corrupt run: {e}") from None
    weights_path = path / "weights.json"
    if not weights_path.exists():
        summary = read_json(path / "summary.json") if (path / "summary.json").exists() else {}
        status = summary.get("status", "unknown")
        raise RunError(f"{weights_path}: missing (run status: {status})")
    layers = read_json(weights_path).get("layers")
    net = build_network(cfg)
    shapes = list(zip(net.sizes[1:], net.sizes[:-1]))
    if not isinstance(layers, list) or len(layers) != len(shapes):
        raise RunError(f"{weights_path}: expected {len(shapes)} layers for {net.sizes}")
    params = []
    for l, (layer, (n_out, n_in)) in enumerate(zip(layers, shapes)):
        try:
            w = np.asarray(layer["weights"], dtype=float)
            b = None if layer.get("biases") is None else np.asarray(layer["biases"], dtype=float)
        except (KeyError, TypeError, ValueError):
            raise RunError(f"{weights_path}: layer {l + 1}: corrupt weights") from None
        if w.shape != (n_out, n_in):
            raise RunError(f"{weights_path}: layer {l + 1}: weights are {'x'.join(map(str, w.shape))}, expected {n_out}x{n_in}")
        if cfg.model.bias and (b is None or b.shape != (n_out,)):
            raise RunError(f"{weights_path}: layer {l + 1}: expected {n_out} biases")
        if not np.all(np.isfinite(w)) or (b is not None and not np.all(np.isfinite(b))):
            raise RunError(f"{weights_path}: layer {l + 1}: non-finite weights")
        params.append((w, b))
    net.set_params(params)
    meta = read_json(path / "data.json") if (path / "data.json").exists() else {}
    summary = read_json(path / "summary.json") if (path / "summary.json").exists() else {}
    return LoadedRun(path, cfg, net, meta, summary)


def list_runs(root: Path, studies: bool = False) -> list[tuple[Path, dict]]:
    """Every run folder under root with its summary, newest first.

    A folder with no readable summary is listed with status `corrupt`; with `studies`, sweep
    and seed-study folders (a summary.json with a `kind`) are listed too.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not path.is_dir():
            continue
        is_run = (path / "config.yaml").exists()
        if not is_run and not (studies and (path / "summary.json").exists()):
            continue
        try:
            summary = read_json(path / "summary.json")
        except RunError:
            summary = {"status": "corrupt"}
        if not is_run and "kind" not in summary:
            continue
        found.append((path, summary))
    found.sort(key=lambda item: (item[1].get("started_at") or "", item[0].stat().st_mtime, item[0].name), reverse=True)
    return found


def latest_completed(root: Path) -> Path:
    for path, summary in list_runs(root):
        if summary.get("status") == "completed" and (path / "weights.json").exists():
            return path
    raise UsageError(f"{root}: no completed run found (train one first: backprop train CONFIG)")


# -- studies (sweeps and seed studies) ----------------------------------------------------------

MAX_CSV_WEIGHTS = 64


def study_csv(label: str, entries, target: float, param_names) -> str:
    """One row per model: label, final_loss, best_loss, epochs_to_target, status, w1..wP (P <= 64)."""
    header = [label, "final_loss", "best_loss", "epochs_to_target", "status"]
    with_weights = len(param_names) <= MAX_CSV_WEIGHTS
    if with_weights:
        header += param_names
    lines = [",".join(header)]
    for e in entries:
        row = [repr(e.value), _num(e.final_loss() if e.final_loss() is not None else float("nan")),
               _num(e.best_loss() if e.best_loss() is not None else float("nan")),
               str(e.epochs_to(target) or ""), e.status]
        if with_weights:
            row += [repr(float(v)) for v in e.params()]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def study_history_csv(label: str, entries) -> str:
    epochs = max((e.result.epochs for e in entries), key=len)
    lines = [",".join(["epoch"] + [f"{label}={e.value:g}" for e in entries])]
    for i, epoch in enumerate(epochs):
        cells = [str(int(epoch))]
        for e in entries:
            cells.append(_num(e.losses[i]) if i < len(e.losses) else "")
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def write_study(folder: Path, kind: str, label: str, cfg: Config, data: Dataset, entries, target: float,
                param_names, per_model_runs: bool, extra: dict) -> list:
    """Write a sweep or seed-study folder; returns warnings.

    Files: <kind>.csv, history.csv, loss_curves.png, loss_grid.png (sweeps), summary.json and,
    with per_model_runs, one complete run folder per model (loadable by predict).
    """
    from backprop_cli import plots

    warnings = []
    with no_interrupts():
        atomic_write(folder / f"{kind}.csv", study_csv(label, entries, target, param_names))
        atomic_write(folder / "history.csv", study_history_csv(label, entries))
        curves = {f"{label}={e.value:g}": e.losses for e in entries}
        epochs = max((e.result.epochs for e in entries), key=len)
        figures = [("loss_curves.png", plots.loss_plot, (epochs, curves, f"{cfg.name}: {cfg.training.loss} loss by {label}"))]
        if per_model_runs:
            figures.append(("loss_grid.png", plots.loss_grid, (epochs, curves, f"{cfg.name}: {cfg.training.loss} loss")))
        for name, fn, args in figures:
            try:
                atomic_write(folder / name, fn(*args))
            except Exception as e:  # a plot must never lose a study
                warnings.append(f"{folder / name}: plot not written: {e}")
    if per_model_runs:
        for e in entries:
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.training.learning_rate = float(e.value)
            run_cfg.name = f"{cfg.name}-lr{e.value:g}"
            run_cfg.model.weights = [w.tolist() for w, _ in e.start_params]
            if cfg.model.bias:
                run_cfg.model.biases = [b.tolist() for _, b in e.start_params]
            run = folder / f"lr_{e.value:g}"
            run.mkdir()
            atomic_write(run / "config.yaml", config_to_yaml(run_cfg))
            warnings += finish_run(run, run_cfg, data, e.result, model=e.model, learning_rate=float(e.value),
                                   extra={"started_at": extra.get("started_at"), "sweep": str(folder)})
    summary = {
        "name": cfg.name,
        "kind": kind,
        "status": "completed" if any(e.status == "completed" for e in entries) else entries[0].status if entries else "failed",
        "target": target,
        "models": [
            {label: e.value, "status": e.status, "final_loss": _finite_or_none(e.final_loss()),
             "best_loss": _finite_or_none(e.best_loss()), "epochs_to_target": e.epochs_to(target),
             "epochs_run": e.result.epochs_run[e.model]}
            for e in entries
        ],
        "duration_s": round(sum({id(e.result): e.result.duration_s for e in entries}.values()), 6),
        **extra,
        "finished_at": now_iso(),
        "versions": versions(),
    }
    with no_interrupts():
        write_json(folder / "summary.json", summary)
    return warnings


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
    except (OSError, KeyboardInterrupt):
        pass
