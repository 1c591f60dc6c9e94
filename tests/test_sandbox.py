"""Sandbox mode (sandbox.yaml): accounts, the mailbox and per-account clocks over HTTP, guarded by a token;
without sandbox mode none of it exists; the pytest plugin as a client developer uses it."""

import re
import subprocess
from dataclasses import replace

import httpx
import pytest
from starlette.testclient import TestClient

from models.accounts import Account
from models.base import transaction
from models.migrations import migrate
from onboards.app import create_app
from onboards.config import ConfigError
from tests.helpers import basic_auth, fresh_window, migrated, readme_example
from tests.servers import ONBOARDS, ROOT, Server, clean_env

TOKEN = "sandbox-token-0123456789"
SANDBOX = {"X-Sandbox-Token": TOKEN}
README = (ROOT / "README.md").read_text()


@pytest.fixture
def sandbox(sandbox_client: TestClient) -> TestClient:
    return sandbox_client


def account(client: TestClient, name: str, email: str) -> dict:
    made = client.post("/sandbox/accounts", json={"name": name, "email": email}, headers=SANDBOX)
    assert made.status_code == 201, made.text
    return made.json()


def test_without_sandbox_mode_none_of_it_exists(client):
    for method, path in (("POST", "/sandbox/accounts"), ("GET", "/sandbox/mailbox"), ("GET", "/sandbox/openapi.json")):
        assert client.request(method, path, headers=SANDBOX, json={}).status_code == 404
    assert not [path for path in client.get("/openapi.json").json()["paths"] if "sandbox" in path]


