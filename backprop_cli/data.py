"""Training data: inline rows, CSV files and built-in sets; validation splits; input scaling.

Everything returned is float arrays with samples along rows: X (n, n_in), Y (n, n_out).
Class targets become one-hot rows (or a 0/1 column for a single sigmoid output) and the class
names are kept for `predict`. Errors name the file, the row and the column (1-based).
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from backprop_cli.datasets import GENERATORS, SHIPPED, RawData
from backprop_cli.errors import DataError
from backprop_cli.files import MiB, check_file
from backprop_cli.metrics import class_indices, output_names

if TYPE_CHECKING:  # sections of the config; importing data loads no pydantic
    from backprop_cli.config import DataConfig, ModelConfig

DATA_LIMIT = 1024 * MiB


@dataclass
class Scaler:
    """x_scaled = (x - shift) / factor, fitted on the training split."""

    kind: str = "none"
    shift: Optional[np.ndarray] = None
    factor: Optional[np.ndarray] = None

    @classmethod
    def fit(cls, kind: str, X: np.ndarray) -> "Scaler":
        if kind == "standard":
            shift, factor = X.mean(axis=0), X.std(axis=0)
        elif kind == "minmax":
            shift, factor = X.min(axis=0), X.max(axis=0) - X.min(axis=0)
        else:
            return cls()
        # a constant column stays as it is rather than dividing by zero
        return cls(kind, shift, np.where(factor > 0, factor, 1.0))

    def apply(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return X
        return (X - self.shift) / self.factor

    def to_json(self) -> dict:
        if self.kind == "none" or self.shift is None or self.factor is None:
            return {"kind": "none"}
        return {"kind": self.kind, "shift": self.shift.tolist(), "factor": self.factor.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "Scaler":
        if data.get("kind", "none") == "none":
            return cls()
        return cls(data["kind"], np.asarray(data["shift"], float), np.asarray(data["factor"], float))


@dataclass
class Dataset:
    """The training split (X, Y), the optional validation split, and what predict needs."""

    X: np.ndarray
    Y: np.ndarray
    X_val: Optional[np.ndarray] = None
    Y_val: Optional[np.ndarray] = None
    feature_names: list = field(default_factory=list)
    class_names: Optional[list] = None
    classification: bool = False
    scaler: Scaler = field(default_factory=Scaler)
    X_raw: Optional[np.ndarray] = None  # training inputs before scaling, for display
    X_val_raw: Optional[np.ndarray] = None  # validation inputs before scaling

    @property
    def output_names(self) -> list[str]:
        return output_names(self.Y.shape[1], self.class_names, self.classification)

    def meta(self) -> dict:
        """What a run folder keeps so `predict` can read inputs and name classes (data.json)."""
        return {
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "classification": self.classification,
            "n_outputs": int(self.Y.shape[1]),
            "scaling": self.scaler.to_json(),
            # each input's smallest and largest training value: predict warns beyond them
            "input_range": None
            if self.X_raw is None
            else [[float(lo), float(hi)] for lo, hi in zip(*_span(self.X_raw))],
        }


def _span(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (X.min(axis=0), X.max(axis=0)) if len(X) else (np.zeros(X.shape[1]), np.zeros(X.shape[1]))


# -- reading --------------------------------------------------------------------------------


def _to_float(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """The non-empty rows of a CSV file as (record number, stripped cells), read as they come."""
    try:
        raw = (
            gzip.open(path, "rt", encoding="utf-8", newline="")
            if path.suffix == ".gz"
            else open(path, encoding="utf-8", newline="")
        )
        with raw as f:
            for i, row in enumerate(csv.reader(f, strict=True)):
                cells = [c.strip() for c in row]
                if any(cells):
                    yield i + 1, cells
    except csv.Error as e:
        hint = " (an unterminated quote?)" if "unexpected end of data" in str(e) else ""
        raise DataError(f"{path}: cannot read as CSV: {e}{hint}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as CSV: {e}") from None


@dataclass
class Table:
    """A CSV data file, column by column: a column of numbers as floats (8 bytes a cell), any
    other column as its cells' text (a label repeated on every row is one string), so a file
    takes a few times its size in memory, not dozens (a list of strings for every row did)."""

    path: Path
    header: list[str]
    lines: np.ndarray  # the record number of each data row (1-based)
    numbers: dict[int, np.ndarray]  # column -> values: the columns whose every cell is a number
    texts: dict[int, list[str]]  # column -> cells: the others
    unusual: dict[tuple[int, int], str]  # (row, column) -> a cell that reads as NaN or infinity

    @property
    def first_line(self) -> int:
        return int(self.lines[0])

    def numeric(self, cols: list[int]) -> np.ndarray:
        """Columns `cols` as an (n, len(cols)) block; the first cell (by row, then column) that
        is not a finite number is a DataError naming its row, column and text."""
        out = np.empty((len(self.lines), len(cols)))
        bad: list[tuple[int, int, str, str]] = []  # (row, position in cols, cell, what it is)
        for j, c in enumerate(cols):
            if c in self.numbers:
                out[:, j] = self.numbers[c]
                wrong = np.flatnonzero(~np.isfinite(out[:, j]))
                if wrong.size:
                    i = int(wrong[0])
                    bad.append((i, j, self.unusual.get((i, c), repr(float(out[i, j]))), "not a finite number"))
                continue
            for i, cell in enumerate(self.texts[c]):
                value = _to_float(cell)
                if value is None or not math.isfinite(value):
                    bad.append((i, j, cell, "not a number" if value is None else "not a finite number"))
                    break
        if bad:
            i, j, cell, what = min(bad)
            c = cols[j]
            raise DataError(
                f"{self.path}: row {self.lines[i]}, column {c + 1} ('{self.header[c]}'): {cell!r} is {what}"
            )
        return out


def read_csv(path: Path) -> Table:
    """Read a CSV file into a `Table`: its header (or x1, x2, ...) and its columns.

    A header is detected when the first row has more non-numeric cells than the second.
    """
    check_file(path, "data file", DataError, DATA_LIMIT)
    records = _records(path)
    start = list(itertools.islice(records, 5))  # enough to tell a header and the separator
    if not start:
        raise DataError(f"{path}: the file is empty")
    if all(len(row) == 1 for _, row in start):
        for sep, name in ((";", "';'"), ("\t", "tab")):
            if any(sep in row[0] for _, row in start):
                raise DataError(f"{path}: found {name} separators; backprop reads comma-separated values")
    non_numeric = [sum(_to_float(c) is None for c in row) for _, row in start[:2]]
    has_header = non_numeric[0] > 0 and (len(start) == 1 or non_numeric[0] > non_numeric[1])
    header = start.pop(0)[1] if has_header else [f"x{j + 1}" for j in range(len(start[0][1]))]
    width = len(header)
    lines = array("q")
    numbers: list[Optional[array]] = [array("d") for _ in range(width)]
    texts: list[Optional[list[str]]] = [None] * width
    unusual: dict[tuple[int, int], str] = {}
    mixed: set[int] = set()  # columns whose first cells were numbers and a later one text
    labels: dict[str, str] = {}  # one string per distinct label
    for line, row in itertools.chain(start, records):
        if len(row) != width:
            raise DataError(f"{path}: row {line} has {len(row)} values, expected {width} (ragged rows)")
        i = len(lines)
        lines.append(line)
        for j, cell in enumerate(row):
            column = numbers[j]
            if column is not None:
                value = _to_float(cell)
                if value is not None:
                    column.append(value)
                    if not math.isfinite(value):
                        unusual[(i, j)] = cell
                    continue
                numbers[j] = None
                if i:
                    mixed.add(j)  # its earlier cells' text: read again below
                else:
                    texts[j] = []
            text = texts[j]
            if text is not None:
                text.append(labels.setdefault(cell, cell))
    if not lines:
        raise DataError(f"{path}: no data rows (only a header)")
    if mixed:  # rare: a second pass for the text of those columns
        for j in mixed:
            texts[j] = []
        rows = _records(path)
        if has_header:
            next(rows)
        for _, row in rows:
            for j in mixed:
                texts[j].append(labels.setdefault(row[j], row[j]))  # type: ignore[union-attr]
    return Table(
        path,
        header,
        np.frombuffer(lines, dtype=np.int64),
        {j: np.frombuffer(col, dtype=float) for j, col in enumerate(numbers) if col is not None},
        {j: col for j, col in enumerate(texts) if col is not None},
        unusual,
    )


def _column_index(spec, header: list[str], path: Path, key: str) -> int:
    if isinstance(spec, int):
        if not -len(header) <= spec < len(header):
            raise DataError(
                f"{path}: data.{key}: column index {spec} out of range (the file has {len(header)} columns)"
            )
        return spec % len(header)
    if spec not in header:
        raise DataError(f"{path}: data.{key}: no column named '{spec}' (columns: {', '.join(header)})")
    return header.index(spec)


def _from_csv(path: Path, target=None, features=None, known: Optional[list] = None) -> RawData:
    """Read a CSV data file; `target` and `features` are column names or indices. Without
    `features`, the `known` input names are the features where the header has them all (and
    without `target`, every other column is a target)."""
    table = read_csv(path)
    header = table.header
    if features is None and known and all(name in header for name in known):
        features = known
        if target is None:
            target = [name for name in header if name not in known] or None
    targets = target if isinstance(target, list) else [target if target is not None else -1]
    t_cols = [_column_index(t, header, path, "target") for t in targets]
    if features is not None:
        f_cols = [_column_index(f, header, path, "features") for f in features]
    else:
        f_cols = [j for j in range(len(header)) if j not in t_cols]
    if not f_cols:
        raise DataError(f"{path}: no input columns left besides the target")
    X = table.numeric(f_cols)
    names = [header[j] for j in f_cols]
    if len(t_cols) == 1 and t_cols[0] in table.texts:  # a cell that is no number: class labels
        cells = table.texts[t_cols[0]]
        classes = sorted(set(cells))
        if not any(_is_nan_text(c) for c in classes):  # words and NaN: numbers, one of them bad
            index = {name: i for i, name in enumerate(classes)}
            labels = np.fromiter(map(index.__getitem__, cells), np.int64, count=len(cells))
            return RawData(X, labels=labels, class_names=classes, feature_names=names)
    Y = table.numeric(t_cols)
    return RawData(X, Y=Y, feature_names=names)


def _is_nan_text(cell: str) -> bool:
    value = _to_float(cell)
    return value is not None and not math.isfinite(value)


def _from_inline(d: DataConfig, output_activation: str, source: str) -> RawData:
    inputs, targets = d.inputs or [], d.targets or []  # both given: the schema's consistency check
    if not inputs:
        raise DataError(f"{source}: data.inputs: the data set is empty")
    width = len(inputs[0])
    for i, row in enumerate(inputs):
        if len(row) != width:
            raise DataError(f"{source}: data.inputs[{i}]: has {len(row)} values, expected {width} like the first row")
    if len(targets) != len(inputs):
        raise DataError(f"{source}: data.targets: {len(targets)} targets for {len(inputs)} input rows")
    X = np.asarray(inputs, float)
    names = d.feature_names or [f"x{j + 1}" for j in range(width)]
    kinds = {type(t) for t in targets}
    if kinds == {str}:
        names_given = [str(t) for t in targets]
        classes = d.class_names or sorted(set(names_given))
        for i, t in enumerate(names_given):
            if t not in classes:
                raise DataError(f"{source}: data.targets[{i}]: '{t}' is not one of data.class_names")
        return RawData(
            X, labels=np.array([classes.index(t) for t in names_given]), class_names=classes, feature_names=names
        )
    if kinds == {list}:
        rows = [t for t in targets if isinstance(t, list)]
        t_width = len(rows[0])
        for i, row in enumerate(rows):
            if len(row) != t_width:
                raise DataError(
                    f"{source}: data.targets[{i}]: has {len(row)} values, expected {t_width} like the first row"
                )
        return RawData(X, Y=np.asarray(targets, float), feature_names=names, class_names=d.class_names)
    if kinds <= {int, float}:
        values = np.asarray(targets, float)
        if output_activation == "softmax":
            if np.any(values != np.round(values)) or np.any(values < 0):
                raise DataError(f"{source}: data.targets: class indices must be whole numbers >= 0")
            return RawData(X, labels=values.astype(int), class_names=d.class_names, feature_names=names)
        return RawData(X, Y=values[:, None], feature_names=names, class_names=d.class_names)
    raise DataError(f"{source}: data.targets: mix of rows, numbers and class names; use one kind")


def _encode_labels(raw: RawData, model: ModelConfig, where: str) -> tuple[np.ndarray, Optional[list]]:
    """Turn class labels into the target block the output layer expects."""
    n_out = model.layers[-1]
    labels = raw.labels
    assert labels is not None
    n_classes = len(raw.class_names) if raw.class_names else int(labels.max()) + 1
    if raw.class_names is None and model.output_activation == "softmax":
        n_classes = n_out
    if labels.size and labels.max() >= n_classes:
        bad = int(np.argmax(labels >= n_classes))
        raise DataError(f"{where}: target {bad + 1}: class index {labels[bad]} out of range for {n_classes} classes")
    names = raw.class_names or [str(i) for i in range(n_classes)]
    if n_out == 1 and n_classes == 2 and model.output_activation != "softmax":
        return labels.astype(float)[:, None], names
    if n_out != n_classes:
        raise DataError(
            f"{where}: the data has {n_classes} classes but model.layers ends in {n_out} "
            f"(use {n_classes} softmax outputs{' or 1 sigmoid output' if n_classes == 2 else ''})"
        )
    return np.eye(n_classes)[labels], names


def _targets(raw: RawData, model: ModelConfig, where: str, classes: Optional[list] = None):
    """The target block and class names of raw data, for training and validation data alike.

    `classes` pins the class order to the training data's, so validation names map onto it.
    """
    if raw.labels is None and raw.Y is not None and _are_class_indices(raw.Y, model):
        raw.labels = raw.Y[:, 0].astype(int)
    if raw.labels is None:
        return raw.Y, raw.class_names
    if classes is not None and raw.class_names is not None:
        unknown = sorted(set(raw.class_names) - set(classes))
        if unknown:
            raise DataError(f"{where}: class '{unknown[0]}' does not occur in the training data")
        raw.labels = np.array([classes.index(raw.class_names[i]) for i in raw.labels])
        raw.class_names = classes
    return _encode_labels(raw, model, where)


def _split(Y: np.ndarray, classification: bool, fraction: float, rng: np.random.Generator):
    """Seeded split into (train indices, validation indices); stratified for classes."""
    n = len(Y)
    if classification:
        labels = class_indices(Y)
        chosen: list[int] = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            chosen.extend(idx[: int(round(fraction * len(idx)))])
        val = np.sort(np.array(chosen, dtype=np.int64))
    else:
        val = np.sort(rng.permutation(n)[: int(round(fraction * n))])
    train = np.setdiff1d(np.arange(n), val)
    return train, val


def _are_class_indices(Y: np.ndarray, model: ModelConfig) -> bool:
    """One column of whole numbers >= 0 feeding a softmax output of k >= 2 units: class indices."""
    return (
        Y.shape[1] == 1
        and model.output_activation == "softmax"
        and model.layers[-1] >= 2
        and bool(np.all(Y >= 0))
        and bool(np.all(Y == np.round(Y)))
    )


def is_classification(Y: np.ndarray, output_activation: str) -> bool:
    """Targets are classes: softmax outputs, or sigmoid outputs with 0/1 targets."""
    if output_activation == "softmax":
        return True
    return output_activation == "sigmoid" and bool(np.all((Y == 0) | (Y == 1)))


def _check_for_loss(Y: np.ndarray, loss: str, where: str) -> None:
    """Refuse targets `loss` cannot take: bce and cross_entropy need values in [0, 1],
    cross_entropy one-hot rows."""
    if loss in ("bce", "cross_entropy") and (Y.min() < 0 or Y.max() > 1):
        raise DataError(f"{where}: loss {loss} needs targets between 0 and 1")
    if loss == "cross_entropy" and not np.allclose(Y.sum(axis=1), 1.0):
        raise DataError(f"{where}: cross_entropy needs one-hot rows (or class indices)")


def load_data(
    d: DataConfig, model: ModelConfig, loss: str, dtype: str, source: str, rng: np.random.Generator
) -> Dataset:
    """Build the Dataset that a config's data section describes for its model and loss.

    `source` names the config file in messages; `rng` is the data stream of the config's seed.
    """
    if d.csv:
        raw, where = _from_csv(Path(d.csv), d.target, d.features), d.csv
    elif d.builtin in SHIPPED:
        raw, where = _from_csv(SHIPPED[d.builtin]), f"{source}: data.builtin {d.builtin}"
    elif d.builtin:
        raw = GENERATORS[d.builtin](d.n_samples, d.noise, d.classes, rng)
        where = f"{source}: data.builtin {d.builtin}"
    else:
        raw, where = _from_inline(d, model.output_activation, source), f"{source}: data.targets"
    Y, class_names = _targets(raw, model, where)
    X = raw.X
    if len(X) == 0:
        raise DataError(f"{where}: the data set is empty")
    layers = model.layers
    if X.shape[1] != layers[0]:
        raise DataError(f"{source}: model.layers[0] is {layers[0]} but the data has {X.shape[1]} inputs")
    if Y.shape[1] != layers[-1]:
        raise DataError(f"{source}: model.layers[-1] is {layers[-1]} but the data has {Y.shape[1]} targets per sample")
    _check_for_loss(Y, loss, f"{source}: data.targets")
    classification = is_classification(Y, model.output_activation)
    X_val = Y_val = None
    train_idx = np.arange(len(X))
    if d.validation:
        train_idx, val_idx = _split(Y, classification, d.validation, rng)
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise DataError(f"{source}: data.validation: {d.validation} of {len(X)} samples leaves an empty split")
        X_val, Y_val = X[val_idx], Y[val_idx]
    elif d.validation_csv:
        vraw = _from_csv(Path(d.validation_csv), d.target, d.features)
        Y_val, _ = _targets(vraw, model, d.validation_csv, raw.class_names)
        X_val = vraw.X
        if X_val.shape[1] != X.shape[1] or Y_val.shape[1] != Y.shape[1]:
            raise DataError(f"{d.validation_csv}: columns do not match the training data")
    X_train, Y_train = X[train_idx], Y[train_idx]
    scaler = Scaler.fit(d.scale, X_train)
    return Dataset(
        X=scaler.apply(X_train).astype(dtype),
        Y=Y_train.astype(dtype),
        X_val=None if X_val is None else scaler.apply(X_val).astype(dtype),
        Y_val=None if Y_val is None else Y_val.astype(dtype),
        feature_names=raw.feature_names,
        class_names=class_names if classification else None,
        classification=classification,
        scaler=scaler,
        X_raw=X_train,
        X_val_raw=X_val,
    )


def load_labelled_csv(
    path: Path,
    d: DataConfig,
    model: ModelConfig,
    loss: str,
    feature_names: list,
    class_names: Optional[list],
    classification: bool,
    dtype: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs (not scaled) and targets of a CSV laid out like a run's training data: the
    config's target and feature columns (or the columns named like its inputs), class names
    mapped onto the training classes' order; targets the run's training would have refused,
    or that are no class of a classifier, are a DataError. For `evaluate`."""
    raw = _from_csv(path, d.target, d.features, known=feature_names)
    if raw.class_names is not None and class_names is None:
        kind = "numbered classes" if classification else "numbers (a regression)"
        raise DataError(f"{path}: class '{raw.class_names[0]}': the run was trained on {kind}, not on class names")
    Y, _ = _targets(raw, model, str(path), class_names)
    layers = model.layers
    if raw.X.shape[1] != layers[0]:
        raise DataError(f"{path}: {raw.X.shape[1]} input columns, but the network takes {layers[0]} inputs")
    if Y.shape[1] != layers[-1]:
        raise DataError(f"{path}: {Y.shape[1]} targets per sample, but the network has {layers[-1]} outputs")
    if len(raw.X) == 0:
        raise DataError(f"{path}: the data set is empty")
    _check_for_loss(Y, loss, str(path))
    if classification and not is_classification(Y, model.output_activation):
        row = int(np.argmax(np.any((Y != 0) & (Y != 1), axis=1)))
        raise DataError(
            f"{path}: target {row + 1}: {', '.join(f'{v:g}' for v in Y[row])} is not a class of the run "
            "(a classifier with sigmoid outputs: 0 or 1)"
        )
    return raw.X.astype(dtype), Y.astype(dtype)


def read_inputs_csv(path: Path, feature_names: list) -> np.ndarray:
    """Read inputs for predict: columns named like the training features (or all columns)."""
    table = read_csv(path)
    header = table.header
    if all(name in header for name in feature_names):
        cols = [header.index(name) for name in feature_names]
    elif len(header) == len(feature_names):
        cols = list(range(len(header)))
    else:
        raise DataError(f"{path}: expected the columns {', '.join(feature_names)} (got {', '.join(header)})")
    return table.numeric(cols)
