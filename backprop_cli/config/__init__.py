"""The config: its schema (`schema`) and the YAML loader (`loader`), the only place YAML is parsed."""

from backprop_cli.config.loader import (
    config_from_dict,
    config_to_yaml,
    dump_yaml,
    json_schema,
    load_config,
    parse_value,
)
from backprop_cli.config.schema import (
    Config,
    DataConfig,
    EarlyStoppingConfig,
    ModelConfig,
    SweepConfig,
    TrainingConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "EarlyStoppingConfig",
    "ModelConfig",
    "SweepConfig",
    "TrainingConfig",
    "config_from_dict",
    "config_to_yaml",
    "dump_yaml",
    "json_schema",
    "load_config",
    "parse_value",
]
