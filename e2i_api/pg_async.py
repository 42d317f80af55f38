"""psycopg2 connections in asynchronous mode, driven by the event loop: a query waits on its
socket (``add_reader``/``add_writer``), not in a thread.

A thread per read costs hand-offs between the read's thread and the event loop (the GIL and a
wake-up each); on a saturated host each one waits for a CPU slot, and a read took 100-500 ms at
the tail while the loop itself answered in 1 ms. Here a read is one socket wait on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.extensions as ext


def _set_done(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _wait(conn: Any) -> None:
    """Drive ``conn`` (connect or query) until it is ready; closes it when cancelled."""
    loop = asyncio.get_running_loop()
    fd = conn.fileno()
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        ready = loop.create_future()
        watch, unwatch = ((loop.add_reader, loop.remove_reader) if state == ext.POLL_READ
                          else (loop.add_writer, loop.remove_writer))
        watch(fd, _set_done, ready)
        woke = False
        try:
            await ready
            woke = True
        finally:
            unwatch(fd)
            if not woke:  # cancelled: a query may be in flight, the connection is not reusable
                conn.close()


class AsyncPool:
    """At most ``size`` asynchronous connections to ``dsn``, kept open between reads; a
    connection that failed is closed, the next read opens a new one."""

    def __init__(self, dsn: str, size: int = 4, statement_timeout_ms: int = 5000,
                 connect_timeout: int = 5, application_name: str = "e2i-api-status") -> None:
        self.dsn, self.size = dsn, size
        self.connect_kwargs = {"connect_timeout": connect_timeout, "application_name": application_name,
                               "options": f"-c statement_timeout={statement_timeout_ms}"}
        self._idle: list[Any] = []
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.size))
        return self._slots[1]

    async def _connect(self) -> Any:
        conn = psycopg2.connect(self.dsn, async_=True, **self.connect_kwargs)
        await _wait(conn)
        return conn

    async def fetchall(self, sql: str, params: dict[str, Any] | Sequence[Any]) -> tuple[list[str], list[tuple]]:
        """Column names and rows of ``sql``; psycopg2 errors propagate. A kept connection that
        turns out broken (Postgres restarted) is replaced once by a new one."""
        async with self._semaphore():
            while True:
                kept = bool(self._idle)
                conn = self._idle.pop() if kept else await self._connect()
                try:
                    cursor = conn.cursor()
                    cursor.execute(sql, params)
                    await _wait(conn)
                    columns = [c.name for c in cursor.description]
                    rows = cursor.fetchall()
                    cursor.close()
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    conn.close()
                    if kept and not isinstance(exc, ext.QueryCanceledError):
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                self._idle.append(conn)
                return columns, rows

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
