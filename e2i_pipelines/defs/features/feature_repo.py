"""The Feast feature repository of a dataset: entity, source and feature view, built from its spec.

The repo lives in a folder (``feature_store.yaml`` + registry + SQLite online store), so the
``feast`` CLI works on it too: ``feast -c <repo_path> feature-views list``. The offline store is
Feast's file (Parquet) store; the online store is SQLite (embedded default).

Feast records absolute paths, so a repo is tied to one machine's disk. What ``feature_store``
commits to storage is only ``features.parquet``; every node that needs the store (the one that
ran ``feature_store``, or another machine with no shared disk) applies the same entity and view
over its own copy of that file (:func:`node_store`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from e2i_pipelines.core.refs import FeatureStoreRef
from e2i_pipelines.core.storage import E2IStorage

if TYPE_CHECKING:  # feast takes seconds to import: only the steps that use it pay for it
    from feast import Entity, FeatureStore, FeatureView

PROJECT = "e2i"
FEATURE_VIEW = "hcp_features"
TIMESTAMP = "event_timestamp"
FEATURES_FILE = "features.parquet"
REGISTRY_FILE = "registry.db"


def repo_config(repo_path: Path) -> dict:
    """The feature_store.yaml content for a repo folder."""
    return {
        "project": PROJECT,
        "provider": "local",
        "registry": str(repo_path / REGISTRY_FILE),
        "online_store": {"type": "sqlite", "path": str(repo_path / "online_store.db")},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def open_store(repo_path: str | Path) -> FeatureStore:
    """A FeatureStore on ``repo_path`` (writing its feature_store.yaml if missing)."""
    from feast import FeatureStore, RepoConfig

    path = Path(repo_path)
    path.mkdir(parents=True, exist_ok=True)
    config_file = path / "feature_store.yaml"
    if not config_file.exists():
        config_file.write_text(yaml.safe_dump(repo_config(path), sort_keys=False))
    config = RepoConfig(repo_path=path, **repo_config(path))
    return FeatureStore(config=config)


def _feast_type(series: pd.Series):
    from feast.types import Float64, Int64, String

    if pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
        return Int64
    if pd.api.types.is_numeric_dtype(series):
        return Float64
    return String


def _entity_value_type(series: pd.Series):
    from feast.value_type import ValueType

    return ValueType.INT64 if pd.api.types.is_integer_dtype(series) else ValueType.STRING


def feature_objects(
    source_path: str, sample: pd.DataFrame, entity_column: str, features: list[str]
) -> tuple[Entity, FeatureView]:
    """Entity + feature view over the Parquet ``source_path`` (types read from ``sample``)."""
    from feast import Entity, FeatureView, Field, FileSource

    entity = Entity(
        name="hcp", join_keys=[entity_column], value_type=_entity_value_type(sample[entity_column])
    )
    source = FileSource(name="hcp_source", path=source_path, timestamp_field=TIMESTAMP)
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[entity],
        ttl=timedelta(days=3650),
        schema=[Field(name=f, dtype=_feast_type(sample[f])) for f in features],
        source=source,
        online=True,
    )
    return entity, view


def apply_repo(repo: Path, entity_column: str, features: list[str]) -> FeatureStore:
    """Apply the entity and feature view over ``repo``'s own ``features.parquet``."""
    import pyarrow.parquet as pq

    source = repo / FEATURES_FILE
    sample = next(pq.ParquetFile(source).iter_batches(batch_size=1000)).to_pandas()
    store = open_store(repo)
    store.apply(list(feature_objects(str(source), sample, entity_column, features)))
    return store


def node_store(ref: FeatureStoreRef, storage: E2IStorage) -> FeatureStore:
    """``ref``'s Feast store on this node: the repo it was applied in when this node has it,
    else a node-local copy of its committed folder, applied here (no shared disk needed)."""
    repo = Path(ref.repo_path)
    if (repo / REGISTRY_FILE).is_file() or not ref.storage_path:
        return open_store(repo)
    return apply_repo(storage.local_mirror(ref.storage_path), ref.entity_column,
                      ref.feature_names)
