"""Compile every numba kernel once: ``python -m e2i_pipelines.analytics.warm_kernels``.

The image runs this at build time as its runtime user, so numba's on-disk cache
(``cache=True``, under ``NUMBA_CACHE_DIR``) holds the kernels and a run container starts
computing instead of compiling. Cache entries are per CPU model: on another CPU a container
compiles once more (seconds) and still runs. ``--json`` prints each kernel's cache hits and
misses (a warm cache shows misses 0).
"""

from __future__ import annotations

import argparse
import json
import time

import lightgbm as lgb
import numpy as np
import pandas as pd

from e2i_pipelines.analytics.explain import interventional, tree_scorer
from e2i_pipelines.analytics.explain import kernels as treeshap_kernels
from e2i_pipelines.analytics.explain.treeshap import TreeShapExplainer
from e2i_pipelines.analytics.panel import cs_cells
from e2i_pipelines.analytics.panel import data as panel_data
from e2i_pipelines.analytics.panel.callaway_santanna import att_gt
from e2i_pipelines.analytics.twins.uplift import TreeUplift
from e2i_pipelines.core.spec import spec_from_mapping

KERNELS = {
    "build_tables": treeshap_kernels.build_tables,
    "background_patterns": interventional.background_patterns,
    "interventional_tables": interventional.interventional_tables,
    "shap_kernel": treeshap_kernels.shap_kernel,
    "score_kernel": tree_scorer._score_kernel,
    "binned_kernel": tree_scorer._binned_kernel,
    "wide_kernel": tree_scorer._wide_kernel,
    "and_right_masks": tree_scorer._and_right_masks,
    "panel_adoption": panel_data._adoption_kernel,
    "panel_presence": panel_data._presence_kernel,
    "panel_codes": panel_data._codes_kernel,
    "panel_in_order": panel_data._in_order,
    "panel_nan": panel_data._nan_kernel,
    "panel_binary": panel_data._binary_kernel,
    "cs_weighted_sums": cs_cells._weighted_sums_kernel,
    "cs_influence": cs_cells._influence_kernel,
}


def _tiny_model() -> tuple[lgb.Booster, pd.DataFrame]:
    """A small model with every split kind the kernels handle (NaN, categorical, treatment)."""
    rng = np.random.default_rng(0)
    n = 2_000
    frame = pd.DataFrame({"treatment": (rng.random(n) < 0.5).astype(np.int8),
                          "x": rng.normal(size=n),
                          "segment": pd.Categorical(rng.choice(list("abc"), n))})
    frame.loc[rng.random(n) < 0.1, "x"] = np.nan
    y = frame["x"].fillna(0) + frame["treatment"] * (1 + frame["segment"].cat.codes)
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 7,
                         "num_threads": 1, "min_data_per_group": 5},
                        lgb.Dataset(frame, y), num_boost_round=5)
    return booster, frame


def _warm_panel() -> None:
    """Callaway-Sant'Anna on a tiny staggered panel: load_panel's and the cells' kernels."""
    rng = np.random.default_rng(0)
    unit, time = np.repeat(np.arange(60), 5), np.tile(np.arange(5), 60)
    first = np.array([2, 3, 99])[np.arange(60) % 3][unit]
    frame = pd.DataFrame({"unit": unit, "time": time, "d": (time >= first).astype(np.int64),
                          "x": rng.normal(size=60)[unit], "y": rng.normal(size=unit.size)})
    spec = spec_from_mapping({"design": "panel", "unit": "unit", "time": "time",
                              "treatment": "d", "outcome": "y", "covariates": ["x"]})
    att_gt(panel_data.load_panel(frame, spec), "dr")
    att_gt(panel_data.load_panel(frame.iloc[::-1], spec), "dr")  # rows out of order


def warm() -> dict[str, dict[str, int]]:
    """Run each kernel on a tiny model; returns its cache hits/misses per kernel."""
    booster, frame = _tiny_model()
    explainer = TreeShapExplainer(booster, "fast", n_threads=1)
    explainer.raw_score(frame)
    explainer.shap_values(frame)
    TreeShapExplainer(booster, "fast", n_threads=1, feature_perturbation="interventional",
                      background=frame.iloc[:50]).shap_values(frame.iloc[:50])
    uplift = TreeUplift(booster, "treatment", n_threads=1)
    uplift.uplift(frame)  # wide tables; below per-tree tables, then the walk
    for budget in ({"wide_bytes": 0}, {"table_bytes": 1}):
        tree_scorer.QuickScorer(uplift.flat, uplift.roots, pinned_feature=uplift.t_col,
                                **budget).difference(uplift.matrix(frame), 1.0, 0.0)
    _warm_panel()
    return {name: {"hits": sum(k.stats.cache_hits.values()),
                   "misses": sum(k.stats.cache_misses.values())}
            for name, k in KERNELS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print cache hits/misses as JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    stats = warm()
    if args.json:
        print(json.dumps(stats))
    else:
        print(f"numba kernels ready in {time.perf_counter() - started:.1f} s: {stats}")


if __name__ == "__main__":
    main()
