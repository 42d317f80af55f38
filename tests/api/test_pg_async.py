"""AsyncPool against a real PostgreSQL: reads on the event loop, connections kept and bounded, a
connection killed by the server replaced, the statement timeout applied."""

from __future__ import annotations

import asyncio

import psycopg2
import pytest

from e2i_api.pg_async import AsyncPool
from tests.conftest import _pg_connect

pytestmark = pytest.mark.postgres


def test_concurrent_reads_share_a_bounded_set_of_kept_connections(postgres_db: dict) -> None:
    pool = AsyncPool(postgres_db["url"], size=3)

    async def scenario() -> list:
        return await asyncio.gather(*(pool.fetchall("SELECT %(n)s AS n, pg_backend_pid() AS pid, pg_sleep(0.05)",
                                                    {"n": n}) for n in range(12)))

    try:
        results = asyncio.run(scenario())
        assert [rows[0][0] for _, rows in results] == list(range(12))
        assert results[0][0] == ["n", "pid", "pg_sleep"]
        assert len({rows[0][1] for _, rows in results}) == 3 == len(pool._idle)
    finally:
        pool.close()


def test_a_connection_the_server_killed_is_replaced(postgres_db: dict) -> None:
    pool = AsyncPool(postgres_db["url"], size=1)
    try:
        (_, [(pid,)]) = asyncio.run(pool.fetchall("SELECT pg_backend_pid()", ()))
        admin = _pg_connect()
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()
        (_, [(new_pid,)]) = asyncio.run(pool.fetchall("SELECT pg_backend_pid()", ()))
        assert new_pid != pid
    finally:
        pool.close()


def test_statement_timeout_and_errors_reach_the_caller(postgres_db: dict) -> None:
    pool = AsyncPool(postgres_db["url"], size=1, statement_timeout_ms=100)
    try:
        with pytest.raises(psycopg2.extensions.QueryCanceledError):
            asyncio.run(pool.fetchall("SELECT pg_sleep(2)", ()))
        with pytest.raises(psycopg2.errors.UndefinedTable):
            asyncio.run(pool.fetchall("SELECT * FROM no_such_table", ()))
        assert asyncio.run(pool.fetchall("SELECT 1", ())) == (["?column?"], [(1,)])
    finally:
        pool.close()


def test_a_cancelled_read_closes_its_connection(postgres_db: dict) -> None:
    pool = AsyncPool(postgres_db["url"], size=1)

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.fetchall("SELECT pg_sleep(2)", ()), 0.2)
        assert pool._idle == []  # its query may still run: not put back
        assert await pool.fetchall("SELECT 1", ()) == (["?column?"], [(1,)])

    try:
        asyncio.run(scenario())
    finally:
        pool.close()
