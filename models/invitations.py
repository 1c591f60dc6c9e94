"""Invitations between accounts, and what sending and accepting them changes."""

from datetime import timedelta

import peewee

from models import limits
from models.accounts import Account, User, UserSettings, normalize_email, now_for
from models.base import BaseModel, DomainError, Gone, NotFound, db, new_id, rfc3339, utcnow
from models.connections import Connection
from models.entities import Entity
from models.limits import RateCounter, Throttled
from models.outbox import OutboxMessage

INVITATION_TTL = timedelta(days=7)


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
        found = cls.visible_to(account_id).where(cls.id == invitation_id.lower()).first()
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
            raise DomainError("cannot invite a user of your own account")
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
            raise Throttled("this invitation's e-mail was sent moments ago", (sent + cooldown - now).total_seconds())
        RateCounter.take("invitations", self.account_id, limits.LIMITS.invitations_per_account_per_hour,
                         timedelta(hours=1), "invitation e-mails from one account")
        RateCounter.take("address", f"{self.account_id}:{self.email}", limits.LIMITS.invitations_per_address_per_day,
                         timedelta(days=1), "invitation e-mails from one account to one address")
        role = "send you leads" if self.kind == "source" else "send leads to you"
        body = (f"{self.account.name} invites you to connect on onboards and {role}.\n\n"
                f"Invitation id: {self.id}\nIt expires at {rfc3339(self.expires_at)}.\n")
        if self.description:
            body += f"\n{self.description}\n"
        suppressed = "the user turned connection_invites off" if UserSettings.invites_off(self.email) else None
        OutboxMessage.enqueue("invitation_sent", [self.email], f"{self.account.name} invites you to connect", body,
                              suppressed=suppressed)

    @classmethod
    def resend(cls, account_id: str, entity_id: str) -> Entity:
        """Renews the invitation of a pending entity of the account and sends its e-mail again."""
        entity = Entity.get_for_account(account_id, entity_id)
        invitation = cls.select().where(cls.account == account_id, cls.entity == entity).first()
        if invitation is None:
            raise NotFound("no invitation for this entity")
        if not invitation.renew():
            raise DomainError("invitation already accepted")
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
        return User.select().where(User.account == account_id, User.email == self.email).exists()

    def accept(self, account_id: str) -> "Invitation":
        """The invitee's account accepts; accepting again is a no-op."""
        if self.accepted_by_id == account_id:
            return self
        if self.account_id == account_id or not self.is_addressed_to(account_id):
            raise DomainError("only the invited account can accept this invitation")
        if self.accepted_at:
            raise DomainError("invitation already accepted by another account")
        if self.expired:
            raise Gone("invitation expired")
        now = utcnow()
        # The conditional update settles concurrent accepts: one wins, the others re-read.
        cls = type(self)
        won = cls.update(accepted_at=now, accepted_by=account_id).where(
            cls.id == self.id, cls.accepted_at.is_null()).execute()
        if not won:
            return type(self).get_by_id(self.id).accept(account_id)
        self._connect(account_id, now)
        return type(self).get_by_id(self.id)

    def _connect(self, invitee_id: str, now) -> None:
        inviter = Account.get_by_id(self.account_id)
        invitee = Account.get_by_id(invitee_id)
        Entity.update(pending=False, name=invitee.name, connected_account=invitee_id, updated_at=now).where(
            Entity.id == self.entity_id).execute()
        mirror = Entity.create(
            account=invitee_id, name=inviter.name, is_account=True, connected_account=inviter.id,
            source="seller" if self.kind == "recipient" else None,
            recipient="buyer" if self.kind == "source" else None, invitation_id=self.id)
        # The invitee joins the connection on the side the invitation names, with its entity of the inviter.
        sides = ({"buyer": invitee_id, "seller_entity": mirror.id} if self.kind == "recipient"
                 else {"seller": invitee_id, "buyer_entity": mirror.id})
        Connection.update(**sides, updated_at=now).where(Connection.id == self.connection_id).execute()
        OutboxMessage.enqueue(
            "invitation_accepted", inviter.user_emails(), f"{invitee.name} accepted your invitation",
            f"{invitee.name} accepted your invitation sent to {self.email}.\nConnection id: {self.connection_id}\n")

    def resolve_for_buyer(self, account_id: str) -> Connection:
        """The connection a buyer onboards through this invitation, accepting it if the buyer is its invitee."""
        if self.kind == "recipient":
            if self.account_id == account_id:
                raise DomainError("the invited buyer onboards, not the inviting seller")
            self.accept(account_id)
        else:
            if self.account_id != account_id:
                raise DomainError("a source invitation is onboarded by the buyer that sent it")
            if self.accepted_at is None:
                if self.expired:
                    raise Gone("invitation expired")
                raise DomainError("the invited seller has not accepted the invitation yet")
        return Connection.get_by_id(self.connection_id)

    def as_json(self) -> dict:
        return {
            "id": self.id, "type": self.kind, "email": self.email, "description": self.description,
            "account_id": self.account_id, "connection_id": self.connection_id, "status": self.status,
            "expires_at": rfc3339(self.expires_at), "accepted_at": rfc3339(self.accepted_at),
            "accepted_by_account_id": self.accepted_by_id, "created_at": rfc3339(self.created_at),
        }

