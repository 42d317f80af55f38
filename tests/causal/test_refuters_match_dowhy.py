"""The fast refuters reproduce DoWhy's refuter statistics on the same data.

DoWhy's simulated effects come from its own per-simulation functions (``_refute_once`` in
``dowhy/causal_refuters``), the code its public refuters loop over; ours from the batched
engine. Means must agree within Monte-Carlo error and spreads within sampling error.
"""

import copy
import warnings

import numpy as np
import pytest
from dowhy.causal_refuters import bootstrap_refuter as dw_boot
from dowhy.causal_refuters import data_subset_refuter as dw_subset
from dowhy.causal_refuters import placebo_treatment_refuter as dw_placebo
from dowhy.causal_refuters import random_common_cause as dw_rcc

from e2i_pipelines.analytics.causal import refute_linear as fast
from e2i_pipelines.analytics.causal.refute_dowhy import dowhy_refute, dowhy_unobserved_effect
from e2i_pipelines.analytics.causal.refuters import p_value, run_refuters
from e2i_pipelines.analytics.causal.settings import RefuterSettings

DOWHY_SIMS = 40
OUR_SIMS = 300


def _dowhy_effects(name, frame, fitted, sims):
    model, estimand, estimate = fitted
    data = frame.data
    np.random.seed(11)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(sims):
            if name == "placebo_treatment":
                est = copy.deepcopy(estimand)
                est.treatment_variable = ["placebo"]
                out.append(dw_placebo._refute_once(data, est, estimate, [frame.treatment],
                                                   dict(data.dtypes)))
            elif name == "random_common_cause":
                est = copy.deepcopy(estimand)
                est.set_adjustment_set(estimand.get_adjustment_set() + ["w_random"])
                out.append(dw_rcc._refute_once(data, est, estimate))
            elif name == "data_subset":
                out.append(dw_subset._refute_once(data, estimand, estimate, 0.8, None))
            else:
                chosen = estimand.get_adjustment_set() + estimate.estimator._effect_modifier_names
                out.append(dw_boot._refute_once(data, estimand, estimate, chosen, None, len(data),
                                                0.1, 0.1))
    return np.array(out, dtype=float)


@pytest.fixture(scope="module")
def problem(linear_fit):
    frame, result, (_, estimand, estimate), _ = linear_fit
    return fast.LinearProblem.from_frame(frame.data, frame.treatment, frame.outcome,
                                         estimand.get_adjustment_set(),
                                         estimate.estimator._effect_modifier_names)


def test_point_estimate_identical(linear_fit, problem):
    _, result, _, _ = linear_fit
    assert problem.estimate() == pytest.approx(result.estimate, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ["placebo_treatment", "random_common_cause", "data_subset",
                                  "bootstrap"])
def test_simulated_effects_match_dowhy(linear_fit, problem, name):
    frame, _, fitted, _ = linear_fit
    rng = np.random.default_rng(5)
    ours = {
        "placebo_treatment": lambda: fast.placebo_effects(problem, OUR_SIMS, rng),
        "random_common_cause": lambda: fast.random_common_cause_effects(problem, OUR_SIMS, rng),
        "data_subset": lambda: fast.subset_effects(problem, OUR_SIMS, 0.8, rng),
        "bootstrap": lambda: fast.bootstrap_effects(problem, OUR_SIMS, 0.1, rng),
    }[name]()
    theirs = _dowhy_effects(name, frame, fitted, DOWHY_SIMS)
    sd_o, sd_t = ours.std(ddof=1), theirs.std(ddof=1)
    # means: 4.5 standard errors of the difference of two Monte-Carlo means
    se = np.sqrt(sd_o**2 / ours.size + sd_t**2 / theirs.size)
    assert abs(ours.mean() - theirs.mean()) < 4.5 * se, (name, ours.mean(), theirs.mean(), se)
    # spreads: the sd of a sample sd is ~ sd / sqrt(2 (m - 1)); allow ~4.5 of those
    assert 0.6 < sd_o / sd_t < 1.6, (name, sd_o, sd_t)


def test_bootstrap_noise_changes_the_distribution_like_dowhy(linear_fit, problem):
    """Without DoWhy's measurement noise the bootstrap would be centred on the estimate."""
    _, result, _, _ = linear_fit
    rng = np.random.default_rng(9)
    noisy = fast.bootstrap_effects(problem, 300, 0.1, rng)
    clean = fast.bootstrap_effects(problem, 300, 0.0, rng)
    assert abs(clean.mean() - result.estimate) < 4 * clean.std() / np.sqrt(300)
    assert noisy.mean() != pytest.approx(clean.mean(), abs=1e-6)


def test_unobserved_common_cause_matches_dowhy_direct_simulation(linear_fit, problem):
    frame, _, fitted, _ = linear_fit
    model, estimand, estimate = fitted
    kt, ky = 0.08, 3.0
    rng = np.random.default_rng(2)
    ours = np.array([fast.unobserved_confounder_effects(problem, [kt], [ky], rng)[0, 0]
                     for _ in range(60)])
    np.random.seed(4)
    theirs = np.array([dowhy_unobserved_effect(model, estimand, estimate, kt, ky)
                       for _ in range(30)])
    se = np.sqrt(ours.var(ddof=1) / ours.size + theirs.var(ddof=1) / theirs.size)
    assert abs(ours.mean() - theirs.mean()) < 4.5 * se, (ours.mean(), theirs.mean(), se)
    assert 0.5 < ours.std() / theirs.std() < 2.0


def test_p_value_is_dowhys_definition():
    sims = np.linspace(-1, 1, 101)
    # two-sided percentile test: 0 sits at the median -> p = 1; the max -> p ~ 2/101
    assert p_value(0.0, sims) == pytest.approx(1.0)
    assert p_value(1.0, sims) == pytest.approx(2 * 0.5 / 101)
    assert p_value(5.0, sims) == 0.0


def test_run_refuters_agrees_with_dowhy_public_refuters(linear_fit):
    """Our pass/fail uses DoWhy's test; mean effects agree with DoWhy's public refuters."""
    frame, result, fitted, fit = linear_fit
    settings = RefuterSettings(num_simulations=100, seed=1)
    ours = {r.name: r for r in run_refuters(frame, fit, fitted, settings)}
    assert set(ours) == {"placebo_treatment", "random_common_cause", "data_subset", "bootstrap",
                         "unobserved_common_cause"}
    assert all(r.engine == "fast" for r in ours.values())
    model, estimand, estimate = fitted
    mean, p = dowhy_refute("placebo_treatment", model, estimand, estimate, num_simulations=40,
                           random_seed=3)
    sd = ours["placebo_treatment"].simulations.std()
    assert abs(ours["placebo_treatment"].new_effect - mean) < 4.5 * sd * np.sqrt(1 / 100 + 1 / 40)
    assert ours["placebo_treatment"].p_value == p_value(0.0, ours["placebo_treatment"].simulations)
    ucc = ours["unobserved_common_cause"]
    assert ucc.details["bound_low"] <= ucc.details["bound_high"]
    assert ucc.simulations.size == ucc.details["grid_points"]
