"""Response schemas of the dataset endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

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
