"""Settings, read once from the environment (prefix `TOKENSTORE_`) and injected.

In development (the default) nothing needs configuring: missing secrets are generated once
and kept in a file of mode 0600 under the data directory, so tokens survive a restart. In
production the service refuses to start without real secrets.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.kit.keys import KeyListError, KeyRing

DEV_SECRETS_FILE = "dev-secrets.json"
MIN_SECRET_LENGTH = 32


class ConfigError(Exception):
    """The settings cannot be used; the message says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENSTORE_", frozen=True)

    env: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///var/tokenstore.sqlite3"
    data_dir: Path = Path("var")
    admin_api_key: str | None = None
    admin_api_secret: SecretStr | None = None
    # Several operator key pairs at once, `key:secret,key:secret` (a new pair goes live
    # before the old one is removed); the pair above, when set, is one more.
    admin_credentials: SecretStr | None = None
    hash_secret: SecretStr | None = None
    # The key ring, `id:secret,id:secret`, the current key first (app.kit.keys); when set,
    # it replaces `hash_secret`, whose single key has the id "default".
    hash_secrets: SecretStr | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # The HTTP front door (app.server): request line and headers together, header fields,
    # and how long a client may take to send the head and then the body (408 past them).
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    max_headers: int = Field(default=100, ge=10, le=10_000)
    header_timeout_seconds: float = Field(default=10, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    # An idle connection (before its first request, or between requests) is closed after
    # this long.
    keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    # Connections per worker process, and how long a request waits for a free one (503).
    db_pool_size: int = Field(default=16, ge=1)
    db_pool_timeout_seconds: float = Field(default=10, gt=0, le=300)
    # PostgreSQL: the longest a request's statement may run, lock waits included (503).
    db_statement_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    # PostgreSQL: a transaction left idle this long is ended by the server (a safety net:
    # no transaction waits on a client).
    db_idle_in_transaction_timeout_seconds: float = Field(default=10, gt=0, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # RFC 9449 section 11.1: how old a DPoP proof's iat may be, and how far in the future.
    dpop_proof_max_age_seconds: int = Field(default=60, ge=1, le=3600)
    dpop_clock_skew_seconds: int = Field(default=5, ge=0, le=300)
    # RFC 9701: the `iss` of JWT introspection responses, the authorization server's issuer
    # identifier; "{serviceId}" is replaced by the service's API key.
    issuer: str = Field(default="urn:tokenstore:service:{serviceId}", min_length=1)
    # The expired-token purge inside `serve`: every this many seconds (0: never).
    purge_interval_seconds: int = Field(default=0, ge=0)
    purge_batch_size: int = Field(default=1000, ge=1, le=100_000)
    # How often `serve` counts the rows that depend on each hash secret for the metric
    # `tokenstore_keyed_rows` (app.keyring; 0: never).
    keyed_rows_interval_seconds: int = Field(default=60, ge=0)
    # The event log (app.events): how long the purge keeps events, the NATS server the
    # relay publishes them to (None: no publishing; history and the poll feed stay on),
    # and how often the relay looks for new events when no notification woke it.
    events_retention_days: int = Field(default=90, ge=1, le=36_500)
    events_nats_url: str | None = None
    events_poll_seconds: float = Field(default=0.25, gt=0, le=60)
    # Serves POST /bench/noop, the framework floor of bench/ (never in production).
    bench_endpoints: bool = False

    @property
    def key_ring(self) -> KeyRing:
        """The hash secrets: TOKENSTORE_HASH_SECRETS, else TOKENSTORE_HASH_SECRET as the
        single key "default". Parsed (and its keys derived) once per distinct value."""
        return _key_ring(
            None if self.hash_secrets is None else self.hash_secrets.get_secret_value(),
            None if self.hash_secret is None else self.hash_secret.get_secret_value(),
        )

    @property
    def hash_key(self) -> bytes:
        """The current key's secret: every new keyed value is made with it."""
        return self.key_ring.current.secret

    def operators(self) -> list[tuple[str, str]]:
        """Every valid operator key pair: TOKENSTORE_ADMIN_CREDENTIALS, and the single
        TOKENSTORE_ADMIN_API_KEY / _SECRET pair when set."""
        pairs = []
        if self.admin_credentials is not None:
            for number, entry in enumerate(
                self.admin_credentials.get_secret_value().split(","), start=1
            ):
                key, colon, secret = entry.strip().partition(":")
                if not (key and colon and secret):
                    raise ConfigError(
                        f"TOKENSTORE_ADMIN_CREDENTIALS: entry {number} is not key:secret."
                    )
                pairs.append((key, secret))
        if self.admin_api_key and self.admin_api_secret is not None:
            pairs.append((self.admin_api_key, self.admin_api_secret.get_secret_value()))
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ConfigError("An operator key is listed more than once.")
        return pairs

    def check_production(self) -> None:
        """Refuse to run in production on missing or short secrets."""
        if self.env != "production":
            return
        problems = []
        if self.bench_endpoints:
            problems.append("TOKENSTORE_BENCH_ENDPOINTS is for benchmarks only")
        if self.admin_credentials is None:
            if not self.admin_api_key:
                problems.append(
                    "TOKENSTORE_ADMIN_API_KEY (or TOKENSTORE_ADMIN_CREDENTIALS) is not set"
                )
            secret = self.admin_api_secret
            if secret is None or len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
                problems.append(
                    f"TOKENSTORE_ADMIN_API_SECRET must be at least {MIN_SECRET_LENGTH} characters"
                )
        elif any(len(secret) < MIN_SECRET_LENGTH for _, secret in self.operators()):
            problems.append(
                f"every operator secret must be at least {MIN_SECRET_LENGTH} characters"
            )
        if self.hash_secrets is None and self.hash_secret is None:
            problems.append(
                f"TOKENSTORE_HASH_SECRET (or TOKENSTORE_HASH_SECRETS) must be at least "
                f"{MIN_SECRET_LENGTH} characters"
            )
        else:
            for key in self.key_ring.keys:
                if len(key.secret) < MIN_SECRET_LENGTH:
                    problems.append(
                        f"the hash secret of key id {key.id!r} must be at least "
                        f"{MIN_SECRET_LENGTH} characters"
                    )
        if problems:
            raise ConfigError(
                "Refusing to start with TOKENSTORE_ENV=production: " + "; ".join(problems) + "."
            )

    def with_development_secrets(self) -> tuple[Settings, Path | None]:
        """Fill missing secrets from (or into) the data directory's development secrets file.

        Returns the completed settings and the file's path when this call created it, so the
        caller can tell the user, once, where the operator credentials are.
        """
        has_operator = bool(self.admin_credentials) or bool(
            self.admin_api_key and self.admin_api_secret
        )
        has_hash = self.hash_secret is not None or self.hash_secrets is not None
        if self.env == "production" or (has_operator and has_hash):
            return self, None
        path = self.data_dir / DEV_SECRETS_FILE
        created = None
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
        else:
            stored = {
                "adminApiKey": str(secrets.randbelow(9 * 10**14) + 10**14),
                "adminApiSecret": secrets.token_urlsafe(32),
                "hashSecret": secrets.token_urlsafe(32),
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL and mode 0600: never overwrite, never readable by other users.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(stored, handle, indent=2)
            created = path
        update: dict[str, object] = {}
        if not has_operator:
            update["admin_api_key"] = self.admin_api_key or stored["adminApiKey"]
            update["admin_api_secret"] = self.admin_api_secret or SecretStr(
                stored["adminApiSecret"]
            )
        if not has_hash:
            update["hash_secret"] = SecretStr(stored["hashSecret"])
        completed = self.model_copy(update=update)
        return completed, created


@lru_cache(maxsize=8)
def _key_ring(listed: str | None, single: str | None) -> KeyRing:
    if listed is not None:
        try:
            return KeyRing.parse(listed)
        except KeyListError as error:
            raise ConfigError(f"TOKENSTORE_HASH_SECRETS: {error}.") from None
    if single is None:
        raise ConfigError("Set TOKENSTORE_HASH_SECRETS (or TOKENSTORE_HASH_SECRET).")
    return KeyRing.single(single.encode("utf-8"))
