"""A worker's startup takes what it loaded out of the cyclic GC (``gc.freeze``): a full
collection of the ~400k objects Dagster, SQLAlchemy and pydantic leave stalled every request in
flight for 100-300 ms (up to 1.2 s under load), measured in the load benchmark."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from e2i_api.main import create_app
from tests.api.conftest import api_settings


def test_startup_freezes_the_loaded_objects() -> None:
    gc.unfreeze()
    try:
        before = gc.get_freeze_count()
        with TestClient(create_app(api_settings(1))):
            frozen = gc.get_freeze_count()
        assert before == 0 and frozen > 100_000
    finally:
        gc.unfreeze()
