"""`backprop sweep`: a grid over any config keys (and seeds), batched where the maths allows.

Every cell of the grid is a config: the base config with one value per grid key (and a seed).
Cells that differ only in what a K-model pass can vary per model, the learning rate, the
optimizer's scalar hyperparameters (momentum, rho, beta1, beta2, eps, weight_decay) and (when
the data and the batch order do not depend on the seed) the seed, form one group and train
together on the model axis; any other difference (shapes, activations, losses, optimizers,
nesterov, ...) makes a group of its own. A group is cut into chunks of models sized to the
cache and the memory budget; chunks are independent jobs that run one after another, in
worker processes, or on a Dask cluster, and hand their numbers back as arrays. The same chunk
always computes the same numbers, whatever runs it.

A study folder `<name>-grid-<time>/` holds `grid.json` (what was asked), `store/` (every
cell's history, weights and state as a few arrays, filled chunk by chunk: see `store`), then
`grid.csv`, the plots and `summary.json`, written last (by `results`). Small studies (up to 64 cells) also
get one complete run folder per cell (`cell_001/`, ...); larger ones on demand. Run again with
the same grid and `--name`, a study trains only the cells its store does not hold.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from backprop_cli.config import Config, parse_value
from backprop_cli.diagnostics import planned
from backprop_cli.errors import BackpropError, ConfigError, OverrideError, RunError
from backprop_cli.experiment import GiB, check_memory, dataset, fit, known_samples, memory_needed, network, recorded
from backprop_cli.files import read_json, write_json
from backprop_cli.metrics import is_score
from backprop_cli.optimizers import OPTIMIZERS
from backprop_cli.results import RUN_FOLDERS_UP_TO
from backprop_cli.run_folders import create_run_dir, no_interrupts, now_iso
from backprop_cli.run_folders.cells import GRID_FILE, REGULARIZATION_KEYS, Cells, optimizer_moments, text
from backprop_cli.run_folders.write import safe_name
from backprop_cli.store import STATUSES, Chunk, Layout, Store
from backprop_cli.training import make_optimizer

FALLBACK_L2 = 2**20  # a core's L2 cache where the machine does not say


def l2_cache() -> int:
    """This machine's L2 cache per core in bytes (Linux sysfs), or FALLBACK_L2."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in sorted(root.glob("index*")):
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
                return int(size.rstrip("KMG")) * scale
    except (OSError, ValueError):
        pass
    return FALLBACK_L2


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """`KEY=V1,V2,...` items as {key: [values]}; each value read as `--set` reads one (YAML:
    `0.5`, `tanh`, `[2, 3, 1]`), the list as a YAML flow sequence."""
    grid: dict[str, list] = {}
    for item in items:
        if not item.isprintable() or _not_utf8(item):
            raise OverrideError(f"--grid {item!r}: not printable UTF-8 text")
        key, sep, values_text = item.partition("=")
        key = key.strip()
        if not sep or not key or not values_text.strip():
            raise OverrideError(f"--grid {item}: expected KEY=V1,V2,... (e.g. model.activation=sigmoid,tanh)")
        values = spaced(key, values_text.strip()) if values_text.strip()[:4] in ("log:", "lin:") else None
        if values is None:
            values = parse_value(f"[{values_text}]", f"--grid {key}")
        if not isinstance(values, list) or not values:
            raise OverrideError(f"--grid {item}: expected KEY=V1,V2,...")
        if key in grid:
            raise OverrideError(f"--grid {key}: given twice; put every value in one --grid")
        if key == "seed":
            raise OverrideError("--grid seed: use --seeds START:STOP for the seed axis")
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            raise OverrideError(f"--grid {key}: value {text(twice[0])} is given twice")
        grid[key] = values
    return grid


