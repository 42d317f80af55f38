"""The code location's default executor: Dagster's ``multi_or_in_process_executor`` (same config,
same ``in_process`` switch) whose step processes start from a **forkserver** unless the run config
names a ``start_method``.

With Dagster's default ``spawn`` every step process imports the whole code location again
(``e2i_pipelines.definitions``: 3.5-6 s of CPU here, most of it scipy, LightGBM, numba and
matplotlib) and MLflow, so a five-step causal run pays five imports before any work. The
forkserver imports them once and forks each step from there. The causal job on 5k rows, default
executor, this 2-core machine under load 4-6: spawn 113 and 76 s; forkserver with the code
location preloaded 71 and 50 s; with MLflow preloaded too 28 s (a step starts 0-1 s after its
worker, not 3-9 s). Steps stay separate processes, so an OOM kill still hits only the step, and
the cgroup accounting is unchanged. ``start_method: {spawn: {}}`` in the run config restores
Dagster's behaviour.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster._core.definitions.executor_definition import (
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
    multiple_process_executor_requirements,
)

PRELOAD_MODULES = ["e2i_pipelines.definitions", "mlflow"]
"""What the forkserver imports once: the code location, and MLflow, which most analysis steps
log to (1.7 s more per step otherwise)."""
DEFAULT_START_METHOD = {"forkserver": {"preload_modules": PRELOAD_MODULES}}


def multiprocess_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` of the ``multiprocess`` mode with the forkserver unless a start method is given."""
    return {**config, "start_method": config.get("start_method") or DEFAULT_START_METHOD}


def _requirements(executor_config: dict[str, Any]) -> list:
    return multiple_process_executor_requirements() if "multiprocess" in executor_config else []


@dg.executor(
    name="multi_or_in_process_executor",
    config_schema=dg.multi_or_in_process_executor.config_schema,
    requirements=_requirements,
)
def step_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's default executor, steps forked from a preloaded forkserver (module doc)."""
    config = init_context.executor_config
    if "multiprocess" in config:
        return _core_multiprocess_executor_creation(multiprocess_config(dict(config["multiprocess"])))
    return _core_in_process_executor_creation(config["in_process"])
