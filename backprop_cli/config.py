"""YAML config -> validated, typed `Config`. The only module that parses YAML.

Errors are reported as one line naming the file, the dotted key and (where known) the YAML
line: `configs/xor.yaml:9: training.learning_rate: must be > 0 (got -0.1)`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Annotated

from backprop_cli.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from backprop_cli.errors import ConfigError, UsageError
from backprop_cli.losses import LOSSES

BUILTIN_DATASETS = ("xor", "and", "or", "circles", "moons", "spirals", "blobs", "sine", "iris", "digits")
DEFAULT_SWEEP_RATES = [0.1, 0.2, 0.5, 0.8, 1.0, 2.0]

PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class _Strict(BaseModel):
    # strict: no "10" -> 10 or true -> 1; forbid: unknown keys are errors; no inf or nan.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    layers: list[PosInt] = Field(min_length=2, description="input size, hidden sizes..., output size")
    activation: Union[str, list[str]] = Field("sigmoid", description="hidden layers: one name, or one per hidden layer")
    output_activation: str = Field("sigmoid", description="activation of the output layer")
    bias: bool = Field(True, description="false: no bias terms at all")
    init: Literal["uniform", "normal", "xavier", "he", "zeros"] = Field("uniform", description="initial weights")
    weights: Optional[list[list[list[float]]]] = Field(None, description="explicit initial weights, one out x in matrix per layer")
    biases: Optional[list[list[float]]] = Field(None, description="explicit initial biases, one list per layer")


class EarlyStoppingConfig(_Strict):
    monitor: Literal["val_loss", "loss", "val_accuracy", "accuracy"] = Field("val_loss", description="history column to watch")
    patience: PosInt = Field(20, description="epochs without improvement before stopping")
    min_delta: Annotated[float, Field(ge=0)] = Field(0.0, description="smallest change that counts as improvement")
    restore_best: bool = Field(True, description="end with the best epoch's weights")


class TrainingConfig(_Strict):
    loss: Literal["mse", "sse", "bce", "cross_entropy"] = Field("mse", description="loss function")
    learning_rate: PosFloat = Field(0.1, description="step size")
    epochs: PosInt = Field(1000, description="passes over the training data")
    batch_size: Optional[PosInt] = Field(None, description="samples per update; null = full batch")
    optimizer: Literal["sgd", "momentum", "rmsprop", "adam"] = Field("sgd", description="update rule")
    momentum: Fraction = Field(0.9, description="momentum: velocity decay")
    nesterov: bool = Field(False, description="momentum: Nesterov's variant")
    rho: Fraction = Field(0.9, description="rmsprop: squared-gradient decay")
    beta1: Fraction = Field(0.9, description="adam: first-moment decay")
    beta2: Fraction = Field(0.999, description="adam: second-moment decay")
    eps: PosFloat = Field(1e-8, description="rmsprop and adam: denominator guard")
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.0, description="L2 penalty added to every gradient")
    lr_schedule: Literal["constant", "step", "exponential", "cosine"] = Field("constant", description="learning-rate schedule")
    lr_step_size: PosInt = Field(100, description="step: epochs between decays")
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = Field(0.5, description="step and exponential: decay factor")
    lr_min: Annotated[float, Field(ge=0)] = Field(0.0, description="cosine: final learning rate")
    early_stopping: Optional[EarlyStoppingConfig] = Field(None, description="stop when a metric stops improving")
    stop_at_loss: Optional[PosFloat] = Field(None, description="stop once the training loss is at or below this")
    gradient: Literal["analytic", "numerical"] = Field("analytic", description="backprop, or finite differences")
    gradient_epsilon: PosFloat = Field(1e-6, description="numerical: the nudge")
    gradient_method: Literal["central", "forward"] = Field("central", description="numerical: difference formula")
    dtype: Literal["float64", "float32"] = Field("float64", description="floating-point precision")


class DataConfig(_Strict):
    inputs: Optional[list[list[float]]] = Field(None, description="inline inputs, one row per sample")
    targets: Optional[list[Union[list[float], float, str]]] = Field(None, description="inline targets: rows, class indices or class names")
    csv: Optional[str] = Field(None, description="CSV file, relative to the config file")
    target: Optional[Union[str, int, list[Union[str, int]]]] = Field(None, description="CSV target column(s), name or index; default: last")
    features: Optional[list[Union[str, int]]] = Field(None, description="CSV feature columns; default: all but the target")
    builtin: Optional[Literal[BUILTIN_DATASETS]] = Field(None, description="a built-in data set")
    n_samples: PosInt = Field(200, description="builtin generators: number of samples")
    noise: Annotated[float, Field(ge=0)] = Field(0.1, description="builtin generators: noise level")
    classes: Annotated[int, Field(ge=2)] = Field(3, description="blobs and spirals: number of classes")
    scale: Literal["none", "standard", "minmax"] = Field("none", description="input scaling, fitted on the training split")
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
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    data: DataConfig
    sweep: Optional[SweepConfig] = None

    @property
    def hidden_activations(self) -> list[str]:
        act = self.model.activation
        n_hidden = len(self.model.layers) - 2
        return list(act) if isinstance(act, list) else [act] * n_hidden

    @property
    def activations(self) -> list[str]:
        return self.hidden_activations + [self.model.output_activation]


_SECTIONS: dict[str, type[BaseModel]] = {
    "": Config,
    "model": ModelConfig,
    "training": TrainingConfig,
    "training.early_stopping": EarlyStoppingConfig,
    "data": DataConfig,
    "sweep": SweepConfig,
}


# -- YAML -----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 as a float and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


# YAML 1.1 wants a dot in floats (1.0e-3); users write 1e-3. Add a resolver for that form.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _DuplicateKey(Exception):
    def __init__(self, key, line, first):
        self.key, self.line, self.first = key, line, first


def _line_map(node, path=(), lines=None) -> dict:
    """Map each path (tuple of keys and indices) to the 1-based line of its value."""
    lines = {} if lines is None else lines
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                lines[path + (key_node.value, "<key>")] = key_node.start_mark.line + 1
                _line_map(value_node, path + (key_node.value,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), lines)
    return lines


def parse_yaml(text: str, source: str):
    """Parse YAML text; returns (data, line map). Raises ConfigError naming `source`."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _DuplicateKey as e:
        raise ConfigError(f"{source}:{e.line}: duplicate key {_key(e.key)} (first given on line {e.first})") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        raise ConfigError(f"{source}: invalid YAML: unacceptable character #x{e.character:04x} at position {e.position}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {' '.join(str(e).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, (_line_map(node) if node is not None else {})


def parse_value(text: str, what: str):
    """Parse one command-line value as YAML (so `0.5`, `1e-3`, `[2, 3, 1]` and `true` work)."""
    try:
        data, _ = parse_yaml(text, what)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    return data


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


# -- validation ------------------------------------------------------------------------------


def _key(key) -> str:
    """A key as it should appear in a one-line message: quoted, escapes visible."""
    return repr(key) if isinstance(key, str) else f"'{key}'"


def _dotted(path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if isinstance(part, str) and part.isidentifier() else _key(part)
            out += f".{text}" if out else text
    return out or "(top level)"


def _clean_loc(loc) -> tuple:
    """Drop pydantic's union-member tags from an error location, keeping keys and indices."""
    clean, section = [], ""
    for part in loc:
        model = _SECTIONS.get(section)
        if isinstance(part, int):
            clean.append(part)
            section = None
        elif model is not None and part in model.model_fields:
            clean.append(part)
            section = f"{section}.{part}" if section else part
        elif model is not None:
            clean.append(part)  # an unknown key
            section = None
    return tuple(clean)


def _suggest(word: str, choices) -> str:
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _message(err: dict) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "missing required key"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound:g} (got {value!r})"
    if kind == "finite_number":
        return f"must be a finite number (got {value!r})"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        names = re.findall(r"'([^']*)'", expected)
        return f"unknown value {value!r} (valid: {', '.join(names)}){_suggest(value, names)}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s) (got {len(value) if hasattr(value, '__len__') else value!r})"
    msg = err["msg"]
    if value is not None and not isinstance(value, (dict, list)):
        msg += f" (got {value!r})"
    elif value is None and kind not in ("missing",):
        msg += " (got null)"
    return msg[0].lower() + msg[1:]


def _first_error(e: ValidationError):
    """Pick the error to show: unknown keys first (with a suggestion), then the rest in order."""
    errors = e.errors()
    extras = [err for err in errors if err["type"] == "extra_forbidden"]
    if extras:
        loc = _clean_loc(extras[0]["loc"])
        parent = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
        model = _SECTIONS.get(parent)
        choices = model.model_fields if model else []
        return loc, f"unknown key {_key(loc[-1])}{_suggest(loc[-1], choices)}", True
    grouped: dict[tuple, list] = {}
    for err in errors:
        grouped.setdefault(_clean_loc(err["loc"]), []).append(err)
    loc, errs = next(iter(grouped.items()))
    messages = list(dict.fromkeys(_message(err) for err in errs))
    return loc, " or ".join(messages), False


class Located:
    """Formats errors for one config source: the file, its line map, and override origins."""

    def __init__(self, source: str, lines: dict, overridden: dict):
        self.source, self.lines, self.overridden = source, lines, overridden

    def error(self, path, message: str, key_line: bool = False) -> ConfigError:
        path = tuple(path)
        for n in range(len(path), 0, -1):
            if path[:n] in self.overridden:
                return ConfigError(f"{self.source}: {_dotted(path)} (from {self.overridden[path[:n]]}): {message}")
        line = self.lines.get(path + ("<key>",)) if key_line else None
        probe = path
        while line is None and probe:
            line = self.lines.get(probe)
            probe = probe[:-1]
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {_dotted(path)}: {message}")


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def validate(data: Any, loc: Located) -> Config:
    """Validate parsed YAML into a Config, raising one ConfigError for the first problem."""
    if data is None:
        raise ConfigError(f"{loc.source}: the config is empty (expected a mapping with model, training and data)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{loc.source}: the top level must be a mapping of keys (model, training, data), not a {type(data).__name__}"
        )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        path, message, is_key = _first_error(e)
        raise loc.error(path, message, key_line=is_key) from None
    check_consistency(cfg, loc)
    return cfg


def check_consistency(cfg: Config, loc: Located) -> None:
    """Checks across fields that pydantic's per-field types cannot express."""
    m, t, d = cfg.model, cfg.training, cfg.data
    n_hidden = len(m.layers) - 2
    if isinstance(m.activation, list) and len(m.activation) != n_hidden:
        raise loc.error(("model", "activation"), f"needs one name per hidden layer: {n_hidden} (got {len(m.activation)})")
    for i, name in enumerate(m.activation if isinstance(m.activation, list) else [m.activation]):
        path = ("model", "activation", i) if isinstance(m.activation, list) else ("model", "activation")
        if name not in ACTIVATIONS:
            raise loc.error(path, f"unknown activation '{name}' (valid: {', '.join(HIDDEN_ACTIVATIONS)}){_suggest(name, ACTIVATIONS)}")
        if name not in HIDDEN_ACTIVATIONS:
            raise loc.error(path, f"'{name}' is only allowed as output_activation (hidden: {', '.join(HIDDEN_ACTIVATIONS)})")
    out = m.output_activation
    if out not in ACTIVATIONS:
        raise loc.error(("model", "output_activation"), f"unknown activation '{out}' (valid: {', '.join(ACTIVATIONS)}){_suggest(out, ACTIVATIONS)}")
    if out == "softmax" and m.layers[-1] < 2:
        raise loc.error(("model", "layers"), "softmax output needs at least 2 output units")
    loss = LOSSES[t.loss]
    if not loss.accepts(out):
        need = {"bce": "a sigmoid output", "cross_entropy": "a softmax output"}.get(t.loss)
        if out == "softmax":
            raise loc.error(("training", "loss"), f"softmax output needs loss cross_entropy (got '{t.loss}')")
        raise loc.error(("training", "loss"), f"'{t.loss}' needs {need} (model.output_activation is '{out}')")
    shapes = list(zip(m.layers[1:], m.layers[:-1]))
    if m.weights is not None:
        if len(m.weights) != len(shapes):
            raise loc.error(("model", "weights"), f"needs {len(shapes)} matrices, one per layer (got {len(m.weights)})")
        for l, (w, (n_out, n_in)) in enumerate(zip(m.weights, shapes)):
            if len(w) != n_out or any(len(row) != n_in for row in w):
                got = f"{len(w)} x {'/'.join(sorted({str(len(r)) for r in w})) or 0}"
                raise loc.error(("model", "weights", l), f"layer {l + 1} needs {n_out} x {n_in} (out x in), got {got}")
    if m.biases is not None:
        if not m.bias:
            raise loc.error(("model", "biases"), "given but model.bias is false")
        if len(m.biases) != len(shapes):
            raise loc.error(("model", "biases"), f"needs {len(shapes)} lists, one per layer (got {len(m.biases)})")
        for l, (b, (n_out, _)) in enumerate(zip(m.biases, shapes)):
            if len(b) != n_out:
                raise loc.error(("model", "biases", l), f"layer {l + 1} needs {n_out} biases (got {len(b)})")
    sources = [name for name, given in (("inputs", d.inputs is not None or d.targets is not None), ("csv", d.csv), ("builtin", d.builtin)) if given]
    if len(sources) != 1:
        what = "none" if not sources else " and ".join(sources)
        raise loc.error(("data",), f"give exactly one source: inputs and targets, csv, or builtin (got {what})")
    if sources == ["inputs"] and (d.inputs is None or d.targets is None):
        missing = "targets" if d.targets is None else "inputs"
        raise loc.error(("data", missing), "missing: inline data needs both inputs and targets")
    if d.validation and d.validation_csv:
        raise loc.error(("data", "validation_csv"), "give validation or validation_csv, not both")
    es = t.early_stopping
    if es is not None and es.monitor.startswith("val_") and not (d.validation or d.validation_csv):
        raise loc.error(("training", "early_stopping", "monitor"), f"'{es.monitor}' needs data.validation or data.validation_csv")


def read_text(path: Path, what: str = "config file") -> str:
    if not path.exists():
        raise ConfigError(f"{path}: {what} not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8 expected)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def load_config(path, overrides: Optional[dict] = None, sets: tuple = ()) -> Config:
    """Read, override and validate a config file.

    `overrides` maps dotted keys to already-typed values with their flag name as origin
    ({"training.epochs": (500, "--epochs")}); `sets` holds raw `dotted.key=value` strings.
    The config's `name` defaults to the file's stem; relative data paths are made absolute
    against the config file's folder.
    """
    path = Path(path)
    data, lines = parse_yaml(read_text(path), str(path))
    overridden = {}
    if data is not None and isinstance(data, dict):
        for item in sets:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--set {item}: expected dotted.key=value")
            key = key.strip()
            _set_dotted(data, key, parse_value(raw, f"--set {key}"))
            overridden[tuple(key.split("."))] = f"--set {key}"
        for key, (value, flag) in (overrides or {}).items():
            if value is not None:
                _set_dotted(data, key, value)
                overridden[tuple(key.split("."))] = flag
    cfg = validate(data, Located(str(path), lines, overridden))
    if cfg.name is None:
        cfg.name = path.stem
    base = path.resolve().parent
    for key in ("csv", "validation_csv"):
        value = getattr(cfg.data, key)
        if value is not None:
            setattr(cfg.data, key, str((base / value).resolve()))
    return cfg


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, in the order of the file's sections."""
    return dump_yaml(cfg.model_dump(mode="json"))


def json_schema() -> dict:
    return Config.model_json_schema()
