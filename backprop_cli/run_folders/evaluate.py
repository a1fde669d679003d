"""`evaluate` on a run folder: its saved weights scored on a labelled CSV, or on the run's own
validation data (its training data when it held none out), written as evaluation.json and,
for classifiers, confusion_matrix.png."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

from backprop_cli.data import load_labelled_csv, read_csv
from backprop_cli.evaluation import evaluate
from backprop_cli.experiment import dataset
from backprop_cli.files import write_json
from backprop_cli.painter import Painter
from backprop_cli.run_folders.read import LoadedRun
from backprop_cli.run_folders.write import check_output, safe_name


def evaluate_run(run: LoadedRun, csv: Optional[Path] = None) -> dict[str, Any]:
    """Scores of the run's saved weights; "data" says what they were measured on."""
    cfg = run.cfg
    classification = bool(run.meta.get("classification"))
    if csv is not None:
        names, loss, dtype = run.feature_names, cfg.training.loss, cfg.training.dtype
        X_raw, Y = load_labelled_csv(csv, cfg.data, cfg.model, loss, names, run.class_names, classification, dtype)
        X, source = run.scaler.apply(X_raw), str(Path(csv).resolve())
    else:
        data = dataset(cfg, str(run.path / "config.yaml"))
        if data.X_val is not None and data.Y_val is not None:
            X, Y, source = data.X_val, data.Y_val, "validation data"
        else:
            X, Y, source = data.X, data.Y, "training data (the run held none out for validation)"
    scores = evaluate(run.net, X, Y, cfg.training.loss, classification, run.class_names)
    return {"run": run.path.name, "data": source, **scores}


def evaluation_names(csv: Optional[Path]) -> tuple[str, str]:
    """The files an evaluation is kept in, one pair per data set: evaluation.json and
    confusion_matrix.png for the run's own data, evaluation-<stem>.json and
    confusion_matrix-<stem>.png for a CSV (`iris_test.csv`: evaluation-iris_test.json)."""
    if csv is None:
        return "evaluation.json", "confusion_matrix.png"
    stem = safe_name(csv.name.removesuffix(".gz").removesuffix(".csv")[:60]) or "data"
    # two files of one name (csv/test.csv, csv2/test.csv; a.csv and a.csv.gz) are two data sets
    tag = hashlib.sha256(str(csv.resolve()).encode()).hexdigest()[:6]
    return f"evaluation-{stem}-{tag}.json", f"confusion_matrix-{stem}-{tag}.png"


def read_by_position(csv: Path, feature_names: list) -> Optional[str]:
    """A warning when a CSV has a header that names none of the run's inputs: its columns are
    then taken by position (None otherwise)."""
    table = read_csv(csv)
    header, first = table.header, table.first_line
    named = first > 1  # a header row came before the first data row
    defaults = [f"x{j + 1}" for j in range(len(feature_names))]
    names = [str(n) for n in feature_names]
    if not named or names == defaults:
        return None
    found = [n for n in names if n in header]
    if not found:
        return (
            f"{csv}: its header ({', '.join(header[:4])}{', ...' if len(header) > 4 else ''}) names none of the "
            f"run's inputs ({', '.join(names)}): its columns are read by position"
        )
    if len(found) < len(names):  # some named, not all: the names cannot be followed
        missing = [n for n in names if n not in header]
        return f"{csv}: its header lacks {', '.join(missing)} of the run's inputs: its columns are read by position"
    return None


def write_evaluation(
    folder: Path, scores: dict[str, Any], painter: Optional[Painter] = None, csv: Optional[Path] = None
) -> list[str]:
    """The evaluation's JSON and (classifiers) confusion matrix in `folder`, named by its data
    set (see `evaluation_names`); returns warnings."""
    json_name, png_name = evaluation_names(csv)
    json_path, png_path = folder / json_name, folder / png_name
    check_output(json_path)
    write_json(json_path, scores)
    if "confusion_matrix" not in scores:
        return []
    check_output(png_path)
    names = [row["class"] for row in scores["classes"]]
    # the file's name, not its path (which evaluation.json keeps): a long path would run off the title
    title = f"{scores['run']}: {csv.name if csv is not None else scores['data'].split(' (')[0]}"
    job = (png_path, "pictures.confusion_plot", (scores["confusion_matrix"], names, title))
    return (painter or Painter(background=False)).draw([job])
