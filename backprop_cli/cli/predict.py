"""`backprop predict`: ask a trained network at a prompt, for rows, a CSV file or a truth table."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out, painter, visible
from backprop_cli.cli.display import Column, emit, fmt, metric, output, predictions_table, print_table, warn
from backprop_cli.cli.options import RunsDir

if TYPE_CHECKING:
    from backprop_cli.run_folders import LoadedRun

MAX_TRUTH_TABLE_INPUTS = 8
MAX_LINE = 2**20  # characters of one line read at the prompt from a pipe (/dev/zero has no end of line)


def parse_row(text: str, n: int, what: str) -> list[float]:
    """Split '0 1' or '0,1' into n finite floats; raise UsageError naming the problem."""
    parts = text.replace(",", " ").split()
    if len(parts) != n:
        raise UsageError(f"{what}: expected {n} value{'s' if n != 1 else ''}, got {len(parts)}")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise UsageError(f"{what}: '{p}' is not a number") from None
        if not math.isfinite(v):
            raise UsageError(f"{what}: '{p}' is not a finite number")
        values.append(v)
    return values


def _show(loaded: LoadedRun, records: list[dict], as_json: bool) -> None:
    import json

    if as_json:
        out.print(json.dumps(records), soft_wrap=True)
        return
    with_class = bool(records) and "class" in records[0]
    rows = [
        [fmt(v, 6) for v in r["input"]] + [output(v) for v in r["output"]] + ([str(r["class"])] if with_class else [])
        for r in records
    ]
    predictions_table(loaded.feature_names, loaded.output_names, rows, with_class)


def _ask(prompt: str) -> Optional[str]:
    """One line typed at `prompt`, or None at end of input. At a terminal, with line editing
    and history (the arrow keys) from the standard library's readline."""
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (importing it gives input() editing and history)
        except ImportError:  # not on every platform: input() still works
            pass
        try:
            return input(visible(prompt))
        except EOFError:
            return None
    out.print(prompt, end="")
    sys.stdout.flush()
    line = sys.stdin.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise UsageError(f"standard input: a line longer than {MAX_LINE:,} characters (not rows of input values)")
    return line if line else None


def _interactive(loaded: LoadedRun) -> None:
    """Prompt for each input by name; a whole row at the first prompt works too. Ends at q or EOF."""
    names = loaded.feature_names
    n = len(names)
    while True:
        values: list[float] = []
        while len(values) < n:
            line = _ask(f"{names[len(values)]}: ")
            if line is None:  # end of input
                out.print()
                return
            text = line.strip()
            if text.lower() in ("q", "quit", "exit"):
                return
            if not text:
                continue
            try:
                if not values and len(text.replace(",", " ").split()) > 1:
                    values = parse_row(text, n, "input")
                else:
                    values += parse_row(text, 1, names[len(values)])
            except UsageError as e:
                err.print(f"{e} (try again, or q to quit)")
        _warn_outside(loaded, [values])
        record = loaded.records([values])[0]
        if loaded.by_class:
            answer = ", ".join(f"{name} {output(v)}" for name, v in zip(loaded.output_names, record["output"]))
        else:
            answer = (
                f"output{'s' if len(record['output']) > 1 else ''}: {', '.join(output(v) for v in record['output'])}"
            )
        if "class" in record:
            answer += f"  class: {record['class']}"
        out.print(answer)


def _warn_outside(loaded: LoadedRun, rows: Any) -> None:
    for line in loaded.outside(rows):
        err.print(f"Warning: {line}", soft_wrap=True)


def _load(run: Optional[Path], runs_dir: Path) -> LoadedRun:
    """The run named (or the latest completed one), with a warning when it did not complete."""
    from backprop_cli.run_folders import latest_completed, load_run, resolve_run

    loaded = load_run(resolve_run(run, runs_dir) if run is not None else latest_completed(runs_dir))
    if run is None or str(run) == "latest":
        err.print(f"run: {loaded.path} (latest)", soft_wrap=True)
    status = loaded.summary.get("status")
    if status != "completed":
        at = loaded.summary.get("diverged_at_epoch")
        why = f"diverged at epoch {at}: its weights are the last finite ones" if at else f"is {status}"
        err.print(f"Warning: {loaded.path}: this run {why}", soft_wrap=True)
    return loaded


