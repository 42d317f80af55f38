"""Each twin fidelity check passes on good twins and fails on twins broken on purpose; our
shape and pair metrics equal SDMetrics'."""

import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.twins import copula as tc
from e2i_pipelines.analytics.twins import quality
from e2i_pipelines.analytics.twins import sampling as ts
from e2i_pipelines.analytics.twins.fidelity_checks import CHECKS, Rules, run_checks
from e2i_pipelines.data.synthetic import SPEC, generate_e2i

COLUMNS = [*SPEC.covariates, SPEC.treatment]
RULES = Rules(sample_rows=30_000, detection_rows=15_000, dcr_rows=8_000)


@pytest.fixture(scope="module")
def world():
    """Real E2I rows (known structure), a copula fitted on them, good twins."""
    frame, _ = generate_e2i(60_000, seed=11)
    model = tc.fit_copula(frame[COLUMNS], COLUMNS, priority=[SPEC.treatment], seed=0)
    twins = ts.sample(model, RULES.sample_rows, seed=4).drop(columns=tc.TWIN_ID)
    real = frame.sample(RULES.sample_rows, random_state=2).reset_index(drop=True)
    return frame, model, real, twins


def _run(world, twins, only=CHECKS):
    frame, model, real, _ = world
    outs = run_checks(real, twins, numeric=model.numeric, discrete=model.discrete_names,
                      treatment=SPEC.treatment, outcome=SPEC.outcome,
                      real_chunks=[frame[COLUMNS].iloc[:30_000], frame[COLUMNS].iloc[30_000:]],
                      rules=RULES, seed=0, n_jobs=1, only=only)
    return {o.name: o for o in outs}


def _shuffled(twins: pd.DataFrame) -> pd.DataFrame:
    """Every column permuted on its own: shapes kept, every dependence broken."""
    rng = np.random.default_rng(5)
    return pd.DataFrame({c: twins[c].to_numpy()[rng.permutation(len(twins))] for c in twins})


def test_good_twins_pass_every_check(world):
    results = _run(world, world[3])
    assert list(results) == list(CHECKS)
    failed = {n: o.numbers for n, o in results.items() if not o.passed}
    assert not failed
    assert results["detection"].numbers["auc"] < 0.6
    assert results["privacy"].numbers["exact_copies"] == 0
    assert results["privacy"].numbers["real_rows_hashed"] == 60_000
    for o in results.values():
        assert o.rule and o.figure is not None


def test_shifted_column_fails_shapes(world):
    twins = world[3].copy()
    twins["patient_volume"] *= 1.3
    out = _run(world, twins, ["column_shapes"])["column_shapes"]
    assert not out.passed and out.numbers["worst_column"] == "patient_volume"


def test_shuffled_columns_keep_shapes_but_fail_pairs_and_detection(world):
    results = _run(world, _shuffled(world[3]))
    assert results["column_shapes"].passed
    assert not results["column_pair_trends"].passed
    assert results["column_pair_trends"].numbers["worst_pair"] == "patient_volume, prior_rx"
    assert not results["detection"].passed and results["detection"].error
    assert results["detection"].numbers["auc"] > 0.7


def test_treating_the_wrong_twins_fails_causal_fidelity(world):
    """Same shares and margins, but the treated twins are the most digitally engaged (an
    effect modifier): the ATT of the twins no longer matches the data's."""
    twins = world[3].copy()
    engaged = twins["digital_engagement"].to_numpy()
    cut = np.quantile(engaged, 1 - twins[SPEC.treatment].mean())
    twins[SPEC.treatment] = (engaged >= cut).astype(twins[SPEC.treatment].dtype)
    out = _run(world, twins, ["causal_fidelity"])["causal_fidelity"]
    assert not out.passed
    assert out.numbers["ate_abs_diff"] <= out.numbers["ate_allowed_diff"]  # ATE ignores who
    assert out.numbers["att_abs_diff"] > 2 * out.numbers["att_allowed_diff"]
    assert out.numbers["data_att_ci_low"] < out.numbers["data_att"] < out.numbers["data_att_ci_high"]


def test_collapsed_predictors_fail_ml_utility(world):
    twins = world[3].copy()
    for c in ("patient_volume", "prior_rx"):  # the outcome's strongest predictors
        twins[c] = twins[c].median()
    out = _run(world, twins, ["ml_utility"])["ml_utility"]
    assert not out.passed
    assert out.numbers["tstr_r2"] < 0.9 * out.numbers["trtr_r2"]
    assert out.numbers["trtr_r2"] > 0.8


def test_copied_real_rows_fail_privacy(world):
    frame, _, _, twins = world
    copies = frame[COLUMNS].sample(len(twins), random_state=9).reset_index(drop=True)
    out = _run(world, copies, ["privacy"])["privacy"]
    assert not out.passed
    assert out.numbers["exact_copy_share"] == 1.0
    # a few copies among good twins are caught too
    mixed = pd.concat([twins.iloc[:-300], copies.iloc[:300]], ignore_index=True)
    out = _run(world, mixed, ["privacy"])["privacy"]
    assert not out.passed and out.numbers["exact_copies"] == 300


def test_wrong_columns_fail_before_work(world):
    with pytest.raises(ValueError, match="missing"):
        _run(world, world[3].drop(columns=["region"]))


def test_metrics_equal_sdmetrics():
    from sdmetrics.column_pairs import ContingencySimilarity, CorrelationSimilarity
    from sdmetrics.single_column import KSComplement, TVComplement

    real, _ = generate_e2i(3_000, seed=1)
    fake, _ = generate_e2i(2_000, seed=2)
    fake["patient_volume"] *= 1.2
    fake["region"] = fake["region"].to_numpy()[::-1]
    num, disc = ["patient_volume", "prior_rx", "engagement_score"], ["region", "treatment"]
    shapes = quality.column_shapes(real, fake, num, disc)
    for c in num:
        assert shapes[c]["score"] == pytest.approx(KSComplement.compute(real[c], fake[c]), abs=1e-9)
    for c in disc:
        assert shapes[c]["score"] == pytest.approx(TVComplement.compute(real[c], fake[c]), abs=1e-9)
    pairs = {tuple(p["columns"]): p["score"] for p in quality.pair_trends(real, fake, num, disc)}
    assert len(pairs) == 10
    for (a, b), score in pairs.items():
        if a in num and b in num:
            want = CorrelationSimilarity.compute(real[[a, b]], fake[[a, b]])
        else:
            want = ContingencySimilarity.compute(real[[a, b]], fake[[a, b]],
                                                 continuous_column_names=[c for c in (a, b)
                                                                          if c in num])
        assert score == pytest.approx(want, abs=1e-9), (a, b)
    assert min(pairs.values()) < 0.99  # the reversed region breaks its pairs: a real test
