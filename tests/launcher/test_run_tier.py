"""A run's tier from its steps' op tags or its run tag (no Docker)."""

import dagster as dg
import pytest

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.defs.diagnostics.assets import probe_assets
from e2i_pipelines.launcher.run_tier import (
    SOURCE_DEFAULT,
    SOURCE_PLAN,
    SOURCE_RUN_TAG,
    resolve_run_tier,
    tier_for_run,
)
from e2i_pipelines.tiers import TIER_TAG, Tier, UnknownTierError


def test_max_over_steps():
    steps = [{TIER_TAG: "light"}, None, {"other": "x"}, {TIER_TAG: "heavy"}, {TIER_TAG: "medium"}]
    assert resolve_run_tier({}, steps).tier is Tier.HEAVY
    assert resolve_run_tier({}, steps).source == SOURCE_PLAN


def test_run_tag_overrides_plan_both_ways():
    steps = [{TIER_TAG: "heavy"}]
    assert resolve_run_tier({TIER_TAG: "light"}, steps).tier is Tier.LIGHT
    assert resolve_run_tier({TIER_TAG: "Medium"}, [{TIER_TAG: "light"}]).source == SOURCE_RUN_TAG


def test_untiered_run_is_light_and_says_so():
    resolved = resolve_run_tier({}, [{"a": "b"}])
    assert (resolved.tier, resolved.source) == (Tier.LIGHT, SOURCE_DEFAULT)


@pytest.mark.parametrize(("run_tags", "steps"), [({TIER_TAG: "gpu"}, []), ({}, [{TIER_TAG: "xl"}])])
def test_unknown_tier_is_an_error_not_a_default(run_tags, steps):
    with pytest.raises(UnknownTierError, match="expected one of light, medium, heavy"):
        resolve_run_tier(run_tags, steps)


def test_tier_read_from_a_real_execution_plan(tmp_path):
    """Ad-hoc asset selections get the max tier of the selected assets' steps."""
    storage = E2IStorage(root=str(tmp_path))
    with dg.instance_for_test() as instance:
        for selection, expected in [
            (["probe_light"], Tier.LIGHT),
            (["probe_light", "probe_medium"], Tier.MEDIUM),
            (["probe_light", "probe_heavy", "probe_medium"], Tier.HEAVY),
        ]:
            result = dg.materialize(probe_assets, instance=instance, selection=selection,
                                    resources={"storage": storage})
            run = instance.get_run_by_id(result.run_id)
            assert tier_for_run(instance, run).tier is expected, selection
