"""The fast paths of the panel estimators against their plain counterparts and known truth:
the balanced-panel two-way demeaning, the unbalanced one in any row order, the batched
Callaway-Sant'Anna cells and the shared multiplier bootstrap of the uniform bands."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from e2i_pipelines.analytics.panel.callaway_santanna import ATTgt, uniform_critical_values
from e2i_pipelines.analytics.panel.cs_cells import CELL_ESTIMATORS, propensity
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.analytics.panel.twfe import demean


@pytest.mark.parametrize("weighted", [False, True])
def test_balanced_demean_matches_alternating_projections(weighted):
    rng = np.random.default_rng(3)
    n_units, n_periods = 300, 7
    unit = np.repeat(np.arange(n_units), n_periods)
    time = np.tile(np.arange(n_periods), n_units)
    x = rng.normal(size=(len(unit), 3)) + rng.normal(size=n_units)[unit, None] * 4 \
        + np.arange(n_periods)[time, None]
    w = rng.uniform(0.2, 3.0, size=len(unit)) if weighted else None
    fast = demean(x, unit, time, w, balanced=True)
    plain = demean(x, unit, time, w, balanced=False)
    assert np.max(np.abs(fast - plain)) < 1e-10
    ww = np.ones(len(unit)) if w is None else w
    for codes in (unit, time):  # no weighted unit or time mean is left
        means = np.bincount(codes, weights=ww * fast[:, 1]) / np.bincount(codes, weights=ww)
        assert np.max(np.abs(means)) < 1e-9


@pytest.mark.parametrize("weighted", [False, True])
def test_unbalanced_demean_does_not_depend_on_row_order(weighted):
    """Rows in any order (sorted internally for the unit segments) give the same within
    transform, with no unit or time mean left, on an unbalanced panel."""
    rng = np.random.default_rng(8)
    unit = np.repeat(np.arange(200), 6)
    time = np.tile(np.arange(6), 200)
    keep = rng.random(len(unit)) > 0.2
    unit, time = unit[keep], time[keep]
    x = rng.normal(size=(len(unit), 2)) + unit[:, None] % 7 + time[:, None]
    w = rng.uniform(0.5, 2.0, len(unit)) if weighted else None
    perm = rng.permutation(len(unit))
    ordered = demean(x, unit, time, w)
    shuffled = demean(x[perm], unit[perm], time[perm], None if w is None else w[perm])
    assert np.max(np.abs(shuffled - ordered[perm])) < 1e-10
    ww = np.ones(len(unit)) if w is None else w
    for codes in (unit, time):
        means = np.bincount(codes, weights=ww * ordered[:, 0]) / np.bincount(codes, weights=ww)
        assert np.max(np.abs(means)) < 1e-9


@pytest.mark.parametrize("method", sorted(CELL_ESTIMATORS))
def test_batched_cells_equal_cells_one_at_a_time(method):
    """Columns of a batch do not leak into each other: each equals its own single-cell fit."""
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=n)
    D = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(np.float64)
    X = np.column_stack([np.ones(n), x])
    w = rng.uniform(0.5, 2.0, n)
    DY = np.column_stack([0.5 * x + D * k + rng.normal(size=n) for k in range(4)])
    ps = propensity(D, X, w / w.mean())
    att, influence = CELL_ESTIMATORS[method](DY, D, X, w, ps)
    inf = influence.matrix(DY)
    assert att.shape == (4,) and inf.shape == (n, 4)
    for j in range(4):
        att_j, inf_j = CELL_ESTIMATORS[method](DY[:, [j]], D, X, w, ps)
        assert abs(att_j[0] - att[j]) < 1e-12
        assert np.max(np.abs(inf_j.matrix(DY[:, [j]])[:, 0] - inf[:, j])) < 1e-12
    assert abs(att[3] - att[0] - 3.0) < 0.3  # the effect step built into the columns


def _dr_reference(DY, D, X, w, ps):
    """DRDID's drdid_panel influence functions, written out plainly (units x cells)."""
    w = w / w.mean()
    n = len(D)
    ps, keep, lin_ps = ps
    wc = w * (D == 0)
    w_t, w_c = keep * w * D, keep * w * ps * (1 - D) / (1 - ps)
    gram = X.T @ (wc[:, None] * X)
    resid = DY - X @ np.linalg.solve(gram, X.T @ (wc[:, None] * DY))
    m_t, m_c = w_t.mean(), w_c.mean()
    eta_t = (w_t[:, None] * resid).sum(axis=0) / n / m_t
    eta_c = (w_c[:, None] * resid).sum(axis=0) / n / m_c
    m2 = X.T @ (w_c[:, None] * (resid - eta_c)) / n / m_c
    ols_dir = np.linalg.inv(gram / n) @ (X.T @ w_t / n / m_t - X.T @ w_c / n / m_c)
    inf = (w_t[:, None] * (resid - eta_t) / m_t - w_c[:, None] * (resid - eta_c) / m_c
           - lin_ps @ m2 - (wc[:, None] * resid) * (X @ ols_dir)[:, None])
    return eta_t - eta_c, inf


