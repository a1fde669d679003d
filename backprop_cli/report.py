"""report.html: one self-contained page about a run, a sweep or a seed study, for a teacher
to mail or put on a course page. Images are embedded as data URIs; the page loads nothing
from the network and needs no JavaScript.

A run's page holds its summary, config, every plot and the animation, its evaluation when
`backprop evaluate` wrote one, the first training step as `explain` shows it (for nets small
enough to read), and the final weights. A study's page holds its table, its plots and
animation, and the list of its run folders.
"""

from __future__ import annotations

import base64
import math
import re
from html import escape
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from backprop_cli.errors import BackpropError, RunError
from backprop_cli.files import RUN_FILE_LIMIT, MiB, not_own, read_json
from backprop_cli.metrics import metric_text
from backprop_cli.pictures import MAX_DIAGRAM_NEURONS
from backprop_cli.run_folders import LoadedRun, config_text, load_run, read_rows, read_summary
from backprop_cli.run_folders.schema import Evaluation, read_dict

REPORT = "report.html"
# the plots a page shows, in this order: found by name, never by a pattern of the folder's
# files (a `*.png` there may be a symlink to any file, a FIFO or /dev/zero)
PLOTS = (
    "loss",
    "accuracy",
    "decision_boundary",
    "fit",
    "network",
    "confusion_matrix",
    "gradients",
    "units",
    "loss_curves",
    "loss_grid",
    "box",
    "heatmap",
    "landscape",
    "search",
)
# an evaluation on a CSV: evaluation-<data>-<tag>.json and confusion_matrix-<data>-<tag>.png
EVALUATED = re.compile(r"(evaluation|confusion_matrix)-.+-[0-9a-f]{6}\.(json|png)")
EMBED_LIMIT = 32 * MiB  # of one embedded file: backprop's plots are well under 1 MiB, a GIF a few


def _own(folder: Path, name: str, left_out: list[str]) -> Optional[Path]:
    """`folder/name` when it is a regular file of the folder itself within EMBED_LIMIT; None
    when it is missing, or (noted in `left_out`) a symlink, special file or too large."""
    path = folder / name
    why = not_own(path, EMBED_LIMIT)
    if why is None:
        return path
    if why != "missing":
        left_out.append(f"{name} ({why})")
    return None


