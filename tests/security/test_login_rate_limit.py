"""Failed logins are rate-limited per client IP: /auth/login and /auth/callback share a budget
(e2i_api.core.rate_limit.LOGIN_LIMIT); above it 429 with ``Retry-After``, and no session is set.

The API app runs in-process; the IdP address is a closed loopback port (a login start answers
502, a callback without a login in progress 400: both are failed logins). The client address is
the ``X-Forwarded-For`` entry Caddy adds (tests/security/test_ui_login.py covers Caddy itself).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from limits import parse

from e2i_api.auth.session import SESSION_COOKIE
from e2i_api.core.rate_limit import LOGIN_LIMIT
from e2i_api.main import create_app
from tests.api.conftest import api_settings
from tests.support.dagster_processes import free_port

BUDGET = parse(LOGIN_LIMIT).amount
ATTACKER, BYSTANDER = "203.0.113.7", "198.51.100.20"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    closed = free_port()  # nothing listens: the IdP is "down", every login fails
    settings = api_settings(free_port(), oidc={
        "issuer": f"http://127.0.0.1:{closed}", "client_id": "e2i-ui", "client_secret": "x",
        "redirect_url": "http://127.0.0.1/auth/callback",
        "session_secret": "rate-limit-test-session-secret-0123456789abcdef"})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _callback(client: TestClient, ip: str):
    return client.get("/auth/callback", params={"code": "guess", "state": "guess"},
                      headers={"X-Forwarded-For": ip}, follow_redirects=False)


def test_failed_logins_above_the_budget_are_429(client: TestClient) -> None:
    answers = [_callback(client, ATTACKER).status_code for _ in range(BUDGET)]
    assert answers == [400] * BUDGET  # refused on their merits until the budget is spent
    over = _callback(client, ATTACKER)
    assert over.status_code == 429, over.text
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert "too many login attempts" in over.json()["detail"]
    assert SESSION_COOKIE not in over.headers.get("set-cookie", "")
    # The same budget covers login starts; a forged earlier X-Forwarded-For entry does not help.
    start = client.get("/auth/login", headers={"X-Forwarded-For": f"10.9.9.9, {ATTACKER}"},
                       follow_redirects=False)
    assert start.status_code == 429 and "Retry-After" in start.headers
    assert "location" not in start.headers  # no redirect to the IdP


def test_other_addresses_keep_their_budget(client: TestClient) -> None:
    assert _callback(client, BYSTANDER).status_code == 400
    start = client.get("/auth/login", headers={"X-Forwarded-For": BYSTANDER}, follow_redirects=False)
    assert start.status_code == 502  # the (down) IdP was tried: not rate-limited
    assert "127.0.0.1" not in start.text  # no internal address in the error
