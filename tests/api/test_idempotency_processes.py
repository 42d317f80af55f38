"""Idempotency-Key across API processes: real uvicorn processes, a real ``dagster dev`` on
PostgreSQL storage and the advisory lock in that same database.

The run queue admits no runs (``max_concurrent_runs: 0``): launched runs stay QUEUED in storage,
which is all idempotency needs, and no run process competes for the CPU.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg2
import pytest
from dagster import DagsterInstance, RunsFilter
from fastapi.testclient import TestClient
from pydantic import ValidationError

from e2i_api.core.rate_limit import RateLimits
from e2i_api.idempotency import IDEMPOTENCY_TAG, advisory_key
from e2i_api.main import create_app
from tests.api.api_processes import ApiProcess, api_env
from tests.api.conftest import WRITE, WRITE_KEY, api_settings
from tests.conftest import fresh_database
from tests.support.dagster_processes import (
    dagster_dev_port,
    free_port,
    postgres_storage,
    write_instance_yaml,
)
from tests.support.markers import needs

KEYS = [{"name": "frontend", "key": WRITE_KEY, "scopes": ["runs:read", "runs:write"]}]
BODY = {"job": "probe_light_job", "params": {"probe_light": {"allocate_mb": 1}}}


@pytest.fixture(scope="module")
@needs("postgres")
def pg() -> Iterator[dict]:
    with fresh_database() as params:
        yield params


@pytest.fixture(scope="module")
def pg_home(tmp_path_factory: pytest.TempPathFactory, pg: dict) -> Path:
    home = tmp_path_factory.mktemp("pg_dagster_home")
    write_instance_yaml(home, {"storage": postgres_storage(pg), "concurrency": {
        "pools": {"granularity": "run", "default_limit": 1000}, "runs": {"max_concurrent_runs": 0}}})
    return home


@pytest.fixture(scope="module")
@needs("webserver")
def pg_dagster_port(pg_home: Path) -> Iterator[int]:
    with dagster_dev_port(pg_home) as port:
        yield port


def start_api(pg_dagster_port: int, pg: dict, log: Path, **extra: str) -> ApiProcess:
    return ApiProcess(free_port(), api_env(pg_dagster_port, KEYS, pg["url"], **extra), log).start()


@pytest.fixture(scope="module")
def two_apis(pg_dagster_port: int, pg: dict, pg_home: Path) -> Iterator[tuple[ApiProcess, ApiProcess]]:
    first = start_api(pg_dagster_port, pg, pg_home / "api-1.log")
    second = start_api(pg_dagster_port, pg, pg_home / "api-2.log")
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def runs_with_key(home: Path, key: str) -> int:
    """Runs in the instance's storage tagged with idempotency ``key``."""
    with DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs_count(RunsFilter(tags={IDEMPOTENCY_TAG: key}))


def post(url: str, key: str, body: dict = BODY) -> httpx.Response:
    return httpx.post(f"{url}/v1/runs", json=body, headers={**WRITE, "Idempotency-Key": key}, timeout=60)


def test_two_processes_race_one_key_fifty_times(two_apis: tuple[ApiProcess, ApiProcess], pg_home: Path) -> None:
    """50 keys; per key 4 requests (2 per process) released at once: one run per key."""
    urls = [two_apis[0].url, two_apis[1].url] * 2
    barrier = threading.Barrier(len(urls))

    def racer(url: str, key: str) -> httpx.Response:
        barrier.wait()
        return post(url, key)

    keys = [f"race-{uuid.uuid4().hex[:12]}" for _ in range(50)]
    with ThreadPoolExecutor(len(urls)) as pool:
        for key in keys:
            responses = list(pool.map(racer, urls, [key] * len(urls)))
            assert [r.status_code for r in responses] == [202] * len(urls), [r.text for r in responses]
            assert len({r.json()["run_id"] for r in responses}) == 1, [r.json() for r in responses]
            assert sorted(r.json()["replayed"] for r in responses) == [False] + [True] * (len(urls) - 1)
    assert [runs_with_key(pg_home, key) for key in keys] == [1] * len(keys)


