"""Health, the served spec and docs, and the HTTP behaviour connexion does not give for free."""

import asyncio
import gc
import re
import threading
from dataclasses import fields
from pathlib import Path

from anyio import to_thread
from starlette.testclient import TestClient

from onboards.app import create_app
from onboards.config import Settings
from tests.helpers import wait_until


def test_health_needs_no_auth(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_health_is_503_when_the_database_does_not_answer():
    settings = Settings.from_env({}, database_url="postgresql://postgres@127.0.0.1:1/nowhere", validate_responses=True)
    with TestClient(create_app(settings, send_outbox=False)) as client:
        response = client.get("/health")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "the database is unavailable: retry after 1 second"
        assert response.headers["retry-after"] == "1"


def test_requests_get_503_not_500_when_the_database_is_away(seller):
    settings = Settings.from_env({}, database_url="postgresql://postgres@127.0.0.1:1/nowhere", validate_responses=True)
    with TestClient(create_app(settings, send_outbox=False)) as client:
        response = client.get("/onboards", headers=seller.auth)
        assert response.status_code == 503


def test_spec_and_swagger_ui_are_served(client):
    assert client.get("/openapi.json").json()["info"]["title"].startswith("onboards")
    assert client.get("/ui/").status_code == 200


def test_options_lists_the_methods_of_the_path(client):
    response = client.options("/onboards/5fd4371e940df5a34a3888b2")
    assert response.status_code == 204 and response.headers["allow"] == "GET, HEAD, OPTIONS, PUT"


def test_literal_path_wins_over_template_for_405(client, seller):
    response = client.get("/invitations/recipient", headers=seller.auth)
    assert response.status_code == 405 and response.headers["allow"] == "OPTIONS, POST"


def test_readme_configuration_table_lists_every_setting():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", table, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z_]+)`", cell)}
    assert documented == {field.name.upper() for field in fields(Settings)}


def test_the_handler_thread_pool_is_sized_by_the_settings(settings, app):
    under_way: list[int] = []

    def held() -> int:
        # Each call keeps its thread until as many calls are under way as the pool should have threads: the
        # pool's threads all start, and a wider pool would start more (all eight are handed over at once).
        under_way.append(threading.get_ident())
        wait_until(lambda: len(under_way) >= settings.handler_threads, 5)
        return threading.get_ident()

    async def eight_at_once() -> set[int]:
        return set(await asyncio.gather(*(to_thread.run_sync(held) for _ in range(8))))

    with TestClient(app) as client:
        assert client.get("/health").status_code == 200 and client.portal is not None
        threads = client.portal.call(eight_at_once)
        limit = client.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
    assert len(threads) == limit == settings.handler_threads == (1 if settings.database_url.startswith("sqlite") else 4)


def test_the_heap_start_up_left_is_frozen_while_the_app_serves(app):
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() > 10_000  # the spec, connexion's operations, the models
    assert gc.get_freeze_count() == 0  # thawed when it stopped
