"""`backprop diagnose`: why a run does (or does not) learn, layer by layer."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import app, cli_errors, out
from backprop_cli.cli.display import Column, fmt, print_table
from backprop_cli.cli.options import RunArgument, RunsDir

HEADERS = {
    "grad_norm_weights": "norm dL/dW",
    "grad_norm_biases": "norm dL/db",
    "update_ratio": "dW/W",
    "activation_mean": "mean a",
    "activation_std": "std a",
    "saturated_fraction": "saturated",
    "dead_fraction": "dead",
}


# the columns left out first on a narrow screen (highest first)
DROP = {"grad_norm_weights": 0, "grad_norm_biases": 3, "update_ratio": 2, "activation_mean": 5, "activation_std": 4,
        "saturated_fraction": 0, "dead_fraction": 0}  # fmt: skip


def _cell(quantity: str, value: float) -> str:
    import math

    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "inf"
    if quantity.endswith("_fraction"):
        return f"{100 * value:.0f}%"
    return fmt(value, 3)


@app.command()
@cli_errors
def diagnose(
    run: RunArgument = Path("latest"),
    runs_dir: RunsDir = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the table and findings as JSON.")] = False,
) -> None:
    """Say why a run learns or not: each layer's gradient norm, update size, activations,
    saturated and dead units at the start, middle and end of training, and findings with what
    to try. A run trained without --diagnose is diagnosed from its saved weights at the end.

    Example: backprop diagnose latest
    """
    import numpy as np

    from backprop_cli.diagnostics import QUANTITIES
    from backprop_cli.run_folders import resolve_run
    from backprop_cli.run_folders.diagnosed import diagnose as find

    d = find(resolve_run(run, runs_dir))
    if as_json:
        out.print(json.dumps(d.to_json(), indent=2), soft_wrap=True)
        return
    for note in d.notes:
        out.print(f"note: {note}", soft_wrap=not out.is_terminal)
    columns = [Column("epoch", keep=True), Column("layer", justify="left", keep=True)]
    shown = [q for q in QUANTITIES if (~np.isnan(d.values[:, :, QUANTITIES.index(q)])).any()]
    columns += [Column(HEADERS[q], drop=DROP[q]) for q in shown]
    rows = []
    for i in d.shown():
        for l, name in enumerate(d.names):
            rows.append([str(int(d.epochs[i])), name] + [_cell(q, d.values[i, l, QUANTITIES.index(q)]) for q in shown])
    title = f"{d.run.name}: layers at the start, middle and end" if d.recorded else f"{d.run.name}: layers at the end"
    # epoch 0 is the initial weights; epoch N, the weights after epoch N's updates
    print_table(title, columns, rows)
    if d.findings:
        out.print("findings:")
        for f in d.findings:
            out.print(f"- {f.text}", soft_wrap=not out.is_terminal)  # wrapped at words on a screen, whole in a pipe
    else:
        out.print(d.summary, soft_wrap=not out.is_terminal)
