"""The config's schema: strict pydantic models, and the checks across fields.

Names of activations, losses, optimizers, schedules, initializers and data sets come from
their registries, so a new entry there is a valid config value at once.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr
from typing_extensions import Annotated

from backprop_cli.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from backprop_cli.datasets import BUILTIN_DATASETS
from backprop_cli.initializers import INITIALIZERS
from backprop_cli.losses import LOSSES
from backprop_cli.network import frozen_mask
from backprop_cli.optimizers import OPTIMIZERS
from backprop_cli.schedules import SCHEDULES

# The names below are Literal types built from the registries' keys at import time; mypy cannot
# read a Literal made from an expression, hence the `type: ignore[valid-type]` on those fields.

PosInt = Annotated[int, Field(ge=1)]
DIAGNOSTICS_RECORDS = 200  # training.diagnostics: true records about this many times over a run
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class _Strict(BaseModel):
    # strict: no "10" -> 10 or true -> 1; forbid: unknown keys are errors; no inf or nan.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    layers: list[PosInt] = Field(min_length=2, description="input size, hidden sizes..., output size")
    activation: Union[str, list[str]] = Field("sigmoid", description="hidden layers: one name, or one per hidden layer")
    output_activation: Literal[tuple(ACTIVATIONS)] = Field("sigmoid", description="activation of the output layer")  # type: ignore[valid-type]
    bias: bool = Field(True, description="false: no bias terms at all")
    init: Literal[tuple(INITIALIZERS)] = Field("uniform", description="initial weights")  # type: ignore[valid-type]
    weights: Optional[list[list[list[float]]]] = Field(
        None, description="explicit initial weights, one out x in matrix per layer"
    )
    biases: Optional[list[list[float]]] = Field(None, description="explicit initial biases, one list per layer")
    init_from: Optional[str] = Field(
        None,
        description="initial weights from a file (.onnx, .safetensors, .npz, in backprop export's layouts) or a run "
        "folder, relative to the config file",
    )
    dropout: Union[Fraction, list[Fraction]] = Field(
        0.0,
        description="inverted dropout of hidden units while training: a probability P in [0, 1), or one per hidden layer",
    )

    # the layers read from init_from when the config was loaded (see config.loader)
    _imported: Optional[list] = PrivateAttr(None)

    @property
    def imported(self) -> Optional[list]:
        """init_from's layers [(weights out x in, biases or None), ...], read and checked at load."""
        return self._imported

    @property
    def dropout_rates(self) -> list[float]:
        """One dropout probability per hidden layer."""
        p = self.dropout
        return [float(v) for v in p] if isinstance(p, list) else [float(p)] * (len(self.layers) - 2)

    @property
    def activations(self) -> list[str]:
        """One activation name per layer: the hidden ones (one name repeated, or the list), then the output's."""
        act = self.activation
        hidden = list(act) if isinstance(act, list) else [act] * (len(self.layers) - 2)
        return hidden + [self.output_activation]


class EarlyStoppingConfig(_Strict):
    monitor: Literal["val_loss", "loss", "val_accuracy", "accuracy"] = Field(
        "val_loss", description="history column to watch"
    )
    patience: PosInt = Field(20, description="epochs without improvement before stopping")
    min_delta: Annotated[float, Field(ge=0)] = Field(0.0, description="smallest change that counts as improvement")
    restore_best: bool = Field(True, description="end with the best epoch's weights")


class DiagnosticsConfig(_Strict):
    every: Optional[PosInt] = Field(
        None,
        description="epochs between records (the start and the end are always recorded); "
        "null: about 200 over the run (every epochs // 200, at least 1)",
    )


def _diagnostics_switch(value: Any) -> Any:
    """`diagnostics: true` is {every: null} and `false` none at all; a mapping as it is."""
    return {} if value is True else None if value is False else value


def _epoch_keys(value: Any) -> Any:
    """lr_changes' epochs as numbers: JSON (and so a dumped config) can only write them as
    strings of digits."""
    if isinstance(value, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in value.items()}
    return value


