"""Entities: the parties an account sends leads to or receives leads from."""

import peewee

from models.accounts import Account
from models.base import BaseModel, JSONField, rfc3339, utcnow


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
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "id"), False),)  # an account's page in id order is one index range

    @property
    def expired(self) -> bool:
        return bool(self.pending and self.invitation_expires_at and self.invitation_expires_at <= utcnow())

    def as_json(self) -> dict:
        connected = None
        if self.connected_account_id:
            connected = "buyer" if self.recipient == "buyer" else "seller"
        return {
            "id": self.id, "name": self.name, "account": self.is_account, "pending": self.pending,
            "connected": connected, "connected_account_id": self.connected_account_id,
            "invitation_id": self.invitation_id,
            "invitation_expires_at": rfc3339(self.invitation_expires_at), "expired": self.expired,
            "module_ids": self.module_ids, "source": self.source, "recipient": self.recipient,
            "created_at": rfc3339(self.created_at), "updated_at": rfc3339(self.updated_at),
        }

    def summary(self) -> dict:
        return {"id": self.id, "name": self.name}
