"""Idempotency keys: a POST sent again with the same `Idempotency-Key` (by the same account, within KEEP) gets
the first answer, and its work is done once.

A request claims its key (`begin`) before it runs. Its unit of work writes the answer to the key
(`settle`) in the same transaction as the work, so the two commit together or not at all: an answer
that was lost (a 503, a connection cut) is either in the key, or the work was undone and a retry runs it.
A claim is a token and a time: `settle` only writes under its own token, so a request that outlived its
claim, taken over since, fails instead of committing its work twice."""

import hashlib
import secrets
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import peewee

from models.base import BaseModel, DomainError, utcnow

KEEP = timedelta(hours=24)
# The headers of an answer that a replay repeats.
KEPT_HEADERS = ("content-type", "etag", "location", "link")


class IdempotencyKey(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=64)  # a digest of the account and the key
    fingerprint = peewee.CharField(max_length=64)  # a digest of the method, path, query and body
    token = peewee.CharField(max_length=32, null=True)  # the claim under way; None once answered
    claimed_until = peewee.DateTimeField()
    status = peewee.IntegerField(null=True)
    headers = peewee.TextField(null=True)  # JSON: [[name, value], ...]
    body = peewee.BlobField(null=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)

    @classmethod
    def prune(cls, now: datetime) -> int:
        return cls.delete().where(cls.created_at < now - KEEP).execute()


@dataclass(frozen=True)
class Claim:
    digest: str
    token: str


@dataclass(frozen=True)
class Begun:
    """What `begin` found: `claim` to run the request under, or `answer` to replay."""

    claim: Claim | None = None
    answer: IdempotencyKey | None = None


class KeyInProgress(DomainError):
    """Another request holds this Idempotency-Key (or took it over from this one)."""

    def __init__(self) -> None:
        super().__init__("a request with this Idempotency-Key is in progress; retry once it has been answered")


class KeyReused(DomainError):
    """This Idempotency-Key was used for another request."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used within 24 hours for a request with another method, path "
                         "or body; use a new key for a new request")


# The claim of the request being served, for its unit of work's `settle`.
current: ContextVar[Claim | None] = ContextVar("idempotency_claim", default=None)


def digest(*parts: bytes) -> str:
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(hashlib.sha256(part).digest())  # each part's own digest: no two splits collide
    return hashed.hexdigest()


def begin(account_id: str, key: str, fingerprint: str, claim: timedelta) -> Begun:
    """Claims the account's `key` for a request of this `fingerprint` for `claim` (longer than its work may
    run: a claim older belongs to a request that gave up or died), or finds its answer; else KeyInProgress
    or KeyReused. In a transaction."""
    now, token = utcnow(), secrets.token_hex(16)
    key_digest = digest(account_id.encode(), key.encode())
    fresh = {"fingerprint": fingerprint, "token": token, "claimed_until": now + claim, "status": None,
             "headers": None, "body": None, "created_at": now}
    model = IdempotencyKey
    model.insert(id=key_digest, **fresh).on_conflict_ignore().execute()
    found = model.get_or_none(model.id == key_digest)
    if found is None:  # released by its request just now
        raise KeyInProgress
    if found.token == token:
        return Begun(claim=Claim(key_digest, token))
    if found.created_at < now - KEEP:  # past its time: the key is free again
        taken = model.update(**fresh).where(model.id == key_digest, model.created_at < now - KEEP).execute()
        if not taken:
            raise KeyInProgress
        return Begun(claim=Claim(key_digest, token))
    if found.fingerprint != fingerprint:
        raise KeyReused
    if found.status is not None:
        return Begun(answer=found)
    if found.claimed_until < now:  # its request gave up or died: this one takes over
        taken = model.update(token=token, claimed_until=now + claim).where(
            model.id == key_digest, model.token == found.token, model.status.is_null()).execute()
        if taken:
            return Begun(claim=Claim(key_digest, token))
        # Answered meanwhile: on PostgreSQL the update waited for the request's commit, whose answer counts.
        found = model.get_or_none(model.id == key_digest)
        if found is not None and found.status is not None:
            return Begun(answer=found)
    raise KeyInProgress


def settle(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Keeps the answer of the request being served under its claim, if it has one: call it in the
    transaction of the request's work. Raises KeyInProgress, undoing the work, when the claim is no
    longer this request's."""
    claim = current.get()
    if claim is None:
        return
    kept = [[name, value] for name, value in headers.items() if name.lower() in KEPT_HEADERS]
    model = IdempotencyKey
    if not model.update(status=status, headers=orjson.dumps(kept).decode(), body=body, token=None).where(
            model.id == claim.digest, model.token == claim.token, model.status.is_null()).execute():
        raise KeyInProgress


def release(claim: Claim) -> None:
    """Frees a claim whose request kept no answer (its work was undone): a retry runs it again."""
    IdempotencyKey.delete().where(IdempotencyKey.id == claim.digest, IdempotencyKey.token == claim.token,
                                  IdempotencyKey.status.is_null()).execute()
