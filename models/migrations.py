"""Explicit, versioned schema migrations; `migrate()` applies the missing ones, in order, once."""

from collections.abc import Callable

import peewee
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as apply_operations

from models.accounts import Account, ApiKey, User, UserSettings
from models.base import BaseModel, db, is_postgres, utcnow
from models.connections import Connection
from models.entities import Entity
from models.flows import Flow
from models.idempotency import IdempotencyKey
from models.invitations import Invitation, JoinToken
from models.join import JoinSession, SignInCode
from models.limits import RateCounter
from models.onboards import Onboard
from models.outbox import OutboxMessage


class SchemaVersion(BaseModel):
    id = peewee.IntegerField(primary_key=True)  # type: ignore[assignment]
    name = peewee.CharField(max_length=100)
    applied_at = peewee.DateTimeField(default=utcnow)


def _v1_initial() -> None:
    db.create_tables([Account, User, ApiKey, Entity, Connection, Invitation, Flow, Onboard, OutboxMessage])


def _add_columns(model: type[peewee.Model], *names: str) -> None:
    """Adds the model's fields `names` to its table unless they are there: version 1 makes tables from the
    models as they are now, so a new database has them already."""
    table = model._meta.table_name
    present = {column.name for column in db.get_columns(table)}
    migrator = SchemaMigrator.from_database(db.obj)
    fields = model._meta.fields
    apply_operations(*(migrator.add_column(table, fields[name].column_name, fields[name])
                       for name in names if fields[name].column_name not in present))


# Single-column indexes that a (column, id) index also serves. Beside it they are a trap: PostgreSQL's
# generic plan for a prepared list query (psycopg prepares a query after its 5th run) picked the
# single-column one and sorted the whole account instead of reading one index range.
REDUNDANT_INDEXES = ("onboard_account_id", "entity_account_id", "flow_account_id", "invitation_account_id",
                     "invitation_email", "connection_seller_id", "connection_buyer_id")


def _v2_drop_redundant_indexes() -> None:
    for name in REDUNDANT_INDEXES:
        db.execute_sql(f"DROP INDEX IF EXISTS {name}")


# Migration 3 as it ran: a copy of each onboard's JSON for list pages (an index expression on SQLite, a
# trigger-written column on PostgreSQL). Migration 4 removes it: no derived copy of a row is kept.
ONBOARD_MEMBERS = ("invitation_id", "id", "account_id", "connection_id", "flow_id", "status", "reason", "created_at",
                   "updated_at")


def _sqlite_member(name: str) -> str:
    if name.endswith("_at"):
        return f"""'{name}', substr("{name}", 1, 10) || 'T' || substr("{name}", 12, 8) || 'Z'"""
    return f"'{name}', \"{name}\""


def _postgres_member(index: int, name: str) -> str:
    if name.endswith("_at"):
        value = f"""'"' || to_char(NEW."{name}", 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '"'"""
    else:
        value = f'to_json(NEW."{name}")::text'
    return f"""'{"," if index else "{"}"{name}":' || coalesce({value}, 'null')"""


ONBOARD_JSON_SQLITE = "json_object(" + ", ".join(map(_sqlite_member, ONBOARD_MEMBERS)) + ")"
ONBOARD_JSON_POSTGRES = " || ".join(_postgres_member(i, name) for i, name in enumerate(ONBOARD_MEMBERS)) + " || '}'"


