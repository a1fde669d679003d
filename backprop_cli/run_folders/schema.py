"""What a run folder's JSON files must hold, checked on every read: a file of the wrong shape
or types is one error naming the file and the field (RunError), never a traceback later.

The models name the fields backprop itself reads and allow the rest (a summary carries every
history column and whatever `extra` a command recorded), so files stay the contract that
users' scripts read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backprop_cli.errors import RunError
from backprop_cli.files import read_json


class _File(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class SavedWeights(_File):
    """Which weights a run saved (final, best or restored) and their epoch, loss and accuracy."""

    weights: Optional[str] = None
    epoch: Optional[int] = None
    loss: Optional[float] = None
    accuracy: Optional[float] = None


class StudyModel(_File):
    """One model of a study's summary: a sweep's rate, a seed study's seed, a grid's cell."""

    status: str = "unknown"
    learning_rate: Optional[float] = None
    seed: Optional[int] = None
    run: Optional[str] = None
    final_loss: Optional[float] = None
    best_loss: Optional[float] = None
    epochs_to_target: Optional[int] = None
    epochs_run: Optional[int] = None


class Summary(_File):
    """summary.json of a run or of a study (`kind`: sweep, seeds, grid or search)."""

    name: Optional[str] = None
    status: str = "unknown"
    kind: Optional[Literal["sweep", "seeds", "grid", "search"]] = None  # a study's; a run has none
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    stop_reason: Optional[str] = None
    epochs_run: Optional[int] = None
    last_epoch: Optional[int] = None
    final_loss: Optional[float] = None
    best_loss: Optional[float] = None
    accuracy: Optional[float] = None
    learning_rate: Optional[Union[float, list[float]]] = None
    seed: Optional[int] = None
    duration_s: Optional[float] = None
    models: Optional[list[StudyModel]] = None
    pid: Optional[int] = None
    host: Optional[str] = None
    learning_rates: Optional[list[float]] = None
    versions: Optional[dict[str, Any]] = None
    saved_weights: Optional[SavedWeights] = None
    start_epoch: Optional[int] = None
    best_epoch: Optional[int] = None
    diverged_at_epoch: Optional[int] = None
    diagnostics: Optional[dict[str, Any]] = None
    protocol: Optional[str] = None
    sort: Optional[str] = None
    target: Optional[float] = None


class ClassScores(_File):
    name: str = Field(alias="class")
    precision: Optional[float]  # None: a class never predicted (or never present)
    recall: Optional[float]
    f1: Optional[float]
    support: int


class Evaluation(_File):
    """evaluation.json (or evaluation-NAME.json): a run's scores on one data set."""

    data: str = ""
    samples: Optional[int] = None
    loss_function: Optional[str] = None
    loss: Optional[float] = None
    accuracy: Optional[float] = None
    macro_f1: Optional[float] = None
    mae: Optional[float] = None
    rmse: Optional[float] = None
    r2: Optional[float] = None
    classes: Optional[list[ClassScores]] = None


class Scaling(_File):
    kind: Literal["none", "standard", "minmax"] = "none"
    shift: Optional[list[float]] = None
    factor: Optional[list[float]] = None


class DataMeta(_File):
    """data.json: what predict needs to read inputs and name classes."""

    feature_names: list[str] = []
    class_names: Optional[list[str]] = None
    classification: bool = False
    n_outputs: Optional[int] = None
    scaling: Scaling = Scaling()
    input_range: Optional[list[list[float]]] = None  # [smallest, largest] training value per input


class Layer(_File):
    weights: list[list[float]]
    biases: Optional[list[float]] = None


class Weights(_File):
    """weights.json: one matrix (out x in) and bias list per layer."""

    layers: list[Layer]


M = TypeVar("M", bound=BaseModel)


def read(path: Path, model: type[M]) -> M:
    """`path` read as JSON and checked against `model`; RunError naming the file and field."""
    data = read_json(path)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        raise RunError(f"{path}: {where}: {err['msg'][0].lower()}{err['msg'][1:]}{shown}") from None


def read_dict(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """`read`, as a plain dict of what the file holds, checked (extras included, no defaults added)."""
    return read(path, model).model_dump(exclude_unset=True, by_alias=True)
