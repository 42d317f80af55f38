"""callaway_santanna against csdid (the Python port of R did) on the same generated data:
ATT(g,t), their SEs and all four aggregations to 1e-6; diff-diff's overall ATT too."""

import warnings

import numpy as np
import pytest
from csdid.att_gt import ATTgt

from e2i_pipelines.analytics.panel.callaway_santanna import aggregate, att_gt, callaway_santanna
from e2i_pipelines.analytics.panel.data import load_panel
from e2i_pipelines.analytics.panel.settings import PanelSettings
from tests.panel.conftest import panel_spec
from tests.panel.generated import staggered

TOL = 1e-6
CSDID_CONTROL = {"never_treated": "nevertreated", "not_yet_treated": "notyettreated"}


@pytest.fixture(scope="module")
def data():
    return staggered(n_units=1200, n_periods=7, cohorts=(3, 4, 6), seed=11).df


def _csdid(df, method, control, anticipation=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ATTgt(yname="y", tname="time", idname="unit", gname="g", data=df,
                     control_group=[CSDID_CONTROL[control]], xformla="y~x",
                     anticipation=anticipation).fit(est_method=method, bstrap=False)


@pytest.mark.parametrize(("method", "control", "anticipation"), [
    ("dr", "never_treated", 0), ("dr", "not_yet_treated", 0), ("ipw", "never_treated", 0),
    ("reg", "not_yet_treated", 0), ("dr", "never_treated", 1),
])
def test_matches_csdid(data, method, control, anticipation):
    spec = panel_spec(covariates=["x"], control_group=control, anticipation=anticipation)
    cells = att_gt(load_panel(data, spec), method)
    ref = _csdid(data, method, control, anticipation)
    assert np.array_equal(np.asarray(ref.results["group"]), cells.group + 1)
    assert np.array_equal(np.asarray(ref.results["year"]), cells.time + 1)
    assert np.max(np.abs(np.asarray(ref.results["att"]) - cells.att)) < TOL
    assert np.max(np.abs(np.asarray(ref.results["se"]) - cells.se(cells.inf))) < TOL
    for kind in ("simple", "dynamic", "group", "calendar"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agg = ref.aggte(typec=kind, bstrap=False, cband=False).atte
        est, inf, table, inf_k = aggregate(cells, kind)
        assert abs(est - agg["overall_att"]) < TOL, kind
        assert abs(float(cells.se(inf)[0]) - agg["overall_se"]) < TOL, kind
        if table is not None:
            assert np.max(np.abs(np.asarray(agg["att_egt"]) - table["estimate"])) < TOL
            assert np.max(np.abs(np.asarray(agg["se_egt"]) - cells.se(inf_k))) < TOL


def test_overall_att_matches_diff_diff_without_covariates(data):
    from diff_diff import CallawaySantAnna

    cs = CallawaySantAnna(control_group="never_treated", estimation_method="dr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = cs.fit(data, outcome="y", unit="unit", time="time", first_treat="g")
    ours = callaway_santanna(load_panel(data, panel_spec()), PanelSettings(n_bootstrap=99))
    assert abs(ours.estimate - ref.overall_att) < TOL


def test_result_tables_and_uniform_bands(data):
    res = callaway_santanna(load_panel(data, panel_spec(covariates=["x"])),
                            PanelSettings(n_bootstrap=499, seed=3))
    es = res.event_study
    assert list(es["rel_period"]) == list(range(-4, 5))
    assert (es["band_low"] <= es["ci_low"]).all() and (es["band_high"] >= es["ci_high"]).all()
    cohorts = res.cohorts
    assert list(cohorts["cohort"]) == [3, 4, 6] and cohorts["n_units"].sum() > 0
    assert abs(cohorts["weight_share"].sum() - 1) < 1e-12
    shares = cohorts["n_units"] / cohorts["n_units"].sum()  # unweighted: shares of units
    assert np.allclose(cohorts["weight_share"], shares)
    x_first = data.groupby("unit").first()
    for row in cohorts.itertuples():
        assert abs(row.x_mean - x_first.loc[x_first["g"] == row.cohort, "x"].mean()) < 1e-12
    assert abs(cohorts["x_never"].iloc[0] - x_first.loc[x_first["g"] == 0, "x"].mean()) < 1e-12
    assert {"att_gt", "calendar"} <= set(res.extra)
    out = res.outputs()
    assert {"panel_estimate.json", "event_study.png"} <= set(out.files)
    assert out.metadata["design"] == "panel" and len(out.metadata["event_study"]) == len(es)


@pytest.mark.parametrize("extra", [{"weights": "w"}, {"cluster": "county"}])
def test_weighted_or_clustered_matches_csdid(data, extra):
    """Unit weights (csdid weights_name) and clusters of units (csdid clustervar)."""
    df = data.assign(w=(1 + np.random.default_rng(0).random(data["unit"].max() + 1))[
        data["unit"]], county=data["unit"] // 30)
    cells = att_gt(load_panel(df, panel_spec(covariates=["x"], **extra)), "dr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ATTgt(yname="y", tname="time", idname="unit", gname="g", data=df,
                    control_group=["nevertreated"], xformla="y~x",
                    weights_name=extra.get("weights"), clustervar=extra.get("cluster")).fit(
            est_method="dr", bstrap=False)
        agg = ref.aggte(typec="simple", bstrap=False, cband=False).atte
    assert np.max(np.abs(np.asarray(ref.results["att"]) - cells.att)) < TOL
    assert np.max(np.abs(np.asarray(ref.results["se"]) - cells.se(cells.inf))) < TOL
    est, inf, _, _ = aggregate(cells, "simple")
    assert abs(est - agg["overall_att"]) < TOL
    assert abs(float(cells.se(inf)[0]) - agg["overall_se"]) < TOL
