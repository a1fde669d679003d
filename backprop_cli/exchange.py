"""A network in other tools' layouts, and back: ONNX graphs, safetensors under the keys of the
equivalent `torch.nn.Sequential`, NumPy `.npz` files.

The layouts are written once here, for export and import alike:

- onnx: opset 17; one input `input` (n x inputs) and one output `output` (n x outputs); the
  input scaling as `Sub` and `Div` nodes first, so raw inputs give what `backprop predict`
  gives; each layer a `Gemm` (weights out x in, transB=1) and its activation node. The feature
  and output names are the model's metadata (`feature_names`, `output_names`, as JSON).
- safetensors: `0.weight` (out x in), `0.bias`, `2.weight`, ...: layer l is module 2l of the
  Sequential, its activation module 2l + 1 (identity included, so the numbering never shifts);
  the activations, scaling and names are JSON in the file's metadata under `backprop`.
- npz: `W1, b1, W2, b2, ...` (out x in, as in weights.json), `activations`, and where the run
  scales its inputs `scale_shift` and `scale_factor` (x_scaled = (x - shift) / factor).

Reading (`model.init_from`) takes any file in those layouts, whoever wrote it, or a run folder.
onnx and safetensors need the `export` extra; npz needs only NumPy.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from backprop_cli.activations import LEAKY_SLOPE
from backprop_cli.errors import BackpropError, ConfigError
from backprop_cli.files import RUN_FILE_LIMIT, check_file, read_json

FORMATS = {"onnx": ".onnx", "safetensors": ".safetensors", "npz": ".npz"}
OPSET = 17
EXTRA = "pip install 'backprop[export]'"
Layer = tuple[np.ndarray, Optional[np.ndarray]]  # weights (out x in), biases (out,) or None

# each activation as a torch.nn module and as ONNX nodes (op, attributes); identity has no node
TORCH_MODULES = {
    "sigmoid": "nn.Sigmoid()",
    "tanh": "nn.Tanh()",
    "relu": "nn.ReLU()",
    "leaky_relu": f"nn.LeakyReLU({LEAKY_SLOPE})",
    "identity": "nn.Identity()",
    "softmax": "nn.Softmax(dim=1)",
}
ONNX_OPS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softmax": "Softmax"}


class LayoutError(ValueError):
    """A file that is not a network in one of the layouts (the caller names the file)."""


@dataclass(frozen=True)
class Portable:
    """What every layout holds of a trained network: its layers, activations, input scaling
    (None: raw inputs) and the names of its inputs and outputs."""

    layers: list[Layer]
    activations: list[str]
    shift: Optional[np.ndarray]
    factor: Optional[np.ndarray]
    feature_names: list[str]
    output_names: list[str]
    name: str = "backprop"

    @property
    def sizes(self) -> list[int]:
        return [self.layers[0][0].shape[1]] + [w.shape[0] for w, _ in self.layers]

    def card(self) -> dict[str, Any]:
        """The JSON-ready description the onnx and safetensors files carry as metadata."""
        return {
            "layers": self.sizes,
            "activations": self.activations,
            "scaling": None
            if self.shift is None or self.factor is None
            else {"shift": self.shift.tolist(), "factor": self.factor.tolist()},
            "feature_names": self.feature_names,
            "output_names": self.output_names,
        }


def torch_key(layer: int, kind: str) -> str:
    """The state_dict key of layer `layer`'s (0-based) `weight` or `bias` in the Sequential."""
    return f"{2 * layer}.{kind}"


