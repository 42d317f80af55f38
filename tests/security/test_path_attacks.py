"""Path attacks through the real API: run parameters name files only under the data root.

A real ``dagster dev`` and the API with three keys: clients ``acme`` and ``beta`` (their data is
an uploaded dataset id, no server path; spec/graph files confined to ``<root>/<client>/``) and
``ops`` (``admin``: any file under the root). Every attack is a 422 that quotes no file content
and launches no run.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from e2i_api.idempotency import CLIENT_TAG
from e2i_api.main import create_app
from tests.api.conftest import api_settings, dagster_home, dagster_port  # noqa: F401

pytestmark = pytest.mark.webserver

ACME = {"X-API-Key": secrets.token_urlsafe(48)}
BETA = {"X-API-Key": secrets.token_urlsafe(48)}
ADMIN = {"X-API-Key": secrets.token_urlsafe(48)}
CANARY = "canary_7c1e94_do_not_leak"
PASSWD_LINE = "root:x:0:0"
SPEC = "treatment: t\noutcome: y\ncommon_causes: [w]\n"


def _csv(marker: str) -> str:
    rows = "\n".join(f"{i % 2},{i * 0.5},{i % 7},{marker}_{i}" for i in range(200))
    return f"t,y,w,{marker}\n{rows}\n"


@pytest.fixture(scope="module", autouse=True)
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """E2I_DATA_ROOT for the API and ``dagster dev`` (set before it starts), with files of two
    clients, secrets outside the root and symlinks in acme's folder pointing out of it."""
    base = tmp_path_factory.mktemp("paths")
    root, outside = base / "root", base / "outside"
    for folder in (root / "acme", root / "beta", outside):
        folder.mkdir(parents=True)
    (outside / "secret.csv").write_text(_csv(CANARY))
    (outside / "secret.yaml").write_text(f"{CANARY}: [1]\n")
    (outside / "secret.dot").write_text(f"digraph {{ {CANARY} -> t; t -> y }}\n")
    (root / "beta" / "data.csv").write_text(_csv(CANARY))
    (root / "beta" / "spec.yaml").write_text(SPEC + f"id_column: {CANARY}\n")
    (root / "beta" / "dag.dot").write_text(f"digraph {{ {CANARY} -> t; w -> t; w -> y; t -> y }}\n")
    acme = root / "acme"
    (acme / "data.csv").write_text(_csv("row"))
    (acme / "spec.yaml").write_text(SPEC)
    for name, target in [("link.csv", outside / "secret.csv"), ("link.yaml", outside / "secret.yaml"),
                         ("link.dot", outside / "secret.dot"), ("beta", root / "beta")]:
        (acme / name).symlink_to(target)
    (acme / "graph_out.yaml").write_text("treatment: t\noutcome: y\ngraph: ../beta/dag.dot\n")
    (acme / "graph_abs.yaml").write_text(f"treatment: t\noutcome: y\ngraph: {outside / 'secret.dot'}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E2I_DATA_ROOT", str(root))
        patch.setenv("E2I_STORAGE_URL", f"file://{base / 'store'}")  # uploaded datasets
        yield root


@pytest.fixture(scope="module")
def api(dagster_port: int) -> Iterator[TestClient]:  # noqa: F811
    keys = [{"name": "acme", "key": ACME["X-API-Key"], "scopes": ["runs:read", "runs:write"]},
            {"name": "beta", "key": BETA["X-API-Key"], "scopes": ["runs:read", "runs:write"]},
            {"name": "ops", "key": ADMIN["X-API-Key"], "scopes": ["runs:read", "runs:write", "admin"]}]
    with TestClient(create_app(api_settings(dagster_port, api_keys=keys))) as client:
        yield client


