"""`backprop gradcheck` and `backprop explain`: check the maths, and show one step by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out
from backprop_cli.cli.display import Column, Steps, emit, fmt, print_table
from backprop_cli.cli.options import ConfigFile, Method, Sets, TableFormat, load, load_data

TEXT = ("layer", "neuron", "parameter", "connects")  # explain's columns of names, not numbers


@app.command()
@cli_errors
def gradcheck(
    config: ConfigFile,
    epochs: Annotated[
        int, typer.Option("--epochs", metavar="N", min=0, help="Also check after this many training epochs.")
    ] = 0,
    epsilon: Annotated[
        Optional[float],
        typer.Option(
            "--epsilon", metavar="H", help="Finite-difference step h (default 1e-4 for five-point, 1e-6 for central)."
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", metavar="REL", help="Largest relative error that passes.")
    ] = 1e-6,
    method: Annotated[
        Method,
        typer.Option("--method", help="five-point (error O(h^4)) or central (the classic (L(w+h) - L(w-h)) / 2h)."),
    ] = Method.five_point,
    check_all: Annotated[
        bool,
        typer.Option("--all", help="Check every parameter (default: a seeded sample of each layer's parameters)."),
    ] = False,
    sets: Sets = None,
) -> None:
    """Compare backprop's gradient of every weight and bias with finite differences.

    Relative error = |analytic - numeric| / max(|analytic|, |numeric|, floor), where the floor
    (10 * 2.2e-16 * max(|loss|, 1) / h / threshold) keeps gradients below the finite differences'
    round-off from failing spuriously. Parameters whose difference steps move a relu unit across
    its kink are counted as kinks, not judged. Exit 0 on pass, 1 on fail.

    Example: backprop gradcheck configs/xor.yaml --epochs 100
    """
    if (epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon))) or not (
        threshold > 0 and math.isfinite(threshold)
    ):
        raise UsageError("--epsilon and --threshold must be finite and > 0")
    cfg = load(config, sets=sets)
    data = load_data(cfg, config)
    from backprop_cli.gradcheck import SAMPLE_PER_LAYER, likely_cause
    from backprop_cli.gradcheck import gradcheck as check

    sample = None if check_all else SAMPLE_PER_LAYER
    with Steps("checking parameters") as progress:
        reports = check(cfg, data, epochs, epsilon, threshold, method.name, sample, progress)
    for rep in reports:
        where = "at the initial weights" if rep.epoch == 0 else f"after {rep.epoch} epochs"
        table = Table(
            title=f"gradient check {where} (loss {fmt(rep.loss, 8)}, {method.value} differences, threshold {threshold:g})"
        )
        for col in ("layer", "parameters", "kinks", "max abs error", "max rel error", "worst", "result"):
            table.add_column(col, justify="right" if col not in ("worst", "result") else "left")
        for layer in rep.layers:
            checked = str(layer.n_params) if layer.checked == layer.n_params else f"{layer.checked} of {layer.n_params}"
            table.add_row(
                str(layer.layer),
                checked,
                str(layer.kinks),
                f"{layer.max_abs:.3e}",
                f"{layer.max_rel:.3e}",
                layer.worst,
                "pass" if layer.passed else "FAIL",
                style=None if layer.passed else "bold red",
            )
        out.print(table)
        if rep.sampled:
            out.print(f"checked a sample of {sample} parameters per layer (seed {cfg.seed}); --all checks every one")
        said = []
        if cfg.training.l1 or cfg.training.weight_decay:
            said.append("of the penalised loss (loss + l1 sum |w| + weight_decay / 2 sum w^2)")
        if any(cfg.model.dropout_rates):
            said.append("with the dropout masks training draws at that step, held fixed")
        if said:
            out.print(f"gradients {' and '.join(said)}")
        if any(layer.kinks for layer in rep.layers):
            what = "a relu unit" + (" or the parameter itself (training.l1's |w|)" if cfg.training.l1 else "")
            out.print(
                f"kinks: parameters whose difference steps move {what} across 0, where the loss has no derivative"
            )
    if all(rep.passed for rep in reports):
        out.print("gradient check passed")
    else:
        failed = next(rep for rep in reports if not rep.passed)
        cause = likely_cause(failed, cfg.model.activations, cfg.training.loss)
        err.print(f"Error: gradient check failed: analytic and numerical gradients disagree in {cause}", soft_wrap=True)
        raise typer.Exit(1)


def run_config(path: Path) -> Path:
    """A config file, or the config.yaml of a run folder or of a study's cell (`STUDY/cell_0417`,
    whose folder is written from the study's store when first asked for)."""
    from backprop_cli.run_folders.cells import resolve_cell

    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    folder = path if path.is_dir() else resolve_cell(path)
    return folder / "config.yaml" if folder is not None and (folder / "config.yaml").exists() else path


@app.command()
@cli_errors
def explain(
    config: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="YAML config file, or a run folder or a study's cell.")
    ],
    epoch: Annotated[
        int, typer.Option("--epoch", metavar="N", min=1, help="Which training step to explain (1 = the first).")
    ] = 1,
    sample: Annotated[
        int, typer.Option("--sample", metavar="N", min=1, help="Which sample's neuron values to show (1-based).")
    ] = 1,
    out_format: Annotated[
        Optional[TableFormat],
        typer.Option("--format", help="Print (or with --output write) the tables as markdown or csv."),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", metavar="FILE", help="Write the tables to this file.")
    ] = None,
    diagram: Annotated[
        Optional[Path],
        typer.Option("--diagram", metavar="PNG", help="Draw the network with this step's weights (PNG)."),
    ] = None,
    sets: Sets = None,
) -> None:
    """Show one training step by hand: forward pass, loss, deltas, gradients and the update.

    Example: backprop explain configs/worked_example.yaml --format markdown --output step1.md
    """
    if output is not None and out_format is None:
        out_format = TableFormat.csv if output.suffix == ".csv" else TableFormat.markdown
    config = run_config(config)
    cfg = load(config, sets=sets)
    data = load_data(cfg, config)
    from backprop_cli import pictures
    from backprop_cli.explain import explain_step, render, write_diagram

    if diagram is not None and sum(cfg.model.layers) > pictures.MAX_DIAGRAM_NEURONS:
        raise UsageError(
            f"--diagram: the network has {sum(cfg.model.layers)} neurons "
            f"(at most {pictures.MAX_DIAGRAM_NEURONS} can be drawn)"
        )
    sections, weights = explain_step(cfg, data, epoch, sample)
    if diagram is not None:  # first: written whatever then happens to standard output (| head)
        from backprop_cli.run_folders import check_output

        check_output(diagram)
        write_diagram(diagram, cfg, weights[0], epoch)
    if out_format is not None:
        emit(render(sections, out_format.value), output, f"epoch {epoch}'s step")
    else:
        if cfg.training.batch_size:
            out.print("note: explain shows a full-batch step (training.batch_size is ignored here)")
        for s in sections:
            # too wide for the terminal, a table is printed in parts that repeat the row's key
            # (the layer and neuron, or the parameter): a number is never cut
            columns = [
                Column(h, "left" if h in TEXT else "right", keep=h in ("layer", "neuron", "parameter"))
                for h in s.headers
            ]
            print_table(f"epoch {epoch}: {s.title}", columns, s.rows)
            if s.note:
                out.print(s.note)
    if diagram is not None:
        out.print(f"wrote {diagram}")
