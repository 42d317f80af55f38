"""Attack: use a UI login (the session cookie) on the API to read or act on clients' runs.

A session says who a person is and which UI they get (viewer: the read-only webserver; editor,
admin: the writable one); it carries no client. The API's client scoping comes from API keys only,
so a session of any role, valid and signed with the deployment's secret, with or without forged
identity headers (``X-E2I-User``/``X-E2I-Role``, which Caddy strips), is no credential on
``/v1``: 401 before any run, cost or dataset is looked up. The API app runs in-process; the
Dagster address is a closed loopback port, so anything that got past authentication would fail
differently (502/503), never 401.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from e2i_api.auth.session import SESSION_COOKIE, CookieCodec, Identity
from e2i_api.main import create_app
from tests.api.conftest import api_settings
from tests.support.dagster_processes import free_port

SECRET = "session-on-api-test-secret-0123456789abcdef"
RUN_ID = "0f6a3c0e-5b7e-4a53-9a43-2f6e8b8b1c11"
REQUESTS = [("GET", "/v1/runs"), ("GET", f"/v1/runs/{RUN_ID}"), ("GET", f"/v1/runs/{RUN_ID}/results"),
            ("POST", f"/v1/runs/{RUN_ID}/cancel"), ("POST", "/v1/runs"), ("GET", "/v1/costs"),
            ("GET", "/v1/datasets"), ("GET", "/v1/jobs")]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = api_settings(free_port(), oidc={
        "issuer": f"http://127.0.0.1:{free_port()}", "client_id": "e2i-ui", "client_secret": "x",
        "redirect_url": "http://127.0.0.1/auth/callback", "session_secret": SECRET})
    with TestClient(create_app(settings), base_url="https://testserver") as test_client:
        yield test_client


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_a_valid_session_is_no_api_credential(client: TestClient, role: str, method: str, path: str) -> None:
    cookie = CookieCodec(SECRET, 3600).dump_session(Identity(f"{role}@example.com", role))
    # The cookie is genuine: the API's own forward_auth check accepts it.
    check = client.get("/auth/check", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert check.status_code == 200 and check.headers["X-E2I-Role"] == role
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-E2I-User": "boss@example.com", "X-E2I-Role": "admin"}
    body = {"job": "causal_job", "params": {}} if method == "POST" and path == "/v1/runs" else None
    response = client.request(method, path, headers=headers, json=body)
    assert response.status_code == 401, (role, method, path, response.status_code, response.text[:200])
    assert "API key" in response.json()["detail"] and RUN_ID not in response.text
