"""Command line: ``python -m e2i_pipelines.scaler dry-run [--config PATH] [--json]``.

Prints what the scaler would decide now on the instance in ``$DAGSTER_HOME`` and why (all
inputs), without writing anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from e2i_pipelines.scaler.config import ScalerConfigError, load_config
from e2i_pipelines.scaler.evaluation import ScalerEvaluation, evaluate


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


def format_evaluation(evaluation: ScalerEvaluation) -> str:
    """Human-readable report of one evaluation."""
    d, cfg = evaluation.decision, evaluation.config
    lines = [
        f"would set pool {evaluation.pool} limit to {d.allowed}"
        + (f" (now {d.current_limit})" if d.changed else f" (already {d.current_limit}: no write)"),
        f"  bound by:       {d.bound_by}",
        f"  demand:         {d.demand} = {d.queued} queued + {d.running} running heavy runs",
        f"  range:          min {d.min_heavy_runs} .. max {d.max_heavy_runs}  (config {cfg.path})",
    ]
    if evaluation.capacity is None:
        lines.append("  capacity:       not measured (no heavy demand)")
    else:
        c, p = evaluation.capacity, evaluation.heavy_profile
        lines += [
            f"  capacity:       {d.capacity_slots} heavy run(s) fit ({c.source})",
            f"    total:        {c.total_cpus:g} CPUs, {_gib(c.total_memory_bytes)}",
            f"    held:         {c.held_cpus:g} CPUs, {_gib(c.held_memory_bytes)} "
            f"by {c.holding_containers} other container(s)",
            f"    services:     {c.service_cpus:.2f} CPUs, {_gib(c.service_memory_bytes)} of that in use "
            "by non-run containers (runs count with their limits)",
            f"    heavy run:    {p.cpus:g} CPUs, {_gib(p.memory_bytes)} ({p.source})",
        ]
        need_cpus, need_memory = c.need_of(p)
        if (need_cpus, need_memory) != (p.cpus, p.memory_bytes):
            lines.append(f"    capped at host: {need_cpus:.2f} CPUs, {_gib(need_memory)} per heavy run "
                         "(host minus its services)")
        if c.note:
            lines.append(f"    note:         {c.note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2i_pipelines.scaler")
    sub = parser.add_subparsers(dest="command", required=True)
    dry = sub.add_parser("dry-run", help="print what the scaler would decide now, change nothing")
    dry.add_argument("--config", help="scaler YAML (default: $E2I_SCALER_CONFIG or packaged)")
    dry.add_argument("--json", action="store_true", help="print the decision record as JSON")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ScalerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from dagster import DagsterInstance
    from dagster._core.errors import DagsterHomeNotSetError

    try:
        instance = DagsterInstance.get()
    except DagsterHomeNotSetError:
        print("error: DAGSTER_HOME is not set: point it at the instance to inspect", file=sys.stderr)
        return 2
    with instance:
        evaluation = evaluate(instance, config)
    print(json.dumps(evaluation.record(), indent=2) if args.json else format_evaluation(evaluation))
    return 0