def _evaluated(folder: Path, suffix: str) -> list[str]:
    """The names of the evaluations on CSVs a run folder holds (`.json` or `.png`), sorted."""
    return sorted(p.name for p in folder.iterdir() if EVALUATED.fullmatch(p.name) and p.name.endswith(suffix))


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; overflow-wrap: anywhere; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.88em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e3e3e3; }
figcaption { color: #555; font-size: 0.9em; }
.status-completed { color: #176317; } .status-diverged, .status-failed { color: #b00020; }
"""


def _data_uri(path: Path) -> str:
    kind = "gif" if path.suffix == ".gif" else "png"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _figure(path: Path, caption: str) -> str:
    return (
        f'<figure><img src="{_data_uri(path)}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _cell(value: Any, column: str = "") -> str:
    """A value as the commands print it: numbers of a named metric in its format."""
    if isinstance(value, float):
        return metric_text(column, value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v, k)}" for k, v in value.items())
    if isinstance(value, list):
        if len(value) > 12:
            return f"{len(value)} values"
        # a list inside a list (a grid over model.layers) keeps its brackets: [2, 2, 1], [2, 4, 1]
        return ", ".join(f"[{_cell(v)}]" if isinstance(v, list) else _cell(v) for v in value)
    return "-" if value is None else str(value)


def _study_config(folder: Path, left_out: list[str]) -> Optional[str]:
    """What a study trained: a grid's or search's request (grid.json: the config, its grid or
    space, seeds and --set), else the config of its first run folder, said so."""
    from backprop_cli.config import dump_yaml

    asked = _own(folder, "grid.json", left_out)
    if asked is not None:
        return "grid.json (what the study asked for):\n" + dump_yaml(read_json(asked))
    runs = sorted(p for p in folder.iterdir() if (p / "config.yaml").exists())
    if runs and _own(runs[0], "config.yaml", left_out):
        text = config_text(runs[0])
        return (
            None
            if text is None
            else f"{runs[0].name}/config.yaml (the study's first run; its rate or seed varies):\n{text}"
        )
    return None


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: int = 1, keyed: bool = False) -> str:
    """An HTML table; the first `text_columns` columns left-aligned, numbers right-aligned. A
    number is formatted by its column's name, or with `keyed` (key, value rows) by its row's."""
    head = "".join(
        f'<th class="{"text" if i < text_columns else ""}">{escape(str(h))}</th>' for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"text" if i < text_columns else ""}">'
            f"{escape(_cell(v, str(row[0]) if keyed else str(header[i])))}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _images(folder: Path, left_out: list[str]) -> list[str]:
    names = [f"{name}.png" for name in PLOTS] + _evaluated(folder, ".png")
    parts = [_figure(path, path.name) for path in (_own(folder, name, left_out) for name in names) if path]
    gif = _own(folder, "training.gif", left_out)
    if gif is not None:
        parts.insert(0, _figure(gif, "training.gif: the network learning"))
    return parts


def _csv_table(path: Path, max_rows: int = 200) -> str:
    header, body = read_rows(path)
    if not header:
        return ""
    # weight columns past the summary ones make a table no page can show; the CSV has them
    keep = min(len(header), 5)
    shown = [[_number(c) for c in r[:keep]] for r in body[:max_rows]]
    note = f"<p class='meta'>{len(body) - max_rows} more rows in {path.name}</p>" if len(body) > max_rows else ""
    return _table(header[:keep], shown) + note


def _grid_table(path: Path, sort: str, best: int = 20, up_to: int = 64) -> str:
    """A grid's cells as the terminal shows them: every column, sorted best first by the
    study's sort column; past `up_to` cells only the best `best`, and a note."""
    from backprop_cli.metrics import is_score

    header, body = read_rows(path)
    if not header:
        return ""
    if sort in header:
        at, sign = header.index(sort), -1.0 if is_score(sort) else 1.0
        numbers = [(r, _number(r[at])) for r in body]
        have = [r for r, v in numbers if isinstance(v, float) and math.isfinite(v)]
        have.sort(key=lambda r: sign * float(r[at]))
        body = have + [r for r, v in numbers if not (isinstance(v, float) and math.isfinite(v))]
    shown = body if len(body) <= up_to else body[:best]
    note = ""
    if len(shown) < len(body):
        note = f"<p class='meta'>the best {len(shown)} of {len(body):,} cells by {escape(sort)}; every cell is in {path.name}</p>"
    return _table(header, [[_number(c) for c in r] for r in shown]) + note


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _explain(run: LoadedRun) -> Optional[str]:
    """The first training step as explain shows it, as HTML tables (None for a big net)."""
    from backprop_cli.experiment import dataset
    from backprop_cli.explain import explain_step

    cfg, folder = run.cfg, run.path
    if sum(cfg.model.layers) > MAX_DIAGRAM_NEURONS:
        return None
    try:
        sections, _ = explain_step(cfg, dataset(cfg, str(folder / "config.yaml")), 1, 1)
    except BackpropError:
        return None
    parts = []
    for s in sections:
        parts.append(f"<h3>{escape(s.title)}</h3>")
        parts.append(_table(s.headers, s.rows, text_columns=2))
        if s.note:
            parts.append(f"<p>{escape(s.note)}</p>")
    return "".join(parts)


def _weights(run: LoadedRun) -> str:
    from backprop_cli.network import neuron_names

    names = neuron_names(run.net.sizes)
    parts = []
    for l, (W, b) in enumerate(run.net.get_params(0)):
        header = ["neuron"] + names[l] + (["bias"] if b is not None else [])
        rows = [
            [names[l + 1][i]] + list(map(float, W[i])) + ([float(b[i])] if b is not None else []) for i in range(len(W))
        ]
        parts.append(f"<h3>layer {l + 1}: {len(W)} x {W.shape[1]} (one row per neuron, out x in)</h3>")
        parts.append(_table(header, rows))
    return "".join(parts)


KINDS = {  # what the page says a study is
    "chain": "a chained learning-rate sweep: each rate continued from the previous rate's final weights, "
    "so later rates start ahead (not a fair comparison)",
    "sweep": "a learning-rate sweep",
    "seeds": "a seed study",
    "grid": "a grid study",
    "search": "a search",
}


def build_report(folder: Path) -> str:
    """The page for a run or study folder, as HTML text."""
    folder = Path(folder)
    left_out: list[str] = []
    why = not_own(folder / "summary.json", RUN_FILE_LIMIT)
    if why not in (None, "missing"):  # missing: read_summary says it is not a run folder
        raise RunError(f"{folder / 'summary.json'}: {why}; a report reads only the folder's own files")
    summary = read_summary(folder)
    kind = summary.get("kind")
    if kind == "sweep" and summary.get("protocol") == "chain":
        kind = "chain"
    name = folder.name
    status = str(summary.get("status", "unknown"))
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(name)}: backprop report</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(name)}</h1>",
        f"<p class='meta'>{escape(KINDS.get(kind, f'a {kind} study')) if kind else 'a training run'}, "
        f"<span class='status-{escape(status)}'>{escape(status)}</span>; "
        f"started {escape(str(summary.get('started_at', '-')))}; written by backprop "
        f"{escape(str((summary.get('versions') or {}).get('backprop', '')))}</p>",
    ]
    if kind:
        cells = kind in ("grid", "search")  # a store's cells, in grid.csv
        table = _own(folder, "grid.csv" if cells else f"{kind}.csv", left_out)
        out.append("<h2>Results</h2>")
        if table is not None:
            out.append(_grid_table(table, str(summary.get("sort", "final_loss"))) if cells else _csv_table(table))
    out.append("<h2>Summary</h2>")
    skip = {"models"} if kind else {"diagnostics"}  # a run's findings have a section of their own
    out.append(_table(["key", "value"], [(k, v) for k, v in summary.items() if k not in skip], 2, keyed=True))
    diagnosed = summary.get("diagnostics")
    if not kind and isinstance(diagnosed, dict):
        listed = diagnosed.get("findings")
        found = [str(f) for f in listed] if isinstance(listed, list) else []
        items = "".join(f"<li>{escape(f)}</li>" for f in found) or "<li>no problems found</li>"
        out.append(f"<h2>Diagnostics</h2><ul>{items}</ul><p class='meta'>backprop diagnose {escape(str(folder))} "
                   "prints the per-layer table; the numbers are in diagnostics.csv</p>")  # fmt: skip
    images = _images(folder, left_out)
    if images:
        out.append("<h2>Plots</h2>")
        out.extend(images)
    evaluations = [_own(folder, name, left_out) for name in ["evaluation.json", *_evaluated(folder, ".json")]]
    for evaluation in [path for path in evaluations if path] if not kind else []:  # one per data set
        scores = read_dict(evaluation, Evaluation)
        out.append(f"<h2>Evaluation on {escape(str(scores.get('data', '')))}</h2>")
        top = [
            (k, scores.get(k))
            for k in ("samples", "loss_function", "loss", "accuracy", "macro_f1", "mae", "rmse", "r2")
        ]
        out.append(_table(["measure", "value"], [(k, v) for k, v in top if v is not None], keyed=True))
        if "classes" in scores:
            rows = [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]] for c in scores["classes"]]
            out.append(_table(["class", "precision", "recall", "f1", "support"], rows))
    text = config_text(folder) if _own(folder, "config.yaml", left_out) else None
    if text is None and kind:
        text = _study_config(folder, left_out)
    if text is not None:
        out.append(f"<h2>Config</h2><pre>{escape(text)}</pre>")
    if kind:
        runs = sorted(p.name for p in folder.iterdir() if (p / "config.yaml").exists())
        if runs:
            out.append("<h2>Run folders</h2><p>" + ", ".join(escape(r) for r in runs) + "</p>")
    elif (folder / "weights.json").exists():
        run = load_run(folder)
        step = _explain(run)
        if step:
            out.append("<h2>The first training step, by hand</h2>" + step)
        out.append("<h2>Final weights</h2>" + _weights(run))
    if left_out:
        out.append(f"<p class='meta'>left out: {escape(', '.join(left_out))}</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


def report_path(folder: Path, output: Optional[Path] = None) -> Path:
    return Path(output) if output is not None else Path(folder) / REPORT
