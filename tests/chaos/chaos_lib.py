"""Fault injection on a running compose stack: runs, API watching, output checks, the fault table.

``inject_fault`` runs one fault against one probe run that is writing its output, then checks the
four things every chaos test asserts (readable end in time and nothing left STARTED, no partial
output, 503 never 500 from the API, the next run succeeds) and adds a row to the fault table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.stack.compose_stack import DATA_DIR, ComposeStack

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
MARGIN_SECONDS = 60.0
"""Beyond the run-monitoring interval: a daemon iteration, container inspection, a slow CPU."""
RUN_TIMEOUT = 300.0


@dataclass
class FaultRow:
    """One line of the fault table."""

    fault: str
    outcome: str
    recovery_seconds: float
    next_run_seconds: float


FAULT_TABLE: list[FaultRow] = []


def format_table(rows: list[FaultRow]) -> str:
    """The fault table as markdown (its last run: tests/README.md)."""
    lines = ["| fault | outcome | s to recovery | next run (s) |", "|---|---|---|---|"]
    lines += [f"| {r.fault} | {r.outcome} | {r.recovery_seconds:.0f} | {r.next_run_seconds:.0f} |"
              for r in rows]
    return "\n".join(lines)


# -- Dagster (GraphQL on the published webserver port) and the e2i API ---------------------------
SERVER_ERRORS: list[str] = []
"""5xx answers of the webserver to the suite's own GraphQL calls (retried; reported)."""


def graphql(stack: ComposeStack, query: str, variables: dict[str, Any] | None = None,
            retry_seconds: float = 30) -> dict[str, Any]:
    """One GraphQL call; a 5xx answer is retried for ``retry_seconds`` and kept in SERVER_ERRORS."""
    deadline = time.monotonic() + retry_seconds
    while True:
        response = httpx.post(f"http://127.0.0.1:{stack.webserver_port}/graphql", timeout=60,
                              json={"query": query, "variables": variables or {}})
        if response.status_code < 500 or time.monotonic() > deadline:
            break
        SERVER_ERRORS.append(f"HTTP {response.status_code}: {response.text[:400]}")
        time.sleep(2)
    response.raise_for_status()
    body = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""

FAILURES = """
query($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    ... on EventConnection {
      events {
        __typename
        ... on RunFailureEvent { message }
        ... on ExecutionStepFailureEvent { error { message cause { message cause { message } } } }
      }
    }
  }
}
"""

STEP_STARTS = """
query($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    ... on EventConnection { events { __typename } }
  }
}
"""