def _not_utf8(text: str) -> bool:
    """A command-line argument with bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def spaced(key: str, spec: str) -> list:
    """`log:A:B:N` (N values from A to B, evenly spaced on a log scale) or `lin:A:B:N`
    (evenly spaced), as a grid key's values."""
    kind, *parts = spec.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        low, high, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise OverrideError(f"--grid {key}={spec}: expected {kind}:LOW:HIGH:N, e.g. {kind}:0.001:10:64") from None
    if (
        not (math.isfinite(low) and math.isfinite(high))
        or n < 1
        or (kind == "log" and not 0 < low <= high)
        or low > high
    ):
        need = "0 < LOW <= HIGH" if kind == "log" else "LOW <= HIGH"
        raise OverrideError(f"--grid {key}={spec}: needs {need} and N >= 1")
    if n > 1_000_000:
        raise OverrideError(f"--grid {key}={spec}: at most 1,000,000 values")
    points = np.geomspace(low, high, n) if kind == "log" else np.linspace(low, high, n)
    values = [float(v) for v in points]
    return values[:1] if low == high else values


def count_cells(grid: dict[str, list], seeds: Optional[Sequence[int]]) -> int:
    """How many cells a grid has, counted before any is built."""
    return math.prod(len(v) for v in grid.values()) * (len(seeds) if seeds else 1)


