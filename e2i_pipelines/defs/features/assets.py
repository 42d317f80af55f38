"""The ``feature_store`` asset: covariates registered in Feast and materialized online."""

import dagster as dg
import pandas as pd

from e2i_pipelines.core.encoding import categorical_columns
from e2i_pipelines.core.refs import DatasetRef, FeatureStoreRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.defs.features.config import FeatureStoreConfig
from e2i_pipelines.defs.features.feature_repo import (
    FEATURE_VIEW,
    FEATURES_FILE,
    TIMESTAMP,
    apply_repo,
)
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


def feature_frame(dataset: DatasetRef, as_of: pd.Timestamp) -> pd.DataFrame:
    """Entity id, timestamp and covariates (categoricals as strings) for the offline store."""
    spec = dataset.spec
    frame = dataset.read([dataset.id_column, *spec.covariates])
    for col in categorical_columns(frame, spec.covariates, spec.categorical):
        frame[col] = frame[col].astype(str)
    frame[TIMESTAMP] = as_of
    return frame


@dg.asset(
    group_name="features",
    description="Feast repo (file offline store, SQLite online store) applied and materialized.",
    **asset_tier_kwargs(Tier.MEDIUM),
)
def feature_store(
    context: dg.AssetExecutionContext,
    config: FeatureStoreConfig,
    dataset: DatasetRef,
    storage: E2IStorage,
) -> dg.Output[FeatureStoreRef]:
    as_of = pd.Timestamp.now(tz="UTC").floor("s")
    committed = storage.output_dir(context)
    with storage.atomic_output(committed) as tmp:
        frame = feature_frame(dataset, as_of)
        frame.to_parquet(tmp / FEATURES_FILE, index=False)
    # Feast records absolute paths, so it is applied in the final folder (node-local on S3).
    repo = storage.local_mirror(committed)
    features = dataset.spec.covariates
    store = apply_repo(repo, dataset.id_column, features)
    context.log.info(f"feast apply: entity 'hcp', view {FEATURE_VIEW} with {len(features)} features")
    online_rows = 0
    if config.materialize_online:
        store.materialize(as_of - pd.Timedelta(days=1), as_of + pd.Timedelta(minutes=1))
        sample_ids = frame[dataset.id_column].head(3).tolist()
        online = store.get_online_features(
            features=[f"{FEATURE_VIEW}:{f}" for f in features],
            entity_rows=[{dataset.id_column: i} for i in sample_ids],
        ).to_df()
        online_rows = int(online[features].notna().all(axis=1).sum())
        if online_rows != len(sample_ids):
            raise dg.Failure(f"online store returned {online_rows}/{len(sample_ids)} complete rows")
        context.log.info(f"materialized {len(frame):,} rows into the SQLite online store")
    ref = FeatureStoreRef(
        repo_path=str(repo), feature_view=FEATURE_VIEW, entity_column=dataset.id_column,
        feature_names=features, storage_path=str(committed),
    )
    return dg.Output(ref, metadata={
        "repo_path": dg.MetadataValue.path(str(repo)),
        "feature_view": FEATURE_VIEW,
        "features": dg.MetadataValue.json(features),
        "rows": len(frame),
        "as_of": as_of.isoformat(),
        "online_sample_rows_ok": online_rows,
    })


assets = [feature_store]
