"""The ``causal_refutations`` analysis: rebuild the saved fit, run the selected refuters, and
what is written for them (refutations.json, one plot per refuter and a combined one)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from e2i_pipelines.analytics.causal.estimate import (
    estimate_fit,
    estimate_frame,
    fit_dowhy,
    fit_effect,
)
from e2i_pipelines.analytics.causal.refute_plots import panel_figure, refutation_figure
from e2i_pipelines.analytics.causal.refuters import (
    RefutationResult,
    refuter_units,
    run_refuters,
)
from e2i_pipelines.core.outputs import Outputs, Plot
from e2i_pipelines.core.progress import Progress
from e2i_pipelines.core.refs import CausalEstimateRef


@dataclass
class RefutationRun:
    """The refuters' results (skipped ones included) for one estimate."""

    ref: CausalEstimateRef
    results: list[RefutationResult]
    num_simulations: int
    n_rows: int

    @property
    def evaluated(self) -> list[RefutationResult]:
        return [r for r in self.results if not r.skipped]

    def outputs(self) -> Outputs:
        evaluated = self.evaluated
        files: dict[str, Any] = {}
        if evaluated:
            files["refutations.png"] = Plot(refutation_figure(evaluated), "refutations")
        files.update({f"{r.name}.png": Plot(panel_figure(r), r.name, dpi=80) for r in evaluated})
        files["refutations.json"] = json.dumps(
            [{**r.metadata(), "name": r.name, "passed": r.passed} for r in self.results],
            indent=2)
        metrics: dict[str, float] = {}
        for r in evaluated:
            metrics.update({f"{r.name}_new_effect": r.new_effect,
                            f"{r.name}_passed": float(r.passed),
                            **({f"{r.name}_p_value": r.p_value}
                               if r.p_value is not None else {})})
        return Outputs(files=files, metrics=metrics,
                       params={"method": self.ref.method,
                               "num_simulations": self.num_simulations, "n_rows": self.n_rows},
                       tags={"estimate_mlflow_run_id": self.ref.mlflow_run_id or ""})


def refute_estimate(ref: CausalEstimateRef, selected: tuple[str, ...], n_jobs: int,
                    log: Any) -> RefutationRun:
    """Run the ``selected`` refuters on the saved estimate with ``n_jobs`` workers; ``log`` is
    a logger (progress and skipped refuters are reported on it)."""
    settings = replace(ref.settings, n_jobs=n_jobs)  # this step's CPU budget
    estimator = replace(ref.estimator, n_jobs=n_jobs)
    frame = estimate_frame(ref)
    fit = estimate_fit(ref)
    dowhy_fit = fit_dowhy(frame) if ref.method == "linear_regression" else None

    def refit(changed) -> float:
        return float(fit_effect(changed, ref.method, estimator)[0].estimate)

    total = sum(refuter_units(n, ref.method, settings, frame.randomised) for n in selected)
    progress = Progress(log, total=max(total, 1), label="refutation simulations",
                        unit="simulations")
    log.info(f"refuting the {ref.method} estimate {ref.result.estimate:.4f} with "
             f"{list(selected)} x {settings.num_simulations} simulations "
             f"over {len(frame.data):,} rows")
    results = run_refuters(frame, fit, dowhy_fit, settings, progress.advance, only=selected,
                           refit=refit)
    for res in results:
        if res.skipped:
            log.warning(f"check {res.name} {res.skipped}")
    return RefutationRun(ref=ref, results=results, num_simulations=settings.num_simulations,
                         n_rows=len(frame.data))