@app.command()
@cli_errors
def predict(
    run: Annotated[
        Optional[Path], typer.Argument(help="Run folder, its name under --runs-dir, or latest (the default).")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    inputs: Annotated[
        Optional[List[str]], typer.Option("--input", metavar="ROW", help="One input row, e.g. 0,1 (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    csv_file: Annotated[
        Optional[Path], typer.Option("--csv", metavar="FILE", help="Predict every row of this CSV file.")
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", metavar="FILE", help="With --csv: write the CSV here instead of stdout."),
    ] = None,
    truth_table: Annotated[
        bool,
        typer.Option("--truth-table", help=f"Every 0/1 input combination (up to {MAX_TRUTH_TABLE_INPUTS} inputs)."),
    ] = False,
) -> None:
    """Ask a trained network: at a prompt (default), for --input rows, a --csv file, or a --truth-table.

    Example: backprop predict latest --input 0,1 --input 1,1
    """
    loaded = _load(run, runs_dir)
    n = loaded.net.sizes[0]
    if output is not None and csv_file is None:
        raise UsageError("--output goes with --csv")
    if truth_table:
        if n > MAX_TRUTH_TABLE_INPUTS:
            raise UsageError(f"--truth-table: the network has {n} inputs (at most {MAX_TRUTH_TABLE_INPUTS})")
        rows = [list(map(float, bits)) for bits in itertools.product([0, 1], repeat=n)]
        _warn_outside(loaded, rows)
        _show(loaded, loaded.records(rows), as_json)
    elif inputs:
        rows = [parse_row(text, n, f"--input {text}") for text in inputs]
        _warn_outside(loaded, rows)
        _show(loaded, loaded.records(rows), as_json)
    elif csv_file is not None:
        from backprop_cli.data import read_inputs_csv

        rows = read_inputs_csv(csv_file, loaded.feature_names).tolist()
        _warn_outside(loaded, rows)
        records = loaded.records(rows)
        if as_json:
            _show(loaded, records, True)
        else:
            emit(loaded.predictions_csv(records), output, f"{len(records)} predictions")
    else:
        out.print(f"{loaded.path}: type {n} input value{'s' if n != 1 else ''} (q or Ctrl-D to quit)")
        _interactive(loaded)


@app.command()
@cli_errors
def evaluate(
    ctx: typer.Context,
    run: Annotated[
        Optional[Path], typer.Argument(help="Run folder, its name under --runs-dir, or latest (the default).")
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="[DATA.csv]",
            help="Labelled CSV with the training data's columns (default: the run's validation data).",
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON (for scripts).")] = False,
    save: Annotated[
        bool,
        typer.Option("--save/--no-save", help="Write evaluation.json and confusion_matrix.png into the run folder."),
    ] = True,
) -> None:
    """Score a trained network on labelled data: loss, accuracy, per-class precision, recall
    and F1 with a confusion matrix (classifiers), or MAE, RMSE and R^2 (regression).

    Example: backprop evaluate latest data/iris_test.csv
    """
    import json

    from backprop_cli.run_folders import evaluate_run, write_evaluation
    from backprop_cli.run_folders.evaluate import evaluation_names, read_by_position

    loaded = _load(run, runs_dir)
    scores = evaluate_run(loaded, data)
    position = read_by_position(data, loaded.feature_names) if data is not None else None
    warnings = ([position] if position else []) + (
        write_evaluation(loaded.path, scores, painter(ctx), data) if save else []
    )
    warn(warnings)
    if as_json:
        out.print(json.dumps(scores), soft_wrap=True)
        return
    _scores(scores)
    if save:
        json_name, png_name = evaluation_names(data)
        drawn = "confusion_matrix" in scores and (loaded.path / png_name).exists()
        written = json_name + (f" and {png_name}" if drawn else "")
        out.print(f"wrote {written} to {loaded.path}", soft_wrap=True)


def _scores(scores: dict) -> None:
    """The scores as a few lines and tables."""
    n = scores["samples"]
    out.print(f"{scores['run']} on {scores['data']}: {n} sample{'s' if n != 1 else ''}", soft_wrap=True)
    line = f"loss ({scores['loss_function']}): {metric('loss', scores['loss'])}"
    for key in ("accuracy", "macro_f1", "mae", "rmse", "r2"):
        if key in scores:
            line += f"   {key.replace('_', ' ')}: {metric(key.removeprefix('macro_'), scores[key])}"
    out.print(line)
    if "classes" not in scores:
        return
    rows = [
        [str(c["class"])] + [metric(k, c[k]) for k in ("precision", "recall", "f1")] + [str(c["support"])]
        for c in scores["classes"]
    ]
    rows.append(["macro average"] + [metric(k, scores[f"macro_{k}"]) for k in ("precision", "recall", "f1")] + [str(n)])
    columns = [Column("class", justify="left", keep=True)] + [
        Column(k) for k in ("precision", "recall", "f1", "support")
    ]
    print_table("per class", columns, rows)
    names = [str(c["class"]) for c in scores["classes"]]
    matrix = [[name] + [str(v) for v in row] for name, row in zip(names, scores["confusion_matrix"])]
    columns = [Column("true \\ predicted", justify="left", keep=True)] + [Column(name) for name in names]
    print_table("confusion matrix", columns, matrix)
