"""--live without a browser: the page's controls as the loop takes them (pause, step, stop, a
rate change from the next epoch, saved so the config replays bit for bit), and the server's
guards (the token, run folders found by name inside the root only, bad controls)."""

import http.client
import json
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from conftest import XOR_YAML

from backprop_cli.api import config as make_config
from backprop_cli.api import train_run
from backprop_cli.experiment import dataset
from backprop_cli.live import CURVE_POINTS, ControlError, Live, _Curves
from backprop_cli.server import Server


def _progress(on_epoch):
    """A progress display whose callback runs `on_epoch` before the live page's callback."""

    def progress(epochs, start, label):
        @contextmanager
        def shown():
            yield on_epoch

        return shown()

    return progress


def _live(cfg, **kwargs):
    live = Live(cfg, dataset(cfg, "config"), **kwargs)
    live.wait = False  # no page connects in these tests
    return live


def _history(run: Path) -> list[dict]:
    import csv

    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_a_rate_change_takes_effect_from_the_next_epoch_and_the_saved_config_replays_it(tmp_path, write_config, cli):
    cfg = make_config(write_config(XOR_YAML))
    live = _live(cfg)

    def page(epoch, loss, seen):
        if epoch == 50:  # while epoch 50 ends, the page asks for rate 2
            live.control("rate", 2.0)

    trained = train_run(cfg, dataset(cfg, "config"), tmp_path / "runs", _progress(page), live=live)
    run = trained.run
    rates = [float(r["learning_rate"]) for r in _history(run)]
    assert rates == [0.1] * 50 + [2.0] * 150
    assert json.loads((run / "summary.json").read_text())["lr_changes"] == [{"epoch": 51, "learning_rate": 2.0}]
    assert "lr_changes:\n    51: 2.0\n" in (run / "config.yaml").read_text()
    assert not (run / "live.json").exists()  # the page's address goes with the page
    again = cli("train", run / "config.yaml", "--runs-dir", tmp_path / "again", "-q")
    assert again.exit_code == 0, again.output
    replay = next((tmp_path / "again").iterdir())
    assert (replay / "weights.json").read_bytes() == (run / "weights.json").read_bytes()
    assert (replay / "history.csv").read_bytes() == (run / "history.csv").read_bytes()


def _wait(live, predicate):
    with live.cond:
        assert live.cond.wait_for(predicate, timeout=30), (live.status, live.epoch)


