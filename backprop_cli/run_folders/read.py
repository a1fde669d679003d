"""Reading run folders: load one for predict, find one by name or as `latest`, list them, read
their history, compare them."""

from __future__ import annotations

import csv
import io
import os
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from backprop_cli.checkpoint import Checkpoint
from backprop_cli.config import Config, load_config
from backprop_cli.data import Scaler
from backprop_cli.errors import BackpropError, DataError, RunError, RunNotFoundError
from backprop_cli.exchange import Portable
from backprop_cli.experiment import check_memory, network
from backprop_cli.files import RUN_FILE_LIMIT, check_file, read_json, read_text
from backprop_cli.metrics import class_name, output_names
from backprop_cli.network import Network
from backprop_cli.run_folders.schema import DataMeta, Summary, Weights, read, read_dict

LATEST = "latest"
CHECKPOINT_META, CHECKPOINT_ARRAYS = "checkpoint.json", "checkpoint.npz"


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    """Rows as CSV text (quoted where a cell needs it)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """A run or study folder's CSV (history.csv, grid.csv, sweep.csv) as its header and rows of
    text, each row as long as the header; a special file, one over RUN_FILE_LIMIT, bad bytes, a
    malformed or oversized field or a short row raise RunError naming the file and line."""
    text = read_text(path, "run file", RunError, RUN_FILE_LIMIT)
    reader = csv.reader(io.StringIO(text), strict=True)
    rows = []
    try:
        for row in reader:
            rows.append(row)
    except csv.Error as e:
        raise RunError(f"{path}:{reader.line_num}: corrupt CSV: {e}") from None
    if not rows:
        return [], []
    header = rows[0]
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise RunError(f"{path}:{line}: corrupt CSV: {len(row)} values for {len(header)} columns")
    return header, rows[1:]


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

    @property
    def output_names(self) -> list[str]:
        return output_names(self.net.sizes[-1], self.class_names, bool(self.meta.get("classification")))

    @property
    def by_class(self) -> bool:
        """Whether each output is one class's probability (softmax over named classes)."""
        return self.output_names == [str(name) for name in self.class_names or []]

    def outside(self, rows: Any) -> list[str]:
        """For each input with values outside what the run was trained on (data.json's
        input_range; runs written before it have none), one line saying so."""
        span = self.meta.get("input_range")
        X = np.asarray(rows, float)
        if not span or X.size == 0 or len(span) != X.shape[1]:
            return []
        found = []
        for name, (lo, hi), column in zip(self.feature_names, span, X.T):
            beyond = np.unique(column[(column < lo) | (column > hi)])
            if beyond.size:
                shown = ", ".join(f"{v:g}" for v in beyond[:3]) + (", ..." if beyond.size > 3 else "")
                found.append(
                    f"{name} {shown}: outside the values it was trained on ({lo:g} to {hi:g}); the network extrapolates"
                )
        return found

    def portable(self) -> Portable:
        """The network as every export layout holds it (see `exchange`)."""
        scaler = self.scaler
        return Portable(
            layers=self.net.get_params(0),
            activations=self.cfg.model.activations,
            shift=scaler.shift if scaler.kind != "none" else None,
            factor=scaler.factor if scaler.kind != "none" else None,
            feature_names=[str(name) for name in self.feature_names],
            output_names=self.output_names,
            name=str(self.cfg.name or self.path.name),
        )

    def inputs(self, X: Any, what: str = "inputs") -> np.ndarray:
        """Raw inputs as (n, n_in) floats (one row may be given flat); anything else (None,
        text, the wrong number of columns, a 3-d array, inf or NaN) is a DataError."""
        n = self.net.sizes[0]
        try:
            rows = np.asarray(X, dtype=float)
        except (TypeError, ValueError):
            raise DataError(f"{what}: expected numbers, got {type(X).__name__} {str(X)[:40]}") from None
        if rows.ndim == 1 and rows.size:
            rows = rows[None]
        if rows.ndim != 2:
            raise DataError(f"{what}: expected rows of {n} values (n, {n}), got an array of shape {rows.shape}")
        if rows.shape[1] != n:
            raise DataError(f"{what}: expected {n} value{'s' if n != 1 else ''}, got {rows.shape[1]}")
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            raise DataError(f"{what}: row {bad[0] + 1}: {rows[bad[0]].tolist()} holds a value that is not finite")
        return rows

    def predict(self, X: Any) -> np.ndarray:
        """Outputs (n, n_out) for raw inputs (n, n_in), scaled as in training."""
        return self.net.predict(self.scaler.apply(self.inputs(X)))[0]

    def records(self, rows: Any) -> list[dict]:
        """One record per input row: input, output and (for classifiers) class."""
        X = np.asarray(rows, float).reshape(len(rows), self.net.sizes[0])
        classification = self.meta.get("classification", False)
        records = []
        for x, y in zip(X, self.predict(X)):
            record: dict[str, Any] = {"input": x.tolist(), "output": y.tolist()}
            if self.by_class:
                record["probabilities"] = dict(zip(self.output_names, y.tolist()))
            if classification:
                record["class"] = class_name(y, self.class_names)
            records.append(record)
        return records

    def predictions_csv(self, records: list[dict]) -> str:
        """Records as CSV: the input columns by name, the outputs, and the class."""
        header = list(self.feature_names) + self.output_names
        with_class = bool(records) and "class" in records[0]
        rows: list[list[Any]] = [header + (["class"] if with_class else [])]
        for rec in records:
            rows.append([repr(v) for v in rec["input"] + rec["output"]] + ([rec["class"]] if with_class else []))
        return csv_text(rows)


