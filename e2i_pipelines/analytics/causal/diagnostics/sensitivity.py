"""Sensitivity to an unobserved confounder Z (:func:`sensitivity`, :func:`sensitivity_contour_plot`)
    Closed-form omitted-variable-bias analysis of Cinelli & Hazlett (2020), "Making sense of
    sensitivity: extending omitted variable bias", JRSS-B 82(1); numerically identical to the
    ``sensemakr`` package (``Sensemakr(model, treatment, benchmark_covariates, kd, q, alpha)``
    with reduce=True). From the OLS fits ``y ~ 1 + t + X`` (residual dof = n - p - 2) and
    ``t ~ 1 + X`` (dof_t = n - p - 1), computed from their Gram matrix:

    * ``estimate``, ``se``, ``t_value``: coefficient of t, its classical standard error, ratio.
    * ``partial_r2_yd`` = t_value^2 / (t_value^2 + dof): partial R2 of t with y given X.
    * ``rv_q``: robustness value; a confounder explaining rv_q of the residual variance of
      both t and y brings the estimate to (1 - q) x estimate. With f_q = q |t_value| / sqrt(dof):
      rv_q = (sqrt(f_q^4 + 4 f_q^2) - f_q^2) / 2.
    * ``rv_qa``: the same for the (1 - alpha) confidence interval to reach (1 - q) x estimate.
      With f_crit = |t_{alpha/2, dof-1}| / sqrt(dof - 1) and f = f_q - f_crit:
      rv_qa = 0 if f < 0 (already not significant); (f_q^2 - f_crit^2) / (1 + f_q^2) if
      f_q > 1 / f_crit; else (sqrt(f^4 + 4 f^2) - f^2) / 2.
    * Benchmarks: for each column X_j, r2dxj_x = partial R2 of X_j with t given the other X
      (t-statistic of X_j in ``t ~ 1 + X``, dof_t) and r2yxj_dx = partial R2 of X_j with y
      given t and the other X (t-statistic in ``y ~ 1 + t + X``, dof). A confounder k times
      as strong as X_j (kd = ky = k) has at most (sensemakr ``ovb_partial_r2_bound``)::

          r2dz_x  = k r2dxj_x / (1 - r2dxj_x)
          r2zxj   = k r2dxj_x^2 / ((1 - k r2dxj_x)(1 - r2dxj_x))
          r2yz_dx = min(1, ((sqrt(k) + sqrt(r2zxj)) / sqrt(1 - r2zxj))^2 r2yxj_dx / (1 - r2yxj_dx))

      (``feasible`` False, and NaN values, if r2dz_x >= 1 or r2zxj >= 1: no such confounder
      can exist.) It implies bias = sqrt(r2yz_dx r2dz_x / (1 - r2dz_x)) se sqrt(dof),
      adjusted_estimate = sign(estimate) (|estimate| - bias),
      adjusted_se = sqrt((1 - r2yz_dx) / (1 - r2dz_x)) se sqrt(dof / (dof - 1)),
      adjusted_t = (adjusted_estimate - (1 - q) estimate) / adjusted_se and the CI
      adjusted_estimate -+ |t_{alpha/2, dof}| adjusted_se.
    * ``strongest``: the covariate whose k = 1 bound gives the largest bias (an infeasible
      k = 1 bound counts as infinite bias).

    Pass rule: the (1 - alpha) CI of the estimate adjusted for a confounder as strong as
    ``strongest`` (k = 1) excludes 0 and stays on the side of the unadjusted estimate
    (lower > 0 for a positive estimate, upper < 0 for a negative one), i.e. such a confounder
    cannot explain the effect away; a CI that has crossed to the other sign means the
    confounder more than explains it away and fails. False when that bound is infeasible.
    With p = 0 there is no benchmark: strongest and passed are None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.stats as st  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from e2i_pipelines.analytics.causal.diagnostics import inputs  # noqa: E402
from e2i_pipelines.analytics.causal.diagnostics.inputs import (  # noqa: E402
    as_matrix,
    as_treated,
    as_vector,
    row_blocks,
)

METADATA_MAX_COVARIATES = 10  # benchmark covariates (all their k rows) kept in metadata()


def _centered_gram(y: np.ndarray, t: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Centred cross-product matrix of [t, X..., y] ((p+2) x (p+2)) in one blocked pass."""
    n, p = X.shape
    k = p + 3  # [1, t, X..., y], each shifted by its first row
    shift = np.concatenate([[0.0, float(t[0])], X[0], [y[0]]])
    G = np.zeros((k, k))
    W = np.empty((min(inputs.BLOCK_ROWS, n), k))  # read at call time: tests shrink it
    for a, b in row_blocks(n):
        Wb = W[: b - a]
        Wb[:, 0] = 1.0
        Wb[:, 1] = t[a:b]
        Wb[:, 2:-1] = X[a:b]
        Wb[:, -1] = y[a:b]
        Wb -= shift
        G += Wb.T @ Wb
    s = G[0, 1:]
    return G[1:, 1:] - np.outer(s, s) / n


