"""How well trained weights do on a labelled data set: the loss, and for classifiers accuracy,
per-class precision, recall and F1 with a confusion matrix; for regression MAE, RMSE and R^2.

Pure NumPy over a network's outputs; the run folder files and the tables live above it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from backprop_cli.losses import LOSSES
from backprop_cli.metrics import class_indices
from backprop_cli.network import Network


def _ratio(num: float, den: float) -> Optional[float]:
    """num / den, or None where nothing was counted (a class never predicted has no precision)."""
    return float(num / den) if den else None


def classification_scores(predicted: np.ndarray, actual: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, the confusion matrix (rows: true class, columns: predicted class), and per
    class precision, recall, F1 and support; macro averages over the classes that occur."""
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (actual, predicted), 1)
    classes: list[dict[str, Any]] = []
    for c, name in enumerate(names):
        hits = int(confusion[c, c])
        precision = _ratio(hits, confusion[:, c].sum())
        recall = _ratio(hits, confusion[c].sum())
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes.append(
            {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(confusion[c].sum())}
        )
    present = [row for row in classes if row["support"]]

    def macro(key: str) -> Optional[float]:
        values = [float(row[key] or 0.0) for row in present]
        return sum(values) / len(values) if values else None

    return {
        "accuracy": float(np.trace(confusion) / confusion.sum()) if confusion.sum() else None,
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
        "classes": classes,
        "confusion_matrix": confusion.tolist(),
    }


def regression_scores(outputs: np.ndarray, Y: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE and R^2 over every output value (R^2 is None for constant targets)."""
    error = outputs - Y
    sst = float(((Y - Y.mean(axis=0)) ** 2).sum())
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - float((error**2).sum()) / sst if sst > 0 else None,
    }


def evaluate(
    net: Network,
    X: np.ndarray,
    Y: np.ndarray,
    loss: str,
    classification: bool,
    class_names: Optional[Sequence[str]] = None,
    model: int = 0,
) -> dict[str, Any]:
    """Scores of one model's weights on inputs X (already scaled as in training) and targets Y.

    {"samples", "loss_function", "loss", and "accuracy", "classes", "confusion_matrix", ... for
    classifiers or "mae", "rmse", "r2" otherwise}. The loss is the training loss's definition,
    computed from the logits as in training.
    """
    logits, outputs = net.logits_and_outputs(X, model)
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(LOSSES[loss].value(outputs[None], Y, logits[None])[0])
    found: dict[str, Any] = {"samples": int(len(X)), "loss_function": loss, "loss": value}
    if classification:
        n_classes = max(Y.shape[1], 2)
        names = [str(n) for n in class_names] if class_names and len(class_names) == n_classes else None
        names = names or [str(c) for c in range(n_classes)]
        predicted = class_indices(outputs).astype(np.int64)
        actual = class_indices(Y).astype(np.int64)
        found.update(classification_scores(predicted, actual, names))
    else:
        found.update(regression_scores(outputs, Y))
    return found
