"""Request and response schemas of the API (with OpenAPI examples)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from e2i_pipelines.launcher.sizing import SizingInputError, parse_input_size
from e2i_pipelines.tiers import Tier

RUN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
TAG_KEY_PATTERN = re.compile(r"^client/[A-Za-z0-9_.\-/]{1,93}$")
CLIENT_TAG_PREFIX = "client/"
"""The only prefix a request's run tags may use: every other key could steer Dagster or a
launcher (dagster/, dagster-k8s/config, dagster-ray/config, docker/container_id, e2i/...)."""
EXAMPLE_RUN_ID = "5f1c2a9e-7d3b-4c1a-9e2f-0b6d8a4c3e21"


class RunStatus(StrEnum):
    """Dagster run statuses."""

    QUEUED = "QUEUED"
    NOT_STARTED = "NOT_STARTED"
    MANAGED = "MANAGED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"


FINISHED_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED})


class ErrorResponse(BaseModel):
    """Any non-422 error."""

    detail: str = Field(examples=["Dagster is unavailable"])
    request_id: str | None = None


class AssetInfo(BaseModel):
    name: str
    tier: Tier
    configurable: bool


class JobSummary(BaseModel):
    """A launchable job: its tier (the largest of its steps), assets and parameter schema."""

    name: str
    description: str
    tier: Tier
    assets: list[AssetInfo]
    checks: list[str]
    params_schema: dict[str, Any] = Field(description="JSON schema of `params` in POST /v1/runs")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "probe_light_job", "description": "Allocate and hold memory at the light tier.",
        "tier": "light", "assets": [{"name": "probe_light", "tier": "light", "configurable": True}],
        "checks": [], "params_schema": {"type": "object", "properties": {"probe_light": {
            "type": "object", "properties": {"allocate_mb": {"type": "integer", "default": 0}}}}},
    }]})


class JobList(BaseModel):
    jobs: list[JobSummary]


class RunCreate(BaseModel):
    """Start ``job`` with ``params`` (asset name -> config) and optional run tags."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "job": "probe_light_job",
        "params": {"probe_light": {"allocate_mb": 64, "hold_seconds": 5}},
        "tags": {"client/team": "analytics"},
    }]})

    job: str = Field(min_length=1, max_length=200)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                              description="config per asset name; see GET /v1/jobs")
    tags: dict[str, str] = Field(default_factory=dict, max_length=20,
                                 description="run tags; only keys under the `client/` prefix are accepted "
                                             "(e.g. `client/team`); any other key is refused with 422")

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not TAG_KEY_PATTERN.match(key):
                raise ValueError(f"tag key {key!r} is not accepted: only {CLIENT_TAG_PREFIX}... tags are "
                                 f"(letters, digits, _ . - / after the prefix, at most 100 characters)")
            if len(value) > 1000 or "\x00" in value:
                raise ValueError(f"tag {key!r}: value longer than 1000 characters or contains NUL")
        return tags

    tier: Literal["auto"] | None = Field(
        default=None, description="`auto`: the launcher picks the smallest tier that holds the peak "
        "memory predicted from past runs of the job (between `tier_floor` and `tier_ceiling`) and "
        "records why on the run (GET /v1/runs/{id}); omitted: the job's declared tier")
    tier_floor: Tier | None = Field(default=None, description="with `tier: auto`: smallest tier (default light)")
    tier_ceiling: Tier | None = Field(
        default=None, description="with `tier: auto`: largest tier (default: the API key's max tier; "
        "above it is 403)")
    input_size: str | None = Field(
        default=None, max_length=31, examples=["100000x20"],
        description="with `tier: auto`: the input's `rows` or `rowsxcolumns`, which the prediction scales with")

    @field_validator("input_size")
    @classmethod
    def _check_input_size(cls, raw: str | None) -> str | None:
        if raw is not None:
            try:
                parse_input_size(raw, "input_size")
            except SizingInputError as exc:
                raise ValueError(str(exc).removeprefix("tag ")) from None
        return raw

    @model_validator(mode="after")
    def _check_auto(self) -> RunCreate:
        given = [name for name in ("tier_floor", "tier_ceiling", "input_size") if getattr(self, name) is not None]
        if self.tier is None and given:
            raise ValueError(f"{', '.join(given)} only apply with tier: auto")
        if self.tier_floor and self.tier_ceiling and self.tier_floor.rank > self.tier_ceiling.rank:
            raise ValueError(f"tier_floor {self.tier_floor.value} is above tier_ceiling {self.tier_ceiling.value}")
        return self


