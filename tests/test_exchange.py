"""Export to ONNX, safetensors and .npz, and import with model.init_from: the outputs equal
predict's, the layouts are the documented ones, a round trip trains bit for bit, and bad
files are one-line errors."""

import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli.config import load_config
from backprop_cli.errors import ConfigError
from backprop_cli.exchange import WRITERS, torch_code
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.run_folders import finish_run, load_run, start_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
st = pytest.importorskip("safetensors.numpy")

# every activation, both scalings and no biases, each in a small network trained a few epochs
NETS = {
    "xor": (XOR_YAML, None),
    "iris": ((CONFIGS / "iris.yaml").read_text(), {"training.epochs": 30}),
    "relu_minmax": (
        """
        name: mixed
        seed: 3
        model: {layers: [3, 5, 4, 2], activation: [relu, leaky_relu], output_activation: identity}
        training: {loss: mse, learning_rate: 0.05, epochs: 40}
        data:
          inputs: [[0, 1, 5], [2, -1, 3], [4, 0, 0], [-3, 2, 1], [1, 1, 1], [6, -2, 4]]
          targets: [[0, 1], [1, 0], [2, 1], [0, 0], [1, 1], [3, 2]]
          scale: minmax
        """,
        None,
    ),
    "no_bias": (
        """
        name: nobias
        seed: 2
        model: {layers: [2, 4, 1], activation: tanh, output_activation: sigmoid, bias: false}
        training: {loss: bce, learning_rate: 0.5, epochs: 50}
        data: {inputs: [[0, 0], [0, 1], [1, 0], [1, 1]], targets: [[0], [1], [1], [0]], scale: standard}
        """,
        None,
    ),
}


