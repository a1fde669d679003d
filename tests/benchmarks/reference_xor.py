"""The hand-written script `backprop train configs/xor.yaml` is measured against (bench.py,
case `process`): the same 2-2-1 sigmoid network, sse loss, learning rate 0.1, 10 000 full-batch
epochs from the same initial weights, then one matplotlib loss plot and a weights file, as a
tutorial would write it.

    python tests/benchmarks/reference_xor.py OUTPUT_FOLDER
"""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
Y = np.array([[0], [1], [1], [0]], float)
weights = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
rng = np.random.default_rng(1)
W1, b1 = rng.random((2, 2)), rng.random(2)
W2, b2 = rng.random((1, 2)), rng.random(1)
if weights:
    W1, b1, W2, b2 = (np.array(weights[k]) for k in ("W1", "b1", "W2", "b2"))
lr, losses = 0.1, []


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


for _ in range(10000):
    h = sigmoid(X @ W1.T + b1)
    o = sigmoid(h @ W2.T + b2)
    e = o - Y
    losses.append(0.5 * float(np.sum(e * e)))
    d2 = e * o * (1 - o)
    d1 = (d2 @ W2) * h * (1 - h)
    W2 -= lr * d2.T @ h
    b2 -= lr * d2.sum(0)
    W1 -= lr * d1.T @ X
    b1 -= lr * d1.sum(0)

plt.plot(losses)
plt.yscale("log")
plt.xlabel("epoch")
plt.ylabel("loss")
plt.title("xor: sse loss")
plt.savefig(out / "loss.png")
(out / "weights.json").write_text(
    json.dumps({"W1": W1.tolist(), "b1": b1.tolist(), "W2": W2.tolist(), "b2": b2.tolist()})
)
print(f"final loss {losses[-1]:.6g}")
