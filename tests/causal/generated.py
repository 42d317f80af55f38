"""Generated causal data with known truth for the estimator tests (seeded, no network)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def expit(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def nonlinear_confounding(n: int, seed: int = 0, effect: float = 2.0) -> pd.DataFrame:
    """Confounders enter treatment and outcome nonlinearly; a constant true effect."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    g = np.sin(2 * x[:, 0]) * 2 + x[:, 1] ** 2 + np.abs(x[:, 2])
    t = rng.random(n) < expit(1.2 * np.sin(2 * x[:, 0]) + 0.8 * x[:, 1] ** 2 - 0.8)
    y = effect * t + 2 * g + 0.5 * x[:, 3] + rng.normal(size=n)
    return pd.DataFrame({**{f"x{i}": x[:, i] for i in range(4)}, "t": t.astype(int), "y": y})


def randomised(n: int, seed: int = 0, effect: float = 1.5) -> pd.DataFrame:
    """A/B test: treatment by coin flip, heteroskedastic outcome."""
    rng = np.random.default_rng(seed)
    t = rng.random(n) < 0.4
    y = 10 + effect * t + rng.normal(size=n) * np.where(t, 3.0, 1.0)
    return pd.DataFrame({"t": t.astype(int), "y": y})


def coded_categories(n: int, seed: int = 0, effect: float = 1.0) -> pd.DataFrame:
    """An integer-coded region 0-9 whose levels confound non-monotonically."""
    rng = np.random.default_rng(seed)
    region = rng.integers(0, 10, n)
    level_t = np.array([-1.5, 1.5, -1.0, 1.0, -0.5, 1.5, -1.5, 0.5, -1.0, 1.0])
    level_y = np.array([-3.0, 4.0, -2.0, 3.0, -1.0, 4.0, -3.0, 1.0, -2.0, 3.0])
    t = rng.random(n) < expit(level_t[region])
    y = effect * t + level_y[region] + rng.normal(size=n)
    return pd.DataFrame({"region": region, "t": t.astype(int), "y": y})


def collider_mediator(n: int, seed: int = 0) -> tuple[pd.DataFrame, float]:
    """W confounds, M mediates (T -> M -> Y), C is a collider (T -> C <- Y).

    The total effect of T on Y is 1.0 (direct) + 0.8 * 1.5 (through M) = 2.2.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n)
    t = rng.random(n) < expit(0.8 * w)
    m = 0.8 * t + rng.normal(size=n)
    y = 1.0 * t + 1.5 * m + 2.0 * w + rng.normal(size=n)
    c = 1.0 * t + 1.0 * y + rng.normal(size=n)
    return pd.DataFrame({"w": w, "t": t.astype(int), "m": m, "c": c, "y": y}), 2.2


def heterogeneous(n: int, seed: int = 0) -> tuple[pd.DataFrame, float, float]:
    """Effect 1 + 2 x0; the treated have larger x0, so ATT > ATE. Returns (frame, ATE, ATT)
    where the truths are the population values (x0 ~ N(0, 1): ATE = 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    e = expit(1.0 * x[:, 0])
    t = rng.random(n) < e
    tau = 1 + 2 * x[:, 0]
    y = tau * t + x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=n)
    # population ATT = 1 + 2 E[x0 | T=1] = 1 + 2 E[x0 e(x0)] / E[e(x0)] (numerical integral)
    grid = np.linspace(-8, 8, 20001)
    dens = np.exp(-grid**2 / 2)
    eg = expit(grid)
    att = 1 + 2 * float((grid * eg * dens).sum() / (eg * dens).sum())
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "t": t.astype(int), "y": y}), 1.0, att


GRAPH_DOT = """digraph {
  w -> t; w -> y;
  t -> m; m -> y;
  t -> y;
  t -> c; y -> c;
}"""
