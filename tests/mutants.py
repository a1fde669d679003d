"""Mutation testing by hand: deliberate bugs, one at a time, each run against the tests that
should catch it; a mutant the tests do not fail on "survived". Not a test itself.

    python tests/mutants.py            # every mutant (minutes: each runs a test selection)
    python tests/mutants.py g5 st1     # some of them

Each mutant is an exact text replacement in one file (refused if the text is not there exactly
once), and the file is put back whatever happens.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ["tests/test_trust.py", "tests/test_guards.py", "tests/test_engine.py", "tests/test_data_training.py"]
ENGINE += ["tests/test_reliability.py", "tests/test_pins.py"]
STUDIES = ["tests/test_trust.py", "tests/test_guards.py", "tests/test_store.py", "tests/test_grid.py"]
STUDIES += ["tests/test_sweep.py", "tests/test_workflow.py", "tests/test_pins.py", "tests/test_api.py"]
STUDIES += ["tests/test_report.py", "tests/test_first_hour.py"]

T, P, O, C = "training.py", "policies.py", "optimizers.py", "schedules.py"
N, ST, SW, G, R, A = "network.py", "studies.py", "sweep.py", "grid.py", "report.py", "api.py"
S, CE, X, RS = "store.py", "run_folders/cells.py", "experiment.py", "results.py"

# (id, file under backprop_cli/, text, replacement, tests)
MUTANTS = [
    ("t1", T, "schedule.factor(epoch, horizon)", "schedule.factor(e + 1, horizon)", ENGINE),
    ("t2", T, "        if current == done:", "        if current != done:", ENGINE),
    ("t3", T, "                    loss = loss / batches.count", "                    loss = loss", ENGINE),
    ("t4", T, "    horizon = start_epoch + t.epochs if horizon is None else horizon",
     "    horizon = t.epochs if horizon is None else horizon", ENGINE),
    ("t5", T, "            theta[k] = c.theta\n", "            pass\n", ENGINE),
    ("t6", T, "                opt.restore(k, c.moments, c.step)", "                pass", ENGINE),
    ("t7", T, "            early.resume(k, c.early)", "            pass", ENGINE),
    ("t8", T, "    if early is not None and E == t.epochs:", "    if early is not None:", ENGINE),
    ("t9", T, "                if interruption.requested:", "                if False:", ENGINE),
    ("t10", T, "                self.rng.bit_generator.state = order", "                pass", ENGINE),
    ("t11", T, "        found[k] = np.asarray(r, net.dtype)[layer] if np.ndim(r) else r",
     "        found[k] = np.asarray(r, net.dtype)[::-1][layer] if np.ndim(r) else r", STUDIES),
    ("n1", N, "                np.copyto(WTc, W_T)\n", "", ENGINE),
    ("n2", N, "                    np.matmul(ones, D, out=gb)", "                    np.matmul(ones, D * 0.5, out=gb)", ENGINE),
    ("p1", P, "(value < self.best - self.min_delta)", "(value < self.best + self.min_delta)", ENGINE),
    ("p2", P, 'self.maximize = es.monitor.endswith("accuracy")', "self.maximize = False", ENGINE),
    ("p3", P, "self.best_theta[improved] = self.snaps[e & 1][improved]",
     "self.best_theta[improved] = self.snaps[(e + 1) & 1][improved]", ENGINE),
    ("p4", P, '"stop_at_loss", "completed", e + 1)', '"stop_at_loss", "completed", e)', ENGINE),
    ("p5", P, "good = snap if np.all(np.isfinite(snap)) else self.snaps[(e + 1) & 1][k]", "good = snap", ENGINE),
    ("p6", P, "                    column[ran:, k] = np.nan", "                    column[ran + 1 :, k] = np.nan", ENGINE),
    ("p7", P, '"interrupted", "interrupted", done', '"interrupted", "interrupted", done + 1', ENGINE),
    ("p8", P, "        self.theta[~self.active] = self.frozen[~self.active]", "        pass", ENGINE),
    ("o1", O, "        self.buf *= 1.0 / (1.0 - self.b1**self.t)", "        pass", ENGINE),
    ("o2", O, "            np.multiply(self.v, self.mu, out=self.buf)", "            np.copyto(self.buf, self.v)", ENGINE),
    ("o3", O, "        self.buf *= 1.0 - self.rho", "        pass", ENGINE),
    ("o4", O, "            grad += self.buf", "            grad -= self.buf", ENGINE),
    ("o5", O, "            mine[name][model] = values", "            pass", ENGINE),
    ("c1", C, "self.floor: Factor = lr_min / learning_rate", "self.floor: Factor = lr_min", ENGINE),
    ("c2", C, "(epoch - 1) // self.step_size", "epoch // self.step_size", ENGINE),
    ("c3", C, "self.gamma ** (epoch - 1))", "self.gamma**epoch)", ENGINE),
    ("c4", C, "progress = (epoch - 1) / max(horizon - 1, 1)", "progress = epoch / max(horizon, 1)", ENGINE),
    ("s1", ST, '    if "completed" in statuses:\n        return "completed"', '    if True:\n        return "completed"',
     STUDIES),
    ("s2", ST, "    return cfg.sweep.target if cfg.sweep else DEFAULT_TARGET", "    return DEFAULT_TARGET", STUDIES),
    ("s3", ST, "            run_cfg.training.learning_rate = float(e.value)\n", "", STUDIES),
    ("s4", ST, "            run_cfg.model.weights = [w.tolist() for w, _ in e.start_params]\n", "", STUDIES),
    ("s5", ST, '    if interrupted or "interrupted" in statuses:', "    if interrupted:", STUDIES),
    ("w1", SW, "        return epochs_to(self.losses, self.result.epochs, target)",
     "        return epochs_to(self.losses[1:], self.result.epochs[1:], target)", STUDIES),
    ("w2", SW, "            net.set_params(previous)", "            pass", STUDIES),
    ("w3", SW, "        net = network(cfg, seeds=list(seeds))", "        net = network(cfg, n_models=len(seeds))", STUDIES),
    ("w4", SW, "    if not found:\n", "    if False:\n", STUDIES),
    ("w5", SW, "        mine.seed = seed\n", "", STUDIES),
    ("x1", X, " and cfg.training.batch_size is None", "", STUDIES),
    ("g2", G, "                if len(set(values)) > 1:\n                    scalars[key] = values",
     "                if False:\n                    scalars[key] = values", STUDIES),
    ("g3", G, 'chunk.fields["status"] == STATUSES.index("interrupted")',
     'chunk.fields["status"] == STATUSES.index("diverged")', STUDIES),
    ("g5", RS, "    sign = -1.0 if is_score(by) else 1.0", "    sign = 1.0", STUDIES),
    ("g6", G, "                future.cancel()", "                pass", STUDIES),
    ("g7", G, "            cluster.close()", "            pass", STUDIES),
    ("g8", RS, "float(np.median(hits)) if hits else None))", "float(np.mean(hits)) if hits else None))", STUDIES),
    ("g11", G, "    if need > 0.9 * free:", "    if need > 10 * free:", STUDIES),
    ("g12", RS, '    return [int(r["run"].split("_")[1]) - 1 for r in sort_rows(rows, sort)[:n]]',
     '    return [int(r["run"].split("_")[1]) - 1 for r in rows[:n]]', STUDIES),
    ("g13", G, "    return values[:1] if low == high else values", "    return values[:-1]", STUDIES),
    ("st1", S, "        a[\"cell.done\"][rows[ended]] = True", "        a[\"cell.done\"][rows] = True", STUDIES),
    ("st2", S, "v[np.maximum(ran - 1, 0), models]", "v[np.maximum(ran - 2, 0), models]", STUDIES),
    ("st3", S, "            target[rows, at : at + width] = values[:width].T", "            target[rows, at : at + width] = values[:width].T[::-1]",
     STUDIES),
    ("st4", S, "result.epochs[hit.argmax(axis=0)]", "result.epochs[hit.argmax(axis=0)] + 1", STUDIES),
    ("ce1", CE, "(combo // stride) % size", "(combo % stride) % size", STUDIES),
    ("ce2", CE, "                rate[int(match.group(1))] = values[key]", "                rate[0] = values[key]", STUDIES),
    ("ce3", CE, "        cfg.seed = self.seed(i)\n", "", STUDIES),
    ("ce4", CE, " or not math.isfinite(value):", ":", STUDIES),
    ("ce5", CE, "        if limit is not None and self.n > limit:\n            raise ConfigError(f\"the grid",
     "        if limit is not None and self.n > 10 * limit:\n            raise ConfigError(f\"the grid", STUDIES),
    ("r1", R, 'f"<h1>{escape(name)}</h1>"', 'f"<h1>{name}</h1>"', STUDIES),
    ("r2", R, "<pre>{escape(text)}</pre>", "<pre>{text}</pre>", STUDIES),
    ("r3", R, 'f"{escape(_cell(v, str(row[0]) if keyed else str(header[i])))}</td>"',
     'f"{_cell(v, str(row[0]) if keyed else str(header[i]))}</td>"', STUDIES),
    ("a1", A, "    if len(owners) != 1:", "    if not owners:", STUDIES),
    ("a2", A, '    if trained.interrupted_while_saving or trained.result.status[0] == "interrupted":',
     "    if trained.interrupted_while_saving:", STUDIES),
    ("a3", A, "    rates = check_rates(rates)", "    rates = list(rates)", STUDIES),
    ("a4", A, "start_epoch=start_epoch, resume=resume)", "start_epoch=start_epoch)", STUDIES),
    ("e1", "evaluation.py", '    present = [row for row in classes if row["support"]]', "    present = classes", STUDIES),
]  # fmt: skip


def run(mutant: tuple) -> str:
    ident, name, old, new, tests = mutant
    path = ROOT / "backprop_cli" / name
    source = path.read_text()
    if source.count(old) != 1:
        return "NO MATCH"
    path.write_text(source.replace(old, new))
    try:
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
        return "killed" if done.returncode != 0 else "SURVIVED"
    finally:
        path.write_text(source)


def main() -> None:
    wanted = set(sys.argv[1:])
    results = []
    for mutant in MUTANTS:
        if wanted and mutant[0] not in wanted:
            continue
        outcome = run(mutant)
        results.append(outcome)
        print(f"{mutant[0]:5s} {mutant[1]:22s} {outcome}", flush=True)
    judged = [r for r in results if r != "NO MATCH"]
    killed = judged.count("killed")
    print(f"{killed} of {len(judged)} mutants killed ({100 * killed / max(len(judged), 1):.1f}%)")


if __name__ == "__main__":
    main()
