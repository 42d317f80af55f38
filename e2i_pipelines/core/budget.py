"""The CPU budget a run container gets: thread-count env vars and the ``n_jobs`` helper.

The launcher sets these variables from the run's tier so that numeric libraries and joblib use
the container's CPUs instead of one thread per host core. Job code calls :func:`n_jobs`.
"""

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

N_JOBS_ENV = "E2I_N_JOBS"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def threads_for_cpus(cpus: float) -> int:
    """Whole threads for a (possibly fractional) CPU budget: ceil, at least 1."""
    if cpus <= 0:
        raise ValueError(f"CPU budget must be > 0, got {cpus!r}")
    return max(1, math.ceil(cpus))


def thread_env(cpus: float) -> dict[str, str]:
    """Environment variables giving a container of ``cpus`` CPUs matching thread counts."""
    threads = str(threads_for_cpus(cpus))
    return {**{name: threads for name in THREAD_ENV_VARS}, N_JOBS_ENV: threads}


def n_jobs() -> int:
    """Parallelism for this process: ``E2I_N_JOBS`` when set (by the launcher), else cpu_count."""
    raw = os.environ.get(N_JOBS_ENV, "").strip()
    if not raw:
        return os.cpu_count() or 1
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{N_JOBS_ENV}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{N_JOBS_ENV}={raw!r} must be >= 1")
    return value


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on the calling thread only, for code that runs threads of its own (numba kernels,
    chunk workers): idle OpenBLAS threads busy-wait between calls and take their CPUs."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
