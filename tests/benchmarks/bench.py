"""Benchmarks: backprop's training loop against hand-written NumPy loops (and, when installed,
PyTorch and scikit-learn), each case run in the same process, interleaved, several repeats.

    python tests/benchmarks/bench.py             # every case
    python tests/benchmarks/bench.py tiny sweep  # some cases: study, process, grid, animate, numerical, tiny, display, sweep, medium, startup
    python tests/benchmarks/bench.py --quick     # fewer repeats and epochs

Prints medians, min-max and ratios (engine / reference: below 1 means the engine is faster).
Not part of the test run: timings belong in benchmarks, never in unit tests.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backprop_cli.config import load_config  # noqa: E402
from backprop_cli.experiment import dataset, fit, network  # noqa: E402
from backprop_cli.sweep import sweep_learning_rates  # noqa: E402

RESULTS = []


def report(case, variant, times, unit, scale, reference=None):
    """Record one row: median and min-max of `times` (seconds) times `scale` in `unit`."""
    med = statistics.median(times)
    row = {
        "case": case,
        "variant": variant,
        "median": med * scale,
        "min": min(times) * scale,
        "max": max(times) * scale,
        "unit": unit,
        "ratio": None,
    }
    if reference is not None:
        row["ratio"] = med / statistics.median(reference)
    RESULTS.append(row)
    ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
    print(
        f"  {case:8s} {variant:44s} {row['median']:10.3f} {unit:8s} [{row['min']:.3f} - {row['max']:.3f}]  {ratio}",
        flush=True,
    )
    return row


def interleave(fns: dict, repeats: int) -> dict:
    """Run each function once per round, rounds repeated: the machine's drift hits all alike."""
    times = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return times


# -- tiny: XOR 2-2-1 -----------------------------------------------------------------------------


def xor_setup(epochs):
    cfg = load_config(ROOT / "configs" / "xor.yaml", {"training.epochs": (epochs, "bench")})
    return cfg, dataset(cfg, "xor")


def plain_xor(X, Y, W1, b1, W2, b2, lr, epochs, accuracy=False):
    """The same maths written out by hand: sigmoid, sse, full batch, loss history."""
    hist = np.empty(epochs)
    acc = np.empty(epochs) if accuracy else None
    labels = Y > 0.5
    for e in range(epochs):
        h = 1 / (1 + np.exp(-(X @ W1.T + b1)))
        o = 1 / (1 + np.exp(-(h @ W2.T + b2)))
        err = o - Y
        hist[e] = 0.5 * np.sum(err * err)
        if accuracy:
            acc[e] = np.mean((o > 0.5) == labels)
        d2 = err * o * (1 - o)
        d1 = (d2 @ W2) * h * (1 - h)
        W2 -= lr * (d2.T @ h)
        b2 -= lr * d2.sum(0)
        W1 -= lr * (d1.T @ X)
        b1 -= lr * d1.sum(0)
    return hist


def case_tiny(repeats, epochs):
    print(f"tiny: XOR 2-2-1 sigmoid, sse, full batch, {epochs} epochs (per epoch)")
    cfg, data = xor_setup(epochs)

    def engine():
        return fit(cfg, data, network(cfg)).duration_s

    def plain(accuracy):
        def run():
            (W1, b1), (W2, b2) = network(cfg).get_params(0)
            t = time.perf_counter()
            plain_xor(data.X, data.Y, W1, b1, W2, b2, 0.1, epochs, accuracy)
            return time.perf_counter() - t

        return run

    fns = {"plain": plain(False), "plain+acc": plain(True), "engine": engine}
    try:
        import torch

        torch.set_num_threads(2)
        fns["torch"] = lambda: torch_xor(torch, data, cfg, epochs)
    except ImportError:
        print("  (PyTorch not installed: skipped)")
    try:
        import sklearn  # noqa: F401

        # scikit-learn runs at most 2000 epochs; scaled to the same epoch count as the others
        fns["sklearn"] = lambda: sklearn_xor(data, min(epochs, 2000)) * epochs / min(epochs, 2000)
    except ImportError:
        print("  (scikit-learn not installed: skipped)")
    t = interleave(fns, repeats)
    us = 1e6 / epochs
    report("tiny", "hand-written NumPy loop (loss history)", t["plain"], "us/epoch", us)
    report("tiny", "hand-written NumPy loop (loss + accuracy)", t["plain+acc"], "us/epoch", us, t["plain"])
    report("tiny", "backprop train loop (loss + accuracy)", t["engine"], "us/epoch", us, t["plain"])
    report("tiny", "  ... vs the loop with the same history", t["engine"], "us/epoch", us, t["plain+acc"])
    if "torch" in t:
        report("tiny", "PyTorch CPU float64 (manual SGD)", t["torch"], "us/epoch", us, t["plain"])
    if "sklearn" in t:
        report("tiny", "scikit-learn MLPClassifier (sgd)", t["sklearn"], "us/epoch", us, t["plain"])


