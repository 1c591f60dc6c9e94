"""Invitations between accounts, and what sending and accepting them changes."""

import hmac
import secrets
from contextvars import ContextVar, Token
from datetime import timedelta

import peewee

from models import limits
from models.accounts import Account, User, UserSettings, normalize_email, now_for
from models.base import BaseModel, DomainError, Gone, NotFound, compiled, db, digest_of, locked, new_id, rfc3339, utcnow
from models.connections import Connection
from models.entities import Entity
from models.flows import Flow, is_step_for
from models.limits import RateCounter, Throttled
from models.mail import compose
from models.outbox import OutboxMessage

INVITATION_TTL = timedelta(days=7)
# Where invitees open their join links: the serving app's PUBLIC_BASE_URL, in force per context (use_base_url).
_base_url: ContextVar[str] = ContextVar("base_url", default="http://127.0.0.1:8080")


def use_base_url(base_url: str) -> Token[str]:
    """PUBLIC_BASE_URL (or http://HOST:PORT), the start of every join link the e-mails carry, in force in the
    current context until the token is reset."""
    return _base_url.set(base_url.rstrip("/"))


class LinkGone(Gone):
    """A join link that worked once and no longer does; `why` says which of ENDINGS (or expired, used)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"this invitation link was {why}" if why != "expired" else "this invitation has expired")
        self.why = why


class JoinToken(BaseModel):
    """The secret of an invitation's join link, kept only as its SHA-256 digest. Not a foreign key of the
    invitation: a declined or withdrawn invitation is deleted, and its link still has to say so."""

    digest = peewee.CharField(max_length=64, unique=True)
    invitation_id = peewee.CharField(max_length=24, index=True)
    used_at = peewee.DateTimeField(null=True)  # when it made an account: it makes no second one
    ended = peewee.CharField(max_length=20, null=True)  # replaced, declined or withdrawn
    created_at = peewee.DateTimeField(default=utcnow)

    @classmethod
    def issue(cls, invitation_id: str) -> str:
        """A new link secret (256 bits) for the invitation; the ones before it are replaced."""
        cls.end(invitation_id, "replaced")
        token = secrets.token_urlsafe(32)
        cls.create(digest=digest_of(token), invitation_id=invitation_id)
        return token

    @classmethod
    def end(cls, invitation_id: str, why: str) -> None:
        cls.update(ended=why).where(cls.invitation_id == invitation_id, cls.ended.is_null()).execute()

    @classmethod
    def find(cls, token: str) -> "tuple[JoinToken, Invitation]":
        """The live link `token` opens and its invitation: NotFound for a token never issued, LinkGone
        for one expired, used, replaced, declined or withdrawn."""
        digest = digest_of(token)
        row = cls.select().where(cls.digest == digest).first()
        if row is None or not hmac.compare_digest(row.digest, digest):
            raise NotFound("this invitation link is unknown")
        if row.ended:
            raise LinkGone(row.ended)
        invitation = Invitation.get_or_none(Invitation.id == row.invitation_id)
        if invitation is None:
            raise LinkGone("withdrawn")
        if row.used_at or invitation.accepted_at:
            raise LinkGone("used")
        if invitation.expired:
            raise LinkGone("expired")
        return row, invitation

    def use(self) -> None:
        """Spends the link on an account: of two concurrent uses one wins, the other finds it used."""
        cls = type(self)
        if not cls.update(used_at=utcnow()).where(cls.id == self.id, cls.used_at.is_null()).execute():
            raise LinkGone("used")


class OwnAccount(DomainError):
    """An invitation to a user of the inviting account itself."""


class AlreadyAccepted(DomainError):
    """The invitation was accepted already."""


class WrongParty(DomainError):
    """The account is not the side of the invitation that may do this."""


class NotAccepted(DomainError):
    """The invited seller has not accepted the invitation yet."""


class Invitation(BaseModel):
    """`recipient`: the inviter sells to the invitee; `source`: the inviter buys from the invitee."""

    account_id: str
    accepted_by_id: str | None
    entity_id: str
    connection_id: str

    kind = peewee.CharField(max_length=10)
    account = peewee.ForeignKeyField(Account, backref="invitations_sent", on_delete="CASCADE", index=False)
    email = peewee.CharField(max_length=254)
    description = peewee.TextField(null=True)
    expires_at = peewee.DateTimeField()
    accepted_at = peewee.DateTimeField(null=True)
    last_sent_at = peewee.DateTimeField(null=True)  # when its e-mail last went out (the resend cooldown)
    accepted_by = peewee.ForeignKeyField(Account, null=True, backref="+", on_delete="CASCADE")
    # The inviter's pending entity standing for the invitee.
    entity = peewee.ForeignKeyField(Entity, backref="+", on_delete="CASCADE")
    connection = peewee.ForeignKeyField(Connection, backref="+", on_delete="CASCADE")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            # One invitation per (inviter, kind, address), however many invite at once: an expired
            # one is renewed, never duplicated.
            (("account", "kind", "email"), True),
            (("account", "id"), False),
            (("email", "id"), False),
        )

    @property
    def expired(self) -> bool:
        return self.accepted_at is None and self.expires_at <= now_for(self.account_id)

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        return "expired" if self.expired else "pending"

    @classmethod
    def visible_to(cls, account_id: str) -> "peewee.ModelSelect[Invitation]":
        """Sent by the account, addressed to one of its users, or accepted by it."""
        emails = User.select(User.email).where(User.account == account_id)
        return cls.select().where(
            (cls.account == account_id) | cls.email.in_(emails) | (cls.accepted_by == account_id))

    @classmethod
    def get_visible(cls, account_id: str, invitation_id: str) -> "Invitation":
        statement = compiled((cls, "get_visible"), lambda account, invitation: cls.visible_to(account).where(
            cls.id == invitation).limit(1), str, str)
        found = statement.first(cls, account_id, invitation_id.lower())
        if found is None:
            raise NotFound("invitation not found")
        return found

    @classmethod
    def send(cls, inviter: User, kind: str, email: str, description: str | None) -> tuple[Entity, bool]:
        """The pending entity of a new invitation, or the entity of the one already there (then False;
        an expired one not accepted yet is renewed and sent again)."""
        email = normalize_email(email)
        account: Account = inviter.account
        if email in account.user_emails():
            raise OwnAccount("cannot invite a user of your own account")
        existing = cls.to_address(account.id, kind, email)
        if existing is None:
            try:
                with db.atomic():  # a savepoint: losing a race to a concurrent invite undoes only this
                    return cls._create(inviter, kind, email, description), True
            except peewee.IntegrityError:
                existing = cls.to_address(account.id, kind, email)
                if existing is None:
                    raise
        if existing.expired:
            existing.renew()
        return Entity.get_by_id(existing.entity_id), False

    @classmethod
    def to_address(cls, account_id: str, kind: str, email: str) -> "Invitation | None":
        return cls.select().where(cls.account == account_id, cls.kind == kind, cls.email == email).first()

    @classmethod
    def _create(cls, inviter: User, kind: str, email: str, description: str | None) -> Entity:
        account: Account = inviter.account
        invitation_id, expires_at = new_id(), now_for(account.id) + INVITATION_TTL
        entity = Entity.create(
            account=account, name=email, is_account=True, pending=True,
            recipient="buyer" if kind == "recipient" else None,
            source="seller" if kind == "source" else None,
            invitation_id=invitation_id, invitation_expires_at=expires_at)
        sides = ({"seller": account, "buyer_entity": entity} if kind == "recipient"
                 else {"buyer": account, "seller_entity": entity})
        connection = Connection.create(invitation_id=invitation_id, created_by=inviter.email, **sides)
        invitation = cls.create(id=invitation_id, kind=kind, account=account, email=email,
                                description=description, expires_at=expires_at, entity=entity,
                                connection=connection)
        invitation.notify_invitee()
        return entity

    def notify_invitee(self) -> None:
        """Queues the invitation e-mail, within the abuse limits: so many per inviting account and hour,
        so many from one account to one address and day, and a cooldown between two to the same invitation.
        The per-address count is the inviting account's own: one party's invitations never use up another's."""
        now, cls = now_for(self.account_id), type(self)
        cooldown = timedelta(seconds=limits.LIMITS.resend_cooldown_seconds)
        if not cls.update(last_sent_at=now).where(
                cls.id == self.id, cls.last_sent_at.is_null() | (cls.last_sent_at <= now - cooldown)).execute():
            sent = cls.select(cls.last_sent_at).where(cls.id == self.id).get().last_sent_at or now
            raise Throttled("resend-cooldown", f"at most one e-mail per {cooldown.total_seconds():g} seconds for one "
                            "invitation", (sent + cooldown - now).total_seconds())
        RateCounter.take("invitations-per-account", self.account_id, limits.LIMITS.invitations_per_account_per_hour,
                         timedelta(hours=1), "at most {limit} invitation e-mails per {span} from your account")
        RateCounter.take("invitations-per-address", f"{self.account_id}:{self.email}",
                         limits.LIMITS.invitations_per_address_per_day, timedelta(days=1),
                         "at most {limit} invitation e-mails per {span} to this address from your account")
        link = f"{_base_url.get()}/join/{JoinToken.issue(self.id)}"
        subject = f"{self.account.name} invites you to connect"
        text, html = compose("invitation_sent", subject, inviter=self.account.name, link=link,
                             role="send you leads" if self.kind == "source" else "send leads to you",
                             invitation_id=self.id, expires_at=rfc3339(self.expires_at), description=self.description)
        suppressed = "the user turned connection_invites off" if UserSettings.invites_off(self.email) else None
        OutboxMessage.enqueue("invitation_sent", [self.email], subject, text, suppressed=suppressed, html=html,
                              invitation_id=self.id, link=link)

    @classmethod
    def resend(cls, account_id: str, entity_id: str) -> Entity:
        """Renews the invitation of a pending entity of the account and sends its e-mail again."""
        entity = Entity.get_for_account(account_id, entity_id)
        invitation = cls.select().where(cls.account == account_id, cls.entity == entity).first()
        if invitation is None:
            raise NotFound("no invitation for this entity")
        if not invitation.renew():
            raise AlreadyAccepted("invitation already accepted")
        return Entity.get_by_id(entity.id)

    def renew(self) -> bool:
        """A fresh expiry, on the invitation and its pending entity, and the e-mail sent again; whether it
        was renewed. An accepted invitation is not, even one accepted since it was read: the update's
        condition, not the read, decides."""
        expires_at, cls = now_for(self.account_id) + INVITATION_TTL, type(self)
        if not cls.update(expires_at=expires_at).where(cls.id == self.id, cls.accepted_at.is_null()).execute():
            return False
        self.expires_at = expires_at
        Entity.update(invitation_expires_at=self.expires_at, updated_at=utcnow()).where(
            Entity.id == self.entity_id).execute()
        self.notify_invitee()
        return True

    def is_addressed_to(self, account_id: str) -> bool:
        statement = compiled((User, "has_email"), lambda account, email: User.select(peewee.SQL("1")).where(
            User.account == account, User.email == email).limit(1), str, str)
        return statement.execute(account_id, self.email).fetchone() is not None

    def accept(self, account_id: str) -> "Invitation":
        """The invitee's account accepts; accepting again is a no-op."""
        if self.accepted_by_id == account_id:
            return self
        if self.account_id == account_id or not self.is_addressed_to(account_id):
            raise WrongParty("only the invited account can accept this invitation")
        if self.accepted_at:
            raise AlreadyAccepted("invitation already accepted by another account")
        if self.expired:
            raise Gone("invitation expired")
        now = utcnow()
        # The conditional update settles concurrent accepts: one wins, the others re-read.
        cls = type(self)
        statement = compiled((cls, "accept"), lambda row_id, when, by: cls.update(
            accepted_at=when, accepted_by=by).where(cls.id == row_id, cls.accepted_at.is_null()), str, str, str)
        won = statement.execute(self.id, cls.accepted_at.db_value(now), account_id).rowcount
        if not won:
            again = cls.get_or_none(cls.id == self.id)
            if again is None:  # declined or withdrawn meanwhile
                raise NotFound("invitation not found")
            return again.accept(account_id)
        self._connect(account_id, now)
        self.accepted_at, self.accepted_by_id = now, account_id  # as the update left the row
        return self

    def _connect(self, invitee_id: str, now) -> None:
        inviter, invitee = Account.pair(self.account_id, invitee_id)
        connected = compiled((Entity, "connected"), lambda row_id, name, account, at: Entity.update(
            pending=False, name=name, connected_account=account, updated_at=at).where(Entity.id == row_id),
            str, str, str, str)
        connected.execute(self.entity_id, invitee.name, invitee_id, Entity.updated_at.db_value(now))
        mirror = Entity.create(
            account=invitee_id, name=inviter.name, is_account=True, connected_account=inviter.id,
            source="seller" if self.kind == "recipient" else None,
            recipient="buyer" if self.kind == "source" else None, invitation_id=self.id)
        # The invitee joins the connection on the side the invitation names, with its entity of the inviter.
        sides = ({"buyer": invitee_id, "seller_entity": mirror.id} if self.kind == "recipient"
                 else {"seller": invitee_id, "buyer_entity": mirror.id})
        joined = compiled((Connection, "joined", *sides), lambda row_id, at, *values: Connection.update(
            **dict(zip(sides, values, strict=True)), updated_at=at).where(Connection.id == row_id), str, str, str, str)
        joined.execute(self.connection_id, Connection.updated_at.db_value(now), *sides.values())
        OutboxMessage.enqueue(
            "invitation_accepted", inviter.user_emails(), f"{invitee.name} accepted your invitation",
            f"{invitee.name} accepted your invitation sent to {self.email}.\nConnection id: {self.connection_id}\n",
            invitation_id=self.id, connection_id=self.connection_id)

    def decline(self, account_id: str) -> None:
        """The invitee's account declines: the invitation ends, and the inviter is told."""
        if not self.is_addressed_to(account_id):
            raise WrongParty("only the invited account can decline this invitation")
        self.end("declined")

    def withdraw(self, account_id: str) -> None:
        """The inviting account takes its invitation back."""
        if self.account_id != account_id:
            raise WrongParty("only the inviting account can withdraw this invitation")
        self.end("withdrawn")

    def end(self, why: str) -> None:
        """Declined or withdrawn before it was accepted: its links say so from now on, and the inviter's
        pending entity goes, with its connection and every step or source of the inviter's flows naming it
        (no flow names a deleted entity). A decline is e-mailed to the inviter."""
        cls = type(self)
        # Locked, so that an accept racing this waits and then finds the invitation gone.
        if locked(cls.select().where(cls.id == self.id, cls.accepted_at.is_null())).first() is None:
            raise AlreadyAccepted("invitation already accepted")
        JoinToken.end(self.id, why)
        for flow_id in Flow.using(self.account_id, [self.entity_id], as_step=True)[self.entity_id]:
            flow = Flow.get_for_account(self.account_id, flow_id, for_update=True)
            flow.sources = [s for s in flow.sources if s["entity"]["id"] != self.entity_id]
            flow.steps = [s for s in flow.steps if not is_step_for(s, self.entity_id)]
            flow.save_changes()
        Connection.delete().where(Connection.id == self.connection_id).execute()  # its invitation and onboards too
        Entity.delete().where(Entity.id == self.entity_id).execute()
        if why == "declined":
            inviter: Account = Account.get_by_id(self.account_id)
            subject = f"{self.email} declined your invitation"
            text, html = compose("invitation_declined", subject, email=self.email, invitation_id=self.id)
            OutboxMessage.enqueue("invitation_declined", inviter.user_emails(), subject, text, html=html,
                                  invitation_id=self.id)

    def resolve_for_buyer(self, account_id: str) -> str:
        """The id of the connection a buyer onboards through this invitation, accepting it if the buyer is its
        invitee. The invitation's foreign key keeps the connection there: deleting it deletes the invitation."""
        if self.kind == "recipient":
            if self.account_id == account_id:
                raise WrongParty("the invited buyer onboards, not the inviting seller")
            self.accept(account_id)
        else:
            if self.account_id != account_id:
                raise WrongParty("a source invitation is onboarded by the buyer that sent it")
            if self.accepted_at is None:
                if self.expired:
                    raise Gone("invitation expired")
                raise NotAccepted("the invited seller has not accepted the invitation yet")
        return self.connection_id

    def as_json(self) -> dict:
        return {
            "id": self.id, "type": self.kind, "email": self.email, "description": self.description,
            "account_id": self.account_id, "connection_id": self.connection_id, "status": self.status,
            "expires_at": self.expires_at, "accepted_at": self.accepted_at,
            "accepted_by_account_id": self.accepted_by_id, "created_at": self.created_at,
        }