def test_every_sandbox_call_needs_the_token(sandbox):
    for headers in ({}, {"X-Sandbox-Token": "wrong-token-0123456789"}, {"X-Sandbox-Token": TOKEN + "x"}):
        answer = sandbox.get("/sandbox/mailbox", headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("SandboxToken")
    assert sandbox.get("/sandbox/mailbox", headers=SANDBOX).status_code == 200


def test_wrong_tokens_are_throttled_as_failed_authentications_are(settings):
    application = migrated(create_app(replace(settings, sandbox=True, sandbox_token=TOKEN, failed_auth_per_minute=3),
                                      send_outbox=False))
    fresh_window()
    with TestClient(application) as sandbox:
        answers = [sandbox.get("/sandbox/mailbox", headers={"X-Sandbox-Token": f"wrong-token-{n:010}"})
                   for n in range(5)]
    assert [a.status_code for a in answers] == [401] * 3 + [429] * 2
    assert answers[-1].headers["content-type"] == "application/problem+json"
    assert 0 < int(answers[-1].headers["retry-after"]) <= 60


def test_accounts_are_made_isolated_with_working_keys(sandbox):
    first, second = account(sandbox, "One", "one@example.com"), account(sandbox, "Two", "two@example.com")
    assert re.fullmatch("[0-9a-f]{40}", first["api_key"]) and first["account_id"] != second["account_id"]
    made = sandbox.post("/flows", json={"name": "mine"}, headers=basic_auth(first["api_key"])).json()
    assert sandbox.get(f"/flows/{made['id']}", headers=basic_auth(second["api_key"])).status_code == 404
    assert sandbox.post("/sandbox/accounts", json={"name": "Again", "email": "one@example.com"},
                        headers=SANDBOX).status_code == 409
    with transaction(write=False):
        assert {a.sandbox for a in Account.select()} == {True}


def test_the_mailbox_pages_and_filters_with_the_ids_parsed_out(sandbox):
    seller = account(sandbox, "Seller", "seller@example.com")
    invited = [sandbox.post("/invitations/recipient", json={"email": f"b{n}@example.com"},
                            headers=basic_auth(seller["api_key"])).json()["entity"] for n in range(5)]
    pages, url = [], "/sandbox/mailbox?limit=2"
    while url:
        page = sandbox.get(url, headers=SANDBOX)
        pages.append(page.json())
        url = page.headers.get("link", "<>")[1:].split(">")[0]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [m["invitation_id"] for p in pages for m in p] == [e["invitation_id"] for e in invited]
    [one] = sandbox.get("/sandbox/mailbox?to=b3@example.com&kind=invitation_sent", headers=SANDBOX).json()
    assert (one["invitation_id"], one["connection_id"], one["state"]) == (invited[3]["invitation_id"], None, "pending")
    assert sandbox.get("/sandbox/mailbox?kind=buyer_delivery_set_up", headers=SANDBOX).json() == []
    assert sandbox.get("/sandbox/mailbox?kind=spam", headers=SANDBOX).status_code == 400


def test_an_accounts_clock_moves_its_invitations_past_expiry_and_no_one_elses(sandbox):
    seller, other = account(sandbox, "Seller", "s@example.com"), account(sandbox, "Other", "o@example.com")
    buyer = account(sandbox, "Buyer", "b@example.com")
    mine = sandbox.post("/invitations/recipient", json={"email": buyer["email"]},
                        headers=basic_auth(seller["api_key"])).json()["entity"]
    theirs = sandbox.post("/invitations/recipient", json={"email": buyer["email"]},
                          headers=basic_auth(other["api_key"])).json()["entity"]
    clock = sandbox.post(f"/sandbox/accounts/{seller['account_id']}/clock", json={"seconds": 8 * 86400},
                         headers=SANDBOX)
    assert clock.status_code == 200 and clock.json()["offset_seconds"] == 8 * 86400
    onboard = {"invitation_id": mine["invitation_id"]}
    assert sandbox.post("/onboards", json=onboard, headers=basic_auth(buyer["api_key"])).status_code == 410
    assert sandbox.get(f"/entities/{mine['id']}", headers=basic_auth(seller["api_key"])).json()["expired"] is True
    resent = sandbox.put(f"/invitations/{mine['id']}/resend", headers=basic_auth(seller["api_key"]))
    assert resent.status_code == 200 and resent.json()["entity"]["expired"] is False  # renewed by its clock
    assert sandbox.post("/onboards", json=onboard, headers=basic_auth(buyer["api_key"])).status_code == 201
    assert sandbox.post("/onboards", json={"invitation_id": theirs["invitation_id"]},
                        headers=basic_auth(buyer["api_key"])).status_code == 201
    assert sandbox.post("/sandbox/accounts/" + "0" * 24 + "/clock", json={"seconds": 1},
                        headers=SANDBOX).status_code == 404


def test_a_clock_runs_at_most_100_years_ahead(sandbox):
    seller = account(sandbox, "Seller", "s@example.com")
    clock = f"/sandbox/accounts/{seller['account_id']}/clock"
    ten_years = 315360000
    for _ in range(10):
        assert sandbox.post(clock, json={"seconds": ten_years}, headers=SANDBOX).status_code == 200
    over = sandbox.post(clock, json={"seconds": 86400}, headers=SANDBOX)
    assert over.status_code == 409 and "36500 days" in over.json()["detail"], over.text
    with transaction(write=False):
        assert Account.get_by_id(seller["account_id"]).clock_offset_seconds == 10 * ten_years
    # At the limit every date the account's objects compute is still a date: an invitation expires a week on.
    invited = sandbox.post("/invitations/recipient", json={"email": "b@example.com"},
                           headers=basic_auth(seller["api_key"]))
    assert invited.status_code == 201 and invited.json()["entity"]["invitation_expires_at"] > "2126", invited.text


@pytest.mark.parametrize("to", ["a@example.com\x00", "a@example.com\n", "\x7f"])
def test_the_mailbox_refuses_a_control_character_in_an_address(sandbox, to):
    found = sandbox.get("/sandbox/mailbox", params={"to": to}, headers=SANDBOX)
    assert found.status_code == 400 and found.json()["errors"][0]["parameter"] == "to", found.text


def test_a_sandbox_server_refuses_a_database_with_other_accounts(settings, database_url, tmp_path):
    from models.base import bind

    bind(database_url)
    migrate()
    with transaction():
        Account.create_with_user("Production Co", "ops@example.com")
    with pytest.raises(ConfigError, match="outside sandbox mode"):
        create_app(replace(settings, sandbox=True, sandbox_token=TOKEN))
    done = subprocess.run([str(ONBOARDS), "serve", "--sandbox"], env=clean_env(DATABASE_URL=database_url),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "outside sandbox mode" in done.stderr


@pytest.mark.slow
def test_a_client_developers_test_runs_over_http_against_a_real_sandbox_server(database_url, tmp_path):
    """The README's scenario against `onboards serve --sandbox` in a process of its own, on each database."""
    from models.base import bind

    bind(database_url)
    migrate()
    server = Server(database_url, tmp_path / "sandbox.log", SANDBOX="1", SANDBOX_TOKEN=TOKEN)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            def new(name: str, email: str) -> dict:
                return http.post("/sandbox/accounts", json={"name": name, "email": email}, headers=SANDBOX).json()

            seller, buyer = new("Acme", "seller@example.com"), new("Bright", "buyer@example.com")
            entity = http.post("/invitations/recipient", json={"email": buyer["email"]},
                               headers=basic_auth(seller["api_key"])).json()["entity"]
            [mail] = http.get("/sandbox/mailbox", params={"to": buyer["email"]}, headers=SANDBOX).json()
            onboard = http.post("/onboards", json={"invitation_id": mail["invitation_id"]},
                                headers=basic_auth(buyer["api_key"])).json()
            done = http.put(f"/onboards/{onboard['id']}", headers=basic_auth(buyer["api_key"]),
                            json={"invitation_id": entity["invitation_id"], "status": "completed"}).json()
            assert done["status"] == "completed"
            kinds = [m["kind"] for m in http.get("/sandbox/mailbox", params={"to": seller["email"]},
                                                 headers=SANDBOX).json()]
            assert kinds == ["invitation_accepted", "buyer_delivery_set_up"]
    finally:
        server.stop()


@pytest.mark.slow
def test_the_readmes_example_passes_through_the_pytest_plugin(pytester: pytest.Pytester):
    """As a client developer runs it: onboards installed, the fixture from the pytest11 entry point."""
    pytester.makepyfile(test_client=readme_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "default")
    result.assert_outcomes(passed=1)
