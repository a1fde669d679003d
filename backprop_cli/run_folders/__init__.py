"""Run folders.

A run folder holds config.yaml, history.csv, weights.json, data.json (input names, class
names, scaling), summary.json (written last; `status` says whether the run completed,
diverged, was interrupted or failed, or is still running) and PNG plots. `write` creates and
fills them (every file atomically); `read` loads, finds, lists and compares them.
"""

from backprop_cli.run_folders.evaluate import evaluate_run, write_evaluation
from backprop_cli.run_folders.read import (
    LATEST,
    LoadedRun,
    compare_runs,
    config_text,
    csv_text,
    latest_completed,
    list_runs,
    load_run,
    read_history,
    read_rows,
    read_summary,
    resolve_run,
    status_of,
)
from backprop_cli.run_folders.write import (
    check_output,
    continue_from,
    create_run_dir,
    finish_run,
    finite_or_none,
    guarded,
    mark_live,
    mark_run,
    no_interrupts,
    now_iso,
    number,
    numbers,
    start_run,
    versions,
    write_compare_plot,
    write_config,
)

__all__ = [
    "LATEST",
    "LoadedRun",
    "check_output",
    "evaluate_run",
    "write_evaluation",
    "compare_runs",
    "config_text",
    "continue_from",
    "create_run_dir",
    "csv_text",
    "finish_run",
    "finite_or_none",
    "guarded",
    "latest_completed",
    "list_runs",
    "load_run",
    "mark_live",
    "mark_run",
    "no_interrupts",
    "now_iso",
    "number",
    "numbers",
    "read_rows",
    "read_history",
    "read_summary",
    "resolve_run",
    "start_run",
    "status_of",
    "versions",
    "write_compare_plot",
    "write_config",
]