def _run_count(home: Path) -> int:
    """Runs the API launched for acme (sensors of ``dagster dev`` do not disturb the count)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs_count(dg.RunsFilter(tags={CLIENT_TAG: "acme"}))


def _inline(path: str, **extra: object) -> dict:
    return {"source": "file", "path": path, "treatment": "t", "outcome": "y",
            "common_causes": ["w"], **extra}


FAKE_ID = "ds_" + "0" * 24
"""A well-formed dataset id: the spec/graph attacks are refused before the id is looked up."""


def _by_id(dataset_id: str = FAKE_ID, **extra: object) -> dict:
    return {"id": dataset_id, "treatment": "t", "outcome": "y", "common_causes": ["w"], **extra}


def _upload(api: TestClient, headers: dict) -> str:
    """The client's data.csv uploaded as a dataset (POST /v1/datasets); its id."""
    client = "acme" if headers is ACME else "beta"
    body = (Path(os.environ["E2I_DATA_ROOT"]) / client / "data.csv").read_bytes()
    response = api.post("/v1/datasets", params={"name": "data"}, content=body,
                        headers={**headers, "Content-Type": "text/csv"})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def _outside(root: Path) -> Path:
    return root.parent / "outside"


ATTACKS = {
    # dataset.path: a server path is refused for a client key, wherever it points
    "path_dotdot_other_client": lambda r: _inline("../beta/data.csv"),
    "path_dotdot_out_of_root": lambda r: _inline("../../outside/secret.csv"),
    "path_absolute_outside": lambda r: _inline(str(_outside(r) / "secret.csv")),
    "path_absolute_other_client": lambda r: _inline(str(r / "beta" / "data.csv")),
    "path_etc_passwd": lambda r: _inline("/etc/passwd"),
    "path_symlink_out": lambda r: _inline("link.csv"),
    "path_symlinked_dir_of_other_client": lambda r: _inline("beta/data.csv"),
    # dataset.spec_path
    "spec_etc_passwd": lambda r: {"id": FAKE_ID, "spec_path": "/etc/passwd"},
    "spec_dotdot": lambda r: {"id": FAKE_ID, "spec_path": "../../outside/secret.yaml"},
    "spec_other_client": lambda r: {"id": FAKE_ID, "spec_path": "../beta/spec.yaml"},
    "spec_symlink_out": lambda r: {"id": FAKE_ID, "spec_path": "link.yaml"},
    # dataset.graph (inline spec) and a spec file's graph
    "graph_etc_passwd": lambda r: _by_id(graph="/etc/passwd"),
    "graph_dotdot": lambda r: _by_id(graph="../beta/dag.dot"),
    "graph_absolute_outside": lambda r: _by_id(graph=str(_outside(r) / "secret.dot")),
    "graph_symlink_out": lambda r: _by_id(graph="link.dot"),
    "spec_graph_other_client": lambda r: {"id": FAKE_ID, "spec_path": "graph_out.yaml"},
    "spec_graph_absolute_outside": lambda r: {"id": FAKE_ID, "spec_path": "graph_abs.yaml"},
    # the folder itself is set by the server from the key
    "claims_other_client_folder": lambda r: _by_id(data_folder="beta"),
    "path_own_folder": lambda r: _inline("data.csv"),  # even its own folder: upload instead
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_path_attack_is_refused_without_content(api: TestClient, dagster_home: Path,  # noqa: F811
                                                data_root: Path, attack: str) -> None:
    before = _run_count(dagster_home)
    body = {"job": "causal_job", "params": {"dataset": ATTACKS[attack](data_root)}}
    response = api.post("/v1/runs", json=body, headers=ACME)
    assert response.status_code == 422, response.text
    text = response.text
    assert "dataset" in text
    assert CANARY not in text and PASSWD_LINE not in text and "/bin/" not in text
    for location in (str(data_root), str(_outside(data_root))):  # unless the attack named it
        assert location in json.dumps(body) or location not in text, "a location leaked"
    assert "Traceback" not in text
    time.sleep(0.2)
    assert _run_count(dagster_home) == before, "a run was launched"


def test_errors_name_the_key(api: TestClient) -> None:
    cases = {"path": ("../beta/data.csv", "dataset.path (a file on the server) is accepted only from admin keys"),
             "spec_path": ("/etc/passwd", "dataset.spec_path must name a file under your data folder"),
             "graph": ("../beta/dag.dot", "dataset.graph must name a file under your data folder")}
    for key, (value, expected) in cases.items():
        params = _inline("data.csv") if key == "path" else _by_id() if key == "graph" else {"id": FAKE_ID}
        params[key] = value
        response = api.post("/v1/runs", json={"job": "causal_job", "params": {"dataset": params}},
                            headers=ACME)
        assert response.status_code == 422 and expected in response.text, response.text


def test_outside_files_answer_the_same_whether_they_exist(api: TestClient) -> None:
    """The answer for beta's spec and for a missing file next to it differ only in the name."""
    texts = []
    for name in ("spec.yaml", "missing.yaml"):
        params = {"id": FAKE_ID, "spec_path": f"../beta/{name}"}
        response = api.post("/v1/runs", json={"job": "causal_job", "params": {"dataset": params}},
                            headers=ACME)
        assert response.status_code == 422
        texts.append(response.json()["detail"][0]["msg"].replace(name, "X"))
    assert texts[0] == texts[1]


def _launched_config(api: TestClient, home: Path, headers: dict, params: dict) -> dict:
    response = api.post("/v1/runs", json={"job": "causal_job", "params": {"dataset": params}},
                        headers=headers)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        config = instance.get_run_by_id(run_id).run_config["ops"]["dataset"]["config"]
    api.post(f"/v1/runs/{run_id}/cancel", headers=headers)
    return config


def test_a_client_launches_with_its_own_dataset_and_spec(api: TestClient, dagster_home: Path) -> None:  # noqa: F811
    acme_id = _upload(api, ACME)
    config = _launched_config(api, dagster_home, ACME, {"id": acme_id, "spec_path": "spec.yaml"})
    assert config["data_folder"] == "acme" and config["id"] == acme_id and "path" not in config
    beta = _launched_config(api, dagster_home, BETA, _by_id(_upload(api, BETA)))
    assert beta["data_folder"] == "beta"
    refused = api.post("/v1/runs", json={"job": "causal_job", "params": {"dataset": _by_id(acme_id)}},
                       headers=BETA)  # acme's dataset id from beta's key
    assert refused.status_code == 422 and "no dataset" in refused.text and CANARY not in refused.text


def test_a_launched_run_reads_the_clients_own_file(api: TestClient, dagster_home: Path) -> None:  # noqa: F811
    """The run process re-checks the path under the same root and folder, then loads the file."""
    response = api.post("/v1/runs", json={"job": "causal_job", "params": {"dataset": {
        "id": _upload(api, ACME), "spec_path": "spec.yaml"}}}, headers=ACME)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    deadline = time.monotonic() + 240
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            while time.monotonic() < deadline:
                logs = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                if any(e.dagster_event.asset_key == dg.AssetKey("dataset") for e in logs):
                    break
                run = instance.get_run_by_id(run_id)
                assert not run.is_finished, f"run ended {run.status} before the dataset was written"
                time.sleep(1)
            else:
                pytest.fail("the dataset of the run was not written in 240 s")
    finally:
        api.post(f"/v1/runs/{run_id}/cancel", headers=ACME)


def test_admin_may_name_any_file_under_the_root(api: TestClient, dagster_home: Path,  # noqa: F811
                                               data_root: Path) -> None:
    config = _launched_config(api, dagster_home, ADMIN, {
        "source": "file", "path": str(data_root / "beta" / "data.csv"), "spec_path": "acme/spec.yaml"})
    assert "data_folder" not in config  # the whole root
    response = api.post("/v1/runs", json={"job": "causal_job", "params": {
        "dataset": _inline(str(_outside(data_root) / "secret.csv"))}}, headers=ADMIN)
    assert response.status_code == 422 and CANARY not in response.text
    assert "dataset.path must name a file under the data root" in response.text


def test_a_run_re_checks_its_paths_when_it_starts(dagster_home: Path, data_root: Path,  # noqa: F811
                                                   tmp_path: Path) -> None:
    """Defence in depth: a run whose config names a file out of its folder fails at step start,
    its failure naming the key, not the file's content."""
    from e2i_pipelines.core.storage import E2IStorage
    from e2i_pipelines.defs.data.assets import dataset

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = dg.materialize(
            [dataset], instance=instance, raise_on_error=False,
            resources={"storage": E2IStorage(root=str(tmp_path / "data")),
                       "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))},
            run_config={"ops": {"dataset": {"config": {"id": FAKE_ID, "spec_path": "link.yaml",
                                                       "data_folder": "acme"}}}})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "dataset.spec_path must name a file under your data folder (acme/" in message
    assert CANARY not in message
    assert not (tmp_path / "data").exists()
