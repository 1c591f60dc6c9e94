"""An account's list page is one range of its (account, id) index on both databases, whatever plan
the database caches; the single-column indexes that invited a sort of the whole account are gone."""

import peewee

from bench import dataset
from models.base import db, is_postgres, page_query, transaction
from models.migrations import REDUNDANT_INDEXES, SchemaVersion, migrate
from models.onboards import Onboard

TABLES = ("onboard", "entity", "flow", "invitation", "connection")


def index_names() -> set[str]:
    with db.connection_context():
        return {index.name for table in TABLES for index in db.get_indexes(table)}


def test_no_single_column_index_beside_a_column_id_index(app):
    names = index_names()
    assert not names & set(REDUNDANT_INDEXES)
    assert {"onboard_account_id_id", "entity_account_id_id", "flow_account_id_id", "invitation_account_id_id",
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
    assert "onboard_account_id_id" in plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan
