"""Intervention simulation on digital twins: treat-all, treat-none and a targeting rule.

For every twin the outcome model gives the individual uplift d = f(x, 1) - f(x, 0). Policy
values relative to treat-none are population means of ``policy(x) * d``: treat-all is the
ATE, the targeting rule treats the rows it selects, the status quo treats the twins whose
sampled treatment is 1. Means and CLT standard errors come from streaming sums over chunks,
so they are exact over all twins. The intervals are Monte-Carlo intervals of the simulated
population given the fitted models (they do not include outcome-model uncertainty).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.twins.targeting import (
    UPLIFT_SCORE,
    TargetingError,
    TargetingRule,
    check_columns,
    evaluate,
)
from e2i_pipelines.core.budget import single_threaded_blas
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.outputs import Outputs, Plot

Z95 = 1.959963984540054


def validate_rule(rule: TargetingRule, sample: pd.DataFrame) -> None:
    """Check the rule's columns and value types against a few twins, then evaluate it there."""
    columns = list(sample.columns)
    if rule.tree is not None:
        check_columns(rule.tree, sample.dtypes.to_dict())
        evaluate(rule.tree, sample)
    elif rule.score_column != UPLIFT_SCORE:
        if rule.score_column not in columns:
            raise TargetingError(f"score_column {rule.score_column!r} is not a twin column; "
                                 f"twin columns: {columns} (or {UPLIFT_SCORE!r})")
        if not pd.api.types.is_numeric_dtype(sample[rule.score_column]):
            raise TargetingError(f"score_column {rule.score_column!r} must be numeric")


def top_share_threshold(rule: TargetingRule, pilot: pd.DataFrame, uplift: np.ndarray) -> float:
    """Score cut-off of a top-share rule, from a pilot chunk (exchangeable twins)."""
    score = uplift if rule.needs_uplift() else pilot[rule.score_column].to_numpy(np.float64)
    q = 1.0 - rule.top_share if rule.descending else rule.top_share
    return float(np.quantile(score, q))


def target_mask(rule: TargetingRule, chunk: pd.DataFrame, uplift: np.ndarray,
                threshold: float | None) -> np.ndarray:
    """Boolean array: which twins of ``chunk`` the rule treats."""
    if rule.tree is not None:
        return evaluate(rule.tree, chunk)
    if threshold is None:
        raise TargetingError("a top_share rule needs its threshold (from a pilot chunk)")
    score = uplift if rule.needs_uplift() else chunk[rule.score_column].to_numpy(np.float64)
    return score >= threshold if rule.descending else score <= threshold


@dataclass
class _Moments:
    n: int = 0
    s1: float = 0.0
    s2: float = 0.0

    def add(self, x: np.ndarray, n: int | None = None) -> None:
        """Add the values ``x``; ``n`` rows when the others of the chunk count as zeros."""
        self.n += len(x) if n is None else n
        self.s1 += float(x.sum())
        self.s2 += float(np.dot(x, x))

    def summary(self) -> dict[str, float]:
        mean = self.s1 / self.n
        var = max(self.s2 / self.n - mean * mean, 0.0) * self.n / max(self.n - 1, 1)
        se = float(np.sqrt(var / self.n))
        return {"mean": mean, "se": se, "ci_low": mean - Z95 * se, "ci_high": mean + Z95 * se}


