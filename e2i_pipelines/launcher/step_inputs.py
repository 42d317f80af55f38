"""Each step's input size and wall time, from the run's event log (the assets' metadata).

Read by the run worker when its run ends and recorded as one run tag, ``e2i/step_inputs``:
``{step_key: {"rows": n, "columns": m, "twins": k, "wall_seconds": s}}``. Sizes come from the
metadata the assets already write: ``rows`` (rows read or explained), ``columns``/``n_columns``
or a table ``schema`` (columns), ``n_twins`` (twins); a key an asset does not write is left out.
Each step's ``peak_memory_bytes`` and ``cpu_seconds`` come from its step-usage event
(:mod:`~e2i_pipelines.launcher.step_usage`), when the step's hook recorded one.
"""

from __future__ import annotations

import json
from typing import Any

from e2i_pipelines.launcher.step_usage import peak_step_tags, usage_of

STEP_INPUTS_TAG = "e2i/step_inputs"
SIZE_KEYS = {"rows": "rows", "columns": "columns", "n_columns": "columns", "n_twins": "twins"}
_MAX_TAG_CHARS = 4000


def _count(value: Any) -> int | None:
    """A non-negative integer from a metadata value (int metadata, or a table schema's columns)."""
    raw = getattr(value, "value", value)
    columns = getattr(raw, "columns", None)
    if columns is not None:
        return len(columns)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw or raw < 0:
        return None
    return int(raw)


def sizes_of(metadata: dict[str, Any]) -> dict[str, int]:
    """The input sizes named in one materialization's metadata (largest per kind)."""
    sizes: dict[str, int] = {}
    for key, kind in SIZE_KEYS.items():
        count = _count(metadata[key]) if key in metadata else None
        if count is not None:
            sizes[kind] = max(sizes.get(kind, 0), count)
    if "columns" not in sizes and "schema" in metadata:
        count = _count(metadata["schema"])
        if count is not None:
            sizes["columns"] = count
    return sizes


def step_inputs(instance: Any, run_id: str) -> dict[str, dict[str, float]]:
    """Per step: input sizes from its materializations, its wall time (start to end) and its
    measured peak memory and CPU time."""
    from dagster._core.events import DagsterEventType

    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
             DagsterEventType.STEP_FAILURE, DagsterEventType.ASSET_MATERIALIZATION,
             DagsterEventType.ENGINE_EVENT}
    steps: dict[str, dict[str, float]] = {}
    starts: dict[str, float] = {}
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        step = event.step_key if event is not None else None
        if step is None:
            continue
        found = steps.setdefault(step, {})
        if event.event_type == DagsterEventType.STEP_START:
            starts[step] = entry.timestamp
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.event_specific_data.materialization.metadata
            for kind, count in sizes_of(dict(metadata)).items():
                found[kind] = max(int(found.get(kind, 0)), count)
        elif event.event_type == DagsterEventType.ENGINE_EVENT:
            found.update(usage_of(event))
        elif step in starts:
            found["wall_seconds"] = round(entry.timestamp - starts[step], 3)
    return steps


def step_inputs_tag(steps: dict[str, dict[str, float]]) -> dict[str, str]:
    """``e2i/step_inputs`` for ``steps`` (empty when there were none; steps beyond the tag's
    size are left out, in step order)."""
    kept: dict[str, dict[str, float]] = {}
    for step in sorted(steps):
        if len(json.dumps({**kept, step: steps[step]})) > _MAX_TAG_CHARS:
            break
        kept[step] = steps[step]
    return {STEP_INPUTS_TAG: json.dumps(kept, sort_keys=True)} if kept else {}


def step_tags(instance: Any, run_id: str) -> dict[str, str]:
    """The run's per-step tags from its event log: ``e2i/step_inputs`` and ``e2i/peak_step``."""
    steps = step_inputs(instance, run_id)
    return {**step_inputs_tag(steps), **peak_step_tags(steps)}
