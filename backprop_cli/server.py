"""The local web server of `--live` and `backprop serve`: the standard library's threaded
HTTP server, a page and its script shipped in the package (nothing fetched from the
network), server-sent events for the live snapshots.

Every request carries the random token of the printed URL (as a `token` query parameter or
an `X-Backprop-Token` header), else 403: another local user cannot read or steer the run.
`serve` shows only run and study folders inside its runs root, found by name (no `..`, no
encoded slashes, nothing a symlink leads out of the root to): anything else is 404.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import threading
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit

from backprop_cli.errors import BackpropError
from backprop_cli.live import ControlError, Live

STATIC = {"live.js": "text/javascript", "live.css": "text/css"}  # the files under templates/live
HEARTBEAT_S = 15.0  # a comment line on an idle stream, so a dead page is noticed
MAX_BODY = 4096  # a control request's JSON, at most
LIVE_FILE = "live.json"  # in a run folder while it trains with --live: its page's address


def _asset(name: str) -> bytes:
    return (resources.files("backprop_cli") / "templates" / "live" / name).read_bytes()


class Server:
    """A server on host:port (port 0: a free one) for a live run (`live`) and/or the run
    folders under `root`; `url` carries the token."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, live: Optional[Live] = None, root: Optional[Path] = None
    ):
        self.live, self.root = live, Path(root).resolve() if root is not None else None
        self.token = secrets.token_urlsafe(24)
        self.streams = 0  # pages listening now
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"app": self})
        kind = type(
            "HTTPServer", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET}
        )
        try:
            self.httpd = kind((host, port), handler)
        except (OSError, OverflowError) as e:  # a taken port, a host not this machine's, a port > 65535
            raise ServerError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        # shutdown() waits for the loop to look again: every 0.02 s, not the default 0.5 s
        serve = lambda: self.httpd.serve_forever(poll_interval=0.02)  # noqa: E731
        self.thread = threading.Thread(target=serve, name="backprop-server", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def start(self) -> Server:
        self.thread.start()
        return self

    def close(self, linger: float = 2.0) -> None:
        """Stop serving, after giving the pages' streams up to `linger` seconds to send their
        last snapshot and the end."""
        if self.live is not None:
            live = self.live
            with live.cond:
                live.finished = True
                live.cond.notify_all()
                live.cond.wait_for(lambda: self.streams == 0, timeout=linger)
        self.httpd.shutdown()
        self.httpd.server_close()


class ServerError(BackpropError):
    """The server could not start (the port is taken, the host is not this machine's)."""


def _folder(root: Path, parts: list[str]) -> Optional[Path]:
    """The run or study folder a URL's path segments (still %-encoded) name under root, or
    None: a segment that decodes to nothing, `.`, `..` or holds a slash or NUL, a folder
    outside root once symlinks are resolved, or one that is not backprop's."""
    names = [unquote(p) for p in parts]
    if not names or any(n in ("", ".", "..") or "/" in n or "\\" in n or "\0" in n for n in names):
        return None
    path = Path(os.path.realpath(root.joinpath(*names)))
    if root not in path.parents or not path.is_dir() or not (path / "summary.json").is_file():
        return None
    return path


class _Handler(BaseHTTPRequestHandler):
    app: Server
    server_version = "backprop"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # no request log on the terminal
        pass

    # -- plumbing ---------------------------------------------------------------------

    def _send(self, status: int, body: bytes, kind: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        )
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, text: str) -> None:
        self._send(status, f"{status.value} {status.phrase}: {text}\n".encode(), "text/plain; charset=utf-8")

    def _authorized(self, query: dict) -> bool:
        given = self.headers.get("X-Backprop-Token") or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.app.token.encode())

    def _route(self) -> tuple[list[str], dict] | None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._authorized(query):
            self._error(HTTPStatus.FORBIDDEN, "this page needs the token of the address backprop printed")
            return None
        return [p for p in url.path.split("/")[1:]], query

    # -- requests ---------------------------------------------------------------------

    def do_GET(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, query = routed
        live, root = self.app.live, self.app.root
        try:
            if parts in ([""], []):
                if live is not None:
                    page = _asset("index.html").replace(b"__TOKEN__", self.app.token.encode())
                    return self._send(HTTPStatus.OK, page)
                return self._send(HTTPStatus.OK, _index(root, self.app.token).encode())
            if parts[0] == "static" and len(parts) == 2 and parts[1] in STATIC:
                return self._send(HTTPStatus.OK, _asset(parts[1]), STATIC[parts[1]])
            if live is not None and parts == ["api", "meta"]:
                return self._send(HTTPStatus.OK, json.dumps(live.meta).encode(), "application/json")
            if live is not None and parts == ["api", "events"]:
                return self._events(live)
            if root is not None and parts[0] == "run" and len(parts) > 1:
                folder = _folder(root, parts[1:])
                if folder is not None:
                    return self._send(HTTPStatus.OK, _run_page(folder, root, self.app.token).encode())
        except (BackpropError, OSError) as e:
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(e))
        self._error(HTTPStatus.NOT_FOUND, "no such page")

    def do_POST(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, _ = routed
        live = self.app.live
        if live is None or parts != ["api", "control"]:
            return self._error(HTTPStatus.NOT_FOUND, "no such page")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return self._error(HTTPStatus.BAD_REQUEST, f"a control is a JSON object of at most {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict) or not isinstance(body.get("action"), str):
                raise ControlError('a control is {"action": ..., "value": ...}')
            live.control(body["action"], body.get("value"))
        except (ValueError, ControlError) as e:  # JSON's errors are ValueErrors too
            return self._send(HTTPStatus.BAD_REQUEST, json.dumps({"error": str(e)}).encode(), "application/json")
        self._send(HTTPStatus.OK, b'{"ok":true}', "application/json")

    def _events(self, live: Live) -> None:
        """Server-sent events: the curves so far, then each snapshot as it is published (a
        page that falls behind gets the latest, never a queue), and `end` when training ends."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        app = self.app
        with live.cond:
            app.streams += 1
        live.connected.set()
        try:
            version, curves, message = live.page_state()
            self.wfile.write(b"event: curves\ndata: " + curves + b"\n\n")
            if message:
                self.wfile.write(b"data: " + message + b"\n\n")
            self.wfile.flush()
            while True:
                with live.cond:
                    seen = version
                    live.cond.wait_for(lambda: live.version != seen or live.finished, timeout=HEARTBEAT_S)  # noqa: B023
                    fresh, message, done = live.version != version, live.message, live.finished
                    version = live.version
                if fresh:
                    self.wfile.write(b"data: " + message + b"\n\n")
                else:
                    self.wfile.write(b": still here\n\n")
                if done:  # the snapshot read with it is the last one
                    self.wfile.write(b"event: end\ndata: {}\n\n")
                    self.wfile.flush()
                    return
                self.wfile.flush()
        except OSError:  # the page went away
            pass
        finally:
            with live.cond:
                app.streams -= 1
                live.cond.notify_all()


# -- backprop serve's pages -------------------------------------------------------------

PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/static/live.css?token={token}"></head>
<body class="serve"><header><h1>{title}</h1><p class="meta">{meta}</p></header><main>{body}</main></body></html>
"""


def _link(root: Path, folder: Path, token: str) -> str:
    rel = "/".join(quote(p, safe="") for p in folder.relative_to(root).parts)
    return f"/run/{rel}?token={quote(token)}"


def _index(root: Optional[Path], token: str) -> str:
    from backprop_cli.metrics import metric_text
    from backprop_cli.run_folders import list_runs, status_of

    assert root is not None
    rows = []
    for path, summary in list_runs(root, studies=True):
        if _folder(root, [quote(path.name, safe="")]) is None:  # a symlink out of the root
            continue
        status = status_of(summary) if summary.get("status") != "corrupt" else "corrupt"
        live = _live_link(path)
        watch = f' <a class="watch" href="{escape(live)}">watch live</a>' if live else ""
        loss = summary.get("final_loss")
        rows.append(
            f"<tr><td class='text'><a href='{escape(_link(root, path, token))}'>{escape(path.name)}</a>{watch}</td>"
            f"<td class='text'>{escape(str(summary.get('kind', 'run')))}</td>"
            f"<td class='text status-{escape(status)}'>{escape(status)}</td>"
            f"<td>{escape(str(summary.get('epochs_run', '')))}</td>"
            f"<td>{escape(metric_text('loss', loss) if isinstance(loss, (int, float)) else '')}</td>"
            f"<td class='text'>{escape(str(summary.get('started_at', '')))}</td></tr>"
        )
    head = "<tr><th class='text'>name</th><th class='text'>kind</th><th class='text'>status</th><th>epochs</th><th>final loss</th><th class='text'>started</th></tr>"
    body = f"<table>{head}{''.join(rows)}</table>" if rows else "<p>No runs here yet: backprop train CONFIG</p>"
    return PAGE.format(title="backprop runs", token=escape(token), meta=escape(str(root)), body=body)


def _live_link(folder: Path) -> Optional[str]:
    """The address of a run's live page while it trains with --live (from its live.json)."""
    path = folder / LIVE_FILE
    try:
        if not path.is_file() or path.stat().st_size > 4096:
            return None
        url = json.loads(path.read_text(encoding="utf-8")).get("url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) and url.startswith("http://127.0.0.1:") else None


def _run_page(folder: Path, root: Path, token: str) -> str:
    """A run's or study's report (report.html's page, built now), with a way back."""
    from backprop_cli.report import build_report

    page = build_report(folder)
    back = f"<p class='meta'><a href='/?token={escape(quote(token))}'>all runs</a>"
    live = _live_link(folder)
    if live:
        back += f" &middot; <a href='{escape(live)}'>watch it train, live</a>"
    page = page.replace("<head>", '<head><link rel="icon" href="data:,">', 1)  # no request without the token
    return page.replace("<body>", "<body>" + back + "</p>", 1)
