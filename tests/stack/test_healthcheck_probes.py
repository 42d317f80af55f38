"""Unit tests of docker/healthcheck.py (the container probes) against real parts: Dagster's
generated protobuf messages and a local HTTP server."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from dagster._grpc.__generated__ import dagster_api_pb2

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"
spec = importlib.util.spec_from_file_location("e2i_healthcheck", SCRIPT)
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


@pytest.mark.parametrize("length", [0, 5, 127, 128, 300, 70_000])
def test_reads_field_one_of_a_real_protobuf_reply(length: int) -> None:
    text = json.dumps({"__class__": "ListRepositoriesResponse", "pad": "x" * length})
    reply = dagster_api_pb2.ListRepositoriesReply(serialized_list_repositories_response_or_error=text)
    assert healthcheck._read_string_field(reply.SerializeToString()) == text


def test_empty_reply_reads_as_empty() -> None:
    assert healthcheck._read_string_field(dagster_api_pb2.ListRepositoriesReply().SerializeToString()) == ""


def test_other_field_is_rejected() -> None:
    with pytest.raises(RuntimeError, match="unexpected protobuf tag"):
        healthcheck._read_string_field(b"\x12\x01x")


def _workspace(status: str, typename: str) -> dict:
    entry = {"name": "e2i", "loadStatus": status, "locationOrLoadError": {"__typename": typename}}
    return {"data": {"workspaceOrError": {"__typename": "Workspace", "locationEntries": [entry]}}}


class _Handler(BaseHTTPRequestHandler):
    """/health 200, anything else 503; POST /<state>/graphql answers a workspace in that state."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["query"]
        assert "workspaceOrError" in query
        body = {"/loaded/graphql": _workspace("LOADED", "RepositoryLocation"),
                "/loading/graphql": _workspace("LOADING", "RepositoryLocation"),
                "/broken/graphql": _workspace("LOADED", "PythonError")}[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args) -> None:
        return


@pytest.fixture()
def http_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_probe_exit_codes(http_url: str, capsys) -> None:
    assert healthcheck.main(["healthcheck.py", "http", f"{http_url}/health"]) == 0
    assert healthcheck.main(["healthcheck.py", "http", f"{http_url}/ready"]) == 1
    assert "503" in capsys.readouterr().err


def test_webserver_probe_needs_every_location_loaded(http_url: str, capsys) -> None:
    assert healthcheck.main(["healthcheck.py", "webserver", f"{http_url}/loaded"]) == 0
    assert healthcheck.main(["healthcheck.py", "webserver", f"{http_url}/loading"]) == 1
    assert "'e2i' LOADING" in capsys.readouterr().err
    assert healthcheck.main(["healthcheck.py", "webserver", f"{http_url}/broken"]) == 1


def test_unknown_probe_is_a_usage_error(capsys) -> None:
    assert healthcheck.main(["healthcheck.py", "tcp"]) == 2
    assert "usage" in capsys.readouterr().err


def test_grpc_probe_fails_without_a_server(capsys) -> None:
    assert healthcheck.main(["healthcheck.py", "grpc", "127.0.0.1:1"]) == 1
    assert "unhealthy" in capsys.readouterr().err
