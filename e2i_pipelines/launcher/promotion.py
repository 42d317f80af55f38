"""OOM promotion policy: whether and how a run killed for memory is re-launched one tier up.

A run is promoted at most once per lineage: a promoted run that is OOM-killed again fails for
good. Users turn promotion off per run with the tag ``e2i/promote_on_oom: false``; deployments
with ``promote_on_oom: false`` in the launcher config.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from e2i_pipelines.launcher.cgroup_usage import (
    CPU_SECONDS_TAG,
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
    USAGE_SOURCE_TAG,
)
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG
from e2i_pipelines.launcher.step_usage import PEAK_STEP_MEMORY_TAG, PEAK_STEP_TAG
from e2i_pipelines.tiers import TIER_CEILING_TAG, TIER_TAG, Tier, parse_tier

FAILURE_TAG = "e2i/failure"
FAILURE_REASON_TAG = "e2i/failure_reason"
PROMOTE_TAG = "e2i/promote_on_oom"
PARENT_RUN_TAG = "e2i/parent_run_id"
PROMOTED_FROM_TAG = "e2i/promoted_from"
TIER_SOURCE_TAG = "e2i/tier_source"
LIMITS_TAG = "e2i/limits"
PREDICTED_PEAK_TAG = "e2i/predicted_peak"
"""``tier: auto``: the peak memory (bytes) predicted for the run (launcher/sizing.py)."""
TIER_BASIS_TAG = "e2i/tier_basis"
"""``tier: auto``: why the launcher chose the run's tier (history, fit, headroom)."""
PARENT_PREDICTED_PEAK_TAG = "e2i/parent_predicted_peak"
"""On a promoted run: the ``e2i/predicted_peak`` of the OOM-killed run it re-launches."""
SOURCE_PROMOTION = "promotion"
"""``e2i/tier_source`` of a promoted run: one tier above its OOM-killed parent."""
WORKER_EXIT_TAG = "e2i/worker_exit"
"""The run worker's own exit record (exit code, OOM kills in its memory cgroup), JSON; written by
:mod:`e2i_pipelines.launcher.run_worker` after the run's failure tags, so once it is there the
run's ``e2i/failure`` is final."""

RAY_JOB_TAG = "e2i/ray_job"
"""Ray job submission id of the run's worker (TieredRayRunLauncher)."""
RAY_NODE_TAG = "e2i/ray_node"
"""Ray node the run's worker ran on (node name, else node id)."""
K8S_JOB_TAG = "e2i/k8s_job"
"""Kubernetes Job of the run's worker (TieredK8sRunLauncher)."""

LAUNCHER_TAGS = (TIER_SOURCE_TAG, LIMITS_TAG, FAILURE_TAG, FAILURE_REASON_TAG, TIER_TAG,
                 RAY_JOB_TAG, RAY_NODE_TAG, K8S_JOB_TAG, WORKER_EXIT_TAG)
"""Tags a launcher writes about one run worker; not copied onto a promoted run."""

RUN_OWN_TAGS = (*LAUNCHER_TAGS, PREDICTED_PEAK_TAG, TIER_BASIS_TAG, PARENT_PREDICTED_PEAK_TAG,
                PEAK_MEMORY_TAG, CPU_SECONDS_TAG, MEMORY_UTILISATION_TAG, CPU_UTILISATION_TAG,
                USAGE_SOURCE_TAG, STEP_INPUTS_TAG, PEAK_STEP_TAG, PEAK_STEP_MEMORY_TAG)
"""Tags that describe one run (its worker, its sizing, its measured use): a promoted run gets its
own, never its parent's (the parent's prediction is kept as ``e2i/parent_predicted_peak``)."""

_FALSE = {"false", "0", "no", "off"}
_TRUE = {"true", "1", "yes", "on"}


@dataclass(frozen=True)
class PromotionDecision:
    """``tier`` to re-launch at, or None with the ``reason`` why not."""

    tier: Tier | None
    reason: str


def promotion_enabled_by_tag(tags: Mapping[str, str]) -> bool:
    """The run's ``e2i/promote_on_oom`` tag (absent = enabled); bad values raise."""
    raw = tags.get(PROMOTE_TAG)
    if raw is None:
        return True
    value = str(raw).strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ValueError(f"tag {PROMOTE_TAG}={raw!r}: expected true or false")


def decide_promotion(tags: Mapping[str, str], enabled_in_config: bool) -> PromotionDecision:
    """Decide for a failed run with ``tags`` whether to re-launch it one tier up."""
    if tags.get(FAILURE_TAG) != "oom":
        return PromotionDecision(None, "not OOM-killed")
    if not enabled_in_config:
        return PromotionDecision(None, "promotion disabled in the launcher config")
    if not promotion_enabled_by_tag(tags):
        return PromotionDecision(None, f"promotion disabled by tag {PROMOTE_TAG}")
    if PARENT_RUN_TAG in tags:
        return PromotionDecision(None, "already a promoted run (promotion happens once)")
    tier = parse_tier(tags.get(TIER_TAG, Tier.LIGHT))
    up = tier.next_up()
    if up is None:
        return PromotionDecision(None, f"already at the top tier ({tier.value})")
    if TIER_CEILING_TAG in tags and parse_tier(tags[TIER_CEILING_TAG]).rank <= tier.rank:
        return PromotionDecision(None, f"already at the run's tier ceiling ({tags[TIER_CEILING_TAG]}, "
                                       f"tag {TIER_CEILING_TAG})")
    return PromotionDecision(up, f"OOM-killed at {tier.value}: re-launching at {up.value}")


def promoted_run_tags(parent_run_id: str, tags: Mapping[str, str], tier: Tier) -> dict[str, str]:
    """Tags for the re-launched run: the parent's user tags plus tier and lineage, and the
    parent's prediction as ``e2i/parent_predicted_peak`` (the run's own tags are not copied)."""
    kept = {
        key: value for key, value in tags.items()
        if not key.startswith(("dagster/", "docker/", ".dagster")) and key not in RUN_OWN_TAGS
    }
    parent = {PARENT_PREDICTED_PEAK_TAG: tags[PREDICTED_PEAK_TAG]} if PREDICTED_PEAK_TAG in tags else {}
    return {
        **kept,
        **parent,
        TIER_TAG: tier.value,
        TIER_SOURCE_TAG: SOURCE_PROMOTION,
        PARENT_RUN_TAG: parent_run_id,
        PROMOTED_FROM_TAG: parse_tier(tags.get(TIER_TAG, Tier.LIGHT)).value,
    }