class RunAccepted(BaseModel):
    """A run was created (or, for a repeated Idempotency-Key, found)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "run_id": EXAMPLE_RUN_ID, "job": "probe_light_job", "status": "QUEUED", "tier": "light",
        "location": f"/v1/runs/{EXAMPLE_RUN_ID}", "replayed": False,
    }]})

    run_id: str
    job: str
    status: RunStatus
    tier: Tier = Field(description="the job's tier; with `tier: auto` the ceiling (the launcher picks "
                                   "the run's tier at launch: GET /v1/runs/{id})")
    tier_mode: Literal["declared", "auto"] = "declared"
    location: str
    replayed: bool = Field(description="true when an earlier request with the same Idempotency-Key made this run")


class RunFailure(BaseModel):
    """Why a run failed: ``kind`` is ``oom`` when the launcher recorded an out-of-memory kill."""

    kind: Literal["oom", "error"]
    message: str
    failure_tag: str | None = Field(default=None, description="value of the run's e2i/failure tag")
    step_failures: list[str] = Field(default_factory=list)


class StepUsage(BaseModel):
    """What one step used, as its own process measured it (once the run ended)."""

    step: str
    peak_memory: int | None = Field(default=None, description="peak resident memory in bytes")
    cpu_seconds: float | None = Field(default=None, description="CPU time of the step's process")
    wall_seconds: float | None = Field(default=None, description="step start to end")


class RunDetail(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "run_id": EXAMPLE_RUN_ID, "job": "probe_light_job", "status": "FAILURE", "tier": "light",
        "created_at": "2026-01-01T10:00:00Z", "started_at": "2026-01-01T10:00:02Z",
        "ended_at": "2026-01-01T10:00:09Z", "tags": {"e2i/tier": "light", "e2i/failure": "oom"},
        "can_cancel": False, "promoted_from": None, "promoted_to": "9a8b7c6d-1e2f-4a3b-8c7d-6e5f4a3b2c1d",
        "failure": {"kind": "oom", "message": "run container was OOM-killed (limit 2g)",
                    "failure_tag": "oom", "step_failures": []},
    }]})

    run_id: str
    job: str
    status: RunStatus
    tier: Tier | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    tags: dict[str, str]
    can_cancel: bool
    failure: RunFailure | None = None
    promoted_from: str | None = Field(default=None, description="run this one re-launches one tier up after an OOM")
    promoted_to: str | None = Field(default=None, description="run that re-launched this OOM-killed run one tier up")
    peak_memory: int | None = Field(default=None, description="measured peak memory in bytes, once the run ended")
    cpu_seconds: float | None = Field(default=None, description="measured CPU time, once the run ended")
    memory_utilisation: float | None = Field(default=None, description="peak memory / the tier's memory")
    cpu_utilisation: float | None = Field(default=None, description="CPU time / (the tier's CPUs x wall time)")
    tier_source: str | None = Field(
        default=None, description="why the run has its tier: `auto` (sized from history), `promotion` "
        "(one tier above its OOM-killed parent), `run tag`, `execution plan`; null before launch")
    predicted_peak: int | None = Field(default=None, description="tier auto: the predicted peak memory in bytes")
    tier_basis: str | None = Field(default=None, description="tier auto: history, fit and headroom behind the tier")
    parent_predicted_peak: int | None = Field(
        default=None, description="promoted run: the predicted peak of the OOM-killed run it re-launches")
    steps: list[StepUsage] = Field(
        default_factory=list, description="per step: measured peak memory, CPU and wall time, once the run ended")
    peak_step: str | None = Field(default=None, description="the step with the largest measured peak memory")


class RunPage(BaseModel):
    """Runs newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    runs: list[RunDetail]
    next_cursor: str | None = Field(examples=[EXAMPLE_RUN_ID])


class CancelResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "run_id": EXAMPLE_RUN_ID, "status": "CANCELING", "detail": "cancellation requested"}]})

    run_id: str
    status: RunStatus
    detail: str


class MetadataValue(BaseModel):
    """One metadata entry: ``value`` for data, ``url`` for links (plots, markdown, URLs)."""

    type: str = Field(examples=["float", "int", "text", "json", "url", "markdown", "plot", "path"])
    value: Any = None
    url: str | None = None
    description: str | None = None


