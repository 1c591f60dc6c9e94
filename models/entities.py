"""Entities: the parties an account sends leads to or receives leads from."""

from typing import Any

import peewee

from models.accounts import Account, now_for
from models.base import BaseModel, DomainError, JSONField, utcnow

# The members a client writes besides `name`, with what a new entity has when they are left out.
WRITABLE: dict[str, Any] = {"description": None, "source": None, "recipient": None, "module_ids": [],
                            "deprecated": False, "see": None, "field_suffix": None, "logo_url": None,
                            "time_zone": None, "trustedform_certified_vendor": False, "website": None}
ACCOUNT_KEPT = ("name", "source", "recipient")


class AccountEntityFixed(DomainError):
    """An account entity follows its connection: it is neither changed nor deleted through /entities."""


class EntityInUse(DomainError):
    """A flow names the entity, so it cannot be deleted."""


class Entity(BaseModel):
    account_id: str
    connected_account_id: str | None
    account = peewee.ForeignKeyField(Account, backref="entities", on_delete="CASCADE", index=False)
    name = peewee.CharField(max_length=254)
    source = peewee.CharField(max_length=20, null=True)
    recipient = peewee.CharField(max_length=20, null=True)
    # LeadConduit calls this member `account`: the entity stands for another account holder.
    is_account = peewee.BooleanField(default=False)
    pending = peewee.BooleanField(default=False)
    connected_account = peewee.ForeignKeyField(Account, null=True, backref="+", on_delete="SET NULL")
    invitation_id = peewee.CharField(max_length=24, null=True, index=True)
    invitation_expires_at = peewee.DateTimeField(null=True)
    module_ids = JSONField(default=list)
    description = peewee.TextField(null=True)
    deprecated = peewee.BooleanField(default=False)
    see = peewee.CharField(max_length=24, null=True)
    field_suffix = peewee.CharField(max_length=5, null=True)
    logo_url = peewee.TextField(null=True)
    time_zone = peewee.CharField(max_length=64, null=True)
    trustedform_certified_vendor = peewee.BooleanField(default=False)
    website = peewee.TextField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "id"), False),)  # an account's page in id order is one index range

    @property
    def expired(self) -> bool:
        expires = self.invitation_expires_at
        return bool(self.pending and expires and expires <= now_for(self.account_id))

    @classmethod
    def pending_of(cls, account_id: str) -> dict[str, list[dict]]:
        """The account's pending entities (its invitations not accepted yet), as buyers and as sellers."""
        found: dict[str, list[dict]] = {"pending_buyers": [], "pending_sellers": []}
        for entity in cls.for_account(account_id).where(cls.pending == True).order_by(cls.id):  # noqa: E712 (SQL)
            role = "pending_buyers" if entity.recipient == "buyer" else "pending_sellers"
            found[role].append({"id": entity.id, "name": entity.name, "expired": entity.expired,
                                "invitation_expires_at": entity.invitation_expires_at})
        return found

    @classmethod
    def create_from(cls, account_id: str, body: dict[str, Any]) -> "Entity":
        return cls.create(account=account_id, **cls._writable(body))

    def replace_with(self, body: dict[str, Any]) -> "Entity":
        """Replaces the writable members. An account entity's name, source and recipient follow its
        connection: a change to them is a conflict."""
        changes = self._writable(body)
        if self.is_account:
            for name in ACCOUNT_KEPT:
                if changes[name] != getattr(self, name):
                    raise AccountEntityFixed(f"an account entity's {name} follows its connection and cannot change")
        for name, value in changes.items():
            setattr(self, name, value)
        self.updated_at = utcnow()
        self.save()
        return self

    def delete_unused(self, used_by: list[str]) -> dict:
        """Deletes the entity unless it stands for a connected account or the flows `used_by` use it; the
        entity as it was."""
        if self.is_account:
            raise AccountEntityFixed("an account entity belongs to its connection and cannot be deleted")
        if used_by:
            raise EntityInUse(f"flow {used_by[0]} uses this entity")
        gone = self.as_json([])
        self.delete_instance()
        return gone

    @staticmethod
    def _writable(body: dict[str, Any]) -> dict[str, Any]:
        return {"name": body["name"], **{name: body.get(name, default) for name, default in WRITABLE.items()}}

    def as_json(self, flow_ids: list[str]) -> dict:
        """The entity; `flow_ids`, the flows that have it among their sources (models.flows.Flow.using)."""
        connected = None
        if self.connected_account_id:
            connected = "buyer" if self.recipient == "buyer" else "seller"
        return {
            "id": self.id, "name": self.name, "description": self.description, "standard": False,
            "account": self.is_account, "pending": self.pending, "connected": connected,
            "connected_account_id": self.connected_account_id, "deprecated": self.deprecated, "see": self.see,
            "field_suffix": self.field_suffix, "invitation_id": self.invitation_id,
            "invitation_expires_at": self.invitation_expires_at, "expired": self.expired,
            "flow_ids": flow_ids, "logo_url": self.logo_url, "module_ids": self.module_ids, "source": self.source,
            "recipient": self.recipient, "time_zone": self.time_zone,
            "trustedform_certified_vendor": self.trustedform_certified_vendor, "website": self.website,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }

    def summary(self) -> dict:
        return {"id": self.id, "name": self.name}
