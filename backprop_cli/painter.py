"""Plots drawn beside the training: a worker process imports matplotlib (most of a second)
on the second core while the parent trains, then draws and writes the PNGs it is sent.

A job is (path, name of a `plots` function, its arguments: arrays, numbers and strings).
The worker is `python -m backprop_cli.painter`, reading pickled jobs on stdin and answering
one line of JSON per job on stdout (null, or the error), in order. It draws one job per core
at once, each in a process forked from it after the slow import. It ignores Ctrl-C (the parent
decides what an interrupt means and still saves the run) and ends at end of input, so it
never outlives its parent. If the worker cannot start or dies, the parent draws the
remaining jobs itself: a plot costs time, never a run.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Optional, Union

from backprop_cli.files import atomic_write

Job = tuple[Path, str, tuple]  # the name: a `plots` function, or `module.function` of this package

COMMANDS = ("train", "sweep-lr", "sweep", "evaluate")  # the commands that draw run-folder plots, and so want a worker
_early: list[Painter] = []  # a worker the launcher started before the command line was imported


def draw(job: Job) -> Optional[str]:
    """Draw one job and write it atomically; the error as a warning, or None."""
    path, name, args = job
    module, _, function = name.rpartition(".")
    try:
        # numpy and the engine: not needed to start the worker
        drawer = getattr(importlib.import_module(f"backprop_cli.{module or 'plots'}"), function)
        atomic_write(path, drawer(*args))
    except Exception as e:  # a plot must never lose a run
        return f"{path}: plot not written: {' '.join(str(e).split()) or type(e).__name__}"  # one line
    return None


class Painter:
    """Draws jobs in a worker process started at once (background=True), or in this one."""

    def __init__(self, background: bool = True) -> None:
        self.worker: Optional[subprocess.Popen[bytes]] = None
        self.pending: list[Job] = []  # submitted, not yet answered, in order
        self.sent = 0  # of those, how many the worker has
        self.used = False  # a worker that was never sent a job is stopped, not waited for
        if background:
            self.worker = _start()

    def submit(self, jobs: list[Job]) -> None:
        """Start drawing `jobs` (in the worker, if there is one) without waiting for them."""
        self.pending += jobs
        if self.worker is None:
            return
        try:
            assert self.worker.stdin is not None
            self.used = self.used or bool(jobs)
            for job in jobs:
                self.worker.stdin.write(frame(job))
            self.worker.stdin.flush()
            self.sent += len(jobs)
        except (OSError, pickle.PicklingError):
            self.close()

    def collect(self) -> list[str]:
        """Wait for every submitted job; returns the warnings of those that failed."""
        warnings: list[str] = []
        if self.worker is not None:
            try:
                assert self.worker.stdout is not None
                while self.sent:
                    line = self.worker.stdout.readline()
                    if not line:
                        raise EOFError
                    answer = json.loads(line)
                    self.pending.pop(0)
                    self.sent -= 1
                    if answer is not None:
                        warnings.append(answer)
            except (OSError, EOFError, ValueError):
                self.close()  # the worker is gone: draw what is left here
        pending, self.pending, self.sent = self.pending, [], 0
        return warnings + [w for w in map(draw, pending) if w is not None]

    def draw(self, jobs: list[Job]) -> list[str]:
        """Draw every job and wait for them; returns the warnings of those that failed."""
        self.submit(jobs)
        return self.collect()

    @classmethod
    def start_early(cls, warm: tuple[str, ...] = ()) -> None:
        """Start a worker now and keep it for the command (`launch` calls this first thing);
        it imports the modules `warm` names too while the command works."""
        painter = cls(background=False)
        painter.worker = _start(warm)
        _early.append(painter)

    @classmethod
    def take_early(cls) -> Optional[Painter]:
        """The worker `start_early` started, if any (once)."""
        return _early.pop() if _early else None

    def close(self) -> None:
        """End the worker (end of input) and wait for it; jobs it did not answer stay pending."""
        worker, self.worker, self.sent = self.worker, None, 0
        if worker is None:
            return
        try:
            if not self.used:  # still importing matplotlib for nothing (say, a config error)
                worker.terminate()
            if worker.stdin is not None:
                worker.stdin.close()
            worker.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            worker.kill()
            worker.wait()

    def __enter__(self) -> "Painter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


WARM = "BACKPROP_PAINTER_WARM"  # modules the worker imports after matplotlib, comma-separated
# what a command's worker is also asked to draw, besides matplotlib's pictures
WARM_FOR = {"sweep": ("pyarrow.parquet",)}


def _start(warm: tuple[str, ...] = ()) -> Optional[subprocess.Popen[bytes]]:
    """`python -m backprop_cli.painter` with this package first on its path, or None; a stale
    matplotlib lock is removed first, and said (the worker's own output goes nowhere)."""
    for lock in clear_stale_locks(matplotlib_cachedir()):
        sys.stderr.write(f"backprop: removed {lock}, left by a process killed while it wrote matplotlib's cache\n")
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    env[WARM] = ",".join(warm)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "backprop_cli.painter"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError:
        return None


def _slots() -> int:
    """How many plots the worker draws at once: one per core (at most 4), each in a process
    forked from the worker once matplotlib is imported, so none pays for the import again.
    One where there is no fork (Windows): the jobs are drawn in turn."""
    if not hasattr(os, "fork"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


class _Drawing:
    """One job drawn in a forked process; its answer arrives on a pipe, as JSON."""

    def __init__(self, job: Job) -> None:
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: draw, answer, and leave without the interpreter's teardown
            code = 0
            try:
                os.close(read)
                os.write(write, json.dumps(draw(job)).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write)
        self.fd, self.path, self.chunks = read, job[0], b""
        self.answer: Optional[str] = None
        self.done = False

    def read(self) -> None:
        """Take what the child wrote; at end of file, the answer (or why there is none)."""
        data = os.read(self.fd, 1 << 16)
        if data:
            self.chunks += data
            return
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        try:
            self.answer = json.loads(self.chunks) if status == 0 else None
            if status != 0:
                raise ValueError
        except ValueError:
            self.answer = f"{self.path}: plot not written: the drawing process ended ({status})"
        self.done = True


class _Drawn:
    """A job drawn here, in turn."""

    def __init__(self, job: Job) -> None:
        self.answer, self.done = draw(job), True


FRAME = 8  # every job is sent as its pickle's length (8 bytes, big-endian), then the pickle


def frame(job: Job) -> bytes:
    data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(FRAME, "big") + data


STALE_LOCK_S = 60.0  # matplotlib holds its cache lock for well under a second


def clear_stale_locks(cachedir: Path) -> list[Path]:
    """Remove matplotlib's cache locks older than a minute, and return them: a process killed
    while it wrote its font cache leaves its lock behind, and every later process then waits
    5 s for it and never saves the cache (matplotlib's warning asks the user to delete it)."""
    removed = []
    for lock in cachedir.glob("*.matplotlib-lock"):
        try:
            if time.time() - lock.lstat().st_mtime > STALE_LOCK_S:
                lock.unlink()
                removed.append(lock)
        except OSError:  # gone already, or not ours to remove: matplotlib says so itself
            continue
    return removed


def matplotlib_cachedir() -> Path:
    """Where matplotlib keeps its font cache (as `matplotlib.get_cachedir` finds it, without
    importing matplotlib): MPLCONFIGDIR, else the XDG cache folder's matplotlib/."""
    given = os.environ.get("MPLCONFIGDIR")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib"


def _import_matplotlib() -> None:
    """The worker's slow import, done while the parent trains, with SIGTERM held off while
    matplotlib may be writing its font cache (a first run killed there left the cache
    truncated and its lock behind; `_start` clears such a lock)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def serve(jobs: int, answers: IO[str], slots: int = 1) -> None:
    """The worker: draw the jobs framed on file descriptor `jobs`, `slots` at a time, and
    answer a JSON line each (null, or the warning) in the order they came, until end of input."""
    import select

    _import_matplotlib()

    from backprop_cli import pictures, plots  # noqa: F401  (and the engine modules they name neurons with)

    for name in filter(None, os.environ.get(WARM, "").split(",")):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra not installed: its job says so when it comes
            pass

    received, waiting = bytearray(), list[Job]()
    order: list[Union[_Drawing, _Drawn]] = []  # started, in the order the jobs came
    reading = True
    while reading or waiting or order:
        while waiting and sum(not d.done for d in order) < slots:
            job = waiting.pop(0)
            order.append(_Drawing(job) if slots > 1 else _Drawn(job))
        while order and order[0].done:
            answers.write(json.dumps(order.pop(0).answer) + "\n")
            answers.flush()
        running = {d.fd: d for d in order if isinstance(d, _Drawing) and not d.done}
        if not (reading or running or waiting):
            continue
        ready, _, _ = select.select([jobs] * reading + list(running), [], [])
        for fd in ready:
            if fd in running:
                running[fd].read()
                continue
            data = os.read(jobs, 1 << 20)
            reading = bool(data)
            received += data
            while len(received) >= FRAME and len(received) >= FRAME + int.from_bytes(received[:FRAME], "big"):
                size = int.from_bytes(received[:FRAME], "big")
                waiting.append(pickle.loads(received[FRAME : FRAME + size]))
                del received[: FRAME + size]


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.fileno(), sys.stdout, _slots())
    # every file is written and synced: skip the interpreter's slow teardown of matplotlib
    sys.stdout.flush()
    os._exit(0)
