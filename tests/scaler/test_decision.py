"""The scaler's decision rule over a table of cases."""

import pytest

from e2i_pipelines.scaler.decision import decide

CASES = [
    # id, min, max, queued, running, capacity, current -> allowed, bound_by, changed
    ("idle returns to min 0", 0, 4, 0, 0, None, 3, 0, "demand", True),
    ("idle keeps min reserved", 1, 4, 0, 0, None, 0, 1, "min", True),
    ("demand bound", 0, 4, 2, 1, 10, 0, 3, "demand", True),
    ("capacity bound", 0, 4, 6, 0, 1, 0, 1, "capacity", True),
    ("capacity zero holds all", 0, 4, 5, 0, 0, 0, 0, "capacity", False),
    ("max clamp", 0, 2, 6, 0, 8, 0, 2, "max", True),
    ("min clamp over capacity", 2, 4, 3, 0, 1, None, 2, "min", True),
    ("running count as demand", 0, 4, 0, 2, 8, 2, 2, "demand", False),
    ("no change, no write", 0, 2, 4, 2, 8, 2, 2, "max", False),
    ("first decision on a pool without limit", 0, 4, 0, 0, None, None, 0, "demand", True),
    ("scale down below running (queued held)", 0, 4, 1, 3, 2, 4, 2, "capacity", True),
]


@pytest.mark.parametrize(
    "min_runs,max_runs,queued,running,capacity,current,allowed,bound_by,changed",
    [c[1:] for c in CASES], ids=[c[0] for c in CASES],
)
def test_decision_table(min_runs, max_runs, queued, running, capacity, current,
                        allowed, bound_by, changed):
    d = decide(min_heavy_runs=min_runs, max_heavy_runs=max_runs, queued=queued,
               running=running, capacity_slots=capacity, current_limit=current)
    assert (d.allowed, d.bound_by, d.changed) == (allowed, bound_by, changed)
    assert d.demand == queued + running
    record = d.as_dict()
    for key in ("min_heavy_runs", "max_heavy_runs", "queued", "running", "capacity_slots",
                "current_limit", "allowed"):
        assert key in record
    assert f"heavy cap {allowed}" in d.summary()


@pytest.mark.parametrize("field", ["min_heavy_runs", "max_heavy_runs", "queued", "running",
                                   "capacity_slots"])
def test_negative_inputs_are_rejected_by_name(field):
    kwargs = dict(min_heavy_runs=0, max_heavy_runs=4, queued=1, running=1, capacity_slots=2,
                  current_limit=0)
    kwargs[field] = -1
    with pytest.raises(ValueError, match=field):
        decide(**kwargs)


def test_max_below_min_is_rejected():
    with pytest.raises(ValueError, match="max_heavy_runs"):
        decide(min_heavy_runs=3, max_heavy_runs=2, queued=0, running=0, capacity_slots=None,
               current_limit=None)
