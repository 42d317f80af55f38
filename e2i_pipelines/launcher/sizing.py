"""``tier: auto``: choose a run's tier from the peak memory of past runs of the same steps.

History lives in the instance (Postgres): every run a tiered launcher starts is tagged
``e2i/sizing_key`` (a hash of the step keys it executes, so a promoted run of the same assets
shares it); its run worker records ``e2i/peak_memory`` and ``e2i/step_inputs`` when it ends. A
new auto run reads the last :data:`HISTORY_LIMIT` finished runs with its key through
``instance.get_runs`` (one indexed tag query): daemon, webserver and API see the same history,
also after restarts. Successful runs are samples, OOM-killed ones lower bounds
(:mod:`e2i_pipelines.launcher.sizing_fit`).

The new run's input size is its ``e2i/input_size`` tag (``rows`` or ``rowsxcolumns``, set by whoever
launches it and knows the dataset); a past run's size is the largest step's rows x columns in its
``e2i/step_inputs``, else its own ``e2i/input_size`` tag. The chosen tier is the smallest between
floor and ceiling whose memory holds prediction x headroom (``e2i/tier_headroom`` tag, else
``E2I_AUTO_TIER_HEADROOM``, else 1.3); the ceiling when only it holds the prediction, with less
headroom. No history: the declared tier, else the ceiling. A prediction above the ceiling's
memory: :class:`TierCeilingError` before anything is launched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterRunStatus, RunsFilter

from e2i_pipelines.launcher.cgroup_usage import PEAK_MEMORY_TAG, tag_number
from e2i_pipelines.launcher.promotion import (
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    PREDICTED_PEAK_TAG,
    TIER_BASIS_TAG,
    TIER_SOURCE_TAG,
)
from e2i_pipelines.launcher.sizing_fit import Prediction, Sample, predict_peak
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG
from e2i_pipelines.tiers import TIER_TAG, AutoBounds, Tier, TierProfile, parse_bytes, parse_tier

SIZING_KEY_TAG = "e2i/sizing_key"
INPUT_SIZE_TAG = "e2i/input_size"
HEADROOM_TAG = "e2i/tier_headroom"
HEADROOM_ENV = "E2I_AUTO_TIER_HEADROOM"
SOURCE_AUTO = "auto"
DEFAULT_HEADROOM = 1.3
HEADROOM_RANGE = (1.0, 4.0)
HISTORY_LIMIT = 100
MAX_INPUT_SIZE = 10**15
CEILING_FAILURE = "tier_ceiling"
SIZED_ORDER = (Tier.LIGHT, Tier.MEDIUM, Tier.HEAVY)


class SizingInputError(ValueError):
    """An auto-sizing tag or setting is malformed (the message names it)."""


class TierCeilingError(ValueError):
    """The predicted peak (with headroom) does not fit the ceiling tier."""


def sizing_key(step_keys: Iterable[str]) -> str:
    """Short stable hash of the set of step keys a run executes."""
    text = "\n".join(sorted(set(step_keys)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_input_size(raw: Any, where: str = INPUT_SIZE_TAG) -> float:
    """``rows`` or ``rowsxcolumns`` (positive integers) as rows x columns."""
    text = str(raw).strip().lower()
    parts = text.split("x") if text else []
    if not 1 <= len(parts) <= 2 or not all(p.isascii() and p.isdigit() and len(p) <= 15 for p in parts):
        raise SizingInputError(f"tag {where}: expected rows or rowsxcolumns (e.g. 100000x20)")
    size = math.prod(int(p) for p in parts)
    if not 0 < size <= MAX_INPUT_SIZE:
        raise SizingInputError(f"tag {where}: size must be between 1 and {MAX_INPUT_SIZE:.0e}")
    return float(size)


def headroom(tags: Mapping[str, str], env: Mapping[str, str] = os.environ) -> float:
    """Headroom factor from the run tag, else the environment, else 1.3 (within 1..4)."""
    for where, raw in ((f"tag {HEADROOM_TAG}", tags.get(HEADROOM_TAG)),
                       (f"environment variable {HEADROOM_ENV}", env.get(HEADROOM_ENV))):
        if raw is None or str(raw).strip() == "":
            continue
        try:
            value = float(str(raw).strip()[:32])
        except ValueError:
            raise SizingInputError(f"{where}: not a number") from None
        low, high = HEADROOM_RANGE
        if not low <= value <= high:  # also rejects nan
            raise SizingInputError(f"{where}: must be between {low:g} and {high:g}")
        return value
    return DEFAULT_HEADROOM


def past_size(tags: Mapping[str, str]) -> float | None:
    """A finished run's input size: largest step rows x columns, else its input-size tag."""
    try:
        steps = json.loads(tags.get(STEP_INPUTS_TAG, "{}"))
        sizes = [float(s.get("rows", 0)) * max(float(s.get("columns", 1)), 1.0)
                 for s in steps.values() if isinstance(s, dict)]
    except (ValueError, TypeError, AttributeError):
        sizes = []
    if any(size > 0 for size in sizes):
        return max(sizes)
    try:
        return parse_input_size(tags[INPUT_SIZE_TAG]) if INPUT_SIZE_TAG in tags else None
    except SizingInputError:
        return None


