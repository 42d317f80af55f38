"""Causal estimates and their refutations."""
