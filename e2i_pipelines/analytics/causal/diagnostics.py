"""Causal-estimate diagnostics: covariate balance, overlap (positivity) and sensitivity to an
unobserved confounder. Pure numpy / pandas / matplotlib; every statistic is one vectorised pass
over the rows (processed in blocks of ``BLOCK_ROWS``), so n = 1,000,000 rows and p = 30 columns
take well under a second per function (plots excepted).

Inputs: ``X`` the (n, p) float design matrix of the adjustment set (categoricals one-hot coded,
no intercept column), ``names`` its p column names, ``t`` the treatment (bool or 0/1), ``y`` the
outcome, ``weights`` the balancing weights already built for the estimand (e.g. ATE: 1/e for
treated and 1/(1 - e) for control rows), ``propensity`` the estimated P(t = 1 | X).

Covariate balance (:func:`balance_table`, :func:`balance_passed`, :func:`love_plot`)
    Standardised mean difference of every column of X::

        SMD = (mean_treated - mean_control) / sqrt((var_treated + var_control) / 2)

    ``smd_before`` uses plain group means, ``smd_after`` weighted group means (weights
    normalised to sum to 1 within each arm). The denominator is the same for both: the
    UNWEIGHTED sample variances (ddof = 1) of the two arms (the cobalt / Austin 2009
    convention), so before and after differ only by the numerator. A column whose two means
    are equal (e.g. a constant column) has SMD 0; a column that is constant within each arm
    but differs between them has SMD +-inf.

    Pass rule: every ``|smd_after| <= BALANCE_THRESHOLD`` (0.1). NaN fails.

Overlap / positivity (:func:`overlap_summary`, :func:`overlap_plot`)
    ``share_outside`` is the share of rows whose propensity lies outside ``OVERLAP_BOUNDS``
    = [0.01, 0.99] (the bounds themselves are inside; NaN counts as outside);
    ``share_outside_treated`` / ``share_outside_control`` are the same share within each arm.

    Status: "pass" if share_outside <= ``OVERLAP_WARN_SHARE`` (1 %), "warn" if
    share_outside <= ``OVERLAP_FAIL_SHARE`` (10 %), otherwise "fail".

Sensitivity to an unobserved confounder Z (:func:`sensitivity`, :func:`sensitivity_contour_plot`)
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

BLOCK_ROWS = 1 << 16  # rows per block of the one-pass accumulations (bounds temporary memory)

BALANCE_THRESHOLD = 0.1
OVERLAP_BOUNDS = (0.01, 0.99)
OVERLAP_WARN_SHARE = 0.01
OVERLAP_FAIL_SHARE = 0.10
METADATA_MAX_COVARIATES = 10  # benchmark covariates (all their k rows) kept in metadata()

BALANCE_RULE = ("pass if every |SMD after weighting| <= {threshold:g} (SMD denominator: "
                "unweighted pooled SD of the two arms)")
OVERLAP_RULE = ("share of rows with propensity outside [{lo:g}, {hi:g}]: pass if <= {warn:g}, "
                "warn if <= {fail:g}, else fail")


# ----------------------------------------------------------------------------- input checks


def _matrix(X: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """X as a 2-d float64 array (no copy if it already is one); names must match its columns."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-d (n, p), got shape {X.shape}")
    if names is not None and len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} names for {X.shape[1]} columns of X")
    return X


def _treated(t: np.ndarray, n: int) -> np.ndarray:
    """The treatment as a bool mask of length n; both arms must be non-empty."""
    t = np.asarray(t)
    if t.shape != (n,):
        raise ValueError(f"t must have shape ({n},), got {t.shape}")
    if t.dtype != np.bool_:
        if not ((t == 0) | (t == 1)).all():
            raise ValueError("t must be bool or 0/1")
        t = t != 0
    n1 = int(np.count_nonzero(t))
    if n1 == 0 or n1 == n:
        raise ValueError("both treatment arms must have rows")
    return t


def _vector(v: np.ndarray, n: int, what: str) -> np.ndarray:
    """A float64 vector of length n."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {v.shape}")
    return v


def _propensity(propensity: np.ndarray) -> np.ndarray:
    """The propensity as a 1-d float64 array."""
    e = np.asarray(propensity, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"propensity must be 1-d, got shape {e.shape}")
    return e


def _blocks(n: int):
    """(start, stop) of consecutive row blocks of at most BLOCK_ROWS rows."""
    for start in range(0, n, BLOCK_ROWS):
        yield start, min(start + BLOCK_ROWS, n)


# ----------------------------------------------------------------------------- balance


def _arm_moments(X: np.ndarray, t: np.ndarray, w: np.ndarray):
    """Per column: plain and weighted arm means, and unweighted arm variances (ddof=1).

    One pass over X in row blocks. The means are of X shifted by its first row (differences
    of means are shift-invariant; no cancellation for large offsets; exact 0 for constants).
    """
    n, p = X.shape
    shift = X[0].copy()
    sums = np.zeros((p, 4))  # columns: treated, control, weighted treated, weighted control
    squares = np.zeros((p, 2))  # unweighted sum of squares per arm
    totals = np.zeros(4)
    for a, b in _blocks(n):
        tb = t[a:b].astype(np.float64)
        V = np.column_stack([tb, 1.0 - tb, w[a:b] * tb, w[a:b] * (1.0 - tb)])
        D = X[a:b] - shift
        sums += D.T @ V
        totals += V.sum(axis=0)
        squares += np.square(D, out=D).T @ V[:, :2]
    if totals[2] <= 0 or totals[3] <= 0:
        raise ValueError("weights must have a positive sum in each arm")
    means = sums / totals
    counts = totals[:2]
    if counts.min() < 2:
        raise ValueError("each treatment arm needs at least 2 rows")
    var = (squares - counts * means[:, :2] ** 2) / (counts - 1)
    return means, np.maximum(var, 0.0)


def _smd(diff: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """diff / sd with 0 where diff is 0 and +-inf where only sd is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = diff / sd
    return np.where(diff == 0, 0.0, out)


