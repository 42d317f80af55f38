"""The exporter's usage histograms: measured peak memory and CPU utilisation of finished runs, by
tier and job, from the run worker's tags, observed once even when the tags arrive after the run
ended (the worker writes them just after); a real Postgres instance read over HTTP."""

from __future__ import annotations

import time

import dagster as dg

from e2i_pipelines.launcher.cgroup_usage import CPU_UTILISATION_TAG, PEAK_MEMORY_TAG
from tests.costs.runs import add_run
from tests.monitoring.exporter_http import exporter_port, scrape

MIB = 1024**2


def _usage(peak_mib: int, cpu: float) -> dict[str, str]:
    return {PEAK_MEMORY_TAG: str(peak_mib * MIB), CPU_UTILISATION_TAG: f"{cpu:.4f}"}


def _bucket(m: dict, name: str, le: float, labels: tuple) -> float:
    """The cumulative count of histogram ``name``'s bucket ``le`` (Prometheus writes 1.0e+09)."""
    [value] = [v for (n, lab), v in m.items() if n == f"{name}_bucket"
               and tuple(x for x in lab if x[0] != "le") == labels and float(dict(lab)["le"]) == le]
    return value


def test_peak_memory_and_cpu_utilisation_histograms(pg_instance: dg.DagsterInstance) -> None:
    now = time.time()
    add_run(pg_instance, "shap_job", "heavy", start=now - 300, seconds=100, tags=_usage(900, 0.05))
    add_run(pg_instance, "shap_job", "heavy", start=now - 200, seconds=100, tags=_usage(3000, 0.2))
    add_run(pg_instance, "causal_job", "light", start=now - 100, seconds=50, tags=_usage(100, 0.8))
    late = add_run(pg_instance, "causal_job", "light", start=now - 60, seconds=30)  # tags not yet
    add_run(pg_instance, "causal_job", "light", start=now - 90_000, seconds=5, tags=_usage(50, 0.5))  # old
    add_run(pg_instance, "causal_job", "light", start=now - 80, seconds=5,
            tags={PEAK_MEMORY_TAG: "not a number"})

    with exporter_port(pg_instance) as port:
        m = scrape(port)
        shap = (("job", "shap_job"), ("tier", "heavy"))
        causal = (("job", "causal_job"), ("tier", "light"))
        assert m[("e2i_run_peak_memory_bytes_count", shap)] == 2
        assert m[("e2i_run_peak_memory_bytes_sum", shap)] == 3900 * MIB
        assert _bucket(m, "e2i_run_peak_memory_bytes", 1024 * MIB, shap) == 1
        assert m[("e2i_run_cpu_utilisation_sum", shap)] == 0.25
        assert _bucket(m, "e2i_run_cpu_utilisation", 0.1, shap) == 1
        assert m[("e2i_run_peak_memory_bytes_count", causal)] == 1  # not the old one, not the garbage
        assert _bucket(m, "e2i_run_cpu_utilisation", 0.75, causal) == 0

        pg_instance.add_run_tags(late, _usage(200, 0.4))  # the worker's tags, after the run ended
        m = scrape(port)
        assert m[("e2i_run_peak_memory_bytes_count", causal)] == 2
        assert m[("e2i_run_peak_memory_bytes_sum", causal)] == 300 * MIB
        m = scrape(port)  # nothing observed twice
        assert m[("e2i_run_peak_memory_bytes_count", causal)] == 2
        assert m[("e2i_run_cpu_utilisation_count", shap)] == 2
