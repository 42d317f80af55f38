"""The twins: streamed to a Parquet dataset (a folder of part files) chunk by chunk, read
back chunk by chunk or sampled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.twins.copula import CopulaModel
from e2i_pipelines.analytics.twins.sampling import iter_chunks
from e2i_pipelines.core.budget import single_threaded_blas
from e2i_pipelines.core.fanout import Mapper
from e2i_pipelines.core.storage import parquet_files, read_parquet_files
from e2i_pipelines.core.upload_stream import publish

PART_FILE_BYTES = 16 << 20
"""A part file of the twins is closed once it holds this many bytes (at least one chunk)."""


@single_threaded_blas()
def write_twins(
    model: CopulaModel, n: int, path: str | Path, *, chunk_rows: int, seed: int,
    on_chunk: Callable[[pd.DataFrame], None] | None = None, workers: int = 1,
    mapper: Mapper | None = None,
) -> int:
    """Stream ``n`` twins to a Parquet dataset; returns rows written.

    ``path`` becomes a folder of part files (``part-00000.parquet``, ...; a row group per
    chunk, a new file once one holds :data:`PART_FILE_BYTES`) that pandas, pyarrow, DuckDB or
    Spark read as one table. Each part is written under a hidden name and published when
    closed, so on an object store it goes up whole while the next one is drawn (see
    ``core.upload_stream.publish``). ``workers`` threads (or ``mapper``) draw the next chunks
    while this one is written (see ``iter_chunks``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"twins folder {folder} is not empty")
    schema = writer = tmp = None
    parts = written = 0

    def close_part() -> None:
        nonlocal writer, parts
        writer.close()
        writer = None
        publish(tmp, folder / part_name(parts))
        parts += 1

    try:
        for chunk in iter_chunks(model, n, chunk_rows, seed, workers, mapper):
            if schema is None:  # dictionaries only for the discrete columns: floats rarely repeat
                schema = pa.Schema.from_pandas(chunk, preserve_index=False)
            if writer is None:
                tmp = folder / f".{part_name(parts)}"
                writer = pq.ParquetWriter(str(tmp), schema, compression="lz4",
                                          use_dictionary=model.discrete_names)
            writer.write_table(_arrow_table(chunk, schema))
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            if tmp.stat().st_size >= PART_FILE_BYTES:
                close_part()
        if writer is not None:
            close_part()
    finally:
        if writer is not None:  # failed mid-part: no half-written file stays behind
            writer.close()
            tmp.unlink(missing_ok=True)
    return written


def part_name(index: int) -> str:
    """File name of the twins' part ``index``."""
    return f"part-{index:05d}.parquet"


def _arrow_table(chunk: pd.DataFrame, schema: Any) -> Any:
    """``chunk`` as an Arrow table of ``schema`` (``pa.Table.from_pandas``'s table): numeric
    columns zero-copy and without its NaN-as-null scan (twins have no missing values)."""
    import pyarrow as pa

    arrays = []
    for f in schema:
        col = chunk[f.name]
        if isinstance(col.dtype, pd.CategoricalDtype) and pa.types.is_dictionary(f.type):
            arrays.append(pa.DictionaryArray.from_arrays(
                pa.array(col.cat.codes.to_numpy(), type=f.type.index_type),
                pa.array(col.cat.categories.to_numpy(), type=f.type.value_type)))
        elif col.dtype.kind in "biuf":
            arrays.append(pa.array(col.to_numpy(), type=f.type, from_pandas=False))
        else:
            arrays.append(pa.Array.from_pandas(col, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def sample_parquet_rows(path: str | Path, columns: list[str], n_rows: int, seed: int,
                        batch_rows: int = 500_000) -> pd.DataFrame:
    """About ``n_rows`` random rows of a Parquet file or dataset folder, read batch by batch
    (bounded memory)."""
    files = parquet_files(path)
    names = files[0].schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; available: {names}")
    total = sum(pf.metadata.num_rows for pf in files)
    if total <= n_rows:
        return read_parquet_files(files, columns)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    keep_share = min(1.0, 1.2 * n_rows / total)  # oversample a little, trim exactly below
    parts = []
    for pf in files:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            take = np.flatnonzero(rng.random(batch.num_rows) < keep_share)
            parts.append(batch.take(take).to_pandas())
    frame = pd.concat(parts, ignore_index=True)
    if len(frame) > n_rows:
        frame = frame.iloc[np.sort(rng.choice(len(frame), n_rows, replace=False))]
    return frame.reset_index(drop=True)


def iter_parquet_chunks(path: str | Path, chunk_rows: int,
                        columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Read twins (or any Parquet file or dataset folder) back chunk by chunk.

    A row group of at most ``chunk_rows`` rows (the chunks ``write_twins`` wrote) is one
    chunk; larger ones are split. Batches straddling row groups would cost a copy each (3x
    the CPU of the read).
    """
    for pf in parquet_files(path):
        for i in range(pf.num_row_groups):
            if pf.metadata.row_group(i).num_rows <= chunk_rows:
                yield pf.read_row_group(i, columns=columns).to_pandas()
                continue
            for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[i], columns=columns):
                yield batch.to_pandas()