@dataclass
class PolicyAccumulator:
    """Per-twin uplift sums for each policy; keeps the first ``keep_rows`` uplifts for plots."""

    keep_rows: int = 200_000
    _all: _Moments = field(default_factory=_Moments)
    _targeted: _Moments = field(default_factory=_Moments)
    _status_quo: _Moments = field(default_factory=_Moments)
    _n_targeted: int = 0
    _n_status_quo: int = 0
    _targeted_sum: float = 0.0
    _kept: list[np.ndarray] = field(default_factory=list)
    _kept_n: int = 0

    def update(self, uplift: np.ndarray, targeted: np.ndarray, observed: np.ndarray) -> None:
        """``uplift`` d per twin; ``targeted`` and ``observed`` (status quo) 0/1 per twin."""
        d = np.asarray(uplift, dtype=np.float64)
        m = np.asarray(targeted, dtype=bool)
        t = np.asarray(observed).astype(bool)
        d_targeted, d_status_quo = d[m], d[t]  # untreated rows add zeros to the sums
        self._all.add(d)
        self._targeted.add(d_targeted, len(d))
        self._status_quo.add(d_status_quo, len(d))
        self._n_targeted += len(d_targeted)
        self._n_status_quo += len(d_status_quo)
        self._targeted_sum += float(d_targeted.sum())
        if self._kept_n < self.keep_rows:
            part = d[: self.keep_rows - self._kept_n].copy()
            self._kept.append(part)
            self._kept_n += len(part)

    def kept_uplift(self) -> np.ndarray:
        return np.concatenate(self._kept) if self._kept else np.zeros(0)

    def report(self) -> dict[str, Any]:
        """ATE (treat-all vs none), targeted and status-quo uplift per capita, with 95% CIs."""
        if self._all.n == 0:
            raise ValueError("no twins were simulated")
        ate, tgt, sq = self._all.summary(), self._targeted.summary(), self._status_quo.summary()
        n = self._all.n
        return {
            "n_twins": n,
            "ate": ate["mean"], "ate_se": ate["se"],
            "ate_ci_low": ate["ci_low"], "ate_ci_high": ate["ci_high"],
            "uplift_treat_all": ate["mean"],
            "uplift_targeted": tgt["mean"], "uplift_targeted_se": tgt["se"],
            "uplift_targeted_ci_low": tgt["ci_low"], "uplift_targeted_ci_high": tgt["ci_high"],
            "treated_share_targeted": self._n_targeted / n,
            "uplift_per_treated_targeted": (self._targeted_sum / self._n_targeted
                                            if self._n_targeted else 0.0),
            "uplift_status_quo": sq["mean"], "uplift_status_quo_se": sq["se"],
            "uplift_status_quo_ci_low": sq["ci_low"], "uplift_status_quo_ci_high": sq["ci_high"],
            "treated_share_status_quo": self._n_status_quo / n,
            "uplift_treat_none": 0.0,
        }


