"""Twins side by side: our stratified copula vs SDV's GaussianCopulaSynthesizer, same data.

One run: E2I data (``--fit-rows`` real rows: covariates + treatment, the outcome kept for
the utility and causal checks), each generator fitted on the same rows and asked for
``--twins`` rows; then every side is scored the same way:

* SDMetrics ``QualityReport`` (Column Shapes, Column Pair Trends, overall score) against the
  real rows;
* our six fidelity checks (:mod:`e2i_pipelines.analytics.twins.fidelity_checks`), on the
  same seeded subsample, each with its pass/fail.

Two deliberately broken sides are scored too (``--no-broken`` drops them): our twins with
every column shuffled on its own (marginals kept, dependence destroyed), and real rows copied
as "twins".

Fit and sample times are wall seconds in this process (sides run one after the other).

    pip install torch==2.13.0 (CPU wheel) && pip install -e '.[bench]'
    python benchmarks/bench_twins_sdv.py --fit-rows 50000 --twins 100000
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.twins import copula as tc
from e2i_pipelines.analytics.twins import sampling as ts
from e2i_pipelines.analytics.twins.fidelity_checks import CHECKS, Rules, run_checks
from e2i_pipelines.data.synthetic import SPEC, generate_e2i

COLUMNS = [*SPEC.covariates, SPEC.treatment]


def _sdtypes(real: pd.DataFrame, discrete: list[str]) -> dict[str, dict[str, str]]:
    return {c: {"sdtype": "categorical" if c in discrete else "numerical"} for c in COLUMNS}


def ours(real: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, float, float]:
    t0 = time.perf_counter()
    model = tc.fit_copula(real[COLUMNS], COLUMNS, priority=[SPEC.treatment], seed=seed)
    t1 = time.perf_counter()
    twins = ts.sample(model, n, seed).drop(columns=tc.TWIN_ID)
    return twins, t1 - t0, time.perf_counter() - t1


def sdv_copula(real: pd.DataFrame, n: int, seed: int,
               discrete: list[str]) -> tuple[pd.DataFrame, float, float]:
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    metadata = Metadata.load_from_dict({"METADATA_SPEC_VERSION": "V1", "tables": {
        "twins": {"columns": _sdtypes(real, discrete)}}})
    np.random.seed(seed)
    t0 = time.perf_counter()
    synth = GaussianCopulaSynthesizer(metadata)
    synth.fit({"twins": real[COLUMNS]})  # this SDV takes {table name: frame}
    t1 = time.perf_counter()
    twins = synth.sample(n)
    twins = twins["twins"] if isinstance(twins, dict) else twins
    for c in discrete:  # the same dtypes as the real columns
        twins[c] = twins[c].astype(real[c].dtype)
    return twins, t1 - t0, time.perf_counter() - t1


def shuffled(made: tuple[pd.DataFrame, float, float],
             seed: int) -> tuple[pd.DataFrame, float, float]:
    """Every column permuted on its own."""
    twins, fit_s, sample_s = made
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({c: twins[c].to_numpy()[rng.permutation(len(twins))] for c in twins})
    return out, fit_s, sample_s


def quality(real: pd.DataFrame, twins: pd.DataFrame, discrete: list[str]) -> dict[str, float]:
    from sdmetrics.reports.single_table import QualityReport

    report = QualityReport()
    report.generate(real[COLUMNS], twins[COLUMNS], {"columns": _sdtypes(real, discrete)},
                    verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    return {"quality": float(report.get_score()), "shapes": float(props["Column Shapes"]),
            "pairs": float(props["Column Pair Trends"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-rows", type=int, default=50_000)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-broken", action="store_true", help="skip the broken sides")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    real, truth = generate_e2i(args.fit_rows, seed=args.seed)
    probe = tc.fit_copula(real[COLUMNS].iloc[:5_000], COLUMNS, priority=[SPEC.treatment])
    numeric, discrete = probe.numeric, probe.discrete_names
    print(f"# E2I data: {args.fit_rows:,} real rows x {len(COLUMNS)} columns, {args.twins:,} "
          f"twins per side; true ATE {truth['ate']:.3f}; cpus={os.cpu_count()}; "
          f"load {os.getloadavg()[0]:.1f}")
    rows = {}
    sides = [("ours (stratified copula)", lambda: ours(real, args.twins, args.seed)),
             ("SDV GaussianCopulaSynthesizer",
              lambda: sdv_copula(real, args.twins, args.seed, discrete))]
    if not args.no_broken:
        sides += [("broken: ours, columns shuffled", lambda: shuffled(ours(real, args.twins,
                                                                          args.seed), args.seed)),
                  ("broken: copied real rows", lambda: (real[COLUMNS].sample(
                      args.twins, replace=args.twins > len(real), random_state=args.seed)
                      .reset_index(drop=True), 0.0, 0.0))]
    for name, make in sides:
        twins, fit_s, sample_s = make()
        t0 = time.perf_counter()
        q = quality(real, twins, discrete)
        q_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        checks = run_checks(real.sample(frac=1.0, random_state=args.seed).reset_index(drop=True),
                            twins, numeric=numeric, discrete=discrete,
                            treatment=SPEC.treatment, outcome=SPEC.outcome,
                            real_chunks=[real[COLUMNS]], rules=Rules(), seed=args.seed,
                            n_jobs=os.cpu_count() or 1)
        rows[name] = (fit_s, sample_s, q, q_s, {c.name: c for c in checks},
                      time.perf_counter() - t0)

    print("\n| side | fit s | sample s | SDMetrics quality | column shapes | column pair trends "
          "| report s | our checks s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (fit_s, sample_s, q, q_s, _, c_s) in rows.items():
        print(f"| {name} | {fit_s:.1f} | {sample_s:.1f} | {q['quality']:.4f} | "
              f"{q['shapes']:.4f} | {q['pairs']:.4f} | {q_s:.1f} | {c_s:.1f} |")
    key = {"column_shapes": "min_score", "column_pair_trends": "min_score", "detection": "auc",
           "ml_utility": "tstr_over_trtr", "privacy": "dcr_ratio",
           "causal_fidelity": "att_abs_diff"}
    print("\n| check (number) | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for check in CHECKS:
        cells = []
        for _, (*_, checks, _) in rows.items():
            c = checks[check]
            cells.append(f"{c.numbers[key[check]]:.4f} {'pass' if c.passed else 'FAIL'}")
        print(f"| {check} ({key[check]}) | " + " | ".join(cells) + " |")
    for name, (*_, checks, _) in rows.items():
        c = checks["causal_fidelity"].numbers
        print(f"# {name}: ATE data {c['data_ate']:.3f} twins {c['twins_ate']:.3f} "
              f"(allowed diff {c['ate_allowed_diff']:.3f}); ATT data {c['data_att']:.3f} twins "
              f"{c['twins_att']:.3f} (allowed {c['att_allowed_diff']:.3f})")


if __name__ == "__main__":
    main()
