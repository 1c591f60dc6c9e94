"""Accounts, their users, and the users' API keys."""

import hmac
import re
import secrets
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee

from models.base import (
    CONTROL_CHARACTERS,
    BaseModel,
    DomainError,
    InvalidValue,
    NotFound,
    compiled,
    db,
    digest_of,
    locked,
    utcnow,
)

# Far enough for any test suite, near enough that every date the service computes stays within year 9999.
MAX_CLOCK_OFFSET = timedelta(days=100 * 365)


class ClockLimit(DomainError):
    """A sandbox account's clock moved past MAX_CLOCK_OFFSET ahead of the real one."""


class UserExists(DomainError):
    """A user with this e-mail address exists already."""


class SettingsExist(DomainError):
    """The user's settings exist already (POST, where PUT changes them)."""


class Account(BaseModel):
    name = peewee.CharField(max_length=200)
    time_zone = peewee.CharField(max_length=64, null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    # Made in sandbox mode; a sandbox server refuses a database holding any other account.
    sandbox = peewee.BooleanField(default=False)
    # Sandbox mode: how far this account's clock runs ahead of the real one (advance_clock).
    clock_offset_seconds = peewee.FloatField(default=0)

    def as_json(self) -> dict:
        """The account's own members (handlers.account adds its connections)."""
        return {"id": self.id, "sso_id": None, "name": self.name, "time_zone": self.time_zone,
                "created_at": self.created_at}

    @classmethod
    def pair(cls, first_id: str, second_id: str) -> tuple["Account", "Account"]:
        """Two accounts read in one statement, in the order asked."""
        statement = compiled((cls, "pair"), lambda first, second: cls.select().where(
            cls.id.in_([first, second])), str, str)
        found = {account.id: account for account in statement.rows(cls, first_id, second_id)}
        if first_id not in found or second_id not in found:
            raise cls.DoesNotExist(  # type: ignore[attr-defined]  # as get_by_id does
                f"account {first_id} or {second_id} does not exist")
        return found[first_id], found[second_id]

    @classmethod
    def get_locked(cls, account_id: str) -> "Account":
        """The account, locked until the transaction ends (a PUT compares and changes it in one)."""
        return locked(cls.select().where(cls.id == account_id)).get()

    def replace_with(self, body: dict[str, Any]) -> "Account":
        self.name = body.get("name", self.name)
        self.time_zone = body.get("time_zone", self.time_zone)
        self.save()
        return self

    def user_emails(self) -> list[str]:
        statement = compiled((User, "emails"), lambda account: User.select(User.email).where(
            User.account == account).order_by(User.id), str)
        return [email for (email,) in statement.execute(self.id).fetchall()]

    def summary(self) -> dict:
        return {"id": self.id, "sso_id": None, "name": self.name}

    @classmethod
    def advance_clock(cls, account_id: str, seconds: int) -> "Account":
        """Sandbox mode: the account's clock moved `seconds` further ahead, in one conditional update (two
        advances at once both count), at most MAX_CLOCK_OFFSET ahead in all."""
        moved = cls.update(clock_offset_seconds=cls.clock_offset_seconds + seconds).where(
            cls.id == account_id, cls.clock_offset_seconds + seconds <= MAX_CLOCK_OFFSET.total_seconds()).execute()
        account = cls.get_or_none(cls.id == account_id)
        if account is None:
            raise NotFound("account not found")
        if not moved:
            raise ClockLimit(f"an account's clock runs at most {MAX_CLOCK_OFFSET.days} days ahead of the real one")
        return account

    @classmethod
    def create_with_user(cls, name: str, email: str, *, sandbox: bool = False, user_name: str | None = None,
                         key: bool = True) -> tuple["Account", "User", str]:
        """A new account with its first user and that user's first API key (returned in clear; without
        `key`, none is made yet and "" is returned)."""
        name, address = name.strip(), normalize_email(email)
        if not 0 < len(name) <= 200 or CONTROL_CHARACTERS.search(name):
            raise InvalidValue("an account name has 1 to 200 characters, on one line, without control characters")
        if not is_address(address):
            raise InvalidValue(f"not an e-mail address: {email[:100]!r}")
        if User.select().where(User.email == address).exists():
            raise UserExists(f"a user with e-mail {address} already exists")
        account = cls.create(name=name, sandbox=sandbox)
        user = User.create(account=account, email=address, name=user_name)
        return account, user, ApiKey.issue(user) if key else ""


# Exactly one addr-spec of RFC 5322 in ASCII: a dot-atom local part, an `@`, and a domain of at least two
# LDH labels (an internationalized domain goes as punycode). No display name, quotes, comments, spaces,
# separators or control characters: what a mail library could read as a second recipient or a header.
# openapi.yaml's InvitationRequest.email has the same pattern (tests/test_spec.py holds them equal).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Whether accounts' clocks may run ahead: sandbox mode only; set by the serving app for each request.
_clocks: ContextVar[bool] = ContextVar("clocks", default=False)


def use_clocks(on: bool) -> Token[bool]:
    """Whether accounts' clocks may run ahead, in this context."""
    return _clocks.set(on)


def now_for(account_id: str) -> datetime:
    """Now, as the account's clock says: the real time, unless sandbox mode moved its clock ahead."""
    if not _clocks.get():
        return utcnow()
    offset = Account.select(Account.clock_offset_seconds).where(Account.id == account_id).scalar() or 0.0
    return utcnow() + timedelta(seconds=offset)


EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_LABEL}")
MAX_EMAIL = 254


def is_address(email: str) -> bool:
    return len(email) <= MAX_EMAIL and EMAIL.fullmatch(email) is not None


