"""Explicit, versioned schema migrations; `migrate()` applies the missing ones, in order, once."""

from collections.abc import Callable

import peewee

from models.accounts import Account, ApiKey, User
from models.base import BaseModel, db, utcnow
from models.connections import Connection
from models.entities import Entity
from models.flows import Flow
from models.invitations import Invitation
from models.onboards import Onboard
from models.outbox import OutboxMessage


class SchemaVersion(BaseModel):
    id = peewee.IntegerField(primary_key=True)  # type: ignore[assignment]
    name = peewee.CharField(max_length=100)
    applied_at = peewee.DateTimeField(default=utcnow)


def _v1_initial() -> None:
    db.create_tables([Account, User, ApiKey, Entity, Connection, Invitation, Flow, Onboard, OutboxMessage])


MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "initial schema", _v1_initial),
]


def migrate() -> list[str]:
    """Applies what is missing; the names of the migrations applied now."""
    applied: list[str] = []
    with db.connection_context():
        db.create_tables([SchemaVersion])
        for version, name, step in MIGRATIONS:
            with db.atomic():
                # Two processes migrating at once: the version row's primary key lets one win.
                if SchemaVersion.select().where(SchemaVersion.id == version).exists():
                    continue
                step()
                SchemaVersion.create(id=version, name=name)
                applied.append(f"{version}: {name}")
    return applied
