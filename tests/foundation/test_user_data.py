"""Users' own files: each bad input gets a clear error naming the column, before heavy work."""

import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.core import datasets as store
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.defs.data.assets import dataset


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    """User files live under the data root; here the test's tmp folder."""
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))


def _user_frame(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "account": [f"A{i:05d}" for i in range(n)],
        "segment": rng.choice(["smb", "ent"], n),
        "tenure": rng.gamma(2.0, 2.0, n),
        "x": x,
        "programme": (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int),
        "revenue": 3 * x + rng.normal(size=n),
    })


def _materialize(tmp_path, config: dict) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [dataset], instance=instance, raise_on_error=False,
            resources={"storage": E2IStorage(root=str(tmp_path / "data")),
                       "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))},
            run_config={"ops": {"dataset": {"config": config}}},
        )


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a step failure"
    return str(failures[0].event_specific_data.error)


def _inline(path, **overrides):
    config = {"source": "file", "path": str(path), "treatment": "programme", "outcome": "revenue",
              "common_causes": ["segment", "tenure", "x"], "id_column": "account"}
    config.update(overrides)
    return config


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_user_file_is_loaded_with_its_own_columns(tmp_path, suffix):
    path = tmp_path / f"accounts{suffix}"
    frame = _user_frame()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    result = _materialize(tmp_path, _inline(path))
    assert result.success
    ref = result.output_for_node("dataset")
    assert ref.spec.treatment == "programme" and ref.n_rows == len(frame)
    assert list(ref.read()["account"]) == list(frame["account"])


def test_spec_file_and_synthetic_id(tmp_path):
    path = tmp_path / "accounts.csv"
    _user_frame().drop(columns="account").to_csv(path, index=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text("treatment: programme\noutcome: revenue\ncommon_causes: [tenure, x]\n")
    result = _materialize(tmp_path, {"source": "file", "path": str(path), "spec_path": str(spec)})
    assert result.success
    ref = result.output_for_node("dataset")
    assert ref.id_column == "e2i_id" and ref.read()["e2i_id"].is_unique


def _bad_cases(tmp_path):
    good = _user_frame()
    nan = good.copy()
    nan.loc[5, "tenure"] = np.nan
    multi = good.copy()
    multi.loc[:10, "programme"] = 2
    cases = {
        "wrong_column": (good, {"common_causes": ["segment", "tenur"]}, "tenur"),
        "nan": (nan, {}, "'tenure' has 1 missing"),
        "non_binary": (multi, {}, "must be binary"),
        "empty_rows": (good.head(0), {}, "empty"),
    }
    for name, (frame, overrides, expected) in cases.items():
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        yield name, _inline(path, **overrides), expected
    empty = tmp_path / "zero_bytes.csv"
    empty.write_text("")
    yield "zero_bytes", _inline(empty), "is empty"
    yield "missing_file", _inline(tmp_path / "nope.parquet"), "does not exist"
    yield "bad_suffix", _inline(tmp_path / "data.xlsx"), "does not exist"
    bad_spec = tmp_path / "bad_spec.yaml"
    bad_spec.write_text("treatment: programme\noutcome: revenue\ncommon_causes: [x]\ncolour: red\n")
    yield "spec_unknown_key", {"source": "file", "path": str(tmp_path / "wrong_column.csv"),
                               "spec_path": str(bad_spec)}, "unknown keys ['colour']"
    yield "no_spec", {"source": "file", "path": str(tmp_path / "nan.csv")}, "needs a spec"
    yield "synthetic_size", {"n_rows": 5}, "n_rows must be between"


def test_bad_inputs_fail_clearly_and_write_nothing(tmp_path):
    for name, config, expected in list(_bad_cases(tmp_path)):
        result = _materialize(tmp_path, config)
        message = _failure_message(result)
        assert expected in message, f"{name}: {message}"
        assert "dataset config/data invalid" in message
        written = tmp_path / "data" / "dataset"
        assert not written.exists() or not any(written.iterdir()), f"{name} wrote output"


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"not really excel")
    message = _failure_message(_materialize(tmp_path, _inline(path)))
    assert "unsupported type '.xlsx'" in message
    assert os.listdir(tmp_path) == ["data.xlsx"] or not (tmp_path / "data" / "dataset").exists()


def test_run_time_recheck_refuses_files_outside_the_root(tmp_path, tmp_path_factory):
    """Runs from the UI (or a tampered run config) are checked again when the asset runs."""
    outside = tmp_path_factory.mktemp("outside") / "secret.csv"
    _user_frame().rename(columns={"x": "canary_col_7731"}).to_csv(outside, index=False)
    message = _failure_message(_materialize(tmp_path, _inline(outside)))
    assert "dataset.path must name a file under the data root" in message
    assert "canary_col_7731" not in message and "A00000" not in message


