"""``tier: auto`` through the API against a real ``dagster dev`` (issue 29): the request fields
become the run's ``e2i/*`` tags (written by the API, never by the client), the ceiling stays within
the key's max tier, and GET shows the tier and why. Attack inputs: tests/security/test_auto_tier_api.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from e2i_api.main import create_app
from e2i_api.run_views import run_detail
from e2i_pipelines.catalog import Catalog
from e2i_pipelines.launcher.promotion import PREDICTED_PEAK_TAG, TIER_BASIS_TAG, TIER_SOURCE_TAG
from e2i_pipelines.launcher.sizing import INPUT_SIZE_TAG
from e2i_pipelines.tiers import TIER_CEILING_TAG, TIER_FLOOR_TAG, TIER_TAG
from tests.api.conftest import READ, api_keys, api_settings, dagster_port, wait_for_status  # noqa: F401

pytestmark = pytest.mark.webserver
MEDIUM = {"X-API-Key": secrets.token_urlsafe(32)}
"""A write key of client ``frontend`` (READ sees its runs) limited to tier medium."""


@pytest.fixture(scope="module")
def client(dagster_port: int) -> Iterator[TestClient]:  # noqa: F811
    keys = [*api_keys(), {"name": "frontend", "key": MEDIUM["X-API-Key"],
                          "scopes": ["runs:read", "runs:write"], "max_tier": "medium"}]
    with TestClient(create_app(api_settings(dagster_port, api_keys=keys))) as test_client:
        yield test_client


def test_auto_with_a_medium_key_gets_ceiling_medium_and_the_api_writes_the_tags(client: TestClient) -> None:
    body = {"job": "probe_heavy_job", "params": {"probe_heavy": {"allocate_mb": 2}}}
    assert client.post("/v1/runs", json=body, headers=MEDIUM).status_code == 403  # declared heavy

    headers = {**MEDIUM, "Idempotency-Key": f"auto-{secrets.token_hex(4)}"}
    auto = {**body, "tier": "auto", "input_size": "2000x1", "tags": {"client/team": "sizing"}}
    response = client.post("/v1/runs", json=auto, headers=headers)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert (accepted["tier"], accepted["tier_mode"]) == ("medium", "auto")
    # the same Idempotency-Key without auto is another request
    assert client.post("/v1/runs", json=body, headers=headers).status_code in (403, 422)

    run = wait_for_status(client, accepted["run_id"], {"SUCCESS"})
    tags = run["tags"]
    assert {k: tags[k] for k in (TIER_TAG, TIER_FLOOR_TAG, TIER_CEILING_TAG, INPUT_SIZE_TAG, "client/team")} == {
        TIER_TAG: "auto", TIER_FLOOR_TAG: "light", TIER_CEILING_TAG: "medium", INPUT_SIZE_TAG: "2000x1",
        "client/team": "sizing"}
    # dagster dev's default launcher does not size runs: the run shows its ceiling, no source yet
    assert run["tier"] == "medium" and run["tier_source"] is None and run["predicted_peak"] is None


def test_explicit_bounds_within_the_key(client: TestClient) -> None:
    auto = {"job": "probe_light_job", "params": {"probe_light": {"allocate_mb": 1}}, "tier": "auto",
            "tier_floor": "light", "tier_ceiling": "light"}
    response = client.post("/v1/runs", json=auto, headers=MEDIUM)
    assert response.status_code == 202, response.text
    assert response.json()["tier"] == "light"
    run = client.get(f"/v1/runs/{response.json()['run_id']}", headers=READ).json()
    assert run["tags"][TIER_CEILING_TAG] == "light" and INPUT_SIZE_TAG not in run["tags"]


def test_the_view_shows_what_the_launcher_recorded() -> None:
    """The fields GET /v1/runs/{id} adds, from the tags a tiered launcher writes (unit)."""
    tags = {TIER_TAG: "light", TIER_SOURCE_TAG: "auto", PREDICTED_PEAK_TAG: "314572800",
            TIER_BASIS_TAG: "3 past run(s), theil-sen ... -> light (memory 2g)",
            "e2i/peak_memory": "300000000", "e2i/parent_predicted_peak": "not a number"}
    run = {"runId": "r", "jobName": "probe_heavy_job", "status": "SUCCESS",
           "tags": [{"key": k, "value": v} for k, v in tags.items()]}
    detail = run_detail(run, Catalog([]))
    assert (detail.tier.value, detail.tier_source, detail.predicted_peak) == ("light", "auto", 314572800)
    assert detail.tier_basis.endswith("-> light (memory 2g)") and detail.peak_memory == 300_000_000
    assert detail.parent_predicted_peak is None  # unreadable tags are left out
