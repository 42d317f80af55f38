"""OOM promotion decisions and the promoted run's tags (no Docker)."""

import pytest

from e2i_pipelines.launcher.cgroup_usage import MEMORY_UTILISATION_TAG, PEAK_MEMORY_TAG
from e2i_pipelines.launcher.promotion import (
    FAILURE_TAG,
    PARENT_PREDICTED_PEAK_TAG,
    PARENT_RUN_TAG,
    PREDICTED_PEAK_TAG,
    PROMOTE_TAG,
    PROMOTED_FROM_TAG,
    TIER_BASIS_TAG,
    TIER_SOURCE_TAG,
    decide_promotion,
    promoted_run_tags,
)
from e2i_pipelines.launcher.run_tier import resolve_run_tier
from e2i_pipelines.launcher.sizing import INPUT_SIZE_TAG, SIZING_KEY_TAG
from e2i_pipelines.tiers import TIER_CEILING_TAG, TIER_TAG, Tier

OOM_LIGHT = {FAILURE_TAG: "oom", TIER_TAG: "light"}


def test_oom_light_goes_to_medium_and_medium_to_heavy():
    assert decide_promotion(OOM_LIGHT, True).tier is Tier.MEDIUM
    assert decide_promotion({**OOM_LIGHT, TIER_TAG: "medium"}, True).tier is Tier.HEAVY


@pytest.mark.parametrize(
    ("tags", "enabled", "reason"),
    [
        ({**OOM_LIGHT, FAILURE_TAG: "crashed"}, True, "not OOM-killed"),
        ({TIER_TAG: "light"}, True, "not OOM-killed"),
        (OOM_LIGHT, False, "disabled in the launcher config"),
        ({**OOM_LIGHT, PROMOTE_TAG: "false"}, True, "disabled by tag"),
        ({**OOM_LIGHT, TIER_TAG: "heavy"}, True, "already at the top tier"),
        ({**OOM_LIGHT, PARENT_RUN_TAG: "abc"}, True, "already a promoted run"),
        ({**OOM_LIGHT, TIER_CEILING_TAG: "light"}, True, "already at the run's tier ceiling (light"),
    ],
)
def test_no_promotion(tags, enabled, reason):
    decision = decide_promotion(tags, enabled)
    assert decision.tier is None and reason in decision.reason


def test_bad_opt_out_value_is_an_error():
    with pytest.raises(ValueError, match="e2i/promote_on_oom='maybe'"):
        decide_promotion({**OOM_LIGHT, PROMOTE_TAG: "maybe"}, True)


def test_promoted_tags_keep_user_tags_and_drop_launcher_tags():
    parent = {
        **OOM_LIGHT, "e2i/failure_reason": "x", "e2i/limits": "cpus=1", "docker/container_id": "c",
        "dagster/run_key": "k", "team": "causal", PROMOTE_TAG: "true",
    }
    assert promoted_run_tags("run-1", parent, Tier.MEDIUM) == {
        "team": "causal", PROMOTE_TAG: "true", TIER_TAG: "medium", TIER_SOURCE_TAG: "promotion",
        PARENT_RUN_TAG: "run-1", PROMOTED_FROM_TAG: "light",
    }


def test_a_promoted_auto_run_keeps_the_parents_prediction_as_the_parents():
    """The child shares the sizing key and input size (it feeds the same history), but the
    parent's prediction, basis and measured use are not presented as the child's own."""
    parent = {**OOM_LIGHT, TIER_SOURCE_TAG: "auto", PREDICTED_PEAK_TAG: "524288000",
              TIER_BASIS_TAG: "3 past run(s), theil-sen ...", SIZING_KEY_TAG: "0123abcd",
              INPUT_SIZE_TAG: "400000", PEAK_MEMORY_TAG: "805306368", MEMORY_UTILISATION_TAG: "1.0",
              "e2i/tier_floor": "light", TIER_CEILING_TAG: "heavy"}
    child = promoted_run_tags("run-1", parent, Tier.MEDIUM)
    assert child == {
        TIER_TAG: "medium", TIER_SOURCE_TAG: "promotion", PARENT_RUN_TAG: "run-1",
        PROMOTED_FROM_TAG: "light", PARENT_PREDICTED_PEAK_TAG: "524288000",
        SIZING_KEY_TAG: "0123abcd", INPUT_SIZE_TAG: "400000",
        "e2i/tier_floor": "light", TIER_CEILING_TAG: "heavy",
    }
    # what the launcher then records as the child's tier and its source
    resolved = resolve_run_tier(child, [{TIER_TAG: "light"}])
    assert (resolved.tier, resolved.source) == (Tier.MEDIUM, "promotion")
    assert decide_promotion({**OOM_LIGHT, TIER_TAG: "medium", TIER_CEILING_TAG: "heavy"}, True).tier is Tier.HEAVY