def policy_figure(report: dict[str, Any], uplift_sample: np.ndarray, rule_text: str):
    """Bars of per-capita uplift vs treat-none with 95% CIs, and the individual uplifts."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = ["treat none", "treat all", "targeted", "status quo"]
    means = [0.0, report["ate"], report["uplift_targeted"], report["uplift_status_quo"]]
    lows = [0.0, report["ate_ci_low"], report["uplift_targeted_ci_low"],
            report["uplift_status_quo_ci_low"]]
    highs = [0.0, report["ate_ci_high"], report["uplift_targeted_ci_high"],
             report["uplift_status_quo_ci_high"]]
    err = np.array([[m - lo for m, lo in zip(means, lows, strict=True)],
                    [hi - m for m, hi in zip(means, highs, strict=True)]])
    ax1.bar(names, means, yerr=err, capsize=6, color=["grey", "tab:blue", "tab:green", "tab:orange"])
    ax1.set_ylabel("mean outcome uplift per twin vs treat none")
    ax1.set_title(f"Policies on {report['n_twins']:,} twins (95% CI)\ntargeted = {rule_text} "
                  f"({100 * report['treated_share_targeted']:.1f}% treated)", fontsize=9)
    if uplift_sample.size:
        ax2.hist(uplift_sample, bins=80, color="tab:blue", alpha=0.8)
        ax2.axvline(report["ate"], color="k", ls="--", label=f"ATE {report['ate']:.3f}")
        ax2.legend()
    ax2.set_xlabel("individual uplift f(x, 1) - f(x, 0)")
    ax2.set_title(f"Individual uplift (first {uplift_sample.size:,} twins)")
    fig.tight_layout()
    return fig


def prefetched(chunks: Iterator[pd.DataFrame],
               prepare: Callable[[pd.DataFrame], Any]) -> Iterator[tuple[pd.DataFrame, Any]]:
    """``(chunk, prepare(chunk))`` in order; the next chunk is read and prepared on a thread
    while the caller works on this one (Parquet reads and numpy release the GIL)."""
    def load() -> tuple[pd.DataFrame, Any] | None:
        chunk = next(chunks, None)
        return None if chunk is None else (chunk, prepare(chunk))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="e2i-read") as pool:
        pending = pool.submit(load)
        while (item := pending.result()) is not None:
            pending = pool.submit(load)
            yield item


def model_input(model: Any, chunk: pd.DataFrame) -> pd.DataFrame:
    """``model.model_frame(chunk)`` (categoricals coded by their string value as in training),
    remapping the codes of categorical columns instead of converting every value to str."""
    out = chunk[model.feature_names].copy()
    for col, levels in model.categories.items():
        values = out[col]
        if not isinstance(values.dtype, pd.CategoricalDtype):
            out[col] = pd.Categorical(values.astype(str), categories=levels)
            continue
        position = {str(level): k for k, level in enumerate(levels)}
        remap = np.array([position.get(str(c), -1) for c in values.cat.categories] + [-1])
        codes = remap[values.cat.codes.to_numpy()]  # code -1 (missing) picks the last slot
        out[col] = pd.Categorical.from_codes(codes, categories=levels)
    return out


@single_threaded_blas()
def simulate_policies(
    twins_path: str, model: Any, rule: TargetingRule, *, treatment_column: str,
    chunk_rows: int, n_threads: int = 1, check_rows: int = 2_000,
    on_chunk: Any = None, keep_rows: int = 200_000,
) -> tuple[dict[str, Any], np.ndarray]:
    """Stream the twins file through the outcome ``model`` (a ModelRef) under every policy.

    The fast uplift is checked against ``booster.predict`` on the first ``check_rows`` twins
    (max abs difference <= 1e-6) before the rest is computed. Returns (report, kept uplifts).
    """
    from e2i_pipelines.analytics.explain.model import UnsupportedModelError
    from e2i_pipelines.analytics.twins.twin_files import iter_parquet_chunks
    from e2i_pipelines.analytics.twins.uplift import TreeUplift, booster_uplift

    booster = model.load_booster()
    try:
        fast = TreeUplift(booster, model.treatment, n_threads=n_threads)
        prepare, uplift_of, method = fast.matrix, fast.uplift_matrix, "tree_uplift"
        trees_used = fast.trees_used
    except UnsupportedModelError:  # e.g. linear trees: LightGBM's own predict for both arms
        prepare, method = (lambda f: f), "booster"
        uplift_of = lambda f: booster_uplift(booster, f, model.treatment)  # noqa: E731
        trees_used = int(booster.num_trees())
    acc = PolicyAccumulator(keep_rows=keep_rows)
    threshold: float | None = None
    check_diff = float("nan")

    def load(chunk: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        frame = model_input(model, chunk)
        return frame, prepare(frame)

    for i, (chunk, (frame, prepared)) in enumerate(
            prefetched(iter_parquet_chunks(twins_path, chunk_rows), load)):
        uplift = uplift_of(prepared)
        if i == 0:
            head = frame.iloc[:check_rows]
            check_diff = float(np.abs(uplift[: len(head)]
                                      - booster_uplift(booster, head, model.treatment)).max())
            if not check_diff <= 1e-6:
                raise RuntimeError(f"fast uplift differs from booster.predict by {check_diff:g}")
            if rule.top_share is not None:
                threshold = top_share_threshold(rule, chunk, uplift)
        mask = target_mask(rule, chunk, uplift, threshold)
        acc.update(uplift, mask, chunk[treatment_column].to_numpy())
        if on_chunk is not None:
            on_chunk(len(chunk))
    report = acc.report()
    report.update({
        "targeting_rule": rule.describe(),
        "top_share_threshold": threshold,
        "uplift_check_max_abs_diff": check_diff,
        "uplift_method": method,
        "trees_used_for_uplift": trees_used,
        "trees_total": int(booster.num_trees()),
    })
    return report, acc.kept_uplift()


def intervention_outputs(report: dict[str, Any], kept: np.ndarray, rule_text: str,
                         params: dict[str, Any], model_run_id: str | None) -> Outputs:
    """interventions.json/.png, the report's numbers as metadata and MLflow metrics."""
    numbers = {k: v for k, v in report.items() if isinstance(v, int | float) and v is not None}
    return Outputs(
        files={"interventions.json": json.dumps(report, default=json_default, indent=1),
               "interventions.png": Plot(policy_figure(report, kept, rule_text),
                                         "simulated policies", key="plot")},
        metadata={**numbers, "targeting_rule": rule_text,
                  "uplift_method": report["uplift_method"],
                  "interval": "95% Monte-Carlo CI over twins (given the fitted models)"},
        params={"targeting_rule": rule_text, **params},
        metrics={k: float(v) for k, v in numbers.items()},
        tags={"outcome_model_run": model_run_id or ""},
        artifacts=["interventions.png", "interventions.json"])
