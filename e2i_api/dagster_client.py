"""Async GraphQL client for the Dagster webserver: the API's only way to reach Dagster.

Transport failures become ``DagsterUnavailableError`` (HTTP 503); GraphQL-level errors become
``DagsterQueryError`` (HTTP 502); a missing run is ``RunNotFound`` (HTTP 404).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from e2i_pipelines.launcher.run_coordinator import ROLE_HEADER, USER_HEADER

METADATA_FRAGMENT = """
fragment Meta on MetadataEntry {
  __typename label description
  ... on FloatMetadataEntry { floatValue floatRepr }
  ... on IntMetadataEntry { intValue intRepr }
  ... on TextMetadataEntry { text }
  ... on JsonMetadataEntry { jsonString }
  ... on UrlMetadataEntry { url }
  ... on MarkdownMetadataEntry { mdStr }
  ... on PathMetadataEntry { path }
  ... on NotebookMetadataEntry { path }
  ... on BoolMetadataEntry { boolValue }
  ... on TimestampMetadataEntry { timestamp }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on PoolMetadataEntry { pool }
  ... on TableMetadataEntry { table { records schema { columns { name type } } } }
}
"""

API_ROLE = "api"
"""The role an API key's actions carry in the webserver's audit lines (people: viewer/editor/admin)."""

RUN_FIELDS = "runId jobName status creationTime startTime endTime updateTime canTerminate tags { key value }"

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message reason } }
    ... on PythonError { className }
  }
}
"""

RUN = f"""
query Run($runId: ID!) {{
  runOrError(runId: $runId) {{
    __typename
    ... on Run {{ {RUN_FIELDS} }}
    ... on Error {{ message }}
  }}
}}
"""

RUNS = f"""
query Runs($filter: RunsFilter, $cursor: String, $limit: Int) {{
  runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {{
    __typename
    ... on Runs {{ results {{ {RUN_FIELDS} }} }}
    ... on Error {{ message }}
  }}
}}
"""

TERMINATE = f"""
mutation Terminate($runId: String!) {{
  terminateRun(runId: $runId, terminatePolicy: SAFE_TERMINATE) {{
    __typename
    ... on TerminateRunSuccess {{ run {{ {RUN_FIELDS} }} }}
    ... on TerminateRunFailure {{ message run {{ {RUN_FIELDS} }} }}
    ... on Error {{ message }}
  }}
}}
"""

EVENTS = METADATA_FRAGMENT + """
query Events($runId: ID!, $cursor: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { message timestamp stepKey }
        ... on MaterializationEvent { assetKey { path } metadataEntries { ...Meta } }
        ... on AssetCheckEvaluationEvent {
          evaluation { checkName success severity description assetKey { path } metadataEntries { ...Meta } }
        }
        ... on ErrorEvent { error { message className } }
      }
    }
    ... on Error { message }
  }
}
"""

LOCATION = """
query Location($name: String!) {
  workspaceLocationEntryOrError(name: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      loadStatus
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on Error { message }
  }
}
"""

RESULT_EVENT_TYPES = frozenset({
    "MaterializationEvent", "AssetCheckEvaluationEvent", "RunFailureEvent",
    "ExecutionStepFailureEvent",
})


class DagsterError(Exception):
    """Base of errors talking to Dagster."""


class DagsterUnavailableError(DagsterError):
    """The webserver cannot be reached or does not answer in time."""


class DagsterQueryError(DagsterError):
    """The webserver answered with a GraphQL error or an unexpected result."""


class RunNotFound(DagsterError):
    """No run with this id."""


class LaunchRejected(DagsterError):
    """Dagster refused to create the run (config invalid, job missing...)."""


