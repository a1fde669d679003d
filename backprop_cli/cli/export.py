"""`backprop export`: a trained network as ONNX, safetensors (PyTorch's keys) or NumPy .npz."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out
from backprop_cli.cli.options import RunArgument, RunsDir


class Format(str, Enum):
    onnx = "onnx"
    safetensors = "safetensors"
    npz = "npz"


class DType(str, Enum):
    float64 = "float64"
    float32 = "float32"


@app.command()
@cli_errors
def export(
    run: RunArgument = Path("latest"),
    format: Annotated[
        Optional[Format],
        typer.Option("--format", "-f", help="onnx, safetensors or npz (default: from --output's suffix, else onnx)."),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", metavar="FILE", help="Where to write it (default: <run>/network.<format>)."),
    ] = None,
    dtype: Annotated[DType, typer.Option("--dtype", help="Precision of the written numbers.")] = DType.float64,
    code: Annotated[
        Optional[Path],
        typer.Option(
            "--code", metavar="FILE", help="safetensors: write the PyTorch lines to FILE instead of printing them."
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write a trained network for other tools: onnx (onnxruntime, Netron; the input scaling
    built in), safetensors under torch.nn.Sequential's keys (with the PyTorch lines that load
    it), or npz (W1, b1, ... for NumPy). onnx and safetensors need: pip install 'backprop[export]'.

    Example: backprop export latest --format onnx --output xor.onnx
    """
    from backprop_cli.exchange import FORMATS, WRITERS, torch_code
    from backprop_cli.files import atomic_write, writable
    from backprop_cli.run_folders import check_output, load_run, resolve_run

    by_suffix = {suffix: name for name, suffix in FORMATS.items()}
    chosen = format.value if format is not None else by_suffix.get(output.suffix.lower() if output else "", "onnx")
    if code is not None and chosen != "safetensors":
        raise UsageError("--code: the PyTorch lines go with --format safetensors")
    loaded = load_run(resolve_run(run, runs_dir))
    path = output if output is not None else loaded.path / f"network{FORMATS[chosen]}"
    if path.suffix.lower() in by_suffix and by_suffix[path.suffix.lower()] != chosen:
        raise UsageError(f"--output {path}: a .{by_suffix[path.suffix.lower()]} name for --format {chosen}")
    if code is not None and code.resolve() == path.resolve():
        raise UsageError(f"--code {code}: the same file as the export")
    for target in (path, code):
        if target is not None:
            check_output(target)
    portable = loaded.portable()
    data = WRITERS[chosen](portable, dtype.value)
    lines = torch_code(portable, str(path), dtype.value, beside=code) if chosen == "safetensors" else ""
    for target in (path, code):  # both places checked before either is written
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            writable(target)
    atomic_write(path, data)
    n = sum(w.size + (0 if b is None else b.size) for w, b in portable.layers)
    scaled = ", input scaling built in" if portable.shift is not None and chosen == "onnx" else ""
    err.print(f"wrote {path} ({chosen}, {dtype.value}, {n} parameters{scaled})", soft_wrap=True)
    if code is not None:
        try:
            atomic_write(code, lines)
        except BaseException:
            path.unlink(missing_ok=True)  # nothing half-done: the export goes with its code
            raise
        err.print(f"wrote {code} (the PyTorch lines that load it)", soft_wrap=True)
    elif lines:
        out.print(lines, end="", soft_wrap=True)
