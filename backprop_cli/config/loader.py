"""YAML config -> validated, typed `Config`: the YAML loader with its line map, overrides,
and one-line errors. The only module that parses YAML.

Errors are reported as one line naming the file, the dotted key and (where known) the YAML
line: `configs/xor.yaml:9: training.learning_rate: must be > 0 (got -0.1)`.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from backprop_cli.config.schema import SECTIONS, Config, ModelConfig, Problem, check_consistency, suggest
from backprop_cli.errors import ConfigError, OverrideError
from backprop_cli.files import MAX_DEPTH, MiB, read_text

CONFIG_LIMIT = 1 * MiB  # inline data that large belongs in a CSV file

# -- YAML -----------------------------------------------------------------------------------


class _Constructing:
    """The safe constructor's mapping, rejecting duplicate keys (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges a mapping; its keys may be overridden here
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)  # type: ignore[misc]


class _Loader(_Constructing, yaml.SafeLoader):
    """PyYAML's own parser: the one whose messages errors quote."""


# libyaml's parser, about 20x faster on a large inline data set; where it is not built in,
# the Python one does the same work
_FastLoader = type("_FastLoader", (_Constructing, getattr(yaml, "CSafeLoader", yaml.SafeLoader)), {})

# YAML 1.1 wants a dot in floats (1.0e-3); users write 1e-3. Add a resolver for that form.
_loader: Any
for _loader in (_Loader, _FastLoader):
    _loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )

MAX_VALUES = 2_000_000  # values a config may expand to, aliases counted each time they are used


class _DuplicateKey(Exception):
    def __init__(self, key, line, first):
        self.key, self.line, self.first = key, line, first


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(node: yaml.Node, source: str) -> None:
    """Refuse a document that expands past MAX_VALUES (an alias bomb), nests past MAX_DEPTH, or
    refers to itself; iterative, each distinct node visited once."""
    sizes: dict[int, tuple[int, int]] = {}  # node id -> (values it expands to, depth)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, done = stack.pop()
        key = id(current)
        if done:
            kids = [sizes[id(child)] for child in _children(current)]
            size = 1 + sum(k[0] for k in kids)
            depth = 1 + max((k[1] for k in kids), default=0)
            if size > MAX_VALUES:
                raise ConfigError(
                    f"{source}: the YAML expands to more than {MAX_VALUES:,} values (aliases of aliases?)"
                )
            if depth > MAX_DEPTH:
                raise ConfigError(f"{source}:{current.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            sizes[key] = (size, depth)
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ConfigError(
                f"{source}:{current.start_mark.line + 1}: a recursive alias (an anchor used inside itself)"
            )
        open_nodes.add(key)
        stack.append((current, True))
        stack.extend((child, False) for child in _children(current) if id(child) not in sizes)


def _line_map(root: yaml.Node) -> dict:
    """Map each path (tuple of keys and indices) to the 1-based line of its value: one visit per
    distinct node (an alias's contents keep the lines of their anchor)."""
    lines: dict[tuple, int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        lines[path] = node.start_mark.line + 1
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    lines[path + (key_node.value, "<key>")] = key_node.start_mark.line + 1
                    stack.append((value_node, path + (key_node.value,)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (i,)) for i, item in enumerate(node.value))
    return lines


_OPENING = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _bound_depth(text: str, source: str, loader_class: type) -> None:
    """Refuse nesting past MAX_DEPTH from the parser's events, before the composer (which
    recurses once per level: 3,000 levels are a RecursionError) builds a node."""
    loader = loader_class(text)
    try:
        depth = 0
        while not isinstance(event := loader.get_event(), yaml.StreamEndEvent):
            if isinstance(event, _OPENING):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"{source}:{event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, _CLOSING):
                depth -= 1
    finally:
        loader.dispose()


def _load(text: str, source: str, loader_class: type) -> tuple[Any, Optional[yaml.Node]]:
    _bound_depth(text, source, loader_class)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _measure(node, source)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def parse_yaml(text: str, source: str):
    """Parse YAML text; returns (data, line map). Raises ConfigError naming `source`.

    A grid validates one config per value of its keys: the same text is parsed once and each
    caller gets its own copy of the data."""
    import copy

    data, lines = _parse_yaml(text, source)
    return copy.deepcopy(data), lines


@lru_cache(maxsize=8)
def _parse_yaml(text: str, source: str):
    try:
        try:
            data, node = _load(text, source, _FastLoader)
        except yaml.YAMLError:
            data, node = _load(text, source, _Loader)  # the Python parser words the error
    except _DuplicateKey as e:
        raise ConfigError(f"{source}:{e.line}: duplicate key {_key(e.key)} (first given on line {e.first})") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        raise ConfigError(
            f"{source}: invalid YAML: unacceptable character #x{e.character:04x} at position {e.position}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {' '.join(str(e).split())}") from None
    return data, (_line_map(node) if node is not None else {})


def parse_value(text: str, what: str):
    """Parse one command-line value as YAML (so `0.5`, `1e-3`, `[2, 3, 1]` and `true` work)."""
    try:
        data, _ = parse_yaml(text, what)
    except ConfigError as e:
        raise OverrideError(str(e)) from None
    return data


# libyaml's emitter writes the same text as PyYAML's own, about 4x faster (a sweep writes one
# config.yaml per rate); both are safe dumpers
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_DUMPER):  # type: ignore[misc, valid-type]
    """One style throughout: every mapping in block style (one key a line), every list of plain
    values on one line (`layers: [2, 2, 1]`, a row of weights); lists of lists one row a line."""


def _mapping(dumper: Any, data: dict) -> Any:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=False)


