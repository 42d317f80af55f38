"""Single-flight calls: concurrent callers with the same key share one in-flight call.

A caller that arrives while a call for its key is running gets that call's outcome (value or
exception), so its answer is never older than the start of that read; once the call ends, the
next caller starts a new one (nothing is kept). A caller that is cancelled (client gone) does
not cancel the call for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """``await flights.run(key, call)``: ``call()`` once per key at a time, shared by its callers."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future[T]] = {}
        self.calls = 0  # calls started
        self.shared = 0  # callers served by a call another caller started

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        future = self._calls.get(key)
        if future is None:
            future = asyncio.ensure_future(call())
            self._calls[key] = future
            self.calls += 1
            future.add_done_callback(lambda done: self._finished(key, done))
        else:
            self.shared += 1
        return await asyncio.shield(future)

    def _finished(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        if self._calls.get(key) is future:
            del self._calls[key]
        if not future.cancelled():
            future.exception()  # retrieved: no "never retrieved" warning when every caller left
