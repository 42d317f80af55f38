"""Shared building blocks of the code location: data contracts, storage, tracking, plots."""
