"""Accounts, their users, and the users' API keys."""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import peewee

from models.base import BaseModel, DomainError, NotFound, utcnow


class Account(BaseModel):
    name = peewee.CharField(max_length=200)
    created_at = peewee.DateTimeField(default=utcnow)

    def user_emails(self) -> list[str]:
        return [u.email for u in User.select(User.email).where(User.account == self.id).order_by(User.id)]

    def summary(self) -> dict:
        return {"id": self.id, "sso_id": None, "name": self.name}

    @classmethod
    def create_with_user(cls, name: str, email: str) -> tuple["Account", "User", str]:
        """A new account with its first user and that user's first API key (returned in clear)."""
        name, address = name.strip(), normalize_email(email)
        if not 0 < len(name) <= 200:
            raise DomainError("an account name has 1 to 200 characters")
        if not is_address(address):
            raise DomainError(f"not an e-mail address: {email[:100]!r}")
        if User.select().where(User.email == address).exists():
            raise DomainError(f"a user with e-mail {address} already exists")
        account = cls.create(name=name)
        user = User.create(account=account, email=address)
        return account, user, ApiKey.issue(user)


# Exactly one addr-spec of RFC 5322 in ASCII: a dot-atom local part, an `@`, and a domain of at least two
# LDH labels (an internationalized domain goes as punycode). No display name, quotes, comments, spaces,
# separators or control characters: what a mail library could read as a second recipient or a header.
# openapi.yaml's InvitationRequest.email has the same pattern (tests/test_spec.py holds them equal).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
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
    created_at = peewee.DateTimeField(default=utcnow)

    @classmethod
    def by_email(cls, email: str) -> "User":
        user = cls.select().where(cls.email == normalize_email(email)).first()
        if user is None:
            raise NotFound(f"no user with e-mail {normalize_email(email)}")
        return user


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

    @staticmethod
    def digest_of(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    @classmethod
    def issue(cls, user: User) -> str:
        key = secrets.token_hex(20)
        cls.create(user=user, prefix=key[:8], digest=cls.digest_of(key))
        return key

    @classmethod
    def authenticate(cls, key: str) -> Principal | None:
        """The principal of a live key, or None.

        The digest lookup is an index seek on a hash that reveals nothing about the key; the final
        comparison is constant-time anyway, so no timing difference depends on how much matched.
        """
        digest = cls.digest_of(key)
        row = (cls.select(cls.digest, User.id, User.account)
               .join(User).where(cls.digest == digest, cls.revoked_at.is_null()).first())
        if row is None or not hmac.compare_digest(row.digest, digest):
            return None
        return Principal(user_id=row.user.id, account_id=row.user.account_id)

    @classmethod
    def revoke(cls, prefix: str) -> int:
        """Revokes the live keys whose first 8 characters are `prefix`'s; how many were revoked."""
        prefix = prefix.strip().lower()
        if len(prefix) < 8:
            raise DomainError("give at least the first 8 characters of the key")
        revoked = (cls.update(revoked_at=utcnow())
                   .where(cls.prefix == prefix[:8], cls.revoked_at.is_null()).execute())
        if not revoked:
            raise NotFound(f"no live key starts with {prefix[:8]}")
        return revoked

