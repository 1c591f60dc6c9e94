"""Onboards: a buyer's progress through accepting an invitation and setting up delivery."""

from typing import Any

import peewee

from models.accounts import Account
from models.base import BaseModel, DomainError, compiled, db, locked, utcnow
from models.connections import Connection
from models.flows import Flow
from models.invitations import Invitation
from models.setup import AlreadySetUp, setup_buyer_delivery

COMPLETING = ("completed", "completed_flows_sync")
TRANSITIONS = {
    "created": {"in_progress", "completed", "failed"},
    "in_progress": {"completed", "completed_flows_sync", "failed"},
    "failed": {"in_progress"},
    "completed": set(),
    "completed_flows_sync": set(),
}
FIXED = ("invitation_id", "account_id", "connection_id")


class OnboardExists(DomainError):
    """The invitation has its onboard already."""


class FixedMember(DomainError):
    """A member of the onboard that never changes once set."""


class IllegalTransition(DomainError):
    """A status change the onboard's life cycle does not allow (ARCHITECTURE.md, README's transitions)."""


class DifferentConnections(DomainError):
    """connection_id and invitation_id name different connections."""


class Onboard(BaseModel):
    account_id: str
    invitation_id: str
    connection_id: str
    flow_id: str | None
    account = peewee.ForeignKeyField(Account, backref="onboards", on_delete="CASCADE", index=False)
    # One onboard per invitation: concurrent creates meet this constraint, not a prior check.
    invitation = peewee.ForeignKeyField(Invitation, unique=True, backref="+", on_delete="CASCADE")
    connection = peewee.ForeignKeyField(Connection, backref="+", index=True, on_delete="CASCADE")
    flow = peewee.ForeignKeyField(Flow, null=True, backref="onboards", on_delete="SET NULL")
    status = peewee.CharField(max_length=30, default="created")
    reason = peewee.CharField(max_length=500, null=True)
    version = peewee.IntegerField(default=1)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "id"), False),)  # an account's page in id order is one index range

    @classmethod
    def create_from_invitation(cls, account_id: str, invitation_id: str, flow_id: str | None) -> tuple["Onboard", bool]:
        """The buyer's onboard for this invitation, and whether it was made now (else it existed)."""
        invitation = Invitation.get_visible(account_id, invitation_id)
        statement = compiled((cls, "of_invitation"), lambda invitation, account: cls.select().where(
            cls.invitation == invitation, cls.account == account).limit(1), str, str)
        existing = statement.first(cls, invitation.id, account_id)
        if existing is not None:
            return existing, False
        connection_id = invitation.resolve_for_buyer(account_id)
        if flow_id:
            Flow.get_for_account(account_id, flow_id)
        made = cls.create_unless_taken(cls.invitation, account=account_id, invitation=invitation.id,
                                       connection=connection_id, flow=flow_id and flow_id.lower())
        if made is not None:
            return made, True
        winner = cls.select().where(cls.invitation == invitation.id).first()  # a concurrent create's
        if winner is None or winner.account_id != account_id:
            raise OnboardExists("an onboard already exists for this invitation")
        return winner, False

    def update_from(self, body: dict[str, Any], if_match: set[int] | None = None) -> "Onboard":
        """Applies a PUT body; completing runs the buyer setup, and a failed setup leaves only `failed`.
        `if_match`, when given, holds the versions the client saw: any other is VersionChanged."""
        self.check_seen(if_match)
        for name in FIXED:
            if name in body and body[name].lower() != getattr(self, name):
                raise FixedMember(f"{name} cannot change")
        status = body.get("status", self.status)
        flow_id = self.flow_id
        if "flow_id" in body:  # null clears it
            flow_id = body["flow_id"] and body["flow_id"].lower()
        if status == self.status and flow_id == self.flow_id:
            return self
        if self.status in COMPLETING:
            raise IllegalTransition(f"onboard is {self.status}: it cannot change any more")
        if status != self.status and status not in TRANSITIONS[self.status]:
            raise IllegalTransition(f"cannot change status from {self.status} to {status}")
        if flow_id is not None and flow_id != self.flow_id:
            Flow.get_for_account(self.account_id, flow_id)
        # A failed onboard keeps its reason until its status changes.
        reason = self.reason if status == self.status else None
        if not self._advance(status=status, flow=flow_id, reason=reason):
            # A concurrent update won; apply this one to what it left, as if it had come after
            # (unless the client asked to change only the version it saw).
            return type(self).get_by_id(self.id).update_from(body, if_match)
        if status in COMPLETING:
            self._run_setup()
        return self

    def _advance(self, **changes: Any) -> bool:
        """Writes `changes` only if nobody changed the row since it was read."""
        now, cls, names = utcnow(), type(self), sorted(changes)
        statement = compiled((cls, "advance", *names), lambda row_id, seen, version, updated_at, *values: cls.update(
            **dict(zip(names, values, strict=True)), version=version, updated_at=updated_at).where(
            cls.id == row_id, cls.version == seen), str, int, int, str, *[str] * len(names))
        won = statement.execute(self.id, self.version, self.version + 1, cls.updated_at.db_value(now),
                                *(getattr(cls, name).db_value(changes[name]) for name in names)).rowcount
        if won:
            for name, value in changes.items():
                setattr(self, name if name != "flow" else "flow_id", value)
            self.version, self.updated_at = self.version + 1, now
        return bool(won)

    def _run_setup(self) -> None:
        try:
            with db.atomic():  # a savepoint: a failed setup leaves nothing of itself behind
                flow = setup_buyer_delivery(self.account_id, self.connection_id, self.flow_id)
        except AlreadySetUp:
            # The buyer's own setup request ran the setup after this onboard was read, or before it was made (that
            # marks only the onboards it sees completed): what completing asks for is done.
            return
        except DomainError as failure:
            self._advance(status="failed", reason=str(failure)[:500])
            return
        if flow.id != self.flow_id:
            self._advance(flow=flow.id)

    @classmethod
    def setup_buyer(cls, account_id: str, body: dict[str, Any]) -> Flow:
        """The buyer's setup request: the setup itself, for a connection or an invitation's connection."""
        named = set()
        if "invitation_id" in body:
            named.add(Invitation.get_visible(account_id, body["invitation_id"]).resolve_for_buyer(account_id))
        if "connection_id" in body:
            named.add(Connection.get_by_id_or_invitation(account_id, body["connection_id"]).id)
        if len(named) > 1:
            raise DifferentConnections("connection_id and invitation_id name different connections")
        connection_id = named.pop()
        # Onboard rows before the connection row, the order a PUT to `completed` takes them in:
        # the other order lets the two deadlock on PostgreSQL.
        list(locked(cls.select(cls.id).where(cls.connection == connection_id, cls.account == account_id)))
        flow = setup_buyer_delivery(account_id, connection_id, body.get("flow_id"))
        cls.update(status="completed", flow=flow.id, reason=None, version=cls.version + 1, updated_at=utcnow()).where(
            cls.connection == connection_id, cls.account == account_id, cls.status.not_in(COMPLETING)).execute()
        return flow

    def as_json(self) -> dict:
        return self.json_of(self.as_row())

    @staticmethod
    def json_of(row: dict[str, Any]) -> dict:
        """An onboard's JSON from its values by field name (as_row, or a page read as dicts)."""
        return {"invitation_id": row["invitation"], "id": row["id"], "account_id": row["account"],
                "connection_id": row["connection"], "flow_id": row["flow"], "status": row["status"],
                "reason": row["reason"], "created_at": row["created_at"],
                "updated_at": row["updated_at"]}
