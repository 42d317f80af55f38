"""The synthetic data is what it claims: its stored true ATE is recovered, confounding is real."""

import numpy as np
import pytest

from e2i_pipelines.core.encoding import numeric_design
from e2i_pipelines.core.spec import validate_frame
from e2i_pipelines.data.synthetic import COMMON_CAUSES, PROGNOSTIC_COVARIATES, SPEC, generate_e2i


@pytest.fixture(scope="module")
def sample():
    frame, truth = generate_e2i(200_000, seed=11)
    return frame.sample(100_000, random_state=3), truth


def test_true_ate_is_recovered_by_plain_regression(sample):
    frame, truth = sample
    treatment = frame["treatment"].to_numpy(dtype=float)
    confounders = numeric_design(frame, [*COMMON_CAUSES, *PROGNOSTIC_COVARIATES]).to_numpy()
    modifiers = numeric_design(frame, ["digital_engagement", "specialty"]).to_numpy()
    interactions = (modifiers - modifiers.mean(axis=0)) * treatment[:, None]
    design = np.column_stack([np.ones(len(frame)), treatment, confounders, interactions])
    coef, *_ = np.linalg.lstsq(design, frame["rx_volume"].to_numpy(), rcond=None)
    assert abs(coef[1] - truth["ate"]) < 0.25, (coef[1], truth["ate"])


def test_confounding_is_real(sample):
    frame, truth = sample
    assert truth["naive_difference"] - truth["ate"] > 3.0
    assert 0.15 < truth["treated_share"] < 0.6


def test_generation_is_seeded_and_valid():
    a, truth_a = generate_e2i(5_000, seed=1)
    b, truth_b = generate_e2i(5_000, seed=1)
    c, _ = generate_e2i(5_000, seed=2)
    assert a.equals(b) and truth_a == truth_b
    assert not a["rx_volume"].equals(c["rx_volume"])
    validate_frame(a, SPEC)


def test_size_bounds_are_checked():
    with pytest.raises(ValueError, match="n_rows"):
        generate_e2i(10, seed=0)
