"""Hooks that record each step's peak memory and CPU time in the step's own process.

:func:`with_step_usage` attaches them to every asset and asset check of a code location, so they
run in every job (named jobs, UI materializations, sensors' runs) on every executor and launcher;
:mod:`e2i_pipelines.launcher.step_usage` says what is measured where.
"""

from collections.abc import Iterable
from typing import TypeVar

import dagster as dg

from e2i_pipelines.launcher.step_usage import record_step_usage

T = TypeVar("T")


@dg.success_hook(name="e2i_step_usage_success")
def step_usage_on_success(context: dg.HookContext) -> None:
    """After a step succeeded: record what it used."""
    record_step_usage(context)


@dg.failure_hook(name="e2i_step_usage_failure")
def step_usage_on_failure(context: dg.HookContext) -> None:
    """After a step failed: record what it used."""
    record_step_usage(context)


STEP_USAGE_HOOKS = {step_usage_on_success, step_usage_on_failure}


def with_step_usage(definitions: Iterable[T]) -> list[T]:
    """``definitions`` with the step-usage hooks on each executable asset or check (others as is)."""
    return [d.with_hooks(STEP_USAGE_HOOKS) if isinstance(d, dg.AssetsDefinition) and d.is_executable else d
            for d in definitions]
