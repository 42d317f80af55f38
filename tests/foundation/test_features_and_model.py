"""Feast apply/materialize/retrieval on the embedded stores and the MLflow record of the model."""

import dagster as dg
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.data.assets import dataset
from e2i_pipelines.defs.features.assets import feature_store
from e2i_pipelines.defs.features.feature_repo import FEATURE_VIEW, open_store
from e2i_pipelines.defs.models.assets import outcome_model


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2i")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [dataset, feature_store, outcome_model], instance=instance,
            resources={"storage": E2IStorage(root=str(root / "data")),
                       "mlflow": MlflowTracker(tracking_uri=tracking),
                       "io_manager": dg.FilesystemIOManager(base_dir=str(root / "io"))},
            run_config={"ops": {"dataset": {"config": {"n_rows": 5_000}},
                                "outcome_model": {"config": {"n_estimators": 30}}}},
        )
    assert result.success
    return result, tracking


def test_feast_online_and_historical_retrieval(pipeline):
    result, _ = pipeline
    data = result.output_for_node("dataset")
    features = result.output_for_node("feature_store")
    store = open_store(features.repo_path)
    assert [v.name for v in store.list_feature_views()] == [FEATURE_VIEW]
    frame = data.read()
    ids = frame[data.id_column].head(4).tolist()
    online = store.get_online_features(
        features=[f"{FEATURE_VIEW}:prior_rx"], entity_rows=[{data.id_column: i} for i in ids]
    ).to_df()
    assert online["prior_rx"].tolist() == frame["prior_rx"].head(4).tolist()
    entity_df = frame[[data.id_column]].head(50).assign(event_timestamp=pd.Timestamp.now(tz="UTC"))
    hist = store.get_historical_features(
        entity_df=entity_df, features=[f"{FEATURE_VIEW}:patient_volume", f"{FEATURE_VIEW}:region"]
    ).to_df().sort_values(data.id_column)
    assert len(hist) == 50
    assert hist["patient_volume"].tolist() == pytest.approx(frame["patient_volume"].head(50).tolist())
    assert hist["region"].tolist() == frame["region"].astype(str).head(50).tolist()


def test_model_logged_to_mlflow_with_params_metrics_and_artifact(pipeline):
    result, tracking = pipeline
    model = result.output_for_node("outcome_model")
    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(model.mlflow_run_id)
    assert run.data.params["n_estimators"] == "30"
    assert run.data.params["treatment"] == "treatment"
    assert 0.5 < run.data.metrics["holdout_r2"] <= 1.0
    assert run.data.tags["dagster_run_id"] == result.run_id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "feature_importance.png" in artifacts
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert any(m.source_run_id == run.info.run_id for m in logged)
    mlflow.set_tracking_uri(tracking)
    loaded = mlflow.lightgbm.load_model(f"runs:/{run.info.run_id}/model")
    booster = model.load_booster()
    sample = model.model_frame(result.output_for_node("dataset").read().head(20))
    assert loaded.predict(sample) == pytest.approx(booster.predict(sample))


def test_declared_categoricals_are_lightgbm_categories():
    """model_inputs codes declared integer columns as categories; ModelRef decodes them alike."""
    import numpy as np

    from e2i_pipelines.core.refs import ModelRef
    from e2i_pipelines.defs.models.assets import model_inputs

    frame = pd.DataFrame({"t": [0, 1, 0, 1], "region": [3, 1, 3, 7], "x": [0.1, 0.2, 0.3, 0.4]})
    inputs, categories = model_inputs(frame, "t", ["region", "x"], ["region"])
    assert isinstance(inputs["region"].dtype, pd.CategoricalDtype)
    assert categories == {"region": ["1", "3", "7"]} and inputs["x"].dtype == np.float64
    ref = ModelRef(model_path="", feature_names=["t", "region", "x"], treatment="t", target="y",
                   categories=categories)
    again = ref.model_frame(frame)
    assert (again["region"].cat.codes.to_numpy() == inputs["region"].cat.codes.to_numpy()).all()
    plain, none = model_inputs(frame, "t", ["region", "x"])
    assert none == {} and plain["region"].dtype.kind == "i"
