"""Feast across machines: ``feature_store`` on one node, ``outcome_model`` on another.

Storage is the moto bucket and each "node" has its own E2I_DATA_DIR; the first node's folder is
deleted before the second run, as on a machine that never saw it. The second run must build
its own Feast repo from the committed ``features.parquet`` and retrieve the same training rows.
"""

import shutil

import dagster as dg
import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.definitions import defs
from e2i_pipelines.defs.features.feature_repo import FEATURES_FILE, REGISTRY_FILE

OPS = {"dataset": {"config": {"n_rows": 2000, "seed": 5}},
       "feature_store": {"config": {"materialize_online": False}},
       "outcome_model": {"config": {"n_estimators": 10, "train_rows": 2000}}}


def _materialize(keys: list[str], node, monkeypatch, tmp_path) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("E2I_DATA_DIR", str(node))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        run_config={"ops": {k: v for k, v in OPS.items() if k in keys}},
        asset_selection=[dg.AssetKey(k) for k in keys],
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [str(e.event_specific_data.error) for e in result.all_events
                            if e.is_failure and e.event_specific_data][:2]
    return result


def test_outcome_model_on_another_node_builds_its_own_feast_repo(s3, monkeypatch, tmp_path):
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"
    first = _materialize(["dataset", "feature_store"], node_a, monkeypatch, tmp_path)
    ref = first.output_for_node("feature_store")
    assert ref.storage_path.startswith("s3://") and storage.exists(
        f"{ref.storage_path}/{FEATURES_FILE}")
    assert ref.repo_path.startswith(str(node_a)) and (node_a / "mirror").is_dir()
    shutil.rmtree(node_a)  # the other machine has none of node A's disk

    second = _materialize(["outcome_model"], node_b, monkeypatch, tmp_path)
    model = second.output_for_node("outcome_model")
    assert model.model_path.startswith("s3://")
    rebuilt = node_b / "mirror" / "feature_store" / first.run_id
    assert (rebuilt / REGISTRY_FILE).is_file() and (rebuilt / FEATURES_FILE).is_file()
    assert not node_a.exists()
    # Every label row got its features through Feast (else the asset fails), and they are
    # the real covariates: the model explains the outcome on held-out rows.
    meta = second.asset_materializations_for_node("outcome_model")[0].metadata
    assert 1000 < meta["train_rows"].value < 2000
    assert meta["holdout_r2"].value > 0.2, meta["holdout_r2"]


def test_a_missing_repo_without_a_committed_folder_fails_clearly(s3, monkeypatch, tmp_path):
    """An old ref (no storage_path) whose node folder is gone: Feast's own error, no mirror."""
    from e2i_pipelines.core.refs import FeatureStoreRef
    from e2i_pipelines.core.storage import E2IStorage
    from e2i_pipelines.defs.features.feature_repo import node_store

    ref = FeatureStoreRef(repo_path=str(tmp_path / "gone"), feature_view="hcp_features",
                          entity_column="hcp_id", feature_names=["x"])
    store = node_store(ref, E2IStorage())
    with pytest.raises(Exception, match="hcp_features"):
        store.get_feature_view("hcp_features")
    assert not (tmp_path / "node" / "mirror").exists()
