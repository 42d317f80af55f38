"""People log in to the UI: Caddy (TLS, forward_auth) + OpenID Connect + roles, on real parts.

A mock OpenID provider, the API, a writable ``dagster dev`` and a ``--read-only`` webserver, and
Caddy with docker/caddy/Caddyfile run on 127.0.0.1 (tests/security/ui_stack.py). Attacks: the UI
and GraphQL without a session, a viewer's launch, forged identity headers, expired and tampered
session cookies, a foreign login state, an account without a role, an open redirect after login.
The happy path is a real login in headless Chromium that launches a run from the Launchpad; the
run carries ``e2i/user``. UI mutations are audited by the writable webserver's wrapper
(e2i_api.ui_audit): an editor's terminations carry ``e2i/terminated_by`` and an audit line; a
terminate without a session is refused and terminates nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from e2i_api.auth.session import LOGIN_COOKIE, SESSION_COOKIE
from e2i_api.ui_audit import TERMINATED_BY_TAG
from tests.security.ui_stack import (
    HOLD_TAG,
    JOB,
    LOCATION,
    OPS_KEY,
    SESSION_SECRET,
    UiStack,
    set_cookie,
)
from tests.support.caddy import CADDYFILE

pytestmark = pytest.mark.webserver
REQUIRED = os.environ.get("E2I_REQUIRE_SERVICES") == "1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on UnauthorizedError { message }
  ... on PythonError { message } } }"""