def test_pause_step_and_stop(tmp_path, write_config):
    cfg = make_config(write_config(XOR_YAML.replace("epochs: 200", "epochs: 100000")))
    live = _live(cfg, paused=True)
    seen, held = [], []
    live.on_hold = held.append  # the progress bar hears pauses and resumes

    def steer():
        _wait(live, lambda: live.status == "paused" and live.epoch == 0)
        live.control("step")
        _wait(live, lambda: live.status == "paused" and live.epoch == 1)
        live.control("step", 5)
        _wait(live, lambda: live.status == "paused" and live.epoch == 6)
        live.control("rate", 0.5)  # while paused: from epoch 7 on
        live.control("resume")
        _wait(live, lambda: live.status == "running" and live.epoch > 6)
        live.control("pause")
        _wait(live, lambda: live.status == "paused")
        seen.append(live.epoch)
        live.control("step")
        _wait(live, lambda: live.status == "paused" and live.epoch == seen[0] + 1)
        live.control("stop")

    controller = threading.Thread(target=steer)
    controller.start()
    trained = train_run(cfg, dataset(cfg, "config"), tmp_path / "runs", live=live)
    controller.join()
    assert trained.result.status == ["interrupted"]
    assert trained.result.epochs_run == [seen[0] + 1]  # paused there, one step, then stopped
    rows = _history(trained.run)
    assert len(rows) == seen[0] + 1
    assert [float(r["learning_rate"]) for r in rows[:8]] == [0.1] * 6 + [0.5] * 2
    summary = json.loads((trained.run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["lr_changes"] == [{"epoch": 7, "learning_rate": 0.5}]
    assert live.finished and json.loads(live.message)["status"] == "interrupted"
    assert held[:2] == [True, False] and held.count(True) == held.count(False) + (held[-1] is True)


def test_a_stop_before_the_first_epoch_leaves_no_run_and_tells_the_page(tmp_path, write_config):
    cfg = make_config(write_config(XOR_YAML))
    live = _live(cfg, paused=True)
    threading.Thread(target=lambda: (_wait(live, lambda: live.status == "paused"), live.control("stop"))).start()
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, dataset(cfg, "config"), tmp_path / "runs", live=live)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    last = json.loads(live.message)  # and the page says so
    assert live.finished and last["status"] == "stopped"
    assert last["note"] == "Stopped before the first epoch: nothing was trained."


@pytest.mark.parametrize(
    ("action", "value", "message"),
    [
        ("rate", -1.0, "rate: a learning rate is a finite number > 0"),
        ("rate", float("inf"), "rate: a learning rate is a finite number > 0"),
        ("rate", True, "rate: a learning rate is a finite number > 0"),
        ("step", 0, "step: a whole number of epochs from 1 to 1,000,000"),
        ("step", 2.5, "step: a whole number of epochs from 1 to 1,000,000"),
        ("delay", 5, "delay: seconds per epoch from 0 to 2"),
        ("select", 1, "select: a model from 0 to 0"),
        ("explode", None, "unknown action 'explode' (valid: pause, resume, step, stop, rate, delay, select)"),
    ],
)
def test_bad_controls_are_refused(write_config, action, value, message):
    live = _live(make_config(write_config(XOR_YAML)))
    with pytest.raises(ControlError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        live.control(action, value)
    assert live.commands == []


def test_a_sweeps_rates_are_not_the_pages_to_change(write_config):
    cfg = make_config(write_config(XOR_YAML))
    live = _live(cfg, rates=[0.1, 0.5], labels=["lr 0.1", "lr 0.5"])
    with pytest.raises(ControlError, match="^rate: each model of a sweep trains at its own rate$"):
        live.control("rate", 1.0)
    live.control("select", 1)  # but the page may look at either model
    assert live.meta["labels"] == ["lr 0.1", "lr 0.5"] and live.meta["steer_rate"] is False


def test_curves_stay_small_and_evenly_spaced():
    curves = _Curves(["loss"])
    for start in range(1, 20001, 1000):
        values = np.arange(start, start + 1000, dtype=float).reshape(-1, 1)
        curves.add(start, 1000, lambda at, values=values: {"loss": values[at]})
    assert len(curves.epochs) <= CURVE_POINTS
    steps = np.diff(curves.epochs)
    assert curves.stride > 1 and set(steps.tolist()) == {curves.stride}
    assert curves.values["loss"][:, 0].tolist() == curves.epochs.tolist()  # each point is its own epoch's
    sent = curves.tail()
    assert sent["reset"] and sent["epochs"] == [round(v[0]) for v in sent["values"]["loss"]]


def test_numbers_are_sent_in_six_significant_digits():
    from backprop_cli.live import _round

    values = [0.1 + 0.2, 1 / 3, 123456789.0, -2.5e-12, 0.0, float("nan"), float("inf")]
    assert _round(values) == [0.3, 0.333333, 123457000.0, -2.5e-12, 0.0, None, None]
    assert json.dumps(_round([[1 / 7, 2 / 7]])) == "[[0.142857, 0.285714]]"


# -- the server ---------------------------------------------------------------------------


def _request(server, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read().decode("utf-8", "replace")


@pytest.fixture
def live_server(write_config):
    cfg = make_config(write_config(XOR_YAML))
    live = _live(cfg)
    server = Server(live=live).start()
    yield server, live
    live.end("completed")
    server.close()


def test_every_request_needs_the_token(live_server):
    server, _ = live_server
    token = urlsplit(server.url).query.split("=", 1)[1]
    for path in ("/", "/static/live.js", "/api/meta", "/api/events"):
        assert _request(server, "GET", path)[0] == 403
        assert _request(server, "GET", path + "?token=wrong")[0] == 403
    status, page = _request(server, "GET", f"/?token={token}")
    assert status == 200 and f"/static/live.js?token={token}" in page
    assert _request(server, "POST", "/api/control", json.dumps({"action": "pause"}))[0] == 403
    status, _ = _request(server, "POST", "/api/control", json.dumps({"action": "pause"}), {"X-Backprop-Token": token})
    assert status == 200
    assert server.url.startswith("http://127.0.0.1:")


def test_bad_control_requests_are_400_with_the_reason(live_server):
    server, live = live_server
    headers = {"X-Backprop-Token": server.token}
    status, body = _request(server, "POST", "/api/control", json.dumps({"action": "rate", "value": "fast"}), headers)
    assert status == 400 and json.loads(body) == {"error": "rate: a learning rate is a finite number > 0"}
    status, body = _request(server, "POST", "/api/control", "{not json", headers)
    assert status == 400 and "error" in json.loads(body)
    assert _request(server, "POST", "/api/control", "x" * 5000, headers)[0] == 400
    assert _request(server, "POST", "/api/control", "[]", headers)[0] == 400
    assert live.commands == []


def test_serve_shows_only_run_folders_inside_the_root(tmp_path, write_config, cli):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "-q").exit_code == 0
    run = next(root.iterdir())
    named = root / "a<b>&c"  # a folder renamed by hand: its name is text on the page
    shutil.copytree(run, named)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "summary.json").write_text('{"status": "completed", "name": "secret"}')
    (outside / "config.yaml").write_text("top secret")
    (root / "link").symlink_to(outside)
    server = Server(root=root).start()
    try:
        token = server.token
        status, index = _request(server, "GET", f"/?token={token}")
        assert status == 200 and "a&lt;b&gt;&amp;c" in index and "a<b>" not in index
        assert "secret" not in index  # the symlink out of the root is not listed
        status, page = _request(server, "GET", f"/run/{run.name}?token={token}")
        assert status == 200 and "Final weights" in page
        for path in (
            "/run/link",
            "/run/%2e%2e/secret",
            "/run/..%2Fsecret",
            f"/run/{run.name}%2F..%2F..%2Fsecret",
            "/run/%2Ftmp",
            "/run/",
            "/static/../server.py",
            "/static/index.html%00",
            "/run/nope",
        ):
            status, body = _request(server, "GET", f"{path}?token={token}")
            assert status == 404, path
            assert "top secret" not in body
        assert _request(server, "GET", f"/run/{run.name}")[0] == 403
    finally:
        server.close()


def test_the_options_go_with_live(tmp_path, write_config, cli):
    path = write_config(XOR_YAML)
    for flags, message in (
        (["--paused"], "--paused goes with --live"),
        (["--port", "8000"], "--port goes with --live"),
        (["--open"], "--open goes with --live"),
        (["--live", "--seeds", "0:2"], "--live goes with a single run (or sweep-lr)"),
    ):
        result = cli("train", path, "--runs-dir", tmp_path, *flags)
        assert result.exit_code == 2, flags
        assert message in result.output
    result = cli("sweep-lr", path, "--live", "--chain", "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "--live shows a batched sweep, not --chain" in result.output
    result = cli("serve", tmp_path / "nothing")
    assert result.exit_code == 2 and "nothing: no such folder" in result.output


def test_ctrl_c_ends_a_live_run_as_interrupted_and_the_page_hears_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import CONFIGS

    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    argv = [sys.executable, "-m", "backprop_cli", "train", str(CONFIGS / "xor.yaml"), "--epochs", "10000000"]
    child = subprocess.Popen(
        argv + ["--live", "--runs-dir", str(tmp_path / "runs")], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    url = urlsplit(child.stderr.readline().split()[1])  # the readiness line: "live: URL ..."
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request("GET", f"/api/events?{url.query}")
    stream = connection.getresponse()
    assert stream.status == 200
    last, sent_signal = None, False
    for line in stream:
        if line.startswith(b'data: {"epoch"'):
            last = json.loads(line[6:])
            if last["epoch"] > 0 and not sent_signal:
                child.send_signal(signal.SIGINT)  # training has started: Ctrl-C
                sent_signal = True
        if line.startswith(b"event: end"):
            break
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert last is not None and last["status"] == "interrupted"
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] == last["epoch"]
    assert "Traceback" not in err and not (run / "live.json").exists()


def test_serve_links_a_run_training_live(tmp_path, write_config, cli):
    import stat

    from backprop_cli.run_folders import mark_live

    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "-q").exit_code == 0
    run = next(root.iterdir())
    mark_live(run, "http://127.0.0.1:4321/?token=abc")
    assert stat.S_IMODE((run / "live.json").stat().st_mode) == 0o600  # its token is its owner's
    server = Server(root=root).start()
    try:
        _, index = _request(server, "GET", f"/?token={server.token}")
        assert 'href="http://127.0.0.1:4321/?token=abc">watch live</a>' in index
        _, page = _request(server, "GET", f"/run/{run.name}?token={server.token}")
        assert "watch it train, live" in page
        mark_live(run, None)
        _, index = _request(server, "GET", f"/?token={server.token}")
        assert "watch live" not in index
    finally:
        server.close()


def test_hostile_control_requests_are_refused_and_nothing_is_applied(live_server):
    import socket

    server, live = live_server
    headers = {"X-Backprop-Token": server.token}
    deep = '{"action": "pause", "value": ' + "[" * 2000 + "]" * 2000 + "}"
    status, body = _request(server, "POST", "/api/control", deep[:4000] if len(deep) > 4096 else deep, headers)
    assert status == 400 and "nests at most 8 deep" in json.loads(body)["error"]
    # a body shorter than announced, then the connection closed: not taken for the control
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(
            f"POST /api/control?token={server.token} HTTP/1.0\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"action":"pause"}'
        )
        raw.shutdown(socket.SHUT_WR)
        answer = raw.makefile("rb").read().decode()
    assert answer.startswith("HTTP/1.0 400") and "a control of 100 bytes was announced and 18 came" in answer
    assert live.commands == []
    assert _request(server, "HEAD", f"/?token={server.token}")[0] == 405
    assert _request(server, "OPTIONS", "/")[0] == 403


def test_serve_answers_a_name_too_long_with_404_and_lists_a_linked_run_once(tmp_path, write_config, cli):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "-q").exit_code == 0
    run = next(root.iterdir())
    (root / "alias").symlink_to(run)
    server = Server(root=root).start()
    try:
        status, body = _request(server, "GET", "/run/" + "a" * 5000 + f"?token={server.token}")
        assert status == 404 and str(tmp_path) not in body
        _, index = _request(server, "GET", f"/?token={server.token}")
        assert index.count("<tr><td") == 1 and "alias" not in index
    finally:
        server.close()