def _need(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs the {module.split('.')[0]} package: {EXTRA}") from None


# -- writing --------------------------------------------------------------------------------


def to_npz(p: Portable, dtype: str = "float64") -> bytes:
    arrays: dict[str, np.ndarray] = {}
    for l, (w, b) in enumerate(p.layers):
        arrays[f"W{l + 1}"] = w.astype(dtype)
        if b is not None:
            arrays[f"b{l + 1}"] = b.astype(dtype)
    arrays["activations"] = np.array(p.activations)
    if p.shift is not None and p.factor is not None:
        arrays["scale_shift"], arrays["scale_factor"] = p.shift.astype(dtype), p.factor.astype(dtype)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def to_safetensors(p: Portable, dtype: str = "float64") -> bytes:
    st = _need("safetensors.numpy", "--format safetensors")
    tensors = {}
    for l, (w, b) in enumerate(p.layers):
        tensors[torch_key(l, "weight")] = np.ascontiguousarray(w, dtype)
        if b is not None:
            tensors[torch_key(l, "bias")] = np.ascontiguousarray(b, dtype)
    data: bytes = st.save(tensors, metadata={"format": "pt", "backprop": json.dumps(p.card())})
    return data


def to_onnx(p: Portable, dtype: str = "float64") -> bytes:
    onnx = _need("onnx", "--format onnx")
    from onnx import helper, numpy_helper

    elem = onnx.TensorProto.DOUBLE if dtype == "float64" else onnx.TensorProto.FLOAT
    inits, nodes = [], []

    def constant(name: str, values: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(values, dtype), name))
        return name

    x = "input"
    if p.shift is not None and p.factor is not None:
        nodes.append(helper.make_node("Sub", [x, constant("scale_shift", p.shift)], ["shifted"], name="scale_sub"))
        nodes.append(helper.make_node("Div", ["shifted", constant("scale_factor", p.factor)], ["x"], name="scale_div"))
        x = "x"
    last = len(p.layers) - 1
    for l, ((w, b), act) in enumerate(zip(p.layers, p.activations)):
        n = l + 1
        args = [x, constant(f"W{n}", w)] + ([constant(f"b{n}", b)] if b is not None else [])
        z, a = f"z{n}", "output" if l == last else f"a{n}"
        nodes.append(helper.make_node("Gemm", args, [z], name=f"layer{n}", transB=1))
        if act == "identity":
            nodes.append(helper.make_node("Identity", [z], [a], name=f"identity{n}"))
        elif act == "leaky_relu" and dtype == "float64":
            # onnxruntime keeps LeakyRelu's alpha as a 32-bit float (8e-10 off in float64):
            # max(z, 0.01 z), as the engine computes it
            nodes.append(helper.make_node("Mul", [z, constant(f"slope{n}", np.array(LEAKY_SLOPE))], [f"s{n}"]))
            nodes.append(helper.make_node("Max", [z, f"s{n}"], [a], name=f"leaky_relu{n}"))
        elif act == "leaky_relu":
            nodes.append(helper.make_node("LeakyRelu", [z], [a], name=f"leaky_relu{n}", alpha=LEAKY_SLOPE))
        else:
            attributes: dict[str, Any] = {"axis": 1} if act == "softmax" else {}
            nodes.append(helper.make_node(ONNX_OPS[act], [z], [a], name=f"{act}{n}", **attributes))
        x = a
    sizes = p.sizes
    graph = helper.make_graph(
        nodes,
        p.name,
        [helper.make_tensor_value_info("input", elem, ["n", sizes[0]])],
        [helper.make_tensor_value_info("output", elem, ["n", sizes[-1]])],
        inits,
        doc_string=f"inputs: {', '.join(p.feature_names)}; outputs: {', '.join(p.output_names)}",
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="backprop", doc_string=p.name
    )
    model.ir_version = 8  # what opset 17 needs; readable by onnxruntime 1.12 and later
    helper.set_model_props(
        model, {key: json.dumps(value) for key, value in p.card().items() if key in ("feature_names", "output_names")}
    )
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    return data


def torch_code(p: Portable, path: str, dtype: str = "float64", beside: Optional[Path] = None) -> str:
    """The PyTorch lines that build the Sequential, load the safetensors file at `path` and
    predict from raw inputs, with the run's scaling. With `beside` (the file the lines go to),
    the safetensors file is found relative to that file, wherever it is run from. Names (of
    features and classes, which come from users' files) appear only as Python literals."""
    modules = []
    for (w, b), act in zip(p.layers, p.activations):
        n_out, n_in = w.shape
        modules.append(f"nn.Linear({n_in}, {n_out}{'' if b is not None else ', bias=False'}),")
        modules.append(f"{TORCH_MODULES[act]},")
    torch_dtype = "torch.float64" if dtype == "float64" else "torch.float32"
    if beside is not None:
        relative = os.path.relpath(Path(path).resolve(), Path(beside).resolve().parent)
        where = f"str(Path(__file__).parent / {json.dumps(relative)})"
    else:
        where = json.dumps(path)
    lines = [
        *(["from pathlib import Path", ""] if beside is not None else []),
        "import torch",
        "from safetensors.torch import load_file",
        "from torch import nn",
        "",
        # JSON's string escapes are Python's: the names are literals, whatever they hold
        f"inputs = {json.dumps([str(n) for n in p.feature_names])}  # the columns of x, in order",
        f"outputs = {json.dumps([str(n) for n in p.output_names])}  # the columns of predict(x)",
        "model = nn.Sequential(",
        *(f"    {m}" for m in modules),
        f").to({torch_dtype})",
        f"model.load_state_dict(load_file({where}))",
        "model.eval()",
    ]
    scaled = p.shift is not None and p.factor is not None
    if p.shift is not None and p.factor is not None:
        lines += [
            f"{name} = torch.tensor(\n    {values.tolist()!r},\n    dtype={torch_dtype},\n)"
            for name, values in (("shift", p.shift), ("factor", p.factor))
        ]
    x = f"torch.as_tensor(x, dtype={torch_dtype})"
    lines += [
        "",
        "",
        "def predict(x):",
        f'    """The outputs for {"raw " if scaled else ""}inputs x (n x {len(p.feature_names)}), as backprop predict gives them."""',
        f"    return model(({x} - shift) / factor)" if scaled else f"    return model({x})",
    ]
    return "\n".join(lines) + "\n"