def submit(stack: ComposeStack, tier: str, in_process: bool = True, tags: dict[str, str] | None = None,
           **probe: Any) -> str:
    """Launch ``probe_<tier>_job`` with ``probe`` config; the in-process executor (one import of
    the code location per run container) unless ``in_process`` is False."""
    run_config: dict[str, Any] = {"ops": {f"probe_{tier}": {"config": probe}}}
    if in_process:
        run_config["execution"] = {"config": {"in_process": {}}}
    params = {
        "selector": {"repositoryLocationName": "e2i", "repositoryName": "__repository__",
                     "jobName": f"probe_{tier}_job"},
        "runConfigData": run_config,
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = graphql(stack, LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def api(stack: ComposeStack, timeout: float = 30) -> httpx.Client:
    """The API through Caddy, as deployed."""
    return stack.api_client(timeout)


def run_detail(stack: ComposeStack, run_id: str) -> dict[str, Any] | None:
    """GET /v1/runs/{id}; None while the API answers 503 (a dependency is down)."""
    with api(stack) as client:
        response = client.get(f"/v1/runs/{run_id}")
    if response.status_code in (502, 503):  # a dependency down (503), or the API itself (Caddy: 502)
        return None
    assert response.status_code == 200, response.text
    return response.json()


def wait_run(stack: ComposeStack, run_id: str, statuses: set[str] = FINISHED,
             timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        try:
            run = run_detail(stack, run_id)
        except httpx.HTTPError:
            run = None
        if run is not None and run["status"] in statuses:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} not in {statuses} after {timeout:.0f}s: {run}")


def wait_step_started(stack: ComposeStack, run_id: str, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = graphql(stack, STEP_STARTS, {"runId": run_id})["logsForRun"].get("events", [])
        if any(e["__typename"] == "ExecutionStepStartEvent" for e in events):
            return
        time.sleep(1)
    raise AssertionError(f"run {run_id}: no step started in {timeout:.0f}s")


def failure_text(stack: ComposeStack, run: dict[str, Any]) -> str:
    """Everything a reader sees of why ``run`` failed: the API's failure and the run's failure
    events with their error causes (as in the Dagster UI)."""
    texts = [run["failure"]["message"], *run["failure"]["step_failures"]] if run.get("failure") else []
    events = graphql(stack, FAILURES, {"runId": run["run_id"]})["logsForRun"].get("events", [])
    for event in events:
        error = event.get("error")
        texts.append(event.get("message") or "")
        while error:
            texts.append(error.get("message") or "")
            error = error.get("cause")
    return "\n".join(t for t in texts if t)


def started_runs(stack: ComposeStack) -> list[str]:
    with api(stack) as client:
        response = client.get("/v1/runs", params={"status": "STARTED", "limit": 100})
    assert response.status_code == 200, response.text
    return [r["run_id"] for r in response.json()["runs"]]


@dataclass
class ApiWatch:
    """Polls GET /ready and GET /v1/runs/{id} in a thread; keeps every status code seen."""

    stack: ComposeStack
    run_id: str
    codes: list[int] = field(default_factory=list)
    bodies_500: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ApiWatch:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll(self) -> None:
        with api(self.stack, timeout=10) as client:
            while not self._stop.is_set():
                for path in ("/ready", f"/v1/runs/{self.run_id}"):
                    try:
                        response = client.get(path)
                    except httpx.HTTPError:
                        continue  # the API itself is not the faulted service
                    self.codes.append(response.status_code)
                    if response.status_code >= 500 and response.status_code != 503:
                        self.bodies_500.append(f"{path}: {response.status_code} {response.text[:300]}")
                self._stop.wait(0.5)


# -- the shared data volume ----------------------------------------------------------------------
def in_data_volume(stack: ComposeStack, docker_client: Any, script: str, read_only: bool = True) -> str:
    """Run ``sh -c script`` in a throwaway container with the stack's data volume at DATA_DIR."""
    out = docker_client.containers.run(
        stack.image, ["sh", "-c", script], remove=True, network_mode="none",
        volumes={f"{stack.project}_data": {"bind": DATA_DIR, "mode": "ro" if read_only else "rw"}})
    return out.decode(errors="replace")


def output_entries(stack: ComposeStack, docker_client: Any, tier: str) -> list[str]:
    """Names in the probe's output folder (``ls -A``; hidden temp folders included)."""
    text = in_data_volume(stack, docker_client, f"ls -A {DATA_DIR}/probe_{tier} 2>/dev/null || true")
    return text.split()


def wait_earlier_runs_exited(stack: ComposeStack, docker_client: Any, timeout: float = 90) -> None:
    """Wait until no run container of the stack is running: a run worker outlives its run's
    SUCCESS by the seconds it takes to record usage, and the scaler rightly counts its limits."""
    deadline = time.monotonic() + timeout
    while (running := [c.name for c in stack.run_containers(docker_client) if c.status == "running"]):
        assert time.monotonic() < deadline, f"run containers still running after {timeout:.0f} s: {running}"
        time.sleep(1)


def run_container(stack: ComposeStack, docker_client: Any, run_id: str) -> Any:
    found = [c for c in stack.run_containers(docker_client) if c.labels.get("dagster/run_id") == run_id]
    assert len(found) == 1, f"run {run_id}: expected one run container, found {len(found)}"
    return found[0]


def output_size(stack: ComposeStack, docker_client: Any, tier: str, run_id: str) -> int:
    text = in_data_volume(stack, docker_client,
                          f"stat -c %s {DATA_DIR}/probe_{tier}/{run_id}/probe.bin 2>/dev/null || echo -1")
    return int(text.strip())


# -- one fault -----------------------------------------------------------------------------------
@dataclass
class FaultCase:
    """A fault injected while a probe run writes ``write_mb`` MiB over ``hold_seconds``."""

    name: str
    inject: Callable[[str], None]
    """Called with the run id while the run writes."""
    outcomes: set[str]
    reason: str = ""
    api_dependency: bool = False
    after: Callable[[], None] | None = None
    write_mb: int = 24
    hold_seconds: float = 24.0
    tier: str = "light"


def inject_fault(stack: ComposeStack, docker_client: Any, case: FaultCase) -> dict[str, Any]:
    """Run ``case`` and assert the four chaos properties; return the faulted run."""
    run_id = submit(stack, case.tier, write_mb=case.write_mb, hold_seconds=case.hold_seconds)
    wait_step_started(stack, run_id)
    time.sleep(3)  # the probe is writing now
    with ApiWatch(stack, run_id) as watch:
        start = time.monotonic()
        case.inject(run_id)
        fault_over = time.monotonic()
        run = wait_run(stack, run_id)
        ended = time.monotonic()
        if case.after is not None:
            case.after()
        stack.wait_healthy(docker_client, timeout=600)
        recovered = time.monotonic()
        time.sleep(1)
    # 1. a readable end in time; nothing left STARTED
    assert run["status"] in case.outcomes, run
    budget = stack.monitoring_seconds + MARGIN_SECONDS
    if run["status"] == "SUCCESS":
        budget += case.hold_seconds
    assert ended - fault_over <= budget, f"{case.name}: run ended {ended - fault_over:.0f}s after the fault"
    if run["status"] == "FAILURE":
        reason = failure_text(stack, run)
        assert run["failure"] and case.reason.lower() in reason.lower(), reason
    assert started_runs(stack) == [], "a run was left STARTED"
    # 2. no partial output visible
    entries = output_entries(stack, docker_client, case.tier)
    visible = [e for e in entries if not e.startswith(".")]
    if run["status"] == "SUCCESS":
        assert output_size(stack, docker_client, case.tier, run_id) == case.write_mb * 2**20
    else:
        assert run_id not in visible, f"partial output of {run_id} is visible: {entries}"
    # 3. 503, never 500, while a dependency is down
    assert not watch.bodies_500, watch.bodies_500
    if case.api_dependency:
        assert 503 in watch.codes, f"{case.name}: the API never answered 503 ({sorted(set(watch.codes))})"
    # 4. the next run succeeds
    next_start = time.monotonic()
    errors_before = len(SERVER_ERRORS)
    next_id = submit(stack, case.tier, write_mb=1)
    retried = SERVER_ERRORS[errors_before:]
    if retried:
        print(f"{case.name}: the next launch was retried after {retried}")
    after = wait_run(stack, next_id)
    assert after["status"] == "SUCCESS", after
    assert output_size(stack, docker_client, case.tier, next_id) == 2**20
    outcome = run["status"].lower()
    if run["status"] == "FAILURE":
        outcome += f": {case.reason or run['failure']['message'][:100]}"
    if retried:
        outcome += f" (next launch: webserver answered 5xx {len(retried)}x, then ok)"
    FAULT_TABLE.append(FaultRow(case.name, outcome, max(ended, recovered) - start,
                                time.monotonic() - next_start))
    return run