def _train(cfg, root: Path):
    """Train a config into a run folder under `root` (no plots) and load it."""
    data = dataset(cfg, "test")
    net = network(cfg)
    result = fit(cfg, data, net)
    folder = start_run(root, cfg, {})
    finish_run(folder, cfg, data, result, plots=False)
    return load_run(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One trained run folder per network."""
    root = tmp_path_factory.mktemp("exchange")
    found = {}
    for name, (text, overrides) in NETS.items():
        path = root / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        cfg = load_config(path, {k: (v, k) for k, v in (overrides or {}).items()})
        found[name] = _train(cfg, root / "runs")
    return found


def _inputs(run, n=50, seed=0):
    """The training inputs and random ones around them."""
    X = np.asarray(run.cfg.data.inputs, float) if run.cfg.data.inputs else None
    if X is None:
        X = dataset(run.cfg, "test").X_raw
    rng = np.random.default_rng(seed)
    return np.vstack([X, rng.normal(X.mean(0), X.std(0) * 2 + 1, (n, X.shape[1]))])


@pytest.mark.parametrize("name", list(NETS))
def test_onnx_outputs_equal_predict_to_1e12(runs, name):
    run = runs[name]
    model = onnx.load_model_from_string(WRITERS["onnx"](run.portable()))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    X = _inputs(run)
    got = session.run(None, {"input": X})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, run.predict(X), rtol=0, atol=1e-12)
    names = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert names == {"feature_names": run.feature_names, "output_names": run.output_names}


def test_onnx_float32_and_the_scaling_nodes(runs):
    run = runs["iris"]
    model = onnx.load_model_from_string(WRITERS["onnx"](run.portable(), "float32"))
    assert [n.op_type for n in model.graph.node] == ["Sub", "Div", "Gemm", "Tanh", "Gemm", "Softmax"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    X = _inputs(run).astype(np.float32)
    got = session.run(None, {"input": X})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, run.predict(X), atol=1e-5)
    assert not np.allclose(got, run.net.predict(X)[0], atol=1e-3)  # raw inputs: the scaling matters


@pytest.mark.parametrize("name", list(NETS))
def test_safetensors_holds_torch_sequential_keys(runs, name):
    run = runs[name]
    data = WRITERS["safetensors"](run.portable())
    tensors = st.load(data)
    expected = {}
    for l, (w, b) in enumerate(run.net.get_params(0)):
        expected[f"{2 * l}.weight"] = w
        if b is not None:
            expected[f"{2 * l}.bias"] = b
    assert sorted(tensors) == sorted(expected)
    for key, values in expected.items():
        assert np.array_equal(tensors[key], values) and tensors[key].dtype == np.float64


def _torch_forward(code: str, tensors: dict, X: np.ndarray) -> np.ndarray:
    """What the printed PyTorch lines compute, evaluated with NumPy in place of torch: each
    `nn.` module mapped to its formula, the state dict from the safetensors file."""
    modules = [line.strip().rstrip(",") for line in code.splitlines() if line.startswith("    nn.")]
    formulas = {
        "nn.Sigmoid()": lambda z: 1 / (1 + np.exp(-z)),
        "nn.Tanh()": np.tanh,
        "nn.ReLU()": lambda z: np.maximum(z, 0),
        "nn.LeakyReLU(0.01)": lambda z: np.maximum(z, 0.01 * z),
        "nn.Identity()": lambda z: z,
        "nn.Softmax(dim=1)": lambda z: (
            np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
        ),
    }
    a = X
    if "shift = torch.tensor(" in code:
        found = re.findall(r"^(shift|factor) = torch.tensor\(\s*(\[[^]]*\])", code, re.M)
        values = {name: np.array(json.loads(numbers)) for name, numbers in found}
        assert sorted(values) == ["factor", "shift"]
        a = (a - values["shift"]) / values["factor"]
    for i, module in enumerate(modules):
        if module.startswith("nn.Linear("):
            a = a @ tensors[f"{i}.weight"].T + tensors.get(f"{i}.bias", 0)
        else:
            a = formulas[module](a)
    return a


@pytest.mark.parametrize("name", list(NETS))
def test_the_pytorch_lines_build_what_predict_computes(runs, name, tmp_path):
    run = runs[name]
    path = tmp_path / "net.safetensors"
    path.write_bytes(WRITERS["safetensors"](run.portable()))
    code = torch_code(run.portable(), str(path))
    compile(code, "model.py", "exec")
    X = _inputs(run)
    np.testing.assert_allclose(_torch_forward(code, st.load_file(str(path)), X), run.predict(X), atol=1e-12)
    try:
        import torch  # noqa: F401  (never a dependency: checked where someone has it)
    except ImportError:
        return
    namespace: dict = {}
    exec(code, namespace)
    np.testing.assert_allclose(namespace["predict"](X).detach().numpy(), run.predict(X), atol=1e-12)


@pytest.mark.parametrize("name", list(NETS))
def test_npz_loads_without_pickle(runs, name, tmp_path):
    run = runs[name]
    path = tmp_path / "net.npz"
    path.write_bytes(WRITERS["npz"](run.portable()))
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    for l, (w, b) in enumerate(run.net.get_params(0)):
        assert np.array_equal(arrays[f"W{l + 1}"], w)
        assert (b is None and f"b{l + 1}" not in arrays) or np.array_equal(arrays[f"b{l + 1}"], b)
    assert arrays["activations"].tolist() == run.cfg.model.activations
    scaler = run.scaler
    if scaler.kind == "none":
        assert "scale_shift" not in arrays
    else:
        X = _inputs(run)
        a = (X - arrays["scale_shift"]) / arrays["scale_factor"]
        np.testing.assert_array_equal(a, scaler.apply(X))


def _init_config(tmp_path, source: Path, weights=None, layers="[2, 2, 1]", bias="true") -> Path:
    path = tmp_path / "init.yaml"
    init = f"init_from: {source.name}" if weights is None else f"weights: {weights}"
    path.write_text(
        textwrap.dedent(
            f"""
            name: init
            model: {{layers: {layers}, activation: sigmoid, output_activation: sigmoid, bias: {bias}, {init}}}
            training: {{loss: sse, learning_rate: 0.5, epochs: 300}}
            data: {{inputs: [[0, 0], [0, 1], [1, 0], [1, 1]], targets: [[0], [1], [1], [0]]}}
            """
        )
    )
    return path


@pytest.mark.parametrize("fmt", ["onnx", "safetensors", "npz", "run"])
def test_an_exported_network_imported_again_trains_bit_for_bit(runs, fmt, tmp_path):
    run = runs["xor"]
    source = run.path if fmt == "run" else tmp_path / f"start.{fmt}"
    if fmt != "run":
        source.write_bytes(WRITERS[fmt](run.portable()))
    (tmp_path / "start.run").symlink_to(run.path) if fmt == "run" else None
    imported = load_config(_init_config(tmp_path, tmp_path / "start.run" if fmt == "run" else source))
    params = run.net.get_params(0)
    explicit = load_config(_init_config(tmp_path, source, weights=[w.tolist() for w, _ in params]))
    explicit.model.biases = [b.tolist() for _, b in params]
    a = _train(imported, tmp_path / "a")
    b = _train(explicit, tmp_path / "b")
    assert np.array_equal(a.net.theta, b.net.theta)
    assert not np.array_equal(a.net.theta, run.net.theta)  # it trained on from there
    # the run's own config.yaml keeps init_from (absolute) and reproduces it
    again = _train(load_config(a.path / "config.yaml"), tmp_path / "c")
    assert np.array_equal(again.net.theta, a.net.theta)


def test_init_from_checks_shapes_naming_the_tensor(runs, tmp_path):
    run = runs["xor"]
    source = tmp_path / "start.safetensors"
    source.write_bytes(WRITERS["safetensors"](run.portable()))
    with pytest.raises(ConfigError) as e:
        load_config(_init_config(tmp_path, source, layers="[2, 3, 1]"))
    assert str(e.value) == (
        f"{tmp_path / 'init.yaml'}:3: model.init_from: {source}: layer 1's weights (0.weight, W1) are 2 x 2; "
        "model.layers [2, 3, 1] needs 3 x 2 (out x in)"
    )
    with pytest.raises(ConfigError, match=r"holds 2 layers of weights; model.layers \[2, 2, 2, 1\] has 3"):
        load_config(_init_config(tmp_path, source, layers="[2, 2, 2, 1]"))
    with pytest.raises(ConfigError, match=r"layer 1 has biases \(0.bias, b1\); model.bias is false"):
        load_config(_init_config(tmp_path, source, bias="false"))


def _bad(tmp_path, name: str, content: bytes) -> str:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_config(_init_config(tmp_path, tmp_path / name))
    return str(e.value).split("model.init_from: ", 1)[1]


def test_bad_init_files_are_one_line_errors(runs, tmp_path):
    run = runs["xor"]
    p = tmp_path
    good_onnx = WRITERS["onnx"](run.portable())
    assert (
        _bad(p, "w.pt", b"x")
        == f"{p / 'w.pt'}: unknown format '.pt': give a .onnx, .safetensors or .npz file, or a run"
    )
    assert _bad(p, "w.npz", b"not a zip").startswith(f"{p / 'w.npz'}: not a readable .npz file")
    assert (
        _bad(p, "t.onnx", good_onnx[: len(good_onnx) // 2])
        == f"{p / 't.onnx'}: not a readable ONNX model (DecodeError)"
    )
    assert _bad(p, "t.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{").startswith(
        f"{p / 't.safetensors'}: not a readable safetensors file"
    )
    other = st.save({"encoder.weight": np.ones((2, 2))})
    assert (
        _bad(p, "o.safetensors", other)
        == f"{p / 'o.safetensors'}: no 0.weight, 2.weight, ... tensors (it holds encoder.weight)"
    )
    assert _bad(p, "empty.npz", b"").startswith(f"{p / 'empty.npz'}: not a readable .npz file (")
    with pytest.raises(ConfigError, match=r"missing.npz: weights file not found$"):
        load_config(_init_config(p, p / "missing.npz"))
    layers = run.net.get_params(0)
    nan = {"W1": np.full((2, 2), np.nan), "b1": layers[0][1], "W2": layers[1][0], "b2": layers[1][1]}
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **nan)
    assert _bad(p, "nan.npz", buffer.getvalue()) == f"{p / 'nan.npz'}: layer 1: non-finite weights"
    buffer = io.BytesIO()
    np.savez(buffer, weights=np.ones(3))
    assert _bad(p, "o.npz", buffer.getvalue()) == f"{p / 'o.npz'}: no W1, W2, ... arrays (it holds weights)"


def test_init_from_and_weights_together_is_refused(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text(
        "model: {layers: [1, 1], init_from: w.npz, weights: [[[1.0]]]}\ndata: {inputs: [[0]], targets: [[0]]}\n"
    )
    with pytest.raises(ConfigError, match=r"both.yaml:1: model.init_from: give init_from or model.weights, not both"):
        load_config(path)


def test_a_run_still_loads_when_its_init_file_is_gone(runs, tmp_path):
    source = tmp_path / "start.npz"
    source.write_bytes(WRITERS["npz"](runs["xor"].portable()))
    folder = _train(load_config(_init_config(tmp_path, source)), tmp_path / "r").path
    source.unlink()
    assert load_run(folder).predict([[0, 1]]).shape == (1, 1)


@pytest.mark.slow
def test_export_command(cli, runs, tmp_path):
    run = runs["iris"]
    result = cli("export", run.path, "--output", tmp_path / "iris.onnx")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote {tmp_path / 'iris.onnx'} (onnx, float64, 67 parameters, input scaling built in)\n"
    result = cli("export", run.path, "--format", "safetensors", "--output", tmp_path / "iris.safetensors")
    assert result.exit_code == 0 and result.stdout.startswith("import torch\n")
    compile(result.stdout, "printed", "exec")
    result = cli("export", run.path, "-f", "safetensors", "-o", tmp_path / "i.safetensors", "--code", tmp_path / "m.py")
    assert result.exit_code == 0 and result.stdout == "" and "\nimport torch\n" in (tmp_path / "m.py").read_text()
    result = cli("export", run.path, "-f", "npz")
    assert result.exit_code == 0 and (run.path / "network.npz").exists()
    # bad input: exit 2, one line, nothing written
    for args, message in [
        (
            ["-o", run.path / "weights.json", "-f", "npz"],
            f"Error: {run.path / 'weights.json'}: is a file of the run folder {run.path}; write elsewhere\n",
        ),
        (["-f", "npz", "--code", tmp_path / "x.py"], "Error: --code: the PyTorch lines go with --format safetensors\n"),
        (
            ["-f", "onnx", "-o", tmp_path / "x.npz"],
            f"Error: --output {tmp_path / 'x.npz'}: a .npz name for --format onnx\n",
        ),
        (["-f", "h5"], None),
    ]:
        result = cli("export", run.path, *args)
        assert result.exit_code == 2, (args, result.output)
        if message is not None:
            assert result.stderr == message
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.py").exists()


def test_a_missing_extra_names_it(cli, runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    result = cli("export", runs["xor"].path, "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert result.stderr == "Error: --format onnx needs the onnx package: pip install 'backprop[export]'\n"
    assert not (tmp_path / "x.onnx").exists()


def test_names_from_users_files_are_only_literals_in_the_pytorch_lines(runs, tmp_path):
    import ast
    import dataclasses

    hostile = ['a"""+__import__("os").system("echo PWNED")+"""', "b'\\n"]
    p = dataclasses.replace(runs["xor"].portable(), feature_names=hostile, output_names=['c"""'])
    code = torch_code(p, str(tmp_path / "net.safetensors"), beside=tmp_path / "sub" / "model.py")
    tree = ast.parse(code)
    literals = {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body if isinstance(t, ast.Assign)
                and isinstance(t.targets[0], ast.Name) and t.targets[0].id in ("inputs", "outputs")}  # fmt: skip
    assert literals == {"inputs": hostile, "outputs": ['c"""']}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }
    assert "__import__" not in names and "system" not in names  # the text stayed inside string literals
    # the file is found beside the code, wherever the code is run from
    assert 'load_file(str(Path(__file__).parent / "../net.safetensors"))' in code