def test_restart_between_requests_replays_the_run(pg_dagster_port: int, pg: dict, pg_home: Path) -> None:
    key = f"restart-{uuid.uuid4().hex[:12]}"
    with start_api(pg_dagster_port, pg, pg_home / "api-restart.log") as api:
        first = post(api.url, key)
    assert first.status_code == 202 and first.json()["replayed"] is False, first.text
    with start_api(pg_dagster_port, pg, pg_home / "api-restart.log") as api:
        again = post(api.url, key)
        other = post(api.url, key, {**BODY, "params": {"probe_light": {"allocate_mb": 2}}})
    assert again.status_code == 202, again.text
    assert again.json()["run_id"] == first.json()["run_id"] and again.json()["replayed"] is True
    assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert runs_with_key(pg_home, key) == 1


def test_a_held_key_waits_then_launches_or_answers_409(two_apis: tuple[ApiProcess, ApiProcess], pg: dict,
                                                       pg_dagster_port: int, pg_home: Path) -> None:
    """Another session holding the key's lock (a request still launching elsewhere) makes the
    request wait; past E2I_API_IDEMPOTENCY_WAIT_SECONDS it gets 409."""
    key = f"held-{uuid.uuid4().hex[:12]}"
    holder = psycopg2.connect(pg["url"])
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(f"frontend\x00{key}"),))
        with start_api(pg_dagster_port, pg, pg_home / "api-wait.log", E2I_API_IDEMPOTENCY_WAIT_SECONDS="1") as api:
            busy = post(api.url, key)
        assert busy.status_code == 409 and "still launching" in busy.json()["detail"], busy.text
        assert busy.headers["Retry-After"] == "5"
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            waiting = pool.submit(post, two_apis[0].url, key)
            time.sleep(1.5)
            assert not waiting.done()
            holder.rollback()  # the "first request" finishes: the waiter goes ahead
            response = waiting.result()
        assert response.status_code == 202 and time.monotonic() - started >= 1.5, response.text
    finally:
        holder.close()
    assert runs_with_key(pg_home, key) == 1


def test_unreachable_lock_database_is_503() -> None:
    """A keyed POST whose database is down answers 503 naming what needs it (not 500): first
    the rate limiter, which counts in the same database; with in-memory counters, the
    Idempotency-Key lock."""
    dead = f"postgresql://e2i:e2i@127.0.0.1:{free_port()}/dagster"
    settings = api_settings(free_port(), database_url=dead, dagster_timeout_seconds=2)
    app = create_app(settings)
    with TestClient(app) as client:
        response = client.post("/v1/runs", json=BODY, headers={**WRITE, "Idempotency-Key": "k-503"})
        assert response.status_code == 503, response.text
        assert "rate limiter unavailable" in response.json()["detail"]
        app.state.rate_limits = RateLimits(settings.rate_limit_read, settings.rate_limit_write)
        response = client.post("/v1/runs", json=BODY, headers={**WRITE, "Idempotency-Key": "k-503"})
    assert response.status_code == 503, response.text
    assert "idempotency database" in response.json()["detail"] and response.headers["Retry-After"] == "5"


def test_several_workers_need_the_database() -> None:
    with pytest.raises(ValidationError, match="E2I_API_DATABASE_URL"):
        api_settings(3000, workers=2)
    assert api_settings(3000, workers=2, database_url="postgresql://x@h/d").workers == 2


