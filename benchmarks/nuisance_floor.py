"""The training floor of one cross-fitted LightGBM fit: what `aipw` and `dml` cannot go below.

A measurement, not a comparison (so no RATIO line): on ``bench_estimators``' data, one fold's
nuisance models are trained once each, on one thread, with our nuisance parameters
(``lgb_params``: 100 trees, 31 leaves, 255 bins, row-wise histograms) on the fold's training
rows, already binned (the fast path: no binning inside the timer, no prediction):

* aipw: the propensity on all training rows (binary) + one outcome model per arm (regression);
* dml: E[y | x] (regression) + E[T | x] (binary), both on all training rows.

A fit trains ``folds`` such sets, so its training CPU is ``folds`` x the sum, and on ``cores``
perfectly parallel cores its wall time is at least that CPU / ``cores``. The numbers printed are
that floor per estimate and per "all refuters" run (1 estimate + 5 random-common-cause refits +
3 unobserved-confounder refits, of which 2 reuse the propensity: ``bench_refute --ml``'s refits).

    python benchmarks/nuisance_floor.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_estimators import COLS, _cpu, make_frame  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import lightgbm as lgb

    from e2i_pipelines.analytics.causal.nuisance import Binned, bin_frame, lgb_params

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()}; {args.rows:,} rows x {len(COLS)} covariates, "
          f"{args.folds} folds, {args.trees} trees, one thread per model", flush=True)

    df = make_frame(args.rows)
    n_train = args.rows - args.rows // args.folds
    covariates = df[COLS].astype(np.float64)
    t = df["treated"].to_numpy(np.float64)
    y = df["y"].to_numpy(np.float64)
    params = lgb_params(args.trees, 1, 0)
    # the estimators' own path: every row binned once, each model on a labelled fold subset
    bins = Binned(bin_frame(covariates, params), list(COLS), params)

    def train(label: np.ndarray, objective: str, rows: np.ndarray) -> float:
        part = bins.labelled(rows, label[rows])
        started = _cpu()
        lgb.train({**params, "objective": objective}, part)
        return _cpu() - started

    train_rows = np.arange(n_train)
    treated, control = train_rows[t[:n_train] == 1], train_rows[t[:n_train] == 0]
    seconds = {
        "propensity (binary, all training rows)": train(t, "binary", train_rows),
        f"outcome, treated arm ({treated.size:,} rows)": train(y, "regression", treated),
        f"outcome, control arm ({control.size:,} rows)": train(y, "regression", control),
        "E[y | x] (regression, all training rows)": train(y, "regression", train_rows),
    }
    for name, cpu in seconds.items():
        print(f"  {name}: {cpu:.2f} CPU s ({n_train:,} training rows per fold)")
    propensity, treated_s, control_s, outcome = seconds.values()
    per_fold = {"aipw": propensity + treated_s + control_s, "dml": outcome + propensity}
    for method, fold_cpu in per_fold.items():
        fit = args.folds * fold_cpu
        # the estimate, 5 + 3 refits, less the 2 propensity sets the unobserved refits reuse
        refits = 9 * fit - 2 * args.folds * propensity
        print(f"FLOOR method={method} rows={args.rows} fit_cpu_s={fit:.1f} "
              f"fit_wall_s_at_{args.cores}_cores={fit / args.cores:.1f} "
              f"with_refuters_wall_s={refits / args.cores:.1f}")


if __name__ == "__main__":
    main()
