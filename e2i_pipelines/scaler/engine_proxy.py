"""Read-only HTTP proxy to the Docker engine's Unix socket, for processes that must not hold it.

The scaler sensor runs in the compose stack's code server, which has no Docker socket. It reads
the engine through this proxy (``DOCKER_HOST=tcp://engine-proxy:2375``): only GET/HEAD of
``/_ping``, ``/version``, ``/info``, ``/containers/json``, ``/containers/{id}/json`` and
``/containers/{id}/stats`` (optionally behind ``/vX.YY``) are forwarded; anything else gets 403
with a JSON ``message`` saying why. Paths are matched as sent (no dot segments, no percent
escapes), so ``/containers/json/../create`` is refused. Container inspections are returned without
``Config.Env``: the stack's containers carry its secrets there.

    python -m e2i_pipelines.scaler.engine_proxy --listen 0.0.0.0:2375 --socket /var/run/docker.sock
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ALLOWED_PATH = re.compile(
    r"(?:/v\d+\.\d+)?(?:/_ping|/version|/info|/containers/json"
    r"|/containers/[A-Za-z0-9][A-Za-z0-9_.-]*/(?P<what>json|stats))"
)
"""Engine paths the proxy forwards (whole path, as sent)."""
ALLOWED_TEXT = ("/_ping, /version, /info, /containers/json, /containers/{id}/json, "
                "/containers/{id}/stats")
READ_METHODS = frozenset({"GET", "HEAD"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})
"""Response headers the proxy sets itself."""
FORWARDED_REQUEST_HEADERS = ("Accept", "User-Agent")
MAX_DRAINED_BYTES = 1 << 20


def refusal(method: str, target: str) -> str | None:
    """Why ``method target`` is not forwarded (None when it is)."""
    if method not in READ_METHODS:
        return f"{method} {target} refused: the engine proxy is read-only (GET and HEAD only)"
    if not target.startswith("/") or not ALLOWED_PATH.fullmatch(urlsplit(target).path):
        return f"{method} {target} refused: not on the engine proxy's allowlist ({ALLOWED_TEXT})"
    return None


def without_env(inspection: bytes) -> bytes:
    """A container inspection (JSON) with ``Config.Env`` emptied."""
    attrs = json.loads(inspection)
    if isinstance(attrs.get("Config"), dict):
        attrs["Config"]["Env"] = []
    return json.dumps(attrs).encode()


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the engine's Unix socket."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class EngineProxyHandler(BaseHTTPRequestHandler):
    """Forwards allowed reads, refuses the rest; one request per connection. Answers are
    HTTP/1.1 so a stream of unknown length goes out chunked (docker-py reads streams only so)."""

    server: EngineProxy
    protocol_version = "HTTP/1.1"

    def end_headers(self) -> None:
        self.send_header("Connection", "close")
        self.close_connection = True
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        reason = refusal(self.command, self.path)
        if reason:
            self.send_json(403, reason)
        else:
            self.forward()

    do_HEAD = do_GET

    def __getattr__(self, name: str) -> Callable[[], None]:
        """Every other method (``do_POST``, ``do_DELETE``, ...) is refused with 403."""
        if name.startswith("do_"):
            return lambda: self.send_json(403, refusal(self.command, self.path) or "refused")
        raise AttributeError(name)

    def send_json(self, status: int, message: str) -> None:
        """Answer ``{"message": message}``, after reading a small request body (closing on an
        unread body resets the connection, and the client may lose the answer)."""
        sent = self.headers.get("Content-Length", "")
        if sent.isdigit() and int(sent) <= MAX_DRAINED_BYTES:
            self.rfile.read(int(sent))
        body = json.dumps({"message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def forward(self) -> None:
        """Send the request to the engine and relay its answer (streams chunk by chunk)."""
        upstream = UnixHTTPConnection(self.server.socket_path, self.server.timeout_seconds)
        try:
            headers = {k: v for k in FORWARDED_REQUEST_HEADERS if (v := self.headers.get(k))}
            upstream.request(self.command, self.path, headers=headers)
            response = upstream.getresponse()
        except OSError as exc:
            upstream.close()
            self.send_json(502, f"Docker engine at {self.server.socket_path} unreachable: {exc}")
            return
        try:
            self.relay(response)
        except OSError:  # the client went away (e.g. it stopped reading a stats stream)
            pass
        finally:
            upstream.close()

    def relay(self, response: http.client.HTTPResponse) -> None:
        inspection = ALLOWED_PATH.fullmatch(urlsplit(self.path).path).group("what") == "json"  # type: ignore[union-attr]
        body = response.read() if inspection and self.command == "GET" and response.status == 200 else None
        if body is not None:
            body = without_env(body)
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        length = str(len(body)) if body is not None else (
            None if response.getheader("Transfer-Encoding") else response.getheader("Content-Length"))
        chunked = length is None and self.request_version == "HTTP/1.1"
        if length is not None:
            self.send_header("Content-Length", length)
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        if body is not None:
            self.wfile.write(body)
            return
        while chunk := response.read1(65536):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log refusals and errors only (the sensor reads every tick)."""
        if str(code)[:1] not in ("2", "3"):
            super().log_request(code, size)


class EngineProxy(ThreadingHTTPServer):
    """The proxy server: one thread per connection, so a stats stream blocks nobody else."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], socket_path: str, timeout_seconds: float = 60.0) -> None:
        super().__init__(address, EngineProxyHandler)
        self.socket_path = socket_path
        self.timeout_seconds = timeout_seconds


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2i_pipelines.scaler.engine_proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 2375), help="HOST:PORT (port 0: any free)")
    parser.add_argument("--socket", default="/var/run/docker.sock", help="the Docker engine's Unix socket")
    args = parser.parse_args(argv)
    if not os.path.exists(args.socket):
        parser.error(f"no Docker socket at {args.socket}")
    server = EngineProxy(args.listen, args.socket)
    host, port = server.server_address[:2]
    print(f"engine proxy (read-only) on {host}:{port} -> {args.socket}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # docker stop: close the socket, exit 0
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