def _ols(C: np.ndarray, cols: np.ndarray, target: int, dof: int):
    """OLS (with intercept) of column target on cols from the centred Gram C: coef, se."""
    S = C[np.ix_(cols, cols)]
    scale = np.sqrt(np.diag(S))
    if (scale <= 0).any():
        raise ValueError("a regressor is constant")
    R = S / np.outer(scale, scale)
    eig = np.linalg.eigvalsh(R)
    if eig[0] <= 1e-12 * eig[-1]:
        raise ValueError("the design [t, X] is collinear")
    Rinv = np.linalg.inv(R)
    rhs = C[cols, target]
    coef = Rinv @ (rhs / scale) / scale
    rss = max(C[target, target] - rhs @ coef, 0.0)
    se = np.sqrt(rss / dof * np.diag(Rinv)) / scale
    return coef, se


def _robustness_value(t_value: float, dof: int, q: float, alpha: float | None) -> float:
    """sensemakr's robustness_value (alpha None: point estimate only)."""
    fq = q * abs(t_value) / math.sqrt(dof)
    f_crit = 0.0 if alpha is None else abs(st.t.ppf(alpha / 2, dof - 1)) / math.sqrt(dof - 1)
    fqa = fq - f_crit
    if fqa < 0:
        return 0.0
    if f_crit > 0 and fq > 1 / f_crit:
        return (fq**2 - f_crit**2) / (1 + fq**2)
    return 0.5 * (math.sqrt(fqa**4 + 4 * fqa**2) - fqa**2)


def _partial_r2(t_value: np.ndarray, dof: int) -> np.ndarray:
    """Partial R2 of a regressor from its t-statistic."""
    return t_value**2 / (t_value**2 + dof)


def _bounds(r2d: np.ndarray, r2y: np.ndarray, k: np.ndarray):
    """sensemakr's ovb_partial_r2_bound (kd = ky = k), broadcast; NaN where infeasible."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r2dz = k * r2d / (1 - r2d)
        r2zxj = k * r2d**2 / ((1 - k * r2d) * (1 - r2d))
        r2yz = ((np.sqrt(k) + np.sqrt(r2zxj)) / np.sqrt(1 - r2zxj)) ** 2 * (r2y / (1 - r2y))
    feasible = (r2dz < 1) & (r2zxj < 1)
    r2yz = np.minimum(r2yz, 1.0)
    return np.where(feasible, r2dz, np.nan), np.where(feasible, r2yz, np.nan), feasible


def _adjusted(estimate: float, se: float, dof: int, r2dz, r2yz):
    """Bias-adjusted estimate and se for a confounder (r2dz, r2yz) (reduce=True)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bias = np.sqrt(r2yz * r2dz / (1 - r2dz)) * se * math.sqrt(dof)
        adj_se = np.sqrt((1 - r2yz) / (1 - r2dz)) * se * math.sqrt(dof / (dof - 1))
    return np.sign(estimate) * (abs(estimate) - bias), adj_se, bias


@dataclass(frozen=True, eq=False)
class SensitivityResult:
    """Sensitivity statistics of the treatment coefficient; see the module docstring."""

    estimate: float
    se: float
    dof: int
    t_value: float
    partial_r2_yd: float
    rv_q: float
    rv_qa: float
    q: float
    alpha: float
    kd: tuple[float, ...]
    benchmarks: pd.DataFrame  # one row per (covariate, k), covariates in X order
    strongest: str | None
    passed: bool | None
    rule: str

    def strongest_bounds(self) -> pd.DataFrame:
        """The benchmark rows of the strongest covariate (empty with p = 0)."""
        return self.benchmarks[self.benchmarks["covariate"] == self.strongest]

    def metadata(self) -> dict:
        """Plain JSON-able summary; benchmarks of the top covariates by k = 1 bias."""
        bench = self.benchmarks
        covs = bench["covariate"].unique()
        top = _top_covariates(bench, METADATA_MAX_COVARIATES)
        rows = bench[bench["covariate"].isin(top)]
        rows = rows.assign(_o=rows["covariate"].map({c: i for i, c in enumerate(top)}))
        rows = rows.sort_values(["_o", "k"], kind="stable").drop(columns="_o")
        return {
            "estimate": float(self.estimate), "se": float(self.se), "dof": int(self.dof),
            "t_value": float(self.t_value), "partial_r2_yd": float(self.partial_r2_yd),
            "rv_q": float(self.rv_q), "rv_qa": float(self.rv_qa), "q": float(self.q),
            "alpha": float(self.alpha), "kd": [float(k) for k in self.kd],
            "strongest": self.strongest, "passed": self.passed, "rule": self.rule,
            "n_benchmark_covariates": len(covs),
            "benchmarks_truncated": len(top) < len(covs),
            "benchmarks": [_json_record(r) for r in rows.to_dict("records")],
        }


