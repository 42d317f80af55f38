"""Causal effect estimate (DoWhy) and its five refutations as asset checks."""
