"""Classes from outputs, and the per-epoch metrics besides the loss.

`class_indices` is the one place the class decision is written: the argmax for several
outputs, the threshold 0.5 for a single (sigmoid) output.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

THRESHOLD = 0.5
# scores where more is better, between 0 and 1 (R^2 at most 1): sorted descending, drawn on a
# linear scale, printed with 4 decimals; a val_ prefix names the same score on validation data
SCORES = ("accuracy", "r2", "precision", "recall", "f1")
# the metrics a history records besides the loss: classifiers, then regressions
CLASSIFICATION_METRICS = ("accuracy",)
REGRESSION_METRICS = ("mae", "r2")
# every column of a study's table besides the losses, in table order (the one list of them)
SCORES_AND_ERRORS = (
    *CLASSIFICATION_METRICS,
    *REGRESSION_METRICS,
    "val_loss",
    *(f"val_{c}" for c in (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)),
)


def is_score(column: str) -> bool:
    """Whether a history or summary column is a score (more is better), not a loss or error."""
    return column.removeprefix("val_").removeprefix("macro_") in SCORES


def epochs_to(losses: np.ndarray, epochs: np.ndarray, target: float) -> Optional[int]:
    """The first epoch whose recorded loss is at or below `target` (None if never): what
    "reached the target" means in every table, plot and summary."""
    hits = np.flatnonzero(losses <= target)
    return int(epochs[hits[0]]) if hits.size else None


def class_indices(outputs: np.ndarray) -> np.ndarray:
    """The predicted class of each row of outputs (..., n_out): int indices, or for one output
    a bool array (True is class 1)."""
    if outputs.shape[-1] > 1:
        return outputs.argmax(axis=-1)
    return outputs[..., 0] > THRESHOLD


def class_name(output: np.ndarray, class_names: Optional[Sequence[str]]) -> str | int:
    """The class of one output row (n_out,): its name where known, else its index."""
    idx = int(class_indices(output))
    if class_names and idx < len(class_names):
        return class_names[idx]
    return idx


def output_names(n_out: int, class_names: Optional[Sequence], classification: bool) -> list[str]:
    """Names of a network's outputs: the class names where each output is one class's
    probability (several outputs, one per named class), else output, or output1, output2, ..."""
    if classification and class_names and len(class_names) == n_out > 1:
        return [str(name) for name in class_names]
    return ["output"] if n_out == 1 else [f"output{j + 1}" for j in range(n_out)]


def metric_text(column: str, value: float) -> str:
    """A loss or metric in the one format every command and report uses: scores (accuracy,
    precision, recall, F1, R^2) with 4 decimals, so 1 and 0.9833 line up as 1.0000 and 0.9833;
    losses, errors and anything else in 6 significant digits."""
    if is_score(column) and math.isfinite(value) and abs(value) < 1e6:  # an R^2 of -1e300: 6 digits, not 300
        return f"{value:.4f}"
    return f"{value:.6g}"


def target_names(outputs: Sequence[str]) -> list[str]:
    """The target column beside each output column: target, target1, ... or `target setosa`."""
    return [name.replace("output", "target", 1) if name.startswith("output") else f"target {name}" for name in outputs]


class Metrics:
    """Per-epoch metrics besides the loss, from outputs (K, n, n_out) and targets (n, n_out).

    Classification: accuracy. Regression with more than one sample and non-constant targets:
    mae and r2. `sums` returns per-model raw sums over a batch (hit counts; absolute and
    squared errors), which the loop records as they are; `finish` turns raw epoch sums into
    metric values, once, after the loop.
    """

    def __init__(self, Y: np.ndarray, classification: bool) -> None:
        self.names: list[str] = []
        self.classification = classification
        self.multi = Y.shape[1] > 1
        self.n_values = Y.shape[0] if (classification and Y.shape[1] > 1) else Y.size
        self.Y = Y
        self.sst = 1.0
        if classification:
            self.names = list(CLASSIFICATION_METRICS)
            self.labels = class_indices(Y)
            if not self.multi:
                # one output: compare (K, n, 1) outputs with a (n, 1) column, no slicing per epoch
                self.labels = self.labels[:, None]
        elif Y.shape[0] > 1 and float(((Y - Y.mean(axis=0)) ** 2).sum()) > 0:
            self.names = list(REGRESSION_METRICS)
            self.sst = float(((Y - Y.mean(axis=0)) ** 2).sum())

    def sums(self, out: np.ndarray, Y: np.ndarray) -> list:
        """Raw per-model sums (K,) over one batch; `Y` may be a minibatch of the targets."""
        if self.classification:
            if self.multi:
                hits = out.argmax(axis=-1) == (self.labels if Y is self.Y else class_indices(Y))
            else:  # class_indices' threshold, kept as a (K, n, 1) array: two NumPy calls in the hot loop
                hits = (out > THRESHOLD) == (self.labels if Y is self.Y else Y > THRESHOLD)
            if len(out) == 1:
                # one model: count_nonzero skips the bool -> int cast of a reduction
                return [np.count_nonzero(hits)]
            return [np.add.reduce(hits, axis=tuple(range(1, hits.ndim)))]
        err = out - Y
        return [np.add.reduce(np.abs(err), axis=(1, 2)), np.add.reduce(err * err, axis=(1, 2))]

    def finish(self, sums: list) -> list:
        """Raw sums (arrays of any shape) -> metric values in the order of `names`."""
        if self.classification:
            return [sums[0] / self.n_values]
        return [sums[0] / self.n_values, 1.0 - sums[1] / self.sst]