def _sequence(dumper: Any, data: list) -> Any:
    flat = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(dict, _mapping)
_Dumper.add_representer(list, _sequence)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)


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
    clean: list[Any] = []
    section: Optional[str] = ""
    for part in loc:
        model = SECTIONS.get(section) if section is not None else None
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
        return f"unknown value {value!r} (valid: {', '.join(names)}){suggest(value, names)}"
    if kind == "too_short":
        got = len(value) if isinstance(value, (list, str, dict)) else repr(value)
        return f"needs at least {ctx.get('min_length')} item(s) (got {got})"
    msg = err["msg"]
    if value is not None and not isinstance(value, (dict, list)):
        msg += f" (got {value!r})"
    elif value is None:
        msg += " (got null)"
    return msg[0].lower() + msg[1:]


def _first_error(e: ValidationError):
    """Pick the error to show: unknown keys first (with a suggestion), then the rest in order."""
    errors = e.errors()
    extras = [err for err in errors if err["type"] == "extra_forbidden"]
    if extras:
        loc = _clean_loc(extras[0]["loc"])
        parent = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
        model = SECTIONS.get(parent)
        choices = model.model_fields if model else []
        # a key of another section (`epochs` at the top): name where it belongs
        elsewhere = [
            f"'{name}.{loc[-1]}'" if name else f"'{loc[-1]}' at the top level"
            for name, section in SECTIONS.items()
            if name != parent and loc[-1] in section.model_fields
        ]
        hint = f" (did you mean {elsewhere[0]}?)" if elsewhere else suggest(loc[-1], choices)
        return loc, f"unknown key {_key(loc[-1])}{hint}", True
    grouped: dict[tuple, list] = {}
    for err in errors:
        grouped.setdefault(_clean_loc(err["loc"]), []).append(err)
    loc, errs = next(iter(grouped.items()))
    # a field that takes a number or a list of them (learning_rate): a number given is judged
    # as a number, not also as a list it never meant to be
    scalar = [err for err in errs if err["type"] != "list_type"]
    if scalar and len(scalar) < len(errs) and not isinstance(errs[0].get("input"), (list, str)):
        errs = scalar
    messages = list(dict.fromkeys(_message(err) for err in errs))
    hint = ""
    if any(isinstance(err.get("input"), bool) and err["type"] in _NOT_BOOL for err in errs):
        hint = " (YAML reads yes, no, on, off, true and false as booleans: quote the word)"
    return loc, " or ".join(messages) + hint, False


