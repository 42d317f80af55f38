"""A real Postgres-backed Dagster instance for the cost tests."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from tests.support.dagster_processes import postgres_storage


@pytest.fixture()
def pg_instance(postgres_db) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides={"storage": postgres_storage(postgres_db)}) as instance:
        yield instance
