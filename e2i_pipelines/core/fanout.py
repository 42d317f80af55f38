"""Map chunks in order: here (serial or a thread window), or across a Ray cluster's heavy nodes.

A *mapper* runs ``fn(state, item)`` for every item and yields ``(item, result)`` in item order,
with at most ``window`` items in flight, so memory is bounded by chunk size x window whatever
the number of chunks. The caller keeps reading its input and writing its output (the same
files and running summaries either way); only the per-chunk numerics move.

* :class:`LocalMapper`: serial (``workers=1``) or a thread pool of ``workers`` threads.
* :class:`RayFanout` (``fan_out: true``, from :func:`connect_fanout`): one Ray task per chunk
  on the nodes offering ``e2i-fanout`` (:data:`~e2i_pipelines.tiers.RAY_FANOUT_RESOURCE`),
  2 chunks in flight per slot. ``state`` goes through ``ray.put`` once and is deserialized
  once per worker process and kept there for the map's next chunks, so an explainer or copula
  model is built once per worker, not per chunk (tasks rather than actors: Ray places each
  chunk on whichever heavy node has a free slot, shared with other runs, and the workers and
  their state end with the run's Ray job).

Choices for the Ray tasks:

* ``resources={"e2i-fanout": 1}, num_cpus=0``: the run's own Ray job already holds its node's
  CPUs, so a task asking for a CPU could wait for ever on that node; the ``e2i-fanout`` unit
  (one per concurrent fan-out task on a heavy node) is the admission token instead. A task
  uses the worker's ``n_jobs()`` threads.
* ``max_retries=0``: with any other value Ray retries a task killed by its memory monitor
  ``task_oom_retries`` times (unlimited by default), not ``max_retries`` times; with 0 it
  raises ``OutOfMemoryError`` at once (checked on Ray 2.60). The driver resubmits a chunk
  lost to a system failure (worker crash, node death, OOM kill, lost object) at most
  ``retries`` times; an error raised by the chunk's own code is never retried. A wait fails
  once no alive node offers the resource any more, instead of waiting for ever.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from itertools import islice
from typing import Any, Protocol, TypeVar

from e2i_pipelines.tiers import RAY_FANOUT_RESOURCE

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")
H = TypeVar("H")

log = logging.getLogger(__name__)


FAN_OUT_HELP = (
    "Split the chunks into Ray tasks across the heavy nodes (same output as one node). Needs "
    f"the run on a Ray cluster (RAY_ADDRESS) whose heavy nodes offer the {RAY_FANOUT_RESOURCE} "
    "resource; fails before any heavy work otherwise.")
"""Description of the ``fan_out`` run-config field of the assets that fan out."""


class FanoutUnavailable(RuntimeError):
    """``fan_out: true`` cannot run here: no Ray cluster, or no node offers the resource."""


class Mapper(Protocol):
    """Runs ``fn(state, item)`` per item; yields ``(item, result)`` in item order."""

    def map(self, fn: Callable[[S, T], R], state: S,
            items: Iterable[T]) -> Iterator[tuple[T, R]]: ...


def map_in_order(items: Iterable[T], window: int, submit: Callable[[T], H],
                 collect: Callable[[H], R], cancel: Callable[[H], Any]) -> Iterator[tuple[T, R]]:
    """The one bounded in-order window: ``submit`` up to ``window`` items ahead, ``collect``
    their results in order, ``cancel`` what is still pending when the consumer stops."""
    items = iter(items)
    pending: deque[tuple[T, H]] = deque((item, submit(item))
                                        for item in islice(items, max(1, window)))
    try:
        while pending:
            item, handle = pending.popleft()
            result = collect(handle)
            for nxt in islice(items, 1):
                pending.append((nxt, submit(nxt)))
            yield item, result
    finally:
        for _, handle in pending:
            cancel(handle)


@dataclass
class LocalMapper:
    """In this process: serial, or ``workers`` threads (numpy/scipy/numba release the GIL)."""

    workers: int = 1

    def map(self, fn: Callable[[S, T], R], state: S,
            items: Iterable[T]) -> Iterator[tuple[T, R]]:
        if self.workers <= 1:
            for item in items:
                yield item, fn(state, item)
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="e2i-map") as pool:
            yield from map_in_order(items, self.workers, lambda it: pool.submit(fn, state, it),
                                    lambda fut: fut.result(), lambda fut: fut.cancel())


_WORKER_STATE: dict[str, Any] = {}  # in a Ray worker process: ObjectRef hex -> state


def _run_chunk(fn: Callable[[Any, Any], Any], state_ref: list, item: Any) -> tuple[Any, str]:
    """Ray task body: ``fn(state, item)`` and the id of the node it ran on.

    ``state_ref`` is ``[ObjectRef]`` (nested, so Ray passes the reference, not the value):
    the state is fetched and deserialized once per worker process and kept for the next
    chunks of the same map (one entry: a new map replaces it).
    """
    import ray

    key = state_ref[0].hex()
    if key not in _WORKER_STATE:
        _WORKER_STATE.clear()
        _WORKER_STATE[key] = ray.get(state_ref[0])
    return fn(_WORKER_STATE[key], item), ray.get_runtime_context().get_node_id()


@cache
def _remote_chunk():
    import ray

    return ray.remote(_run_chunk)


@dataclass
class _Pending:
    item: Any
    ref: Any
    attempts: int = 1


@dataclass
class RayFanout:
    """Ray tasks on the nodes offering ``resource``; see the module docstring.

    Get one with :func:`connect_fanout`; ``nodes`` collects the ids of the nodes that ran
    chunks, ``chunks`` counts them.
    """

    workers: int  # fan-out slots: total ``resource`` of the cluster
    heavy_nodes: int  # alive nodes offering ``resource``
    address: str
    resource: str = RAY_FANOUT_RESOURCE
    window: int = 0  # chunks in flight (0: 2 per slot, so no slot idles between chunks)
    retries: int = 1  # resubmissions of a chunk lost to a system failure
    poll_seconds: float = 30.0  # how often a long wait checks that the resource still exists
    owns_connection: bool = False
    log: Any = None  # where resubmissions are reported (default: this module's logger)
    nodes: set[str] = field(default_factory=set)
    chunks: int = 0

    def map(self, fn: Callable[[S, T], R], state: S,
            items: Iterable[T]) -> Iterator[tuple[T, R]]:
        import ray

        state_ref = [ray.put(state)]
        task = _remote_chunk().options(resources={self.resource: 1}, num_cpus=0,
                                       max_retries=0, retry_exceptions=False)

        def submit(item: T) -> _Pending:
            return _Pending(item, task.remote(fn, state_ref, item))

        def collect(p: _Pending) -> R:
            while True:
                try:
                    result, node = self._get(p.ref)
                except _system_errors() as exc:
                    if p.attempts > self.retries:
                        raise
                    (self.log or log).warning(
                        f"fan-out chunk lost ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); resubmitting it "
                        f"(attempt {p.attempts + 1} of {self.retries + 1})")
                    p.ref, p.attempts = task.remote(fn, state_ref, p.item), p.attempts + 1
                    continue
                self.nodes.add(node)
                self.chunks += 1
                return result

        window = self.window or 2 * self.workers
        yield from map_in_order(items, window, submit, collect,
                                lambda p: ray.cancel(p.ref))

    def _get(self, ref: Any) -> Any:
        """``ray.get`` that fails instead of waiting for ever once no alive node offers the
        resource any more (a pending task would otherwise never be scheduled)."""
        import ray

        while True:
            try:
                return ray.get(ref, timeout=self.poll_seconds)
            except ray.exceptions.GetTimeoutError:
                if ray.cluster_resources().get(self.resource, 0.0) < 1:
                    raise FanoutUnavailable(f"no alive node of the Ray cluster at {self.address} "
                                            f"offers {self.resource} any more") from None

    def describe(self) -> str:
        return (f"{self.workers} fan-out slot(s) ({self.resource}) on {self.heavy_nodes} node(s) "
                f"of the Ray cluster at {self.address}")

    def close(self) -> None:
        """Disconnect when this object connected (ends the workers holding cached state)."""
        if self.owns_connection:
            import ray

            ray.shutdown()
            self.owns_connection = False

    def __enter__(self) -> RayFanout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _system_errors() -> tuple[type[BaseException], ...]:
    from ray import exceptions as rex

    return (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError,
            rex.ObjectLostError)


def _needs(resource: str) -> str:
    return f"fan_out: true needs a Ray cluster with heavy nodes offering the {resource} resource"


def connect_fanout(resource: str = RAY_FANOUT_RESOURCE, window: int = 0, retries: int = 1,
                   log: Any = None) -> RayFanout:
    """Connect to the run's Ray cluster (``RAY_ADDRESS``, set for a Ray job's driver, or the
    connection this process already has) and check it offers ``resource``.

    Raises :class:`FanoutUnavailable` saying what is missing; does no other work.
    """
    try:
        import ray
    except ImportError:
        raise FanoutUnavailable(f"{_needs(resource)}; Ray is not installed here "
                                "(pip install 'e2i[ray]')") from None
    owns = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS", "").strip()
        if not address:
            raise FanoutUnavailable(
                f"{_needs(resource)}; no Ray cluster is reachable: RAY_ADDRESS is not set (run on a Ray "
                "cluster, e.g. with the Ray run launcher, or set fan_out: false)")
        try:
            ray.init(address="auto", logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is the same answer
            raise FanoutUnavailable(f"{_needs(resource)}; cannot connect to the Ray cluster at "
                                    f"RAY_ADDRESS={address}: {exc}") from None
        owns = True
    address = ray.get_runtime_context().gcs_address
    total = ray.cluster_resources().get(resource, 0.0)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get(resource, 0) > 0]
    if total < 1:
        offered = sorted(k for k in ray.cluster_resources() if not k.startswith("node:"))
        if owns:
            ray.shutdown()
        raise FanoutUnavailable(f"{_needs(resource)}; the cluster at {address} offers {total:g} "
                                f"{resource} (its resources: {offered})")
    return RayFanout(workers=int(total), heavy_nodes=len(nodes), address=address,
                     resource=resource, window=window, retries=retries, owns_connection=owns,
                     log=log)


def open_fanout(context: Any, fan_out: bool) -> RayFanout | None:
    """For an asset: the Ray fan-out of a ``fan_out: true`` run (None otherwise), logged;
    ``dg.Failure`` saying what is missing when it cannot fan out. Call before heavy work."""
    import dagster as dg

    if not fan_out:
        return None
    try:
        fanout = connect_fanout(log=context.log)
    except FanoutUnavailable as exc:
        raise dg.Failure(str(exc)) from None
    context.log.info(f"fan-out: {fanout.describe()}")
    return fanout


def fanout_metadata(context: Any, fanout: RayFanout | None) -> dict[str, Any]:
    """For an asset: log what a fan-out used and return it as metadata (empty without one)."""
    if fanout is None:
        return {}
    import dagster as dg

    context.log.info(f"fan-out used {len(fanout.nodes)} node(s) for {fanout.chunks} chunk(s) "
                     f"({fanout.workers} slot(s) offered)")
    return {"fan_out_workers": fanout.workers, "fan_out_nodes": len(fanout.nodes),
            "fan_out_node_ids": dg.MetadataValue.json(sorted(fanout.nodes))}
