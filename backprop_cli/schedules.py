"""Learning-rate schedules, looked up by name in `SCHEDULES`.

A schedule gives the multiplier of each model's base learning rate at each epoch. Epochs are
counted from the run's first epoch (a run continued with `--from` goes on counting), and
`horizon` is the last epoch the training goes to. Like the optimizers, each schedule takes
only the settings it uses; `settings` names them (they are config keys under `training`).

| name        | factor at epoch e                                                          |
|-------------|----------------------------------------------------------------------------|
| constant    | 1                                                                          |
| step        | gamma ** floor((e - 1) / step_size)                                        |
| exponential | gamma ** (e - 1)                                                           |
| cosine      | f + (1 - f) (1 + cos(pi (e - 1) / (horizon - 1))) / 2, f = lr_min / lr: 1 -> f |

Factors are per model: cosine's floor f is each model's own `lr_min / lr` (a (K, 1) column
for K models with their own base rates), so every model of a batched pass follows the
schedule that a plain run at its rate follows.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np

Factor = Union[float, np.ndarray]  # one factor for every model, or a (K, 1) column


class Schedule:
    settings: tuple[str, ...] = ()

    def factor(self, epoch: int, horizon: int) -> Factor:
        raise NotImplementedError


class Constant(Schedule):
    def factor(self, epoch: int, horizon: int) -> Factor:
        return 1.0


class Step(Schedule):
    settings = ("lr_step_size", "lr_gamma")

    def __init__(self, lr_step_size: int, lr_gamma: float) -> None:
        self.step_size, self.gamma = lr_step_size, lr_gamma

    def factor(self, epoch: int, horizon: int) -> Factor:
        return float(self.gamma ** ((epoch - 1) // self.step_size))


class Exponential(Schedule):
    settings = ("lr_gamma",)

    def __init__(self, lr_gamma: float) -> None:
        self.gamma = lr_gamma

    def factor(self, epoch: int, horizon: int) -> Factor:
        return float(self.gamma ** (epoch - 1))


class Cosine(Schedule):
    settings = ("lr_min", "learning_rate")

    def __init__(self, lr_min: float, learning_rate: Factor) -> None:
        # each model's own floor: lr_min over its own base rate
        self.floor: Factor = lr_min / learning_rate

    def factor(self, epoch: int, horizon: int) -> Factor:
        progress = (epoch - 1) / max(horizon - 1, 1)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "step": Step,
    "exponential": Exponential,
    "cosine": Cosine,
}