def test_run_time_recheck_refuses_a_clients_server_path(tmp_path):
    """data_folder (set by the API from a non-admin key) means: no server path, even its own
    folder's; such clients upload datasets and name their id."""
    (tmp_path / "acme").mkdir()
    _user_frame().to_csv(tmp_path / "acme" / "accounts.csv", index=False)
    refused = _materialize(tmp_path, _inline("accounts.csv", data_folder="acme"))
    assert "dataset.path (a file on the server) is accepted only from admin keys" in _failure_message(refused)
    assert _materialize(tmp_path, _inline(tmp_path / "acme" / "accounts.csv")).success  # admin/UI


def _upload(frame: pd.DataFrame, client: str, name: str = "accounts") -> dict:
    """Register ``frame`` (as CSV bytes) as ``client``'s dataset, as POST /v1/datasets does."""

    staged = store.StagedUpload(10**9)
    try:
        staged.write(frame.to_csv(index=False).encode())
        version = staged.finish()
        return store.register(staged.path, version, staged.size, client, name)[0]
    finally:
        staged.discard()


def _by_id(manifest: dict, **overrides) -> dict:
    config = {"id": manifest["id"], "treatment": "programme", "outcome": "revenue",
              "common_causes": ["segment", "tenure", "x"], "id_column": "account"}
    config.update(overrides)
    return config


@pytest.fixture()
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("E2I_STORAGE_URL", f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path / "scratch"))


def test_a_run_reads_an_uploaded_dataset_by_id(tmp_path, storage):
    frame = _user_frame()
    manifest = _upload(frame, "acme")
    result = _materialize(tmp_path, _by_id(manifest, data_folder="acme"))
    assert result.success
    [materialization] = result.asset_materializations_for_node("dataset")
    meta = materialization.metadata
    assert meta["dataset_id"].value == manifest["id"]
    assert meta["dataset_version"].value == manifest["version"]
    assert meta["rows"].value == len(frame) and meta["source"].value == "dataset"
    columns = {c.name: c.type for c in meta["schema"].value.columns}
    assert columns == {"account": "string", "segment": "string", "tenure": "double", "x": "double",
                       "programme": "int64", "revenue": "double"}
    stored = pd.read_parquet(result.output_for_node("dataset").path)
    pd.testing.assert_series_equal(stored["revenue"], frame["revenue"], check_exact=False, rtol=1e-15)


def test_a_named_version_is_read_and_the_latest_by_default(tmp_path, storage):
    first = _upload(_user_frame(400), "acme")
    second = _upload(_user_frame(300), "acme")
    assert first["id"] == second["id"] and first["version"] != second["version"]
    latest = _materialize(tmp_path, _by_id(first, data_folder="acme"))
    pinned = _materialize(tmp_path, _by_id(first, version=first["version"], data_folder="acme"))
    assert latest.output_for_node("dataset").n_rows == 300
    assert pinned.output_for_node("dataset").n_rows == 400


def test_another_clients_dataset_id_fails_the_run(tmp_path, storage):
    manifest = _upload(_user_frame(), "acme")
    message = _failure_message(_materialize(tmp_path, _by_id(manifest, data_folder="beta")))
    assert f"dataset.id: no dataset {manifest['id']!r}" in message
    assert _materialize(tmp_path, _by_id(manifest)).success  # UI/admin runs: any client's id


def test_a_dataset_missing_a_spec_column_names_it(tmp_path, storage):
    manifest = _upload(_user_frame().drop(columns=["tenure"]), "acme")
    message = _failure_message(_materialize(tmp_path, _by_id(manifest, data_folder="acme")))
    assert "tenure" in message and manifest["id"] in message

def test_datasets_on_s3(tmp_path, monkeypatch):
    """The same registry on an S3 API (moto's server on loopback): versions, a run reading the
    id, a failed upload leaving no object, delete removing every object."""
    from tests.support.s3 import moto_server, use_s3

    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path / "scratch"))
    with moto_server() as s3:
        use_s3(monkeypatch, s3)
        frame = _user_frame()
        first = _upload(frame, "acme")
        assert _upload(frame, "acme") == first  # the same bytes: the same version, as stored
        second = _upload(frame.iloc[:350], "acme")
        dataset = store.get_dataset(first["id"], "acme")
        assert [m["version"] for m in dataset.versions] == [second["version"], first["version"]]
        prefix = f"e2i/datasets/acme/{first['id']}/"
        assert len([k for k in s3.keys(prefix) if k.endswith("/manifest.json")]) == 2
        result = _materialize(tmp_path, _by_id(first, version=first["version"], data_folder="acme"))
        assert result.success and result.output_for_node("dataset").n_rows == 400
        before = s3.keys()
        with pytest.raises(store.DatasetInvalid, match="column 'x', row 2: not a number"):
            _upload(pd.DataFrame({"x": ["1", "oops"], "y": [1, 2]}), "acme", "bad")
        assert s3.keys() == before, "a failed upload left objects behind"
        with pytest.raises(store.DatasetNotFound):
            store.get_dataset(first["id"], "beta")
        store.delete_dataset(first["id"], "acme")
        assert s3.keys(prefix) == []
        with pytest.raises(store.DatasetNotFound):
            store.get_dataset(first["id"], "acme")
