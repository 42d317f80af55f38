"""Code injection through run parameters: twin targeting rules are data, never code.

A real ``dagster dev`` whose queue launches nothing (``max_concurrent_runs: 0``) and the API.
Each payload would create a canary file if any evaluator ran it (the issue's ``DataFrame.eval``
payload included); each is a 422 naming the refused construct, the canary does not exist and
no run was queued. Structured rules and safe queries are accepted (202) with the rule in the
run's config as plain data.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from e2i_api.idempotency import CLIENT_TAG
from e2i_api.main import create_app
from tests.api.conftest import api_settings, dagster_port  # noqa: F401
from tests.support.dagster_processes import write_instance_yaml

pytestmark = pytest.mark.webserver

CLIENT = "injector"
KEY = {"X-API-Key": secrets.token_urlsafe(48)}
HINT = "use column names, constants, comparisons and and/or/not"


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance whose run queue never starts a run: launches are recorded, not executed."""
    home = tmp_path_factory.mktemp("dagster_home_injection")
    write_instance_yaml(home, {"concurrency": {
        "pools": {"granularity": "run", "default_limit": 1000}, "runs": {"max_concurrent_runs": 0}}})
    return home


@pytest.fixture(scope="module")
def api(dagster_port: int) -> Iterator[TestClient]:  # noqa: F811
    keys = [{"name": CLIENT, "key": KEY["X-API-Key"], "scopes": ["runs:read", "runs:write"]}]
    with TestClient(create_app(api_settings(dagster_port, api_keys=keys))) as client:
        yield client


def _runs(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs(dg.RunsFilter(tags={CLIENT_TAG: CLIENT}))


def _payloads(canary: Path) -> dict[str, tuple[str, str]]:
    """name -> (query, construct the 422 names); each query would write ``canary`` if run."""
    c = str(canary)
    return {
        "issue_eval_payload": (
            "(a > 0) & (a.to_string.__func__.__globals__.get('sys').modules.get('os')"
            ".getpid() > 0)", "attribute access ('.to_string')"),
        "globals_chain_open": (
            f"(x > 0) & (x.to_string.__func__.__globals__.get('__builtins__').get('open')"
            f"('{c}', 'w').close() is None)", "attribute access ('.to_string')"),
        "dunder_import": (f"__import__('os').system('touch {c}') == 0",
                          "dunder name ('__import__')"),
        "dunder_class_walk": (f"x.__class__.__base__.__subclasses__()[0]('{c}') == 1",
                              "attribute access ('.__class__')"),
        "call_open": (f"open('{c}', 'w').close() is None", "function call ('open(...)')"),
        "lambda": (f"x == (lambda: open('{c}', 'w').close())", "lambda"),
        "subscript_of_globals": (f"x[globals()['__builtins__']['open']('{c}', 'w')] > 0",
                                 "subscript ('[...]')"),
        "at_local": ("x > @os", "'@' (local variable reference)"),
        "f_string": (f"f\"{{open('{c}', 'w')}}\" == 'x'", "f-string"),
        "format_string": ("'{0.__globals__}'.format(x) == 'x'", "attribute access ('.format')"),
        "walrus": (f"(w := open('{c}', 'w')) is None", "assignment expression (':=')"),
        "comprehension": (f"[open('{c}', 'w') for _ in [1]] == []", "comprehension"),
    }


PAYLOAD_NAMES = list(_payloads(Path("/c")))


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_injected_query_is_a_422_naming_the_construct(api: TestClient, dagster_home: Path,
                                                      tmp_path: Path, name: str) -> None:
    canary = tmp_path / "canary"
    query, construct = _payloads(canary)[name]
    before = len(_runs(dagster_home))
    response = api.post("/v1/runs", headers=KEY, json={
        "job": "twins_job",
        "params": {"twin_interventions": {"targeting": "query", "query": query}}})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "params", "twin_interventions"]
    assert f"{construct} is not allowed; {HINT}" in error["msg"]
    assert str(canary) not in response.text and "Traceback" not in response.text
    assert not canary.exists()
    assert len(_runs(dagster_home)) == before, "a run was launched"


@pytest.mark.parametrize(("conditions", "problem"), [
    ([{"column": "x", "op": "exec", "value": "__import__('os')"}], "conditions[0].op: must be one of"),
    ([{"column": "x", "op": ">", "value": 0, "eval": "open('/tmp/x', 'w')"}],
     "keys column, op, value"),
    ([{"column": "x", "op": "==", "value": {"__class__": "os"}}], "needs a single value"),
    ([{"any": "x > 0"}], "conditions[0].any: needs a non-empty list"),
])
def test_malformed_structured_rule_is_a_422(api: TestClient, dagster_home: Path,
                                            conditions: list, problem: str) -> None:
    before = len(_runs(dagster_home))
    response = api.post("/v1/runs", headers=KEY, json={
        "job": "twins_job",
        "params": {"twin_interventions": {"targeting": "conditions", "conditions": conditions}}})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "params", "twin_interventions"] and problem in error["msg"]
    assert len(_runs(dagster_home)) == before


def test_structured_rule_and_safe_query_launch(api: TestClient, dagster_home: Path) -> None:
    """Happy paths: 202, the run is queued with the rule as plain data in its config."""
    conditions = [{"column": "engagement_score", "op": ">", "value": 0.5},
                  {"any": [{"column": "region", "op": "in", "value": ["Northeast", "South"]},
                           {"column": "prior_rx", "op": "between", "value": [1, 5]}]}]
    before = {r.run_id for r in _runs(dagster_home)}
    launched = {}
    for targeting in ({"targeting": "conditions", "conditions": conditions},
                      {"targeting": "query", "query": "engagement_score > 0.5 and region == 'South'"}):
        response = api.post("/v1/runs", headers=KEY, json={
            "job": "twins_job", "params": {"twin_interventions": targeting}})
        assert response.status_code == 202, response.text
        launched[response.json()["run_id"]] = targeting
    runs = {r.run_id: r for r in _runs(dagster_home) if r.run_id not in before}
    assert set(runs) == set(launched)
    for run_id, targeting in launched.items():
        run = runs[run_id]
        assert run.job_name == "twins_job" and run.tags[CLIENT_TAG] == CLIENT
        assert run.run_config["ops"]["twin_interventions"]["config"] == targeting
