"""The UI audit middleware's reading of GraphQL requests (e2i_api.ui_audit): mutations are found
by parsing, whatever the transport (JSON body, application/graphql, query string), with run ids
from variables or literals; queries pass unaudited; hostile input is data (no evaluation, no
crash). The middleware on a real webserver through Caddy: tests/security/test_ui_login.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from e2i_api.auth.client_address import client_ip
from e2i_api.ui_audit import MutationCall, graphql_request, mutation_calls
from tests.support.dagster_processes import REPO_ROOT

RUN_A, RUN_B = "0d3c1a52-7a43-4bd5-9d0f-3c7a0e2f5b11", "5a8f6d1e-2b0c-4e7e-8a39-0f1b2c3d4e5f"


def _scope(method: str = "POST", content_type: str = "application/json", query_string: bytes = b"",
           forwarded: bytes | None = None) -> dict:
    headers = [(b"content-type", content_type.encode())]
    if forwarded is not None:
        headers.append((b"x-forwarded-for", forwarded))
    return {"type": "http", "method": method, "path": "/graphql", "headers": headers,
            "query_string": query_string, "client": ("10.0.0.5", 41000)}


def test_terminate_with_variables_alias_and_operation_name() -> None:
    request = {"operationName": "Stop", "variables": {"ids": [RUN_A, RUN_B], "one": RUN_A},
               "query": "query Look { version } "
                        "mutation Stop($ids: [String!]!, $one: String!) { stopAll: terminateRuns(runIds: $ids) "
                        "{ __typename } terminateRun(runId: $one) { __typename } logTelemetry(action: \"x\", "
                        "clientTime: \"1\", clientId: \"c\", metadata: \"{}\") { __typename } }"}
    assert mutation_calls(request) == [MutationCall("terminateRuns", "stopAll", [RUN_A, RUN_B]),
                                       MutationCall("terminateRun", "terminateRun", [RUN_A])]


def test_literal_run_ids_and_string_variables() -> None:
    request = {"query": f'mutation {{ deleteRun(runId: "{RUN_B}") {{ __typename }} }}',
               "variables": json.dumps({})}
    assert mutation_calls(request) == [MutationCall("deleteRun", "deleteRun", [RUN_B])]


@pytest.mark.parametrize("request_", [
    {"query": "{ version }"},
    {"query": "query Q { runsOrError { __typename } }", "operationName": "Q"},
    {"query": "subscription { pipelineRunLogs(runId: \"x\") { __typename } }"},
    {},
])
def test_reads_are_not_mutations(request_: dict) -> None:
    assert mutation_calls(request_) == []


@pytest.mark.parametrize("request_", [
    {"query": "mutation { terminateRun(runId: "},                      # syntax error
    {"query": "mutation A { a } mutation B { b }"},                    # two operations, no name
    {"query": "mutation A { a }", "operationName": "B"},               # unknown operation
    {"query": "mutation { a }", "variables": "{not json"},             # bad variables
    {"query": ["__import__('os').system('id')"]},                      # not a string
    {"query": "mutation { a }", "variables": ["x"]},
])
def test_unreadable_requests_are_none_never_evaluated(request_: dict) -> None:
    assert mutation_calls(request_) is None


def test_hostile_run_ids_are_dropped() -> None:
    request = {"query": "mutation($ids: [String!]!) { terminateRuns(runIds: $ids) { __typename } }",
               "variables": {"ids": ["a b", "x" * 300, {"$ne": 1}, 7, RUN_A]}}
    assert mutation_calls(request) == [MutationCall("terminateRuns", "terminateRuns", [RUN_A])]


def test_transports_read_like_dagster() -> None:
    body = json.dumps({"query": "mutation { reloadWorkspace { __typename } }"}).encode()
    assert graphql_request(_scope(), body)["query"].startswith("mutation")
    assert graphql_request(_scope(content_type="application/graphql"), b"mutation { a }") == {
        "query": "mutation { a }"}
    get = graphql_request(_scope("GET", "", b"query=mutation+%7B+a+%7D"), b"")
    assert mutation_calls(get) == [MutationCall("a", "a", [])]
    assert graphql_request(_scope(), b"\xff{") is None
    assert graphql_request(_scope(), b"[1, 2]") is None


def test_client_ip_is_callers_last_forwarded_entry() -> None:
    assert client_ip(_scope(forwarded=b"6.6.6.6, 192.0.2.9")) == "192.0.2.9"
    assert client_ip(_scope()) == "10.0.0.5"


def test_compose_runs_the_writable_webserver_through_the_wrapper() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker" / "docker-compose.yml").read_text())["services"]
    assert compose["webserver"]["command"][:3] == ["python", "-m", "e2i_api.ui_webserver"]
    assert "--read-only" in compose["webserver-viewer"]["command"]  # the viewer mutates nothing
