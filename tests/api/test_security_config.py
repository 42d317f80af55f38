"""Settings parsing and API-key matching."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from e2i_api.core.config import ApiKeySpec, Settings
from e2i_api.core.security import KeyRing

PLAIN = "YCGbCdIjjot-eHY_itcpXyAwpYapVWakr1PA9tjp028"  # test-only
HASHED_KEY = "qm24GEj1CY6IPJYVOR422yFPzJohrtb6t7qQ0rLHrns"
HASHED = hashlib.sha256(HASHED_KEY.encode()).hexdigest()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2I_API_DAGSTER_PORT", "3333")
    monkeypatch.setenv("E2I_API_CORS_ORIGINS", "http://a.test, https://b.test")
    monkeypatch.setenv("E2I_API_API_KEYS", f'[{{"name":"ui","key":"{PLAIN}","scopes":["runs:read"]}}]')
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
        assert f"E2I_API_{name.upper()}=" in text or f"E2I_API_{name.upper()}__" in text, name
    with pytest.raises(ValidationError) as refused:  # it ships placeholders, refused at start
        Settings(_env_file=REPO_ROOT / ".env.example")
    assert "'frontend'" in str(refused.value) and "secrets.token_urlsafe(32)" in str(refused.value)


@pytest.mark.parametrize("bad", [
    {"cors_origins": ["*"]},
    {"api_keys": [{"name": "x"}]},
    {"api_keys": [{"name": "x", "key": PLAIN, "sha256": HASHED}]},
    {"api_keys": [{"name": "x", "sha256": "not-hex"}]},
    {"api_keys": [{"name": "x", "key": "short"}]},
    {"api_keys": [{"name": "x", "key": PLAIN, "scopes": ["runs:delete"]}]},
    {"api_keys": [{"name": "x", "key": PLAIN, "max_tier": "huge"}]},
])
def test_bad_settings_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **bad)


def test_keyring_matches_plain_and_hashed_keys_only() -> None:
    specs = [ApiKeySpec(name="plain", key=PLAIN),
             ApiKeySpec(name="hashed", sha256=HASHED, scopes=["runs:read"], jobs=["shap_job"], max_tier="medium")]
    ring = KeyRing(specs)
    assert ring.match(PLAIN).name == "plain"
    hashed = ring.match(HASHED_KEY)
    assert hashed.name == "hashed" and hashed.scopes == frozenset({"runs:read"})
    assert hashed.jobs == frozenset({"shap_job"}) and hashed.max_tier == "medium"
    assert ring.match(PLAIN[:-1]) is None
    assert ring.match("") is None
    assert KeyRing([]).match(PLAIN) is None
