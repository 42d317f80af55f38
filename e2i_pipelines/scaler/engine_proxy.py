"""HTTP proxy to the Docker engine's Unix socket, for processes that must not hold it.

Two views, each on its own listener. The read-only view (``--listen``) is for the code server.
The launch view (``--launch-listen``, with ``--run-image``/``--run-network``/``--run-label``/
``--data-volume``, optionally ``--secrets-source``/``--secrets-dir``) is for the daemon and webserver: the reads below, plus container create (the
body checked by :class:`~e2i_pipelines.scaler.engine_policy.RunPolicy`) and inspect, logs, stats,
start, stop, kill, wait and remove of run containers of this stack (by label); anything else is a
403 with a short reason.

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
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from e2i_pipelines.scaler.engine_policy import Refused, RunPolicy, parse_label

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
MAX_CREATE_BYTES = 256 << 10
CREATE_PATH = re.compile(r"(?:/v\d+\.\d+)?/containers/create")
CREATE_QUERY = frozenset({"name", "platform"})
CONTAINER_PATH = re.compile(
    r"(?P<prefix>(?:/v\d+\.\d+)?/containers/)(?P<ref>[A-Za-z0-9][A-Za-z0-9_.-]*)"
    r"(?P<rest>/(?P<op>json|logs|stats|start|stop|kill|wait))?")
CONTAINER_OPS = {"GET": {"json", "logs", "stats"}, "HEAD": {"json"}, "POST": {"start", "stop", "kill", "wait"},
                 "DELETE": {None}}
"""Launch view: what may be done to a run container, by method."""


def refusal(method: str, target: str) -> str | None:
    """Why ``method target`` is not forwarded (None when it is)."""
    if method not in READ_METHODS:
        return f"{method} {target} refused: the engine proxy is read-only (GET and HEAD only)"
    if not target.startswith("/") or not ALLOWED_PATH.fullmatch(urlsplit(target).path):
        return f"{method} {target} refused: not on the engine proxy's allowlist ({ALLOWED_TEXT})"
    return None


def launch_route(method: str, target: str) -> tuple[str, re.Match[str] | None]:
    """Launch view: ("read" | "create" | "container" | "refused", the container path match)."""
    path = urlsplit(target).path if target.startswith("/") else ""
    match = CONTAINER_PATH.fullmatch(path)
    if match and match.group("ref") in ("json", "create"):
        match = None
    if match and match.group("op") in CONTAINER_OPS.get(method, ()):
        return "container", match
    if refusal(method, target) is None:
        return "read", None
    if method == "POST" and CREATE_PATH.fullmatch(path):
        return "create", None
    return "refused", None


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
    body_read = False
    """Whether the request body was consumed (a refusal must not wait to drain it again)."""

    def end_headers(self) -> None:
        self.send_header("Connection", "close")
        self.close_connection = True
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        if self.server.policy is not None:
            self.launch_view(self.server.policy)
            return
        reason = refusal(self.command, self.path)
        if reason:
            self.send_json(403, reason)
        else:
            self.forward()

    do_HEAD = do_POST = do_DELETE = do_GET

    def __getattr__(self, name: str) -> Callable[[], None]:
        """Every other method (``do_PUT``, ...) is refused with 403."""
        if name.startswith("do_"):
            return lambda: self.send_json(403, refusal(self.command, self.path) or "refused")
        raise AttributeError(name)

    def launch_view(self, policy: RunPolicy) -> None:
        """Reads, checked creates and run-container operations; 403 for the rest."""
        route, match = launch_route(self.command, self.path)
        if route == "read":
            self.forward()
        elif route == "create":
            self.create(policy)
        elif route == "container" and match is not None:
            self.container_op(policy, match)
        else:
            self.send_json(403, f"{self.command} {self.path} refused: not allowed by the engine proxy's launch view "
                                "(reads, and create/start/stop/kill/wait/logs/remove of run containers)")

    def read_body(self) -> bytes | None:
        """The request body (None when it is larger than a create body may be)."""
        sent = self.headers.get("Content-Length", "0")
        size = int(sent) if sent.isdigit() else -1
        if size < 0 or size > MAX_CREATE_BYTES:
            return None
        self.body_read = True
        return self.rfile.read(size)

    def create(self, policy: RunPolicy) -> None:
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        if set(query) - CREATE_QUERY:
            self.send_json(403, "container create refused: only the name and platform parameters are allowed")
            return
        body = self.read_body()
        if body is None:
            self.send_json(403, f"container create refused: body missing or over {MAX_CREATE_BYTES} bytes")
            return
        try:
            policy.check_create(json.loads(body or b"null"))
        except (Refused, ValueError) as exc:
            reason = str(exc) if isinstance(exc, Refused) else "body is not JSON"
            self.send_json(403, f"container create refused by the engine proxy: {reason}")
            return
        self.forward(body)

    def container_op(self, policy: RunPolicy, match: re.Match[str]) -> None:
        """Act on a run container of this stack only, addressed by its full id (no name races)."""
        body = self.read_body() if self.command == "POST" else b""
        if body is None:
            self.send_json(403, "refused: request body too large")
            return
        status, attrs = self.inspect(match.group("ref"))
        if status != 200 or not isinstance(attrs, dict):
            self.send_json(404 if status == 404 else 502, f"no such container: {match.group('ref')}"
                           if status == 404 else "the Docker engine could not be asked")
            return
        if not policy.owns((attrs.get("Config") or {}).get("Labels")):
            self.send_json(403, f"{self.command} {self.path} refused by the engine proxy: not a run container "
                                "of this stack (run labels missing)")
            return
        query = urlsplit(self.path).query
        self.path = f"{match.group('prefix')}{attrs['Id']}{match.group('rest') or ''}" + (f"?{query}" if query else "")
        self.forward(body or None)

    def inspect(self, ref: str) -> tuple[int, Any]:
        """(status, parsed inspection) of container ``ref`` straight from the engine."""
        upstream = UnixHTTPConnection(self.server.socket_path, self.server.timeout_seconds)
        try:
            upstream.request("GET", f"/containers/{ref}/json")
            response = upstream.getresponse()
            data = response.read()
            return response.status, json.loads(data) if response.status == 200 else None
        except (OSError, ValueError):
            return 502, None
        finally:
            upstream.close()

    def send_json(self, status: int, message: str) -> None:
        """Answer ``{"message": message}``, after reading a small request body (closing on an
        unread body resets the connection, and the client may lose the answer)."""
        sent = self.headers.get("Content-Length", "")
        if not self.body_read and sent.isdigit() and int(sent) <= MAX_DRAINED_BYTES:
            self.rfile.read(int(sent))
        body = json.dumps({"message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def forward(self, body: bytes | None = None) -> None:
        """Send the request (and ``body``) to the engine and relay its answer (streams chunk by
        chunk)."""
        upstream = UnixHTTPConnection(self.server.socket_path, self.server.timeout_seconds)
        try:
            headers = {k: v for k in FORWARDED_REQUEST_HEADERS if (v := self.headers.get(k))}
            if body is not None:
                headers["Content-Type"] = "application/json"
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
        except OSError:
            upstream.close()
            self.send_json(502, "the Docker engine is unreachable")
            return
        try:
            self.relay(response)
        except OSError:  # the client went away (e.g. it stopped reading a stats stream)
            pass
        finally:
            upstream.close()

    def relay(self, response: http.client.HTTPResponse) -> None:
        path = urlsplit(self.path).path
        read = ALLOWED_PATH.fullmatch(path)
        container = CONTAINER_PATH.fullmatch(path)
        inspection = (read is not None and read.group("what") == "json") or (
            container is not None and container.group("op") == "json")
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

    def __init__(self, address: tuple[str, int], socket_path: str, timeout_seconds: float = 60.0,
                 policy: RunPolicy | None = None) -> None:
        super().__init__(address, EngineProxyHandler)
        self.socket_path = socket_path
        self.timeout_seconds = timeout_seconds
        self.policy = policy
        """None: the read-only view; else the launch view for these run containers."""


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return host, int(port)


def resolve_listen(address: tuple[str, int]) -> tuple[str, int]:
    """A host name becomes its IPv4 address: in compose, the proxy's alias on the launch network,
    so the launch listener is not reachable over the read-only view's network."""
    host, port = address
    return socket.gethostbyname(host), port