def torch_xor(torch, data, cfg, epochs):
    net = network(cfg)
    (W1, b1), (W2, b2) = net.get_params(0)
    X, Y = torch.tensor(data.X), torch.tensor(data.Y)
    params = [torch.tensor(a, requires_grad=True) for a in (W1, b1, W2, b2)]
    w1, c1, w2, c2 = params
    hist = torch.empty(epochs, dtype=torch.float64)
    t = time.perf_counter()
    for e in range(epochs):
        o = torch.sigmoid(torch.sigmoid(X @ w1.T + c1) @ w2.T + c2)
        loss = 0.5 * ((o - Y) ** 2).sum()
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            hist[e] = loss
            for p in params:
                p -= 0.1 * p.grad
    return time.perf_counter() - t


def sklearn_xor(data, epochs):
    import warnings

    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(2,),
        activation="logistic",
        solver="sgd",
        learning_rate_init=0.1,
        momentum=0.0,
        batch_size=4,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=10**9,
        shuffle=False,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        clf.fit(data.X, data.Y[:, 0].astype(int))
    return time.perf_counter() - t


# -- display: the progress bar's cost ----------------------------------------------------------------


def case_display(repeats, epochs):
    print(f"display: XOR {epochs} epochs with the live Rich progress bar (rendered to a buffer)")
    from rich.console import Console

    from backprop_cli.cli import display

    cfg, data = xor_setup(epochs)
    display.out = Console(file=io.StringIO(), force_terminal=True, width=120)

    def plain():
        return fit(cfg, data, network(cfg)).duration_s

    def shown():
        with display.Reporter(epochs) as reporter:
            assert reporter.live
            return fit(cfg, data, network(cfg), callback=reporter).duration_s

    t = interleave({"none": plain, "bar": shown}, repeats)
    report("display", "train loop, no callback", t["none"], "us/epoch", 1e6 / epochs)
    report("display", "train loop, live progress bar", t["bar"], "us/epoch", 1e6 / epochs, t["none"])


# -- sweeps --------------------------------------------------------------------------------------------


def case_sweep(repeats, epochs):
    print(f"sweep: XOR, {epochs} epochs, training loop time of one run vs batched sweeps")
    cfg, data = xor_setup(epochs)
    rates6 = [0.1, 0.2, 0.5, 0.8, 1.0, 2.0]
    rates64 = list(np.geomspace(0.05, 5.0, 64))

    def one():
        return fit(cfg, data, network(cfg)).duration_s

    def sweep(rates):
        return lambda: sweep_learning_rates(cfg, data, rates)[0].result.duration_s

    t = interleave({"one": one, "six": sweep(rates6), "sixty-four": sweep(rates64)}, repeats)
    report("sweep", "one train run", t["one"], "s", 1)
    report("sweep", "6-rate sweep (target <= 1.5x)", t["six"], "s", 1, t["one"])
    report("sweep", "64-rate sweep (target <= 4x)", t["sixty-four"], "s", 1, t["one"])


# -- medium: 64-256-256-10 ----------------------------------------------------------------------------

MEDIUM_YAML = """
name: medium
seed: 0
model: {{layers: [64, 256, 256, 10], activation: relu, output_activation: softmax, init: he}}
training: {{loss: cross_entropy, learning_rate: 0.01, epochs: {epochs}, batch_size: 256, dtype: {dtype}}}
data: {{csv: medium.csv}}
"""


def medium_data(tmpdir: Path, n=20000):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 64))
    y = (X[:, :10] @ rng.standard_normal(10) > 0).astype(int) + 2 * (X[:, 10] > 0) + 4 * (X[:, 11] > 1)
    path = tmpdir / "medium.csv"
    if not path.exists():
        np.savetxt(path, np.c_[X, y], delimiter=",", fmt="%.6f")
    return path


def medium_setup(tmpdir, epochs, dtype):
    medium_data(tmpdir)
    (tmpdir / f"medium_{dtype}.yaml").write_text(MEDIUM_YAML.format(epochs=epochs, dtype=dtype))
    cfg = load_config(tmpdir / f"medium_{dtype}.yaml")
    return cfg, dataset(cfg, "medium")