class AssetResult(BaseModel):
    asset: str
    step_key: str | None
    metadata: dict[str, MetadataValue]


class CheckResult(BaseModel):
    name: str
    asset: str
    passed: bool
    severity: str
    description: str | None = None
    metadata: dict[str, MetadataValue]


class ShapSummary(BaseModel):
    asset: str
    top_features: Any
    feature_perturbation: Any = Field(default=None, examples=["interventional"],
                                      description="tree_path_dependent or interventional")
    background_rows: Any = Field(default=None, examples=[1000],
                                 description="background rows of interventional SHAP (0 otherwise)")
    base_value: Any = None


class CausalSummary(BaseModel):
    asset: str
    estimate: Any
    ci_low: Any = None
    ci_high: Any = None
    std_error: Any = None
    method: Any = None
    target: Any = Field(default=None, examples=["ate"], description="ate, att or atc")
    design: Any = Field(default=None, examples=["observational"],
                        description="observational, or randomised (no confounders)")
    adjustment_set: Any = Field(default=None, examples=[["tenure", "region"]],
                                description="confounders adjusted for (from the spec or its graph)")
    cate: Any = Field(default=None, description="effect per effect-modifier segment, with CIs")
    refutations: list[CheckResult]
    refutations_passed: bool | None = Field(description="all refutation checks passed (null when none ran)")
    diagnostics: list[CheckResult] = Field(
        default_factory=list, description="covariate_balance, overlap, sensitivity checks")
    diagnostics_passed: bool | None = Field(
        default=None, description="all diagnostic checks passed (null when none ran)")
    skipped_checks: dict[str, str] = Field(
        default_factory=dict, description="checks not evaluated, with the reason")
    event_study: Any = Field(
        default=None, description="design: panel: per relative period (rel_period < 0 are "
        "leads) the estimate, its CI and uniform band")
    cohorts: Any = Field(default=None, description="design: panel: one row per treatment "
                         "cohort (first treated period): units, estimate, CI")
    panel_warnings: Any = Field(default=None, description="design: panel: recorded warnings "
                                "(unbalanced panel, staggered TWFE's negative weights, ...)")


class TwinsSummary(BaseModel):
    asset: str
    values: dict[str, Any] = Field(examples=[{"ate": 0.041, "uplift": 0.038}])


class MlflowLink(BaseModel):
    asset: str
    run_id: str | None = None
    artifact_uri: str | None = None
    run_url: str | None = Field(default=None, description="MLflow REST URL of the run (http(s) tracking only)")


class Highlights(BaseModel):
    """The analytics outputs a frontend shows first, found by their metadata keys."""

    shap: list[ShapSummary] = Field(default_factory=list)
    causal: list[CausalSummary] = Field(default_factory=list)
    twins: list[TwinsSummary] = Field(default_factory=list)
    mlflow: list[MlflowLink] = Field(default_factory=list)


class RunResults(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "run_id": EXAMPLE_RUN_ID, "job": "causal_job", "status": "SUCCESS",
        "assets": [{"asset": "causal_estimate", "step_key": "causal_estimate", "metadata": {
            "estimate": {"type": "float", "value": 0.12}, "ci_low": {"type": "float", "value": 0.1},
            "ci_high": {"type": "float", "value": 0.14}, "method": {"type": "text", "value": "linear_regression"},
            "forest_plot": {"type": "plot", "url": f"/v1/runs/{EXAMPLE_RUN_ID}/artifacts?asset=causal_estimate&label=forest_plot"}}}],
        "checks": [{"name": "placebo_refuter", "asset": "causal_estimate", "passed": True, "severity": "ERROR",
                    "metadata": {"p_value": {"type": "float", "value": 0.71}}}],
        "highlights": {"shap": [], "twins": [], "mlflow": [], "causal": [{
            "asset": "causal_estimate", "estimate": 0.12, "ci_low": 0.1, "ci_high": 0.14,
            "method": "linear_regression", "refutations_passed": True, "refutations": []}]},
    }]})

    run_id: str
    job: str
    status: RunStatus
    assets: list[AssetResult]
    checks: list[CheckResult]
    highlights: Highlights


class DependencyCheck(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "unavailable", "failed": ["dagster_webserver"],
        "checks": {"dagster_webserver": {"ok": False, "detail": "unreachable"}},
    }]})

    status: Literal["ready", "unavailable"]
    failed: list[str]
    checks: dict[str, DependencyCheck]
