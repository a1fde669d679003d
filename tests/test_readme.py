"""The README's example output is what the commands print today (run names and speeds aside)."""

import re
import subprocess
import sys

import pytest
from conftest import CONFIGS, ROOT

README = (ROOT / "README.md").read_text()


def _example(command: str) -> list[str]:
    """The lines a README console block shows after `$ command`, up to the next command or the
    block's end."""
    start = README.index(f"$ {command}\n") + len(f"$ {command}\n")
    lines = []
    for line in README[start:].splitlines():
        if line.startswith("$ ") or line.startswith("```"):
            break
        lines.append(line.rstrip())
    return lines


def _normal(lines):
    """Lines with run-folder timestamps and speeds taken out, trailing spaces dropped."""
    lines = [re.sub(r"-\d{8}-\d{6}", "-TIME", line.rstrip()) for line in lines]
    return [re.sub(r"[\d,]+ ep/s", "N ep/s", line) for line in lines]


@pytest.fixture
def shell(tmp_path):
    (tmp_path / "configs").symlink_to(CONFIGS)

    def run(command, stdin=None):
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, input=stdin,
                              env={"PATH": f"{sys.executable.rsplit('/', 1)[0]}:/usr/bin:/bin"})  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    return run


def _matches(shown, printed):
    """The README's lines equal the printed ones; a `...` line stands for any lines between."""
    shown, printed = _normal(shown), _normal(printed)
    if "..." not in shown:
        return shown == printed
    cut = shown.index("...")
    head, tail = shown[:cut], shown[cut + 1 :]
    return printed[: len(head)] == head and printed[len(printed) - len(tail) :] == tail


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        "backprop train configs/iris.yaml | head -2",
        "backprop train configs/iris.yaml -q && backprop evaluate latest",
        "backprop sweep configs/xor.yaml --grid model.activation=sigmoid,tanh --seeds 0:30",
        "backprop train configs/xor.yaml --seeds 0:30 --target 0.05",
        "backprop train configs/deep_sigmoid.yaml -q && backprop diagnose latest",
        "backprop train configs/deep_sigmoid.yaml --set model.activation=relu --set model.init=he -q && "
        "backprop diagnose latest | tail -1",
        "backprop train configs/dead_relu.yaml -q && backprop diagnose latest | tail -4",
        "backprop train configs/lr_too_high.yaml -q && backprop diagnose latest | tail -3",
        "backprop train configs/lr_too_high.yaml --lr 0.1 | tail -3",
    ],
)
def test_console_examples_print_what_the_readme_shows(shell, command):
    shown = _example(command)
    printed = shell(command)
    if command.endswith("--target 0.05"):  # the README shows the summary line only
        printed = [line for line in printed if "seeds reached" in line]
    assert _matches(shown, printed), "\n".join(printed)


@pytest.mark.slow
def test_the_predict_example(shell):
    shell("backprop train configs/xor.yaml -q")
    shown = _example("printf '0\\n1\\n' | backprop predict")
    assert _matches(shown, shell("printf '0\\n1\\n' | backprop predict"))


def _block(after: str, kind: str) -> str:
    """The first ```kind block after the text `after`."""
    start = README.index(f"```{kind}\n", README.index(after)) + len(f"```{kind}\n")
    return README[start : README.index("```", start)]


@pytest.mark.slow
def test_taking_a_network_elsewhere(shell, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("safetensors")
    section = "## Taking a network elsewhere"
    commands = [line[2:] for line in _block(section, "console").splitlines() if line.startswith("$ ")]
    for command in commands:
        shown = _example(command)
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                              env={"PATH": f"{sys.executable.rsplit('/', 1)[0]}:/usr/bin:/bin"})  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == shown, command  # the "wrote ..." lines are on stderr
    # the onnxruntime lines print what the README shows
    (tmp_path / "use.py").write_text(_block(section, "python"))
    done = subprocess.run([sys.executable, "use.py"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == _block("print(probabilities.round(4).tolist())", "text")
    # the PyTorch lines are the ones the command printed (run in PyTorch where it is installed)
    torch_lines = _block("`iris_torch.py` from above", "python")
    assert (tmp_path / "iris_torch.py").read_text() == torch_lines
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    done = subprocess.run([sys.executable, "-c", torch_lines + "\nprint(predict([[5.1, 3.5, 1.4, 0.2]]))"],
                          cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_init_from_example(shell, tmp_path):
    pytest.importorskip("onnx")
    shell("backprop train configs/iris.yaml -q && backprop export latest --format npz --output iris.npz 2>/dev/null")
    block = _block("**Bringing one in.**", "console").splitlines()
    command, shown = block[0][2:], block[1]
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": f"{sys.executable.rsplit('/', 1)[0]}:/usr/bin:/bin", "PWD": str(tmp_path)})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == shown.replace("/home/me", str(tmp_path))
