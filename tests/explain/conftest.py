"""Small LightGBM models and data for the SHAP tests (numeric, NaNs, categoricals)."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

N_ROWS = 3_000


def _train(frame: pd.DataFrame, y: np.ndarray, rounds: int = 60, **params) -> lgb.Booster:
    base = {"objective": "regression", "num_leaves": 31, "verbose": -1, "seed": 1,
            "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1.0}
    return lgb.train({**base, **params}, lgb.Dataset(frame, y), num_boost_round=rounds)


@pytest.fixture(scope="session")
def mixed_data() -> pd.DataFrame:
    """Numeric columns with NaNs and zeros, two categoricals (one with missing levels)."""
    rng = np.random.default_rng(3)
    n = N_ROWS
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(8)})
    frame.loc[rng.random(n) < 0.08, "x0"] = np.nan
    frame.loc[rng.random(n) < 0.2, "x1"] = 0.0
    frame.loc[rng.random(n) < 0.05, "x2"] = np.nan
    frame["region"] = pd.Categorical(rng.choice(list("ABCDEFGHIJKL"), n),
                                     categories=list("ABCDEFGHIJKL"))
    frame["tier"] = pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["lo", "mid", "hi"])
    frame.loc[rng.random(n) < 0.05, "region"] = np.nan
    frame["treatment"] = (rng.random(n) < 0.4).astype(np.int8)
    return frame


def mixed_target(frame: pd.DataFrame) -> np.ndarray:
    rng = np.random.default_rng(4)
    codes = frame["region"].cat.codes.to_numpy()
    return (np.nan_to_num(frame["x0"].to_numpy(), nan=1.5) * 2.0
            + np.sin(3 * frame["x1"].to_numpy()) + np.nan_to_num(frame["x2"].to_numpy()) ** 2
            + (codes % 4) * 1.3 + frame["tier"].cat.codes.to_numpy()
            + frame["treatment"].to_numpy() * (1 + frame["x3"].to_numpy())
            + rng.normal(scale=0.3, size=len(frame)))


@pytest.fixture(scope="session")
def mixed_model(mixed_data) -> lgb.Booster:
    return _train(mixed_data, mixed_target(mixed_data))


@pytest.fixture(scope="session")
def zero_missing_model(mixed_data) -> lgb.Booster:
    """Numeric-only model trained with zero_as_missing (missing type 'Zero' splits)."""
    numeric = mixed_data[[f"x{i}" for i in range(8)]]
    return _train(numeric, mixed_target(mixed_data), rounds=40, zero_as_missing=True)


@pytest.fixture(scope="session")
def deep_model() -> tuple[lgb.Booster, np.ndarray]:
    """Deep, narrow trees: many unique features per path (exercises the per-row path)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4_000, 20))
    y = (X > 0).sum(axis=1) * 1.0 + np.prod(np.sign(X[:, :4]), axis=1) + rng.normal(size=4_000)
    return _train(pd.DataFrame(X, columns=[f"f{i}" for i in range(20)]), y, rounds=30,
                  num_leaves=64, min_data_in_leaf=5), X