def sample_of(tags: Mapping[str, str], succeeded: bool,
              profiles: Mapping[Tier, TierProfile]) -> Sample | None:
    """A history sample from a finished run's tags (None when it says nothing about memory)."""
    peak = tag_number(dict(tags), PEAK_MEMORY_TAG, int)
    if succeeded:
        return Sample(past_size(tags), int(peak), False) if peak else None
    if tags.get(FAILURE_TAG) != "oom":
        return None
    try:
        limit = parse_bytes(profiles[parse_tier(tags.get(TIER_TAG, ""))].memory)
    except (ValueError, KeyError):
        limit = 0
    bound = max(int(peak or 0), limit)
    return Sample(past_size(tags), bound, True) if bound else None


def history(instance: Any, key: str, profiles: Mapping[Tier, TierProfile],
            limit: int = HISTORY_LIMIT) -> list[Sample]:
    """Samples from the last ``limit`` finished runs tagged with sizing ``key``."""
    runs = instance.get_runs(
        filters=RunsFilter(tags={SIZING_KEY_TAG: key},
                           statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]),
        limit=limit,
    )
    samples = [sample_of(run.tags, run.status == DagsterRunStatus.SUCCESS, profiles) for run in runs]
    return [s for s in samples if s is not None]


@dataclass(frozen=True)
class AutoChoice:
    """The chosen tier and the tags that explain it."""

    tier: Tier
    tags: dict[str, str]


def smallest_fitting(need: float, profiles: Mapping[Tier, TierProfile], bounds: AutoBounds) -> Tier | None:
    """Smallest tier in ``bounds`` whose memory is at least ``need`` bytes."""
    for tier in SIZED_ORDER[bounds.floor.rank:bounds.ceiling.rank + 1]:
        if parse_bytes(profiles[tier].memory) >= need:
            return tier
    return None


def choose(prediction: Prediction | None, size: float | None, factor: float, bounds: AutoBounds,
           declared: Tier | None, profiles: Mapping[Tier, TierProfile]) -> AutoChoice:
    """Pick the tier for ``prediction`` (raises TierCeilingError above the ceiling)."""
    tags = {TIER_SOURCE_TAG: SOURCE_AUTO}
    size_text = f"input {size:.0f}" if size is not None else "no input size"
    if prediction is None:
        fallback = declared if declared is not None else bounds.ceiling
        fallback = SIZED_ORDER[min(max(fallback.rank, bounds.floor.rank), bounds.ceiling.rank)]
        why = "declared tier" if declared is not None else "ceiling"
        tags[TIER_BASIS_TAG] = f"no history ({size_text}): {why} {fallback.value}"
        return AutoChoice(fallback, tags)
    need = prediction.peak * factor
    tags[PREDICTED_PEAK_TAG] = str(prediction.peak)
    tier = smallest_fitting(need, profiles, bounds)
    basis = (f"{prediction.basis}; {size_text}; predicted {prediction.peak / 2**20:.0f} MiB x "
             f"headroom {factor:g} = {need / 2**20:.0f} MiB")
    ceiling_bytes = parse_bytes(profiles[bounds.ceiling].memory)
    if tier is None and prediction.peak > ceiling_bytes and prediction.firm:
        raise TierCeilingError(
            f"tier auto: predicted peak {prediction.peak / 2**20:.0f} MiB is above the memory of "
            f"the ceiling tier {bounds.ceiling.value} ({profiles[bounds.ceiling].memory}); "
            f"basis: {prediction.basis}, {size_text}")
    if tier is None:  # fits the ceiling with less headroom than asked, or only a guess
        tier = bounds.ceiling
        basis += (f" (ceiling: headroom only {ceiling_bytes / prediction.peak:.2f})" if prediction.firm
                  else " (ceiling: a one-size guess is no reason to refuse)")
    tags[TIER_BASIS_TAG] = f"{basis} -> {tier.value} (memory {profiles[tier].memory})"
    return AutoChoice(tier, tags)


def decide_auto(instance: Any, run_tags: Mapping[str, str], key: str, bounds: AutoBounds,
                declared: Tier | None, profiles: Mapping[Tier, TierProfile]) -> AutoChoice:
    """Choose the tier of an auto run from its history; tag-format errors raise SizingInputError."""
    size = parse_input_size(run_tags[INPUT_SIZE_TAG]) if INPUT_SIZE_TAG in run_tags else None
    factor = headroom(run_tags)
    prediction = predict_peak(history(instance, key, profiles), size)
    return choose(prediction, size, factor, bounds, declared, profiles)


def ceiling_failure_tags(reason: str, bounds: AutoBounds) -> dict[str, str]:
    """Tags for a run refused before launch: why, and the ceiling as its tier."""
    return {TIER_SOURCE_TAG: SOURCE_AUTO, TIER_TAG: bounds.ceiling.value,
            FAILURE_TAG: CEILING_FAILURE, FAILURE_REASON_TAG: reason[:1000]}
