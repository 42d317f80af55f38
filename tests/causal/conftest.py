"""Small synthetic E2I data and fitted DoWhy estimates shared by the causal tests."""

import warnings

import pytest

from e2i_pipelines.analytics.causal.estimate import estimate_effect, prepare_frame
from e2i_pipelines.data.synthetic import SPEC, generate_e2i


@pytest.fixture(scope="session")
def e2i_small():
    """(frame, truth) of 2,000 synthetic HCPs."""
    df, truth = generate_e2i(2000, seed=3)
    return df, truth


@pytest.fixture(scope="session")
def linear_fit(e2i_small):
    """(CausalFrame, EstimateResult, (model, estimand, estimate), FittedEffect) for linear
    regression."""
    warnings.filterwarnings("ignore")
    frame = prepare_frame(e2i_small[0], SPEC)
    result, fit, fitted = estimate_effect(frame, "linear_regression")
    return frame, result, fitted, fit
