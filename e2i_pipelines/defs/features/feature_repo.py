"""The Feast feature repository of a dataset: entity, source and feature view, built from its spec.

The repo lives in a folder (``feature_store.yaml`` + registry + SQLite online store), so the
``feast`` CLI works on it too: ``feast -c <repo_path> feature-views list``. The offline store is
Feast's file (Parquet) store; the online store is SQLite (embedded default).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

if TYPE_CHECKING:  # feast takes seconds to import: only the steps that use it pay for it
    from feast import Entity, FeatureStore, FeatureView

PROJECT = "e2i"
FEATURE_VIEW = "hcp_features"
TIMESTAMP = "event_timestamp"


def repo_config(repo_path: Path) -> dict:
    """The feature_store.yaml content for a repo folder."""
    return {
        "project": PROJECT,
        "provider": "local",
        "registry": str(repo_path / "registry.db"),
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
