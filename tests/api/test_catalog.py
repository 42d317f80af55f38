"""The launchable-job catalog: tiers from the definitions, params validation, run config."""
# no postponed annotations here: Dagster resolves the typed config parameters at runtime

import dagster as dg
import pytest

from e2i_pipelines.catalog import (
    LAUNCHABLE,
    CatalogError,
    LaunchableJob,
    ParamsValidationError,
    UnknownJobError,
    build_catalog,
    load_catalog,
)
from e2i_pipelines.tiers import Tier, tier_kwargs


class SizeConfig(dg.Config):
    rows: int
    label: str = "x"


@dg.asset(key_prefix=["demo"], **tier_kwargs(Tier.MEDIUM))
def sized(config: SizeConfig) -> None:
    del config


@dg.asset(deps=[sized])
def light_after() -> None:
    return None


@dg.asset_check(asset=light_after, **tier_kwargs(Tier.HEAVY))
def heavy_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


DEFS = dg.Definitions(
    assets=[sized, light_after], asset_checks=[heavy_check],
    jobs=[dg.define_asset_job("demo_job", selection=[sized.key, light_after.key]),
          dg.define_asset_job("light_job", selection=[light_after.key])],
)


def test_tiers_come_from_the_steps_of_the_job() -> None:
    catalog = build_catalog(DEFS, (LaunchableJob("demo_job", "demo", {"demo/sized": SizeConfig}),
                                   LaunchableJob("light_job", "")))
    demo = catalog.get("demo_job")
    assert {a.name: a.tier for a in demo.assets} == {"demo/sized": Tier.MEDIUM, "light_after": Tier.LIGHT}
    assert demo.tier is Tier.HEAVY  # the heavy asset check runs in the job
    assert demo.checks == ("light_after:heavy_check",)
    assert {a.name: a.op_name for a in demo.assets}["demo/sized"] == "demo__sized"
    assert catalog.get("light_job").tier is Tier.HEAVY


def test_params_are_validated_and_become_op_config() -> None:
    entry = build_catalog(DEFS, (LaunchableJob("demo_job", "demo", {"demo/sized": SizeConfig}),)).get("demo_job")
    validated = entry.validate_params({"demo/sized": {"rows": "12"}})
    assert validated == {"demo/sized": {"rows": 12}}
    assert entry.run_config(validated) == {"ops": {"demo__sized": {"config": {"rows": 12}}}}
    schema = entry.params_schema()
    assert schema["properties"]["demo/sized"]["required"] == ["rows"]

    with pytest.raises(ParamsValidationError) as missing:
        entry.validate_params({})
    assert [e["loc"] for e in missing.value.errors] == [("demo/sized", "rows")]
    with pytest.raises(ParamsValidationError) as bad:
        entry.validate_params({"demo/sized": {"rows": 1, "colour": "red"}, "light_after": {}})
    locs = [e["loc"] for e in bad.value.errors]
    assert ("light_after",) in locs and ("demo/sized", "colour") in locs


def test_catalog_lines_must_match_the_definitions() -> None:
    with pytest.raises(CatalogError, match="not defined"):
        build_catalog(DEFS, (LaunchableJob("nope_job", ""),))
    with pytest.raises(CatalogError, match="does not run"):
        build_catalog(DEFS, (LaunchableJob("light_job", "", {"demo/sized": SizeConfig}),))
    with pytest.raises(UnknownJobError, match="launchable jobs are"):
        build_catalog(DEFS, ()).get("demo_job")


def test_the_real_catalog_resolves_every_line() -> None:
    catalog = load_catalog()
    assert [e.name for e in catalog] == [job.name for job in LAUNCHABLE]
    probes = {name: catalog.get(f"probe_{name}_job").tier for name in ("light", "medium", "heavy")}
    assert probes == {"light": Tier.LIGHT, "medium": Tier.MEDIUM, "heavy": Tier.HEAVY}


@pytest.mark.parametrize(
    ("job", "params", "expected"),
    [
        ("causal_job", {"causal_estimate": {"method": "nope"}}, "method must be one of"),
        ("causal_job", {"causal_estimate": {"num_simulations": 0}}, "num_simulations"),
        ("twins_job", {"digital_twins": {"n_twins": 0}}, "n_twins"),
        ("shap_job", {"dataset": {"source": "file"}}, "needs 'path'"),
        ("shap_job", {"dataset": {"n_rows": 3}}, "n_rows must be between"),
        ("causal_job", {"dataset": {"source": "file", "path": "x.csv", "treatment": "t",
                                    "outcome": "y", "graph": "digraph { t -> y; y -> t; }"}},
         "cycle"),
        ("causal_job", {"dataset": {"source": "file", "path": "x.csv", "treatment": "t",
                                    "outcome": "y", "common_causes": ["w"],
                                    "categorical": ["region"]}}, "'categorical' names ['region']"),
        ("causal_job", {"causal_estimate": {"nuisance": "forest"}}, "nuisance"),
    ],
)
def test_config_rules_reject_params_before_launch(job: str, params: dict, expected: str) -> None:
    """Each config class's own check() runs in the API too, so nothing bad is launched."""
    entry = load_catalog().get(job)
    with pytest.raises(ParamsValidationError) as info:
        entry.validate_params(params)
    assert expected in str(info.value)
    assert info.value.errors[0]["loc"] == (next(iter(params)),)
