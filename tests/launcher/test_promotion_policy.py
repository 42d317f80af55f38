"""OOM promotion decisions and the promoted run's tags (no Docker)."""

import pytest

from e2i_pipelines.launcher.promotion import (
    FAILURE_TAG,
    PARENT_RUN_TAG,
    PROMOTE_TAG,
    PROMOTED_FROM_TAG,
    decide_promotion,
    promoted_run_tags,
)
from e2i_pipelines.tiers import TIER_TAG, Tier

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
        "team": "causal", PROMOTE_TAG: "true", TIER_TAG: "medium",
        PARENT_RUN_TAG: "run-1", PROMOTED_FROM_TAG: "light",
    }