def test_storage_reads_match_graphql_and_finished_results_are_kept(pg_dagster_port: int, pg: dict) -> None:
    """With the database the API reads runs from the run storage: same answer as over GraphQL.
    A finished (here: canceled while queued) run's results are kept; an active one's are not."""
    with (TestClient(create_app(api_settings(pg_dagster_port, database_url=pg["url"]))) as direct,
          TestClient(create_app(api_settings(pg_dagster_port))) as graphql):
        assert direct.app.state.run_reader is not None and graphql.app.state.run_reader is None
        run_id = direct.post("/v1/runs", json={**BODY, "tags": {"client/team": "t"}}, headers=WRITE).json()["run_id"]
        queued = direct.get(f"/v1/runs/{run_id}", headers=WRITE)
        assert queued.status_code == 200 and queued.json()["status"] == "QUEUED"
        assert queued.json() == graphql.get(f"/v1/runs/{run_id}", headers=WRITE).json()
        assert direct.get(f"/v1/runs/{run_id}/results", headers=WRITE).status_code == 200
        assert direct.app.state.finished_results.get(run_id) is None
        missing = "00000000-0000-4000-8000-000000000000"
        assert direct.get(f"/v1/runs/{missing}", headers=WRITE).status_code == 404

        assert direct.post(f"/v1/runs/{run_id}/cancel", headers=WRITE).status_code == 202
        deadline = time.monotonic() + 60
        while direct.get(f"/v1/runs/{run_id}", headers=WRITE).json()["status"] != "CANCELED":
            assert time.monotonic() < deadline, "queued run not canceled in 60 s"
            time.sleep(0.5)
        canceled = direct.get(f"/v1/runs/{run_id}", headers=WRITE).json()
        assert canceled == graphql.get(f"/v1/runs/{run_id}", headers=WRITE).json()
        results = direct.get(f"/v1/runs/{run_id}/results", headers=WRITE)
        assert results.status_code == 200 and direct.app.state.finished_results.get(run_id) is not None
        assert direct.get(f"/v1/runs/{run_id}/results", headers=WRITE).json() == results.json()


def test_concurrent_status_reads_share_one_storage_read(pg_dagster_port: int, pg: dict) -> None:
    """Twenty concurrent reads of one run from the real run storage: one read, twenty equal
    answers; once the run changes (canceled) the next read shows it: nothing is kept."""
    import asyncio

    from e2i_api.dagster_client import RunNotFound
    from e2i_api.run_store import StorageRuns

    reader = StorageRuns(pg["url"])

    async def twenty(run_id: str) -> list:
        return await asyncio.gather(*(reader.get_run(run_id) for _ in range(20)), return_exceptions=True)

    try:
        with TestClient(create_app(api_settings(pg_dagster_port, database_url=pg["url"]))) as client:
            run_id = client.post("/v1/runs", json=BODY, headers=WRITE).json()["run_id"]
            queued = asyncio.run(twenty(run_id))
            assert (reader.reads.calls, reader.reads.shared) == (1, 19)
            assert all(r == queued[0] for r in queued) and queued[0]["status"] == "QUEUED"
            assert queued[0]["runId"] == run_id

            assert client.post(f"/v1/runs/{run_id}/cancel", headers=WRITE).status_code == 202
            deadline = time.monotonic() + 60
            while client.get(f"/v1/runs/{run_id}", headers=WRITE).json()["status"] != "CANCELED":
                assert time.monotonic() < deadline, "queued run not canceled in 60 s"
                time.sleep(0.5)
            canceled = asyncio.run(twenty(run_id))
            assert reader.reads.calls == 2 and {r["status"] for r in canceled} == {"CANCELED"}

            missing = asyncio.run(twenty("00000000-0000-4000-8000-000000000000"))
            assert reader.reads.calls == 3 and all(isinstance(r, RunNotFound) for r in missing)
    finally:
        reader.close()


def test_postgres_key_locks_exclude_each_other(pg: dict) -> None:
    """Two lock objects (as in two processes) on one key: the second waits, then gets 409-worthy
    KeyStillLaunching; once the first is released it holds. Connections are kept for reuse."""
    import asyncio

    from e2i_api.idempotency import KeyStillLaunching, PostgresKeyLocks

    async def scenario() -> None:
        first, second = (PostgresKeyLocks(pg["url"], wait_seconds=0.5) for _ in range(2))
        try:
            async with first.hold("client\x00k"):
                with pytest.raises(KeyStillLaunching):
                    async with second.hold("client\x00k"):
                        pytest.fail("two holders of one key")
                async with second.hold("client\x00other"):  # other keys are independent
                    pass
            async with second.hold("client\x00k"):
                pass
            assert len(first._pool._idle) == 1 and len(second._pool._idle) == 1
        finally:
            first.close()
            second.close()

    asyncio.run(scenario())