def test_one_rate_per_layer_is_not_the_pages_to_change(write_config):
    live = _live(make_config(write_config(XOR_YAML.replace("learning_rate: 0.1", "learning_rate: [0.1, 0.5]"))))
    with pytest.raises(ControlError, match="one rate per layer"):
        live.control("rate", 1.0)


def test_a_page_that_skips_snapshots_still_gets_every_curve_point(tmp_path, write_config):
    cfg = make_config(write_config(XOR_YAML.replace("epochs: 200", "epochs: 3000")))
    live = _live(cfg)
    pages = {"early": [-1, 0, []], "late": [-1, 0, []]}  # generation, points had, what came

    def read(name):
        page = pages[name]
        with live.cond:
            data, page[0], page[1] = live.curves_since(page[0], page[1])
        if data is not None:
            part = json.loads(data)["curves"]
            page[2] = part["epochs"] if part["reset"] else page[2] + part["epochs"]

    def page(epoch, loss, seen):
        if epoch % 97 == 0:
            read("early")  # reads often; "late" reads only at the end

    train_run(cfg, dataset(cfg, "config"), tmp_path / "runs", _progress(page), live=live)
    read("early")
    read("late")
    assert pages["early"][2] == pages["late"][2] == live.curves.epochs.tolist()
    assert live.curves.epochs[-1] == 3000 - (3000 - 1) % live.curves.stride


