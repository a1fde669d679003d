"""Learning-rate schedules, looked up by name in `SCHEDULES`.

A schedule gives the multiplier of the base learning rate at each epoch (1-based, counted
from the start of this training call). Like the optimizers, each takes only the settings it
uses; `settings` names them (they are config keys under `training`).

| name        | factor at epoch e                                                        |
|-------------|--------------------------------------------------------------------------|
| constant    | 1                                                                        |
| step        | gamma ** floor((e - 1) / step_size)                                      |
| exponential | gamma ** (e - 1)                                                         |
| cosine      | f + (1 - f) (1 + cos(pi (e - 1) / (E - 1))) / 2, f = lr_min / lr: 1 -> f |
"""

from __future__ import annotations

import math


class Schedule:
    settings: tuple[str, ...] = ()

    def factor(self, epoch: int) -> float:
        raise NotImplementedError


class Constant(Schedule):
    def factor(self, epoch: int) -> float:
        return 1.0


class Step(Schedule):
    settings = ("lr_step_size", "lr_gamma")

    def __init__(self, lr_step_size: int, lr_gamma: float) -> None:
        self.step_size, self.gamma = lr_step_size, lr_gamma

    def factor(self, epoch: int) -> float:
        return float(self.gamma ** ((epoch - 1) // self.step_size))


class Exponential(Schedule):
    settings = ("lr_gamma",)

    def __init__(self, lr_gamma: float) -> None:
        self.gamma = lr_gamma

    def factor(self, epoch: int) -> float:
        return float(self.gamma ** (epoch - 1))


class Cosine(Schedule):
    settings = ("lr_min", "learning_rate", "epochs")

    def __init__(self, lr_min: float, learning_rate: float, epochs: int) -> None:
        self.floor, self.epochs = lr_min / learning_rate, epochs

    def factor(self, epoch: int) -> float:
        progress = (epoch - 1) / max(self.epochs - 1, 1)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "step": Step,
    "exponential": Exponential,
    "cosine": Cosine,
}
