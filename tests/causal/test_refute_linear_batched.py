"""The batched sufficient-statistics engine equals one OLS fit per simulation, same draws."""

import numpy as np
import pytest

from e2i_pipelines.analytics.causal import refute_linear as fast


@pytest.fixture(scope="module")
def setup(linear_fit):
    frame, result, (_, estimand, estimate), _ = linear_fit
    adj = estimand.get_adjustment_set()
    ems = estimate.estimator._effect_modifier_names
    problem = fast.LinearProblem.from_frame(frame.data, frame.treatment, frame.outcome, adj, ems)
    order = np.argsort(frame.data[frame.treatment].to_numpy(), kind="stable")
    data = frame.data.iloc[order].reset_index(drop=True)  # rows in problem.U order
    return problem, data, frame, adj, ems


def _ols_ate(data, treatment_values, outcome, adj, ems, rows=None):
    """DoWhy's linear-regression ATE by a direct least-squares fit (one simulation)."""
    idx = np.arange(len(data)) if rows is None else rows
    d = data.iloc[idx]
    t = np.asarray(treatment_values, float)[idx]
    M = d[ems].to_numpy()
    X = np.column_stack([np.ones(len(d)), t, d[adj].to_numpy(), t[:, None] * M])
    beta = np.linalg.lstsq(X, d[outcome].to_numpy(), rcond=None)[0]
    return beta[1] + beta[2 + len(adj):] @ M.mean(axis=0)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("block_rows", [None, 333])
def test_placebo_batched_equals_one_at_a_time(setup, precision, block_rows):
    problem, data, frame, adj, ems = setup
    P = np.random.default_rng(0).integers(0, 2, (problem.n, 5)).astype(float)
    batched = fast.placebo_effects_from(problem, lambda a, b: P[a:b], 5, block_rows, precision)
    single = [_ols_ate(data, P[:, s], frame.outcome, adj, ems) for s in range(5)]
    tol = 1e-9 if precision == "float64" else 1e-4
    np.testing.assert_allclose(batched, single, atol=tol, rtol=0)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_subset_and_bootstrap_weights_equal_refits(setup, precision):
    problem, data, frame, adj, ems = setup
    rng = np.random.default_rng(1)
    n = problem.n
    W = np.ones((3, n), dtype=np.uint8)
    W[0, rng.choice(n, n // 5, replace=False)] = 0
    W[1] = np.bincount(rng.integers(0, n, n), minlength=n)
    W[2, : n // 2] = 0
    batched = fast.subset_effects_from(problem, W, block_rows=257, level=0.8, precision=precision)
    t = data[frame.treatment].to_numpy()
    single = [_ols_ate(data, t, frame.outcome, adj, ems, rows=np.repeat(np.arange(n), W[s]))
              for s in range(3)]
    tol = 1e-9 if precision == "float64" else 1e-4
    np.testing.assert_allclose(batched, single, atol=tol, rtol=0)
    # the bootstrap path without noise is the same computation
    no_noise = fast.bootstrap_effects_from(problem, W, 0.0, rng, precision=precision)
    np.testing.assert_allclose(no_noise, single, atol=tol, rtol=0)


def test_chunked_simulations_equal_single_chunk(setup, monkeypatch):
    """Splitting simulations into chunks (bounded memory) does not change the draws' use."""
    problem = setup[0]
    one = fast.placebo_effects(problem, 12, np.random.default_rng(3))
    monkeypatch.setattr(fast, "_sim_chunks",
                        lambda s, n, max_cells=0: [range(i, min(s, i + 5)) for i in range(0, s, 5)])
    chunked = fast.placebo_effects(problem, 12, np.random.default_rng(3))
    assert chunked.shape == one.shape == (12,)
    # different chunking consumes the generator differently; the distributions agree and
    # each chunk's effects are exact for its own draws (tested above)
    assert abs(chunked.mean() - one.mean()) < 5 * one.std() / np.sqrt(6)


def test_unobserved_confounder_linear_in_outcome_strength(setup):
    problem = setup[0]
    grid = fast.unobserved_confounder_effects(problem, [0.05], [0.0, 1.0, 2.0],
                                              np.random.default_rng(4))
    steps = np.diff(grid[0])
    assert steps[0] == pytest.approx(steps[1], rel=1e-9)


def test_unobserved_confounder_equals_refit_with_the_same_draw(setup, monkeypatch):
    monkeypatch.setattr(fast, "PRECISION", "float64")
    problem, data, frame, adj, ems = setup
    kappa_t, kappa_y = 0.1, 2.5
    rng = np.random.default_rng(8)
    ours = fast.unobserved_confounder_effects(problem, [kappa_t], [kappa_y], rng)[0, 0]
    w = np.random.default_rng(8).standard_normal((problem.n, 1))[:, 0]  # same stream
    t = data[frame.treatment].to_numpy().astype(bool) ^ (w >= fast.flip_threshold(kappa_t))
    shifted = data.assign(**{frame.outcome: data[frame.outcome] - kappa_y * w})
    assert ours == pytest.approx(_ols_ate(shifted, t, frame.outcome, adj, ems), abs=1e-9)
