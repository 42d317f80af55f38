"""Synthetic DiD: the same estimate and placebo SE as diff-diff's SyntheticDiD (the R
synthdid algorithm) to 1e-6, and coverage of a known effect in a seeded simulation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.panel.sdid import synthetic_did


def _panel(seed: int, n: int = 30, t: int = 15, t0: int = 10, n1: int = 3,
           effect: float = 2.0) -> np.ndarray:
    """Unit + time effects + a 2-factor interactive term + noise; rows < n1 treated."""
    rng = np.random.default_rng(seed)
    L, F = rng.normal(size=(n, 2)), rng.normal(size=(t, 2))
    Y = (5 + 2 * rng.normal(size=n)[:, None] + rng.normal(size=t).cumsum()[None, :]
         + L @ F.T + rng.normal(scale=0.5, size=(n, t)))
    Y[:n1, t0:] += effect
    return Y


def _diff_diff(Y: np.ndarray, n1: int, t0: int, reps: int, seed: int):
    from diff_diff import SyntheticDiD

    n, t = Y.shape
    df = pd.DataFrame({"u": np.repeat(np.arange(n), t), "t": np.tile(np.arange(t), n),
                       "y": Y.ravel()})
    df["treated"] = (df["u"] < n1).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SyntheticDiD(n_bootstrap=reps, seed=seed).fit(
            df, outcome="y", treatment="treated", unit="u", time="t",
            post_periods=list(range(t0, t)))


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_diff_diff(seed: int) -> None:
    Y = _panel(seed)
    ours = synthetic_did(Y, [0, 1, 2], 10, replications=50, seed=seed)
    ref = _diff_diff(Y, 3, 10, reps=50, seed=seed)
    assert ours.estimate == pytest.approx(ref.att, abs=1e-6)
    assert ours.se == pytest.approx(ref.se, abs=1e-6)
    assert ours.unit_weights.min() >= 0 and ours.unit_weights.sum() == pytest.approx(1.0)
    assert ours.time_weights.sum() == pytest.approx(1.0)


def test_covers_known_effect() -> None:
    """30 seeded panels, true effect 2: the 95% placebo CI covers it in >= 24 of 30 (the
    probability of fewer at a true 95% coverage is < 0.01), and the mean estimate is close."""
    hits, estimates = 0, []
    for seed in range(30):
        r = synthetic_did(_panel(100 + seed, n=24, t=12, t0=8, n1=2), [0, 1], 8,
                          replications=30, seed=seed)
        hits += r.ci_low <= 2.0 <= r.ci_high
        estimates.append(r.estimate)
    assert hits >= 24, hits
    assert abs(np.mean(estimates) - 2.0) < 0.25


def test_zero_effect_ci_contains_zero_mostly() -> None:
    hits = sum(
        (r := synthetic_did(_panel(200 + s, n=24, t=12, t0=8, n1=2, effect=0.0), [0, 1], 8,
                            replications=30, seed=s)).ci_low <= 0.0 <= r.ci_high
        for s in range(10))
    assert hits >= 8


@pytest.mark.parametrize(("treated", "first", "message"), [
    ([0], 1, "at least 2 pre-periods"),
    ([99], 10, "out of range"),
    (list(range(16)), 10, "more control units"),
])
def test_bad_input(treated: list[int], first: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_did(_panel(0), treated, first)