def _top_covariates(bench: pd.DataFrame, limit: int) -> list[str]:
    """Covariates ordered by their k = 1 bias (largest first, infeasible first), top limit."""
    one = bench.drop_duplicates("covariate")[["covariate", "bias_k1"]]
    order = np.argsort(-np.nan_to_num(one["bias_k1"].to_numpy(), nan=np.inf), kind="stable")
    return one["covariate"].to_numpy()[order][:limit].tolist()


def _json_record(record: dict) -> dict:
    """Numpy scalars -> Python; NaN/inf -> None."""
    out = {}
    for key, value in record.items():
        if isinstance(value, np.bool_ | bool):
            out[key] = bool(value)
        elif isinstance(value, np.integer):
            out[key] = int(value)
        elif isinstance(value, np.floating | float):
            out[key] = float(value) if math.isfinite(value) else None
        else:
            out[key] = value
    return out


def _benchmark_table(names: list[str], r2d: np.ndarray, r2y: np.ndarray, kd: tuple[float, ...],
                     estimate: float, se: float, dof: int, q: float, alpha: float) -> pd.DataFrame:
    """One row per (covariate, k): bounds, bias-adjusted estimate / se / t / CI."""
    k = np.asarray(kd, dtype=float)[None, :]
    r2dz, r2yz, feasible = _bounds(r2d[:, None], r2y[:, None], k)
    adj, adj_se, bias = _adjusted(estimate, se, dof, r2dz, r2yz)
    half = abs(st.t.ppf(alpha / 2, dof)) * adj_se
    with np.errstate(divide="ignore", invalid="ignore"):  # adj_se is 0 where r2yz_dx = 1
        adj_t = (adj - estimate * (1 - q)) / adj_se
    r2dz1, r2yz1, _ = _bounds(r2d, r2y, np.ones(1))
    bias1 = _adjusted(estimate, se, dof, r2dz1, r2yz1)[2]
    m = len(kd)
    return pd.DataFrame({
        "covariate": np.repeat(np.asarray(names, dtype=object), m),
        "k": np.tile(np.asarray(kd, dtype=float), len(names)),
        "bound_label": [f"{kk:g}x {c}" for c in names for kk in kd],
        "r2dxj_x": np.repeat(r2d, m), "r2yxj_dx": np.repeat(r2y, m),
        "r2dz_x": r2dz.ravel(), "r2yz_dx": r2yz.ravel(), "feasible": feasible.ravel(),
        "bias": bias.ravel(), "adjusted_estimate": adj.ravel(),
        "adjusted_se": adj_se.ravel(), "adjusted_t": adj_t.ravel(),
        "adjusted_lower_ci": (adj - half).ravel(), "adjusted_upper_ci": (adj + half).ravel(),
        "bias_k1": np.repeat(np.where(np.isnan(bias1), np.inf, bias1), m),
    })


def _verdict(names: list[str], r2d: np.ndarray, r2y: np.ndarray, estimate: float, se: float,
             dof: int, alpha: float) -> tuple[str, bool]:
    """Strongest covariate (largest k = 1 bias) and whether its adjusted CI excludes 0."""
    r2dz, r2yz, feasible = _bounds(r2d, r2y, np.ones(1))
    adj, adj_se, bias = _adjusted(estimate, se, dof, r2dz, r2yz)
    j = int(np.argmax(np.where(feasible, bias, np.inf)))
    if not feasible[j]:
        return names[j], False
    half = abs(st.t.ppf(alpha / 2, dof)) * adj_se[j]
    lower, upper = adj[j] - half, adj[j] + half
    return names[j], bool(lower > 0 if estimate > 0 else upper < 0)


def _sensitivity_rule(alpha: float, strongest: str | None) -> str:
    """The pass rule in words."""
    if strongest is None:
        return "no observed covariates to benchmark against: no pass/fail verdict"
    return (f"pass if the {1 - alpha:.0%} CI of the estimate adjusted for an unobserved "
            f"confounder as strong as the strongest observed covariate ({strongest}, k = 1, "
            "Cinelli & Hazlett 2020 partial-R2 bound) excludes 0 on the side of the estimate")