def numpy_medium(X, Y, params, lr, epochs, batch, rng, buffered):
    """A hand-written NumPy minibatch loop: relu, relu, softmax + cross-entropy, plain SGD.

    buffered=True reuses preallocated temporaries (out=); False writes natural expressions.
    """
    (W1, b1), (W2, b2), (W3, b3) = [(w.copy(), b.copy()) for w, b in params]
    n = len(X)
    bufs = {}
    for _ in range(epochs):
        order = rng.permutation(n)
        Xs, Ys = X[order], Y[order]
        total = 0.0
        for s in range(0, n, batch):
            x, y = Xs[s : s + batch], Ys[s : s + batch]
            m = len(x)
            if buffered:
                if m not in bufs:
                    bufs[m] = [np.empty((m, k)) for k in (256, 256, 10, 10, 256, 256)] + [np.empty((m, 256), bool)]
                h1, h2, o, d3, d2, d1, mask = bufs[m]
                np.matmul(x, W1.T, out=h1)
                h1 += b1
                np.maximum(h1, 0, out=h1)
                np.matmul(h1, W2.T, out=h2)
                h2 += b2
                np.maximum(h2, 0, out=h2)
                np.matmul(h2, W3.T, out=o)
                o += b3
                o -= o.max(axis=1, keepdims=True)
                np.exp(o, out=o)
                o /= o.sum(axis=1, keepdims=True)
                total += -np.sum(y * np.log(np.maximum(o, 1e-300))) / m
                np.subtract(o, y, out=d3)
                d3 /= m
                W3 -= lr * (d3.T @ h2)
                b3 -= lr * d3.sum(0)
                np.matmul(d3, W3, out=d2)
                np.greater(h2, 0, out=mask)
                d2 *= mask
                W2 -= lr * (d2.T @ h1)
                b2 -= lr * d2.sum(0)
                np.matmul(d2, W2, out=d1)
                np.greater(h1, 0, out=mask)
                d1 *= mask
                W1 -= lr * (d1.T @ x)
                b1 -= lr * d1.sum(0)
            else:
                h1 = np.maximum(x @ W1.T + b1, 0)
                h2 = np.maximum(h1 @ W2.T + b2, 0)
                z = h2 @ W3.T + b3
                o = np.exp(z - z.max(axis=1, keepdims=True))
                o /= o.sum(axis=1, keepdims=True)
                total += -np.sum(y * np.log(np.maximum(o, 1e-300))) / m
                d3 = (o - y) / m
                d2 = (d3 @ W3) * (h2 > 0)
                d1 = (d2 @ W2) * (h1 > 0)
                W3 -= lr * (d3.T @ h2)
                b3 -= lr * d3.sum(0)
                W2 -= lr * (d2.T @ h1)
                b2 -= lr * d2.sum(0)
                W1 -= lr * (d1.T @ x)
                b1 -= lr * d1.sum(0)
    return total


def case_medium(repeats, epochs):
    import tempfile

    print(f"medium: 64-256-256-10 relu/softmax, 20000 x 64 samples, batch 256, SGD, {epochs} epochs (per epoch)")
    tmpdir = Path(tempfile.mkdtemp(prefix="bench-"))
    cfg64, data64 = medium_setup(tmpdir, epochs, "float64")
    cfg32, data32 = medium_setup(tmpdir, epochs, "float32")
    params = network(cfg64).get_params(0)

    def engine(cfg, data):
        return lambda: fit(cfg, data, network(cfg)).duration_s

    def numpy_loop(buffered):
        def run():
            t = time.perf_counter()
            numpy_medium(data64.X, data64.Y, params, 0.01, epochs, 256, np.random.default_rng(0), buffered)
            return time.perf_counter() - t

        return run

    fns = {
        "numpy": numpy_loop(True),
        "naive": numpy_loop(False),
        "engine64": engine(cfg64, data64),
        "engine32": engine(cfg32, data32),
    }
    try:
        import torch

        torch.set_num_threads(2)
        fns["torch64"] = lambda: torch_medium(torch, data64, params, epochs, torch.float64)
        fns["torch32"] = lambda: torch_medium(torch, data32, params, epochs, torch.float32)
    except ImportError:
        print("  (PyTorch not installed: skipped)")
    try:
        import sklearn  # noqa: F401

        fns["sklearn"] = lambda: sklearn_medium(data64, epochs)
    except ImportError:
        print("  (scikit-learn not installed: skipped)")
    t = interleave(fns, repeats)
    per = 1.0 / epochs
    report("medium", "hand-written NumPy loop, reused buffers", t["numpy"], "s/epoch", per)
    report("medium", "hand-written NumPy loop, naive temporaries", t["naive"], "s/epoch", per, t["numpy"])
    report("medium", "backprop float64 (target <= 1.1x)", t["engine64"], "s/epoch", per, t["numpy"])
    report("medium", "backprop float32 vs float64 (target <= 0.625x)", t["engine32"], "s/epoch", per, t["engine64"])
    if "torch64" in t:
        report("medium", "PyTorch CPU float64", t["torch64"], "s/epoch", per, t["numpy"])
        report(
            "medium", "  backprop float64 vs PyTorch float64 (<= 0.77x)", t["engine64"], "s/epoch", per, t["torch64"]
        )
        report("medium", "PyTorch CPU float32", t["torch32"], "s/epoch", per, t["numpy"])
    if "sklearn" in t:
        report("medium", "scikit-learn MLPClassifier float64", t["sklearn"], "s/epoch", per, t["numpy"])


