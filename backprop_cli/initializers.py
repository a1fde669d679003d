"""Weight initializers, looked up by name in `INITIALIZERS`.

Each takes a NumPy Generator and a layer's (n_out, n_in) and returns (weights, biases),
weights shaped (n_out, n_in) (row i holds the weights into neuron i), biases (n_out,).

| name    | weights                          | biases   |
|---------|----------------------------------|----------|
| uniform | U[0, 1)                          | U[0, 1)  |
| normal  | N(0, 1)                          | N(0, 1)  |
| xavier  | U(-r, r), r = sqrt(6 / (in+out)) | 0        |
| he      | N(0, 2 / in)                     | 0        |
| zeros   | 0                                | 0        |
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
from numpy.random import Generator, SeedSequence, default_rng

# numpy.random is imported here, with the engine, not lazily on first use: a Ctrl-C that lands
# during its import is lost inside the extension modules' initialization, so the first
# random_streams() call must not be the one that imports it (it runs after a command has said
# it started).

Params = tuple[np.ndarray, Optional[np.ndarray]]  # one layer: weights (out, in), biases (out,) or None


def _uniform(rng: Generator, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((n_out, n_in)), rng.random(n_out)


def _normal(rng: Generator, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)


def _xavier(rng: Generator, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, (n_out, n_in)), np.zeros(n_out)


def _he(rng: Generator, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in), np.zeros(n_out)


def _zeros(rng: Generator, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n_out, n_in)), np.zeros(n_out)


INITIALIZERS: dict[str, Callable[[Generator, int, int], tuple[np.ndarray, np.ndarray]]] = {
    "uniform": _uniform,
    "normal": _normal,
    "xavier": _xavier,
    "he": _he,
    "zeros": _zeros,
}


def random_streams(seed: int) -> list[Generator]:
    """Independent generators for (data, initial weights, shuffling, dropout masks), all
    derived from `seed` (each stream's numbers do not depend on how many streams there are).

    Separate streams mean that, for example, changing the batch size never changes the
    initial weights.
    """
    return [default_rng(s) for s in SeedSequence(seed).spawn(4)]


def init_params(name: str, sizes: Sequence[int], rng: Generator, bias: bool = True) -> list[Params]:
    """Initial [(weights (out, in), biases (out,) or None), ...] for a network of `sizes`."""
    layers: list[Params] = []
    for n_out, n_in in zip(sizes[1:], sizes[:-1]):
        w, b = INITIALIZERS[name](rng, n_out, n_in)
        layers.append((w, b if bias else None))
    return layers