class TrainingConfig(_Strict):
    loss: Literal[tuple(LOSSES)] = Field("mse", description="loss function")  # type: ignore[valid-type]
    learning_rate: Union[PosFloat, list[PosFloat]] = Field(
        0.1, description="step size: one rate, or one per layer (the weights and biases of layer l take rate l)"
    )
    epochs: PosInt = Field(1000, description="passes over the training data")
    batch_size: Optional[PosInt] = Field(None, description="samples per update; null = full batch")
    optimizer: Literal[tuple(OPTIMIZERS)] = Field("sgd", description="update rule")  # type: ignore[valid-type]
    momentum: Fraction = Field(0.9, description="momentum: velocity decay")
    nesterov: bool = Field(False, description="momentum: Nesterov's variant")
    rho: Fraction = Field(0.9, description="rmsprop: squared-gradient decay")
    beta1: Fraction = Field(0.9, description="adam: first-moment decay")
    beta2: Fraction = Field(0.999, description="adam: second-moment decay")
    eps: PosFloat = Field(1e-8, description="rmsprop and adam: denominator guard")
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.0, description="L2 penalty added to every gradient")
    l1: Annotated[float, Field(ge=0)] = Field(0.0, description="L1 penalty: l1 * sign(w) added to every gradient")
    clip_grad_norm: Optional[PosFloat] = Field(
        None, description="scale each model's gradient down to this global norm when above it"
    )
    clip_grad_value: Optional[PosFloat] = Field(None, description="clip every gradient to [-V, V]")
    lr_schedule: Literal[tuple(SCHEDULES)] = Field("constant", description="learning-rate schedule")  # type: ignore[valid-type]
    lr_changes: Annotated[Optional[dict[PosInt, PosFloat]], BeforeValidator(_epoch_keys)] = Field(
        None,
        description="{epoch: rate}: from that epoch on the base learning rate is the rate (a schedule scales it); "
        "what a live run's rate changes are saved as",
    )
    lr_step_size: PosInt = Field(100, description="step: epochs between decays")
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = Field(0.5, description="step and exponential: decay factor")
    lr_min: Annotated[float, Field(ge=0)] = Field(0.0, description="cosine: final learning rate")
    early_stopping: Optional[EarlyStoppingConfig] = Field(None, description="stop when a metric stops improving")
    stop_at_loss: Optional[PosFloat] = Field(None, description="stop once the training loss is at or below this")
    gradient: Literal["analytic", "numerical"] = Field("analytic", description="backprop, or finite differences")
    gradient_epsilon: PosFloat = Field(1e-6, description="numerical: the nudge")
    gradient_method: Literal["central", "forward"] = Field("central", description="numerical: difference formula")
    freeze: list[str] = Field(
        default_factory=list,
        description="parameter groups that keep their initial values: weights, biases, layerN, layerN.weights, layerN.biases",
    )
    dtype: Literal["float64", "float32"] = Field("float64", description="floating-point precision")
    animate: bool = Field(False, description="write training.gif, the network learning frame by frame")
    diagnostics: Annotated[Optional[DiagnosticsConfig], BeforeValidator(_diagnostics_switch)] = Field(
        None,
        description="record per-layer gradient norms, update sizes, activations, saturated and dead units "
        "(true: about 200 records over the run; {every: N})",
    )
    tensorboard: Optional[str] = Field(
        None, description="TensorBoard event files under this folder (relative to the current folder), as training runs"
    )
    frames: Annotated[int, Field(ge=2, le=1000)] = Field(60, description="animate: frames (chosen as frames_by says)")
    frames_by: Literal["loss", "epoch"] = Field(
        "loss",
        description="animate: frames at equal steps of the loss's change (a quarter evenly spaced), or evenly by epoch",
    )

    @property
    def diagnose_every(self) -> Optional[int]:
        """Epochs between diagnostics records, or None when none are recorded."""
        d = self.diagnostics
        if d is None:
            return None
        return d.every if d.every is not None else max(1, self.epochs // DIAGNOSTICS_RECORDS)


class DataConfig(_Strict):
    inputs: Optional[list[list[float]]] = Field(None, description="inline inputs, one row per sample")
    targets: Optional[list[Union[list[float], float, str]]] = Field(
        None, description="inline targets: rows, class indices or class names"
    )
    csv: Optional[str] = Field(None, description="CSV file, relative to the config file")
    target: Optional[Union[str, int, list[Union[str, int]]]] = Field(
        None, description="CSV target column(s), name or index; default: last"
    )
    features: Optional[list[Union[str, int]]] = Field(
        None, description="CSV feature columns; default: all but the target"
    )
    builtin: Optional[Literal[BUILTIN_DATASETS]] = Field(None, description="a built-in data set")  # type: ignore[valid-type]
    n_samples: PosInt = Field(200, description="builtin generators: number of samples")
    noise: Annotated[float, Field(ge=0)] = Field(0.1, description="builtin generators: noise level")
    classes: Annotated[int, Field(ge=2)] = Field(3, description="blobs and spirals: number of classes")
    scale: Literal["none", "standard", "minmax"] = Field(
        "none", description="input scaling, fitted on the training split"
    )
    validation: Fraction = Field(0.0, description="fraction held out for validation (stratified for classes)")
    validation_csv: Optional[str] = Field(None, description="separate validation CSV, same columns")
    class_names: Optional[list[str]] = Field(None, description="names of the classes, in index order")
    feature_names: Optional[list[str]] = Field(None, description="names of the inputs")


class SweepConfig(_Strict):
    learning_rates: list[PosFloat] = Field(min_length=1, description="rates for sweep-lr")
    target: PosFloat = Field(0.01, description="loss that counts as reached")


class Config(_Strict):
    name: Optional[str] = Field(None, description="run name; default: the config file's stem")
    seed: Annotated[int, Field(ge=0)] = Field(0, description="the single source of randomness")
    model: ModelConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)  # type: ignore[arg-type]
    data: DataConfig
    sweep: Optional[SweepConfig] = None


