"""TensorBoard event files: a run's history as it trains, a study's cells when it is written.

A run (`train --tensorboard DIR`) writes DIR/<run folder name>/events.out.tfevents.*: every
history column as a scalar each epoch (`loss`, `accuracy`, `val_loss`, ...), the learning
rate (`learning_rate`, or `learning_rate/layerN` for per-layer rates), and every
`histogram_every(epochs)` epochs (100 histograms over a run, at least every epoch) each
layer's weights, biases and their gradients (`layer1/weights`, `layer1/weights_grad`, ...);
with training.diagnostics, each recorded quantity at its epochs (`diagnostics/layer1/
grad_norm_weights`, ...).
The writing is done by a worker process (`python -m backprop_cli.events`), which the loop
hands the new history rows at each histogram epoch, so training never waits for a file; it
ignores Ctrl-C and ends at end of input, so it never outlives its parent.

A study (`sweep`, `sweep-lr`, `search`, `train --seeds` with --tensorboard) writes, once its
store is complete, one run per cell (DIR/<study>/<cell>, the first `STUDY_LIMIT` cells in the
study's order) with the cell's history as scalars (at most `STUDY_POINTS` epochs of it: every
Nth and the last), its final weights as histograms and the
HParams plugin's summaries (its grid values, seed or rate, and its final metrics), so
TensorBoard's HParams tab compares the cells.

tensorboardX (the `tensorboard` extra) builds the protocol buffers and frames the records.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from backprop_cli.errors import ConfigError, OutputError

if TYPE_CHECKING:
    from backprop_cli.config import TrainingConfig
    from backprop_cli.network import Network
    from backprop_cli.training import TrainResult

EXTRA = "pip install 'backprop[tensorboard]'"
PENDING_LIMIT = 64 * 2**20  # bytes of hand-overs kept for a worker that falls behind
WAIT = 30.0  # seconds `Board.close` waits for the worker after training
STUDY_POINTS = 1000  # a study cell's history: at most this many epochs (every Nth, and the last)
HISTOGRAMS = 100  # histogram epochs over a run
STUDY_LIMIT = 256  # cells of a study written as TensorBoard runs
FRAME = 8  # bytes of a message's length prefix


def histogram_every(epochs: int) -> int:
    """Epochs between a run's weight and gradient histograms."""
    return max(1, epochs // HISTOGRAMS)


def require() -> None:
    """Refuse --tensorboard, naming the extra, where tensorboardX is not installed."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError(f"--tensorboard needs tensorboardX: {EXTRA}") from None


class EventFile:
    """One TensorBoard run: an event file in `folder`, appended record by record."""

    def __init__(self, folder: Path) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import RecordWriter

        self.Event, self.Summary = Event, Summary
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.writer = RecordWriter(str(self.path))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Any) -> None:
        self.writer.write(event.SerializeToString())

    def scalars(self, epochs: Sequence[int] | np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """One event per epoch holding every column's value at it."""
        Value, now = self.Summary.Value, time.time()
        tags = list(columns)
        rows = np.column_stack([np.asarray(columns[t], float) for t in tags]).tolist() if tags else []
        for epoch, row in zip(epochs, rows):
            values = [Value(tag=tag, simple_value=v) for tag, v in zip(tags, row)]
            self._write(self.Event(wall_time=now, step=int(epoch), summary=self.Summary(value=values)))

    def histograms(self, epoch: int, arrays: dict[str, np.ndarray]) -> None:
        from tensorboardX.summary import histogram

        for tag, values in arrays.items():
            finite = np.asarray(values, float).ravel()
            finite = finite[np.isfinite(finite)]
            if finite.size:
                self._write(self.Event(wall_time=time.time(), step=int(epoch), summary=histogram(tag, finite, "auto")))

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The HParams plugin's experiment, session start and session end summaries, and the
        metrics as scalars of the same names."""
        from tensorboardX.summary import hparams as summaries

        for summary in summaries(hparams, metrics):
            self._write(self.Event(wall_time=time.time(), summary=summary))
        self.scalars([0], {name: np.array([value]) for name, value in metrics.items()})

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def frame(message: tuple) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(FRAME, "big") + data


def _messages(stream: IO[bytes]) -> Any:
    while True:
        head = stream.read(FRAME)
        if len(head) < FRAME:
            return
        size = int.from_bytes(head, "big")
        body = stream.read(size)
        if len(body) < size:
            return
        yield pickle.loads(body)


def _rates(training: TrainingConfig, base: Any, epochs: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
    """The learning rate of each epoch under the config's schedule (per layer: one tag each)."""
    from backprop_cli.training import make_schedule

    rates = np.atleast_1d(np.asarray(base, float))
    factor = np.ones(len(epochs))
    if training.lr_schedule != "constant":
        schedule = make_schedule(training, rates.reshape(-1, 1)[:1])
        factor = np.array([float(np.ravel(schedule.factor(int(e), horizon))[0]) for e in epochs])
    if rates.size == 1:
        return {"learning_rate": rates[0] * factor}
    return {f"learning_rate/layer{l + 1}": rate * factor for l, rate in enumerate(rates)}


def serve(stream: IO[bytes]) -> None:
    """The worker: write the messages framed on `stream` until end of input.

    ("open", folder, training, base rate, horizon) first; then ("scalars", first epoch,
    {column: values}) (each epoch from the first, with the learning rate added), ("series",
    epochs, {tag: values}) and ("histograms", epoch, {tag: values})."""
    board: Optional[EventFile] = None
    training, base, horizon = None, 0.0, 0
    for message in _messages(stream):
        kind = message[0]
        if kind == "open":
            _, folder, training, base, horizon = message
            board = EventFile(Path(folder))
        elif board is not None and kind == "scalars":
            _, first, columns = message
            n = len(next(iter(columns.values()))) if columns else 0
            epochs = np.arange(first, first + n)
            if training is not None:
                columns = {**columns, **_rates(training, base, epochs, horizon)}
            board.scalars(epochs, columns)
        elif board is not None and kind == "histograms":
            board.histograms(message[1], message[2])
        elif board is not None and kind == "series":  # scalars at given epochs (the diagnostics)
            board.scalars(message[1], message[2])
    if board is not None:
        board.close()


def _lower_priority() -> None:
    """In the worker, from its start: the training loop and the plots come first on a busy
    machine; the worker catches up."""
    os.nice(10)


class Board:
    """The training callback of a run with --tensorboard: hands the worker the history rows
    recorded since the last hand-over, and the histograms, every `every` epochs. The loop never
    waits for the worker: what the pipe does not take at once waits here (at most
    `PENDING_LIMIT` bytes; past that, hand-overs are dropped, and `close` says so)."""

    def __init__(
        self, folder: Path, training: TrainingConfig, net: Network, start_epoch: int = 0, horizon: Optional[int] = None
    ) -> None:
        require()
        prepare(folder)
        self.folder, self.net = folder, net
        self.every = histogram_every(training.epochs)
        self.sent = start_epoch  # epochs handed over
        self.start = start_epoch
        self.dropped = False
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self.errors = tempfile.TemporaryFile()  # the worker's stderr: its traceback becomes one warning
        self.worker: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
            [sys.executable, "-m", "backprop_cli.events"],
            stdin=subprocess.PIPE,
            stderr=self.errors,
            env=env,
            preexec_fn=_lower_priority,
        )
        self.pending = bytearray()  # framed messages the pipe has not taken yet
        assert self.worker.stdin is not None
        os.set_blocking(self.worker.stdin.fileno(), False)
        horizon = start_epoch + training.epochs if horizon is None else horizon
        self._send(("open", str(folder), training, training.learning_rate, horizon))

    def _send(self, message: tuple) -> None:
        """Queue a message and write what the pipe takes now; `close` writes the rest."""
        if len(self.pending) > PENDING_LIMIT:
            self.dropped = True
            return
        self.pending += frame(message)
        self._write()

    def _write(self) -> None:
        if self.worker is None or self.worker.stdin is None:
            self.pending.clear()
            return
        try:
            while self.pending:
                n = os.write(self.worker.stdin.fileno(), self.pending)
                del self.pending[:n]
        except BlockingIOError:
            pass
        except OSError:  # the worker died: training goes on without it (close says so)
            self.pending.clear()

    def __call__(self, epoch: int, loss: Any, seen: Any) -> None:
        """At a histogram epoch: the rows after the last hand-over up to `epoch`, then the
        weights and gradients as they are now."""
        if epoch % self.every:
            return
        first, last = self.sent - self.start, epoch - self.start  # history rows [first, last)
        if last > first:
            columns = {c: np.array(seen.history.value(c, slice(first, last))[:, 0]) for c in seen.columns}
            self._send(("scalars", self.sent + 1, columns))
            self.sent = epoch
        self._send(("histograms", epoch, self._layers()))

    def _layers(self) -> dict[str, np.ndarray]:
        net, arrays = self.net, {}
        for l in range(len(net.W)):
            arrays[f"layer{l + 1}/weights"] = net.W[l][0].copy()
            arrays[f"layer{l + 1}/weights_grad"] = net.gW[l][0].copy()
            bias, grad = net.b[l], net.gb[l]
            if bias is not None and grad is not None:
                arrays[f"layer{l + 1}/biases"] = bias[0].copy()
                arrays[f"layer{l + 1}/biases_grad"] = grad[0].copy()
        return arrays

    def close(
        self, result: Optional[TrainResult] = None, wait: float = WAIT, notice: Optional[Callable[[str], None]] = None
    ) -> list[str]:
        """Hand over the rows of `result` (the finished history) not yet sent, and wait for
        the worker to write them, at most `wait` seconds (then it is stopped); `notice` hears
        that the wait has begun when it is not over at once. Returns warnings."""
        worker = self.worker
        if worker is None:
            return []
        if result is not None and len(result.epochs):
            rows = slice(self.sent - self.start, len(result.epochs))
            columns = {c: np.array(values[rows, 0]) for c, values in result.history.items()}
            if len(next(iter(columns.values()), [])):
                self._send(("scalars", self.sent + 1, columns))
        if result is not None and result.diagnostics is not None:
            self._send(("series", *diagnostics_series(result.diagnostics)))
        started = time.monotonic()
        deadline, told = started + wait, False

        def tell() -> None:  # once, when the wait has lasted half a second
            nonlocal told
            if not told and notice is not None and time.monotonic() - started > 0.5:
                notice(f"TensorBoard: writing the last epochs to {self.folder}...")
                told = True

        assert worker.stdin is not None
        fd = worker.stdin.fileno()
        try:
            try:
                while self.pending and worker.poll() is None and time.monotonic() < deadline:
                    tell()
                    _, ready, _ = select.select([], [fd], [], min(deadline - time.monotonic(), 0.5))
                    if ready:
                        self._write()
                worker.stdin.close()
            except OSError:
                pass
            while worker.poll() is None and time.monotonic() < deadline:
                tell()
                try:
                    worker.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            late = worker.poll() is None
            if late:
                worker.kill()
                worker.wait()
            self.worker = None
        warnings = []
        if late:
            warnings.append(f"TensorBoard: the event writer did not finish within {wait:g} s and was stopped: "
                            f"{self.folder} may lack the last epochs")  # fmt: skip
        elif worker.returncode != 0:
            self.errors.seek(0)
            lines = self.errors.read().decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"exit status {worker.returncode}"
            warnings.append(f"TensorBoard: the event writer failed ({why}): {self.folder} may be incomplete")
        if self.dropped:
            warnings.append(f"TensorBoard: the event writer fell behind; some epochs are missing from {self.folder}")
        self.errors.close()
        return warnings

    def abort(self) -> None:
        """Stop the worker now (a second Ctrl-C, or a failed run)."""
        if self.worker is not None:
            self.worker.kill()
            self.worker.wait()
            self.worker = None


