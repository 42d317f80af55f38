"""Synthetic control: weights and effect recovered on generated data, placebo p-values, the
weights against pysyncon's QP, and bad input failing before any fit."""

from __future__ import annotations

import numpy as np
import pytest

from e2i_pipelines.analytics.panel.synth import (
    placebo_in_space,
    simplex_least_squares,
    synthetic_control,
)

N_DONORS, T, T0 = 20, 40, 30
TRUE_W = {3: 0.5, 8: 0.3, 14: 0.2}


def _panel(effect: float, seed: int = 0) -> np.ndarray:
    """Row 0 = convex combination of independent random-walk donors (+ small noise) + effect."""
    rng = np.random.default_rng(seed)
    donors = 10 + rng.normal(size=(N_DONORS, T)).cumsum(axis=1)
    w = np.zeros(N_DONORS)
    w[list(TRUE_W)] = list(TRUE_W.values())
    treated = w @ donors + rng.normal(scale=0.05, size=T)
    treated[T0:] += effect
    return np.vstack([treated, donors])


def test_recovers_weights_and_effect_with_small_placebo_p() -> None:
    r = synthetic_control(_panel(effect=3.0), [0], T0)
    w = r.weights[0]
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
    for donor, true in TRUE_W.items():  # donor row d+1 in Y is column d of the weights
        assert abs(w[donor] - true) < 0.03, (donor, w[donor])
    assert np.delete(w, list(TRUE_W)).sum() < 0.05
    assert abs(r.estimate - 3.0) < 0.15
    assert np.allclose(r.gaps[0, T0:], 3.0, atol=0.4)
    assert r.pre_rmspe[0] < 0.1
    assert r.placebo is not None and r.placebo.p_value <= 1 / (1 + N_DONORS) + 1e-12
    assert r.ci_low < 3.0 < r.ci_high


def test_no_effect_placebo_p_not_small() -> None:
    ps = [synthetic_control(_panel(effect=0.0, seed=s), [0], T0).placebo.p_value
          for s in range(5)]
    assert min(ps) > 0.1, ps


def test_weights_agree_with_pysyncon() -> None:
    """Same QP (V = identity on the pre-period outcomes) solved by pysyncon's SLSQP.

    SLSQP stops at ftol=1e-6 on the objective, so its weights are off the optimum by up to
    ~1e-3; the tolerance is 5e-3 on each weight, and our objective must be no worse than
    pysyncon's (ours is the exact NNLS optimum, so it should be at least as low)."""
    from pysyncon import Synth

    rng = np.random.default_rng(7)
    Y = _panel(effect=2.0, seed=3)
    Y[0] += rng.normal(scale=0.5, size=T)  # not an exact combination: an interior fit
    A, b = Y[1:, :T0].T, Y[0, :T0]
    ours = synthetic_control(Y, [0], T0, placebo=False).weights[0]
    theirs, _ = Synth.w_optimize(V_mat=np.eye(T0), X0=A, X1=b)
    assert np.abs(ours - theirs).max() < 5e-3
    loss = lambda w: float(np.sum((A @ w - b) ** 2))  # noqa: E731
    assert loss(ours) <= loss(theirs) * (1 + 1e-9)


def test_simplex_least_squares_kkt() -> None:
    """KKT of min ||Aw-b||^2 on the simplex: gradient equal on the support, larger off it."""
    rng = np.random.default_rng(2)
    A, b = rng.normal(size=(25, 12)), rng.normal(size=25)
    w = simplex_least_squares(A, b)
    g = A.T @ (A @ w - b)
    on = w > 1e-9
    assert on.any() and np.ptp(g[on]) < 1e-6
    assert (g[~on] >= g[on].max() - 1e-6).all()


def test_covariates_change_fit_and_stay_on_simplex() -> None:
    Y = _panel(effect=1.0, seed=4)
    Z = np.random.default_rng(5).normal(size=(Y.shape[0], 2))
    r0 = synthetic_control(Y, [0], T0, placebo=False)
    r1 = synthetic_control(Y, [0], T0, Z=Z, v=np.array([50.0, 50.0]), placebo=False)
    assert abs(r1.weights.sum() - 1) < 1e-9 and r1.weights.min() >= 0
    assert not np.allclose(r0.weights, r1.weights, atol=1e-3)


def test_placebo_in_space_ranks_by_hand() -> None:
    """The p-value equals a by-hand count over the returned placebo ratios."""
    Y = _panel(effect=0.5, seed=6)
    r = synthetic_control(Y, [0], T0)
    own = r.post_rmspe[0] / r.pre_rmspe[0]
    plc = placebo_in_space(Y, np.array([0]), T0)
    assert np.allclose(plc.donor_ratios, r.placebo.donor_ratios)
    assert plc.p_value == pytest.approx((1 + (plc.donor_ratios >= own).sum()) / (1 + N_DONORS))


def test_two_treated_units_average_effect() -> None:
    Y = _panel(effect=2.0, seed=8)
    second = Y[[5, 9]].mean(axis=0)
    second[T0:] += 4.0
    r = synthetic_control(np.vstack([Y, second]), [0, Y.shape[0]], T0)
    assert r.weights.shape == (2, N_DONORS)
    assert abs(r.estimate - 3.0) < 0.3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"treated": list(range(11)), "first_treated": T0}, "exceed the limit max_treated=10"),
    ({"treated": [], "first_treated": T0}, "no treated unit"),
    ({"treated": [0], "first_treated": 1}, "at least 2 pre-periods"),
    ({"treated": [0], "first_treated": T}, "at least 2 pre-periods"),
    ({"treated": [99], "first_treated": T0}, "out of range"),
    ({"treated": list(range(N_DONORS - 1)), "first_treated": T0, "max_treated": 30},
     "at least 3 donor"),
])
def test_bad_input_fails_before_fitting(kwargs: dict, message: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import e2i_pipelines.analytics.panel.synth as synth

    def _boom(*_a, **_k):
        raise AssertionError("fitted before validating")

    monkeypatch.setattr(synth, "simplex_least_squares", _boom)
    with pytest.raises(ValueError, match=message):
        synthetic_control(_panel(effect=0.0), **kwargs)


def test_missing_outcome_rejected() -> None:
    Y = _panel(effect=0.0)
    Y[4, 7] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        synthetic_control(Y, [0], T0)
