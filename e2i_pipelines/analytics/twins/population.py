"""The ``digital_twins`` analysis end to end: fit the population model on a sample of the
dataset, stream N twins to Parquet with a running fidelity report, and the outputs to write."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2i_pipelines.analytics.twins.copula import CopulaModel, fit_copula
from e2i_pipelines.analytics.twins.fidelity import FidelityAccumulator, fidelity_figure
from e2i_pipelines.analytics.twins.twin_files import sample_parquet_rows, write_twins
from e2i_pipelines.core.fanout import Mapper
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.outputs import FilePath, Outputs, Plot
from e2i_pipelines.core.refs import DatasetRef

TWINS_FILE = "twins.parquet"
MODEL_FILE = "population_model.pkl"


class PopulationError(ValueError):
    """The dataset cannot be modelled (message says why)."""


@dataclass(frozen=True)
class TwinSettings:
    """How the twins are made (validated by the run config)."""

    n_twins: int
    chunk_rows: int
    seed: int
    fit_rows: int
    grid_size: int
    min_stratum_rows: int
    ks_rows: int


@dataclass
class TwinsRun:
    """The fitted model, how many twins were written and how fast, and their fidelity."""

    model: CopulaModel
    settings: TwinSettings
    written: int
    seconds: float
    report: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def summary(self) -> dict[str, float]:
        r = self.report
        return {"max_ks": r["max_ks"], "max_abs_corr_diff": r["max_abs_corr_diff"],
                "max_frequency_diff": r["max_frequency_diff"]}

    def outputs(self) -> Outputs:
        """fidelity.json/.png (twins.parquet and the model are already in the folder)."""
        s, m, r = self.settings, self.model, self.report
        metadata = {
            "n_twins": self.written, **self.summary,
            "max_corr_diff_pair": ", ".join(r["max_corr_diff_pair"]),
            "ks": {k: round(v, 5) for k, v in r["ks"].items()},
            "frequency_diff": r["frequency_diff"], "n_strata": m.n_strata,
            "pooled_share": m.pooled_share, "fit_rows": m.n_fit_rows,
            "twins_per_second": self.rate, "seconds": self.seconds, "path": FilePath(TWINS_FILE),
        }
        return Outputs(
            files={"fidelity.json": json.dumps(r, default=json_default, indent=1),
                   "fidelity.png": Plot(fidelity_figure(r), "twin fidelity", key="fidelity_plot")},
            metadata=metadata,
            params={"n_twins": s.n_twins, "chunk_rows": s.chunk_rows, "seed": s.seed,
                    "fit_rows": m.n_fit_rows, "grid_size": s.grid_size, "n_strata": m.n_strata},
            metrics={**self.summary, "twins_per_second": self.rate},
            artifacts=["fidelity.png", "fidelity.json"])


def fit_population(dataset: DatasetRef, settings: TwinSettings) -> tuple[CopulaModel, Any]:
    """The copula of the dataset's covariates + treatment, and the real rows it was fitted on."""
    spec = dataset.spec
    columns = [*spec.covariates, spec.treatment]
    try:
        real = sample_parquet_rows(dataset.path, columns, settings.fit_rows, settings.seed)
        model = fit_copula(real, columns, priority=[spec.treatment], categorical=spec.categorical,
                           max_fit_rows=settings.fit_rows, grid_size=settings.grid_size,
                           min_stratum_rows=settings.min_stratum_rows, seed=settings.seed)
    except ValueError as exc:
        raise PopulationError(f"cannot model dataset {dataset.path}: {exc}") from None
    return model, real


def make_twins(dataset: DatasetRef, settings: TwinSettings, folder: Path, *,
               log: Callable[[str], None], on_rows: Callable[[int], None] | None = None,
               workers: int = 1, mapper: Mapper | None = None) -> TwinsRun:
    """Fit the population model, then write it and ``n_twins`` twins into ``folder``."""
    model, real = fit_population(dataset, settings)
    log(f"population model: {len(model.numeric)} numeric columns, discrete "
        f"{model.discrete_names}, {model.n_strata} strata ({100 * model.pooled_share:.1f}% of "
        f"rows in small strata), fitted on {model.n_fit_rows:,} rows")
    started = time.perf_counter()
    (folder / MODEL_FILE).write_bytes(pickle.dumps(model))  # our own model object, not input
    fidelity = FidelityAccumulator(real, model.numeric, model.discrete_names,
                                   ks_rows=settings.ks_rows)

    def on_chunk(chunk) -> None:
        fidelity.update(chunk)
        if on_rows is not None:
            on_rows(len(chunk))

    written = write_twins(model, settings.n_twins, folder / TWINS_FILE,
                          chunk_rows=settings.chunk_rows, seed=settings.seed, on_chunk=on_chunk,
                          workers=workers, mapper=mapper)
    return TwinsRun(model=model, settings=settings, written=written,
                    seconds=time.perf_counter() - started, report=fidelity.report())
