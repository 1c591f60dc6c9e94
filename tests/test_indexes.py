"""An account's list page is one range of its (account, id) index on both databases, whatever plan
the database caches; the single-column indexes that invited a sort of the whole account are gone. A
page of onboards reads each one's JSON as the database keeps it: SQLite in that index, PostgreSQL in a
column its trigger writes."""

import sqlite3
from collections.abc import Callable
from datetime import datetime

import orjson
import peewee
import pytest

from bench import dataset
from models.base import db, is_postgres, page_query, transaction
from models.flows import Flow
from models.migrations import MIGRATIONS, REDUNDANT_INDEXES, SchemaVersion, migrate
from models.onboards import MEMBERS, Onboard

TABLES = ("onboard", "entity", "flow", "invitation", "connection")


def index_names() -> set[str]:
    with db.connection_context():
        return {index.name for table in TABLES for index in db.get_indexes(table)}


def onboard_page_index() -> str:
    return "onboard_account_id_id" if is_postgres() else "onboard_account_id_id_json"


def test_no_single_column_index_beside_a_column_id_index(app):
    names = index_names()
    assert not names & set(REDUNDANT_INDEXES)
    assert {onboard_page_index(), "entity_account_id_id", "flow_account_id_id", "invitation_account_id_id",
            "invitation_email_id", "connection_seller_id_id", "connection_buyer_id_id"} <= names


def test_migrating_a_version_1_database_drops_them(app):
    columns = {name: name.split("_", 1) for name in REDUNDANT_INDEXES}
    with transaction():
        for name, (table, column) in columns.items():
            db.execute_sql(f"CREATE INDEX {name} ON {table} ({column})")
        SchemaVersion.delete().where(SchemaVersion.id == 2).execute()
    assert set(REDUNDANT_INDEXES) <= index_names()
    assert migrate() == ["2: drop indexes that (column, id) indexes serve"]
    assert not index_names() & set(REDUNDANT_INDEXES)


