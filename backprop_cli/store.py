"""A study's store: its cells as columns of a few NumPy files, not one run folder per cell.

A study of 100,000 cells cannot afford 100,000 folders of config, CSV and JSON; the numbers
of its cells are a handful of arrays with a row per cell. `<study>/store/` holds:

| file | shape | contents |
|---|---|---|
| `manifest.json` | | format, cell count, history columns and width, parameter count, every |
| `history.<column>.npy` | (cells, rows) float64 | `loss`, `accuracy`, `val_loss`, ...: one row per kept epoch (NaN past a cell's end) |
| `weights.npy` | (cells, P) | the final weights as a run's weights.json holds them (after restore_best), flat as `theta` |
| `last.npy` | (cells, P) | the weights after the last epoch (differ from weights.npy only with restore_best) |
| `optimizer.<name>.npy` | (cells, P) | the optimizer's moments (v, s, m), for continuing a cell exactly |
| `early.best_theta.npy` | (cells, P) | early stopping's best weights (restore_best) |
| `final.<column>.npy` | (cells,) float64 | each history column's last value (the table's `final_loss`, `accuracy`, ...) |
| `cell.<field>.npy` | (cells,) | per cell: `done`, `status`, `stop_reason`, `epochs_run`, `start_epoch`, `diverged_at`, `best_epoch`, `restored_epoch`, `step`, `early_best`, `early_wait`, `duration_s`, `started`, `finished` (Unix seconds), `best_loss`, `epochs_to_target`, `batched_with` (-1 or NaN: none) |
| `cell.batch_order.npy` | (cells, 6) uint64 | the minibatch stream's PCG64 state (state and increment as two 64-bit halves each, has_uint32, uinteger) |
| `cell.dropout_order.npy` | (cells, 6) uint64 | with dropout: the masks' stream's PCG64 state, likewise |

Cells of different architectures share the arrays: a cell's parameters fill the first P_k
columns of a row, zeros after; a cell's history rows past its epochs run are NaN (or zero
where it trained fewer epochs than the longest cell): read them through `epochs_run`. Every array is preallocated at its full size when the study
starts and filled chunk by chunk; a chunk's rows are flushed before its cells' `done` flags
are set and flushed, so a cell marked done is complete whatever stopped the study (SIGKILL
included), and a resumed study trains exactly the cells not marked done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from backprop_cli.checkpoint import Checkpoint, EarlyState
from backprop_cli.diagnostics import QUANTITIES
from backprop_cli.errors import RunError
from backprop_cli.files import atomic_write, read_json
from backprop_cli.network import Network
from backprop_cli.training import TrainResult

FORMAT = 1
STORE = "store"
STATUSES = ("pending", "completed", "diverged", "interrupted", "failed")
REASONS = ("", "epochs", "early_stopping", "stop_at_loss", "diverged", "interrupted")
NONE = -1  # an integer field's "none"
# the (cells,) fields: name -> dtype
FIELDS = {
    "done": np.bool_,
    "status": np.int8,
    "stop_reason": np.int8,
    "epochs_run": np.int32,
    "start_epoch": np.int32,
    "diverged_at": np.int32,
    "best_epoch": np.int32,
    "restored_epoch": np.int32,
    "step": np.int64,
    "early_best": np.float64,
    "early_wait": np.int32,
    "duration_s": np.float64,
    "started": np.float64,
    "finished": np.float64,
    "best_loss": np.float64,
    "epochs_to_target": np.int32,
    "batched_with": np.int32,
    "n_params": np.int32,
}


@dataclass
class Layout:
    """What a store holds: sized once, before anything trains."""

    cells: int
    columns: list[str]  # history columns
    rows: int  # history rows kept per cell
    n_params: int  # the largest cell's parameter count
    moments: list[str] = field(default_factory=list)  # optimizer state arrays
    early: bool = False  # early_stopping with restore_best somewhere: best_theta kept
    every: int = 1  # history: every Nth epoch kept (1, 1 + N, 1 + 2N, ...)
    dropout: bool = False  # dropout somewhere: each cell's mask stream kept
    diagnostics: int = 0  # with training.diagnostics: records kept per cell (see `diagnostics`)
    layers: int = 0  # ... for at most this many layers

    def arrays(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Every array's file stem -> (shape, dtype)."""
        found: dict[str, tuple[tuple[int, ...], Any]] = {}
        for c in self.columns:
            found[f"history.{c}"] = ((self.cells, self.rows), np.float64)
            found[f"final.{c}"] = ((self.cells,), np.float64)  # the last epoch's, whatever `every` keeps
        for name in ["weights", "last"] + [f"optimizer.{m}" for m in self.moments]:
            found[name] = ((self.cells, self.n_params), np.float64)
        if self.early:
            found["early.best_theta"] = ((self.cells, self.n_params), np.float64)
        for name, dtype in FIELDS.items():
            found[f"cell.{name}"] = ((self.cells,), dtype)
        found["cell.batch_order"] = ((self.cells, 6), np.uint64)
        if self.dropout:
            found["cell.dropout_order"] = ((self.cells, 6), np.uint64)
        if self.diagnostics:  # an epoch of NONE: no record
            found["diagnostics.epochs"] = ((self.cells, self.diagnostics), np.int32)
            found["diagnostics.values"] = ((self.cells, self.diagnostics, self.layers, len(QUANTITIES)), np.float64)
        return found

    def nbytes(self) -> int:
        """The raw bytes of every array (what the store takes on disk, give or take headers)."""
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in self.arrays().values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "cells": self.cells,
            "columns": self.columns,
            "rows": self.rows,
            "n_params": self.n_params,
            "moments": self.moments,
            "early": self.early,
            "every": self.every,
            "dropout": self.dropout,
            "diagnostics": self.diagnostics,
            "layers": self.layers,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layout:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        return cls(
            int(data["cells"]),
            [str(c) for c in data["columns"]],
            int(data["rows"]),
            int(data["n_params"]),
            [str(m) for m in data["moments"]],
            bool(data["early"]),
            int(data["every"]),
            bool(data.get("dropout", False)),  # stores written before dropout have none
            int(data.get("diagnostics", 0)),  # nor, before diagnostics, those
            int(data.get("layers", 0)),
        )


