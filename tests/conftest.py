"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from TEST_DATABASE_URL (default: the local server). Each run makes a throw-away
database and drops it at the end; each test starts from an empty schema. When the server cannot
be reached the PostgreSQL half is left out with one loud line, unless REQUIRE_POSTGRES=1, which
makes that an error.
"""

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from models.base import release
from onboards.app import create_app
from onboards.config import Settings
from tests.helpers import Party, migrated, party
from tests.postgres import ADMIN_URL, BACKENDS, POSTGRES_PROBLEM, throwaway_database
from tests.servers import RELAXED_LIMITS as RELAXED_ENV

REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"
pytest_plugins = ["pytester"]  # tests/test_sandbox.py runs the plugin as a client developer does


def pytest_configure(config: pytest.Config) -> None:
    if POSTGRES_PROBLEM and REQUIRE_POSTGRES:
        raise pytest.UsageError(f"REQUIRE_POSTGRES=1 but PostgreSQL at {ADMIN_URL} is unreachable: {POSTGRES_PROBLEM}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without PostgreSQL, the tests that need it by name (not through `database_url`) cannot run:
    they are deselected, and the loud line says PostgreSQL was not tested."""
    if not POSTGRES_PROBLEM:
        return
    postgres_only = [item for item in items if "postgres_url" in getattr(item, "fixturenames", ())
                     and "database_url" not in getattr(item, "fixturenames", ())]
    if postgres_only:
        config.hook.pytest_deselected(items=postgres_only)
        items[:] = [item for item in items if item not in postgres_only]


def pytest_report_header(config: pytest.Config) -> str:
    if POSTGRES_PROBLEM:
        return f"!!!!! PostgreSQL UNREACHABLE ({POSTGRES_PROBLEM}): database tests run on SQLite ONLY !!!!!"
    return f"database tests run on SQLite and PostgreSQL ({ADMIN_URL})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if POSTGRES_PROBLEM:
        terminalreporter.write_line(
            f"!!!!! PostgreSQL UNREACHABLE: only SQLite was tested ({POSTGRES_PROBLEM}) !!!!!", red=True, bold=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL database for this test run."""
    with throwaway_database(ADMIN_URL, "onboards_test") as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind (the `app` fixture migrates it); what the context's database holds
    open is closed after the test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/onboards.db"
    else:
        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
    yield url
    release()


RELAXED_LIMITS = {name.lower(): float(value) if "SECONDS" in name else int(value)
                  for name, value in RELAXED_ENV.items()}


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The abuse limits are out of the way here; tests/test_hostile.py tests them as configured by default.
    return Settings.from_env({}, database_url=database_url, validate_responses=True,
                             outbox_poll_seconds=0.05, outbox_retry_base_seconds=0.1,
                             outbox_retry_max_seconds=0.5, **RELAXED_LIMITS)


@pytest.fixture
def send_outbox() -> bool:
    """Whether the app's outbox sender runs (while a TestClient serves it); tests/test_outbox.py turns it on."""
    return False


@pytest.fixture
def app(settings: Settings, send_outbox: bool):
    """The service, migrated, with response validation on."""
    return migrated(create_app(settings, send_outbox=send_outbox))


@pytest.fixture
def sandbox_client(settings: Settings) -> Iterator[TestClient]:
    """The service in sandbox mode (tests/test_sandbox.py has its token)."""
    application = migrated(create_app(replace(settings, sandbox=True, sandbox_token="sandbox-token-0123456789"),
                                      send_outbox=False))
    with TestClient(application) as test_client:
        yield test_client


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_party(app):
    """Makes a party in the app's database (migrated by `app`)."""
    return party


@pytest.fixture
def seller(make_party) -> Party:
    return make_party("Acme Leads", "seller@example.com")


@pytest.fixture
def buyer(make_party) -> Party:
    return make_party("Bright Buyers", "buyer@example.com")


@pytest.fixture
def outsider(make_party) -> Party:
    return make_party("Other Co", "other@example.com")