_NOT_BOOL = ("string_type", "list_type", "literal_error")  # fields that take a word: `no` meant the word


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
    """Set `section.key` (or `section.key.N`: element N of a list, 0-based) in parsed YAML. A
    per-layer key given one number (`training.learning_rate: 0.1`) becomes a list of that
    number, one per layer, before element N is set."""
    parts = key.split(".")
    if len(parts) == 3 and parts[2].isdigit() and parts[:2] == ["training", "learning_rate"]:
        training = data.setdefault("training", {}) if isinstance(data.get("training", {}), dict) else {}
        current = training.get("learning_rate", 0.1)
        if not isinstance(current, list):
            layers = (data.get("model") or {}).get("layers") if isinstance(data.get("model"), dict) else None
            n = len(layers) - 1 if isinstance(layers, list) and len(layers) > 1 else 1
            current = [current] * n
        index = int(parts[2])
        if index >= len(current):
            raise OverrideError(f"{key}: the network has {len(current)} layers (0 to {len(current) - 1})")
        current = list(current)
        current[index] = value
        training["learning_rate"] = current
        return
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
        # top-level keys starting with "x-" hold YAML anchors for `<<:` merges, and nothing else
        cfg = Config.model_validate({k: v for k, v in data.items() if not str(k).startswith("x-")})
    except ValidationError as e:
        path, message, is_key = _first_error(e)
        raise loc.error(path, message, key_line=is_key) from None
    try:
        check_consistency(cfg)
    except Problem as p:
        raise loc.error(p.path, p.message) from None
    return cfg


def load_config(path, overrides: Optional[dict] = None, sets: tuple = (), initial: bool = True) -> Config:
    """Read, override and validate a config file.

    `overrides` maps dotted keys to already-typed values with their flag name as origin
    ({"training.epochs": (500, "--epochs")}); `sets` holds raw `dotted.key=value` strings.
    The config's `name` defaults to the file's stem; relative data paths are made absolute
    against the config file's folder. `initial=False` leaves model.init_from's file unread (a
    run folder's config, whose final weights are loaded instead).
    """
    path = Path(path)
    data, lines = parse_yaml(read_text(path, "config file", ConfigError, CONFIG_LIMIT), str(path))
    overridden = {}
    if data is not None and isinstance(data, dict):
        for item in sets:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise OverrideError(f"--set {item}: expected dotted.key=value")
            key = key.strip()
            _set_dotted(data, key, parse_value(raw, f"--set {key}"))
            overridden[tuple(key.split("."))] = f"--set {key}"
        for key, (value, flag) in (overrides or {}).items():
            if value is not None:
                _set_dotted(data, key, value)
                overridden[tuple(key.split("."))] = flag
    return _finish(data, Located(str(path), lines, overridden), path.stem, path.resolve().parent, initial)


def config_from_dict(data: dict, overrides: Optional[dict] = None, source: str = "config", base: Any = None) -> Config:
    """Validate a config given as a Python dict (a notebook's), with dotted-key `overrides`
    ({"training.epochs": 500}); errors name `source`. Relative data paths are made absolute
    against `base` (default: the current folder); the name defaults to `source`."""
    import copy

    data = copy.deepcopy(data)
    overridden = {}
    if isinstance(data, dict):
        for key, value in (overrides or {}).items():
            _set_dotted(data, key, value)
            overridden[tuple(key.split("."))] = key
    return _finish(data, Located(source, {}, overridden), source, Path(base or ".").resolve())


def _finish(data: Any, loc: Located, default_name: str, base: Path, initial: bool = True) -> Config:
    cfg = validate(data, loc)
    if cfg.name is None:
        cfg.name = default_name
    for key in ("csv", "validation_csv"):
        value = getattr(cfg.data, key)
        if value is not None:
            setattr(cfg.data, key, str((base / value).resolve()))
    if cfg.model.init_from is not None:
        cfg.model.init_from = os.path.abspath(base / cfg.model.init_from)  # not resolve(): a symlink loop raises
        if initial:
            cfg.model._imported = _imported(cfg.model, loc)
    return cfg


def _imported(m: ModelConfig, loc: Located) -> list:
    """The layers of model.init_from, checked against model.layers and model.bias."""
    from backprop_cli.exchange import LayoutError, check_shapes, read_layers

    path = str(m.init_from)
    try:
        layers = read_layers(Path(path))
    except LayoutError as e:
        raise loc.error(("model", "init_from"), f"{path}: {e}") from None
    except ConfigError as e:  # not there, not a file, or a missing extra
        raise loc.error(("model", "init_from"), str(e)) from None
    problem = check_shapes(layers, m.layers, m.bias)
    if problem is not None:
        raise loc.error(("model", "init_from"), f"{path}: {problem}")
    return layers


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, in the order of the file's sections."""
    dumped = cfg.model_dump(mode="json")
    changes = dumped["training"].get("lr_changes")
    if changes:  # JSON's keys are strings; YAML's epochs stay numbers
        dumped["training"]["lr_changes"] = {int(k): v for k, v in changes.items()}
    return dump_yaml(dumped)


def json_schema() -> dict:
    return Config.model_json_schema()