@dataclass
class Chunk:
    """What training one chunk of cells gives, as arrays with a row per cell: the store's
    rows for `cells` (global cell indices, 0-based)."""

    cells: np.ndarray
    history: dict[str, np.ndarray]  # column -> (rows, k) at the store's stride (a row per kept epoch)
    finals: dict[str, np.ndarray]  # column -> (k,): the last epoch's value
    weights: np.ndarray  # (k, P_chunk)
    last: np.ndarray
    moments: dict[str, np.ndarray]
    best_theta: Optional[np.ndarray]
    fields: dict[str, np.ndarray]
    batch_order: np.ndarray  # (k, 6)
    start: int = 0  # the epochs its cells had run before this chunk (a continuation)
    dropout_order: Optional[np.ndarray] = None  # (k, 6), with dropout
    diagnostics: Optional[tuple[np.ndarray, np.ndarray]] = None  # epochs (k, R), values (k, R, layers, Q)

    @classmethod
    def from_result(cls, cells: Sequence[int], result: TrainResult, every: int, started: float, target: float) -> Chunk:
        """A TrainResult's K models as the store's rows for `cells` (model k is cells[k]);
        `target` is the loss whose first epoch at or below it each row records."""
        K = len(cells)
        keep = slice(0, None, every)
        history = {c: v[keep] for c, v in result.history.items()}  # (rows, k): the store transposes as it writes
        ran = np.asarray(result.epochs_run)
        models = np.arange(K)
        rows = len(result.epochs)
        finals = {
            c: np.where(ran > 0, v[np.maximum(ran - 1, 0), models], np.nan) if rows else np.full(K, np.nan)
            for c, v in result.history.items()
        }
        loss = result.history["loss"]  # NaN past each model's end
        reached = np.full(K, NONE)
        best = np.full(K, np.nan)
        if rows:
            with np.errstate(invalid="ignore"):
                hit = loss <= target
            reached = np.where(hit.any(axis=0), result.epochs[hit.argmax(axis=0)], NONE)
            best = np.fmin.reduce(np.where(np.isfinite(loss), loss, np.nan), axis=0)
        s = result.state
        assert s is not None
        moments = {name: v.copy() for name, v in s.optimizer.moments().items()}
        early = s.early
        fields: dict[str, np.ndarray] = {
            "done": np.ones(K, bool),
            "status": np.array([STATUSES.index(x) for x in result.status], np.int8),
            "stop_reason": np.array([REASONS.index(x) for x in result.stop_reason], np.int8),
            "epochs_run": np.array(result.epochs_run, np.int32),
            "start_epoch": np.full(K, s.start_epoch, np.int32),
            "diverged_at": np.array([NONE if d is None else d for d in result.diverged_at], np.int32),
            "best_epoch": np.array(result.best_epoch or [0] * K, np.int32),
            "restored_epoch": np.array([NONE if r is None else r for r in result.restored_epoch], np.int32),
            "step": np.full(K, s.optimizer.t, np.int64),
            "early_best": np.full(K, np.nan),
            "early_wait": np.zeros(K, np.int32),
            "duration_s": np.full(K, result.duration_s),
            "started": np.full(K, started),
            "finished": np.full(K, time.time()),
            "best_loss": best,
            "epochs_to_target": reached.astype(np.int32),
            "batched_with": np.full(K, K, np.int32),
            "n_params": np.full(K, result.net.n_params, np.int32),
        }
        if early is not None:
            fields["early_best"] = np.where(np.isfinite(early.best), early.best, np.nan)
            fields["early_wait"] = np.asarray(early.wait, np.int32)
        order = np.zeros((K, 6), np.uint64)
        if s.batch_order is not None:
            order[:] = _pack_order(s.batch_order)
        return cls(
            np.asarray(cells, np.int64),
            history,
            finals,
            result.net.theta.copy(),
            s.theta.copy(),
            moments,
            None if early is None or early.best_theta is None else early.best_theta.copy(),
            fields,
            order,
            s.start_epoch,
            None if s.dropout_order is None else np.tile(_pack_order(s.dropout_order), (K, 1)),
            None if result.diagnostics is None else _diagnostics(result.diagnostics, K),
        )