def balance_table(X: np.ndarray, names: list[str], t: np.ndarray,
                  weights: np.ndarray) -> pd.DataFrame:
    """Columns covariate, smd_before, smd_after: one row per column of X, in order."""
    X = _matrix(X, names)
    n = X.shape[0]
    t = _treated(t, n)
    w = _vector(weights, n, "weights")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    means, var = _arm_moments(X, t, w)
    sd = np.sqrt((var[:, 0] + var[:, 1]) / 2.0)
    return pd.DataFrame({
        "covariate": list(names),
        "smd_before": _smd(means[:, 0] - means[:, 1], sd),
        "smd_after": _smd(means[:, 2] - means[:, 3], sd),
    })


def balance_passed(table: pd.DataFrame, threshold: float = BALANCE_THRESHOLD) -> bool:
    """True if every |smd_after| <= threshold (NaN fails)."""
    return bool(np.all(np.abs(table["smd_after"].to_numpy(dtype=float)) <= threshold))


def love_plot(table: pd.DataFrame, threshold: float = BALANCE_THRESHOLD) -> Figure:
    """|SMD| before (open) and after (filled) weighting per covariate; dashed threshold line."""
    order = table.assign(_b=table["smd_before"].abs()).sort_values("_b", kind="stable")
    rows = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1.5))
    ax.scatter(order["smd_before"].abs(), rows, facecolors="none", edgecolors="#555555",
               label="before weighting")
    ax.scatter(order["smd_after"].abs(), rows, color="#1E88E5", label="after weighting")
    ax.axvline(threshold, color="#D81B60", linestyle="--", linewidth=1,
               label=f"threshold {threshold:g}")
    ax.set_yticks(rows, order["covariate"].tolist())
    ax.set_xlabel("|standardised mean difference|")
    ax.set_title("Covariate balance (love plot)")
    ax.set_xlim(left=0)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- overlap


def _overlap_status(share_outside: float) -> str:
    """pass / warn / fail by the share of rows outside the bounds."""
    if share_outside <= OVERLAP_WARN_SHARE:
        return "pass"
    return "warn" if share_outside <= OVERLAP_FAIL_SHARE else "fail"


def overlap_summary(propensity: np.ndarray, t: np.ndarray,
                    bounds: tuple[float, float] = OVERLAP_BOUNDS) -> dict:
    """Shares of rows outside bounds (all / per arm), propensity range per arm, status, rule."""
    e = _propensity(propensity)
    t = _treated(t, len(e))
    lo, hi = float(bounds[0]), float(bounds[1])
    outside = ~((e >= lo) & (e <= hi))
    n1 = int(np.count_nonzero(t))
    out1 = int(np.count_nonzero(outside & t))
    out_all = int(np.count_nonzero(outside))
    share = out_all / len(e)
    e1, e0 = e[t], e[~t]
    return {
        "share_outside": float(share),
        "share_outside_treated": float(out1 / n1),
        "share_outside_control": float((out_all - out1) / (len(e) - n1)),
        "min_propensity_treated": float(np.nanmin(e1)),
        "max_propensity_treated": float(np.nanmax(e1)),
        "min_propensity_control": float(np.nanmin(e0)),
        "max_propensity_control": float(np.nanmax(e0)),
        "bound_low": lo,
        "bound_high": hi,
        "status": _overlap_status(share),
        "rule": OVERLAP_RULE.format(lo=lo, hi=hi, warn=OVERLAP_WARN_SHARE,
                                    fail=OVERLAP_FAIL_SHARE),
    }


def overlap_plot(propensity: np.ndarray, t: np.ndarray,
                 bounds: tuple[float, float] = OVERLAP_BOUNDS) -> Figure:
    """Overlaid density histograms of the propensity by arm; the region outside bounds shaded."""
    e = _propensity(propensity)
    t = _treated(t, len(e))
    edges = np.linspace(0.0, 1.0, 51)
    fig, ax = plt.subplots(figsize=(7, 4))
    for mask, label, color in ((~t, "control", "#555555"), (t, "treated", "#1E88E5")):
        counts, _ = np.histogram(e[mask], bins=edges, density=True)
        ax.stairs(counts, edges, fill=True, alpha=0.45, color=color, label=label)
    ax.axvspan(0.0, bounds[0], color="#D81B60", alpha=0.15, label="outside bounds")
    ax.axvspan(bounds[1], 1.0, color="#D81B60", alpha=0.15)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("propensity score P(t = 1 | X)")
    ax.set_ylabel("density")
    ax.set_title("Propensity overlap by treatment arm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- sensitivity


def _centered_gram(y: np.ndarray, t: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Centred cross-product matrix of [t, X..., y] ((p+2) x (p+2)) in one blocked pass."""
    n, p = X.shape
    k = p + 3  # [1, t, X..., y], each shifted by its first row
    shift = np.concatenate([[0.0, float(t[0])], X[0], [y[0]]])
    G = np.zeros((k, k))
    W = np.empty((min(BLOCK_ROWS, n), k))
    for a, b in _blocks(n):
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
    X = _matrix(X, names)
    n, p = X.shape
    tf = _treated(t, n).astype(np.float64)
    y = _vector(y, n, "y")
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
