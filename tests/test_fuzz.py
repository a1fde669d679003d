"""Hypothesis fuzzing: the loader returns a Config or raises ConfigError, never anything else."""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backprop_cli.config import Config
from backprop_cli.config.loader import Located, parse_yaml, validate
from backprop_cli.config.schema import SECTIONS
from backprop_cli.errors import ConfigError

KEYS = {section: list(model.model_fields) for section, model in SECTIONS.items()}


def _typo(word: str):
    return st.sampled_from([word[:-1], word + "s", word.replace("_", ""), word.upper(), word[1:] + word[0]])


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.ascii_letters + "_", max_size=12),
    st.sampled_from(["sigmoid", "softmax", "relu", "mse", "cross_entropy", "adam", "xor", "iris", "1e-3", "10"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12,
)


def section(name: str):
    keys = KEYS[name]
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys).flatmap(_typo))
    return st.dictionaries(key, values, max_size=len(keys))


configs = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(section("model"), st.just({"layers": [2, 2, 1]}), values),
        "training": st.one_of(section("training"), values),
        "data": st.one_of(section("data"), st.just({"builtin": "xor"}), values),
        "seed": values,
        "name": values,
        "sweep": st.one_of(section("sweep"), values),
        "extra_key": values,
    },
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_config_dicts_validate_or_raise_config_error(data):
    try:
        cfg = validate(data, Located("fuzz.yaml", {}, {}))
    except ConfigError as e:
        message = str(e)
        assert message.startswith("fuzz.yaml") and "\n" not in message
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_config_error(text):
    try:
        data, _ = parse_yaml(text, "fuzz.yaml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml")
    else:
        try:
            validate(data, Located("fuzz.yaml", {}, {}))
        except ConfigError:
            pass
