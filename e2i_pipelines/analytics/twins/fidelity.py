"""Fidelity of digital twins against the real data, accumulated while twins stream by.

The twin row order is exchangeable, so a prefix is a random sample: the statistics use the
first ``max_rows`` twins (default 1M: correlation and frequency noise ~0.001), which keeps their
cost constant however many twins are drawn.

* marginal KS statistic per numeric column (on the first ``ks_rows`` twins);
* correlations of the design (numeric columns + one-hot discrete levels) from streaming
  moments, compared with the real data: max absolute difference;
* level frequencies of every discrete column vs the real data.

The fidelity *checks* (shapes, pairs, detection, utility, privacy, causal) are in
:mod:`fidelity_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp


def level_codes(series: pd.Series, levels: list[Any]) -> np.ndarray:
    """Index of each value in ``levels`` (-1 when absent), fast for categoricals."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        if list(series.cat.categories) != list(levels):
            series = series.cat.set_categories(levels)
        return series.cat.codes.to_numpy().astype(np.int64)
    return pd.Categorical(series, categories=levels).codes.astype(np.int64)


def design_matrix(frame: pd.DataFrame, numeric: list[str],
                  discrete_levels: dict[str, list[Any]]) -> tuple[np.ndarray, list[str]]:
    """Numeric columns and one indicator per discrete level except the first."""
    parts = [frame[numeric].to_numpy(dtype=np.float64)] if numeric else []
    names = list(numeric)
    for col, levels in discrete_levels.items():
        codes = level_codes(frame[col], levels)
        for k, level in enumerate(levels[1:], start=1):
            parts.append((codes == k).astype(np.float64)[:, None])
            names.append(f"{col}={level}")
    if not parts:
        return np.zeros((len(frame), 0)), names
    return np.hstack(parts), names


def _correlation(cross: np.ndarray, total: np.ndarray, n: int) -> np.ndarray:
    mean = total / n
    cov = cross / n - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    return np.nan_to_num(corr, nan=0.0)


def _frequencies(series: pd.Series, levels: list[Any]) -> np.ndarray:
    codes = level_codes(series, levels)
    return np.bincount(codes[codes >= 0], minlength=len(levels)).astype(np.float64)


