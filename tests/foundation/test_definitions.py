"""The code location loads; every asset carries a valid tier; jobs and schedules validate."""

import dagster as dg
import pytest

from e2i_pipelines.definitions import defs
from e2i_pipelines.tiers import TIER_TAG, Tier, UnknownTierError, asset_tiers, max_tier


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_asset_has_a_tier_pool_and_ui_tag():
    tiers = asset_tiers(defs)
    graph = defs.resolve_asset_graph()
    assert {"dataset", "feature_store", "outcome_model"} <= set(tiers)
    for key in graph.get_all_asset_keys():
        assets_def = graph.get(key).assets_def
        tier = tiers[key.to_user_string()]
        spec = assets_def.get_asset_spec(key)
        assert spec.tags.get(TIER_TAG) == tier.value, f"{key} tier not shown as a definition tag"
        assert f"tier-{tier.value}" in spec.kinds
        expected_pool = tier.pool
        assert assets_def.op.pool == expected_pool, f"{key} pool {assets_def.op.pool!r}"


def test_a_misspelt_tier_is_an_error():
    @dg.asset(op_tags={TIER_TAG: "hevy"})
    def bad() -> int:
        return 1

    with pytest.raises(UnknownTierError, match="hevy"):
        asset_tiers(dg.Definitions(assets=[bad]))
    assert max_tier(["light", "heavy", "medium"]) is Tier.HEAVY


def test_jobs_resolve_with_their_default_config():
    repo = defs.get_repository_def()
    names = {job.name for job in repo.get_all_jobs()}
    assert {"e2i_main_job", "feature_refresh_job", "shap_job", "causal_job", "twins_job"} <= names
    main = defs.resolve_job_def("e2i_main_job")
    assert dg.validate_run_config(main, {})  # every config field has a default


def test_schedules_evaluate_to_valid_run_requests():
    repo = defs.get_repository_def()
    assert {s.name for s in repo.schedule_defs} >= {"daily_feature_refresh", "weekly_causal_refresh"}
    with dg.instance_for_test() as instance:
        for schedule in repo.schedule_defs:
            context = dg.build_schedule_context(instance=instance)
            data = schedule.evaluate_tick(context)
            assert data.run_requests, schedule.name
            job = repo.get_job(schedule.job_name)
            for request in data.run_requests:
                assert dg.validate_run_config(job, request.run_config)


def test_every_step_of_every_job_has_a_tier():
    """Steps include asset checks (refutations): the launcher sizes runs from these tags."""
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        for node_def in job.graph.node_defs:
            assert Tier(node_def.tags[TIER_TAG]), f"{job.name}/{node_def.name} has no tier"
    assert defs.resolve_job_def("causal_job").graph.node_named("causal_refutations")