LAUNCH_VARS = {"p": {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                                  "jobName": JOB}, "runConfigData": {}}}
HELD_VARS = {"p": {**LAUNCH_VARS["p"], "executionMetadata": {"tags": [{"key": HOLD_TAG, "value": "1"}]}}}
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename
  ... on TerminateRunFailure { message } ... on UnauthorizedError { message } } }"""
TERMINATE_ALL = """mutation Stop($ids: [String!]!) { stopAll: terminateRuns(runIds: $ids) { __typename } }"""
DELETE = """mutation($id: String!) { deleteRun(runId: $id) { __typename } }"""
EDITOR, VIEWER = "editor@example.com", "viewer@example.com"


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"{what} is not installed (scripts/start_services.sh installs it)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    if shutil.which("caddy") is None:
        _missing("caddy")
    ui = UiStack(tmp_path_factory.mktemp("ui_stack")).start()
    try:
        yield ui
    finally:
        ui.close()


@pytest.fixture(scope="module")
def sessions(stack: UiStack) -> dict[str, str]:
    return {user: stack.login(user) for user in (EDITOR, VIEWER)}


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


def _launch(stack: UiStack, headers: dict[str, str]):
    with stack.client() as client:
        return client.post("/graphql", json={"query": LAUNCH, "variables": LAUNCH_VARS}, headers=headers)


# --- (1) no session ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/runs", "/locations/ui/jobs/probe_light_job/playground"])
def test_ui_page_without_session_redirects_to_login(stack: UiStack, path: str) -> None:
    with stack.client() as client:
        response = client.get(path, headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 302
    assert response.headers["location"].startswith("/auth/login?next=")
    assert "dagster" not in response.text.lower()


@pytest.mark.parametrize("path", ["/graphql", "/server_info", "/dagit_info"])
def test_api_calls_without_session_are_401(stack: UiStack, path: str) -> None:
    with stack.client() as client:
        response = client.get(path, headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert "version" not in response.text


def test_graphql_launch_without_session_refused_and_no_run(stack: UiStack) -> None:
    before = len(stack.runs())
    response = _launch(stack, {})
    assert response.status_code == 401
    assert len(stack.runs()) == before


# --- (2) a viewer cannot launch ----------------------------------------------------------------

def test_viewer_reads_but_cannot_launch(stack: UiStack, sessions: dict[str, str]) -> None:
    with stack.client() as client:
        read = client.post("/graphql", json={"query": "{ version }"}, headers=_cookie(sessions[VIEWER]))
    assert read.status_code == 200 and read.json()["data"]["version"]
    before = len(stack.runs())
    response = _launch(stack, _cookie(sessions[VIEWER]))
    assert response.status_code == 200
    assert response.json()["data"]["launchRun"]["__typename"] == "UnauthorizedError"
    assert len(stack.runs()) == before


def test_viewer_sees_every_run_with_its_tags_and_config(stack: UiStack, sessions: dict[str, str]) -> None:
    """What README "Security" says a viewer sees: the UI is not scoped by client. A run another
    person launched (any client's, e2i/api-client included) is listed with its tags and run
    config."""
    run_id = _held_run(stack, sessions)
    query = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
      runId runConfigYaml tags { key value } } } }"""
    with stack.client() as client:
        seen = client.post("/graphql", json={"query": query, "variables": {"id": run_id}},
                           headers=_cookie(sessions[VIEWER]))
    run = seen.json()["data"]["runOrError"]
    assert run["__typename"] == "Run" and run["runId"] == run_id, seen.text
    assert {"key": "e2i/user", "value": EDITOR} in run["tags"] and run["runConfigYaml"] is not None
    with stack.client() as client:  # clean up: the editor stops it
        client.post("/graphql", json={"query": TERMINATE, "variables": {"id": run_id}},
                    headers=_cookie(sessions[EDITOR]))


def test_viewer_cannot_terminate_a_run(stack: UiStack, sessions: dict[str, str]) -> None:
    launched = _launch(stack, _cookie(sessions[EDITOR])).json()["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    terminate = """mutation($id: String!) { terminateRun(runId: $id) { __typename
      ... on TerminateRunFailure { message } ... on UnauthorizedError { message } } }"""
    with stack.client() as client:
        response = client.post("/graphql", json={"query": terminate, "variables": {"id": run_id}},
                               headers={**_cookie(sessions[VIEWER]), "X-E2I-Role": "admin"})
    result = response.json()["data"]["terminateRun"]
    # read-only: "You do not have permission to terminate this run" (checked before the status)
    assert result["__typename"] in {"TerminateRunFailure", "UnauthorizedError"}, result
    assert "permission" in result["message"], result
    assert stack.run_status(run_id) not in {"CANCELING", "CANCELED"}


# --- (4) forged identity headers ---------------------------------------------------------------

def test_forged_identity_headers_without_session_are_401(stack: UiStack) -> None:
    before = len(stack.runs())
    forged = {"X-E2I-User": "mallory", "X-E2I-Role": "admin", "x-e2i-role": "editor"}
    assert _launch(stack, forged).status_code == 401
    with stack.client() as client:
        assert client.get("/auth/check", headers=forged).status_code == 401
    assert len(stack.runs()) == before


def test_viewer_forging_editor_role_stays_read_only(stack: UiStack, sessions: dict[str, str]) -> None:
    before = len(stack.runs())
    response = _launch(stack, {**_cookie(sessions[VIEWER]), "X-E2I-Role": "editor", "X-E2I-User": EDITOR})
    assert response.json()["data"]["launchRun"]["__typename"] == "UnauthorizedError"
    assert len(stack.runs()) == before


def test_editor_launch_records_session_user_not_forged_header(stack: UiStack,
                                                              sessions: dict[str, str]) -> None:
    response = _launch(stack, {**_cookie(sessions[EDITOR]), "X-E2I-User": "mallory"})
    result = response.json()["data"]["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    run = next(r for r in stack.runs() if r["run_id"] == run_id)
    assert run["tags"]["e2i/user"] == EDITOR
    assert {"action": "launchRun", "principal": EDITOR, "role": "editor", "run_id": run_id,
            "outcome": "LaunchRunSuccess"}.items() <= _audit_of(stack, "launchRun", run_id).items()


def _audit_of(stack: UiStack, action: str, run_id: str) -> dict:
    return next(a for a in stack.audit_lines() if a["action"] == action and run_id in a["run_ids"])


def _held_run(stack: UiStack, sessions: dict[str, str]) -> str:
    """A run an editor launched that stays queued (HOLD_TAG)."""
    with stack.client() as client:
        launched = client.post("/graphql", json={"query": LAUNCH, "variables": HELD_VARS},
                               headers=_cookie(sessions[EDITOR])).json()["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert stack.run_status(launched["run"]["runId"]) == "QUEUED"
    return launched["run"]["runId"]


# --- (6) UI terminations and deletes are attributed ---------------------------------------------

def test_editor_terminate_through_caddy_is_attributed(stack: UiStack, sessions: dict[str, str]) -> None:
    one, two, three = (_held_run(stack, sessions) for _ in range(3))
    forged = {**_cookie(sessions[EDITOR]), "X-E2I-User": "mallory"}  # Caddy drops it
    with stack.client() as client:
        single = client.post("/graphql", json={"query": TERMINATE, "variables": {"id": one}}, headers=forged)
        many = client.post("/graphql", json={"query": TERMINATE_ALL, "variables": {"ids": [two, three]},
                                             "operationName": "Stop"}, headers=forged)
    assert single.json()["data"]["terminateRun"]["__typename"] == "TerminateRunSuccess", single.text
    assert many.json()["data"]["stopAll"]["__typename"] == "TerminateRunsResult", many.text
    for run_id in (one, two, three):
        assert stack.run_status(run_id) == "CANCELED"
        assert stack.run_tags(run_id)[TERMINATED_BY_TAG] == EDITOR
    line = _audit_of(stack, "terminateRun", one)
    assert {"principal": EDITOR, "role": "editor", "run_id": one, "terminated": [one],
            "outcome": "TerminateRunSuccess"}.items() <= line.items()
    assert line["client_ip"] == "127.0.0.1" and line["msg"] == "audit"
    assert _audit_of(stack, "terminateRuns", two)["terminated"] == [two, three]
    # A terminate of an already stopped run terminates nothing and is audited as such.
    with stack.client() as client:
        again = client.post("/graphql", json={"query": TERMINATE, "variables": {"id": one}},
                            headers=_cookie(sessions[EDITOR]))
        deleted = client.post("/graphql", json={"query": DELETE, "variables": {"id": one}},
                              headers=_cookie(sessions[EDITOR]))
    assert again.json()["data"]["terminateRun"]["__typename"] == "TerminateRunFailure"
    assert [a["terminated"] for a in stack.audit_lines() if a["action"] == "terminateRun"
            and a["run_ids"] == [one]] == [[one], []]
    assert deleted.json()["data"]["deleteRun"]["__typename"] == "DeletePipelineRunSuccess"
    assert _audit_of(stack, "deleteRun", one)["principal"] == EDITOR
    assert one not in {r["run_id"] for r in stack.runs()}


def test_api_cancel_is_attributed_to_the_key_like_a_ui_terminate(stack: UiStack,
                                                                  sessions: dict[str, str]) -> None:
    """POST /v1/runs/{id}/cancel through Caddy: the run is tagged e2i/terminated_by=<the key's
    client>, the webserver audits it under role ``api`` and the API writes its own audit line. An
    identity header the API client sends is not what gets recorded."""
    run_id = _held_run(stack, sessions)
    forged = {"X-API-Key": OPS_KEY, "X-E2I-User": "mallory", "X-E2I-Role": "editor"}
    with stack.client() as client:
        cancel = client.post(f"/v1/runs/{run_id}/cancel", headers=forged)
    assert cancel.status_code == 202, cancel.text
    assert stack.run_status(run_id) == "CANCELED"
    assert stack.run_tags(run_id)[TERMINATED_BY_TAG] == "ops"
    line = _audit_of(stack, "terminateRun", run_id)
    assert {"principal": "ops", "role": "api", "terminated": [run_id]}.items() <= line.items(), line
    api_lines = [a for a in stack.audit_lines(stack.api_log) if a.get("run_id") == run_id]
    assert [(a["principal"], a["action"], a["outcome"]) for a in api_lines] == [("ops", "cancel_run", 202)]
    # A second cancel of the stopped run: 409, and the tag stays the first canceller's.
    with stack.client() as client:
        again = client.post(f"/v1/runs/{run_id}/cancel", headers={"X-API-Key": OPS_KEY})
    assert again.status_code == 409 and stack.run_tags(run_id)[TERMINATED_BY_TAG] == "ops"


def test_terminate_without_session_is_refused_and_terminates_nothing(
        stack: UiStack, sessions: dict[str, str]) -> None:
    run_id = _held_run(stack, sessions)
    forged = {"X-E2I-User": EDITOR, "X-E2I-Role": "editor"}
    with stack.client() as client:
        for body in ({"query": TERMINATE, "variables": {"id": run_id}},
                     {"query": TERMINATE_ALL, "variables": {"ids": [run_id]}}):
            assert client.post("/graphql", json=body, headers=forged).status_code == 401
    assert stack.run_status(run_id) == "QUEUED"
    assert TERMINATED_BY_TAG not in stack.run_tags(run_id)
    assert not [a for a in stack.audit_lines() if run_id in a.get("run_ids", []) and a["action"] != "launchRun"]


def test_caddy_strips_identity_headers_before_forward_auth() -> None:
    if shutil.which("caddy") is None:
        _missing("caddy")
    adapted = subprocess.run(["caddy", "adapt", "--config", str(CADDYFILE)], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    site = json.loads(adapted)["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]["routes"]
    text = [json.dumps(route) for route in site]
    strip = next(i for i, t in enumerate(text) if '"delete": ["X-E2I-Role"]' in t)
    assert any('"delete": ["X-E2I-User"]' in t for t in text[:strip + 1])
    auth = next(i for i, t in enumerate(text) if "/auth/check" in t)
    assert strip < auth  # the client's headers are gone before forward_auth adds the real ones


# --- (5) expired, tampered or foreign cookies ---------------------------------------------------

class _NineHoursAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 9 * 3600


def test_expired_session_cookie_is_401(stack: UiStack) -> None:
    expired = URLSafeTimedSerializer(SESSION_SECRET, salt="e2i-session", signer=_NineHoursAgo).dumps(
        {"u": EDITOR, "r": "admin"})
    before = len(stack.runs())
    assert _launch(stack, _cookie(expired)).status_code == 401
    assert len(stack.runs()) == before


def test_tampered_session_cookie_is_401(stack: UiStack, sessions: dict[str, str]) -> None:
    payload, _, signature = sessions[VIEWER].partition(".")
    admin = URLSafeTimedSerializer(SESSION_SECRET).dump_payload({"u": VIEWER, "r": "admin"}).decode()
    forged_key = URLSafeTimedSerializer("another-secret-0123456789abcdefghij", salt="e2i-session").dumps(
        {"u": VIEWER, "r": "admin"})
    before = len(stack.runs())
    for cookie in (f"{admin}.{signature}", forged_key, sessions[VIEWER][:-2]):
        assert _launch(stack, _cookie(cookie)).status_code == 401, cookie
    assert len(stack.runs()) == before


def test_callback_with_foreign_state_sets_no_session(stack: UiStack) -> None:
    with stack.client() as client:
        start = client.get("/auth/login")
        login = set_cookie(start, LOGIN_COOKIE)
        response = client.get("/auth/callback", params={"code": "stolen", "state": "not-ours"},
                              headers={"Cookie": f"{LOGIN_COOKIE}={login}"})
        no_login = client.get("/auth/callback", params={"code": "stolen", "state": "x"})
    assert response.status_code == 400 and no_login.status_code == 400
    assert SESSION_COOKIE not in str(response.headers) + str(no_login.headers)


def test_account_without_role_is_refused(stack: UiStack) -> None:
    with pytest.raises(AssertionError, match="403"):
        stack.login("nobody@example.com")


def test_login_never_redirects_off_site(stack: UiStack) -> None:
    for target in ("https://evil.example.com/", "//evil.example.com/x", "/\\evil.example.com"):
        stack.login(VIEWER, next_path=target, expect="/")


# --- (3) a real login in Chromium that launches a run from the UI -------------------------------

def test_browser_login_and_launch_records_user(stack: UiStack, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        _missing("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    before = {r["run_id"] for r in stack.runs()}
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            ignore_https_errors=True)
        try:
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{stack.url}/locations/{LOCATION}/jobs/{JOB}/playground")
            # The IdP's consent page: pick the predefined editor account.
            page.wait_for_url(re.compile(re.escape(stack.issuer) + r"/oauth2/authorize"))
            page.get_by_role("button", name=EDITOR).click()
            page.wait_for_url(re.compile(re.escape(stack.url) + r"/locations/"))
            launch = page.get_by_role("button", name=re.compile(r"launch run", re.I))
            _wait_for_launchpad(page, launch, sync_api)
            launch.click()
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        finally:
            context.close()
    new = [r for r in stack.runs() if r["run_id"] not in before]
    assert len(new) == 1, new
    assert new[0]["job"] == JOB
    assert new[0]["tags"]["e2i/user"] == EDITOR
    assert page.url.endswith(new[0]["run_id"])


def _wait_for_launchpad(page, launch, sync_api, attempts: int = 3) -> None:
    """Wait until the Launchpad's launch button is enabled; on a loaded host the UI can stay on
    "Loading <location>..." for a while, so reload between attempts."""
    for attempt in range(attempts):
        try:
            sync_api.expect(launch).to_be_enabled(timeout=120_000)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise
            page.reload()

