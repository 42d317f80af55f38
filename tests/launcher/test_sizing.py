"""``tier: auto`` sizing without Docker: the fit against known truth and scipy, the tier choice,
the auto request from tags/plan, and history read back from a real instance's runs."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
from scipy.stats import theilslopes

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.defs.diagnostics.assets import probe_assets
from e2i_pipelines.launcher.cgroup_usage import PEAK_MEMORY_TAG
from e2i_pipelines.launcher.promotion import FAILURE_REASON_TAG, FAILURE_TAG, TIER_SOURCE_TAG
from e2i_pipelines.launcher.run_tier import auto_request, tier_for_run
from e2i_pipelines.launcher.sizing import (
    INPUT_SIZE_TAG,
    PREDICTED_PEAK_TAG,
    SIZING_KEY_TAG,
    TIER_BASIS_TAG,
    TierCeilingError,
    choose,
    headroom,
    parse_input_size,
    sample_of,
)
from e2i_pipelines.launcher.sizing_fit import Prediction, Sample, predict_peak, theil_sen
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG
from e2i_pipelines.tiers import (
    DEFAULT_PROFILES,
    TIER_CEILING_TAG,
    TIER_FLOOR_TAG,
    TIER_TAG,
    AutoBounds,
    Tier,
    TierProfile,
    asset_tier_kwargs,
    tier_of_tags,
)

MIB = 2**20
BASE, PER_ROW = 450 * MIB, 1024.0  # the truth: 450 MiB + 1 KiB per row
PROFILES = {
    Tier.LIGHT: TierProfile(1, "768m", "768m", 256, "64m"),
    Tier.MEDIUM: TierProfile(1, "1280m", "1280m", 512, "128m"),
    Tier.HEAVY: TierProfile(2, "1536m", "1536m", 1024, "256m"),
}
ALL = AutoBounds(Tier.LIGHT, Tier.HEAVY)


def truth(rows: float) -> float:
    return BASE + PER_ROW * rows


def test_theil_sen_matches_scipy_joint_on_random_data():
    rng = np.random.default_rng(7)
    x = rng.uniform(1e4, 2e6, 25)
    y = 3e8 + 900 * x + rng.normal(0, 2e7, 25)
    intercept, slope = theil_sen(list(zip(x.tolist(), y.tolist(), strict=True)))
    reference = theilslopes(y, x, method="joint")
    assert slope == pytest.approx(reference.slope, rel=1e-12)
    assert intercept == pytest.approx(reference.intercept, rel=1e-9)


def test_fit_recovers_affine_truth_despite_an_outlier():
    rng = np.random.default_rng(11)
    rows = rng.uniform(1e4, 4e5, 12)
    samples = [Sample(r, int(truth(r) * rng.uniform(0.98, 1.02))) for r in rows]
    samples.append(Sample(2e5, int(truth(2e5) * 3)))  # one run that leaked memory
    for new in (5e3, 1e5, 8e5):  # below, inside and beyond the history
        prediction = predict_peak(samples, new)
        assert prediction.peak == pytest.approx(truth(new), rel=0.05), new
        assert prediction.n == 13 and "theil-sen" in prediction.fit


def test_one_size_scales_up_by_the_ratio_but_never_down():
    samples = [Sample(1e5, 600 * MIB), Sample(1e5, 640 * MIB)]
    assert predict_peak(samples, 2e5).peak == 2 * 640 * MIB
    assert predict_peak(samples, 1e4).peak == 640 * MIB
    assert "size ratio" in predict_peak(samples, 2e5).fit
    assert not predict_peak(samples, 2e5).firm and predict_peak(samples, 1e4).firm
    # a guess above the ceiling runs at the ceiling instead of being refused
    guess = choose(predict_peak(samples, 1e6), 1e6, 1.3, ALL, None, PROFILES)
    assert guess.tier is Tier.HEAVY and "one-size guess" in guess.tags[TIER_BASIS_TAG]


def test_unknown_size_uses_the_largest_peak_and_no_history_is_none():
    samples = [Sample(1e5, 600 * MIB), Sample(None, 700 * MIB)]
    assert predict_peak(samples, None) == Prediction(700 * MIB, 2, "max observed peak (no input size)")
    assert predict_peak([], 1e5) is None


def test_an_oom_kill_raises_predictions_at_and_above_its_size_only():
    done = [Sample(r, int(truth(r))) for r in (1e4, 5e4, 1e5)]
    killed = Sample(6e4, 768 * MIB, lower_bound=True)
    before = predict_peak(done, 6e4).peak
    assert before < 768 * MIB
    after = predict_peak([*done, killed], 6e4)
    assert after.peak > 768 * MIB > before and "OOM-killed" in after.fit
    assert predict_peak([*done, killed], 2e4).peak == predict_peak(done, 2e4).peak
    assert predict_peak([killed], 6e4).peak > 768 * MIB  # a bound alone still predicts


def test_choose_picks_the_smallest_tier_holding_prediction_times_headroom():
    def tier(peak_mib: float, factor: float = 1.3, bounds: AutoBounds = ALL) -> Tier:
        return choose(Prediction(int(peak_mib * MIB), 3, "f"), 1e5, factor, bounds, None, PROFILES).tier
    assert tier(590) is Tier.LIGHT  # 767 MiB <= 768
    assert tier(591) is Tier.MEDIUM
    assert tier(700, factor=1.0) is Tier.LIGHT
    assert tier(10, bounds=AutoBounds(Tier.MEDIUM, Tier.HEAVY)) is Tier.MEDIUM
    assert tier(1100) is Tier.HEAVY
    choice = choose(Prediction(500 * MIB, 3, "theil-sen x"), 1e5, 1.3, ALL, None, PROFILES)
    assert choice.tags[TIER_SOURCE_TAG] == "auto" and choice.tags[PREDICTED_PEAK_TAG] == str(500 * MIB)
    assert choice.tags[TIER_BASIS_TAG].startswith("3 past run(s), theil-sen x; input 100000;")
    assert choice.tags[TIER_BASIS_TAG].endswith("-> light (memory 768m)")


def test_prediction_above_the_ceiling_is_refused_with_the_reason():
    to_medium = AutoBounds(Tier.LIGHT, Tier.MEDIUM)
    with pytest.raises(TierCeilingError, match=r"above the memory of the ceiling tier medium \(1280m\)"):
        choose(Prediction(1300 * MIB, 3, "f"), 1e5, 1.3, to_medium, None, PROFILES)
    tight = choose(Prediction(1200 * MIB, 3, "f"), 1e5, 1.3, to_medium, None, PROFILES)
    assert tight.tier is Tier.MEDIUM and "headroom only 1.07" in tight.tags[TIER_BASIS_TAG]


def test_no_history_uses_the_declared_tier_else_the_ceiling_within_bounds():
    def fallback(declared: Tier | None, bounds: AutoBounds) -> Tier:
        return choose(None, None, 1.3, bounds, declared, PROFILES).tier
    assert fallback(Tier.MEDIUM, ALL) is Tier.MEDIUM
    assert fallback(None, AutoBounds(Tier.LIGHT, Tier.MEDIUM)) is Tier.MEDIUM
    assert fallback(Tier.HEAVY, AutoBounds(Tier.LIGHT, Tier.MEDIUM)) is Tier.MEDIUM
    assert fallback(Tier.LIGHT, AutoBounds(Tier.MEDIUM, Tier.HEAVY)) is Tier.MEDIUM


def test_input_size_and_headroom_parsing():
    assert parse_input_size("100000x20") == 2e6 and parse_input_size(" 5000 ") == 5000
    assert headroom({}, {}) == 1.3
    assert headroom({}, {"E2I_AUTO_TIER_HEADROOM": "1.5"}) == 1.5
    assert headroom({"e2i/tier_headroom": "1.1"}, {"E2I_AUTO_TIER_HEADROOM": "1.5"}) == 1.1


def test_samples_from_run_tags():
    steps = '{"a": {"rows": 1000, "columns": 5}, "b": {"rows": 10}}'
    ok = {PEAK_MEMORY_TAG: "500", STEP_INPUTS_TAG: steps, INPUT_SIZE_TAG: "7"}
    assert sample_of(ok, True, PROFILES) == Sample(5000.0, 500)
    assert sample_of({PEAK_MEMORY_TAG: "500", INPUT_SIZE_TAG: "7x2"}, True, PROFILES) == Sample(14.0, 500)
    oom = {FAILURE_TAG: "oom", TIER_TAG: "light", PEAK_MEMORY_TAG: "100", INPUT_SIZE_TAG: "9"}
    assert sample_of(oom, False, PROFILES) == Sample(9.0, 768 * MIB, True)
    assert sample_of({FAILURE_TAG: "crash", PEAK_MEMORY_TAG: "100"}, False, PROFILES) is None
    assert sample_of({INPUT_SIZE_TAG: "9"}, True, PROFILES) is None


def test_auto_request_from_run_tag_and_from_auto_steps():
    medium, heavy = {TIER_TAG: "medium"}, {TIER_TAG: "heavy"}
    auto_step = asset_tier_kwargs(Tier.AUTO, Tier.LIGHT, Tier.MEDIUM)["op_tags"]
    assert auto_request({}, [medium, heavy]) is None
    assert auto_request({TIER_TAG: "auto"}, [medium]) == (ALL, Tier.MEDIUM)
    assert auto_request({TIER_TAG: "auto", TIER_CEILING_TAG: "medium"}, [auto_step]) == (
        AutoBounds(Tier.LIGHT, Tier.MEDIUM), Tier.MEDIUM)
    assert auto_request({}, [auto_step, None]) == (AutoBounds(Tier.LIGHT, Tier.MEDIUM), None)
    assert auto_request({}, [auto_step, heavy]) == (AutoBounds(Tier.HEAVY, Tier.HEAVY), None)
    assert tier_of_tags(auto_step) is Tier.MEDIUM  # everything else sees the ceiling
    assert list(Tier) == [Tier.LIGHT, Tier.MEDIUM, Tier.HEAVY]  # auto is no size


def _probe_run(instance, storage, tags: dict[str, str]) -> dg.DagsterRun:
    result = dg.materialize(probe_assets, instance=instance, selection=["probe_heavy"],
                            resources={"storage": storage}, tags=tags)
    return instance.get_run_by_id(result.run_id)


def test_tier_for_run_sizes_from_the_instance_history(tmp_path):
    """History is read back from the instance's runs (tags as a run worker writes them)."""
    storage = E2IStorage(root=str(tmp_path))
    with dg.instance_for_test() as instance:
        auto = {TIER_TAG: "auto", INPUT_SIZE_TAG: "50000"}
        first = _probe_run(instance, storage, auto)
        assert tier_for_run(instance, first).tier is Tier.HEAVY  # no profiles: the declared tier
        resolved = tier_for_run(instance, first, PROFILES)
        assert (resolved.tier, resolved.source) == (Tier.HEAVY, "auto")
        key = resolved.tags[SIZING_KEY_TAG]
        for rows in (1e4, 1e5, 2e5):
            run = _probe_run(instance, storage, {TIER_TAG: "heavy"})
            instance.add_run_tags(run.run_id, {SIZING_KEY_TAG: key, INPUT_SIZE_TAG: str(int(rows)),
                                               PEAK_MEMORY_TAG: str(int(truth(rows)))})
        small = tier_for_run(instance, _probe_run(instance, storage, auto), PROFILES)
        assert small.tier is Tier.LIGHT and int(small.tags[PREDICTED_PEAK_TAG]) == pytest.approx(
            truth(5e4), rel=0.01)
        big = _probe_run(instance, storage, {**auto, INPUT_SIZE_TAG: "650000"})
        assert tier_for_run(instance, big, PROFILES).tier is Tier.HEAVY
        capped = _probe_run(instance, storage, {**auto, INPUT_SIZE_TAG: "900000", TIER_CEILING_TAG: "medium"})
        with pytest.raises(TierCeilingError, match="ceiling tier medium"):
            tier_for_run(instance, capped, PROFILES)
        tags = instance.get_run_by_id(capped.run_id).tags
        assert tags[FAILURE_TAG] == "tier_ceiling" and "predicted peak" in tags[FAILURE_REASON_TAG]
        assert tags[TIER_TAG] == "medium"  # no longer auto: displays and costs see a tier
        fixed = _probe_run(instance, storage, {TIER_TAG: "medium", TIER_FLOOR_TAG: "heavy"})
        assert tier_for_run(instance, fixed, PROFILES).tags == {SIZING_KEY_TAG: key}
    assert DEFAULT_PROFILES.keys() == set(Tier)