def test_compiled_influence_functions_equal_the_plain_formula():
    """The compiled passes (weighted sums, influence functions read from the wide outcome and
    written into a bigger matrix at the batch's rows and columns) equal DRDID's formula."""
    from e2i_pipelines.analytics.panel.cs_cells import Changes, dr_cell

    rng = np.random.default_rng(9)
    n_units, n_periods = 3000, 6
    Y = rng.normal(size=(n_units, n_periods)) + np.arange(n_periods)
    rows = np.sort(rng.choice(n_units, 2000, replace=False))
    ts, bases = np.array([2, 3, 5]), np.array([1, 1, 4])
    x = rng.normal(size=len(rows))
    D = (rng.random(len(rows)) < 1 / (1 + np.exp(-x))).astype(np.float64)
    X = np.column_stack([np.ones(len(rows)), x])
    w = rng.uniform(0.5, 2.0, len(rows))
    DY = Y[rows][:, ts] - Y[rows][:, bases]
    ps = propensity(D, X, w / w.mean())
    ref_att, ref_inf = _dr_reference(DY, D, X, w, ps)
    att, influence = dr_cell(Changes(Y, rows, ts, bases), D, X, w, ps)
    out = np.zeros((n_units, 7))
    cols, scales = np.array([4, 1, 6]), np.array([1.0, 2.0, 0.5])
    influence.write(Changes(Y, rows, ts, bases), out, cols, scales)
    assert np.max(np.abs(att - ref_att)) < 1e-12
    assert np.max(np.abs(out[np.ix_(rows, cols)] - ref_inf * scales)) < 1e-12
    others = np.ones(n_units, bool)
    others[rows] = False
    assert not out[others].any() and not out[:, [0, 2, 3, 5]].any()


def test_uniform_critical_values_match_the_sidak_quantile():
    """Independent influence-function columns: the critical value of max_k |t_k| is
    Phi^-1((1 + 0.95^(1/k)) / 2); one set of draws serves tables of 1 and 6 columns."""
    rng = np.random.default_rng(11)
    n = 20_000
    inf = rng.normal(size=(n, 7))
    cells = ATTgt(group=np.zeros(7, int), time=np.zeros(7, int), att=np.zeros(7), inf=inf,
                  unit_weight=np.ones(n), unit_cohort=np.zeros(n, int),
                  unit_cluster=np.arange(n), periods=np.arange(2), warnings=[])
    infs = [inf[:, :1], inf[:, 1:]]
    ses = [cells.se(i) for i in infs]
    settings = PanelSettings(n_bootstrap=4000, seed=2)
    crit_1, crit_6 = uniform_critical_values(cells, infs, ses, settings)
    assert abs(crit_1 - stats.norm.ppf(0.975)) < 0.1
    assert abs(crit_6 - stats.norm.ppf((1 + 0.95 ** (1 / 6)) / 2)) < 0.1
    assert uniform_critical_values(cells, infs, ses, settings) == [crit_1, crit_6]
