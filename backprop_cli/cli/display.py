"""What the commands show: number formats, the loss chart, the progress display, tables."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from rich.table import Table

from backprop_cli.cli.app import err, out

if TYPE_CHECKING:
    import numpy as np

    from backprop_cli.sweep import Entry


def fmt(x: Any, digits: int = 6) -> str:
    """A number in at most `digits` significant digits; '-' for None."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def sparkline(values: Any, width: int = 48) -> str:
    """A one-line chart of a curve (log scale when it spans decades)."""
    import numpy as np

    from backprop_cli.plots import spans_decades

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ""
    if v.size > width:
        edges = np.linspace(0, v.size, width + 1).astype(int)
        v = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    if spans_decades(v):
        v = np.log10(v)
    lo, hi = v.min(), v.max()
    blocks = "▁▂▃▄▅▆▇█"
    if hi == lo:
        return blocks[3] * v.size
    return "".join(blocks[int(round((x - lo) / (hi - lo) * 7))] for x in v)


def loss_text(loss: np.ndarray) -> str:
    """One model's loss, or the smallest finite loss of several."""
    values = [float(v) for v in loss]
    finite = [v for v in values if math.isfinite(v)]
    if len(values) == 1:
        return fmt(values[0], 6)
    return f"min {fmt(min(finite), 4)}" if finite else "nan"


class Reporter:
    """Progress for a training loop: a Rich bar on a terminal, plain lines otherwise.

    The loop calls it every epoch; it redraws at most every 0.1 s (plain lines: every 10%).
    """

    def __init__(self, total: int, start: int = 0, quiet: bool = False, label: str = "training") -> None:
        self.total, self.start, self.quiet, self.label = total, start, quiet, label
        self.live = not quiet and out.is_terminal
        self.next_line = 0
        self.last = 0.0
        self.progress: Any = None

    def __enter__(self) -> "Reporter":
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("epoch {task.fields[epoch]}/{task.fields[last]}"),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=out,
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(
                self.label, total=self.total, epoch=self.start, last=self.start + self.total, loss="-"
            )
        return self

    def __call__(self, epoch: int, loss: np.ndarray) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if self.live:
            if now - self.last >= 0.1 or epoch == self.start + self.total:
                self.last = now
                self.progress.update(self.task, completed=epoch - self.start, epoch=epoch, loss=loss_text(loss))
        elif epoch - self.start >= self.next_line:
            out.print(f"epoch {epoch}/{self.start + self.total}  loss {loss_text(loss)}")
            self.next_line += max(self.total // 10, 1)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


class Steps:
    """Progress over a count of things (parameters checked, run folders written): a Rich bar on
    a terminal, redrawn at most every 0.1 s; nothing when piped, where only results matter."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label, self.live = label, not quiet and out.is_terminal
        self.progress: Any = None
        self.last = 0.0

    def __enter__(self) -> "Steps":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=out,
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self.last >= 0.1 or done >= total:
            self.last = now
            self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def output(value: float) -> str:
    """A network output: 4 decimals, or 4 significant digits when it is huge or not finite."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"Warning: {w}", soft_wrap=True)


def emit(text: str, output: Optional[Path], what: str) -> None:
    """Write text to stdout, or atomically to `output` and say so."""
    if output is None:
        sys.stdout.write(text)
        return
    from backprop_cli.files import atomic_write
    from backprop_cli.runs import check_output

    check_output(output)
    atomic_write(output, text)
    out.print(f"wrote {what} to {output}", soft_wrap=True)


def predictions_table(
    input_names: Sequence[str],
    output_names: Sequence[str],
    rows: list[list[str]],
    with_class: bool,
    title: Optional[str] = None,
) -> Table:
    """Inputs, outputs (and class): one row per sample, cells already formatted."""
    table = Table(title=title)
    for name in list(input_names) + list(output_names):
        table.add_column(name, justify="right")
    if with_class:
        table.add_column("class", justify="left")
    for row in rows:
        table.add_row(*row)
    return table


def study_table(entries: list[Entry], label: str, target: float) -> Table:
    """One row per model: value, final and best loss, first epoch at the target, status."""
    completed = [e for e in entries if e.status == "completed" and e.final_loss() is not None]
    best = min(completed, key=lambda e: e.final_loss() or 0.0) if completed else None
    table = Table(title=f"by {label} (target loss {target:g}; best final loss in green)")
    for col in (label, "final loss", "best loss", "epochs to target", "status"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for e in entries:
        table.add_row(
            f"{e.value:g}",
            fmt(e.final_loss(), 8),
            fmt(e.best_loss(), 8),
            str(e.epochs_to(target) or "-"),
            e.status,
            style="bold green" if e is best else None,
        )
    return table
