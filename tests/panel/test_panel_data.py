"""load_panel: codes, cohorts, wide arrays, and every bad input named before estimation."""

import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.panel.data import NEVER, load_panel, sorted_codes
from e2i_pipelines.core.errors import DataValidationError
from tests.panel.conftest import panel_spec
from tests.panel.generated import staggered


def _frame(rows):
    return pd.DataFrame(rows, columns=["unit", "time", "d", "y"])


GOOD = [("a", 1, 0, 1.0), ("a", 2, 1, 2.0), ("a", 3, 1, 3.0),
        ("b", 1, 0, 1.5), ("b", 2, 0, 1.0), ("b", 3, 0, 0.5),
        ("c", 1, 0, 0.0), ("c", 2, 0, 0.0), ("c", 3, 1, 4.0)]


def test_codes_cohorts_and_wide():
    df = _frame(GOOD).sample(frac=1.0, random_state=0)  # row order must not matter
    p = load_panel(df, panel_spec())
    assert list(p.units) == ["a", "b", "c"] and list(p.periods) == [1, 2, 3]
    assert list(p.cohort) == [1, NEVER, 2]
    assert p.balanced and not p.warnings and p.staggered
    y = p.wide("y")
    assert y.shape == (3, 3) and y[2, 2] == 4.0 and y[1, 0] == 1.5
    assert list(p.cluster) == list(p.unit)  # cluster defaults to the unit


def test_unbalanced_is_reported_not_refused():
    p = load_panel(_frame(GOOD[:-2] + [("c", 3, 1, 4.0)]), panel_spec())
    assert not p.balanced
    assert "unbalanced panel" in p.warnings[0] and "1 missing" in p.warnings[0]
    assert np.isnan(p.wide("y")[2, 1])


def test_dates_as_text_are_ordered():
    rows = [(u, t, d, y) for (u, _, d, y), t in zip(GOOD, ["2024-01", "2024-02", "2024-03"] * 3, strict=True)]
    p = load_panel(_frame(rows), panel_spec())
    assert [str(x)[:7] for x in p.periods] == ["2024-01", "2024-02", "2024-03"]


@pytest.mark.parametrize(("rows", "extra", "needles"), [
    (GOOD + [("a", 2, 1, 9.0)], {}, ["'unit'/'time'", "1 duplicate", "row 10"]),
    ([("a", 1, 0, 1.0), ("a", 2, 1, 2.0), ("a", 3, 0, 3.0)] + GOOD[3:], {},
     ["'treatment_off'", "switch treatment off"]),
    ([("a", 1, 1, 1.0), ("a", 2, 1, 2.0), ("a", 3, 1, 3.0)] + GOOD[3:], {},
     ["treated in every observed period"]),
    ([r for r in GOOD if r[0] != "b"], {}, ["'control_group'", "never_treated"]),
    ([("a", 1, 0, 1.0), ("a", 2, 1, 2.0), ("c", 1, 0, 0.0), ("c", 2, 1, 0.0)],
     {"control_group": "not_yet_treated"}, ["no never-treated and no not-yet-treated"]),
    ([(u, t, 2 * d, y) for u, t, d, y in GOOD], {}, ["must be 0/1", "'treatment'"]),
    ([(u, ["x", "y", "z"][t - 1] + "?", d, y) for u, t, d, y in GOOD], {},
     ["'time'", "not orderable"]),
    ([(u, t, 0, y) for u, t, _, y in GOOD], {}, ["no unit is ever treated"]),
])
def test_bad_panels_name_the_problem(rows, extra, needles):
    with pytest.raises(DataValidationError) as info:
        load_panel(_frame(rows), panel_spec(**extra))
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_switching_off_allowed_is_a_warning():
    rows = [("a", 1, 0, 1.0), ("a", 2, 1, 2.0), ("a", 3, 0, 3.0)] + GOOD[3:]
    p = load_panel(_frame(rows), panel_spec(treatment_off="allowed"))
    assert p.cohort[0] == 1 and any("switch treatment off" in w for w in p.warnings)


def test_not_yet_treated_controls_without_never_treated():
    rows = [r for r in GOOD if r[0] != "b"]
    p = load_panel(_frame(rows), panel_spec(control_group="not_yet_treated"))
    assert list(p.cohort) == [1, 2]


def test_missing_values_and_columns_are_named():
    df = _frame(GOOD)
    df.loc[3, "y"] = np.nan
    with pytest.raises(DataValidationError, match="'y' has 1 missing"):
        load_panel(df, panel_spec())
    with pytest.raises(DataValidationError, match=r"no column\(s\) \['w'\]"):
        load_panel(_frame(GOOD), panel_spec(weights="w"))


def test_checked_load_skips_only_the_value_scans():
    """load_panel(checked=True) builds the same panel; it no longer scans values (a NaN
    outcome passes), and the structural checks still raise."""
    df = staggered(n_units=300, n_periods=6, cohorts=(3, 5), seed=7).df.sample(
        frac=1.0, random_state=1)
    spec = panel_spec(covariates=["x"])
    full, fast = load_panel(df, spec), load_panel(df, spec, checked=True)
    for name in ("unit", "time", "y", "d", "covariates", "cohort", "cluster"):
        assert np.array_equal(getattr(full, name), getattr(fast, name)), name
    assert fast.warnings == full.warnings
    load_panel(df.assign(y=df["y"].where(df["time"] != 2)), spec, checked=True)
    with pytest.raises(DataValidationError, match="duplicate"):
        load_panel(pd.concat([df, df.iloc[[3]]]), spec, checked=True)
    with pytest.raises(DataValidationError, match="switch treatment off"):
        load_panel(df.assign(d=df["d"].where(df["time"] != 6, 0)), spec, checked=True)


@pytest.mark.parametrize("values", [
    np.array([7, 3, 3, 9, -2, 7]), np.array([5, 1 << 40, 5, 0]),
    np.array([2, 2, 1], dtype=np.uint8), np.array([1.5, 0.5, 1.5]),
])
def test_sorted_codes_equal_pandas_factorize(values):
    """Dense integer labels (a presence table), sparse ones and floats (pd.factorize)."""
    labels, codes = sorted_codes(pd.Series(values))
    ref_codes, ref_labels = pd.factorize(pd.Series(values), sort=True)
    assert np.array_equal(codes, ref_codes) and np.array_equal(labels, np.asarray(ref_labels))
    assert codes.dtype == np.int64 and labels.dtype == values.dtype
