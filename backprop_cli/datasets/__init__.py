"""Built-in data sets, looked up by name in `GENERATORS` (made from the config's seed) and
`SHIPPED` (CSV files in this folder). `BUILTIN_DATASETS` is the one list of their names.

Each generator takes (n_samples, noise, classes, rng) and returns `RawData`: inputs (n, n_in)
and either a float target block or integer class labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

DATASETS_DIR = Path(__file__).parent
SHIPPED = {"iris": DATASETS_DIR / "iris.csv", "digits": DATASETS_DIR / "digits.csv.gz"}


@dataclass
class RawData:
    """Data before splitting: inputs, and targets as a float block or as class labels."""

    X: np.ndarray
    Y: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None  # integer class labels (n,)
    class_names: Optional[list] = None
    feature_names: list = field(default_factory=list)


def _truth_table(y: list[int]) -> Callable[..., RawData]:
    def make(n: int, noise: float, classes: int, rng: np.random.Generator) -> RawData:
        X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
        return RawData(X, Y=np.array(y, float)[:, None], feature_names=["x1", "x2"])

    return make


def _sine(n: int, noise: float, classes: int, rng: np.random.Generator) -> RawData:
    x = rng.uniform(-np.pi, np.pi, n)
    return RawData(x[:, None], Y=(np.sin(x) + noise * rng.standard_normal(n))[:, None], feature_names=["x"])


def _circles(n: int, noise: float, classes: int, rng: np.random.Generator) -> RawData:
    labels = np.arange(n) % 2
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(labels == 0, 1.0, 0.5)
    X = np.c_[radius * np.cos(angle), radius * np.sin(angle)] + noise * rng.standard_normal((n, 2))
    return RawData(X, labels=labels, class_names=["outer", "inner"], feature_names=["x1", "x2"])


def _moons(n: int, noise: float, classes: int, rng: np.random.Generator) -> RawData:
    labels = np.arange(n) % 2
    t = rng.uniform(0, np.pi, n)
    X: np.ndarray = np.where(labels[:, None] == 0, np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])  # type: ignore[assignment]
    X = X + noise * rng.standard_normal((n, 2))
    return RawData(X, labels=labels, class_names=["upper", "lower"], feature_names=["x1", "x2"])


def _spirals(n: int, noise: float, classes: int, rng: np.random.Generator) -> RawData:
    labels = np.arange(n) % classes
    r = rng.uniform(0.05, 1.0, n)
    theta = labels * 2 * np.pi / classes + 4.0 * r + noise * rng.standard_normal(n)
    X = np.c_[r * np.sin(theta), r * np.cos(theta)]
    return RawData(X, labels=labels, class_names=[f"arm{i}" for i in range(classes)], feature_names=["x1", "x2"])


def _blobs(n: int, noise: float, classes: int, rng: np.random.Generator) -> RawData:
    centers = rng.uniform(-5, 5, (classes, 2))
    labels = np.arange(n) % classes
    X = centers[labels] + (1.0 + noise) * rng.standard_normal((n, 2))
    return RawData(X, labels=labels, class_names=[f"blob{i}" for i in range(classes)], feature_names=["x1", "x2"])


GENERATORS: dict[str, Callable[..., RawData]] = {
    "xor": _truth_table([0, 1, 1, 0]),
    "and": _truth_table([0, 0, 0, 1]),
    "or": _truth_table([0, 1, 1, 1]),
    "circles": _circles,
    "moons": _moons,
    "spirals": _spirals,
    "blobs": _blobs,
    "sine": _sine,
}

BUILTIN_DATASETS: tuple[str, ...] = tuple(GENERATORS) + tuple(SHIPPED)
