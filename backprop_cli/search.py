"""Random and quasi-random search: trials drawn from distributions over config keys.

A space is `KEY=DIST` items: `log:A:B` (log-uniform on [A, B]), `uniform:A:B`, `int:A:B`
(integers A to B, each as likely), `choice:V1,V2,...` (values read as `--set` reads one).
`sample` draws N trials from a seeded random generator (`random`) or from a scrambled Sobol
sequence (`sobol`, through SciPy's `scipy.stats.qmc`: the `search` extra), one point of the
unit cube per trial mapped through each key's distribution. The trials then train as a grid's
cells do: trials that share a batchable group are models of one pass.

`tpe` (Optuna's Tree-structured Parzen Estimator: the `optuna` extra) is adaptive: `adaptive`
asks Optuna's ask-and-tell interface for a generation of trials at a time, has them trained
(as the models of batched passes) and tells their results back before asking for the next,
with the Optuna study in an SQLite file that `optuna-dashboard` and Optuna's plots can open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from backprop_cli.config import parse_value
from backprop_cli.errors import ConfigError, OverrideError

SAMPLERS = ("random", "sobol", "tpe")
OPTUNA_FILE = "optuna.db"  # the Optuna study of a tpe search, in the search's folder


@dataclass
class Dist:
    """One key's distribution: kind (log, uniform, int, choice) and its bounds or choices."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()

    def map(self, u: np.ndarray) -> list:
        """Points u in [0, 1) to values of this distribution."""
        if self.kind == "log":
            return [float(v) for v in np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low)))]
        if self.kind == "uniform":
            return [float(v) for v in self.low + u * (self.high - self.low)]
        if self.kind == "int":
            span = int(self.high) - int(self.low) + 1
            return [int(self.low) + min(int(v * span), span - 1) for v in u]
        return [self.choices[min(int(v * len(self.choices)), len(self.choices) - 1)] for v in u]


def parse_space(items: Sequence[str]) -> list[Dist]:
    """`KEY=DIST` items as distributions; a malformed one is an OverrideError naming it."""
    found: list[Dist] = []
    for item in items:
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise OverrideError(f"--space {item!r}: not UTF-8 text") from None
        key, sep, spec = item.partition("=")
        key, spec = key.strip(), spec.strip()
        kind, _, rest = spec.partition(":")
        where = f"--space {item}"
        if not sep or not key or not rest:
            raise OverrideError(f"{where}: expected KEY=DIST, DIST one of log:A:B, uniform:A:B, int:A:B, choice:V1,V2")
        if any(d.key == key for d in found):
            raise OverrideError(f"--space {key}: given twice")
        if key == "seed":
            raise OverrideError("--space seed: use --seeds START:STOP for the seed axis")
        if kind == "choice":
            values = parse_value(f"[{rest}]", f"--space {key}")
            if not isinstance(values, list) or not values:
                raise OverrideError(f"{where}: expected choice:V1,V2,...")
            found.append(Dist(key, kind, choices=tuple(values)))
            continue
        if kind not in ("log", "uniform", "int"):
            raise OverrideError(f"{where}: unknown distribution {kind!r}; one of log, uniform, int, choice")
        parts = rest.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            low, high = (int(p) for p in parts) if kind == "int" else (float(p) for p in parts)
        except ValueError:
            example = "int:2:64" if kind == "int" else f"{kind}:0.001:1"
            raise OverrideError(f"{where}: expected {kind}:LOW:HIGH, e.g. {example}") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low > high or (kind == "log" and low <= 0):
            need = "0 < LOW <= HIGH" if kind == "log" else "LOW <= HIGH"
            raise OverrideError(f"{where}: an empty range; needs {need}")
        found.append(Dist(key, kind, float(low), float(high)))
    if not found:
        raise OverrideError("give at least one --space KEY=DIST")
    return found


def sample(space: Sequence[Dist], trials: int, sampler: str, seed: int) -> list[dict[str, Any]]:
    """`trials` points of the space, each {key: value}, from `sampler` seeded by `seed`."""
    if trials < 1:
        raise ConfigError(f"--trials {trials}: must be >= 1")
    d = len(space)
    if sampler == "sobol":
        try:
            from scipy.stats import qmc
        except ImportError:
            raise ConfigError("--sampler sobol needs SciPy: pip install 'backprop[search]'") from None
        engine = qmc.Sobol(d, scramble=True, seed=seed)
        # Sobol points are balanced in blocks of powers of two: draw that many, keep `trials`
        u = engine.random(2 ** max(0, math.ceil(math.log2(trials))))[:trials]
    elif sampler == "random":
        u = np.random.default_rng(seed).random((trials, d))
    elif sampler == "tpe":
        raise ConfigError("--sampler tpe is adaptive: its trials come from `adaptive`, a generation at a time")
    else:
        raise ConfigError(f"--sampler {sampler}: one of {', '.join(SAMPLERS)}")
    columns = [dist.map(u[:, j]) for j, dist in enumerate(space)]
    return [{dist.key: columns[j][t] for j, dist in enumerate(space)} for t in range(trials)]


def optuna_distributions(space: Sequence[Dist]) -> dict[str, Any]:
    """The space as Optuna's distributions (ConfigError where Optuna cannot hold a choice)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("--sampler tpe needs Optuna: pip install 'backprop[optuna]'") from None
    found: dict[str, Any] = {}
    for d in space:
        if d.kind == "log":
            found[d.key] = optuna.distributions.FloatDistribution(d.low, d.high, log=True)
        elif d.kind == "uniform":
            found[d.key] = optuna.distributions.FloatDistribution(d.low, d.high)
        elif d.kind == "int":
            found[d.key] = optuna.distributions.IntDistribution(int(d.low), int(d.high))
        else:
            if not all(v is None or isinstance(v, (bool, int, float, str)) for v in d.choices):
                raise ConfigError(f"--space {d.key}: --sampler tpe takes choices of numbers and names only")
            found[d.key] = optuna.distributions.CategoricalDistribution(d.choices)
    return found


Trainer = Callable[[list[dict[str, Any]]], list[Optional[float]]]


def adaptive(
    space: Sequence[Dist],
    trials: int,
    generation: int,
    seed: int,
    storage: Path,
    maximize: bool,
    train: Trainer,
) -> tuple[list[dict[str, Any]], bool]:
    """`trials` points chosen by Optuna's TPE sampler (seeded by `seed`), `generation` at a
    time: `train` gets a generation's points and returns each one's result (None: it did not
    train to a finite value, told to Optuna as failed). The Optuna study is kept in the SQLite
    file `storage`. Returns every point asked, in order, and whether a Ctrl-C (a
    KeyboardInterrupt from `train`) ended the search early; that generation's trials are told
    failed."""
    distributions = optuna_distributions(space)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="backprop",
        storage=f"sqlite:///{storage}",
        sampler=optuna.samplers.TPESampler(seed=seed),
        direction="maximize" if maximize else "minimize",
    )
    points: list[dict[str, Any]] = []
    while len(points) < trials:
        asked = [study.ask(distributions) for _ in range(min(generation, trials - len(points)))]
        batch = [{d.key: t.params[d.key] for d in space} for t in asked]
        points += batch
        try:
            values = train(batch)
        except KeyboardInterrupt:
            for t in asked:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            return points, True
        for t, value in zip(asked, values):
            if value is None or not math.isfinite(value):
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(t, value)
    return points, False