def list_plan(query: "peewee.ModelSelect[Onboard]") -> str:
    sql, params = query.sql()
    with db.connection_context():
        if not is_postgres():
            return "\n".join(str(row) for row in db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        # The plan PostgreSQL caches for a prepared statement once it stops planning each run.
        db.execute_sql("SET plan_cache_mode = force_generic_plan")
        numbered = sql
        for n in range(1, len(params) + 1):
            numbered = numbered.replace("%s", f"${n}", 1)
        types = ", ".join("bigint" if isinstance(value, int) else "text" for value in params)
        db.execute_sql(f"PREPARE list_page({types}) AS {numbered}")
        try:
            values = ", ".join(str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'" for v in params)
            return "\n".join(row[0] for row in db.execute_sql(f"EXPLAIN EXECUTE list_page({values})"))
        finally:
            db.execute_sql("DEALLOCATE list_page")
            db.execute_sql("RESET plan_cache_mode")


def test_a_big_accounts_list_page_is_read_from_its_index_without_sorting(app):
    with db.connection_context():
        # The load buyer holds 6,000 of 12,000 onboards: with the old index, PostgreSQL sorted them all.
        data = dataset.load(12_000)
    plan = list_plan(page_query(Onboard.for_account(data.account_id), Onboard, fetch=101, after_id=None,
                                before_id=None, sort="asc"))
    assert onboard_page_index() in plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan


def first_page() -> "peewee.ModelSelect[Onboard]":
    return MEMBERS.json_rows(page_query(Onboard.for_account("any account"), Onboard, fetch=101, after_id=None,
                                        before_id=None, sort="asc"))


def functions_called(query: "peewee.ModelSelect[Onboard]") -> list[str]:
    """The SQL functions in the program SQLite compiles for `query` (its Function opcodes), compiled on a
    connection of its own: EXPLAIN runs no check that a connection's schema is current, and a pooled
    connection would answer from its statement cache."""
    sql, params = query.sql()
    with sqlite3.connect(db.obj.database) as connection:
        program = connection.execute(f"EXPLAIN {sql}", params).fetchall()
    return [str(p4).split("(")[0] for _addr, opcode, _p1, _p2, _p3, p4, *_ in program if opcode == "Function"]


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # its EXPLAIN programs


@SQLITE_ONLY
def test_sqlite_reads_a_list_pages_json_from_the_index(app):
    assert functions_called(first_page()) == []
    with transaction():
        db.execute_sql("DROP INDEX onboard_account_id_id_json")  # then SQLite writes each row's JSON again
    assert "json_object" in functions_called(first_page())


def first_rows(account_id: str, count: int) -> Callable[[], "peewee.ModelSelect[Onboard]"]:
    """The account's first onboards, a new query each call (peewee keeps a query's rows)."""
    return lambda: Onboard.for_account(account_id).order_by(Onboard.id).limit(count)


def page_and_rows(rows: Callable[[], "peewee.ModelSelect[Onboard]"]) -> tuple[list[dict], list[dict]]:
    """The rows' objects as a page reads their kept JSON, and as the rows' own JSON (Onboard.as_json)."""
    with transaction(write=False):
        listed = [orjson.loads(text) for _id, text in MEMBERS.json_rows(rows()).tuples()]
        return listed, [orjson.loads(orjson.dumps(onboard.as_json())) for onboard in rows()]


def test_the_json_a_page_reads_follows_every_write(app):
    """The database keeps each onboard's JSON with every write, its own included (a deleted flow's onboards
    lose their flow_id), so a page is what the rows' own JSON (Onboard.as_json) is at each step."""
    with db.connection_context():
        data = dataset.load(1000)  # on PostgreSQL, COPY under session_replication_role = replica
    rows = first_rows(data.account_id, 3)
    listed, own = page_and_rows(rows)
    assert listed == own
    first, second, _third = (onboard.id for onboard in rows())
    with transaction():
        flow = Flow.create(account=data.account_id, name="delivery")
        Onboard.update(flow=flow.id, updated_at=datetime(2027, 1, 2, 3, 4, 5, 678)).where(
            Onboard.id == second).execute()
        Onboard.update(status="failed", reason=REASON).where(Onboard.id == first).execute()
    listed, own = page_and_rows(rows)
    assert listed == own
    assert (listed[0]["status"], listed[0]["reason"]) == ("failed", REASON)
    assert (listed[1]["flow_id"], listed[1]["updated_at"]) == (flow.id, "2027-01-02T03:04:05Z")
    with transaction():
        flow.delete_instance()
    listed, own = page_and_rows(rows)
    assert listed == own
    assert listed[1]["flow_id"] is None


REASON = '"quoted", ünïcode, \\ and \n, \t, \x01 and \u2028'  # what JSON must escape, and what it need not


def back_to_version_2() -> None:
    """The database as migration 2 left it, onboards kept."""
    with transaction():
        if is_postgres():
            db.execute_sql("DROP TRIGGER onboard_page_json ON onboard")
            db.execute_sql("DROP FUNCTION onboard_page_json()")
            db.execute_sql("ALTER TABLE onboard DROP COLUMN page_json")
        else:
            db.execute_sql("DROP INDEX onboard_account_id_id_json")
            db.execute_sql('CREATE INDEX onboard_account_id_id ON onboard ("account_id", "id")')
        SchemaVersion.delete().where(SchemaVersion.id == 3).execute()


def test_migrating_a_version_2_database_with_onboards_keeps_their_json(app):
    with db.connection_context():
        data = dataset.load(1000)
    with transaction():
        Onboard.update(reason=REASON).where(Onboard.account == data.account_id).execute()
    back_to_version_2()
    if not is_postgres():
        assert "json_object" in functions_called(first_page())
    assert migrate() == ["3: onboards keep their JSON for list pages"]
    if not is_postgres():
        names = index_names()
        assert "onboard_account_id_id_json" in names and "onboard_account_id_id" not in names
        assert functions_called(first_page()) == []
    listed, own = page_and_rows(first_rows(data.account_id, 100))
    assert len(listed) == 100 and listed == own and listed[0]["reason"] == REASON


def test_migration_3_runs_again_without_harm(app):
    """As a second process migrating at the same moment runs it, after the first committed."""
    with db.connection_context():
        data = dataset.load(1000)
    with transaction():
        {version: step for version, _name, step in MIGRATIONS}[3]()
    listed, own = page_and_rows(first_rows(data.account_id, 100))
    assert len(listed) == 100 and listed == own


# What migration 3 made the databases keep. A change to the onboard's members (a member added, renamed,
# or its column changed) needs a migration that writes the kept JSON anew: on PostgreSQL the trigger's
# function and every row's page_json, on SQLite the index (else pages are right but slow again). Then
# this list changes with it.
KEPT_MEMBERS = (("invitation_id", "invitation_id"), ("id", "id"), ("account_id", "account_id"),
                ("connection_id", "connection_id"), ("flow_id", "flow_id"), ("status", "status"),
                ("reason", "reason"), ("created_at", "created_at"), ("updated_at", "updated_at"))


def test_the_members_are_those_the_databases_keep_the_json_of():
    assert tuple((name, field.column_name) for name, field in MEMBERS.fields.items()) == KEPT_MEMBERS
