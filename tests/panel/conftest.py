"""Shared helpers of the panel tests."""

import pytest

from e2i_pipelines.core.spec import spec_from_mapping


def panel_spec(**extra):
    """A checked panel spec over the generated columns (unit, time, d, y)."""
    return spec_from_mapping({"treatment": "d", "outcome": "y", "design": "panel",
                              "unit": "unit", "time": "time", **extra})


@pytest.fixture
def make_spec():
    return panel_spec
