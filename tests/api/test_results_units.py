"""Results and failure extraction from GraphQL event shapes (the live tests cover real events)."""

from __future__ import annotations

import base64

from e2i_api.results import build_results, convert_entry, embedded_image
from e2i_api.run_views import failure_of


def test_oom_is_recognised_from_the_tag_or_the_message() -> None:
    by_tag = failure_of({"e2i/failure": "oom"}, [])
    assert by_tag.kind == "oom" and by_tag.failure_tag == "oom"
    by_message = failure_of({}, [{"__typename": "RunFailureEvent", "message": "container OOMKilled (exit 137)",
                                  "error": None}])
    assert by_message.kind == "oom" and "OOMKilled" in by_message.message
    plain = failure_of({}, [{"__typename": "ExecutionStepFailureEvent", "stepKey": "probe_light",
                             "message": "step failed", "error": {"message": "ValueError: boom"}}])
    assert plain.kind == "error" and plain.step_failures == ["probe_light: ValueError: boom"]
    assert failure_of({}, []).message == "run failed"
    assert failure_of({}, [{"__typename": "RunFailureEvent", "message": "zoom lens broke",
                            "error": None}]).kind == "error"


def test_metadata_entries_convert_by_type() -> None:
    def entry(kind: str, **fields) -> dict:
        return {"__typename": f"{kind}MetadataEntry", "label": "x", "description": None, **fields}

    assert convert_entry(entry("Float", floatValue=None, floatRepr="nan"), "r", "a").value == "nan"
    assert convert_entry(entry("Int", intValue=None, intRepr="12345678901"), "r", "a").value == 12345678901
    assert convert_entry(entry("Json", jsonString='{"a": [1]}'), "r", "a").value == {"a": [1]}
    table = convert_entry(entry("Table", table={"records": ['{"f": 1}'], "schema": {"columns": [{"name": "f", "type": "int"}]}}), "r", "a")
    assert table.value == {"columns": ["f"], "records": [{"f": 1}]}
    md = convert_entry(entry("Markdown", mdStr="# t"), "run-1", "grp/asset")
    assert md.type == "markdown" and md.url == "/v1/runs/run-1/artifacts?asset=grp%2Fasset&label=x"
    assert convert_entry(entry("Null"), "r", "a").type == "null"


def test_mlflow_links_use_the_tracking_server() -> None:
    run = {"runId": "r1", "jobName": "shap_job", "status": "SUCCESS"}
    events = [{"__typename": "MaterializationEvent", "stepKey": "shap", "assetKey": {"path": ["shap"]},
               "metadataEntries": [{"__typename": "TextMetadataEntry", "label": "mlflow_run_id",
                                    "description": None, "text": "abc"}]}]
    [link] = build_results(run, events, "http://127.0.0.1:5000/").highlights.mlflow
    assert link.run_url == "http://127.0.0.1:5000/api/2.0/mlflow/runs/get?run_id=abc"
    assert build_results(run, events, "file:///tmp/mlruns").highlights.mlflow[0].run_url is None


def test_embedded_png_is_decoded() -> None:
    png = b"\x89PNG\r\n\x1a\nrest"
    assert embedded_image(f"![p](data:image/png;base64,{base64.b64encode(png).decode()})") == ("image/png", png)
    assert embedded_image("no image") is None


def test_launcher_failure_reason_tag_is_the_message() -> None:
    failure = failure_of({"e2i/failure": "oom", "e2i/failure_reason": "OOM-killed at light (limit 2g) in probe_light"},
                         [{"__typename": "RunFailureEvent", "message": "Run failed", "error": None}])
    assert failure.kind == "oom" and failure.message.startswith("OOM-killed at light")


def test_finished_results_drop_the_least_recently_used() -> None:
    from e2i_api.run_store import FinishedResults

    kept = FinishedResults(size=2)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.get("a") == 1  # "a" is now the most recent
    kept.put("c", 3)
    assert (kept.get("a"), kept.get("b"), kept.get("c")) == (1, None, 3)


def test_sqlalchemy_url_selects_psycopg2() -> None:
    from e2i_api.run_store import sqlalchemy_url

    assert sqlalchemy_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg2://u:p@h:5432/d"
    assert sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert sqlalchemy_url("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"