WRITERS = {"onnx": to_onnx, "safetensors": to_safetensors, "npz": to_npz}


# -- reading --------------------------------------------------------------------------------


def read_layers(path: Path) -> list[Layer]:
    """The layers [(weights out x in, biases or None), ...] of a file in one of the layouts (by
    its suffix) or of a run folder's weights.json. Raises LayoutError (what is wrong, the
    caller adds the path) or ConfigError (not there, not a file, a missing extra)."""
    path = Path(path)
    try:
        if path.is_dir():
            if not (path / "weights.json").exists():
                raise LayoutError("a folder without weights.json: not a run folder (give a run, or a weights file)")
            return _checked(_from_run(path / "weights.json"))
        suffix = path.suffix.lower()
        readers = {".npz": _from_npz, ".safetensors": _from_safetensors, ".onnx": _from_onnx, ".json": _from_run}
        if suffix not in readers:
            raise LayoutError(
                f"unknown format '{suffix or path.name}': give a .onnx, .safetensors or .npz file, or a run"
            )
        check_file(path, "weights file", ConfigError, RUN_FILE_LIMIT)
        return _checked(readers[suffix](path))
    except (LayoutError, ConfigError):
        raise
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable file
        raise LayoutError(f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    except Exception as e:  # whatever else a malformed file makes a reader raise: one line, not a traceback
        raise LayoutError(
            f"not a network in the {path.suffix.lstrip('.') or 'expected'} layout ({type(e).__name__}: {e})"
        ) from None


def _checked(layers: list[Layer]) -> list[Layer]:
    """Layers of finite floating-point numbers, weights 2-D, one bias per unit."""
    if not layers:
        raise LayoutError("holds no layers")
    for l, (w, b) in enumerate(layers):
        for kind, values in (("weights", w), ("biases", b)):
            if values is not None and values.dtype.kind != "f":
                raise LayoutError(f"layer {l + 1}: {kind} of dtype {values.dtype}; expected floating-point numbers")
        if w.ndim != 2:
            raise LayoutError(f"layer {l + 1}: weights of shape {' x '.join(map(str, w.shape))}; expected out x in")
        if b is not None and b.shape != (w.shape[0],):
            raise LayoutError(f"layer {l + 1}: {b.size} biases for its {w.shape[0]} units")
        for kind, values in (("weights", w), ("biases", b)):
            if values is not None and not np.all(np.isfinite(values)):
                raise LayoutError(f"layer {l + 1}: non-finite {kind}")
    return [(w.astype(float), None if b is None else b.astype(float)) for w, b in layers]


def _numbered(names: list[str], pattern: str) -> dict[int, str]:
    found = {}
    for name in names:
        m = re.fullmatch(pattern, name)
        if m:
            found[int(m.group(1))] = name
    return found


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype from its .npy header, before any data is decompressed (a
    small file may claim a 200000 x 200000 array)."""
    found = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = info.filename.removesuffix(".npy")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            found[name] = (shape, dtype)
    return found


def _from_npz(path: Path) -> list[Layer]:
    try:
        headers = _npz_headers(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise LayoutError(f"not a readable .npz file ({e})") from None
    for name, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise LayoutError(f"{name}: holds Python objects (pickled), which are never read; save numbers")
        if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > RUN_FILE_LIMIT:
            size = " x ".join(map(str, shape))
            raise LayoutError(
                f"{name}: {size} numbers, over the {RUN_FILE_LIMIT // 2**20} MiB limit for a weights file"
            )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise LayoutError(f"not a readable .npz file ({e})") from None
    weights, biases = _numbered(list(arrays), r"W(\d+)"), _numbered(list(arrays), r"b(\d+)")
    if not weights:
        raise LayoutError(f"no W1, W2, ... arrays (it holds {', '.join(sorted(arrays)) or 'nothing'})")
    if sorted(weights) != list(range(1, len(weights) + 1)):
        raise LayoutError(f"weights {', '.join(weights[i] for i in sorted(weights))}: expected W1 to W{len(weights)}")
    return [(arrays[weights[i]], arrays[biases[i]] if i in biases else None) for i in range(1, len(weights) + 1)]


def _from_safetensors(path: Path) -> list[Layer]:
    st = _need("safetensors.numpy", "model.init_from (a .safetensors file)")
    try:
        tensors = st.load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError and others for bad headers
        raise LayoutError(
            f"not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    weights = _numbered(list(tensors), r"(?:.*\.)?(\d+)\.weight")
    if not weights:
        raise LayoutError(f"no 0.weight, 2.weight, ... tensors (it holds {', '.join(sorted(tensors)) or 'nothing'})")
    layers = []
    for i in sorted(weights):
        key = weights[i]
        bias = key[: -len("weight")] + "bias"
        layers.append((tensors[key], tensors.get(bias)))
    return layers


def _from_onnx(path: Path) -> list[Layer]:
    onnx = _need("onnx", "model.init_from (an .onnx file)")
    from onnx import numpy_helper

    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise LayoutError(f"not a readable ONNX model ({type(e).__name__})") from None
    graph = model.graph
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise LayoutError(f"initializer {t.name}: its numbers are in an external file, which is not read; "
                              "save the model with its weights inside (onnx.save_model(..., save_as_external_data=False))")  # fmt: skip
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # weights held as Constant nodes rather than initializers
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    layers: list[Layer] = []
    nodes = list(graph.node)
    for i, node in enumerate(nodes):
        label = f"{node.op_type} node {node.name or i}"
        if node.op_type not in ("Gemm", "MatMul"):
            continue
        if len(node.input) < 2 or node.input[1] not in values:
            raise LayoutError(f"{label}: its weights are not a constant of the graph")
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0):
                raise LayoutError(f"{label}: transA=1 (the layout takes samples along rows: transA=0)")
            w = values[node.input[1]]
            w = w if attrs.get("transB", 0) else w.T
            b = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 2 and node.input[2] and b is None:
                raise LayoutError(f"{label}: its biases are not a constant of the graph")
            for kind, array in (("weights", w), ("biases", b)):
                if array is not None and array.dtype.kind != "f":
                    raise LayoutError(f"{label}: {kind} of dtype {array.dtype}; expected floating-point numbers")
            w = w * attrs.get("alpha", 1.0)
            if b is not None:  # C broadcasts: a scalar or (1, out) bias is one per unit
                b = (
                    np.broadcast_to(np.ravel(b), (w.shape[0],)) * attrs.get("beta", 1.0)
                    if np.size(b) in (1, w.shape[0])
                    else np.ravel(b)
                )
            layers.append((w, b))
        else:
            w, b = values[node.input[1]].T, None
            after = [n for n in nodes if n.op_type == "Add" and node.output[0] in n.input]
            if after:
                other = [name for name in after[0].input if name != node.output[0]]
                b = values[other[0]].reshape(-1) if other and other[0] in values else None
            layers.append((w, b))
    if not layers:
        raise LayoutError("no Gemm or MatMul nodes with constant weights")
    return layers


def _from_run(path: Path) -> list[Layer]:
    try:
        data = read_json(path)
    except BackpropError as e:  # missing, too large or not JSON
        raise LayoutError(str(e).removeprefix(f"{path}: ")) from None
    try:
        return [
            (
                np.asarray(layer["weights"], float),
                None if layer.get("biases") is None else np.asarray(layer["biases"], float),
            )
            for layer in data["layers"]
        ]
    except (KeyError, TypeError, ValueError):
        raise LayoutError(f"{path.name}: expected layers of weights and biases") from None


def check_shapes(layers: list[Layer], sizes: list[int], bias: bool) -> Optional[str]:
    """What keeps `layers` from being a network of `sizes` (None: they fit), naming the
    tensor and both shapes."""
    if len(layers) != len(sizes) - 1:
        return f"holds {len(layers)} layers of weights; model.layers {sizes} has {len(sizes) - 1}"
    for l, ((w, b), n_in, n_out) in enumerate(zip(layers, sizes, sizes[1:])):
        if w.shape != (n_out, n_in):
            return (
                f"layer {l + 1}'s weights ({torch_key(l, 'weight')}, W{l + 1}) are {w.shape[0]} x {w.shape[1]}; "
                f"model.layers {sizes} needs {n_out} x {n_in} (out x in)"
            )
        if bias and b is None:
            return f"layer {l + 1} has no biases ({torch_key(l, 'bias')}, b{l + 1}); model.bias is true"
        if not bias and b is not None and np.any(b):
            return f"layer {l + 1} has biases ({torch_key(l, 'bias')}, b{l + 1}); model.bias is false"
    return None
