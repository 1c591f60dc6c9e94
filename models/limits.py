"""Abuse limits that hold across every process sharing the database: counts per fixed window, each taken
by a conditional update, so that concurrent requests cannot overshoot a limit."""

from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee

from models.base import BaseModel, Refused, digest_of, seconds, utcnow


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


class Throttled(Refused):
    """A limit on how often something may happen reached, and how long until it lifts."""


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
        """Counts one more event, or raises Throttled when the window already holds `limit` of them: `kind`
        names the limit, `what` says what it counts, with `{limit}` and `{span}` (the window) in it.
        Inside the caller's transaction: if the request fails later, the event is not counted."""
        now = utcnow()
        key, until = cls._window(kind, subject, window.total_seconds(), now)
        cls.insert(id=key, count=0, until=until).on_conflict_ignore().execute()
        if not cls.update(count=cls.count + 1).where(cls.id == key, cls.count < limit).execute():
            raise reached(kind, limit, window, what, until - now)

    @classmethod
    def check(cls, kind: str, subject: str, limit: int, window: timedelta, what: str) -> None:
        """Raises Throttled, as `take` would, when the window holds `limit` events already; counts nothing."""
        now = utcnow()
        key, until = cls._window(kind, subject, window.total_seconds(), now)
        found = cls.select(cls.count).where(cls.id == key).first()
        if found is not None and found.count >= limit:
            raise reached(kind, limit, window, what, until - now)

    @classmethod
    def prune(cls, now: datetime) -> int:
        return cls.delete().where(cls.until < now).execute()


def reached(kind: str, limit: int, window: timedelta, what: str, left: timedelta) -> Throttled:
    """The refusal of the limit `kind` (as RateCounter.take words it), lifting in `left`."""
    return Throttled(kind, what.format(limit=limit, span=_span(window)), left.total_seconds())


def _span(window: timedelta) -> str:
    length = int(window.total_seconds())
    return {60: "minute", 3600: "hour", 86400: "day"}.get(length, seconds(length))
