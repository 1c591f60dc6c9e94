"""Abuse limits that hold across every process sharing the database: counts per fixed window, each taken
by a conditional update, so that concurrent requests cannot overshoot a limit."""

from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee

from models.base import BaseModel, DomainError, digest_of, utcnow


@dataclass(frozen=True)
class Limits:
    """The limits; onboards.config's settings of the same names set them."""

    invitations_per_account_per_hour: int = 100
    invitations_per_address_per_day: int = 5
    resend_cooldown_seconds: float = 300.0
    failed_auth_per_minute: int = 20


DEFAULTS = Limits()
_in_force: ContextVar[Limits] = ContextVar("limits", default=DEFAULTS)


class _InForce:
    """The limits in force in this context (the serving app's, set for each request), read as attributes."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_in_force.get(), name)


LIMITS: Any = _InForce()


def use(limits: Limits) -> Token[Limits]:
    """`limits` in force in this context."""
    return _in_force.set(limits)


class Throttled(DomainError):
    """A limit reached, and how long until it lifts."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))


class RateCounter(BaseModel):
    """How many of one kind of event one subject (an account, an address, a client) had in one window."""

    # "<kind>:<subject's sha256>:<window start>": bounded whatever a client sends as its subject
    id = peewee.CharField(primary_key=True, max_length=400)
    count = peewee.IntegerField(default=0)
    until = peewee.DateTimeField(index=True)  # the window's end

    @classmethod
    def _window(cls, kind: str, subject: str, seconds: float, now: datetime) -> tuple[str, datetime]:
        start = int(now.replace(tzinfo=UTC).timestamp() // seconds * seconds)  # times are stored naive, in UTC
        digest = digest_of(subject)
        return f"{kind}:{digest}:{start}", datetime.fromtimestamp(start + seconds, UTC).replace(tzinfo=None)

    @classmethod
    def take(cls, kind: str, subject: str, limit: int, window: timedelta, what: str) -> None:
        """Counts one more event, or raises Throttled when the window already holds `limit` of them.
        Inside the caller's transaction: if the request fails later, the event is not counted."""
        now = utcnow()
        key, until = cls._window(kind, subject, window.total_seconds(), now)
        cls.insert(id=key, count=0, until=until).on_conflict_ignore().execute()
        if not cls.update(count=cls.count + 1).where(cls.id == key, cls.count < limit).execute():
            raise Throttled(f"{what}: at most {limit} per {_span(window)}", (until - now).total_seconds())

    @classmethod
    def over(cls, kind: str, subject: str, limit: int, window: timedelta) -> float | None:
        """The seconds until the window lifts when it holds `limit` events already, else None."""
        now = utcnow()
        key, until = cls._window(kind, subject, window.total_seconds(), now)
        found = cls.select(cls.count).where(cls.id == key).first()
        return (until - now).total_seconds() if found is not None and found.count >= limit else None

    @classmethod
    def prune(cls, now: datetime) -> int:
        return cls.delete().where(cls.until < now).execute()


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    return {60: "minute", 3600: "hour", 86400: "day"}.get(seconds, f"{seconds} seconds")
