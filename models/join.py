"""The invitee's way in through the join pages: accounts made by a join link, one-time sign-in codes and
server-side sessions. Every secret is kept only as its SHA-256 digest and compared in constant time."""

import hmac
import secrets
from datetime import timedelta

import peewee

from models import limits
from models.accounts import Account, ApiKey, User, UserExists, normalize_email
from models.base import BaseModel, digest_of, new_id, utcnow
from models.invitations import Invitation, JoinToken
from models.limits import RateCounter
from models.mail import compose
from models.outbox import OutboxMessage

CODE_TTL = timedelta(minutes=10)
CODE_TRIES = 5  # wrong tries that end a code
SESSION_TTL = timedelta(hours=12)
ATTEMPT_WINDOW = timedelta(minutes=1)
JOIN_ATTEMPTS = "join-attempts-per-address"
TOO_MANY_ATTEMPTS = "at most {limit} failed sign-in and join attempts per {span} from this address"


def count_failure(client: str) -> None:
    """One failed sign-in or join attempt of a client, within the API's limit on failed authentications
    (FAILED_AUTH_PER_MINUTE): Throttled beyond it."""
    RateCounter.take(JOIN_ATTEMPTS, client, limits.LIMITS.failed_auth_per_minute, ATTEMPT_WINDOW, TOO_MANY_ATTEMPTS)


def refuse_if_throttled(client: str) -> None:
    """Throttled when the client failed too often to try again yet."""
    RateCounter.check(JOIN_ATTEMPTS, client, limits.LIMITS.failed_auth_per_minute, ATTEMPT_WINDOW, TOO_MANY_ATTEMPTS)


def create_account(token: str, company: str, user_name: str) -> tuple[User, Invitation]:
    """A new account for the invitation's address (the link proves it), its first user named `user_name`;
    the link is spent. Its API key is made later, when the key page shows it (JoinSession.take_key)."""
    link, invitation = JoinToken.find(token)
    link.use()  # undone with the rest when the account cannot be made
    try:
        _account, user, _ = Account.create_with_user(company, invitation.email, user_name=user_name, key=False)
    except UserExists:
        raise UserExists(f"{invitation.email} has an account already: sign in instead") from None
    return user, invitation


class SignInCode(BaseModel):
    """A one-time code e-mailed to a user: it signs in once, within CODE_TTL and CODE_TRIES wrong tries.
    A new code ends the address's earlier ones."""

    email = peewee.CharField(max_length=254, index=True)
    digest = peewee.CharField(max_length=64)
    tries = peewee.IntegerField(default=0)
    expires_at = peewee.DateTimeField()
    used_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)

    @classmethod
    def send(cls, email: str) -> None:
        """E-mails a new code to `email` when a user has that address (nothing tells anyone whether one has)."""
        email = normalize_email(email)
        if not User.select().where(User.email == email).exists():
            return
        now = utcnow()
        cls.update(used_at=now).where(cls.email == email, cls.used_at.is_null()).execute()
        code = f"{secrets.randbelow(10 ** 6):06d}"
        row_id = new_id()
        cls.create(id=row_id, email=email, digest=digest_of(f"{row_id}:{code}"), expires_at=now + CODE_TTL)
        subject = "Your onboards sign-in code"
        text, html = compose("sign_in_code", subject, code=code, minutes=int(CODE_TTL.total_seconds() // 60))
        OutboxMessage.enqueue("sign_in_code", [email], subject, text, html=html)

    @classmethod
    def verify(cls, email: str, code: str) -> User | None:
        """The user the code signs in (the code is spent), or None: no live code, or a wrong one (a try
        counted; the CODE_TRIES-th ends the code)."""
        email, now = normalize_email(email), utcnow()
        row = cls.select().where(cls.email == email, cls.used_at.is_null(), cls.expires_at > now,
                                 cls.tries < CODE_TRIES).order_by(cls.id.desc()).first()
        if row is None:
            return None
        if not hmac.compare_digest(row.digest, digest_of(f"{row.id}:{code.strip()}")):
            cls.update(tries=cls.tries + 1).where(cls.id == row.id).execute()
            return None
        if not cls.update(used_at=now).where(cls.id == row.id, cls.used_at.is_null()).execute():
            return None
        return User.get_or_none(User.email == email)


class JoinSession(BaseModel):
    """A signed-in browser: the cookie holds the secret, the database its digest. `key_due`: the user's
    account was made by a join link, and its first API key is still to be shown (once)."""

    digest = peewee.CharField(max_length=64, unique=True)
    user = peewee.ForeignKeyField(User, backref="+", on_delete="CASCADE")
    key_due = peewee.BooleanField(default=False)
    expires_at = peewee.DateTimeField()
    created_at = peewee.DateTimeField(default=utcnow)

    user_id: str

    @classmethod
    def start(cls, user: User, *, key_due: bool = False, replacing: str | None = None) -> str:
        """A new session's secret; the session it replaces (the cookie the browser had) ends: a sign-in
        always gets a fresh secret."""
        if replacing:
            cls.end(replacing)
        token = secrets.token_urlsafe(32)
        cls.create(digest=digest_of(token), user=user, key_due=key_due, expires_at=utcnow() + SESSION_TTL)
        return token

    @classmethod
    def of(cls, token: str) -> "JoinSession | None":
        digest = digest_of(token)
        row = cls.select().where(cls.digest == digest, cls.expires_at > utcnow()).first()
        return row if row is not None and hmac.compare_digest(row.digest, digest) else None

    @classmethod
    def end(cls, token: str) -> None:
        cls.delete().where(cls.digest == digest_of(token)).execute()

    def take_key(self) -> str | None:
        """The account's first API key, made now, once: None when it was shown already (or the account
        was not made here)."""
        cls = type(self)
        if not cls.update(key_due=False).where(cls.id == self.id, cls.key_due == True).execute():  # noqa: E712
            return None
        return ApiKey.issue(User.get_by_id(self.user_id))