def case_regularization(repeats, epochs):
    import tempfile

    print(
        f"regularization: the medium net ({epochs} epochs, per epoch) and XOR with dropout, l1 and clipping "
        "against the same loop without them"
    )
    tmpdir = Path(tempfile.mkdtemp(prefix="bench-"))
    cfg, data = medium_setup(tmpdir, epochs, "float64")
    dropout = cfg.model_copy(deep=True)
    dropout.model.dropout = 0.5
    terms = cfg.model_copy(deep=True)
    terms.training.l1, terms.training.clip_grad_norm, terms.training.clip_grad_value = 1e-4, 1.0, 0.5
    xor, xor_data = xor_setup(20000)

    def engine(c, d):
        return lambda: fit(c, d, network(c)).duration_s

    def hand():
        (W1, b1), (W2, b2) = network(xor).get_params(0)
        t = time.perf_counter()
        plain_xor(xor_data.X, xor_data.Y, W1, b1, W2, b2, 0.1, 20000, True)
        return time.perf_counter() - t

    fns = {
        "off": engine(cfg, data),
        "dropout": engine(dropout, data),
        "terms": engine(terms, data),
        "xor hand": hand,
        "xor off": engine(xor, xor_data),
    }
    t = interleave(fns, repeats)
    per = 1.0 / epochs
    report("regular", "medium net, all off", t["off"], "s/epoch", per)
    report("regular", "medium net, dropout 0.5 (target <= 1.3x)", t["dropout"], "s/epoch", per, t["off"])
    report("regular", "medium net, l1 + clip_grad_value + clip_grad_norm", t["terms"], "s/epoch", per, t["off"])
    report("regular", "XOR hand-written loop (loss + accuracy)", t["xor hand"], "us/epoch", 1e6 / 20000)
    report(
        "regular",
        "XOR backprop, all off (target 1.00x of before)",
        t["xor off"],
        "us/epoch",
        1e6 / 20000,
        t["xor hand"],
    )


def torch_medium(torch, data, params, epochs, dtype):
    X, Y = torch.tensor(data.X, dtype=dtype), torch.tensor(data.Y, dtype=dtype)
    ps = [torch.tensor(a, dtype=dtype, requires_grad=True) for w, b in params for a in (w, b)]
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen)
        Xs, Ys = X[order], Y[order]
        for s in range(0, len(X), 256):
            x, y = Xs[s : s + 256], Ys[s : s + 256]
            h = torch.relu(x @ ps[0].T + ps[1])
            h = torch.relu(h @ ps[2].T + ps[3])
            z = h @ ps[4].T + ps[5]
            loss = -(y * torch.log_softmax(z, dim=1)).sum() / len(x)
            for p in ps:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                for p in ps:
                    p -= 0.01 * p.grad
    return time.perf_counter() - t


def sklearn_medium(data, epochs):
    import warnings

    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(256, 256),
        activation="relu",
        solver="sgd",
        batch_size=256,
        learning_rate_init=0.01,
        momentum=0.0,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=10**9,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        clf.fit(data.X, data.Y.argmax(axis=1))
    return time.perf_counter() - t


# -- start-up --------------------------------------------------------------------------------------------


def case_startup(repeats, _):
    print("startup: `backprop --help` in a fresh process (target <= 0.5 s)")

    def run(args):
        def go():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "backprop_cli", *args], check=True, capture_output=True, cwd=ROOT)
            return time.perf_counter() - t

        return go

    def bare():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - t

    t = interleave({"python": bare, "help": run(["--help"]), "train-help": run(["train", "--help"])}, repeats)
    report("startup", "python -c pass", t["python"], "s", 1)
    report("startup", "backprop --help", t["help"], "s", 1)
    report("startup", "backprop train --help", t["train-help"], "s", 1)


# -- process: what a user waits for, start to prompt -------------------------------------------------


_MPL = None


def _env():
    """The environment of timed processes: a private matplotlib cache, built once before any
    timing (a shared cache that is locked or stale adds seconds to every process)."""
    global _MPL
    if _MPL is None:
        import tempfile

        _MPL = tempfile.mkdtemp(prefix="bench-mpl-")
        env = {**os.environ, "MPLCONFIGDIR": _MPL}
        subprocess.run([sys.executable, "-c", "import matplotlib.pyplot"], check=True, env=env)
    return {**os.environ, "MPLCONFIGDIR": _MPL}


