"""Flows: the subset of LeadConduit's Flow the onboarding workflow needs."""

import functools
import operator
from typing import Any

import peewee

from models.accounts import Account
from models.base import BaseModel, JSONField, NotFound, locked, new_short_id, utcnow
from models.entities import Entity

DEFAULT_SOURCE_MODULE = "leadconduit-default.inbound"
USING_AT_ONCE = 20
DEFAULT_STEP_MODULE = "leadconduit-default.outbound"


class Flow(BaseModel):
    account_id: str
    onboards: "peewee.ModelSelect[Any]"  # Onboard.flow's backref (models.onboards imports this module)
    account = peewee.ForeignKeyField(Account, backref="flows", on_delete="CASCADE", index=False)
    name = peewee.CharField(max_length=200)
    enabled = peewee.BooleanField(default=True)
    fields = JSONField(default=list)
    sources = JSONField(default=list)
    steps = JSONField(default=list)
    version = peewee.IntegerField(default=1)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "id"), False),)  # an account's page in id order is one index range

    @classmethod
    def create_from(cls, account_id: str, body: dict[str, Any]) -> "Flow":
        return cls.create(account=account_id, **cls._normalized(account_id, body))

    def replace_with(self, body: dict[str, Any], if_match: set[int] | None = None) -> "Flow":
        """Replaces the writable members; `if_match`, when given, holds the versions the client saw."""
        self.check_seen(if_match)
        for name, value in self._normalized(self.account_id, body).items():
            setattr(self, name, value)
        self.save_changes()
        return self

    def delete_seen(self, if_match: set[int] | None = None) -> dict:
        """Deletes the flow; `if_match`, when given, holds the versions the client saw. The flow as it was."""
        self.check_seen(if_match)
        gone = self.as_json()
        # The onboards naming the flow lose it: a change to them, so a new version (the database's own
        # ON DELETE SET NULL would leave their ETags as they were).
        onboard = self.onboards.model
        onboard.update(flow=None, version=onboard.version + 1, updated_at=utcnow()).where(
            onboard.flow == self.id).execute()
        self.delete_instance()
        return gone

    def save_changes(self) -> None:
        self.version += 1
        self.updated_at = utcnow()
        self.save()

    @classmethod
    def _normalized(cls, account_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Fills ids, defaults and entity names; every entity must be one of the account's. They are locked
        (shared) until the flow is written, so that none is deleted meanwhile (Entity.delete_unused)."""
        refs = {item["entity"]["id"].lower() for key in ("sources", "steps") for item in body.get(key, [])}
        named = Entity.for_account(account_id).where(Entity.id.in_(list(refs)))
        entities = {e.id: e for e in locked(named, shared=True)} if refs else {}
        missing = sorted(refs - entities.keys())
        if missing:
            raise NotFound(f"entity {missing[0]} not found")

        def part(item: dict[str, Any], module_id: str, **extra: Any) -> dict[str, Any]:
            integration = item.get("integration", {})
            return {
                **extra, "id": item.get("id") or new_short_id(),
                "entity": entities[item["entity"]["id"].lower()].summary(),
                "integration": {
                    "module_id": integration.get("module_id", module_id),
                    "mappings": [{"id": m.get("id") or new_short_id(), "property": m["property"],
                                  "value": m["value"]} for m in integration.get("mappings", [])],
                },
                "enabled": item.get("enabled", True),
            }

        return {
            "name": body["name"], "enabled": body.get("enabled", True), "fields": body.get("fields", []),
            "sources": [part(s, DEFAULT_SOURCE_MODULE) for s in body.get("sources", [])],
            "steps": [part(s, DEFAULT_STEP_MODULE, type="recipient",
                           **({"description": s["description"]} if "description" in s else {}))
                      for s in body.get("steps", [])],
        }

    @classmethod
    def using(cls, account_id: str, entity_ids: list[str], *, as_step: bool = False) -> dict[str, list[str]]:
        """For each of the entities, the account's flows that have it among their sources (or, `as_step`,
        among their sources or steps), in id order: a query per 20 entities, narrowed by the ids' text (more
        alternatives in one query overflow SQLite's parser)."""
        found: dict[str, list[str]] = {i: [] for i in entity_ids}
        columns = (cls.sources, cls.steps) if as_step else (cls.sources,)
        flows: dict[str, Flow] = {}
        for start in range(0, len(entity_ids), USING_AT_ONCE):
            # The ids are hex: nothing in them a LIKE pattern would read. Bound as they are, not as JSON.
            mentions = functools.reduce(operator.or_, (
                peewee.Expression(column, peewee.OP.ILIKE, peewee.Value(f"%{i}%", converter=False))
                for column in columns for i in entity_ids[start:start + USING_AT_ONCE]))
            flows.update((flow.id, flow) for flow in cls.for_account(account_id).where(mentions))
        for flow_id in sorted(flows):
            parts = flows[flow_id].sources + (flows[flow_id].steps if as_step else [])
            for entity_id in {part["entity"]["id"] for part in parts} & found.keys():
                found[entity_id].append(flow_id)
        return found

    def steps_for(self, entity_id: str) -> list[dict[str, Any]]:
        return [s for s in self.steps if is_step_for(s, entity_id)]

    def as_json(self) -> dict:
        return {
            "id": self.id, "name": self.name, "enabled": self.enabled, "fields": self.fields,
            "sources": self.sources, "steps": self.steps,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


def is_step_for(step: dict[str, Any], entity_id: str) -> bool:
    """Whether `step` delivers to the entity: a buyer step, when the entity stands for a buyer."""
    return step.get("type") == "recipient" and step["entity"]["id"] == entity_id