def launch_policy(args: argparse.Namespace) -> RunPolicy:
    try:
        labels = dict(parse_label(label) for label in args.run_label)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    try:
        return RunPolicy(image=args.run_image, network=args.run_network, labels=labels,
                         data_volume=args.data_volume, data_dir=args.data_dir,
                         secrets_source=args.secrets_source, secrets_dir=args.secrets_dir)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def serve(servers: list[EngineProxy]) -> None:
    """Serve every listener until SIGTERM/SIGINT."""
    for extra in servers[1:]:
        threading.Thread(target=extra.serve_forever, daemon=True).start()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2i_pipelines.scaler.engine_proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 2375), help="HOST:PORT (port 0: any free)")
    parser.add_argument("--socket", default="/var/run/docker.sock", help="the Docker engine's Unix socket")
    launch = parser.add_argument_group("launch view (for the run launcher)")
    launch.add_argument("--launch-listen", type=parse_listen, help="HOST:PORT of the launch view (off when unset)")
    launch.add_argument("--run-image", default="", help="the only image run containers may use")
    launch.add_argument("--run-network", default="", help="the only network run containers may join")
    launch.add_argument("--run-label", action="append", default=[], help="KEY=VALUE every run container carries")
    launch.add_argument("--data-volume", default="", help="the only volume run containers may mount")
    launch.add_argument("--data-dir", default="/var/lib/e2i/data", help="where the data volume is mounted")
    launch.add_argument("--secrets-source", default="",
                        help="the volume (or absolute host path) run containers may also mount, read-only only")
    launch.add_argument("--secrets-dir", default="/run/secrets", help="where the secrets source is mounted")
    args = parser.parse_args(argv)
    if not os.path.exists(args.socket):
        parser.error(f"no Docker socket at {args.socket}")
    servers = [EngineProxy(args.listen, args.socket)]
    if args.launch_listen:
        if not (args.run_image and args.run_network and args.run_label):
            parser.error("--launch-listen needs --run-image, --run-network and --run-label")
        try:
            policy = launch_policy(args)
            address = resolve_listen(args.launch_listen)
        except (argparse.ArgumentTypeError, OSError) as exc:
            parser.error(str(exc))
        servers.append(EngineProxy(address, args.socket, policy=policy))
    for server in servers:
        host, port = server.server_address[:2]
        view = "launch" if server.policy else "read-only"
        print(f"engine proxy ({view}) on {host}:{port} -> {args.socket}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # docker stop: close the socket, exit 0
    serve(servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