def _command(args, cwd):
    """Time one whole process: `backprop ARGS` (with "-" first: a Python script) in `cwd`,
    with a private, warm matplotlib cache."""
    env = _env()

    def go():
        argv = [sys.executable, *args[1:]] if args[0] == "-" else [sys.executable, "-m", "backprop_cli", *args]
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=cwd, env=env)
        return time.perf_counter() - t

    return go


def case_process(repeats, _):
    print("process: whole commands, start to prompt, each against its reference in the same rounds")
    import compileall
    import tempfile

    # an installed package has its bytecode compiled (pip does it); so does this checkout now
    compileall.compile_dir(str(ROOT / "backprop_cli"), quiet=1)
    cfgs = ROOT / "configs"
    with tempfile.TemporaryDirectory() as tmp:
        runs = ["--runs-dir", str(Path(tmp) / "runs"), "--quiet"]
        script = str(ROOT / "tests" / "benchmarks" / "reference_xor.py")
        rates64 = ",".join(f"{r:.6g}" for r in np.geomspace(0.05, 5.0, 64))
        t = interleave(
            {
                "script": _command(["-", script, str(Path(tmp) / "ref")], tmp),
                "train": _command(["train", str(cfgs / "xor.yaml"), *runs], tmp),
                "worked": _command(["train", str(cfgs / "worked_example.yaml"), *runs], tmp),
                "sweep6": _command(["sweep-lr", str(cfgs / "worked_example.yaml"), *runs], tmp),
                "xor2000": _command(["train", str(cfgs / "xor.yaml"), "--epochs", "2000", *runs], tmp),
                "sweep64": _command(
                    ["sweep-lr", str(cfgs / "xor.yaml"), "--lrs", rates64, "--epochs", "2000", *runs], tmp
                ),
                "digits": _command(["train", str(cfgs / "digits.yaml"), *runs], tmp),
                "gradcheck": _command(["gradcheck", str(cfgs / "digits.yaml")], tmp),
            },
            repeats,
        )
    report("process", "hand-written XOR script, 1 plot + weights", t["script"], "s", 1)
    report("process", "train xor.yaml (target <= 1.0x)", t["train"], "s", 1, t["script"])
    report("process", "train worked_example.yaml", t["worked"], "s", 1)
    report("process", "sweep-lr worked_example, 6 rates (<= 1.3x)", t["sweep6"], "s", 1, t["worked"])
    report("process", "train xor.yaml --epochs 2000", t["xor2000"], "s", 1)
    report("process", "sweep-lr xor, 64 rates, 2000 epochs (<= 3.0x)", t["sweep64"], "s", 1, t["xor2000"])
    report("process", "train digits.yaml", t["digits"], "s", 1)
    report("process", "gradcheck digits.yaml (<= 1.0x)", t["gradcheck"], "s", 1, t["digits"])


def case_numerical(repeats, epochs):
    print(f"numerical: XOR {epochs} epochs, training loop time (duration_s), numerical against analytic gradients")
    cfg, data = xor_setup(epochs)
    numerical = cfg.model_copy(deep=True)
    numerical.training.gradient = "numerical"

    def run(c):
        return lambda: fit(c, data, network(c)).duration_s

    t = interleave({"analytic": run(cfg), "numerical": run(numerical)}, repeats)
    report("numerical", "analytic gradients", t["analytic"], "s", 1)
    report("numerical", "numerical gradients, central (<= 3.0x)", t["numerical"], "s", 1, t["analytic"])


def case_animate(repeats, epochs):
    print(f"animate: snapshots for training.gif taken inside the loop (XOR {epochs} epochs, moons), and whole commands")
    import tempfile

    from backprop_cli.animation import Snapshots
    from backprop_cli.config import load_config
    from backprop_cli.experiment import dataset

    cfg, data = xor_setup(epochs)
    moons = load_config(ROOT / "configs" / "moons.yaml")
    moons_data = dataset(moons, "moons.yaml")

    def loop(c, d, shots):
        def run():
            net = network(c)
            callback = Snapshots(net.theta, c.training.epochs, 0, 60) if shots else None
            return fit(c, d, net, callback=callback).duration_s

        return run

    t = interleave(
        {
            "xor": loop(cfg, data, False),
            "xor_shots": loop(cfg, data, True),
            "moons": loop(moons, moons_data, False),
            "moons_shots": loop(moons, moons_data, True),
        },
        repeats,
    )
    report("animate", "XOR loop, no callback", t["xor"], "us/epoch", 1e6 / epochs)
    report("animate", "XOR loop, 60 snapshots (<= 1.05x)", t["xor_shots"], "us/epoch", 1e6 / epochs, t["xor"])
    report("animate", "moons loop, no callback", t["moons"], "s", 1)
    report("animate", "moons loop, 60 snapshots (<= 1.05x)", t["moons_shots"], "s", 1, t["moons"])
    with tempfile.TemporaryDirectory() as tmp:
        runs = ["--runs-dir", str(Path(tmp) / "runs"), "--quiet"]
        config = str(ROOT / "configs" / "moons.yaml")
        t = interleave(
            {
                "plain": _command(["train", config, *runs], tmp),
                "animated": _command(["train", config, "--animate", *runs], tmp),
            },
            repeats,
        )
    report("animate", "train moons.yaml", t["plain"], "s", 1)
    report("animate", "train moons.yaml --animate (drawing 60 frames)", t["animated"], "s", 1, t["plain"])