def resolve_run(run: Path, root: Path) -> Path:
    """A run given as a path, as a folder name under the runs root, or as `latest`; or a cell
    of a study (`STUDY/cell_0417`), whose run folder is written from the study's store when
    first asked for."""
    from backprop_cli.run_folders.cells import resolve_cell

    if str(run) == LATEST and not run.exists():
        return latest_completed(root)
    for path in (run, root / run) if not run.is_absolute() else (run,):
        if path.exists():
            return path
        cell = resolve_cell(path)
        if cell is not None:
            return cell
    return run


def not_a_run(path: Path, missing: str = "config.yaml") -> RunNotFoundError:
    """The one error for a path that is not a run folder, whatever command was given it: not
    there; a study (naming one of its runs); or another folder (naming the file it lacks)."""
    if not path.exists():
        return RunNotFoundError(f"{path}: no such run folder")
    if path.is_dir() and (path / "summary.json").exists() and not (path / "config.yaml").exists():
        try:
            kind = read_json(path / "summary.json").get("kind")
        except BackpropError:
            kind = None
        if kind:
            runs = sorted(p.name for p in path.iterdir() if (p / "config.yaml").exists())
            if runs:
                hint = f"give one of its runs ({path / runs[0]})"
            elif kind in ("grid", "search"):
                hint = f"give one of its cells ({path}/cell_001)"
            else:  # a seed study keeps no run folder per seed
                hint = "it keeps no run folder per model: train one with backprop train CONFIG --seed N"
            return RunNotFoundError(f"{path}: a {kind} study, not a run: {hint}")
    return RunNotFoundError(f"{path}: not a run folder (no {missing})")


def load_run(path: Path) -> LoadedRun:
    """Load a run folder's config and final weights (never retrains)."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.yaml").exists():
        raise not_a_run(path)
    try:
        # its final weights replace the initial ones: init_from's file need not be there any more
        cfg = load_config(path / "config.yaml", initial=False)
    except BackpropError as e:
        raise RunError(f"corrupt run: {e}") from None
    weights_path = path / "weights.json"
    if not weights_path.exists():
        summary = read_dict(path / "summary.json", Summary) if (path / "summary.json").exists() else {}
        status = summary.get("status", "unknown")
        raise RunError(f"{weights_path}: missing (run status: {status})")
    check_memory(cfg, str(path / "config.yaml"))  # as training does: an edited layer of 10^9 units
    layers = [layer.model_dump() for layer in read(weights_path, Weights).layers]
    net = network(cfg)
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
            raise RunError(
                f"{weights_path}: layer {l + 1}: weights are {'x'.join(map(str, w.shape))}, expected {n_out}x{n_in}"
            )
        if cfg.model.bias and (b is None or b.shape != (n_out,)):
            raise RunError(f"{weights_path}: layer {l + 1}: expected {n_out} biases")
        if not np.all(np.isfinite(w)) or (b is not None and not np.all(np.isfinite(b))):
            raise RunError(f"{weights_path}: layer {l + 1}: non-finite weights")
        params.append((w, b))
    net.set_params(params)
    meta = read_dict(path / "data.json", DataMeta) if (path / "data.json").exists() else {}
    scaling = meta.get("scaling", {})
    if scaling.get("kind", "none") != "none":
        for key in ("shift", "factor"):
            if len(scaling.get(key) or []) != net.sizes[0]:
                raise RunError(f"{path / 'data.json'}: scaling.{key}: expected {net.sizes[0]} numbers, one per input")
    summary = read_dict(path / "summary.json", Summary) if (path / "summary.json").exists() else {}
    return LoadedRun(path, cfg, net, meta, summary)


def read_checkpoint(path: Path, n_params: int) -> Optional[Checkpoint]:
    """A run folder's checkpoint for a network of `n_params` parameters, or None where it has
    none; a damaged one is a RunError naming the file."""
    meta_path, arrays_path = path / CHECKPOINT_META, path / CHECKPOINT_ARRAYS
    if not meta_path.exists() and not arrays_path.exists():
        return None
    meta = read_json(meta_path)
    check_file(arrays_path, "checkpoint", RunError, RUN_FILE_LIMIT)
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunError(f"{arrays_path}: corrupt checkpoint: {e}") from None
    for name, values in arrays.items():
        if values.shape != (n_params,) or values.dtype.kind != "f" or not np.all(np.isfinite(values)):
            raise RunError(f"{arrays_path}: {name}: expected {n_params} finite numbers, one per parameter")
    try:
        return Checkpoint.from_saved(meta, arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{meta_path}: corrupt checkpoint: {e}") from None


def read_summary(path: Path) -> dict:
    """A run or study folder's summary.json; a folder without one is not a run folder."""
    if not (path / "summary.json").exists():
        raise not_a_run(path, "summary.json")
    return read_dict(path / "summary.json", Summary)


