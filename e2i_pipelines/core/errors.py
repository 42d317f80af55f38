"""Errors every layer raises and catches; a leaf module (no e2i imports)."""


class DataValidationError(ValueError):
    """The data or the spec cannot be used; the message names the column and the problem."""
