"""Replay a seeded mixed workload on the real Docker launcher: static declared tiers vs ``tier: auto``.

The jobs are the probe jobs, not SHAP/twins/causal (those take minutes per run on this 2-core
machine): a probe allocates a known number of MiB, and its run declares ``e2i/input_size`` =
MiB x 1000 rows (10k to 2M rows), so peak memory grows with the input the way a real job's does.
Two jobs: ``probe_heavy`` (declared heavy: over-sized for every input) and ``probe_light``
(declared light: OOM-killed at light on inputs of 1M rows and more, then promoted).

Tiers: :data:`REPLAY_PROFILES`, the production ladder (tiers.DEFAULT_PROFILES: light 2 CPU/2g,
medium 4/8g, heavy 16/32g) scaled to this 2-core, 24 GiB machine: memory keeps its 1:4:16
proportions (768m/3g/12g; 768m because a run worker importing the code location peaks at
~250 MiB before its step allocates anything), CPUs are 0.5/1/2 (1:2:4, not 1:2:8: heavy cannot
have more than the machine's 2 CPUs, and a 0.25-CPU light took 4.1-5.2 s of priced wall per
400 MiB probe against 2.0 s at 0.5 CPU, so it would cost more per run, not less). Docker enforces
fractional ``--cpus``; memory limits are only limits. Prices are the reference VM's
(0.032 USD/vCPU-h + 0.004 USD/GB-h): light 0.019, medium 0.044, heavy 0.112 USD/h (1:2.3:5.9;
production 1:2.2:8.9). The old replay used the small test tiers of tests/launcher/harness.py
(1/768m, 1/1280m, 2/1536m), where heavy cost 2x light and no sizing could save 40 %.

The RATIO line prices each run at its replay tier's budget; a second line prices the same runs
(same tiers, same wall times) at the production budget each tier stands for. Both modes run the
same (job, size) list with the same run config; only the tier choice differs (the declared tier,
or ``e2i/tier=auto`` with the default floor light, ceiling heavy and headroom 1.3).

Each mode starts from an empty Postgres database (empty history) and launches the same runs one
after another; an OOM-killed run is re-launched one tier up with the promotion sensor's own
decision (decide_promotion / promoted_run_tags) at once, instead of waiting for the daemon tick.
``agree=yes`` needs: auto has no more OOM kills after the first five runs of each job than static,
no run refused, and no run OOM-killed at the ceiling tier (heavy).

    flock /tmp/e2i-heavy.lock timeout 1500 python -m benchmarks.replay_sizing [--runs 30] [--seed 29]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from dagster._core.storage.dagster_run import DagsterRunStatus

from e2i_pipelines.launcher.cgroup_usage import MEMORY_UTILISATION_TAG
from e2i_pipelines.launcher.promotion import FAILURE_TAG, decide_promotion, promoted_run_tags
from e2i_pipelines.monitoring.cost import run_cost
from e2i_pipelines.tiers import DEFAULT_PROFILES, TIER_TAG, Tier
from tests.conftest import fresh_database
from tests.launcher.harness import IN_PROCESS, LauncherHarness, probe_config
from tests.launcher.test_auto_tier_docker import finished, size_tag

SIZES_MIB = {"probe_heavy": (10, 100, 400, 1000, 2000), "probe_light": (10, 40, 150, 450, 1000, 2000)}
REPLAY_PROFILES = {
    "light": {"cpus": 0.5, "memory": "768m", "memswap": "768m", "pids": 256, "shm": "64m"},
    "medium": {"cpus": 1, "memory": "3g", "memswap": "3g", "pids": 512, "shm": "256m"},
    "heavy": {"cpus": 2, "memory": "12g", "memswap": "12g", "pids": 1024, "shm": "1g"},
}
"""The production ladder scaled to this machine (see the module docstring)."""
CEILING = Tier.HEAVY
WARM_UP = 5
"""Runs of each job before OOM kills count against auto (it starts from empty history)."""


@dataclass
class Replay:
    """What one mode cost and how often memory ran out."""

    cost: Decimal = Decimal(0)
    production_cost: Decimal = Decimal(0)
    oom_kills: int = 0
    oom_after_warm_up: int = 0
    oom_at_ceiling: int = 0
    promotions: int = 0
    refused: int = 0
    wall: float = 0.0
    utilisation: list[float] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    priced: list[float] = field(default_factory=list)
    """Priced wall seconds (run start to end) of every launched run, promotions included."""


def workload(runs: int, seed: int) -> list[tuple[str, int]]:
    """``runs`` (job, MiB) pairs, half per job, sizes drawn with ``seed``, in random order."""
    rng = random.Random(seed)
    jobs = [job for job in SIZES_MIB for _ in range(runs // len(SIZES_MIB))]
    rng.shuffle(jobs)
    return [(job, rng.choice(SIZES_MIB[job])) for job in jobs]


def _account(harness: LauncherHarness, run_id: str, result: Replay) -> object:
    run = finished(harness, run_id)
    record = harness.instance.get_run_record_by_id(run_id)
    launcher = harness.instance.run_launcher
    tier = Tier(run.tags[TIER_TAG])
    cost = run_cost(tier, launcher.tier_profiles[tier], launcher.prices, record.start_time, record.end_time)
    result.cost += cost.amount
    result.priced.append(record.end_time - record.start_time if record.start_time and record.end_time else 0.0)
    result.production_cost += run_cost(tier, DEFAULT_PROFILES[tier], launcher.prices,
                                       record.start_time, record.end_time).amount
    if MEMORY_UTILISATION_TAG in run.tags:
        result.utilisation.append(float(run.tags[MEMORY_UTILISATION_TAG]))
    return run


def replay(mode: str, runs: list[tuple[str, int]], home: Path) -> Replay:
    """Launch ``runs`` in ``mode`` (static or auto) on a fresh database."""
    result = Replay()
    seen: dict[str, int] = {}
    started = time.monotonic()
    with fresh_database() as db:
        harness = LauncherHarness(home, db, profiles=REPLAY_PROFILES)
        try:
            for job, mib in runs:
                seen[job] = seen.get(job, 0) + 1
                config = {**probe_config(job.removeprefix("probe_"), allocate_mb=mib, hold_seconds=1), **IN_PROCESS}
                tags = {**size_tag(mib), **({TIER_TAG: "auto"} if mode == "auto" else {})}
                try:
                    run = _account(harness, harness.launch(f"{job}_job", config, tags), result)
                except Exception as exc:  # noqa: BLE001 - refused before launch (ceiling)
                    result.refused += 1
                    print(f"  {mode} {job} {mib} MiB refused: {exc}")
                    continue
                result.tiers.append(run.tags[TIER_TAG])
                while run.status == DagsterRunStatus.FAILURE and run.tags.get(FAILURE_TAG) == "oom":
                    result.oom_kills += 1
                    result.oom_after_warm_up += seen[job] > WARM_UP
                    result.oom_at_ceiling += run.tags[TIER_TAG] == CEILING.value
                    decision = decide_promotion(run.tags, True)
                    if decision.tier is None:
                        break
                    result.promotions += 1
                    tags = promoted_run_tags(run.run_id, run.tags, decision.tier)
                    run = _account(harness, harness.launch(f"{job}_job", config, tags), result)
                print(f"  {mode} {job} {mib:4d} MiB -> {run.tags[TIER_TAG]:6s} {run.status.value}"
                      f" {result.priced[-1]:.1f}s"
                      f" {run.tags.get('e2i/tier_basis', '')[:110]}")
        finally:
            harness.close()
    result.wall = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=29)
    args = parser.parse_args()
    runs = workload(args.runs, args.seed)
    print(f"workload (seed {args.seed}): {runs}; load {os.getloadavg()[0]:.2f}")
    results = {}
    for mode in ("static", "auto"):
        with tempfile.TemporaryDirectory() as home:
            results[mode] = replay(mode, runs, Path(home) / "dagster_home")
    for mode, r in results.items():
        mean_util = statistics.fmean(r.utilisation) if r.utilisation else float("nan")
        print(f"{mode:6s} cost={r.cost:.6f} USD oom_kills={r.oom_kills} (after warm-up "
              f"{r.oom_after_warm_up}; at ceiling {r.oom_at_ceiling}) promotions={r.promotions} refused={r.refused} wall={r.wall:.0f}s "
              f"mean_memory_utilisation={mean_util:.3f} tiers={','.join(r.tiers)}")
    static, auto = results["static"], results["auto"]
    agree = "yes" if (auto.oom_after_warm_up <= static.oom_after_warm_up and auto.refused == 0
                      and auto.oom_at_ceiling == 0) else "no"
    ratio = static.cost / auto.cost if auto.cost else Decimal(0)
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}")
    print(f"RATIO name=replay_cost runs={len(runs)} ours_s={auto.cost:.6f} peer=static "
          f"peer_s={static.cost:.6f} ratio={ratio:.2f} agree={agree}")
    production = static.production_cost / auto.production_cost if auto.production_cost else Decimal(0)
    print(f"at production tier budgets: static {static.production_cost:.6f} USD, auto "
          f"{auto.production_cost:.6f} USD, ratio {production:.2f}")


if __name__ == "__main__":
    main()
