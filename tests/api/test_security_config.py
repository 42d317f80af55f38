"""Settings parsing and API-key matching."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from e2i_api.core.config import ApiKeySpec, Settings
from e2i_api.core.security import KeyRing


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2I_API_DAGSTER_PORT", "3333")
    monkeypatch.setenv("E2I_API_CORS_ORIGINS", "http://a.test, https://b.test")
    monkeypatch.setenv("E2I_API_API_KEYS", '[{"name":"ui","key":"0123456789abcdef0123","scopes":["runs:read"]}]')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = Settings(_env_file=None)
    assert settings.dagster_url == "http://127.0.0.1:3333"
    assert settings.cors_origins == ["http://a.test", "https://b.test"]
    assert settings.api_keys[0].scopes == ["runs:read"]
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_env_example_documents_every_setting() -> None:
    from tests.support.dagster_processes import REPO_ROOT

    text = (REPO_ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"E2I_API_{name.upper()}=" in text, name
    settings = Settings(_env_file=REPO_ROOT / ".env.example")
    assert KeyRing(settings.api_keys).match("change-me-frontend-key").name == "frontend"


@pytest.mark.parametrize("bad", [
    {"cors_origins": ["*"]},
    {"api_keys": [{"name": "x"}]},
    {"api_keys": [{"name": "x", "key": "0123456789abcdef", "sha256": "0" * 64}]},
    {"api_keys": [{"name": "x", "sha256": "not-hex"}]},
    {"api_keys": [{"name": "x", "key": "short"}]},
    {"api_keys": [{"name": "x", "key": "0123456789abcdef", "scopes": ["runs:delete"]}]},
])
def test_bad_settings_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **bad)


def test_keyring_matches_plain_and_hashed_keys_only() -> None:
    specs = [ApiKeySpec(name="plain", key="plain-key-0123456789"),
             ApiKeySpec(name="hashed", sha256=hashlib.sha256(b"hashed-key-0123456789").hexdigest(),
                        scopes=["runs:read"])]
    ring = KeyRing(specs)
    assert ring.match("plain-key-0123456789").name == "plain"
    hashed = ring.match("hashed-key-0123456789")
    assert hashed.name == "hashed" and hashed.scopes == frozenset({"runs:read"})
    assert ring.match("plain-key-012345678") is None
    assert ring.match("") is None
    assert KeyRing([]).match("plain-key-0123456789") is None
