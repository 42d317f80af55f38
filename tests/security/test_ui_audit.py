"""The UI audit middleware's reading of GraphQL requests (e2i_api.ui_audit): mutations are found
by parsing, whatever the transport (JSON body, application/graphql, query string), with run ids
from variables or literals; queries pass unaudited; hostile input is data (no evaluation, no
crash). The middleware on a real webserver through Caddy: tests/security/test_ui_login.py.
"""

from __future__ import annotations

import asyncio
import json
import logging

import dagster as dg
import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from e2i_api.auth.client_address import client_ip
from e2i_api.dagster_client import API_ROLE, DagsterClient
from e2i_api.ui_audit import (
    TERMINATED_BY_TAG,
    MutationCall,
    UiAuditMiddleware,
    graphql_request,
    mutation_calls,
)
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


# --- the middleware on a small stand-in app (the real webserver: tests/security/test_ui_login.py)

def _stand_in(instance: dg.DagsterInstance):
    """Answers like Dagster's GraphQL endpoint for terminateRun: cancels the run if not yet started."""
    async def app(scope, receive, send) -> None:
        request = json.loads((await receive())["body"])
        variables = request["variables"]
        run = instance.get_run_by_id(variables.get("id") or variables["runId"])  # UI / e2i_api names
        kind = "TerminateRunFailure"
        if run.status == dg.DagsterRunStatus.NOT_STARTED:
            instance.report_run_canceled(run)
            kind = "TerminateRunSuccess"
        body = json.dumps({"data": {"terminateRun": {"__typename": kind, "run": {"runId": run.run_id}}}}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    return app


def _new_run(instance: dg.DagsterInstance) -> str:
    return instance.add_run(dg.DagsterRun(job_name="g", status=dg.DagsterRunStatus.NOT_STARTED)).run_id


def test_terminate_tags_the_user_and_audits(audit_records: list[logging.LogRecord]) -> None:
    terminate = "mutation($id: String!) { terminateRun(runId: $id) { __typename } }"
    with dg.instance_for_test() as instance:
        run_id, other = _new_run(instance), _new_run(instance)
        app = UiAuditMiddleware(_stand_in(instance), instance)
        client = TestClient(app)  # no lifespan: the stand-ins speak HTTP only
        headers = {"X-E2I-User": "ed@example.com", "X-E2I-Role": "editor", "X-Forwarded-For": "192.0.2.4"}
        first = client.post("/graphql", json={"query": terminate, "variables": {"id": run_id}}, headers=headers)
        again = client.post("/graphql", json={"query": terminate, "variables": {"id": run_id}}, headers=headers)
        anonymous = client.post("/graphql", json={"query": terminate, "variables": {"id": other}})
        assert first.status_code == again.status_code == anonymous.status_code == 200
        assert instance.get_run_by_id(run_id).tags[TERMINATED_BY_TAG] == "ed@example.com"
        assert TERMINATED_BY_TAG not in instance.get_run_by_id(other).tags  # no user, no tag
    assert [(r.principal, r.client_ip, r.action, r.run_id, r.outcome, r.terminated) for r in audit_records] == [
        ("ed@example.com", "192.0.2.4", "terminateRun", run_id, "TerminateRunSuccess", [run_id]),
        ("ed@example.com", "192.0.2.4", "terminateRun", run_id, "TerminateRunFailure", []),
        (None, "testclient", "terminateRun", other, "TerminateRunSuccess", [other])]


def test_api_cancel_sends_its_client_and_is_tagged(audit_records: list[logging.LogRecord]) -> None:
    """The API's terminate (e2i_api.dagster_client) names the key's client to the audited
    webserver: the run gets e2i/terminated_by=<client>, the audit line role ``api``. Through the
    real API, webserver and Caddy: test_ui_login.py::test_api_cancel_is_attributed_..."""
    with dg.instance_for_test() as instance:
        run_id = _new_run(instance)
        transport = httpx.ASGITransport(UiAuditMiddleware(_stand_in(instance), instance))
        client = DagsterClient("http://webserver", "e2i", "__repository__", 10, transport=transport)

        async def cancel() -> tuple:
            try:
                return await client.terminate_run(run_id, "ops")
            finally:
                await client.aclose()

        accepted, message, _ = asyncio.run(cancel())
        assert accepted and message is None
        assert instance.get_run_by_id(run_id).tags[TERMINATED_BY_TAG] == "ops"
    assert [(r.principal, r.role, r.action, r.run_id, r.terminated) for r in audit_records] == [
        ("ops", API_ROLE, "terminateRun", run_id, [run_id])]


def test_queries_pass_unaudited(audit_records: list[logging.LogRecord]) -> None:
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    with dg.instance_for_test() as instance:
        client = TestClient(UiAuditMiddleware(app, instance))
        body = json.dumps({"query": "{ version }"}).encode()
        assert client.post("/graphql", content=body, headers={"content-type": "application/json"}).status_code == 200
    assert seen == [body]  # the app reads the body the middleware buffered
    assert audit_records == []