SECTIONS: dict[str, type[BaseModel]] = {
    "": Config,
    "model": ModelConfig,
    "training": TrainingConfig,
    "training.early_stopping": EarlyStoppingConfig,
    "training.diagnostics": DiagnosticsConfig,
    "data": DataConfig,
    "sweep": SweepConfig,
}


class Problem(Exception):
    """A config problem at a path of keys and indices; the loader adds the file and line."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def suggest(word: Any, choices: Any) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_consistency(cfg: Config) -> None:
    """Checks across fields that pydantic's per-field types cannot express; raises Problem.

    The hidden activations are checked here rather than by a Literal type: a union of a name
    and a list of names would report both members' errors for one typo.
    """
    m, t, d = cfg.model, cfg.training, cfg.data
    n_hidden = len(m.layers) - 2
    if isinstance(t.learning_rate, list) and len(t.learning_rate) != len(m.layers) - 1:
        raise Problem(
            ("training", "learning_rate"),
            f"needs one rate per layer: {len(m.layers) - 1} (got {len(t.learning_rate)})",
        )
    if t.lr_changes and isinstance(t.learning_rate, list):
        raise Problem(("training", "lr_changes"), "changes one rate for every layer: give learning_rate one rate too")
    if isinstance(m.activation, list) and len(m.activation) != n_hidden:
        raise Problem(("model", "activation"), f"needs one name per hidden layer: {n_hidden} (got {len(m.activation)})")
    for i, name in enumerate(m.activation if isinstance(m.activation, list) else [m.activation]):
        path = ("model", "activation", i) if isinstance(m.activation, list) else ("model", "activation")
        if name not in ACTIVATIONS:
            raise Problem(
                path,
                f"unknown activation '{name}' (valid: {', '.join(HIDDEN_ACTIVATIONS)}){suggest(name, ACTIVATIONS)}",
            )
        if name not in HIDDEN_ACTIVATIONS:
            raise Problem(
                path, f"'{name}' is only allowed as output_activation (hidden: {', '.join(HIDDEN_ACTIVATIONS)})"
            )
    if isinstance(m.dropout, list) and len(m.dropout) != n_hidden:
        where = " (no dropout on the output layer)" if len(m.dropout) == len(m.layers) - 1 else ""
        raise Problem(
            ("model", "dropout"), f"needs one probability per hidden layer: {n_hidden} (got {len(m.dropout)}){where}"
        )
    if n_hidden == 0 and m.dropout:
        raise Problem(("model", "dropout"), "the network has no hidden layer to drop units from")
    if any(m.dropout_rates) and t.gradient == "numerical":
        raise Problem(("model", "dropout"), "needs training.gradient: analytic (finite differences of a random mask)")
    out = m.output_activation
    if out == "softmax" and m.layers[-1] < 2:
        raise Problem(("model", "layers"), "softmax output needs at least 2 output units")
    loss = LOSSES[t.loss]
    if not loss.accepts(out):
        need = {"bce": "a sigmoid output", "cross_entropy": "a softmax output"}.get(t.loss)
        if out == "softmax":
            raise Problem(("training", "loss"), f"softmax output needs loss cross_entropy (got '{t.loss}')")
        raise Problem(("training", "loss"), f"'{t.loss}' needs {need} (model.output_activation is '{out}')")
    shapes = list(zip(m.layers[1:], m.layers[:-1]))
    if m.weights is not None:
        if len(m.weights) != len(shapes):
            raise Problem(("model", "weights"), f"needs {len(shapes)} matrices, one per layer (got {len(m.weights)})")
        for l, (w, (n_out, n_in)) in enumerate(zip(m.weights, shapes)):
            if len(w) != n_out or any(len(row) != n_in for row in w):
                got = f"{len(w)} x {'/'.join(sorted({str(len(r)) for r in w})) or 0}"
                raise Problem(("model", "weights", l), f"layer {l + 1} needs {n_out} x {n_in} (out x in), got {got}")
    if m.init_from is not None and (m.weights is not None or m.biases is not None):
        given = "weights" if m.weights is not None else "biases"
        raise Problem(("model", "init_from"), f"give init_from or model.{given}, not both")
    if m.biases is not None:
        if not m.bias:
            raise Problem(("model", "biases"), "given but model.bias is false")
        if len(m.biases) != len(shapes):
            raise Problem(("model", "biases"), f"needs {len(shapes)} lists, one per layer (got {len(m.biases)})")
        for l, (b, (n_out, _)) in enumerate(zip(m.biases, shapes)):
            if len(b) != n_out:
                raise Problem(("model", "biases", l), f"layer {l + 1} needs {n_out} biases (got {len(b)})")
    sources = [
        name
        for name, given in (
            ("inputs", d.inputs is not None or d.targets is not None),
            ("csv", d.csv),
            ("builtin", d.builtin),
        )
        if given
    ]
    if len(sources) != 1:
        what = "none" if not sources else " and ".join(sources)
        raise Problem(("data",), f"give exactly one source: inputs and targets, csv, or builtin (got {what})")
    if sources == ["inputs"] and (d.inputs is None or d.targets is None):
        missing = "targets" if d.targets is None else "inputs"
        raise Problem(("data", missing), "missing: inline data needs both inputs and targets")
    if d.validation and d.validation_csv:
        raise Problem(("data", "validation_csv"), "give validation or validation_csv, not both")
    for i, group in enumerate(t.freeze):
        try:
            frozen_mask(m.layers, m.bias, [group])
        except ValueError as e:
            raise Problem(("training", "freeze", i), str(e)) from None
    es = t.early_stopping
    if es is not None and es.monitor.startswith("val_") and not (d.validation or d.validation_csv):
        raise Problem(
            ("training", "early_stopping", "monitor"), f"'{es.monitor}' needs data.validation or data.validation_csv"
        )
