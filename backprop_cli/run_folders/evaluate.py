"""`evaluate` on a run folder: its saved weights scored on a labelled CSV, or on the run's own
validation data (its training data when it held none out), written as evaluation.json and,
for classifiers, confusion_matrix.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from backprop_cli.data import load_labelled_csv
from backprop_cli.evaluation import evaluate
from backprop_cli.experiment import dataset
from backprop_cli.files import write_json
from backprop_cli.painter import Painter
from backprop_cli.run_folders.read import LoadedRun
from backprop_cli.run_folders.write import check_output


def evaluate_run(run: LoadedRun, csv: Optional[Path] = None) -> dict[str, Any]:
    """Scores of the run's saved weights; "data" says what they were measured on."""
    cfg = run.cfg
    classification = bool(run.meta.get("classification"))
    if csv is not None:
        X_raw, Y = load_labelled_csv(csv, cfg.data, cfg.model, run.feature_names, run.class_names, cfg.training.dtype)
        X, source = run.scaler.apply(X_raw), str(csv)
    else:
        data = dataset(cfg, str(run.path / "config.yaml"))
        if data.X_val is not None and data.Y_val is not None:
            X, Y, source = data.X_val, data.Y_val, "validation data"
        else:
            X, Y, source = data.X, data.Y, "training data (the run held none out for validation)"
    scores = evaluate(run.net, X, Y, cfg.training.loss, classification, run.class_names)
    return {"run": run.path.name, "data": source, **scores}


def write_evaluation(folder: Path, scores: dict[str, Any], painter: Optional[Painter] = None) -> list[str]:
    """evaluation.json and (classifiers) confusion_matrix.png in `folder`; returns warnings."""
    json_path, png_path = folder / "evaluation.json", folder / "confusion_matrix.png"
    check_output(json_path)
    write_json(json_path, scores)
    if "confusion_matrix" not in scores:
        return []
    check_output(png_path)
    names = [row["class"] for row in scores["classes"]]
    title = f"{scores['run']}: {scores['data'].split(' (')[0]}"
    job = (png_path, "pictures.confusion_plot", (scores["confusion_matrix"], names, title))
    return (painter or Painter(background=False)).draw([job])
