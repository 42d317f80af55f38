"""Service markers that follow fixture use: a fixture that starts or needs a service is decorated
with ``needs(...)``, and tests/conftest.py marks every test that uses it (directly or through other
fixtures) with those markers, so ``-m "not (docker or stack or chaos or ray)"`` selects correctly."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__e2i_needs__"
SERVICE_MARKERS = ("docker", "postgres", "webserver", "stack", "chaos", "ray")


def needs(*markers: str) -> Callable[[F], F]:
    """Record on a fixture function the service markers its users need (put under @pytest.fixture)."""
    unknown = set(markers) - set(SERVICE_MARKERS)
    if unknown:
        raise ValueError(f"unknown service markers {sorted(unknown)}; known: {SERVICE_MARKERS}")

    def record(func: F) -> F:
        setattr(func, ATTRIBUTE, tuple(markers))
        return func

    return record


def fixture_markers(fixturedefs: Iterable[Any]) -> set[str]:
    """The service markers recorded on these fixture definitions' functions."""
    found: set[str] = set()
    for fixturedef in fixturedefs:
        found.update(getattr(fixturedef.func, ATTRIBUTE, ()))
    return found
