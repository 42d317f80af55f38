"""The CPU budget a run container gets: thread-count env vars and the ``n_jobs`` helper.

The launcher sets these variables from the run's tier so that numeric libraries and joblib use
the container's CPUs instead of one thread per host core. Job code calls :func:`n_jobs`.
"""

import functools
import math
import os
from collections.abc import Callable, Iterator
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
def single_threaded_blas(numpy_only: bool = False) -> Iterator[None]:
    """BLAS on the calling thread only, for code that runs threads of its own (numba kernels,
    chunk workers): idle OpenBLAS threads busy-wait between calls and take their CPUs.

    ``numpy_only`` limits just NumPy's own OpenBLAS through its thread setter, for code whose
    BLAS/LAPACK calls are all NumPy's: threadpoolctl scans every loaded library (20-45 ms in a
    fresh process that has imported pandas and pyarrow), more than a 100k-row regression takes.
    """
    setter = _numpy_openblas_threads() if numpy_only else None
    if setter is None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    get, put = setter
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


@functools.cache
def _numpy_openblas_threads() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the OpenBLAS thread count NumPy links, or None (another BLAS)."""
    import ctypes

    import numpy as np

    try:  # dlsym on the extension's handle also searches the libraries it links
        lib = ctypes.CDLL(np._core._multiarray_umath.__file__)
    except (AttributeError, OSError):
        return None
    for prefix, suffix in (("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", "")):
        try:
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
            put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
        except AttributeError:
            continue
        get.restype, get.argtypes = ctypes.c_int, []
        put.restype, put.argtypes = None, [ctypes.c_int]
        return get, put
    return None
