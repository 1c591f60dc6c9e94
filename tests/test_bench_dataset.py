"""The bench data set's bulk-load settings do not outlive the load: the pool hands the connection on,
to the app itself where it runs in the same process (`make bench-levers`)."""

from bench import dataset
from models.base import db, is_postgres


def session_settings() -> tuple:
    if is_postgres():
        return db.execute_sql("SELECT current_setting('synchronous_commit'), "
                              "current_setting('session_replication_role')").fetchone()
    return tuple(db.execute_sql(f"PRAGMA {pragma}").fetchone()[0] for pragma in dataset.SQLITE_BULK)


def test_bulk_settings_hold_for_the_load_only(app, database_url):
    with db.connection_context():
        production = session_settings()
        with dataset._bulk_session():
            bulk = session_settings()
        assert session_settings() == production != bulk
        assert bulk[0] in ("off", 0)  # synchronous_commit off; SQLite's foreign keys off
