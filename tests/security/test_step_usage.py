"""Per-step usage in GET /v1/runs/{id}: a broken or hostile ``e2i/step_inputs`` / ``e2i/peak_step``
tag (written by anyone with instance access) never becomes an error or a number it does not hold,
and a step-usage event's metadata is read as numbers only."""

import json

import pytest
from dagster._core.events import DagsterEvent, EngineEventData

from e2i_api.models import RunStatus
from e2i_api.run_views import step_usage
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG
from e2i_pipelines.launcher.step_usage import CPU_KEY, PEAK_KEY, PEAK_STEP_TAG, usage_of

HOSTILE = [
    "not json", "[1, 2]", '"text"', "null", "1e999",
    json.dumps({"a": "not a dict"}),
    json.dumps({"a": {"peak_memory_bytes": "1000", "cpu_seconds": [1], "wall_seconds": {"x": 1}}}),
    json.dumps({"a": {"peak_memory_bytes": -5, "cpu_seconds": True, "wall_seconds": None}}),
    '{"a": {"peak_memory_bytes": NaN, "cpu_seconds": Infinity, "wall_seconds": -Infinity}}',
    '{"<script>": {"peak_memory_bytes": 1e999, "cpu_seconds": 1' + "0" * 400 + "}}",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_run_view_leaves_out_unreadable_step_usage(raw):
    shown = step_usage({STEP_INPUTS_TAG: raw, PEAK_STEP_TAG: "../../etc/passwd"}, RunStatus.SUCCESS)
    assert shown["peak_step"] is None  # names only a step that is listed
    for step in shown["steps"]:
        assert (step.peak_memory, step.cpu_seconds, step.wall_seconds) == (None, None, None)


def test_peak_step_must_be_a_listed_step():
    tags = {STEP_INPUTS_TAG: json.dumps({"a": {"peak_memory_bytes": 5}}), PEAK_STEP_TAG: "b"}
    assert step_usage(tags, RunStatus.FAILURE)["peak_step"] is None
    assert step_usage({**tags, PEAK_STEP_TAG: "a"}, RunStatus.FAILURE)["peak_step"] == "a"


@pytest.mark.parametrize("value", ["1e9", [1], {"a": 1}, -0.5, float("nan")])
def test_step_usage_event_metadata_is_read_as_numbers_only(value):
    event = DagsterEvent(event_type_value="ENGINE_EVENT", job_name="j", step_key="s",
                         event_specific_data=EngineEventData(metadata={PEAK_KEY: 1, CPU_KEY: value}))
    assert usage_of(event) == {"peak_memory_bytes": 1}
