"""Bad configs: one line naming the file, the dotted key (and YAML line), exit 2, nothing written."""

import pytest

from backprop_cli.config import load_config
from backprop_cli.errors import ConfigError

BASE = """\
model:
  layers: [2, 2, 1]
  activation: sigmoid
  output_activation: sigmoid
training:
  loss: sse
  learning_rate: 0.1
  epochs: 10
data:
  inputs: [[0, 0], [0, 1], [1, 0], [1, 1]]
  targets: [[0], [1], [1], [0]]
"""


def edit(old, new):
    assert old in BASE
    return BASE.replace(old, new)


# (id, config text, exit code, expected message after "Error: <file>")
CASES = [
    ("malformed yaml", "model: [1, 2\n", 2, ":2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("empty file", "", 2, ": the config is empty (expected a mapping with model, training and data)"),
    (
        "top level list",
        "- 1\n- 2\n",
        2,
        ": the top level must be a mapping of keys (model, training, data), not a list",
    ),
    (
        "duplicate key",
        edit("  epochs: 10\n", "  epochs: 10\n  epochs: 20\n"),
        2,
        ":9: duplicate key 'epochs' (first given on line 8)",
    ),
    (
        "unknown key",
        edit("learning_rate", "learning_rte"),
        2,
        ":7: training.learning_rte: unknown key 'learning_rte' (did you mean 'learning_rate'?)",
    ),
    ("unknown section", BASE + "trainng: {}\n", 2, ":12: trainng: unknown key 'trainng' (did you mean 'training'?)"),
    (
        "bool for int",
        edit("epochs: 10", "epochs: true"),
        2,
        ":8: training.epochs: input should be a valid integer (got True)",
    ),
    (
        "string for int",
        edit("epochs: 10", 'epochs: "10"'),
        2,
        ":8: training.epochs: input should be a valid integer (got '10')",
    ),
    (
        "negative lr",
        edit("learning_rate: 0.1", "learning_rate: -0.1"),
        2,
        ":7: training.learning_rate: must be > 0 (got -0.1)",
    ),
    (
        "infinite lr",
        edit("learning_rate: 0.1", "learning_rate: .inf"),
        2,
        ":7: training.learning_rate: must be a finite number (got inf)",
    ),
    ("zero epochs", edit("epochs: 10", "epochs: 0"), 2, ":8: training.epochs: must be >= 1 (got 0)"),
    ("zero layer size", edit("layers: [2, 2, 1]", "layers: [2, 0, 1]"), 2, ":2: model.layers[1]: must be >= 1 (got 0)"),
    ("one layer", edit("layers: [2, 2, 1]", "layers: [2]"), 2, ":2: model.layers: needs at least 2 item(s) (got 1)"),
    (
        "unknown activation",
        edit("\n  activation: sigmoid\n", "\n  activation: sigmod\n"),
        2,
        ":3: model.activation: unknown activation 'sigmod' (valid: sigmoid, tanh, relu, leaky_relu, identity) (did you mean 'sigmoid'?)",
    ),
    (
        "softmax hidden",
        edit("\n  activation: sigmoid\n", "\n  activation: softmax\n"),
        2,
        ":3: model.activation: 'softmax' is only allowed as output_activation (hidden: sigmoid, tanh, relu, leaky_relu, identity)",
    ),
    (
        "unknown loss",
        edit("loss: sse", "loss: sse2"),
        2,
        ":6: training.loss: unknown value 'sse2' (valid: mse, sse, bce, cross_entropy) (did you mean 'sse'?)",
    ),
    (
        "unknown optimizer",
        edit("loss: sse", "loss: sse\n  optimizer: adamw"),
        2,
        ":7: training.optimizer: unknown value 'adamw' (valid: sgd, momentum, rmsprop, adam) (did you mean 'adam'?)",
    ),
    (
        "softmax needs cross_entropy",
        edit("output_activation: sigmoid", "output_activation: softmax").replace("[2, 2, 1]", "[2, 2, 2]"),
        2,
        ":6: training.loss: softmax output needs loss cross_entropy (got 'sse')",
    ),
    (
        "softmax one output",
        edit("output_activation: sigmoid", "output_activation: softmax").replace("loss: sse", "loss: cross_entropy"),
        2,
        ":2: model.layers: softmax output needs at least 2 output units",
    ),
    (
        "bce needs sigmoid",
        edit("output_activation: sigmoid", "output_activation: tanh").replace("loss: sse", "loss: bce"),
        2,
        ":6: training.loss: 'bce' needs a sigmoid output (model.output_activation is 'tanh')",
    ),
    (
        "activation list length",
        edit("\n  activation: sigmoid\n", "\n  activation: [sigmoid, tanh]\n"),
        2,
        ":3: model.activation: needs one name per hidden layer: 1 (got 2)",
    ),
    (
        "wrong weight shape",
        edit(
            "  output_activation: sigmoid\n",
            "  output_activation: sigmoid\n  weights: [[[1, 2, 3], [4, 5, 6]], [[1, 2]]]\n",
        ),
        2,
        ":5: model.weights[0]: layer 1 needs 2 x 2 (out x in), got 2 x 3",
    ),
    (
        "wrong number of weight layers",
        edit("  output_activation: sigmoid\n", "  output_activation: sigmoid\n  weights: [[[1, 2], [3, 4]]]\n"),
        2,
        ":5: model.weights: needs 2 matrices, one per layer (got 1)",
    ),
    (
        "biases with bias false",
        edit(
            "  output_activation: sigmoid\n", "  output_activation: sigmoid\n  bias: false\n  biases: [[0, 0], [0]]\n"
        ),
        2,
        ":6: model.biases: given but model.bias is false",
    ),
    (
        "nan in data",
        edit("[[0, 0], [0, 1]", "[[0, .nan], [0, 1]"),
        2,
        ":10: data.inputs[0][1]: must be a finite number (got nan)",
    ),
    (
        "no data source",
        BASE.split("data:")[0] + "data: {}\n",
        2,
        ":9: data: give exactly one source: inputs and targets, csv, or builtin (got none)",
    ),
    ("missing model", "data:\n  builtin: xor\n", 2, ": model: missing required key"),
    (
        "val monitor without validation",
        edit("  epochs: 10\n", "  epochs: 10\n  early_stopping: {monitor: val_loss}\n"),
        2,
        ":9: training.early_stopping.monitor: 'val_loss' needs data.validation or data.validation_csv",
    ),
]


@pytest.mark.parametrize("text,code,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_gives_one_line_and_exit_2(text, code, message, write_config, cli, tmp_path):
    path = write_config(text)
    runs = tmp_path / "runs"
    result = cli("train", path, "--runs-dir", runs)
    assert result.exit_code == code, result.output
    assert result.stderr == f"Error: {path}{message}\n"
    assert not runs.exists(), "nothing may be written for a bad config"


def test_scientific_notation_is_a_number(write_config):
    cfg = load_config(write_config(BASE.replace("learning_rate: 0.1", "learning_rate: 1e-3")))
    assert cfg.training.learning_rate == 0.001


def test_cli_overrides_are_validated_like_the_file(write_config, cli):
    path = write_config(BASE)
    result = cli("train", path, "--epochs", "-5")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: training.epochs (from --epochs): must be >= 1 (got -5)\n"
    result = cli("train", path, "--set", "training.loss=msee")
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {path}: training.loss (from --set training.loss): unknown value 'msee' (valid: mse, sse, bce, cross_entropy) (did you mean 'mse'?)\n"
    )
    result = cli("train", path, "--set", "nonsense")
    assert result.exit_code == 2
    assert result.stderr == "Error: --set nonsense: expected dotted.key=value\n"


def test_set_parses_yaml_values(write_config):
    cfg = load_config(write_config(BASE), sets=("model.layers=[2, 3, 1]", "training.learning_rate=1e-2"))
    assert cfg.model.layers == [2, 3, 1] and cfg.training.learning_rate == 0.01


def test_missing_file_and_folder(cli, tmp_path):
    result = cli("train", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'nope.yaml'}: config file not found\n"
    result = cli("train", tmp_path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path}: is a folder, not a config file\n"


def test_data_size_mismatch_names_the_key(write_config, cli):
    path = write_config(BASE.replace("[2, 2, 1]", "[3, 2, 1]"))
    result = cli("train", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: model.layers[0] is 3 but the data has 2 inputs\n"


def test_ragged_inline_rows(write_config, cli):
    path = write_config(BASE.replace("[0, 1], [1, 0]", "[0, 1, 5], [1, 0]"))
    result = cli("train", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: data.inputs[1]: has 3 values, expected 2 like the first row\n"


def test_name_defaults_to_file_stem(write_config):
    assert load_config(write_config(BASE, "my_net.yaml")).name == "my_net"


def test_config_error_is_the_only_exception(write_config):
    with pytest.raises(ConfigError):
        load_config(write_config("model: {layers: [2, 1]}\ndata: {builtin: xor}\nfoo: 1\n"))


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("epochs=3", "epochs (from --set epochs): unknown key 'epochs' (did you mean 'training.epochs'?)"),
        (
            "training.layers=[2,2,1]",
            "training.layers (from --set training.layers): unknown key 'layers' (did you mean 'model.layers'?)",
        ),
        (
            "model.seed=3",
            "model.seed (from --set model.seed): unknown key 'seed' (did you mean 'seed' at the top level?)",
        ),
        (
            "training.epoch=3",
            "training.epoch (from --set training.epoch): unknown key 'epoch' (did you mean 'epochs'?)",
        ),
    ],
)
def test_a_key_of_another_section_is_named_where_it_belongs(write_config, cli, assignment, message):
    path = write_config(BASE)
    result = cli("train", path, "--set", assignment)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: {message}\n"
