"""The notification outbox: e-mails written in the transaction that causes them, sent after commit."""

from datetime import datetime, timedelta

import peewee

from models.base import BaseModel, rfc3339, utcnow


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
    sent_at = peewee.DateTimeField(null=True)
    last_error = peewee.CharField(max_length=500, null=True)

    class Meta:
        indexes = ((("sent_at", "next_attempt_at"), False),)

    @classmethod
    def enqueue(cls, kind: str, to: list[str], subject: str, body: str) -> None:
        now = utcnow()
        rows = [{"kind": kind, "to": address, "subject": subject, "body": body, "created_at": now,
                 "next_attempt_at": now} for address in to]
        if rows:
            cls.insert_many(rows).execute()

    @classmethod
    def due(cls, now: datetime, limit: int) -> list["OutboxMessage"]:
        return list(cls.select().where(
            cls.sent_at.is_null(), cls.next_attempt_at <= now,
            cls.claimed_until.is_null() | (cls.claimed_until < now),
        ).order_by(cls.next_attempt_at, cls.id).limit(limit))

    def claim(self, now: datetime, lease: timedelta) -> bool:
        """Takes the message for one delivery attempt; False if another sender has it or sent it."""
        return bool(type(self).update(claimed_until=now + lease, attempts=type(self).attempts + 1).where(
            type(self).id == self.id, type(self).sent_at.is_null(),
            type(self).claimed_until.is_null() | (type(self).claimed_until < now),
        ).execute())

    def mark_sent(self) -> None:
        type(self).update(sent_at=utcnow(), claimed_until=None, last_error=None).where(
            type(self).id == self.id).execute()

    def mark_failed(self, error: str, retry_at: datetime) -> None:
        type(self).update(claimed_until=None, last_error=error[:500], next_attempt_at=retry_at).where(
            type(self).id == self.id).execute()

    @classmethod
    def backlog(cls) -> int:
        return cls.select().where(cls.sent_at.is_null()).count()

    def as_json(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "to": self.to, "subject": self.subject,
            "state": "sent" if self.sent_at else ("retrying" if self.attempts else "pending"),
            "attempts": self.attempts, "created_at": rfc3339(self.created_at),
            "sent_at": rfc3339(self.sent_at), "next_attempt_at": rfc3339(self.next_attempt_at),
            "last_error": self.last_error,
        }
