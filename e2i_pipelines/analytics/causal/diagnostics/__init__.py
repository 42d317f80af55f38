"""Causal-estimate diagnostics: covariate balance, overlap (positivity) and sensitivity to an
unobserved confounder. Pure numpy / pandas / matplotlib; every statistic is one vectorised pass
over the rows (processed in blocks of ``BLOCK_ROWS``), so n = 1,000,000 rows and p = 30 columns
take well under a second per function (plots excepted).

Inputs: ``X`` the (n, p) float design matrix of the adjustment set (categoricals one-hot coded,
no intercept column), ``names`` its p column names, ``t`` the treatment (bool or 0/1), ``y`` the
outcome, ``weights`` the balancing weights already built for the estimand (e.g. ATE: 1/e for
treated and 1/(1 - e) for control rows), ``propensity`` the estimated P(t = 1 | X).

One module per diagnostic: :mod:`.balance`, :mod:`.overlap`, :mod:`.sensitivity`; shared input
checks in :mod:`.inputs`; :mod:`.run` runs all three on a saved estimate for the asset check.
"""