@dataclass
class FidelityAccumulator:
    """Feed twin chunks with ``update``; ``report()`` compares them with ``real``."""

    real: pd.DataFrame
    numeric: list[str]
    discrete: list[str]
    ks_rows: int = 200_000
    max_rows: int = 1_000_000
    _levels: dict[str, list[Any]] = field(init=False)
    _shift: np.ndarray = field(init=False)
    _n: int = field(init=False, default=0)
    _sum: np.ndarray = field(init=False)
    _cross: np.ndarray = field(init=False)
    _counts: dict[str, np.ndarray] = field(init=False)
    _ks_parts: list[pd.DataFrame] = field(init=False, default_factory=list)
    _ks_have: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._levels = {}
        for c in self.discrete:
            col = self.real[c]
            levels = (list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype)
                      else sorted(pd.unique(col).tolist()))
            self._levels[c] = levels
        x, self.names = design_matrix(self.real, self.numeric, self._levels)
        self._shift = x.mean(axis=0)  # centre for numerically stable streaming moments
        k = x.shape[1]
        self._sum, self._cross = np.zeros(k), np.zeros((k, k))
        self._counts = {c: np.zeros(len(v)) for c, v in self._levels.items()}
        xc = x - self._shift
        self.real_corr = _correlation(xc.T @ xc, xc.sum(axis=0), len(xc))

    def update(self, chunk: pd.DataFrame) -> None:
        chunk = chunk.iloc[: self.max_rows - self._n]
        if chunk.empty:
            return
        x, _ = design_matrix(chunk, self.numeric, self._levels)
        x -= self._shift
        self._n += len(x)
        self._sum += x.sum(axis=0)
        self._cross += x.T @ x
        for c, levels in self._levels.items():
            self._counts[c] += _frequencies(chunk[c], levels)
        if self._ks_have < self.ks_rows:
            take = chunk[self.numeric].iloc[: self.ks_rows - self._ks_have]
            self._ks_parts.append(take.copy())
            self._ks_have += len(take)

    def report(self) -> dict[str, Any]:
        """KS per numeric column, max |corr diff| (and its pair), frequency differences."""
        if self._n == 0:
            raise ValueError("no twins were accumulated")
        twins_ks = pd.concat(self._ks_parts, ignore_index=True) if self._ks_parts else None
        ks = {c: float(ks_2samp(self.real[c].to_numpy(), twins_ks[c].to_numpy()).statistic)
              for c in self.numeric}
        twin_corr = _correlation(self._cross, self._sum, self._n)
        diff = np.abs(twin_corr - self.real_corr)
        np.fill_diagonal(diff, 0.0)
        i, j = np.unravel_index(np.argmax(diff), diff.shape) if diff.size else (0, 0)
        freq: dict[str, dict[str, dict[str, float]]] = {}
        freq_diff: dict[str, float] = {}
        for c, levels in self._levels.items():
            real_f = _frequencies(self.real[c], levels) / len(self.real)
            twin_f = self._counts[c] / self._n
            freq[c] = {str(lv): {"real": float(r), "twins": float(t)}
                       for lv, r, t in zip(levels, real_f, twin_f, strict=True)}
            freq_diff[c] = float(np.abs(real_f - twin_f).max())
        return {
            "n_twins_compared": int(self._n),
            "n_real": int(len(self.real)),
            "ks_rows": int(self._ks_have),
            "ks": ks,
            "max_ks": max(ks.values(), default=0.0),
            "max_abs_corr_diff": float(diff.max()) if diff.size else 0.0,
            "max_corr_diff_pair": [self.names[i], self.names[j]] if diff.size else [],
            "mean_abs_corr_diff": float(diff[np.triu_indices_from(diff, 1)].mean())
            if diff.shape[0] > 1 else 0.0,
            "frequency_diff": freq_diff,
            "max_frequency_diff": max(freq_diff.values(), default=0.0),
            "frequencies": freq,
            "corr_names": self.names,
            "real_corr": self.real_corr.round(4).tolist(),
            "twin_corr": twin_corr.round(4).tolist(),
        }


def fidelity_figure(report: dict[str, Any]):
    """KS per column, correlation difference heatmap, discrete frequencies real vs twins."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ks = report["ks"]
    axes[0].barh(list(ks), list(ks.values()), color="tab:blue")
    axes[0].set_xlabel("KS statistic (twins vs real)")
    axes[0].set_title(f"Marginals: max KS {report['max_ks']:.4f}")
    diff = np.abs(np.array(report["twin_corr"]) - np.array(report["real_corr"]))
    im = axes[1].imshow(diff, cmap="Reds", vmin=0.0, vmax=max(0.05, float(diff.max())))
    names = report["corr_names"]
    axes[1].set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    axes[1].set_yticks(range(len(names)), names, fontsize=6)
    axes[1].set_title(f"|corr twins - corr real|: max {report['max_abs_corr_diff']:.4f}")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    labels, real_f, twin_f = [], [], []
    for col, levels in report["frequencies"].items():
        for level, f in levels.items():
            labels.append(f"{col}={level}")
            real_f.append(f["real"])
            twin_f.append(f["twins"])
    y = np.arange(len(labels))
    axes[2].barh(y - 0.2, real_f, height=0.4, label="real")
    axes[2].barh(y + 0.2, twin_f, height=0.4, label="twins")
    axes[2].set_yticks(y, labels, fontsize=6)
    axes[2].set_title(f"Discrete levels: max freq diff {report['max_frequency_diff']:.4f}")
    axes[2].legend()
    fig.tight_layout()
    return fig
