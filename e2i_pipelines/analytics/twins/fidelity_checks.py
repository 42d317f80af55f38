"""The six fidelity checks of digital twins, their pass rules, numbers and figures.

Every check compares a seeded subsample of real rows with a subsample of twins (the twin row
order is exchangeable, so the first twins are a random sample). Pass rules (:class:`Rules`):

* ``column_shapes``: every column's KSComplement / TVComplement >= 0.95 (KS or TV distance
  <= 0.05; sampling noise at 100k rows is ~0.006).
* ``column_pair_trends``: every pair's CorrelationSimilarity / ContingencySimilarity >= 0.90
  (|r real - r twins| <= 0.2, or joint-table TV distance <= 0.1).
* ``detection``: cross-validated real-vs-twin ROC AUC <= 0.60 passes; up to 0.70 fails as a
  warning, above as an error.
* ``ml_utility``: TSTR R² >= 0.9 x TRTR R² (a model learnt on twins keeps 90% of the
  real-data model's explained variance on real rows).
* ``privacy``: exact copies of real rows <= 0.1% of twins (plus the real data's own
  duplicate rate), and median twin DCR >= 0.8 x the median real-holdout DCR.
* ``causal_fidelity``: the twins' simulated ATE and ATT (g-computation over twins) are each
  inside the data's 95% CI, centred on the same g-computation over real rows, with the
  standard error of the data's doubly robust estimate, widened by the twins' own sampling
  error: |twins - data| <= 1.96 sqrt(se_data² + se_twins²).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.twins import privacy, quality
from e2i_pipelines.analytics.twins.detection import detection_auc
from e2i_pipelines.analytics.twins.interventions import Z95
from e2i_pipelines.analytics.twins.utility import utility_and_effects
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.outputs import Outputs, Plot

LGB_THREADS = 1
"""LightGBM threads: on these subsample sizes one thread is fastest, and OpenMP threads slow
it down badly on a busy machine (detection, 20k rows per side: 1.2 s on 1 thread, 8.3 s on 2
at load 5)."""
CHECKS = ("column_shapes", "column_pair_trends", "detection", "ml_utility", "privacy",
          "causal_fidelity")


@dataclass(frozen=True)
class Rules:
    """Pass thresholds (see the module docstring) and subsample sizes."""

    min_shape_score: float = 0.95
    min_pair_score: float = 0.90
    max_detection_auc: float = 0.60
    warn_detection_auc: float = 0.70
    min_tstr_ratio: float = 0.90
    max_copy_share: float = 0.001
    min_dcr_ratio: float = 0.80
    sample_rows: int = 100_000
    detection_rows: int = 20_000
    dcr_rows: int = 10_000
    pair_bins: int = 10


@dataclass
class CheckOutcome:
    """One check: pass/fail, error-level or not, numbers for metadata, an optional figure."""

    name: str
    passed: bool
    rule: str
    numbers: dict[str, Any]
    error: bool = False  # a failure that is worse than a warning
    figure: Callable[[], Any] | None = field(default=None, repr=False)


def _shapes(real, twins, numeric, discrete, rules: Rules) -> CheckOutcome:
    from e2i_pipelines.analytics.twins.fidelity_plots import shapes_figure

    scores = quality.column_shapes(real, twins, numeric, discrete)
    worst = min(scores, key=lambda c: scores[c]["score"])
    values = {c: round(v["score"], 5) for c, v in scores.items()}
    return CheckOutcome(
        "column_shapes", scores[worst]["score"] >= rules.min_shape_score,
        f"every column's KS/TV complement >= {rules.min_shape_score}",
        {"score": float(np.mean([v["score"] for v in scores.values()])),
         "min_score": scores[worst]["score"], "worst_column": worst, "column_scores": values},
        figure=lambda: shapes_figure(values, rules.min_shape_score))


def _pairs(real, twins, numeric, discrete, rules: Rules) -> CheckOutcome:
    from e2i_pipelines.analytics.twins.fidelity_plots import pairs_figure

    rows = quality.pair_trends(real, twins, numeric, discrete, rules.pair_bins)
    worst = min(rows, key=lambda r: r["score"]) if rows else {"score": 1.0, "columns": []}
    return CheckOutcome(
        "column_pair_trends", worst["score"] >= rules.min_pair_score,
        f"every pair's correlation/contingency similarity >= {rules.min_pair_score}",
        {"score": float(np.mean([r["score"] for r in rows])) if rows else 1.0,
         "min_score": worst["score"], "worst_pair": ", ".join(worst["columns"]),
         "pairs": len(rows)},
        figure=lambda: pairs_figure(rows, [*numeric, *discrete], rules.min_pair_score))


def _detection(real, twins, columns, discrete, rules: Rules, seed) -> CheckOutcome:
    from e2i_pipelines.analytics.twins.fidelity_plots import detection_figure

    n = rules.detection_rows
    res = detection_auc(real.iloc[:n], twins.iloc[:n], columns, discrete, seed=seed,
                        n_threads=LGB_THREADS)
    auc = res["auc"]
    return CheckOutcome(
        "detection", auc <= rules.max_detection_auc,
        f"cross-validated AUC <= {rules.max_detection_auc} (warning up to "
        f"{rules.warn_detection_auc}, error above)",
        {"auc": auc, "fold_auc": res["fold_auc"], "rows_per_side": res["rows_per_side"],
         "folds": res["folds"]},
        error=auc > rules.warn_detection_auc,
        figure=lambda: detection_figure(res["labels"], res["scores"], auc))


def _utility(res: dict, rules: Rules) -> CheckOutcome:
    from e2i_pipelines.analytics.twins.fidelity_plots import utility_figure

    trtr, tstr = res["trtr_r2"], res["tstr_r2"]
    ratio = tstr / trtr if trtr > 0 else float("nan")
    return CheckOutcome(
        "ml_utility", bool(trtr <= 0 or tstr >= rules.min_tstr_ratio * trtr),
        f"TSTR R² >= {rules.min_tstr_ratio} x TRTR R² (outcome model, real test rows)",
        {"tstr_r2": tstr, "trtr_r2": trtr, "tstr_over_trtr": ratio,
         "train_rows": res["train_rows"], "test_rows": res["test_rows"]},
        figure=lambda: utility_figure(res))


def _effect_ok(data: dict, twin: dict) -> tuple[bool, float]:
    half = Z95 * float(np.hypot(data["se"], twin["se"]))
    return bool(abs(twin["mean"] - data["mean"]) <= half), half


def _causal(res: dict, rules: Rules) -> CheckOutcome:
    from e2i_pipelines.analytics.twins.fidelity_plots import causal_figure

    numbers: dict[str, Any] = {}
    ok = True
    for est in ("ate", "att"):
        data, twin = res["real"][est], res["twins"][est]
        good, half = _effect_ok(data, twin)
        ok &= good
        numbers.update({f"data_{est}": data["mean"], f"data_{est}_se": data["se"],
                        f"data_{est}_doubly_robust": data["dr"],
                        f"data_{est}_ci_low": data["mean"] - Z95 * data["se"],
                        f"data_{est}_ci_high": data["mean"] + Z95 * data["se"],
                        f"twins_{est}": twin["mean"], f"twins_{est}_se": twin["se"],
                        f"{est}_abs_diff": abs(twin["mean"] - data["mean"]),
                        f"{est}_allowed_diff": half})
    return CheckOutcome(
        "causal_fidelity", ok,
        "twins ATE and ATT inside the data's 95% CI (g-computation on real rows, doubly robust "
        "standard error), widened by the twins' sampling error",
        numbers, figure=lambda: causal_figure(numbers))


def _privacy(real, twins, numeric, discrete, columns, real_chunks, rules: Rules, seed,
             n_jobs) -> CheckOutcome:
    from e2i_pipelines.analytics.twins.fidelity_plots import privacy_figure

    n = rules.dcr_rows
    res = privacy.dcr(real.iloc[:n], twins.iloc[: n // 2], numeric, discrete, seed=seed,
                      n_jobs=n_jobs)
    copies = privacy.exact_copies(twins, real_chunks, columns)
    baseline = float(np.mean(res["dcr_holdout"] == 0.0))
    ratio = (res["median_dcr_twins"] / res["median_dcr_holdout"]
             if res["median_dcr_holdout"] > 0 else float("inf"))
    passed = (copies["exact_copy_share"] <= rules.max_copy_share + baseline
              and ratio >= rules.min_dcr_ratio)
    numbers = {**{k: v for k, v in res.items() if not k.startswith("dcr_")}, **copies,
               "real_duplicate_share": baseline, "dcr_ratio": ratio}
    return CheckOutcome(
        "privacy", bool(passed),
        f"exact copies <= {100 * rules.max_copy_share:g}% of twins (+ the real data's duplicate "
        f"rate) and median twin DCR >= {rules.min_dcr_ratio} x median real-holdout DCR",
        numbers, figure=lambda: privacy_figure(res, copies))


def run_checks(real: pd.DataFrame, twins: pd.DataFrame, *, numeric: list[str],
               discrete: list[str], treatment: str, outcome: str,
               real_chunks: Iterable[pd.DataFrame], rules: Rules = Rules(), seed: int = 0,
               n_jobs: int = 1, only: Iterable[str] = CHECKS,
               on_check: Callable[[str], None] | None = None) -> list[CheckOutcome]:
    """The selected checks of ``twins`` against ``real`` (which also holds ``outcome``).

    ``real_chunks`` streams every real row (modelled columns) for the exact-copy count.
    """
    columns = [*numeric, *discrete]
    missing = [c for c in columns if c not in real.columns or c not in twins.columns]
    if missing:
        raise ValueError(f"columns {missing} are missing from the real rows or the twins")
    only = [c for c in CHECKS if c in set(only)]
    out: list[CheckOutcome] = []
    effects = None
    for name in only:
        if name == "column_shapes":
            out.append(_shapes(real, twins, numeric, discrete, rules))
        elif name == "column_pair_trends":
            out.append(_pairs(real, twins, numeric, discrete, rules))
        elif name == "detection":
            out.append(_detection(real, twins, columns, discrete, rules, seed))
        elif name in ("ml_utility", "causal_fidelity"):
            if effects is None:
                effects = utility_and_effects(real, twins, columns, discrete, treatment,
                                              outcome, seed=seed, n_threads=LGB_THREADS)
            out.append(_utility(effects, rules) if name == "ml_utility"
                       else _causal(effects, rules))
        elif name == "privacy":
            out.append(_privacy(real, twins, numeric, discrete, columns, real_chunks, rules,
                                seed, n_jobs))
        if on_check is not None:
            on_check(name)
    return out


def fidelity_outputs(outcomes: list[CheckOutcome]) -> Outputs:
    """fidelity_checks.json, one plot per check (``<name>.png``) and the finite numbers as
    MLflow metrics."""
    files: dict[str, Any] = {f"{o.name}.png": Plot(o.figure(), o.name, dpi=80)
                             for o in outcomes if o.figure is not None}
    files["fidelity_checks.json"] = json.dumps(
        [{"name": o.name, "passed": o.passed, "rule": o.rule, **o.numbers} for o in outcomes],
        indent=1, default=json_default)
    metrics = {f"{o.name}_{k}": float(v) for o in outcomes
               for k, v in {"passed": o.passed, **o.numbers}.items()
               if isinstance(v, (int, float, bool, np.number)) and np.isfinite(v)}
    return Outputs(files=files, metrics=metrics)
