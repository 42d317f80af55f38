"""SingleFlight with a counting fake store: concurrent reads of a key share one call, nothing is
kept once it ends, failures reach every caller, a caller that leaves does not cancel the others."""

from __future__ import annotations

import asyncio

import pytest

from e2i_api.single_flight import SingleFlight


class CountingStore:
    """A store whose reads take until ``release`` is set; counts reads per key."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {"a": 1, "b": 2}
        self.reads: dict[str, int] = {}
        self.release = asyncio.Event()
        self.fail = False

    async def read(self, key: str) -> int:
        self.reads[key] = self.reads.get(key, 0) + 1
        await self.release.wait()
        if self.fail:
            raise ConnectionError("store down")
        return self.values[key]


def test_concurrent_reads_of_one_key_share_one_call_per_key() -> None:
    async def scenario() -> None:
        store, flights = CountingStore(), SingleFlight[int]()
        waiting = [asyncio.ensure_future(flights.run(k, lambda k=k: store.read(k))) for k in "aaaaabb"]
        await asyncio.sleep(0)
        store.release.set()
        assert await asyncio.gather(*waiting) == [1, 1, 1, 1, 1, 2, 2]
        assert store.reads == {"a": 1, "b": 1}
        assert (flights.calls, flights.shared) == (2, 5)

    asyncio.run(scenario())


def test_nothing_is_kept_after_the_call_ends() -> None:
    async def scenario() -> None:
        store, flights = CountingStore(), SingleFlight[int]()
        store.release.set()
        assert await flights.run("a", lambda: store.read("a")) == 1
        store.values["a"] = 7  # e.g. the run's status changed
        assert await flights.run("a", lambda: store.read("a")) == 7
        assert store.reads == {"a": 2} and flights.shared == 0

    asyncio.run(scenario())


def test_a_failure_reaches_every_caller_and_the_next_read_tries_again() -> None:
    async def scenario() -> None:
        store, flights = CountingStore(), SingleFlight[int]()
        store.fail = True
        waiting = [asyncio.ensure_future(flights.run("a", lambda: store.read("a"))) for _ in range(3)]
        await asyncio.sleep(0)
        store.release.set()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, ConnectionError) for o in outcomes) and store.reads == {"a": 1}
        store.fail = False
        assert await flights.run("a", lambda: store.read("a")) == 1 and store.reads == {"a": 2}

    asyncio.run(scenario())


def test_a_cancelled_caller_does_not_cancel_the_call_for_the_others() -> None:
    async def scenario() -> None:
        store, flights = CountingStore(), SingleFlight[int]()
        first = asyncio.ensure_future(flights.run("a", lambda: store.read("a")))
        second = asyncio.ensure_future(flights.run("a", lambda: store.read("a")))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        store.release.set()
        assert await second == 1 and store.reads == {"a": 1}

    asyncio.run(scenario())
