"""An account's list page is one range of its (account, id) index on both databases, whatever plan the
database caches; the single-column indexes that invited a sort of the whole account are gone, and so are
the copies of each onboard's JSON migration 3 kept (migration 4)."""

import peewee

from models.base import db, is_postgres, page_query, transaction
from models.migrations import MIGRATIONS, REDUNDANT_INDEXES, SchemaVersion, migrate
from models.onboards import Onboard
from tests import dataset

TABLES = ("onboard", "entity", "flow", "invitation", "connection")


def index_names() -> set[str]:
    with db.connection_context():
        return {index.name for table in TABLES for index in db.get_indexes(table)}


def onboard_columns() -> set[str]:
    with db.connection_context():
        return {column.name for column in db.get_columns("onboard")}


def triggers() -> list[str]:
    with db.connection_context():
        if is_postgres():
            return [row[0] for row in db.execute_sql("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")]
        return [row[0] for row in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")]


def test_no_single_column_index_beside_a_column_id_index(app):
    names = index_names()
    assert not names & set(REDUNDANT_INDEXES)
    assert {"onboard_account_id_id", "entity_account_id_id", "flow_account_id_id", "invitation_account_id_id",
            "invitation_email_id", "connection_seller_id_id", "connection_buyer_id_id"} <= names


def assert_no_copies() -> None:
    assert "onboard_account_id_id_json" not in index_names()
    assert "page_json" not in onboard_columns()
    assert triggers() == []


def test_no_copy_of_an_onboard_is_kept(app):
    assert_no_copies()


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


def assert_page_is_one_index_range(account_id: str) -> None:
    for sort in ("asc", "desc"):
        plan = list_plan(page_query(Onboard.for_account(account_id), fetch=101, sort=sort))
        assert "onboard_account_id_id" in plan
        assert "Sort" not in plan and "TEMP B-TREE" not in plan


def test_a_big_accounts_list_page_is_read_from_its_index_without_sorting(app):
    with db.connection_context():
        # The load buyer holds 6,000 of 12,000 onboards: with a single-column index, PostgreSQL sorted them all.
        data = dataset.load(12_000)
    assert_page_is_one_index_range(data.account_id)


def to_version_3() -> None:
    """The database as migration 3 left it: each onboard's JSON kept beside it."""
    with transaction():
        SchemaVersion.delete().where(SchemaVersion.id == 4).execute()
        {version: step for version, _name, step in MIGRATIONS}[3]()


def pages(account_id: str) -> list[dict]:
    with transaction(write=False):
        return [onboard.as_json() for onboard in page_query(Onboard.for_account(account_id), fetch=100)]


def test_migrating_a_version_3_database_with_onboards_removes_the_copies(app):
    with db.connection_context():
        data = dataset.load(1000)
    before = pages(data.account_id)
    to_version_3()
    assert ("onboard_account_id_id_json" in index_names()) != is_postgres()
    assert ("page_json" in onboard_columns()) == is_postgres() == bool(triggers())
    assert migrate() == ["4: onboards without copies of their JSON"]
    assert_no_copies()
    assert "onboard_account_id_id" in index_names()
    assert len(before) == 100 and pages(data.account_id) == before
    assert_page_is_one_index_range(data.account_id)
    with transaction():  # writes go on without the trigger
        Onboard.update(status="failed", reason="r").where(Onboard.account == data.account_id).execute()
    assert {o["status"] for o in pages(data.account_id)} == {"failed"}


def test_migration_4_runs_again_without_harm(app):
    """As a second process migrating at the same moment runs it, after the first committed."""
    with transaction():
        {version: step for version, _name, step in MIGRATIONS}[4]()
    assert_no_copies()
    assert "onboard_account_id_id" in index_names()


def test_a_page_names_every_onboard_once_in_id_order(app):
    with db.connection_context():
        data = dataset.load(1000)
    with transaction(write=False):
        ids = [o.id for o in Onboard.for_account(data.account_id).order_by(Onboard.id)]
        forward = [o.id for o in page_query(Onboard.for_account(data.account_id), fetch=len(ids) + 1)]
        backward = [o.id for o in page_query(Onboard.for_account(data.account_id), fetch=len(ids) + 1, sort="desc")]
    assert forward == ids == backward[::-1]
