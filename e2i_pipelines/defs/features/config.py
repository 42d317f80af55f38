"""Run config of the ``feature_store`` asset."""

import dagster as dg


class FeatureStoreConfig(dg.Config):
    """Whether to load the online (SQLite) store too; offline retrieval works without it."""

    materialize_online: bool = True
