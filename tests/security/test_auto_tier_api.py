"""Attack inputs for ``tier: auto`` in ``POST /v1/runs`` (issue 29): the request fields ``tier``,
``tier_floor``, ``tier_ceiling``, ``input_size``. Each bad one is refused (422 naming the field, or
403 for a ceiling above the key's max tier) before anything is launched: the API's Dagster port has
nothing listening, so a request that got as far as launching would answer 503 instead. Values are
not echoed, and ``e2i/*`` run tags stay refused."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from e2i_api.main import create_app
from tests.api.conftest import api_keys, api_settings
from tests.support.dagster_processes import free_port

MEDIUM_KEY = secrets.token_urlsafe(32)
MEDIUM = {"X-API-Key": MEDIUM_KEY}
HEAVY_JOB = "probe_heavy_job"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    keys = [*api_keys(), {"name": "medium", "key": MEDIUM_KEY, "scopes": ["runs:read", "runs:write"],
                          "max_tier": "medium"}]
    settings = api_settings(free_port(), api_keys=keys, dagster_timeout_seconds=2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def post(client: TestClient, **body) -> tuple[int, str]:
    response = client.post("/v1/runs", json={"job": HEAVY_JOB, **body}, headers=MEDIUM)
    return response.status_code, response.text


def messages(client: TestClient, **body) -> str:
    """The 422's messages and locations (pydantic's own ``input`` echo left out)."""
    response = client.post("/v1/runs", json={"job": HEAVY_JOB, **body}, headers=MEDIUM)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    if isinstance(detail, str):  # the API's own 422 (a rule the model cannot see)
        return detail
    return " ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)


BAD_FIELDS = [
    ({"tier": "bogus"}, "tier"),
    ({"tier": "heavy"}, "tier"),  # only `auto` is a request; fixed tiers come from the job
    ({"tier": "AUTO; DROP TABLE runs"}, "tier"),
    ({"tier": ["auto"]}, "tier"),
    ({"tier": "auto", "tier_ceiling": "gpu"}, "tier_ceiling"),
    ({"tier": "auto", "tier_floor": "auto"}, "tier_floor"),
    ({"tier": "auto", "tier_floor": "medium", "tier_ceiling": "light"}, "is above tier_ceiling"),
    ({"tier": "auto", "tier_floor": "heavy"}, "is above the ceiling medium"),  # the key's ceiling
    ({"tier_ceiling": "light"}, "only apply with tier: auto"),
    ({"input_size": "1000"}, "only apply with tier: auto"),
    ({"tier": "auto", "input_size": "__import__('os').system('id')"}, "input_size"),
    ({"tier": "auto", "input_size": "1e9"}, "input_size"),
    ({"tier": "auto", "input_size": "10x10x10"}, "input_size"),
    ({"tier": "auto", "input_size": "١٢٣"}, "input_size"),
    ({"tier": "auto", "input_size": "0"}, "input_size"),
    ({"tier": "auto", "input_size": "9" * 40}, "input_size"),
    ({"tier": "auto", "tier_headroom": "0.1"}, "tier_headroom"),  # no such field: extra=forbid
    ({"tier": "auto", "tags": {"e2i/tier": "light"}}, "e2i/tier"),
    ({"tags": {"e2i/tier": "auto"}}, "e2i/tier"),
    ({"tags": {"e2i/tier_ceiling": "heavy"}}, "e2i/tier_ceiling"),
]


@pytest.mark.parametrize(("fields", "needle"), BAD_FIELDS)
def test_bad_auto_fields_are_422_naming_the_field(client, fields, needle):
    text = messages(client, **fields)
    assert needle in text
    for value in ("__import__", "DROP TABLE", "١٢٣", "9" * 40):  # the message does not repeat it
        assert value not in text


@pytest.mark.parametrize("ceiling", ["heavy", "HEAVY"])
def test_a_ceiling_above_the_keys_max_tier_is_403(client, ceiling):
    status, text = post(client, tier="auto", tier_ceiling=ceiling)
    if ceiling == "HEAVY":  # tier names are exact in the request model
        assert status == 422, text
        return
    assert status == 403, text
    assert "limited to tier medium" in text


def test_a_fixed_heavy_job_is_403_for_a_medium_key_but_auto_passes_the_checks(client):
    status, text = post(client)
    assert status == 403 and "limited to tier medium" in text
    # auto with the key's ceiling (medium) passes every check and reaches the launch: Dagster down
    status, text = post(client, tier="auto", input_size="100000x20")
    assert status == 503, text
    status, text = post(client, tier="auto", tier_floor="light", tier_ceiling="medium")
    assert status == 503, text
