"""The notification outbox: e-mails written in the transaction that causes them, sent after commit."""

import secrets
from collections.abc import Collection
from datetime import datetime, timedelta

import peewee

from models.base import CONTROL_CHARACTERS, BaseModel, compiled, is_postgres, utcnow


class OutboxMessage(BaseModel):
    kind = peewee.CharField(max_length=40)
    to = peewee.CharField(max_length=254)
    subject = peewee.CharField(max_length=300)
    body = peewee.TextField()
    created_at = peewee.DateTimeField(default=utcnow)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(default=utcnow)
    # A sender owns a message until this time; after it, another sender may take it over.
    claimed_until = peewee.DateTimeField(null=True)
    # The claim's own secret: a sender renews, releases or fails a message only while it still holds it.
    lease_token = peewee.CharField(max_length=32, null=True)
    sent_at = peewee.DateTimeField(null=True)
    # Parked: refused for good, or out of attempts. Not tried again unless an operator asks (retry_failed).
    failed_at = peewee.DateTimeField(null=True)
    # Never to be sent: its recipient turned this kind of e-mail off (last_error says so).
    suppressed_at = peewee.DateTimeField(null=True)
    last_error = peewee.CharField(max_length=500, null=True)
    # What a reader of the mailbox needs without reading the text: the HTML alternative of the body, and
    # the invitation, connection and join link the e-mail is about (models.mail writes both from one template).
    html = peewee.TextField(null=True)
    invitation_id = peewee.CharField(max_length=24, null=True)
    connection_id = peewee.CharField(max_length=24, null=True)
    link = peewee.CharField(max_length=500, null=True)

    class Meta:
        indexes = ((("sent_at", "next_attempt_at"), False),)

    @classmethod
    def enqueue(cls, kind: str, to: list[str], subject: str, body: str, *, suppressed: str | None = None,
                html: str | None = None, invitation_id: str | None = None, connection_id: str | None = None,
                link: str | None = None) -> None:
        """Queues the e-mail to each address; with `suppressed`, records why it is not to be sent instead."""
        now = utcnow()
        # A subject is one header line: a line break in a name it quotes (stored before names were refused
        # them) would make every attempt to send it fail.
        subject = CONTROL_CHARACTERS.sub(" ", subject)
        for address in to:
            cls.create(kind=kind, to=address, subject=subject, body=body, created_at=now, next_attempt_at=now,
                       suppressed_at=now if suppressed else None, last_error=suppressed, html=html,
                       invitation_id=invitation_id, connection_id=connection_id, link=link)

    @classmethod
    def waiting(cls) -> "peewee.ModelSelect[OutboxMessage]":
        """Neither sent, parked nor suppressed."""
        return cls.select().where(cls.sent_at.is_null(), cls.failed_at.is_null(), cls.suppressed_at.is_null())

    @classmethod
    def claim_due(cls, now: datetime, lease: timedelta, limit: int) -> tuple[list["OutboxMessage"], bool]:
        """Takes up to `limit` messages due now for one delivery attempt each, under one new lease token, first
        tries before retries (messages failing again and again never hold up new ones); them, in that order, and
        whether more may be due. Their lease ends at `now + lease` unless renewed (`renew`). The rows are read
        locked (PostgreSQL skips those another sender is claiming; SQLite's write transactions run one at a time),
        so each is changed as read. A message whose last claim lapsed (its sender stopped without a word, perhaps
        because of it) is claimed alone: if it stops its sender again, it alone is charged the attempt, and sinks
        behind the others."""

        def due(at: str, most: int) -> peewee.Query:
            query = cls.waiting().where(cls.next_attempt_at <= at, cls.claimed_until.is_null() | (
                cls.claimed_until < at)).order_by(cls.attempts, cls.next_attempt_at, cls.id).limit(most)
            # peewee's docs take the clause as a string; its type hint says bool.
            return query.for_update("FOR UPDATE SKIP LOCKED") if is_postgres() else query  # type: ignore[arg-type]

        stamp = cls.claimed_until.db_value
        claimed: list[OutboxMessage] = compiled((cls, "due"), due, str, int).rows(cls, stamp(now), limit)
        more = len(claimed) == limit
        lapsed = [message.claimed_until is not None for message in claimed]
        if True in lapsed:
            more, claimed = True, claimed[:lapsed.index(True) or 1]
        if claimed:
            token, until = secrets.token_hex(16), now + lease
            statement = compiled((cls, "claim", len(claimed)), lambda until_, lease_token, *ids: cls.update(
                claimed_until=until_, lease_token=lease_token, attempts=cls.attempts + 1).where(cls.id.in_(ids)),
                str, str, *[str] * len(claimed))
            statement.execute(stamp(until), token, *(message.id for message in claimed))
            for message in claimed:
                message.attempts, message.claimed_until, message.lease_token = message.attempts + 1, until, token
        return claimed, more

    @classmethod
    def held_by(cls, lease_token: str | None, ids: Collection[str]) -> peewee.Expression:
        """The fence: the messages of `ids` still this claim's (not taken over, sent nor parked since)."""
        return cls.id.in_(list(ids)) & (cls.lease_token == lease_token) & cls.sent_at.is_null() & \
            cls.failed_at.is_null()

    def _held(self) -> peewee.Expression:
        return type(self).held_by(self.lease_token, [self.id])

    @classmethod
    def renew(cls, lease_token: str, ids: Collection[str], until: datetime) -> set[str]:
        """Extends to `until` the lease of the messages of `ids` that a claim still holds; their ids."""
        cls.update(claimed_until=until).where(cls.held_by(lease_token, ids)).execute()
        return {message.id for message in cls.select(cls.id).where(cls.held_by(lease_token, ids))}

    @classmethod
    def unclaim(cls, lease_token: str, ids: Collection[str]) -> None:
        """Gives back the messages of `ids`, never tried, that a claim still holds: due again at once, no attempt
        counted."""
        cls.update(claimed_until=None, lease_token=None, attempts=cls.attempts - 1).where(
            cls.held_by(lease_token, ids)).execute()

    def mark_sent(self) -> None:
        """Sent, whoever holds the lease now: the message is out, and no one is to send it again."""
        cls = type(self)
        statement = compiled((cls, "mark_sent"), lambda row_id, when: cls.update(
            sent_at=when, claimed_until=None, lease_token=None, last_error=None).where(
            cls.id == row_id, cls.sent_at.is_null()), str, str)
        statement.execute(self.id, cls.sent_at.db_value(utcnow()))

    def mark_failed(self, error: str, retry_at: datetime | None) -> None:
        """A failed attempt: tried again at `retry_at`, or parked when that is None."""
        changes = {"next_attempt_at": retry_at} if retry_at else {"failed_at": utcnow()}
        type(self).update(claimed_until=None, lease_token=None, last_error=error[:500], **changes).where(
            self._held()).execute()

    def release(self, error: str, retry_at: datetime) -> None:
        """An attempt the relay failed, not the message: not counted against the message, tried at `retry_at`."""
        cls = type(self)
        cls.update(claimed_until=None, lease_token=None, attempts=cls.attempts - 1, next_attempt_at=retry_at,
                   last_error=error[:500]).where(self._held()).execute()

    @classmethod
    def retry_failed(cls) -> int:
        """The parked messages queued again with fresh attempts; how many."""
        return cls.update(failed_at=None, attempts=0, next_attempt_at=utcnow(), last_error=None).where(
            cls.failed_at.is_null(False)).execute()

    @classmethod
    def prune(cls, before: datetime) -> int:
        """Deletes the messages sent, parked or suppressed before `before`; how many."""
        return cls.delete().where(
            (cls.sent_at < before) | (cls.failed_at < before) | (cls.suppressed_at < before)).execute()

    @classmethod
    def backlog(cls) -> int:
        return cls.waiting().count()

    @classmethod
    def parked(cls) -> int:
        return cls.select().where(cls.failed_at.is_null(False)).count()

    @property
    def state(self) -> str:
        if self.sent_at:
            return "sent"
        if self.failed_at:
            return "failed"
        if self.suppressed_at:
            return "suppressed"
        return "retrying" if self.attempts else "pending"

    def as_json(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "to": self.to, "subject": self.subject, "state": self.state,
            "attempts": self.attempts, "created_at": self.created_at,
            "sent_at": self.sent_at, "failed_at": self.failed_at,
            "next_attempt_at": self.next_attempt_at, "last_error": self.last_error,
        }