def _diagnostics(recorder: Any, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Each model's diagnostics records, padded to the longest (an epoch of NONE: no record)."""
    tables = [recorder.table(k) for k in range(K)]
    R = max(len(e) for e, _ in tables)
    L = tables[0][1].shape[1] if R else 0
    epochs = np.full((K, R), NONE, np.int32)
    values = np.full((K, R, L, len(QUANTITIES)), np.nan)
    for k, (e, v) in enumerate(tables):
        epochs[k, : len(e)] = e
        values[k, : len(e)] = v
    return epochs, values


@dataclass
class StoredDiagnostics:
    """A store cell's diagnostics records, read as a `diagnostics.Recorder` gives its table."""

    epochs: np.ndarray
    values: np.ndarray

    def table(self, model: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return self.epochs, self.values


def _pack_order(state: dict) -> np.ndarray:
    """A PCG64 bit generator's state as 6 uint64: state and inc (each high, low), has_uint32, uinteger."""
    s, inc = int(state["state"]["state"]), int(state["state"]["inc"])
    mask = (1 << 64) - 1
    return np.array(
        [s >> 64, s & mask, inc >> 64, inc & mask, int(state["has_uint32"]), int(state["uinteger"])], np.uint64
    )


def _unpack_order(row: np.ndarray) -> Optional[dict]:
    if not row.any():
        return None
    hi, lo, ihi, ilo, has, uint = (int(v) for v in row)
    return {
        "bit_generator": "PCG64",
        "state": {"state": (hi << 64) | lo, "inc": (ihi << 64) | ilo},
        "has_uint32": has,
        "uinteger": uint,
    }


class Store:
    """The arrays of a study's cells, memory-mapped: filled chunk by chunk, read by cell."""

    def __init__(self, folder: Path, layout: Layout, mode: str) -> None:
        self.folder, self.layout = Path(folder), layout
        self.arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in layout.arrays().items():
            path = self.folder / f"{name}.npy"
            # a truncated file must not be memory-mapped for writing: NumPy would extend it with zeros
            need = int(np.prod(shape)) * np.dtype(dtype).itemsize
            try:
                size = path.stat().st_size
            except OSError as e:
                raise RunError(f"{path}: cannot read the study's store: {e.strerror}") from None
            if size < need:
                raise RunError(
                    f"{path}: truncated ({size:,} bytes, at least {need:,} expected): the study's store is damaged"
                )
            try:
                self.arrays[name] = np.load(path, mmap_mode=mode, allow_pickle=False)  # type: ignore[arg-type]
            except (OSError, ValueError) as e:
                raise RunError(f"{path}: cannot read the study's store: {e}") from None
            expected = layout.arrays()[name][0]
            if self.arrays[name].shape != expected:
                raise RunError(f"{path}: shape {self.arrays[name].shape}, expected {expected}")

    @classmethod
    def create(cls, study: Path, layout: Layout) -> Store:
        """A new store under `study`, every array allocated at its full size (a sparse file
        until written: the disk fills as cells finish)."""
        folder = Path(study) / STORE
        folder.mkdir(exist_ok=True)
        for name, (shape, dtype) in layout.arrays().items():
            path = folder / f"{name}.npy"
            try:
                array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
                small = name.startswith(("cell.", "final."))  # (cells,): the big arrays stay sparse zeros
                if small and np.dtype(dtype).kind == "f":
                    array[...] = np.nan  # nothing recorded yet
                elif (
                    name.startswith("cell.")
                    and np.dtype(dtype).kind == "i"
                    and name not in ("cell.status", "cell.step")
                ) or (name == "diagnostics.epochs"):
                    array[...] = NONE
                array.flush()
                del array
            except OSError as e:  # a full disk: NumPy's error names no file
                raise RunError(f"{path}: cannot write the study's store: {e.strerror or e}") from None
        atomic_write(folder / "manifest.json", json.dumps(layout.to_json(), indent=1) + "\n")
        return cls(folder, layout, "r+")

    @classmethod
    def open(cls, study: Path, writable: bool = False) -> Store:
        folder = Path(study) / STORE
        try:
            layout = Layout.from_json(read_json(folder / "manifest.json"))
        except (KeyError, TypeError, ValueError) as e:
            raise RunError(f"{folder / 'manifest.json'}: corrupt: {e}") from None
        return cls(folder, layout, "r+" if writable else "r")

    @staticmethod
    def exists(study: Path) -> bool:
        return (Path(study) / STORE / "manifest.json").is_file()

    # -- writing ------------------------------------------------------------------------------

    def write(self, chunk: Chunk) -> None:
        """A chunk's rows, flushed, then its cells marked done (flushed): never half a chunk."""
        a, rows = self.arrays, chunk.cells
        at = chunk.start // self.layout.every  # a continued chunk (successive halving) extends its cells' histories
        if at:
            old_best, old_reached = a["cell.best_loss"][rows], a["cell.epochs_to_target"][rows]
            chunk.fields["best_loss"] = np.fmin(old_best, chunk.fields["best_loss"])
            chunk.fields["epochs_to_target"] = np.where(old_reached >= 0, old_reached, chunk.fields["epochs_to_target"])
            chunk.fields["epochs_run"] = chunk.fields["epochs_run"] + chunk.start
            chunk.fields["start_epoch"] = a["cell.start_epoch"][rows]
            chunk.fields["duration_s"] = chunk.fields["duration_s"] + a["cell.duration_s"][rows]
            chunk.fields["started"] = a["cell.started"][rows]
        for column, values in chunk.history.items():
            width = min(values.shape[0], self.layout.rows - at)
            target = a[f"history.{column}"]
            target[rows, at : at + width] = values[:width].T
            a[f"final.{column}"][rows] = chunk.finals[column]
        P = chunk.weights.shape[1]
        a["weights"][rows, :P] = chunk.weights
        a["last"][rows, :P] = chunk.last
        for name, values in chunk.moments.items():
            a[f"optimizer.{name}"][rows, :P] = values
        if chunk.best_theta is not None and "early.best_theta" in a:
            a["early.best_theta"][rows, :P] = chunk.best_theta
        for name, values in chunk.fields.items():
            if name != "done":
                a[f"cell.{name}"][rows] = values
        a["cell.batch_order"][rows] = chunk.batch_order
        if "cell.dropout_order" in a:
            a["cell.dropout_order"][rows] = 0 if chunk.dropout_order is None else chunk.dropout_order
        if chunk.diagnostics is not None and "diagnostics.values" in a:
            epochs, values = chunk.diagnostics
            R, L = min(epochs.shape[1], self.layout.diagnostics), min(values.shape[2], self.layout.layers)
            a["diagnostics.epochs"][rows, :R] = epochs[:, :R]
            a["diagnostics.values"][rows, :R, :L] = values[:, :R, :L]
        for name, array in a.items():
            if name != "cell.done":
                _flush(array)
        # done: trained to an end (completed or diverged); an interrupted cell trains again
        ended = np.isin(chunk.fields["status"], [STATUSES.index("completed"), STATUSES.index("diverged")])
        a["cell.done"][rows[ended]] = True
        _flush(a["cell.done"])

    # -- reading ------------------------------------------------------------------------------

    def done(self) -> np.ndarray:
        return np.asarray(self.arrays["cell.done"], bool)

    def field(self, name: str) -> np.ndarray:
        return np.asarray(self.arrays[f"cell.{name}"])

    def status(self, i: int) -> str:
        return STATUSES[int(self.arrays["cell.status"][i])]

    def history(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Cell i's kept epochs and history columns (trimmed to its epochs run)."""
        f = self.arrays
        ran, start, every = int(f["cell.epochs_run"][i]), int(f["cell.start_epoch"][i]), self.layout.every
        kept = len(range(0, ran, every))
        epochs = np.arange(start + 1, start + ran + 1)[::every]
        return epochs, {c: np.array(f[f"history.{c}"][i, :kept]) for c in self.layout.columns}

    def diagnostics(self, i: int, n_layers: int) -> Optional[StoredDiagnostics]:
        """Cell i's diagnostics records (None for a store without them)."""
        if not self.layout.diagnostics:
            return None
        epochs = np.asarray(self.arrays["diagnostics.epochs"][i])
        kept = epochs >= 0
        return StoredDiagnostics(
            epochs[kept].astype(np.int64), np.array(self.arrays["diagnostics.values"][i][kept, :n_layers])
        )

    def result(self, i: int, net: Network, optimizer: str, monitor: Optional[str]) -> TrainResult:
        """Cell i as a one-model TrainResult (for a run folder): `net` (K = 1, of the cell's
        architecture) gets its saved weights; the checkpoint comes from the store."""
        if self.layout.every != 1:
            raise RunError(f"{self.folder}: the store keeps every {self.layout.every}th epoch; a run folder needs all")
        f = self.arrays
        P = net.n_params
        epochs, columns = self.history(i)
        # the columns this cell records (a grid over losses mixes classifiers and regressions)
        columns = {c: v for c, v in columns.items() if c == "loss" or np.isfinite(f[f"final.{c}"][i])}
        net.theta[0] = f["weights"][i, :P]
        reason = REASONS[int(f["cell.stop_reason"][i])]
        diverged = int(f["cell.diverged_at"][i])
        restored = int(f["cell.restored_epoch"][i])
        return TrainResult(
            net=net,
            history={c: v[:, None] for c, v in columns.items()},
            epochs=epochs,
            status=[self.status(i)],
            stop_reason=[reason],
            epochs_run=[int(f["cell.epochs_run"][i])],
            diverged_at=[None if diverged == NONE else diverged],
            best_epoch=[int(f["cell.best_epoch"][i])],
            duration_s=float(f["cell.duration_s"][i]),
            restored_epoch=[None if restored == NONE else restored],
            saved=[self.checkpoint(i, optimizer, monitor)],
            diagnostics=self.diagnostics(i, net.n_layers),
        )

    def checkpoint(self, i: int, optimizer: str, monitor: Optional[str]) -> Checkpoint:
        """Cell i's state after its last epoch, to continue it (successive halving)."""
        f = self.arrays
        P = self.n_params(i)
        early = None
        if monitor is not None:
            best = float(f["cell.early_best"][i])
            theta = np.array(f["early.best_theta"][i, :P]) if "early.best_theta" in f else None
            early = EarlyState(
                None if np.isnan(best) else best, int(f["cell.best_epoch"][i]), int(f["cell.early_wait"][i]), theta
            )
        return Checkpoint(
            epoch=int(f["cell.start_epoch"][i]) + int(f["cell.epochs_run"][i]),
            theta=np.array(f["last"][i, :P]),
            optimizer=optimizer,
            step=int(f["cell.step"][i]),
            moments={m: np.array(f[f"optimizer.{m}"][i, :P]) for m in self.layout.moments if _used(optimizer, m)},
            batch_order=_unpack_order(np.asarray(f["cell.batch_order"][i])),
            dropout_order=_unpack_order(np.asarray(f["cell.dropout_order"][i])) if "cell.dropout_order" in f else None,
            early=early,
            monitor=monitor,
        )

    def n_params(self, i: int) -> int:
        return int(self.arrays["cell.n_params"][i])


def _used(optimizer: str, moment: str) -> bool:
    """Whether an optimizer keeps a moment of that name (the store holds the union)."""
    from backprop_cli.optimizers import OPTIMIZERS

    return moment in OPTIMIZERS[optimizer]((1, 1), np.float64).moments()


def _flush(array: np.ndarray) -> None:
    flush = getattr(array, "flush", None)
    if flush is not None:
        flush()