def max_cells(budget: int) -> int:
    """The most cells a study can track in `budget` bytes of memory: its table holds a row of
    about 2 KB per cell while the results are written (the store itself is on disk)."""
    return max(1, budget // 2048)


def interrupted(chunk: Chunk) -> bool:
    """Whether Ctrl-C (or SIGTERM) stopped the chunk's training."""
    return bool(np.any(chunk.fields["status"] == STATUSES.index("interrupted")))


class locked:
    """Hold `<study>/lock` while a process writes the study: a second `--name` resume of the
    same study is refused, not let loose on the same store."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "lock"
        self.file: Any = None

    def __enter__(self) -> locked:
        import fcntl

        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunError(
                f"{self.path.parent}: {holder} is writing this study; wait for it, or give another --name"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.path.unlink(missing_ok=True)
            self.file.close()


# -- planning ---------------------------------------------------------------------------------


def layout(cells: Cells, every: int) -> Layout:
    """The store a grid needs: the union of its combinations' history columns, epochs and sizes."""
    columns: list[str] = []
    seen: dict[str, list[str]] = {}
    rows, n_params, optimizers, early = 0, 0, [], False
    for combo in cells.combos:
        cfg = combo.cfg
        key = cfg.data.model_dump_json() + cfg.model.output_activation + cfg.training.loss + str(cfg.seed)
        if key not in seen:
            seen[key] = recorded(dataset(cfg, str(cells.config)))
        for c in seen[key]:
            if c not in columns:
                columns.append(c)
        rows = max(rows, len(range(0, cfg.training.epochs, every)))
        sizes = cfg.model.layers
        n_params = max(n_params, sum(o * i + (o if cfg.model.bias else 0) for i, o in zip(sizes, sizes[1:])))
        optimizers.append(cfg.training.optimizer)
        es = cfg.training.early_stopping
        early = early or (es is not None and es.restore_best)
    dropout = "model.dropout" in cells.per_model or any(any(c.cfg.model.dropout_rates) for c in cells.combos)
    moments = optimizer_moments(sorted(set(optimizers)))
    records = max(
        (len(planned(c.cfg.training.diagnose_every, c.cfg.training.epochs)) for c in cells.combos
         if c.cfg.training.diagnose_every is not None),
        default=0,
    )  # fmt: skip
    layers = max(len(c.cfg.model.layers) - 1 for c in cells.combos) if records else 0
    return Layout(len(cells), columns, rows, n_params, moments, early, every, dropout, records, layers)


def check_disk(shape: Layout, root: Path, epochs: int) -> None:
    """Refuse, with the estimate, a study whose store would not fit on the disk."""
    need = shape.nbytes()
    root = Path(root)
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if need > 0.9 * free:
        raise ConfigError(
            f"{shape.cells:,} cells x {epochs:,} epochs of history need {need / GiB:.1f} GiB on disk; "
            f"{free / GiB:.1f} GiB free at {probe}"
        )


def memory_budget(fraction: float = 0.25) -> int:
    """Bytes a study may hold in training at once: a quarter of the machine's memory by default."""
    try:
        return int(fraction * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * GiB


def chunk_size(cfg: Config, budget: int, most: Optional[int] = None, n_samples: int = 0) -> int:
    """Models per pass: as many as keep a pass's working set (a batch's activations, deltas
    and scratch, the contiguous W^T copies, the weights, gradients, optimizer buffers and the
    two epoch snapshots) within half of a core's L2 cache, between 32 and 4,096, at most
    `most`, and within the memory budget. Measured on a 16-16-1 tanh net, 16 samples, on an
    Intel Xeon with 2 MiB of L2: 2.7 us per model-epoch at 321 models a pass, 2.45 at 48-64."""
    per_model = max(1, memory_needed(cfg, 2) - memory_needed(cfg, 1))
    if most is None:
        n = n_samples or known_samples(cfg, None) or 64
        batch = min(cfg.training.batch_size or n, n)
        itemsize = 4 if cfg.training.dtype == "float32" else 8
        sizes = cfg.model.layers
        P = sum(o * i + (o if cfg.model.bias else 0) for i, o in zip(sizes, sizes[1:]))
        moments = len(OPTIMIZERS[cfg.training.optimizer]((1, 1), np.float64).moments())
        working = itemsize * (batch * sum(sizes[1:]) * 3 + P * (6 + moments))
        most = max(32, min(4096, l2_cache() // 2 // max(working, 1)))
    return max(1, min(most, budget // per_model))


@dataclass
class Job:
    """A chunk of one group's cells, trained as the models of one pass: plain values only, so
    any executor can run it (the numbers come back as a `store.Chunk`)."""

    cfg: Config  # the group's config (its first cell's)
    cells: list[int]  # 0-based cell indices
    rates: list[float]
    scalars: dict[str, list]  # optimizer scalars that differ within the chunk
    seeds: Optional[list[int]]  # per-model seeds where they differ within the chunk
    source: str
    target: float
    every: int
    # successive halving: continue each cell from its checkpoint after `start` epochs, for
    # `stop_after` more (the schedule still runs over all of training.epochs)
    start: int = 0
    resume: Optional[list] = None
    stop_after: Optional[int] = None
    # regularization settings that differ within the chunk (`training.train`'s per_model)
    per_model: dict[str, list] = field(default_factory=dict)


def plan(
    cells: Cells, todo: Sequence[int], source: str, target: float, every: int, budget: int, most: Optional[int] = None
) -> list[Job]:
    """The chunks (of at most `most` models) that train `todo`, group by group, in the order
    of their first cell."""
    from backprop_cli.optimizers import Optimizer

    jobs = []
    n_samples: dict[int, int] = {}
    for group in cells.groups(todo):
        cfg = cells.cfg(group[0])
        check_memory(cfg, source)  # one model of each group must fit: said before anything trains
        size = chunk_size(cfg, budget, most, n_samples.setdefault(id(cells.combo(group[0])), _data_size(cfg, source)))
        for start in range(0, len(group), size):
            part = group[start : start + size]
            rates = cells.per_model_values(part, "learning_rate")
            scalars = {}
            for key in Optimizer.SCALARS:
                values = cells.per_model_values(part, key)
                if len(set(values)) > 1:
                    scalars[key] = values
            seeds = [cells.seed(i) for i in part]
            job = Job(cfg, part, rates, scalars, seeds if len(set(seeds)) > 1 else None, source, target, every)
            for key in REGULARIZATION_KEYS:
                values = cells.per_model_values(part, key)
                if len({text(v) for v in values}) > 1:
                    job.per_model[key.split(".")[1]] = values
            jobs.append(job)
    return jobs


def _data_size(cfg: Config, source: str) -> int:
    """The training samples of a config (loaded once per combination when it is not known)."""
    return known_samples(cfg, None) or len(dataset(cfg, source).X)


def train_job(job: Job) -> Chunk:
    """Train a chunk's cells in one pass; returns their rows for the store. Needs no disk."""
    cfg = job.cfg
    check_memory(cfg, job.source, n_models=len(job.cells))
    data = dataset(cfg, job.source)
    net = network(cfg, seeds=job.seeds) if job.seeds else network(cfg, n_models=len(job.cells))
    optimizer = make_optimizer(cfg.training, net.theta.shape, net.dtype)
    for key, values in job.scalars.items():
        optimizer.per_model(key, np.array(values))
    started = time.time()
    result = fit(
        cfg, data, net, learning_rates=job.rates, optimizer=optimizer, start_epoch=job.start, resume=job.resume,
        stop_after=job.stop_after, horizon=cfg.training.epochs if job.resume is not None else None,
        per_model=job.per_model,
    )  # fmt: skip
    return Chunk.from_result(job.cells, result, job.every, started, job.target)


def rungs(min_epochs: int, eta: int, epochs: int) -> list[int]:
    """The epochs each rung of successive halving trains its trials to: min_epochs, times eta
    each rung, the last one all of training.epochs."""
    found, e = [], max(1, min_epochs)
    while e < epochs:
        found.append(e)
        e *= eta
    return found + [epochs]


def halving_plan(
    cells: Cells, store: Store, survivors: Sequence[int], start: int, stop: int, jobs: Sequence[Job]
) -> list[Job]:
    """A rung's chunks: `jobs` (the trials' chunks, as planned) narrowed to the survivors and
    continued from their checkpoints in the store after `start` epochs, to `stop`."""
    keep = set(int(i) for i in survivors)
    found = []
    for job in jobs:
        mine = [k for k, i in enumerate(job.cells) if i in keep]
        if not mine:
            continue
        cells_ = [job.cells[k] for k in mine]
        es = job.cfg.training.early_stopping
        resume = (
            [store.checkpoint(i, job.cfg.training.optimizer, es.monitor if es else None) for i in cells_]
            if start
            else None
        )
        found.append(
            Job(
                job.cfg, cells_, [job.rates[k] for k in mine], {key: [v[k] for k in mine] for key, v in job.scalars.items()},
                None if job.seeds is None else [job.seeds[k] for k in mine], job.source, job.target, job.every,
                start, resume, stop - start,
            )
        )  # fmt: skip
    return found


def survivors_of(store: Store, alive: Sequence[int], metric: str, eta: int) -> list[int]:
    """The best 1/eta (at least one) of the trials alive, by a metric's last value (lower is
    better but for scores); diverged trials go first."""
    values = np.asarray(store.arrays[f"final.{metric}"])[list(alive)]
    status = store.field("status")[list(alive)]
    sign = -1.0 if is_score(metric) else 1.0
    order = np.lexsort(
        (sign * np.where(np.isfinite(values), values, np.inf * sign), status != STATUSES.index("completed"))
    )
    keep = max(1, math.ceil(len(alive) / eta))
    return sorted(int(alive[k]) for k in order[:keep])


# -- running ----------------------------------------------------------------------------------


def find_study(root: Path, name: Optional[str], asked: dict, kind: str = "grid") -> Optional[Path]:
    """With `name`, the newest `<name>-<kind>-*` that asked the same (a study to resume), else
    None. A folder of that name asked differently is never reused."""
    if name:
        for path in sorted(Path(root).glob(f"{glob.escape(safe_name(name))}-{kind}-*"), reverse=True):
            try:
                # the same grid asked under the same name ('a b' and 'a/b' share a folder name)
                same = read_json(path / GRID_FILE) == _json_round_trip(asked)
                if same and read_json(path / "summary.json").get("name") == name:
                    return path
            except Exception:  # an unreadable folder is not the one asked for
                continue
    return None


def new_study(root: Path, cfg_name: str, name: Optional[str], asked: dict, kind: str = "grid") -> Path:
    """A new study folder (`<name>-<kind>-<time>`: a grid or a search) with grid.json and a
    `running` summary."""
    folder = create_run_dir(root, f"{name or cfg_name}-{kind}")
    write_json(folder / GRID_FILE, asked)
    write_json(
        folder / "summary.json",
        {"name": name or cfg_name, "kind": kind, "status": "running", "started_at": now_iso(), **_process()},
    )
    return folder


def _json_round_trip(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def _process() -> dict:
    from backprop_cli.run_folders.write import process

    return process()


DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")  # distributed's transports
CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler (distributed waits 30 s by default)


def check_scheduler(address: str) -> str:
    """A Dask scheduler's address as distributed reads it (`tcp://` where none is given), or a
    ConfigError saying what is wrong with it: checked before anything trains."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in DASK_SCHEMES:
        raise ConfigError(f"--scheduler {address}: unknown scheme '{scheme}'; one of {', '.join(DASK_SCHEMES)}")
    if scheme in ("tcp", "tls", "ws", "wss"):
        host, colon, port = rest.rpartition(":")
        if not colon or not host.strip("[]"):
            raise ConfigError(f"--scheduler {address}: expected HOST:PORT (e.g. tcp://10.0.0.5:8786)")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"--scheduler {address}: port '{port}' is not a number from 1 to 65535")
    return f"{scheme}://{rest}"


def _connect(address: str, timeout: float) -> Any:
    """A Client of the scheduler at `address`, within `timeout` seconds, or a RunError with the
    address and the cause: nothing listening is said at once, a server that never answers
    after `timeout` (not distributed's 30 s of silence)."""
    from dask.distributed import Client

    address = check_scheduler(address)
    scheme, _, rest = address.partition("://")
    if scheme in ("tcp", "tls", "ws", "wss"):
        host, _, port = rest.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except socket.timeout:
            raise RunError(f"--scheduler {address}: no connection within {timeout:g} s (--timeout)") from None
        except OSError as e:
            raise RunError(f"--scheduler {address}: cannot connect: {e.strerror or e}") from None
    # distributed bounds the connection by its timeout, not the handshake after it (a server
    # that accepts and never answers holds it until the server goes): a deadline of our own
    found: dict[str, Any] = {}

    def connect() -> None:
        try:
            found["client"] = Client(address, timeout=timeout)
        except BaseException as e:  # noqa: B036  (said below, in the main thread)
            found["error"] = e

    thread = threading.Thread(target=connect, name="dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    error = found.get("error")
    if "client" in found:
        return found["client"]
    cause = "" if error is None else f": {error.__cause__ or error}"
    raise RunError(f"--scheduler {address}: the scheduler did not answer within {timeout:g} s (--timeout){cause}")


def execute(
    jobs: Sequence[Job],
    workers: int,
    executor: str = "local",
    scheduler: Optional[str] = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Iterator[Chunk]:
    """Run the chunks: here (one worker), in worker processes, or on Dask; yields each chunk's
    numbers as it finishes (the caller writes them)."""
    if executor == "dask":
        yield from _dask(jobs, workers, scheduler, timeout)
        return
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield train_job(job)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_pool_worker) as pool:
        futures: list[Future] = []
        try:
            # the submits fork the workers: a Ctrl-C in logging's at-fork hooks was "ignored"
            # there (the grid trained on), so it waits for the forks and is delivered after
            with no_interrupts():
                futures += [pool.submit(train_job, job) for job in jobs]
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            _stop(pool, futures)
            raise RunError(
                "a worker process ended abruptly (killed, or out of memory?) while training a chunk; "
                "the chunks finished before it are kept in the store"
            ) from None
        except BaseException:  # Ctrl-C, SIGTERM, or the caller stopped reading: stop at once
            _stop(pool, futures)
            raise


def _pool_worker() -> None:
    """Set up a worker process of the pool: Ctrl-C is its parent's to handle (which stops the
    workers), SIGTERM ends it at once (the command's handler, inherited by the fork, would
    make it finish its chunk first), and so does its parent's death (Linux's
    PR_SET_PDEATHSIG: a SIGKILLed command leaves no worker training for nobody)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker ends when its queue closes
        pass


def _stop(pool: ProcessPoolExecutor, futures: list[Future]) -> None:
    """Cancel what has not started and end the running workers: their chunks are trained again
    on resume, and nothing waits for them (17-38 s for a grid's groups)."""
    for future in futures:
        future.cancel()
    for process in list(getattr(pool, "_processes", {}).values()):  # the pool's own worker processes
        if process.is_alive():
            process.terminate()


def _dask(jobs: Sequence[Job], workers: int, scheduler: Optional[str], timeout: float) -> Iterator[Chunk]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import wait as dask_wait
    except ImportError:
        raise ConfigError("--executor dask needs dask.distributed: pip install 'backprop[dask]'") from None
    # distributed's own loggers speak of every cancelled task, lost connection and slow worker:
    # what matters reaches the command as an exception, and one line
    said = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("distributed")]
    said.append(logging.getLogger("distributed"))
    levels = [logger.level for logger in said]
    for logger in said:
        logger.setLevel(logging.CRITICAL + 1)
    cluster: Any = None
    client: Any = None
    futures: list = []
    stopped = True
    try:
        if scheduler:
            client = _connect(scheduler, timeout)
        else:
            n = max(1, min(workers, len(jobs)))
            with no_interrupts():  # a cluster cut short while it starts cannot be closed (a traceback at exit)
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
                client = Client(cluster)
        # the numbers come back to this client, which writes the store: workers need no disk
        futures = [client.submit(train_job, job, pure=False, retries=2) for job in jobs]
        where = f"the Dask scheduler at {scheduler}" if scheduler else "the local Dask cluster"
        kept = "the chunks finished before are kept in the store (--name resumes the rest)"
        pending, alone = set(futures), None  # since when no worker is left
        while pending:
            try:
                try:
                    done, pending = dask_wait(pending, timeout=WORKERS_CHECK_S, return_when="FIRST_COMPLETED")
                except TimeoutError:  # distributed's wait says "nothing yet" so
                    done = set()
                chunks = [future.result() for future in done]
                workers_left = 1 if done else len(client.scheduler_info().get("workers", {}))
            except BackpropError:  # a chunk's own error, as it would be here
                raise
            except Exception as e:  # distributed's: a lost scheduler, a task given up on
                text = str(e).strip()
                cause = (
                    "the connection to it was lost"
                    if "connection-lost" in text
                    else text.splitlines()[0]
                    if text
                    else type(e).__name__
                )
                raise RunError(f"{where}: {cause}; {kept}") from None
            yield from chunks
            alone = None if workers_left else (alone or time.monotonic())
            if alone is not None and time.monotonic() - alone > timeout:  # no one left to train the rest
                raise RunError(f"{where}: no worker has been connected for {timeout:g} s (--timeout); {kept}")
        stopped = False
    finally:
        if stopped and cluster is not None:  # Ctrl-C or an error: our own workers stop now
            _kill_local(cluster)
        for future in futures if stopped else ():
            future.cancel()
        if client is not None:
            client.close(timeout=2)
        if cluster is not None:
            cluster.close(timeout=2)
        for logger, level in zip(said, levels):
            logger.setLevel(level)


WORKERS_CHECK_S = 1.0  # how often a Dask grid with nothing finishing looks for workers


def _kill_local(cluster: Any) -> None:
    """End a LocalCluster's worker processes at once: a closing nanny waits 4 s for a worker
    busy training before it kills it."""
    for worker in list(getattr(cluster, "workers", {}).values()):
        process = getattr(getattr(worker, "process", None), "process", None)
        try:
            if process is not None:
                process.kill()
        except (OSError, ValueError, AttributeError):  # gone already
            pass


# -- results ----------------------------------------------------------------------------------


def parse_run_folders(value: Optional[str], n_cells: int, every: int = 1) -> str:
    """--run-folders all|none|best:N (default: all up to 64 cells, else none; none when the
    store keeps only every Nth epoch, which a run folder's history.csv cannot be made of)."""
    if value is None:
        return "all" if n_cells <= RUN_FOLDERS_UP_TO and every == 1 else "none"
    if every != 1 and value != "none":
        raise OverrideError(
            f"--run-folders {value}: a run folder needs every epoch's history; not with --history every:{every}"
        )
    if value in ("all", "none"):
        return value
    head, _, n = value.partition(":")
    if head == "best" and n.isdigit() and int(n) >= 1:
        return f"best:{int(n)}"
    raise OverrideError(f"--run-folders {value}: expected all, none or best:N (e.g. best:10)")


def parse_history(value: Optional[str]) -> int:
    """--history all|every:N: the epochs of each cell's history the store keeps."""
    if value is None or value == "all":
        return 1
    head, _, n = value.partition(":")
    if head == "every" and n.isdigit() and int(n) >= 1:
        return int(n)
    raise OverrideError(f"--history {value}: expected all or every:N (e.g. every:10)")
