"""Attack: more requests than the limit, spread over several API processes and workers.

Two real API processes (``python -m e2i_api``, one of them with two uvicorn workers) on one real
Postgres database share one budget per client (e2i_api/core/rate_limit.py, table
``e2i_api.rate_limits``): exactly the limit is admitted in all, the rest are 429 with
``Retry-After``; another client keeps its own budget. Failed logins are limited the same way,
per client address, across processes. No Dagster webserver is needed: the limit is checked
before any handler runs (``/v1/jobs`` reads the catalog only).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from e2i_api.core.rate_limit import LOGIN_LIMIT
from tests.api.api_processes import ApiProcess, api_env
from tests.api.conftest import ADMIN, READ, WRITE, api_keys
from tests.support.dagster_processes import free_port

LIMIT = 5
PERIOD = 3600  # "5/hour": one clock window spans the whole test unless it starts at hh:59:5x


@pytest.fixture(scope="module")
def database() -> Iterator[dict]:
    from tests.conftest import fresh_database

    with fresh_database() as db:
        yield db


@pytest.fixture(scope="module")
def apis(database: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ApiProcess]]:
    root = tmp_path_factory.mktemp("shared-limits")
    procs: list[ApiProcess] = []
    try:
        for index, workers in enumerate((2, 1)):
            env = api_env(free_port(), api_keys(), database_url=database["url"], workers=workers,
                          E2I_API_RATE_LIMIT_READ=f"{LIMIT}/hour", E2I_API_RATE_LIMIT_WRITE=f"{LIMIT}/hour")
            if workers > 1:
                (root / f"prom{index}").mkdir()
                env["PROMETHEUS_MULTIPROC_DIR"] = str(root / f"prom{index}")
            procs.append(ApiProcess(free_port(), env, root / f"api{index}.log").start(timeout=300))
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def _window() -> int:
    return int(time.time() // PERIOD)


def test_two_processes_and_their_workers_share_one_limit_per_client(apis: list[ApiProcess],
                                                                   database: dict) -> None:
    start = _window()
    statuses, retry_after = [], []
    for i in range(4 * LIMIT):  # a new connection each: the 2-worker process spreads them
        response = httpx.get(f"{apis[i % 2].url}/v1/jobs", headers=READ if i % 3 else WRITE, timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.append(int(response.headers["Retry-After"]))
            assert "frontend" in response.json()["detail"]
    other = httpx.get(f"{apis[1].url}/v1/jobs", headers=ADMIN, timeout=30)  # client "ops"
    if _window() != start:
        pytest.fail("the test crossed a rate-limit window edge (hh:00): run it again")
    assert statuses.count(200) == LIMIT, statuses
    assert set(statuses) == {200, 429} and statuses[:LIMIT] == [200] * LIMIT, statuses
    assert retry_after and all(0 < r <= PERIOD for r in retry_after), retry_after
    assert other.status_code == 200, other.text
    # One shared counter, keyed by kind and client name only (no key, path or body).
    import psycopg2

    conn = psycopg2.connect(database["url"])
    with conn.cursor() as cur:
        cur.execute("SELECT bucket, hits FROM e2i_api.rate_limits WHERE bucket LIKE 'read%'")
        rows = dict(cur.fetchall())
    conn.close()
    assert rows == {"read:frontend": LIMIT, "read:ops": 1}, rows


def test_failed_logins_are_limited_across_processes(apis: list[ApiProcess]) -> None:
    """UI login is not configured here: each attempt fails (503, or 400 for a forged callback),
    and still counts against the address's budget, in whichever process it lands."""
    budget = int(LOGIN_LIMIT.split("/")[0])
    statuses = []
    for i in range(budget + 6):
        path = "/auth/login" if i % 2 else "/auth/callback?code=x&state=forged"
        statuses.append(httpx.get(f"{apis[i % 2].url}{path}", timeout=30,
                                  follow_redirects=False).status_code)
    assert 429 not in statuses[:budget], statuses
    assert all(s in (400, 503) for s in statuses[:budget]), statuses
    assert statuses[budget:] == [429] * 6, statuses

