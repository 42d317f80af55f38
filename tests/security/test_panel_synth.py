"""Attacks on synthetic_control / synthetic_did / dose_response (issue 28 B): unit and period
labels that look like code stay data (verbatim JSON keys, nothing run), errors never echo
cell values, and an oversized synthetic-control run is refused before any fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from e2i_pipelines.analytics.panel.run import run_panel
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.core.errors import DataValidationError
from tests.panel.test_synth_panel import _frame, _spec

SECRET = "AKIA-SECRET-TOKEN-12345"


@pytest.mark.parametrize("method", ["synthetic_control", "synthetic_did"])
def test_code_in_unit_labels_is_data(tmp_path, method: str) -> None:
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    evil = {"donor-0": code, "donor-1": "../../etc/passwd", "treated-0": "{{7*7}}",
            "donor-2": "'; DROP TABLE runs; --"}
    df = _frame(n_donors=15)
    df["territory"] = df["territory"].replace(evil)
    _, r = run_panel(df, _spec(), method, PanelSettings(n_bootstrap=99))
    extra = json.loads(json.dumps(r.summary(), default=str))["extra"]
    assert not marker.exists() and np.isfinite(r.estimate)
    if method == "synthetic_control":
        assert list(extra["donor_weights"]) == ["{{7*7}}"]  # verbatim, not rendered
        donors = set(extra["donor_weights"]["{{7*7}}"])
    else:
        donors = set(extra["unit_weights"])
    assert donors <= {f"donor-{j}" for j in range(15)} | set(evil.values())


@pytest.mark.parametrize(("frame_kwargs", "settings", "needle"), [
    ({"n_treated": 5}, PanelSettings(max_treated_units=2), "at most 2 treated units"),
    ({"n_treated": 2, "staggered": True}, PanelSettings(), "2 cohorts"),
])
def test_refusals_do_not_echo_labels(frame_kwargs: dict, settings: PanelSettings,
                                     needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import e2i_pipelines.analytics.panel.synth as synth

    def _boom(*_a, **_k):
        raise AssertionError("fitted before validating")

    monkeypatch.setattr(synth, "simplex_least_squares", _boom)
    df = _frame(**frame_kwargs)
    df["territory"] = df["territory"].str.replace("treated", SECRET)
    with pytest.raises(DataValidationError) as info:
        run_panel(df, _spec(), "synthetic_control", settings)
    assert needle in str(info.value) and SECRET not in str(info.value)


def test_dose_method_on_binary_treatment_refused() -> None:
    with pytest.raises(DataValidationError, match="does not fit treatment_type"):
        run_panel(_frame(), _spec(), "dose_response", PanelSettings())
