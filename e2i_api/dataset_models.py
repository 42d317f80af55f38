"""Response schemas of the dataset endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from e2i_pipelines.core.dataset_pg_query import MAX_QUERY_CHARS, TABLE_PATTERN
from e2i_pipelines.core.dataset_pg_sources import CONNECTION_PATTERN
from e2i_pipelines.core.datasets import NAME_PATTERN

EXAMPLE_DATASET_ID = "ds_93d76a4be31650ae19a6583e"


class DatasetColumn(BaseModel):
    name: str
    type: str = Field(examples=["double"], description="Arrow type of the stored Parquet column")
    missing: int = Field(description="missing values (empty, NA, NaN, null)")


class DatasetVersion(BaseModel):
    version: str = Field(description="SHA-256 of the uploaded bytes")
    rows: int
    size_bytes: int = Field(description="bytes uploaded")
    format: str = Field(examples=["csv"])
    created: datetime


class DatasetDetail(DatasetVersion):
    """A dataset at its latest version (or the version just uploaded), with every version."""

    id: str = Field(examples=[EXAMPLE_DATASET_ID])
    name: str
    owner: str = Field(description="client of the API key that uploaded it")
    columns: list[DatasetColumn]
    versions: list[DatasetVersion] = Field(default_factory=list, description="newest first")

    @classmethod
    def of(cls, manifest: dict[str, Any], versions: list[dict[str, Any]]) -> DatasetDetail:
        return cls(**{k: manifest[k] for k in ("id", "name", "owner", "version", "rows", "size_bytes",
                                               "format", "created", "columns")},
                   versions=[DatasetVersion(**{k: m[k] for k in DatasetVersion.model_fields})
                             for m in versions])


class DatasetList(BaseModel):
    datasets: list[DatasetDetail]


class PostgresDatasetRequest(BaseModel):
    """JSON body of ``POST /v1/datasets``: import a table or one SELECT from a configured
    Postgres connection (named; a URL, host or credential is refused as an unknown key)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["postgres"]
    name: str = Field(pattern=NAME_PATTERN, description="dataset name (letters, digits, ._-)")
    connection: str = Field(pattern=CONNECTION_PATTERN, examples=["warehouse"],
                            description="a connection the operator configured (E2I_PG_SOURCES_FILE)")
    table: str | None = Field(None, pattern=TABLE_PATTERN, examples=["public.accounts"],
                              description="'name' or 'schema.name' (case-sensitive)")
    query: str | None = Field(None, min_length=1, max_length=MAX_QUERY_CHARS,
                              examples=["SELECT id, revenue, segment FROM accounts ORDER BY id"],
                              description="one read-only SELECT (or WITH ... SELECT)")

    @model_validator(mode="after")
    def _one_of(self) -> PostgresDatasetRequest:
        if (self.table is None) == (self.query is None):
            raise ValueError("give either 'table' or 'query'")
        return self
