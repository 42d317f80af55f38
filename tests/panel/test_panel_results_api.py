"""/v1/runs/{id}/results of a panel run: the overall estimate, event study, cohort table and
each panel check's outcome, from GraphQL-shaped events (the job test covers the real run)."""

from __future__ import annotations

import json

from e2i_api.results import build_results


def _json(label, value):
    return {"__typename": "JsonMetadataEntry", "label": label, "description": None,
            "jsonString": json.dumps(value)}


def _float(label, value):
    return {"__typename": "FloatMetadataEntry", "label": label, "description": None,
            "floatValue": value, "floatRepr": str(value)}


def _text(label, value):
    return {"__typename": "TextMetadataEntry", "label": label, "description": None,
            "text": value}


def _check(name, passed, p):
    return {"__typename": "AssetCheckEvaluationEvent", "evaluation": {
        "assetKey": {"path": ["causal_estimate"]}, "checkName": name, "success": passed,
        "severity": "WARN", "description": None, "metadataEntries": [_float("p_value", p)]}}


def test_panel_results_carry_event_study_cohorts_and_checks():
    event_study = [{"rel_period": -1, "estimate": 0.01, "ci_low": -0.1, "ci_high": 0.12},
                   {"rel_period": 0, "estimate": 1.4, "ci_low": 1.3, "ci_high": 1.5}]
    cohorts = [{"cohort": 3, "n_units": 120, "estimate": 2.1, "ci_low": 1.9, "ci_high": 2.3}]
    events = [{"__typename": "MaterializationEvent", "stepKey": "causal_estimate",
               "assetKey": {"path": ["causal_estimate"]}, "metadataEntries": [
                   _float("estimate", 2.4), _float("ci_low", 2.3), _float("ci_high", 2.5),
                   _text("method", "callaway_santanna"), _text("design", "panel"),
                   _json("event_study", event_study), _json("cohorts", cohorts),
                   _json("panel_warnings", ["unbalanced panel: ..."]),
                   _json("skipped_checks", {"overlap": "skipped: a cross-section check"})]},
              _check("pre_trends", True, 0.4), _check("placebo_in_time", False, 0.01)]
    run = {"runId": "r1", "jobName": "causal_job", "status": "SUCCESS"}
    [causal] = build_results(run, events).highlights.causal
    assert causal.design == "panel" and causal.estimate == 2.4
    assert causal.event_study == event_study and causal.cohorts == cohorts
    assert causal.panel_warnings == ["unbalanced panel: ..."]
    outcomes = {c.name: c.passed for c in causal.refutations}
    assert outcomes == {"pre_trends": True, "placebo_in_time": False}
    assert causal.skipped_checks == {"overlap": "skipped: a cross-section check"}