class DagsterClient:
    """GraphQL calls against one webserver and code location."""

    def __init__(self, base_url: str, location: str, repository: str, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.location = location
        self.repository = repository
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport,
            # Idle connections expire before the webserver's (uvicorn: 5 s) close them, so a request
            # never goes out on a connection the server is closing (ReadError under load).
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=2.0),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise DagsterUnavailableError(
                f"Dagster webserver at {self.base_url} did not answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise DagsterUnavailableError(
                f"Dagster webserver at {self.base_url} is unreachable ({type(exc).__name__}: {exc})") from None
        if response.status_code in (502, 503, 504):
            raise DagsterUnavailableError(
                f"Dagster webserver at {self.base_url} answered HTTP {response.status_code}")
        return response

    async def execute(self, query: str, variables: Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Run one GraphQL operation and return its ``data``."""
        response = await self._request("POST", "/graphql", json={"query": query, "variables": variables or {}},
                                       headers=dict(headers or {}))
        try:
            body = response.json()
        except ValueError:
            if response.status_code >= 500:  # the webserver itself failed (e.g. a stale storage connection)
                raise DagsterUnavailableError(
                    f"Dagster webserver at {self.base_url} answered HTTP {response.status_code}") from None
            raise DagsterQueryError(f"Dagster answered HTTP {response.status_code} without JSON") from None
        if body.get("errors"):
            raise DagsterQueryError("; ".join(e.get("message", str(e)) for e in body["errors"]))
        if not response.is_success or "data" not in body:
            raise DagsterQueryError(f"Dagster answered HTTP {response.status_code}")
        return body["data"]

    async def server_info(self) -> dict[str, Any]:
        """``/server_info`` of the webserver (versions); proves it is up."""
        response = await self._request("GET", "/server_info")
        if not response.is_success:
            raise DagsterQueryError(f"/server_info answered HTTP {response.status_code}")
        return response.json()

    async def location_status(self) -> tuple[str, str | None]:
        """Load status of the code location and its load error message, if any."""
        data = await self.execute(LOCATION, {"name": self.location})
        entry = data["workspaceLocationEntryOrError"]
        if entry is None:
            return "MISSING", f"code location {self.location!r} is not in the workspace"
        if entry["__typename"] != "WorkspaceLocationEntry":
            return "ERROR", entry.get("message")
        error = entry.get("locationOrLoadError") or {}
        return entry["loadStatus"], error.get("message")

    async def launch_run(self, job_name: str, run_config: Mapping[str, Any],
                         tags: Mapping[str, str]) -> dict[str, Any]:
        """Launch ``job_name``; return the new run's ``runId`` and ``status``."""
        params = {
            "selector": {"repositoryLocationName": self.location, "repositoryName": self.repository,
                         "jobName": job_name},
            "runConfigData": dict(run_config),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = (await self.execute(LAUNCH, {"params": params}))["launchRun"]
        kind = result["__typename"]
        if kind == "LaunchRunSuccess":
            return result["run"]
        if kind == "RunConfigValidationInvalid":
            raise LaunchRejected("; ".join(e["message"] for e in result["errors"]))
        if kind == "PythonError":
            raise DagsterQueryError(f"Dagster failed to launch {job_name}: {result.get('message')}")
        raise LaunchRejected(f"{kind}: {result.get('message', '')}".strip())

    async def get_run(self, run_id: str) -> dict[str, Any]:
        """The run's fields (status, times, tags); raise RunNotFound."""
        result = (await self.execute(RUN, {"runId": run_id}))["runOrError"]
        if result["__typename"] == "Run":
            return result
        if result["__typename"] == "RunNotFoundError":
            raise RunNotFound(f"no run {run_id!r}")
        raise DagsterQueryError(result.get("message", result["__typename"]))

    async def list_runs(self, *, job_name: str | None = None, statuses: Sequence[str] = (),
                        tags: Mapping[str, str] | None = None, cursor: str | None = None,
                        limit: int = 20, updated_after: float | None = None) -> list[dict[str, Any]]:
        """Runs newest first, after ``cursor`` (a run id), filtered by job, statuses, tags and
        last update (epoch seconds)."""
        run_filter: dict[str, Any] = {}
        if updated_after is not None:
            run_filter["updatedAfter"] = updated_after
        if job_name:
            run_filter["pipelineName"] = job_name
        if statuses:
            run_filter["statuses"] = list(statuses)
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        result = (await self.execute(RUNS, {"filter": run_filter, "cursor": cursor, "limit": limit}))["runsOrError"]
        if result["__typename"] != "Runs":
            raise DagsterQueryError(result.get("message", result["__typename"]))
        return result["results"]

    async def terminate_run(self, run_id: str, principal: str | None = None,
                            ) -> tuple[bool, str | None, dict[str, Any] | None]:
        """Ask Dagster to cancel the run: (accepted, refusal message, run fields). ``principal``
        goes as the identity headers the audited webserver (e2i_api.ui_audit) records the
        termination under: tag ``e2i/terminated_by`` and an audit line with role ``api``."""
        headers = {USER_HEADER: principal, ROLE_HEADER: API_ROLE} if principal else None
        result = (await self.execute(TERMINATE, {"runId": run_id}, headers))["terminateRun"]
        kind = result["__typename"]
        if kind == "TerminateRunSuccess":
            return True, None, result["run"]
        if kind == "TerminateRunFailure":
            return False, result["message"], result["run"]
        if kind == "RunNotFoundError":
            raise RunNotFound(f"no run {run_id!r}")
        raise DagsterQueryError(result.get("message", kind))

    async def run_events(self, run_id: str, types: frozenset[str] = RESULT_EVENT_TYPES,
                         page_size: int = 1000, max_pages: int = 50) -> list[dict[str, Any]]:
        """The run's events of ``types`` in order (at most ``max_pages`` pages are read)."""
        events: list[dict[str, Any]] = []
        cursor = None
        for _ in range(max_pages):
            data = await self.execute(EVENTS, {"runId": run_id, "cursor": cursor, "limit": page_size})
            conn = data["logsForRun"]
            if conn["__typename"] == "RunNotFoundError":
                raise RunNotFound(f"no run {run_id!r}")
            if conn["__typename"] != "EventConnection":
                raise DagsterQueryError(conn.get("message", conn["__typename"]))
            events += [e for e in conn["events"] if e["__typename"] in types]
            cursor = conn["cursor"]
            if not conn["hasMore"]:
                break
        return events
