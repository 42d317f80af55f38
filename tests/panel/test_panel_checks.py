"""Which panel checks apply to which method, and the placebo in space wired to part B's
synthetic-control check."""

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.panel.checks import PANEL_CHECKS, run_checks
from e2i_pipelines.analytics.panel.data import load_panel
from e2i_pipelines.analytics.panel.run import METHODS
from e2i_pipelines.analytics.panel.settings import PanelSettings
from tests.panel.conftest import panel_spec


def _one_treated(effect: float, seed: int = 0) -> pd.DataFrame:
    """Unit 0 = 0.6 donor 1 + 0.4 donor 2 (+ effect from period 15); 19 random-walk donors."""
    rng = np.random.default_rng(seed)
    n, T = 20, 20
    Y = 10 + rng.normal(size=(n, T)).cumsum(axis=1)
    Y[0] = 0.6 * Y[1] + 0.4 * Y[2] + rng.normal(scale=0.05, size=T)
    Y[0, 15:] += effect
    unit, t = np.repeat(np.arange(n), T), np.tile(np.arange(T), n)
    return pd.DataFrame({"unit": unit, "time": t, "d": ((unit == 0) & (t >= 15)).astype(int),
                         "y": Y[unit, t]})


def test_placebo_in_space_for_synthetic_control_and_skips_elsewhere():
    panel = load_panel(_one_treated(effect=5.0), panel_spec())
    by_synth = {c.name: c for c in run_checks(panel, "synthetic_control", PanelSettings(),
                                               METHODS)}
    assert set(by_synth) == set(PANEL_CHECKS)
    space = by_synth["placebo_in_space"]
    assert space.skipped is None and space.passed is True
    assert space.metadata["placebo_p_value"] <= 0.05 and space.figure is not None
    for name in ("pre_trends", "placebo_in_time"):
        assert by_synth[name].passed is None and "synthetic_control" in by_synth[name].skipped
    by_cs = {c.name: c for c in run_checks(panel, "callaway_santanna", PanelSettings(),
                                            METHODS, only=("placebo_in_space",))}
    assert by_cs["placebo_in_space"].passed is None
    assert "not callaway_santanna" in by_cs["placebo_in_space"].skipped


def test_no_effect_placebo_in_space_does_not_pass():
    panel = load_panel(_one_treated(effect=0.0), panel_spec())
    (space,) = run_checks(panel, "synthetic_control", PanelSettings(), METHODS,
                          only=("placebo_in_space",))
    assert space.passed is False and space.metadata["placebo_p_value"] > 0.05
