"""Probe assets, one per tier: check that a deployment sizes, queues and kills runs as designed.

Each probe allocates ``allocate_mb`` of real (touched) memory and holds it for ``hold_seconds``;
with ``write_mb`` it also writes that many MiB to its output folder, spread over the hold, through
the storage's atomic output (the chaos tests inject faults while it writes).
Operators run them after changing tier profiles; the launcher, scaler, API and stack tests use them.
"""


import os
import time

import dagster as dg
import numpy as np

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.defs.diagnostics.config import ProbeConfig
from e2i_pipelines.defs.launcher.step_usage import with_step_usage
from e2i_pipelines.tiers import TIER_NAMES, Tier, asset_tier_kwargs


def _write_output(context: dg.AssetExecutionContext, storage: E2IStorage, config: ProbeConfig) -> None:
    """Write ``write_mb`` MiB in 1 MiB chunks over ``hold_seconds``, all-or-nothing."""
    final = storage.output_dir(context)
    pause = config.hold_seconds / config.write_mb
    chunk = os.urandom(1024 * 1024)
    with storage.atomic_output(final) as tmp, open(tmp / "probe.bin", "wb") as out:
        for done in range(1, config.write_mb + 1):
            out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            if done % 16 == 0:
                context.log.info(f"probe wrote {done}/{config.write_mb} MiB")
            time.sleep(pause)
    context.log.info(f"probe output complete: {final}")


def _run_probe(context: dg.AssetExecutionContext, storage: E2IStorage,
               config: ProbeConfig) -> dg.MaterializeResult:
    context.log.info(f"probe allocating {config.allocate_mb} MiB, holding {config.hold_seconds}s")
    block = np.ones(config.allocate_mb * 1024 * 1024 // 8, dtype=np.float64)  # touched pages
    if config.write_mb:  # the writing takes the hold time
        _write_output(context, storage, config)
    deadline = time.monotonic() + (0 if config.write_mb else config.hold_seconds)
    while time.monotonic() < deadline:
        time.sleep(0.2)
    if config.fail_message:
        raise dg.Failure(description=f"probe failed on request: {config.fail_message}")
    return dg.MaterializeResult(
        metadata={
            "allocated_mb": config.allocate_mb,
            "checksum": float(block[:10].sum()),
            "cpu_count_visible": os.cpu_count() or 0,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        }
    )


def _probe(tier: Tier) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"probe_{tier.value}",
        group_name="diagnostics",
        description=f"Allocates memory and holds it, at tier {tier.value}.",
        **asset_tier_kwargs(tier),
    )
    def probe(context: dg.AssetExecutionContext, storage: E2IStorage,
              config: ProbeConfig) -> dg.MaterializeResult:
        return _run_probe(context, storage, config)

    return probe


probe_assets = [_probe(Tier(name)) for name in TIER_NAMES]
probe_jobs = [
    dg.define_asset_job(f"probe_{name}_job", selection=[f"probe_{name}"], tags={"e2i/group": "diagnostics"})
    for name in TIER_NAMES
]


def probe_definitions(*sensors: dg.SensorDefinition) -> dg.Definitions:
    """Only the probes (and ``sensors``): a small code location whose runs start in ~2 s of CPU,
    for the scaler and Ray launcher tests."""
    return dg.Definitions(assets=with_step_usage(probe_assets), jobs=probe_jobs, sensors=list(sensors),
                          resources={"storage": E2IStorage()})