def diagnostics_series(recorder: Any, model: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A run's diagnostics as TensorBoard scalars: `diagnostics/layerN/<quantity>` at the
    recorded epochs (quantities that do not apply to a layer left out)."""
    from backprop_cli.diagnostics import QUANTITIES

    epochs, values = recorder.table(model)
    found = {}
    for l in range(values.shape[1]):
        for q, name in enumerate(QUANTITIES):
            column = values[:, l, q]
            if np.isfinite(column).any():
                found[f"diagnostics/layer{l + 1}/{name}"] = column
    return epochs, found


def prepare(given: Union[str, Path]) -> None:
    """Make the folder `given` (and its parents) for event files, or refuse it at once: exit 2,
    before anything trains."""
    folder = Path(given)
    if not str(given).strip():
        raise OutputError("--tensorboard: give a folder (an empty name is the current folder's files)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--tensorboard {folder}: cannot make the folder: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"--tensorboard {folder}: the folder is not writable")


@dataclass
class Cell:
    """One cell of a study as a TensorBoard run: its name, varied values, history and final
    weights (flat, in the network's parameter order)."""

    name: str
    hparams: dict[str, Any]
    epochs: np.ndarray
    columns: dict[str, np.ndarray]
    theta: np.ndarray
    model: Any  # its model section: the layers and biases that cut theta into layers


def _thinned(n: int) -> np.ndarray:
    """Which of a cell's n history rows a study writes: all up to STUDY_POINTS, else every
    ceil(n / STUDY_POINTS)th and the last (TensorBoard shows 1,000 points a curve anyway)."""
    step = -(-n // STUDY_POINTS)
    rows = np.arange(0, n, step)
    return rows if n == 0 or rows[-1] == n - 1 else np.append(rows, n - 1)


def write_cells(folder: Path, cells: Iterable[Cell]) -> int:
    """Write a study's cells as TensorBoard runs under `folder` (folder/<cell name>), at most
    `STUDY_LIMIT`; returns how many. Each has its history as scalars, its final weights as
    histograms, and its values and final metrics as the HParams plugin's summaries."""
    from backprop_cli.network import param_names

    require()
    written = 0
    for cell in cells:
        if written == STUDY_LIMIT:
            break
        board = EventFile(folder / cell.name)
        kept = _thinned(len(cell.epochs))
        board.scalars(cell.epochs[kept], {c: np.asarray(v)[kept] for c, v in cell.columns.items()})
        groups: dict[str, list[int]] = {}
        for j, p in enumerate(param_names(cell.model.layers, cell.model.bias)):
            groups.setdefault(f"layer{p.layer + 1}/{'weights' if p.kind == 'weight' else 'biases'}", []).append(j)
        last = int(cell.epochs[-1]) if len(cell.epochs) else 0
        board.histograms(last, {tag: cell.theta[at] for tag, at in groups.items()})
        metrics = {}
        for c, values in cell.columns.items():
            finite = np.asarray(values, float)[np.isfinite(values)]
            if finite.size:
                metrics[f"final_{c}"] = float(finite[-1])
        varied = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in cell.hparams.items()}
        board.hparams(varied, metrics)
        board.close()
        written += 1
    return written


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer)