def case_grid(repeats, _):
    print("grid: backprop sweep as whole commands: a batched grid against one run; 2 workers against 1")
    import compileall
    import tempfile

    compileall.compile_dir(str(ROOT / "backprop_cli"), quiet=1)
    xor = str(ROOT / "configs" / "xor.yaml")
    rates = ",".join(f"{r:.4g}" for r in np.geomspace(0.05, 5.0, 16))
    shapes = ["--grid", "model.activation=sigmoid,tanh,relu", "--grid", "model.layers=[2,2,1],[2,4,1],[2,8,1]"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = ["--runs-dir", str(Path(tmp) / "runs"), "--quiet"]
        t = interleave(
            {
                "one": _command(["train", xor, *runs], tmp),
                "grid64": _command(
                    ["sweep", xor, "--grid", f"training.learning_rate={rates}", "--seeds", "0:4", *runs], tmp
                ),
                "w1": _command(["sweep", xor, *shapes, "--workers", "1", *runs], tmp),
                "w2": _command(["sweep", xor, *shapes, "--workers", "2", *runs], tmp),
            },
            repeats,
        )
    report("grid", "train xor.yaml (one run, 10 000 epochs)", t["one"], "s", 1)
    report("grid", "sweep: 16 rates x 4 seeds = 64 cells, one batched pass", t["grid64"], "s", 1, t["one"])
    report("grid", "sweep: 3 activations x 3 widths = 9 groups, --workers 1", t["w1"], "s", 1)
    report("grid", "the same, --workers 2", t["w2"], "s", 1, t["w1"])


def _loop_seconds(runs):
    """The training loops' own time in a study just written: the sum of its chunks' duration_s."""
    from backprop_cli.store import Store

    (folder,) = [p for p in Path(runs).iterdir() if "-grid-" in p.name]
    durations = Store.open(folder).field("duration_s")
    return float(np.unique(durations[np.isfinite(durations)]).sum())


def case_study(repeats, _):
    print(
        "study: a grid's whole process against its own training loop (the store's duration_s); engine per model-epoch"
    )
    import shutil
    import tempfile

    xor = str(ROOT / "configs" / "xor.yaml")
    fixed = None  # what a one-cell study pays besides its loop: start-up, the store's files, exit
    for n_rates, seeds in ((1, 1), (256, 4), (2500, 4)):
        rates = ",".join(f"{r:.8g}" for r in np.geomspace(0.01, 10.0, n_rates))
        cells = n_rates * seeds
        whole, loops = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                runs = Path(tmp) / "runs"
                args = ["sweep", xor, "--grid", f"training.learning_rate={rates}", "--seeds", f"0:{seeds}"]
                args += ["--workers", "1"]  # the process against its own loop: no second core hiding the rest
                whole.append(_command([*args, "--epochs", "2000", "--runs-dir", str(runs), "-q"], tmp)())
                loops.append(_loop_seconds(runs))
                shutil.rmtree(runs)
        report("study", f"sweep xor: {cells:,} cells x 2,000 epochs, --workers 1, training loop", loops, "s", 1)
        report("study", "the same, whole process", whole, "s", 1, loops)
        extra = [w - l for w, l in zip(whole, loops)]
        if fixed is None:
            fixed = float(np.median(extra))
            report("study", "  process minus loop: the fixed cost", extra, "s", 1)
            continue
        report(
            "study", "  process minus loop, per cell (bookkeeping + start-up)", [x / cells for x in extra], "ms", 1e3
        )
        per_cell = [(x - fixed) / (cells - 1) for x in extra]
        report("study", "  the same less the one-cell study's fixed cost: bookkeeping per cell", per_cell, "ms", 1e3)
    # the engine alone, in the chunks a study trains: a 16-16-1 tanh net, 16 samples, full batch
    from backprop_cli.api import config
    from backprop_cli.grid import chunk_size

    rng = np.random.default_rng(0)
    cfg = config(
        {
            "model": {"layers": [16, 16, 1], "activation": "tanh", "output_activation": "identity", "init": "xavier"},
            "training": {"loss": "mse", "learning_rate": 0.01, "epochs": 10},
            "data": {"inputs": rng.normal(size=(16, 16)).tolist(), "targets": rng.normal(size=(16, 1)).tolist()},
        }
    )
    data = dataset(cfg, "bench")
    chunk = chunk_size(cfg, 2**32)
    for K, epochs in ((1, 20000), (1024, 200), (16384, 50), (100_000, 20)):
        cfg.training.epochs = epochs
        times = []
        for _ in range(max(1, repeats // 2)):
            spent = 0.0
            for start in range(0, K, chunk):
                k = min(chunk, K - start)
                net = network(cfg, n_models=k)
                spent += fit(cfg, data, net, learning_rates=list(np.geomspace(0.001, 0.1, k))).duration_s
            times.append(spent / (K * epochs))
        report("study", f"engine 16-16-1 tanh, K={K:,} in chunks of {min(chunk, K)}", times, "us/m-ep", 1e6)


def case_halving(repeats, _):
    print("halving: successive halving against the full search of the same trials (best val_loss, model-epochs)")
    import csv as csv_module
    import tempfile

    def best_and_cost(folder):
        rows = list(csv_module.DictReader((folder / "grid.csv").open()))
        losses = [float(r["val_loss"]) for r in rows if r["val_loss"]]
        return min(losses), sum(int(r["epochs_run"]) for r in rows)

    # the default protocol (eta 3: rungs of 10, 30, 90 and 270 epochs), and two that start later
    protocols = (
        ["--halving", "--eta", "3"],
        ["--halving", "--eta", "3", "--min-epochs", "30"],
        ["--halving", "--eta", "2", "--min-epochs", "30"],
    )
    for (config, epochs), halving in itertools.product((("sine.yaml", 270), ("iris.yaml", 270)), protocols):
        ratios, costs = [], []
        for seed in range(5):
            with tempfile.TemporaryDirectory() as tmp:
                args = ["search", str(ROOT / "configs" / config), "--space", "training.learning_rate=log:0.0003:0.3"]
                args += ["--trials", "81", "--search-seed", str(seed), "--epochs", str(epochs), "-q"]
                _command([*args, "--runs-dir", str(Path(tmp) / "full")], tmp)()
                _command([*args, *halving, "--runs-dir", str(Path(tmp) / "half")], tmp)()
                (full,) = (Path(tmp) / "full").iterdir()
                (half,) = (Path(tmp) / "half").iterdir()
                (b_full, c_full), (b_half, c_half) = best_and_cost(full), best_and_cost(half)
                ratios.append(b_half / b_full)
                costs.append(c_half / c_full)
                print(f"  {config} search seed {seed}: best val_loss {b_half:.5g} (halving) vs {b_full:.5g} (full), "
                      f"model-epochs {c_half:,} vs {c_full:,}", flush=True)  # fmt: skip
        said = " ".join(halving[1:])
        report("halving", f"{config} ({said}): halving's best val_loss / the full search's", ratios, "x", 1)
        report("halving", f"{config} ({said}): halving's model-epochs / the full search's", costs, "x", 1)


def case_diagnostics(repeats, epochs):
    """training.diagnostics on the medium net: off, every epoch and every 10 epochs."""
    import tempfile

    from backprop_cli.config.schema import DiagnosticsConfig

    print(f"diagnostics: the medium net ({epochs} epochs, per epoch) recording diagnostics, against without")
    tmpdir = Path(tempfile.mkdtemp(prefix="bench-"))
    cfg, data = medium_setup(tmpdir, epochs, "float64")
    every = {}
    for n in (1, 10):
        every[n] = cfg.model_copy(deep=True)
        every[n].training.diagnostics = DiagnosticsConfig(every=n)

    def engine(c):
        return lambda: fit(c, data, network(c)).duration_s

    t = interleave({"off": engine(cfg), "every 1": engine(every[1]), "every 10": engine(every[10])}, repeats)
    per = 1.0 / epochs
    report("diagnose", "medium net, diagnostics off", t["off"], "s/epoch", per)
    report("diagnose", "medium net, every epoch (target <= 1.3x)", t["every 1"], "s/epoch", per, t["off"])
    report("diagnose", "medium net, every 10 epochs (target <= 1.05x)", t["every 10"], "s/epoch", per, t["off"])


def _with_and_without(case, flag, epochs, repeats, extra, launch=None):
    """`train xor.yaml` against `train xor.yaml FLAG`, in interleaved rounds: the whole
    process (seconds) and its training loop (summary.json's duration_s) each. `extra(tmp)`
    gives the flag's arguments; `launch(argv, env)` runs the flagged process (default: run it
    to its end)."""
    import json
    import tempfile

    env = _env()
    xor = str(ROOT / "configs" / "xor.yaml")
    loops: dict = {"off": [], "on": []}

    def run(variant, tmp):
        runs = Path(tmp) / variant

        def go():
            argv = [sys.executable, "-m", "backprop_cli", "train", xor, "--epochs", str(epochs)]
            argv += ["--runs-dir", str(runs), "--quiet"]
            t = time.perf_counter()
            if variant == "on" and launch is not None:
                launch(argv + extra(tmp), env)
            else:
                flags = extra(tmp) if variant == "on" else []
                subprocess.run(argv + flags, check=True, capture_output=True, env=env)
            took = time.perf_counter() - t
            newest = max(runs.iterdir(), key=lambda p: p.stat().st_mtime)
            loops[variant].append(json.loads((newest / "summary.json").read_text())["duration_s"])
            return took

        return go

    with tempfile.TemporaryDirectory() as tmp:
        t = interleave({"off": run("off", tmp), "on": run("on", tmp)}, repeats)
    report(case, "train xor, whole process", t["off"], "s", 1)
    report(case, f"train xor {flag}, whole process", t["on"], "s", 1, t["off"])
    report(case, "training loop (duration_s)", loops["off"], "us/epoch", 1e6 / epochs)
    return loops


def case_tensorboard(repeats, epochs):
    """--tensorboard: the loop (duration_s) and the whole process, with and without it."""
    print(f"tensorboard: train xor.yaml --epochs {epochs} with --tensorboard against without, same rounds")
    loops = _with_and_without(
        "tensorboard", "--tensorboard", epochs, repeats, lambda tmp: ["--tensorboard", str(Path(tmp) / "tb")]
    )
    target = "training loop --tensorboard (target <= 1.05x)"
    report("tensorboard", target, loops["on"], "us/epoch", 1e6 / epochs, loops["off"])


def _watch(url):
    """A page that listens: reads the live stream (as a browser's EventSource does) to its end."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    connection.request("GET", f"/api/events?{parts.query}")
    response = connection.getresponse()
    for line in response:
        if line.startswith(b"event: end"):
            break
    connection.close()


def case_live(repeats, epochs):
    """--live with a page listening: the loop (duration_s) and the whole process, against the
    same run without it."""
    import threading

    print(f"live: train xor.yaml --epochs {epochs} --live (a page listening) against without, same rounds")

    def launch(argv, env):  # the child waits for a page: one connects once it prints the address
        child = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
        page = threading.Thread(target=_watch, args=(child.stderr.readline().split()[1],))
        page.start()
        child.communicate()
        page.join()

    loops = _with_and_without("live", "--live (a page listening)", epochs, repeats, lambda tmp: ["--live"], launch)
    report("live", "training loop --live (target <= 1.1x)", loops["on"], "us/epoch", 1e6 / epochs, loops["off"])


CASES = {
    "live": case_live,
    "diagnostics": case_diagnostics,
    "tensorboard": case_tensorboard,
    "halving": case_halving,
    "study": case_study,
    "process": case_process,
    "grid": case_grid,
    "animate": case_animate,
    "numerical": case_numerical,
    "tiny": case_tiny,
    "display": case_display,
    "sweep": case_sweep,
    "medium": case_medium,
    "regularization": case_regularization,
    "startup": case_startup,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all): {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and epochs")
    args = parser.parse_args()
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r} (cases: {', '.join(CASES)})")
    plan = {
        "tiny": (7, 20000),
        "display": (7, 20000),
        "sweep": (5, 50000),
        "medium": (7, 3),
        "regularization": (7, 3),
        "startup": (7, None),
        "process": (5, None),
        "numerical": (5, 10000),
        "animate": (5, 10000),
        "grid": (5, None),
        "study": (5, None),
        "halving": (1, None),
        "tensorboard": (7, 50000),
        "diagnostics": (5, 20),
        "live": (7, 100000),
    }
    if args.quick:
        plan = {
            "tiny": (3, 5000),
            "display": (3, 5000),
            "sweep": (3, 5000),
            "medium": (3, 1),
            "regularization": (3, 1),
            "startup": (3, None),
            "process": (3, None),
            "numerical": (3, 2000),
            "animate": (3, 5000),
            "grid": (3, None),
            "study": (3, None),
            "halving": (1, None),
            "tensorboard": (3, 10000),
            "diagnostics": (3, 10),
            "live": (3, 20000),
        }
    core = os.environ.get("OPENBLAS_CORETYPE")
    blas = f"OPENBLAS_CORETYPE={core} from the environment" if core else "OpenBLAS's own choice of kernels"
    print(
        f"python {platform.python_version()}, numpy {np.__version__} ({blas}); "
        "medians of interleaved repeats; ratio = median / reference median"
    )
    for name in args.cases or list(CASES):
        repeats, epochs = plan[name]
        CASES[name](repeats, epochs)


if __name__ == "__main__":
    main()
