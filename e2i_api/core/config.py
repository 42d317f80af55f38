"""API settings from the environment (prefix ``E2I_API_``) or a ``.env`` file; see .env.example."""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from e2i_api.core.key_strength import GENERATE_HINT, digest_problem, plain_key_problem
from e2i_pipelines.tiers import Tier

Scope = Literal["runs:read", "runs:write", "admin"]
ALL_SCOPES: tuple[Scope, ...] = ("runs:read", "runs:write")
"""Default scopes of a key: read and write its own client's runs (``admin`` is never implied)."""
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_RATE = r"^\d+\s*/\s*(second|minute|hour|day)$"


class ApiKeySpec(BaseModel):
    """One API key: a client name, the key (plain, or its SHA-256 hex digest), its scopes, the
    jobs it may launch (None: all) and the largest tier it may launch."""

    model_config = ConfigDict(hide_input_in_errors=True)  # an error never echoes the key

    name: str = Field(min_length=1)
    sha256: str | None = Field(default=None, description="hex SHA-256 of the key (preferred)")
    key: SecretStr | None = Field(default=None, description="the plain key (e.g. from a secret)")
    scopes: list[Scope] = Field(default_factory=lambda: list(ALL_SCOPES))
    jobs: list[str] | None = Field(default=None, description="job allowlist (default: every job)")
    max_tier: Tier = Field(default=Tier.HEAVY, description="largest tier of a job the key may launch")

    @model_validator(mode="after")
    def _one_form(self) -> ApiKeySpec:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError(f"API key {self.name!r}: give exactly one of 'sha256' or 'key'")
        if self.sha256 is not None and not _SHA256_HEX.match(self.sha256.lower()):
            raise ValueError(f"API key {self.name!r}: 'sha256' must be 64 hex characters")
        problem = (digest_problem(self.sha256) if self.sha256 is not None
                   else plain_key_problem(self.key.get_secret_value()))
        if problem:
            form = "'sha256'" if self.sha256 is not None else "'key'"
            raise ValueError(f"API key {self.name!r}: its {form} {problem}; {GENERATE_HINT}")
        return self

    def digest(self) -> bytes:
        """SHA-256 digest of the key (what presented keys are compared against)."""
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        return hashlib.sha256(self.key.get_secret_value().encode()).digest()


Role = Literal["viewer", "editor", "admin"]


class OidcSettings(BaseModel):
    """UI login through OpenID Connect (``E2I_API_OIDC__*``); no issuer = login off (the default).

    Secrets come inline or from a file (``*_file``, e.g. a Docker secret); roles come from the
    ``role_claim`` of the ID token (a role name, or a value ``role_map`` maps), else ``user_roles``
    by user, else ``default_role`` (none: the person is refused)."""

    issuer: str = ""
    client_id: str = ""
    client_secret: SecretStr | None = None
    client_secret_file: str | None = None
    redirect_url: str = Field(default="", description="https://<site>/auth/callback")
    scopes: str = "openid email profile"
    user_claim: str = "email"
    role_claim: str = "groups"
    role_map: dict[str, Role] = Field(default_factory=dict)
    user_roles: dict[str, Role] = Field(default_factory=dict)
    default_role: Role | None = None
    session_secret: SecretStr | None = None
    session_secret_file: str | None = None
    session_hours: float = Field(default=8.0, gt=0, le=168)

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    @model_validator(mode="after")
    def _complete(self) -> OidcSettings:
        if not self.enabled:
            return self
        for name in ("client_id", "redirect_url"):
            if not getattr(self, name):
                raise ValueError(f"oidc.{name} is required when oidc.issuer is set")
        for name in ("issuer", "redirect_url"):
            url = getattr(self, name)
            if not (url.startswith("https://") or re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])[:/]", url)):
                raise ValueError(f"oidc.{name} must be an https:// URL (plain http only on loopback)")
        for name in ("client_secret", "session_secret"):
            value = self.secret(name)
            if len(value) < (32 if name == "session_secret" else 1):
                raise ValueError(f"oidc.{name} (or oidc.{name}_file) is missing or too short"
                                 + (" (at least 32 characters)" if name == "session_secret" else ""))
        return self

    def secret(self, name: str) -> str:
        """The secret ``name`` from its inline value or its ``<name>_file`` (content never echoed)."""
        inline, path = getattr(self, name), getattr(self, f"{name}_file")
        if inline is not None and path:
            raise ValueError(f"oidc.{name}: give the value or the _file, not both")
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    return handle.read().strip()
            except OSError as exc:
                raise ValueError(f"oidc.{name}_file: cannot read the file ({exc.strerror})") from None
        return inline.get_secret_value() if inline is not None else ""


class Settings(BaseSettings):
    """Everything the API reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="E2I_API_", env_file=".env", extra="ignore",
                                      hide_input_in_errors=True,
                                      env_nested_delimiter="__")

    dagster_host: str = "127.0.0.1"
    dagster_port: int = Field(default=3000, ge=1, le=65535)
    dagster_location: str = "e2i"
    dagster_repository: str = "__repository__"
    dagster_timeout_seconds: float = Field(default=10.0, gt=0)
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mlflow_tracking_uri: str = Field(
        default="", validation_alias=AliasChoices("E2I_API_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )
    mlflow_timeout_seconds: float = Field(default=3.0, gt=0)
    runs_page_limit: int = Field(default=100, ge=1, le=1000)
    log_level: str = "INFO"
    bind_host: str = "127.0.0.1"
    bind_port: int = Field(default=8000, ge=1, le=65535)
    # The instance's Postgres (postgresql:// URL): key lock across processes, run reads; unset = one process.
    database_url: SecretStr | None = None
    workers: int = Field(default=1, ge=1, le=32)
    idempotency_wait_seconds: float = Field(default=30.0, gt=0)
    oidc: OidcSettings = Field(default_factory=OidcSettings)  # UI login (Caddy forward_auth)
    # Per client, shared by every worker through database_url (e2i_api/core/rate_limit.py).
    rate_limit_read: str = Field(default="600/minute", pattern=_RATE)
    rate_limit_write: str = Field(default="60/minute", pattern=_RATE)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_queued_runs_per_client: int = Field(default=20, ge=1)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("CORS origins must be listed explicitly ('*' is not allowed)")
        return value

    @model_validator(mode="after")
    def _workers_need_database(self) -> Settings:
        if self.workers > 1 and self.database_url is None:
            raise ValueError(f"E2I_API_WORKERS={self.workers} needs E2I_API_DATABASE_URL: without the "
                             "instance's Postgres the Idempotency-Key lock is per process")
        return self

    @property
    def dagster_url(self) -> str:
        return f"http://{self.dagster_host}:{self.dagster_port}"


@functools.cache
def get_settings() -> Settings:
    """Settings read once from the environment."""
    return Settings()
