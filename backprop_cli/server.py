"""The local web server of `--live` and `backprop serve`: the standard library's threaded
HTTP server, a page and its script shipped in the package (nothing fetched from the
network), server-sent events for the live snapshots.

Every request carries the random token of the printed URL (as a `token` query parameter or
an `X-Backprop-Token` header), else 403: another local user cannot read or steer the run.
`serve` shows only run and study folders inside its runs root, found by name (no `..`, no
encoded slashes, nothing a symlink leads out of the root to): anything else is 404.
"""

from __future__ import annotations

import errno
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
from backprop_cli.run_folders.write import LIVE_FILE

STATIC = {"live.js": "text/javascript", "live.css": "text/css"}  # the files under templates/live
HEARTBEAT_S = 15.0  # a comment line on an idle stream, so a dead page is noticed
MAX_BODY = 4096  # a control request's JSON, at most
MAX_DEPTH = 8  # a control's JSON nesting, at most (Python's parser recurses per level)
READ_TIMEOUT_S = 10.0  # a request that does not arrive whole by then is dropped
BACKLOG = 128  # connections waiting to be accepted: a classroom's pages connecting at once
MAX_STREAMS = 100  # pages listening at once (each holds a thread); more are told to come back


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
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = type("HTTPServer", (_Quiet,), {"address_family": family, "request_queue_size": BACKLOG})
        try:
            self.httpd = kind((host, port), handler)
        except (OSError, OverflowError) as e:  # a taken port, a host not this machine's, a port > 65535
            cause = getattr(e, "strerror", None) or e
            hint = " (another --port, or 0 for a free one)" if getattr(e, "errno", None) == errno.EADDRINUSE else ""
            raise ServerError(f"cannot listen on {host}:{port}: {cause}{hint}") from None
        self.httpd.daemon_threads = True
        self.httpd.timeout = 0.02  # how often the loop looks whether to stop
        self.host, self.port = host, self.httpd.server_address[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="backprop-server", daemon=True)

    def _serve(self) -> None:
        # one request at a time until told to stop: unlike serve_forever's shutdown(), stopping
        # cannot wait forever on a loop that never started
        while not self.stopping.is_set():
            self.httpd.handle_request()

    @property
    def url(self) -> str:
        """The page's address, token included: for a server on every interface (0.0.0.0),
        with this machine's name, which other machines can reach."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
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
        self.stopping.set()
        self.thread.join(timeout=1.0)
        self.httpd.server_close()


class _Quiet(ThreadingHTTPServer):
    """Nothing on the terminal for a request that failed (a page gone mid-answer, a request
    cut short): the trainer's progress stays readable, and the page hears what it needs."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class ServerError(BackpropError):
    """The server could not start (the port is taken, the host is not this machine's)."""


def _folder(root: Path, parts: list[str]) -> Optional[Path]:
    """The run or study folder a URL's path segments (still %-encoded) name under root, or
    None: a segment that decodes to nothing, `.`, `..` or holds a slash or NUL, a folder
    outside root once symlinks are resolved, or one that is not backprop's."""
    names = [unquote(p) for p in parts]
    if not names or any(n in ("", ".", "..") or "/" in n or "\\" in n or "\0" in n for n in names):
        return None
    try:
        path = Path(os.path.realpath(root.joinpath(*names)))
        if root not in path.parents or not path.is_dir() or not (path / "summary.json").is_file():
            return None
    except OSError:  # a name too long for the file system, a loop of links: no such page
        return None
    return path


class _Handler(BaseHTTPRequestHandler):
    app: Server
    server_version = "backprop"
    sys_version = ""
    timeout = READ_TIMEOUT_S

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
        try:
            self.wfile.write(body)
        except OSError:  # the page went away before its answer
            pass

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
            data = self.rfile.read(length)
        except OSError:  # nothing more came within READ_TIMEOUT_S, or the connection broke
            return None
        try:
            if len(data) != length:  # cut short: not the control that was sent
                raise ControlError(f"a control of {length} bytes was announced and {len(data)} came")
            if _depth(data) > MAX_DEPTH:
                raise ControlError(f"a control's JSON nests at most {MAX_DEPTH} deep")
            body = json.loads(data)
            if not isinstance(body, dict) or not isinstance(body.get("action"), str):
                raise ControlError('a control is {"action": ..., "value": ...}')
            live.control(body["action"], body.get("value"))
        except (ValueError, ControlError) as e:  # JSON's errors are ValueErrors too
            return self._send(HTTPStatus.BAD_REQUEST, json.dumps({"error": str(e)}).encode(), "application/json")
        self._send(HTTPStatus.OK, b'{"ok":true}', "application/json")

    def _refuse(self) -> None:
        """Any other method: 405 (after the token, as every request)."""
        if self._route() is not None:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "this server answers GET and POST only")

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _events(self, live: Live) -> None:
        """Server-sent events: the curve points this page lacks, then each snapshot as it is
        published (a page that falls behind gets the latest, never a queue, and the points it
        missed with it), and `end` when training ends."""
        app = self.app
        with live.cond:
            full = app.streams >= MAX_STREAMS
            app.streams += 0 if full else 1
        if full:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{MAX_STREAMS} pages are watching already")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        live.connected.set()
        try:
            version, generation, sent, first = -1, -1, 0, True
            while True:
                with live.cond:
                    if not first:
                        seen = version
                        live.cond.wait_for(lambda: live.version != seen or live.finished, timeout=HEARTBEAT_S)  # noqa: B023
                    fresh, message, done = live.version != version, live.message, live.finished
                    version = live.version
                    curves, generation, sent = live.curves_since(generation, sent)
                first = False
                if curves is not None:  # the new points first, then the snapshot they lead to
                    self.wfile.write(b"event: curves\ndata: " + curves + b"\n\n")
                if fresh and message:
                    self.wfile.write(b"data: " + message + b"\n\n")
                elif not fresh:
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


def _depth(data: bytes) -> int:
    """How deep brackets nest in JSON text (strings' contents aside), without parsing it."""
    depth = deepest = 0
    quoted = escaped = False
    for byte in data:
        if quoted:
            escaped, quoted = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            quoted = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


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
        if path.is_symlink():  # a run is listed once, by its own folder; one outside is not served
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
    return url if isinstance(url, str) and url.startswith("http://") else None


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