def normalize_email(email: str) -> str:
    return email.strip().lower()


class User(BaseModel):
    account_id: str
    account = peewee.ForeignKeyField(Account, backref="users", on_delete="CASCADE")
    email = peewee.CharField(max_length=254, unique=True)
    name = peewee.CharField(max_length=200, null=True)  # as the user gave it when joining by an invitation
    created_at = peewee.DateTimeField(default=utcnow)

    def as_json(self) -> dict:
        account = Account.get_by_id(self.account_id)
        return {"id": self.id, "email": self.email, "sso_id": None,
                "accounts": [{"id": account.id, "name": account.name}], "created_at": self.created_at}

    @classmethod
    def by_email(cls, email: str) -> "User":
        user = cls.select().where(cls.email == normalize_email(email)).first()
        if user is None:
            raise NotFound(f"no user with e-mail {normalize_email(email)}")
        return user


NOTIFICATIONS = ("submission_doc_updates", "connection_invites")


class UserSettings(BaseModel):
    """A user's notification switches; its id is the user's. Until a user has settings, every one is on."""

    connection_invites = peewee.BooleanField(default=True)
    connection_invites_unsubscribed_at = peewee.DateTimeField(null=True)
    submission_doc_updates = peewee.BooleanField(default=True)
    submission_doc_updates_unsubscribed_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(null=True)
    updated_at = peewee.DateTimeField(null=True)

    @classmethod
    def of(cls, user_id: str, *, for_update: bool = False) -> "UserSettings":
        """The user's settings, or (not stored) the defaults."""
        query = cls.select().where(cls.id == user_id)
        return (locked(query) if for_update else query).first() or cls(id=user_id)

    @classmethod
    def create_for(cls, user_id: str, body: dict[str, Any]) -> "UserSettings":
        """POST: the settings made now; a conflict when they exist (the primary key settles a race)."""
        try:
            with db.atomic():  # a savepoint: losing leaves the transaction usable
                return cls(id=user_id).set_from(body)
        except peewee.IntegrityError:
            raise SettingsExist("this user's settings exist already: change them with PUT") from None

    @classmethod
    def put_for(cls, user_id: str, body: dict[str, Any]) -> "UserSettings":
        """PUT: the settings changed, made first if there were none (a concurrent PUT that made them
        first is then changed instead)."""
        try:
            with db.atomic():
                return cls.of(user_id, for_update=True).set_from(body)
        except peewee.IntegrityError:
            return cls.of(user_id, for_update=True).set_from(body)

    def set_from(self, body: dict[str, Any]) -> "UserSettings":
        now = utcnow()
        for name in NOTIFICATIONS:
            wanted = body.get("notifications", {}).get(name)
            if wanted is not None and wanted["enabled"] != getattr(self, name):
                setattr(self, name, wanted["enabled"])
                setattr(self, f"{name}_unsubscribed_at", None if wanted["enabled"] else now)
        created = self.created_at is None
        self.created_at, self.updated_at = self.created_at or now, now
        self.save(force_insert=created)
        return self

    @classmethod
    def invites_off(cls, email: str) -> bool:
        """Whether the user of this address turned invitation e-mails off."""
        return cls.select().join(User, on=(cls.id == User.id)).where(
            User.email == email, cls.connection_invites == False).exists()  # noqa: E712 (SQL)

    def as_json(self) -> dict:
        return {"id": self.id, "created_at": self.created_at, "updated_at": self.updated_at,
                "notifications": {name: {"enabled": getattr(self, name),
                                         "unsubscribed_at": getattr(self, f"{name}_unsubscribed_at")}
                                  for name in NOTIFICATIONS}}


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the key's user and that user's account."""

    user_id: str
    account_id: str


class ApiKey(BaseModel):
    """An API key, kept only as its SHA-256 digest; `prefix` names it to operators."""

    user = peewee.ForeignKeyField(User, backref="api_keys", on_delete="CASCADE")
    prefix = peewee.CharField(max_length=8, index=True)
    digest = peewee.CharField(max_length=64, unique=True)
    created_at = peewee.DateTimeField(default=utcnow)
    revoked_at = peewee.DateTimeField(null=True)

    @classmethod
    def issue(cls, user: User) -> str:
        key = secrets.token_hex(20)
        cls.create(user=user, prefix=key[:8], digest=digest_of(key))
        return key

    @classmethod
    def authenticate(cls, key: str) -> Principal | None:
        """The principal of a live key, or None.

        The digest lookup is an index seek on a hash that reveals nothing about the key; the final
        comparison is constant-time anyway, so no timing difference depends on how much matched.
        """
        digest = digest_of(key)
        statement = compiled((cls, "authenticate"), lambda digest: cls.select(cls.digest, User.id, User.account).join(
            User).where(cls.digest == digest, cls.revoked_at.is_null()).limit(1), str)
        row = statement.execute(digest).fetchone()
        if row is None or not hmac.compare_digest(row[0], digest):
            return None
        return Principal(user_id=row[1], account_id=row[2])

    @classmethod
    def revoke(cls, prefix: str) -> int:
        """Revokes the live keys whose first 8 characters are `prefix`'s; how many were revoked."""
        prefix = prefix.strip().lower()
        if len(prefix) < 8:
            raise InvalidValue("give at least the first 8 characters of the key")
        revoked = (cls.update(revoked_at=utcnow())
                   .where(cls.prefix == prefix[:8], cls.revoked_at.is_null()).execute())
        if not revoked:
            raise NotFound(f"no live key starts with {prefix[:8]}")
        return revoked

