"""The twin fidelity checks appear in the API results highlights with their numbers."""

from e2i_api.results import build_results


def _entry(kind: str, label: str, **fields) -> dict:
    return {"__typename": f"{kind}MetadataEntry", "label": label, "description": None, **fields}


def _check(name: str, passed: bool, entries: list[dict], asset: str = "digital_twins") -> dict:
    return {"__typename": "AssetCheckEvaluationEvent", "evaluation": {
        "assetKey": {"path": [asset]}, "checkName": name, "success": passed,
        "severity": "WARN", "description": None, "metadataEntries": entries}}


def test_fidelity_checks_are_twin_highlights():
    run = {"runId": "r1", "jobName": "twins_job", "status": "SUCCESS"}
    plot = _entry("Markdown", "plot", mdStr="![x](data:image/png;base64,iVBORw0KGgo=)")
    events = [
        {"__typename": "MaterializationEvent", "stepKey": "digital_twins",
         "assetKey": {"path": ["digital_twins"]},
         "metadataEntries": [_entry("Int", "n_twins", intValue=1000, intRepr="1000")]},
        _check("detection", False, [_entry("Float", "auc", floatValue=0.66, floatRepr="0.66"),
                                    _entry("Text", "rule", text="AUC <= 0.6"), plot]),
        _check("privacy", True, [_entry("Float", "exact_copy_share", floatValue=0.0,
                                        floatRepr="0.0")]),
        _check("privacy", True, [], asset="causal_estimate"),  # another asset's check
    ]
    [twins] = build_results(run, events).highlights.twins
    assert twins.asset == "digital_twins"
    assert twins.values["fidelity_passed"] is False
    fid = twins.values["fidelity"]
    assert set(fid) == {"detection", "privacy"}
    assert fid["detection"] == {"passed": False, "severity": "WARN", "auc": 0.66,
                                "rule": "AUC <= 0.6"}
    assert fid["privacy"]["exact_copy_share"] == 0.0


def test_no_checks_no_fidelity_highlight():
    run = {"runId": "r1", "jobName": "twins_job", "status": "SUCCESS"}
    events = [{"__typename": "MaterializationEvent", "stepKey": "digital_twins",
               "assetKey": {"path": ["digital_twins"]}, "metadataEntries": []}]
    assert build_results(run, events).highlights.twins == []
