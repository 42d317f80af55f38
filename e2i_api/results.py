"""Turn a run's Dagster events into the JSON a frontend reads: asset metadata, checks, highlights.

Plain functions over GraphQL event dicts (see ``dagster_client.EVENTS``), so they unit-test
without a webserver. Markdown metadata and embedded PNG plots become links to the artifacts
endpoint instead of being inlined.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from e2i_api.models import (
    AssetResult,
    CausalSummary,
    CheckResult,
    Highlights,
    MetadataValue,
    MlflowLink,
    RunResults,
    RunStatus,
    ShapSummary,
    TwinsSummary,
)

_DATA_IMAGE = re.compile(r"data:(image/(?:png|jpeg|svg\+xml));base64,([A-Za-z0-9+/=\s]+)")
TWIN_KEYS = ("ate", "uplift")
"""Metadata keys (and key prefixes) that mark a digital-twin intervention result."""
CAUSAL_KEYS = ("estimate", "ci_low", "ci_high", "std_error", "method", "target", "design",
               "adjustment_set", "event_study", "cohorts", "panel_warnings")


def artifact_url(run_id: str, asset: str, label: str) -> str:
    """Link to one markdown/plot metadata entry, served by GET /v1/runs/{id}/artifacts."""
    return f"/v1/runs/{run_id}/artifacts?{urlencode({'asset': asset, 'label': label})}"


def asset_name(key: Mapping[str, Any] | None) -> str:
    return "/".join(key["path"]) if key else ""


def convert_entry(entry: Mapping[str, Any], run_id: str, asset: str) -> MetadataValue:
    """One GraphQL MetadataEntry as a MetadataValue."""
    kind = entry["__typename"].removesuffix("MetadataEntry").lower()
    desc = entry.get("description")
    label = entry["label"]
    match entry["__typename"]:
        case "FloatMetadataEntry":
            value = entry["floatValue"] if entry["floatValue"] is not None else entry["floatRepr"]
        case "IntMetadataEntry":
            value = entry["intValue"] if entry["intValue"] is not None else int(entry["intRepr"])
        case "TextMetadataEntry":
            value = entry["text"]
        case "JsonMetadataEntry":
            value = json.loads(entry["jsonString"])
        case "UrlMetadataEntry":
            return MetadataValue(type="url", url=entry["url"], description=desc)
        case "MarkdownMetadataEntry":
            kind = "plot" if _DATA_IMAGE.search(entry["mdStr"]) else "markdown"
            return MetadataValue(type=kind, url=artifact_url(run_id, asset, label), description=desc)
        case "PathMetadataEntry" | "NotebookMetadataEntry":
            value = entry["path"]
        case "BoolMetadataEntry":
            value = entry["boolValue"]
        case "TimestampMetadataEntry":
            value = entry["timestamp"]
        case "PipelineRunMetadataEntry":
            return MetadataValue(type="run", value=entry["runId"], url=f"/v1/runs/{entry['runId']}",
                                 description=desc)
        case "AssetMetadataEntry":
            value = asset_name(entry["assetKey"])
        case "PoolMetadataEntry":
            value = entry["pool"]
        case "TableMetadataEntry":
            table = entry["table"]
            value = {"columns": [c["name"] for c in table["schema"]["columns"]],
                     "records": [json.loads(r) for r in table["records"]]}
        case _:
            value = None
    return MetadataValue(type=kind, value=value, description=desc)


def _metadata(entries: Iterable[Mapping[str, Any]], run_id: str, asset: str) -> dict[str, MetadataValue]:
    return {e["label"]: convert_entry(e, run_id, asset) for e in entries}


def _plain(value: MetadataValue) -> Any:
    return value.value if value.url is None or value.value is not None else value.url


def twin_fidelity(asset: str, checks: list[CheckResult]) -> dict[str, Any]:
    """Pass/fail and the scalar numbers of the twin fidelity checks on ``asset``."""
    # imported here: the module pulls SciPy and matplotlib (~80 MiB) into the API process
    from e2i_pipelines.analytics.twins.fidelity_checks import CHECKS as TWIN_FIDELITY_CHECKS

    own = {c.name: c for c in checks if c.asset == asset and c.name in TWIN_FIDELITY_CHECKS}
    if not own:
        return {}
    fidelity = {name: {"passed": c.passed, "severity": c.severity,
                       **{k: v.value for k, v in c.metadata.items()
                          if isinstance(v.value, int | float | str) and v.url is None}}
                for name, c in own.items()}
    return {"fidelity": fidelity, "fidelity_passed": all(c.passed for c in own.values())}


def highlights(assets: list[AssetResult], checks: list[CheckResult], mlflow_uri: str) -> Highlights:
    """Recognise SHAP, causal, twin and MLflow outputs by their metadata keys."""
    found = Highlights()
    for result in assets:
        meta = result.metadata
        if "top_features" in meta:
            found.shap.append(ShapSummary(
                asset=result.asset, top_features=_plain(meta["top_features"]),
                feature_perturbation=_plain(meta["feature_perturbation"]) if "feature_perturbation" in meta else None,
                background_rows=_plain(meta["background_rows"]) if "background_rows" in meta else None,
                base_value=_plain(meta["base_value"]) if "base_value" in meta else None))
        if "estimate" in meta:
            # imported here: the causal config pulls the analytics (SciPy, numba) into the API
            from e2i_pipelines.defs.causal.config import DIAGNOSTIC_CHECKS

            own = [c for c in checks if c.asset == result.asset]
            refutations = [c for c in own if c.name not in DIAGNOSTIC_CHECKS]
            diagnostics = [c for c in own if c.name in DIAGNOSTIC_CHECKS]
            skipped = _plain(meta["skipped_checks"]) if "skipped_checks" in meta else {}
            found.causal.append(CausalSummary(
                asset=result.asset, refutations=refutations,
                refutations_passed=all(c.passed for c in refutations) if refutations else None,
                diagnostics=diagnostics,
                diagnostics_passed=all(c.passed for c in diagnostics) if diagnostics else None,
                skipped_checks=skipped or {},
                cate=_plain(meta["cate_records"]) if "cate_records" in meta else None,
                **{k: _plain(meta[k]) for k in CAUSAL_KEYS if k in meta},
            ))
        twin = {k: _plain(v) for k, v in meta.items() if k.startswith(TWIN_KEYS)}
        twin.update(twin_fidelity(result.asset, checks))
        if twin:
            found.twins.append(TwinsSummary(asset=result.asset, values=twin))
        if "mlflow_run_id" in meta or "mlflow_artifact_uri" in meta:
            run = _plain(meta["mlflow_run_id"]) if "mlflow_run_id" in meta else None
            url = None
            if run and mlflow_uri.startswith(("http://", "https://")):
                url = f"{mlflow_uri.rstrip('/')}/api/2.0/mlflow/runs/get?{urlencode({'run_id': run})}"
            found.mlflow.append(MlflowLink(
                asset=result.asset, run_id=run, run_url=url,
                artifact_uri=_plain(meta["mlflow_artifact_uri"]) if "mlflow_artifact_uri" in meta else None,
            ))
    return found


def build_results(run: Mapping[str, Any], events: list[Mapping[str, Any]], mlflow_uri: str = "") -> RunResults:
    """RunResults of ``run`` from its materialization and asset-check events."""
    run_id = run["runId"]
    assets: dict[str, AssetResult] = {}
    checks: list[CheckResult] = []
    for event in events:
        if event["__typename"] == "MaterializationEvent":
            name = asset_name(event["assetKey"])
            assets[name] = AssetResult(asset=name, step_key=event.get("stepKey"),
                                       metadata=_metadata(event["metadataEntries"], run_id, name))
        elif event["__typename"] == "AssetCheckEvaluationEvent":
            ev = event["evaluation"]
            name = asset_name(ev["assetKey"])
            checks.append(CheckResult(
                name=ev["checkName"], asset=name, passed=ev["success"], severity=ev["severity"],
                description=ev.get("description"), metadata=_metadata(ev["metadataEntries"], run_id, name)))
    asset_list = list(assets.values())
    return RunResults(run_id=run_id, job=run["jobName"], status=RunStatus(run["status"]),
                      assets=asset_list, checks=checks, highlights=highlights(asset_list, checks, mlflow_uri))


def find_markdown(events: list[Mapping[str, Any]], asset: str, label: str) -> str | None:
    """The markdown text of metadata ``label`` on ``asset`` (last materialization), if any."""
    found = None
    for event in events:
        if event["__typename"] == "MaterializationEvent" and asset_name(event["assetKey"]) == asset:
            entries = event["metadataEntries"]
        elif event["__typename"] == "AssetCheckEvaluationEvent" and asset_name(event["evaluation"]["assetKey"]) == asset:
            entries = event["evaluation"]["metadataEntries"]
        else:
            continue
        for entry in entries:
            if entry["label"] == label and entry["__typename"] == "MarkdownMetadataEntry":
                found = entry["mdStr"]
    return found


def embedded_image(markdown: str) -> tuple[str, bytes] | None:
    """(media type, bytes) of the first base64 image embedded in ``markdown``, if any."""
    match = _DATA_IMAGE.search(markdown)
    if not match:
        return None
    try:
        return match.group(1), base64.b64decode(re.sub(r"\s", "", match.group(2)), validate=True)
    except (binascii.Error, ValueError):
        return None