def _v3_onboards_keep_their_json() -> None:
    if not is_postgres():
        db.execute_sql('CREATE INDEX IF NOT EXISTS "onboard_account_id_id_json" ON "onboard" '
                       f'("account_id", "id", {ONBOARD_JSON_SQLITE})')
        db.execute_sql("DROP INDEX IF EXISTS onboard_account_id_id")
        return
    db.execute_sql('ALTER TABLE onboard ADD COLUMN IF NOT EXISTS "page_json" text')
    db.execute_sql(f"""CREATE OR REPLACE FUNCTION onboard_page_json() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW."page_json" := {ONBOARD_JSON_POSTGRES}; RETURN NEW; END $$""")
    db.execute_sql("DROP TRIGGER IF EXISTS onboard_page_json ON onboard")
    db.execute_sql("CREATE TRIGGER onboard_page_json BEFORE INSERT OR UPDATE ON onboard "
                   "FOR EACH ROW EXECUTE FUNCTION onboard_page_json()")
    db.execute_sql("ALTER TABLE onboard ENABLE ALWAYS TRIGGER onboard_page_json")
    db.execute_sql('UPDATE onboard SET "page_json" = NULL')
    db.execute_sql('ALTER TABLE onboard ALTER COLUMN "page_json" SET NOT NULL')


def _v4_onboards_without_json_copies() -> None:
    """Undoes migration 3: list pages are written from the rows themselves. Each statement may run again."""
    db.execute_sql('CREATE INDEX IF NOT EXISTS "onboard_account_id_id" ON "onboard" ("account_id", "id")')
    if not is_postgres():
        db.execute_sql("DROP INDEX IF EXISTS onboard_account_id_id_json")
        return
    db.execute_sql("DROP TRIGGER IF EXISTS onboard_page_json ON onboard")
    db.execute_sql("DROP FUNCTION IF EXISTS onboard_page_json()")
    db.execute_sql('ALTER TABLE onboard DROP COLUMN IF EXISTS "page_json"')


def _v5_abuse_limits() -> None:
    """Counts for the abuse limits, when an invitation's e-mail last went out, parked outbox messages."""
    db.create_tables([RateCounter])
    _add_columns(Invitation, "last_sent_at")
    _add_columns(OutboxMessage, "failed_at")


def _v6_documented_members() -> None:
    """LeadConduit's documented members of entities and accounts, users' notification settings, and
    e-mails suppressed at their recipients' wish."""
    db.create_tables([UserSettings])
    _add_columns(Entity, "description", "deprecated", "see", "field_suffix", "logo_url", "time_zone",
                 "trustedform_certified_vendor", "website")
    _add_columns(Account, "time_zone")
    _add_columns(OutboxMessage, "suppressed_at")


def _v7_sandbox() -> None:
    """Whether an account was made in sandbox mode, and how far its clock runs ahead there."""
    _add_columns(Account, "sandbox", "clock_offset_seconds")


def _v8_join_pages() -> None:
    """The join pages: links, sign-in codes and sessions, users' names, and the outbox's columns for what an
    e-mail is about (its HTML, invitation, connection and link)."""
    db.create_tables([JoinToken, SignInCode, JoinSession])
    _add_columns(User, "name")
    _add_columns(OutboxMessage, "html", "invitation_id", "connection_id", "link")


def _v9_leases_and_idempotency() -> None:
    """Each outbox claim's own token, which fences a sender whose lease was taken over; the answers kept
    for Idempotency-Keys."""
    _add_columns(OutboxMessage, "lease_token")
    db.create_tables([IdempotencyKey])


MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "drop indexes that (column, id) indexes serve", _v2_drop_redundant_indexes),
    (3, "onboards keep their JSON for list pages", _v3_onboards_keep_their_json),
    (4, "onboards without copies of their JSON", _v4_onboards_without_json_copies),
    (5, "abuse limits and parked e-mails", _v5_abuse_limits),
    (6, "documented members, user settings, suppressed e-mails", _v6_documented_members),
    (7, "sandbox accounts and their clocks", _v7_sandbox),
    (8, "join pages: links, sign-in codes, sessions", _v8_join_pages),
    (9, "outbox lease tokens, idempotency keys", _v9_leases_and_idempotency),
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
                if is_postgres():  # a migration may take longer than a request's statement may
                    db.execute_sql("SET LOCAL statement_timeout = 0")
                step()
                SchemaVersion.create(id=version, name=name)
                applied.append(f"{version}: {name}")
    return applied
