"""Configuration: environment variables, checked once at start."""

import os
import re
from dataclasses import dataclass, fields

from models.limits import Limits
from onboards.clients import networks


class ConfigError(ValueError):
    """A setting with a value the service cannot run with; the message names it."""


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0 or (value == 0 and name not in ZERO_ALLOWED):
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


ZERO_ALLOWED = {"AUTH_CACHE_SECONDS", "RESEND_COOLDOWN_SECONDS"}


def _flag(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1 or 0)")


def _url(name: str, raw: str, schemes: tuple[str, ...], *, required: bool) -> str:
    if (raw or required) and raw.split(":", 1)[0] not in schemes:
        shown = re.sub(r"//[^@/]*@", "//…@", raw)  # never print a password
        raise ConfigError(f"{name}={shown!r} must start with one of {', '.join(s + '://' for s in schemes)}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable (the field name in capitals) and its default."""

    database_url: str = "sqlite:///data/onboards.db"
    host: str = "127.0.0.1"
    port: int = 8080
    public_base_url: str = ""  # empty: http://HOST:PORT
    smtp_url: str = ""
    smtp_ca_file: str = ""  # empty: the system's certificate store
    smtp_require_tls: bool = False
    mail_from: str = "onboards@localhost"
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    header_timeout_seconds: float = 10.0
    keep_alive_seconds: int = 5
    max_connections: int = 1000
    max_connections_per_client: int = 100  # per peer address; a peer in TRUSTED_PROXIES is not capped
    write_timeout_seconds: float = 30.0
    body_memory_bytes: int = 128 * 1024 * 1024  # request bodies held at once, across all requests
    db_max_connections: int = 64
    worker_threads: int = 0  # 0: chosen by the database (handler_threads)
    outbox_poll_seconds: float = 0.5
    outbox_retry_base_seconds: float = 2.0
    outbox_retry_max_seconds: float = 300.0
    outbox_lease_seconds: float = 60.0
    outbox_max_attempts: int = 10
    outbox_retention_days: float = 30.0
    invitations_per_account_per_hour: int = Limits.invitations_per_account_per_hour
    invitations_per_address_per_day: int = Limits.invitations_per_address_per_day
    resend_cooldown_seconds: float = Limits.resend_cooldown_seconds
    failed_auth_per_minute: int = Limits.failed_auth_per_minute
    db_statement_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 8.0
    validate_responses: bool = False
    auth_cache_seconds: float = 5.0
    access_log: bool = True
    log_format: str = "json"
    log_level: str = "INFO"
    sandbox: bool = False
    sandbox_token: str = ""
    trusted_proxies: str = ""  # addresses and CIDR blocks whose X-Forwarded-For / Forwarded is believed

    @property
    def handler_threads(self) -> int:
        """WORKER_THREADS, or where it is not set, 1 on SQLite and 4 on PostgreSQL. On SQLite the work is
        the CPU's (under the GIL), and more threads only contend for it; PostgreSQL's round trips leave the
        GIL free for another thread meanwhile."""
        return self.worker_threads or (1 if self.on_sqlite else 4)

    @property
    def base_url(self) -> str:
        """Where clients reach this server: the served spec's `servers` entry."""
        return self.public_base_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @property
    def on_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> "Settings":
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for field in fields(cls):
            name = field.name.upper()
            if name not in env:
                continue
            raw = env[name].strip()
            if field.type is int or field.type == "int":
                values[field.name] = _positive_int(name, raw)
            elif field.type is float or field.type == "float":
                values[field.name] = _positive_float(name, raw)
            elif field.type is bool or field.type == "bool":
                values[field.name] = _flag(name, raw)
            else:
                values[field.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        _url("DATABASE_URL", settings.database_url, ("sqlite", "postgres", "postgresql"), required=True)
        _url("SMTP_URL", settings.smtp_url, ("smtp", "smtps"), required=False)
        _url("PUBLIC_BASE_URL", settings.public_base_url, ("http", "https"), required=False)
        if settings.smtp_ca_file and not os.path.isfile(settings.smtp_ca_file):
            raise ConfigError(f"SMTP_CA_FILE={settings.smtp_ca_file!r} is not a file")
        if settings.log_format not in ("json", "text"):
            raise ConfigError(f"LOG_FORMAT={settings.log_format!r} must be json or text")
        if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"LOG_LEVEL={settings.log_level!r} must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        if settings.sandbox and len(settings.sandbox_token) < 16:
            raise ConfigError("SANDBOX=1 needs SANDBOX_TOKEN, at least 16 characters "
                              "(`onboards serve --sandbox` makes one)")
        try:
            networks(settings.trusted_proxies)
        except ValueError as error:
            raise ConfigError(f"TRUSTED_PROXIES={settings.trusted_proxies!r}: {error}") from None
        if settings.body_memory_bytes < settings.max_body_bytes:
            raise ConfigError(f"BODY_MEMORY_BYTES={settings.body_memory_bytes} is less than MAX_BODY_BYTES="
                              f"{settings.max_body_bytes}: a body of the largest size would never be taken")
        if not 0 < settings.port < 65536:
            raise ConfigError(f"PORT={settings.port} is not a TCP port")
        return settings