def _onnx_with(nodes, inits, n_in=2, n_out=1):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.DOUBLE, ["n", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.DOUBLE, ["n", n_out])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_onnx_graphs_the_layout_cannot_read_are_refused(tmp_path):
    from onnx import helper, numpy_helper

    W = numpy_helper.from_array(np.ones((1, 2)), "W")
    transposed = _onnx_with([helper.make_node("Gemm", ["input", "W"], ["output"], transA=1, transB=1)], [W])
    assert _bad(tmp_path, "t.onnx", transposed).endswith(
        "Gemm node 0: transA=1 (the layout takes samples along rows: transA=0)"
    )
    free = _onnx_with([helper.make_node("MatMul", ["input", "input"], ["output"])], [])
    assert _bad(tmp_path, "f.onnx", free).endswith("MatMul node 0: its weights are not a constant of the graph")
    ints = _onnx_with([helper.make_node("Gemm", ["input", "W"], ["output"], transB=1)],
                      [numpy_helper.from_array(np.ones((1, 2), np.int32), "W")])  # fmt: skip
    assert _bad(tmp_path, "i.onnx", ints).endswith(
        "Gemm node 0: weights of dtype int32; expected floating-point numbers"
    )


def test_safetensors_of_integers_and_npz_bombs_are_refused(tmp_path):
    assert _bad(tmp_path, "i.safetensors", st.save({"0.weight": np.ones((2, 2), np.int8)})).endswith(
        "layer 1: weights of dtype int8; expected floating-point numbers"
    )
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:  # a header claiming 200000 x 200000 numbers, and no data
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (200000, 200000)}
        )
        z.writestr("W1.npy", header.getvalue())
    assert _bad(tmp_path, "bomb.npz", buffer.getvalue()).endswith(
        "W1: 200000 x 200000 numbers, over the 256 MiB limit for a weights file"
    )


def test_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notarun").mkdir()
    with pytest.raises(ConfigError) as e:
        load_config(_init_config(tmp_path, tmp_path / "notarun"))
    assert str(e.value).endswith(
        "notarun: a folder without weights.json: not a run folder (give a run, or a weights file)"
    )


def test_code_is_checked_before_anything_is_written(cli, runs, tmp_path):
    (tmp_path / "dir.py").mkdir()
    result = cli(
        "export", runs["xor"].path, "-f", "safetensors", "-o", tmp_path / "x.safetensors", "--code", tmp_path / "dir.py"
    )
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: {tmp_path / 'dir.py'}: is a folder")
    assert not (tmp_path / "x.safetensors").exists()
