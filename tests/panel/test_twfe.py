"""did (TWFE): pyfixest's feols CRV1 to 1e-8, wild bootstrap with few clusters, the staggered
warning, and coverage of clustered vs non-clustered CIs in a seeded simulation."""

import warnings

import numpy as np
import pandas as pd
import pyfixest as pf
import pytest

from e2i_pipelines.analytics.panel.data import load_panel
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.analytics.panel.twfe import did
from tests.panel.conftest import panel_spec
from tests.panel.generated import staggered


def _feols(formula, df, cluster, weights=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pf.feols(formula, data=df, vcov={"CRV1": cluster}, weights=weights)
    return float(fit.coef()["d"]), float(fit.se()["d"]), fit.confint().loc["d"].to_numpy()


@pytest.mark.parametrize(("covariates", "cluster", "unbalanced", "weights"), [
    ([], None, False, None), (["x"], "cluster", False, None), ([], "cluster", True, None),
    (["x"], None, True, None), ([], None, False, "w"),
])
def test_matches_pyfixest_crv1(covariates, cluster, unbalanced, weights):
    df = staggered(n_units=600, n_periods=6, cohorts=(3, 5), cluster_size=12,
                   cluster_sd=0.5, seed=4).df
    df["x"] = df["x"] * df["time"] + np.random.default_rng(1).normal(size=len(df))
    df["w"] = 1 + np.random.default_rng(2).random(len(df))
    if unbalanced:  # drop some last periods (no unit loses its pre-period)
        df = df[~((df["time"] == 6) & (df["unit"] % 4 == 0))]
    spec = panel_spec(covariates=covariates, **({"cluster": cluster} if cluster else {}),
                      **({"weights": weights} if weights else {}))
    res = did(load_panel(df, spec), PanelSettings(wild_cluster_threshold=0))
    formula = "y ~ d" + "".join(f" + {c}" for c in covariates) + " | unit + time"
    est, se, ci = _feols(formula, df, cluster or "unit", weights)
    assert abs(res.estimate - est) < 1e-8
    assert abs(res.se - se) < 1e-8
    assert np.allclose(res.ci, ci, atol=1e-8)


def test_staggered_warns_with_negative_weight_share():
    # no never-treated units: late cohorts' early periods are controls for early cohorts'
    # late periods, the textbook case of negative weights
    df = staggered(n_units=400, n_periods=8, cohorts=(2, 5, 8), never_share=0.0,
                   covariate=False, seed=1).df
    df = df[df["g"] > 0]
    res = did(load_panel(df, panel_spec(control_group="not_yet_treated")), PanelSettings())
    share = res.extra["negative_weight_share"]
    assert 0.0 < share < 1.0
    assert "staggered adoption (3 cohorts)" in res.warnings[0]
    assert f"{share:.1%}" in res.warnings[0]


def test_wild_cluster_bootstrap_below_threshold():
    df = staggered(n_units=300, n_periods=6, cohorts=(4,), cluster_size=15, cluster_sd=0.5,
                   covariate=False, seed=2).df  # 20 clusters
    panel = load_panel(df, panel_spec(cluster="cluster"))
    cr1 = did(panel, PanelSettings(wild_cluster_threshold=0))
    for kind in ("rademacher", "webb"):
        res = did(panel, PanelSettings(wild_weights=kind, n_bootstrap=999))
        assert "wild cluster bootstrap-t" in res.extra["inference"] and kind in \
            res.extra["inference"]
        assert res.estimate == cr1.estimate and res.se == cr1.se
        assert res.ci[0] < res.estimate < res.ci[1]
        assert res.ci != cr1.ci
        assert 0.5 < (res.ci[1] - res.ci[0]) / (cr1.ci[1] - cr1.ci[0]) < 2.0
        assert res.extra["wild_p_value"] < 0.01  # the true effect is large


def _cluster_sim(rng, n_clusters=50, size=8, n_periods=4):
    """Treatment assigned by cluster from period 3; cluster x period shocks."""
    units = n_clusters * size
    unit = np.repeat(np.arange(units), n_periods)
    t = np.tile(np.arange(n_periods), units)
    cl = unit // size
    treated_cluster = rng.random(n_clusters) < 0.5
    d = (treated_cluster[cl] & (t >= 2)).astype(int)
    y = (rng.normal(size=units)[unit] + 0.2 * t + 1.0 * d
         + rng.normal(size=(n_clusters, n_periods))[cl, t] + rng.normal(size=len(unit)))
    return pd.DataFrame({"unit": unit, "time": t, "d": d, "y": y, "cluster": cl,
                         "row": np.arange(len(unit))})


def test_clustered_ci_covers_and_row_level_undercovers():
    rng = np.random.default_rng(12345)
    settings = PanelSettings(wild_cluster_threshold=0)
    by_cluster = panel_spec(cluster="cluster")
    by_row = panel_spec(cluster="row")
    hits = {"cluster": 0, "row": 0}
    reps = 200
    for _ in range(reps):
        df = _cluster_sim(rng)
        for name, spec in (("cluster", by_cluster), ("row", by_row)):
            lo, hi = did(load_panel(df, spec), settings).ci
            hits[name] += lo <= 1.0 <= hi
    cover_cluster, cover_row = hits["cluster"] / reps, hits["row"] / reps
    assert 0.91 <= cover_cluster <= 0.985, cover_cluster
    assert cover_row < 0.8, cover_row
