"""Explicit, versioned schema migrations; `migrate()` applies the missing ones, in order, once."""

from collections.abc import Callable

import peewee

from models.accounts import Account, ApiKey, User
from models.base import BaseModel, db, is_postgres, utcnow
from models.connections import Connection
from models.entities import Entity
from models.flows import Flow
from models.invitations import Invitation
from models.onboards import MEMBERS, PAGE_INDEX, Onboard
from models.outbox import OutboxMessage


class SchemaVersion(BaseModel):
    id = peewee.IntegerField(primary_key=True)  # type: ignore[assignment]
    name = peewee.CharField(max_length=100)
    applied_at = peewee.DateTimeField(default=utcnow)


def _v1_initial() -> None:
    db.create_tables([Account, User, ApiKey, Entity, Connection, Invitation, Flow, Onboard, OutboxMessage])


# Single-column indexes that a (column, id) index also serves. Beside it they are a trap: PostgreSQL's
# generic plan for a prepared list query (psycopg prepares a query after its 5th run) picked the
# single-column one and sorted the whole account (10,000 onboards: 4.5 ms instead of 0.05 ms).
REDUNDANT_INDEXES = ("onboard_account_id", "entity_account_id", "flow_account_id", "invitation_account_id",
                     "invitation_email", "connection_seller_id", "connection_buyer_id")


def _v2_drop_redundant_indexes() -> None:
    for name in REDUNDANT_INDEXES:
        db.execute_sql(f"DROP INDEX IF EXISTS {name}")


def _v3_onboards_keep_their_json() -> None:
    """A list page reads each onboard's JSON text instead of writing it (Members): SQLite from an index on
    its expression, PostgreSQL from a column a trigger writes."""
    if not is_postgres():
        db.execute(peewee.ValueLiterals(PAGE_INDEX))  # SQLite takes no bound values in an index's definition
        db.execute_sql("DROP INDEX IF EXISTS onboard_account_id_id")
        return
    # Each statement may be run again (as migration 2's): a second process migrating at the same time waits
    # for the first's locks, then fails only on the version row, as with every migration.
    column = MEMBERS.stored
    db.execute_sql(f'ALTER TABLE onboard ADD COLUMN IF NOT EXISTS "{column}" text')
    db.execute_sql(f"""CREATE OR REPLACE FUNCTION onboard_{column}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW."{column}" := {MEMBERS.postgres_object("NEW")}; RETURN NEW; END $$""")
    db.execute_sql(f"DROP TRIGGER IF EXISTS onboard_{column} ON onboard")
    db.execute_sql(f"CREATE TRIGGER onboard_{column} BEFORE INSERT OR UPDATE ON onboard "
                   f"FOR EACH ROW EXECUTE FUNCTION onboard_{column}()")
    # Under session_replication_role = replica too (a bulk load's, bench/dataset.py): the JSON is always kept.
    db.execute_sql(f"ALTER TABLE onboard ENABLE ALWAYS TRIGGER onboard_{column}")
    db.execute_sql(f'UPDATE onboard SET "{column}" = NULL')  # the trigger writes it for the rows already there
    db.execute_sql(f'ALTER TABLE onboard ALTER COLUMN "{column}" SET NOT NULL')


MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "drop indexes that (column, id) indexes serve", _v2_drop_redundant_indexes),
    (3, "onboards keep their JSON for list pages", _v3_onboards_keep_their_json),
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
