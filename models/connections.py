"""Connections: one row per pair of accounts joined by an invitation, seen from either side."""

import peewee

from models.accounts import Account
from models.base import BaseModel, NotFound, utcnow
from models.entities import Entity


class Connection(BaseModel):
    seller_id: str | None
    buyer_id: str | None
    buyer_entity_id: str | None
    seller_entity_id: str | None
    seller = peewee.ForeignKeyField(Account, null=True, backref="+", on_delete="CASCADE", index=False)
    buyer = peewee.ForeignKeyField(Account, null=True, backref="+", on_delete="CASCADE", index=False)
    # The seller's entity that stands for the buyer, and the buyer's entity that stands for the seller.
    buyer_entity = peewee.ForeignKeyField(Entity, null=True, backref="+", on_delete="SET NULL")
    seller_entity = peewee.ForeignKeyField(Entity, null=True, backref="+", on_delete="SET NULL")
    invitation_id = peewee.CharField(max_length=24, unique=True)
    created_by = peewee.CharField(max_length=254)
    has_setup_buyer_delivery = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        # Either side's page in id order is one index range.
        indexes = ((("seller", "id"), False), (("buyer", "id"), False))

    @classmethod
    def with_parties(cls) -> "peewee.ModelSelect[Connection]":
        """Connections with both accounts and both entities read in the same query, as as_json needs
        them: a page is one query, not one more per row and relation."""
        seller, buyer, seller_entity, buyer_entity = Account.alias(), Account.alias(), Entity.alias(), Entity.alias()
        query = cls.select(cls, seller, buyer, seller_entity, buyer_entity)
        for field, alias in ((cls.seller, seller), (cls.buyer, buyer), (cls.seller_entity, seller_entity),
                             (cls.buyer_entity, buyer_entity)):
            query = query.join_from(cls, alias, peewee.JOIN.LEFT_OUTER, on=(field == alias.id), attr=field.name)
        return query

    @classmethod
    def for_account(cls, account_id: str) -> "peewee.ModelSelect[Connection]":
        return cls.with_parties().where((cls.seller == account_id) | (cls.buyer == account_id))

    @classmethod
    def with_relationship(cls, account_id: str, relationship_type: str | None) -> "peewee.ModelSelect[Connection]":
        """`relationship_type` is the other side's role: `buyer` selects where the caller sells."""
        if relationship_type == "buyer":
            return cls.with_parties().where(cls.seller == account_id)
        if relationship_type == "seller":
            return cls.with_parties().where(cls.buyer == account_id)
        return cls.for_account(account_id)

    @classmethod
    def get_by_id_or_invitation(cls, account_id: str, some_id: str) -> "Connection":
        some_id = some_id.lower()
        found = cls.for_account(account_id).where((cls.id == some_id) | (cls.invitation_id == some_id)).first()
        if found is None:
            raise NotFound("connection not found")
        return found

    @classmethod
    def counterparts(cls, account_id: str) -> dict[str, list[dict]]:
        """The accounts this one is connected to, as its buyers and as its sellers (each once)."""
        found: dict[str, dict[str, dict]] = {"connected_buyers": {}, "connected_sellers": {}}
        completed = cls.with_parties().where(cls.seller.is_null(False), cls.buyer.is_null(False))
        for connection in completed.where((cls.seller == account_id) | (cls.buyer == account_id)).order_by(cls.id):
            other, role = ((connection.buyer, "connected_buyers") if connection.seller_id == account_id
                           else (connection.seller, "connected_sellers"))
            if other is not None:  # both sides are, by the query
                found[role].setdefault(other.id, other.summary())
        return {role: list(accounts.values()) for role, accounts in found.items()}

    def own_entity(self, account_id: str) -> Entity | None:
        """The caller's entity that stands for the other account."""
        return self.buyer_entity if self.seller_id == account_id else self.seller_entity

    def as_json(self, account_id: str, flow_ids: list[str]) -> dict:
        """The connection seen from `account_id`; `flow_ids`, the flows that have its own entity among their
        sources (models.flows.Flow.using)."""
        caller_sells = self.seller_id == account_id
        other = self.buyer if caller_sells else self.seller
        own_entity = self.own_entity(account_id)
        return {
            "id": self.id,
            "status": "completed" if self.seller_id and self.buyer_id else "pending",
            "relationship_type": "buyer" if caller_sells else "seller",
            "invitation_id": self.invitation_id, "external_id": self.invitation_id,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "created_by": self.created_by,
            "ui_state": {"has_setup_buyer_delivery": self.has_setup_buyer_delivery},
            "permissions": [],
            "connected_account": other.summary() if other else None,
            "account_entity": own_entity.as_json(flow_ids) if own_entity else None,
            "custom_entities": [],
        }