def test_the_time_a_page_holds_the_loop_is_not_the_loops(tmp_path, write_config):
    import time

    cfg = make_config(write_config(XOR_YAML))
    live = _live(cfg)

    def page(epoch, loss, seen):
        if epoch == 5:
            live.control("pause")

    def resume_later():
        _wait(live, lambda: live.status == "paused")
        time.sleep(0.5)  # what is measured: half a second held at the page
        live.control("resume")

    threading.Thread(target=resume_later).start()
    trained = train_run(cfg, dataset(cfg, "config"), tmp_path / "runs", _progress(page), live=live)
    assert live.held >= 0.5
    assert json.loads((trained.run / "summary.json").read_text())["duration_s"] < 0.4  # 200 epochs of XOR


def test_pages_beyond_the_limit_are_told_to_come_back(live_server, monkeypatch):
    import backprop_cli.server as server_module

    server, _ = live_server
    monkeypatch.setattr(server_module, "MAX_STREAMS", 1)
    first = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    first.request("GET", f"/api/events?token={server.token}")
    assert first.getresponse().status == 200  # listening, and counted
    status, body = _request(server, "GET", f"/api/events?token={server.token}")
    assert status == 503 and "1 pages are watching already" in body
    first.close()


def test_a_paused_bar_keeps_every_column_at_80_columns(monkeypatch):
    """A pause from the page is said on the numbers' line: as '(paused)' after the label it
    pushed the bar's line past 80 columns and cut the elapsed and remaining times."""
    import io

    from rich.console import Console

    from backprop_cli.cli import display

    screen = io.StringIO()
    monkeypatch.setattr(display, "out", Console(file=screen, force_terminal=True, width=80, color_system=None))
    with display.Reporter(3_000_000) as reporter:
        reporter(130_528, np.array([0.000203702]))
        reporter.hold(True)
        reporter.progress.refresh()
        paused = screen.getvalue().rsplit("\r", 1)[-1]
        reporter.hold(False)
        reporter.last = 0.0  # past the 0.1 s between redraws
        reporter(130_529, np.array([0.000203701]))
        reporter.progress.refresh()
    resumed = screen.getvalue().rsplit("paused", 1)[-1]
    assert "…" not in paused and "epoch 130528/3000000" in paused and "eta" in paused, paused
    assert "paused from the live page; loss 0.000203702" in paused, paused
    assert "loss 0.000203701" in resumed and "paused from" not in resumed, resumed
