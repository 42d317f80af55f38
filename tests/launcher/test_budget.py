"""Thread budget env vars and the n_jobs helper (no Docker)."""

import os

import pytest

from e2i_pipelines.core.budget import N_JOBS_ENV, n_jobs, thread_env


def test_thread_env_rounds_up_and_never_zero():
    assert thread_env(2) == {
        "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
        "NUMEXPR_NUM_THREADS": "2", N_JOBS_ENV: "2",
    }
    assert thread_env(0.5)[N_JOBS_ENV] == "1"
    assert thread_env(2.5)["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="must be > 0"):
        thread_env(0)


def test_n_jobs(monkeypatch):
    monkeypatch.delenv(N_JOBS_ENV, raising=False)
    assert n_jobs() == (os.cpu_count() or 1)
    monkeypatch.setenv(N_JOBS_ENV, "3")
    assert n_jobs() == 3
    monkeypatch.setenv(N_JOBS_ENV, "three")
    with pytest.raises(ValueError, match="E2I_N_JOBS='three' is not an integer"):
        n_jobs()