def sensitivity(y: np.ndarray, t: np.ndarray, X: np.ndarray, names: list[str], *,
                q: float = 1.0, alpha: float = 0.05,
                kd: tuple[float, ...] = (1.0, 2.0, 3.0)) -> SensitivityResult:
    """Cinelli-Hazlett sensitivity of the OLS coefficient of t in y ~ 1 + t + X."""
    X = as_matrix(X, names)
    n, p = X.shape
    tf = as_treated(t, n).astype(np.float64)
    y = as_vector(y, n, "y")
    if not 0 < alpha < 1 or q <= 0:
        raise ValueError("need 0 < alpha < 1 and q > 0")
    dof, dof_t = n - p - 2, n - p - 1
    if dof < 2:
        raise ValueError(f"too few rows ({n}) for {p} covariates")
    C = _centered_gram(y, tf, X)
    if not np.isfinite(C).all():
        raise ValueError("y, t and X must be finite")
    coef, se_y = _ols(C, np.arange(p + 1), p + 1, dof)
    estimate, se = float(coef[0]), float(se_y[0])
    t_value = estimate / se
    names = list(names)
    if p:
        gamma, se_d = _ols(C, np.arange(1, p + 1), 0, dof_t)
        r2d = _partial_r2(gamma / se_d, dof_t)
        r2y = _partial_r2(coef[1:] / se_y[1:], dof)
        strongest, passed = _verdict(names, r2d, r2y, estimate, se, dof, alpha)
    else:
        r2d = r2y = np.zeros(0)
        strongest, passed = None, None
    kd = tuple(float(k) for k in kd)
    return SensitivityResult(
        estimate=estimate, se=se, dof=dof, t_value=t_value,
        partial_r2_yd=float(_partial_r2(t_value, dof)),
        rv_q=float(_robustness_value(t_value, dof, q, None)),
        rv_qa=float(_robustness_value(t_value, dof, q, alpha)),
        q=float(q), alpha=float(alpha), kd=kd,
        benchmarks=_benchmark_table(names, r2d, r2y, kd, estimate, se, dof, q, alpha),
        strongest=strongest, passed=passed, rule=_sensitivity_rule(alpha, strongest),
    )


def sensitivity_contour_plot(result: SensitivityResult) -> Figure:
    """Contours of the bias-adjusted estimate over (partial R2 with t, partial R2 with y)."""
    points = result.strongest_bounds()
    points = points[points["feasible"]]
    lim_x = min(max(0.5, 1.2 * np.max(points["r2dz_x"].to_numpy(), initial=0.0)), 1 - 1e-12)
    lim_y = min(max(0.5, 1.2 * np.max(points["r2yz_dx"].to_numpy(), initial=0.0)), 1 - 1e-12)
    gx, gy = np.linspace(0, lim_x, 200), np.linspace(0, lim_y, 200)
    z = _adjusted(result.estimate, result.se, result.dof, gx[None, :], gy[:, None])[0]
    fig, ax = plt.subplots(figsize=(6, 6))
    levels = [v for v in MaxNLocator(nbins=10).tick_values(z.min(), z.max())
              if z.min() < v < z.max() and abs(v) > 1e-12 * max(abs(z.min()), abs(z.max()))]
    if levels:
        cs = ax.contour(gx, gy, z, levels=levels, colors="black", linewidths=0.8)
        ax.clabel(cs, fontsize=8, fmt="%1.3g", colors="gray")
    if z.min() < 0 < z.max():
        zero = ax.contour(gx, gy, z, levels=[0.0], colors="red", linewidths=1.2,
                          linestyles="dashed")
        ax.clabel(zero, fontsize=8, fmt="%1.3g", colors="red")
    ax.scatter([0], [0], c="black", marker="^")
    ax.annotate(f"Unadjusted\n({result.estimate:1.3f})", (lim_x / 30, lim_y / 30), fontsize=8)
    for row in points.itertuples():
        ax.scatter([row.r2dz_x], [row.r2yz_dx], c="red", marker="D", edgecolors="black")
        ax.annotate(f"{row.bound_label}\n({row.adjusted_estimate:1.3f})",
                    (row.r2dz_x + lim_x / 30, row.r2yz_dx + lim_y / 30), fontsize=8)
    ax.set_xlim(-lim_x / 15, lim_x * 1.05)
    ax.set_ylim(-lim_y / 15, lim_y * 1.05)
    ax.set_xlabel(r"Partial $R^2$ of confounder(s) with the treatment")
    ax.set_ylabel(r"Partial $R^2$ of confounder(s) with the outcome")
    ax.set_title("Sensitivity of the estimate to an unobserved confounder")
    fig.tight_layout()
    return fig