def config_text(path: Path) -> Optional[str]:
    """A run folder's config.yaml as written, or None when it has none."""
    if not (path / "config.yaml").exists():
        return None
    return read_text(path / "config.yaml", "run file", RunError, RUN_FILE_LIMIT)


def read_history(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A run's history.csv as (epochs, {column: values}); empty cells are NaN."""
    header, body = read_rows(path / "history.csv")
    rows = [dict(zip(header, row)) for row in body]
    try:
        epochs = np.array([int(r["epoch"]) for r in rows], dtype=int)
        columns = {
            c: np.array([float(r[c]) if r[c] else np.nan for r in rows])
            for c in (rows[0] if rows else {})
            if c != "epoch"
        }
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{path / 'history.csv'}: corrupt: expected an epoch column and numbers") from None
    return epochs, columns


def status_of(summary: dict) -> str:
    """The summary's status, or `stale` for a `running` run whose process (on this host) is gone:
    killed with SIGKILL, or stopped by a full disk before it could mark itself."""
    status = str(summary.get("status", "unknown"))
    pid, host = summary.get("pid"), summary.get("host")
    if status != "running" or not isinstance(pid, int) or host != platform.node():
        return status
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "stale"
    except OSError:  # exists, another user's
        pass
    return status


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
            summary = read_dict(path / "summary.json", Summary)
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
    raise RunNotFoundError(f"{root}: no completed run found (train one first: backprop train CONFIG)")


def describe(cfg: Config) -> dict[str, Any]:
    """What sets runs apart besides their numbers: loss, architecture, activations, optimizer."""
    t, m = cfg.training, cfg.model
    hidden = ", ".join(dict.fromkeys(m.activations[:-1]))
    terms = [
        f"{name} {value:g}" if isinstance(value, (int, float)) else f"{name} {'/'.join(f'{v:g}' for v in value)}"
        for name, value in (
            ("dropout", m.dropout),
            ("l1", t.l1),
            ("weight_decay", t.weight_decay),
            ("clip_grad_value", t.clip_grad_value),
            ("clip_grad_norm", t.clip_grad_norm),
        )
        if value is not None and (any(value) if isinstance(value, list) else value)
    ]
    return {
        "loss": t.loss,
        "architecture": "-".join(map(str, m.layers)),
        "activation": f"{hidden}/{m.output_activation}" if hidden else m.output_activation,
        "optimizer": t.optimizer,
        "regularization": ", ".join(terms) or "none",
    }


def compare_runs(paths: list[Path]) -> tuple[list[dict], dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Each run's summary with what its config says (`describe`), and the runs' loss curves at
    their own epochs (a run continued with --from starts where its origin ended), grouped by
    loss function: an sse and a bce curve share no axis. {loss: {run name: (epochs, values)}},
    with `<run name> (validation)` for a run's validation loss."""
    summaries: list[dict] = []
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for path in paths:
        for needed in ("config.yaml", "summary.json", "history.csv"):
            if not (path / needed).exists():
                raise not_a_run(path, needed)
        summary = read_dict(path / "summary.json", Summary)
        try:
            summary.update(describe(load_config(path / "config.yaml", initial=False)))
        except BackpropError as e:
            raise RunError(f"corrupt run: {e}") from None
        summaries.append(summary)
        epochs, columns = read_history(path)
        if "loss" in columns:
            curves.setdefault(summary["loss"], {})[path.name] = (epochs, columns["loss"])
        if "val_loss" in columns:
            from backprop_cli.plots import VALIDATION

            curves[summary["loss"]][path.name + VALIDATION] = (epochs, columns["val_loss"])
    return summaries, curves
