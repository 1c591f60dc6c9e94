"""The join pages over HTTP, on both databases: the whole path, each link state, forms' errors, CSRF,
cookies and headers, double submissions, sign-in codes, the limits, the access log and the sandbox
mailbox. Every page is parsed by html5lib in strict mode. (tests/test_browser.py drives a real browser.)"""

import logging
import re
from dataclasses import replace
from datetime import timedelta

import html5lib
import pytest
from starlette.testclient import TestClient

from models.accounts import User
from models.base import transaction, utcnow
from models.invitations import Invitation
from models.onboards import Onboard
from onboards.app import create_app
from tests.helpers import basic_auth, fresh_window, invite, join_token, latest_mail, migrated, seller_flow, sign_in_code

HEADERS = {"x-frame-options": "DENY", "referrer-policy": "no-referrer"}


def page(response, status: int = 200) -> str:
    """The page's HTML, checked: its status, strict HTML, the security headers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    html5lib.HTMLParser(strict=True).parse(response.text)
    assert {k: response.headers[k] for k in HEADERS} == HEADERS
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "<script" not in response.text
    return response.text


def csrf(client: TestClient) -> str:
    return client.cookies["onboards_csrf"]


def action(html: str, ending: str) -> str:
    found = re.search(rf'action="([^"]*{ending})"', html)
    assert found, html
    return found[1]


def onboards_of(email: str) -> int:
    with transaction(write=False):
        user = User.get(User.email == email)
        return Onboard.select().where(Onboard.account == user.account_id).count()


def test_a_new_buyer_goes_from_the_link_to_a_completed_onboard_and_a_key(client, seller):
    entity = invite(client, seller, "new@example.com")
    flow = seller_flow(client, seller, entity["id"])
    token = join_token(entity["invitation_id"])
    first = client.get(f"/join/{token}")
    html = page(first)
    assert "Acme Leads" in html and "new@example.com" in html and "Create your account" in html
    assert "onboards_csrf=" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
    assert "set-cookie" not in client.get(f"/join/{token}").headers  # set once, by the first page

    bad = page(client.post(f"/join/{token}/account", data={"csrf": csrf(client), "company": "Bad\x01Co",
                                                            "user_name": "Ann"}), 422)
    assert 'id="company" name="company"' in bad and 'aria-invalid="true"' in bad
    not_utf8 = client.post(f"/join/{token}/account", content=f"csrf={csrf(client)}&company=%FF%FE&user_name=Ann",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert 'aria-invalid="true"' in page(not_utf8, 422)
    with transaction(write=False):
        assert not User.select().where(User.email == "new@example.com").exists()

    created = client.post(f"/join/{token}/account", data={"csrf": csrf(client), "company": "New Co",
                                                          "user_name": "Ann"}, follow_redirects=False)
    assert created.status_code == 303
    session = created.headers["set-cookie"]
    assert "onboards_session=" in session and "HttpOnly" in session and "SameSite=lax" in session.replace("Lax", "lax")
    assert "Secure" not in session  # PUBLIC_BASE_URL is http here
    again = client.post(f"/join/{token}/account", data={"csrf": csrf(client), "company": "New Co",
                                                        "user_name": "Ann"}, follow_redirects=False)
    assert (again.status_code, again.headers["location"]) == (303, created.headers["location"])  # the state as it is

    html = page(client.get(created.headers["location"]))
    accept = action(html, "/accept")
    first = client.post(accept, data={"csrf": csrf(client)}, follow_redirects=False)
    second = client.post(accept, data={"csrf": csrf(client)}, follow_redirects=False)
    assert first.headers["location"] == second.headers["location"] and onboards_of("new@example.com") == 1
    html = page(client.get(first.headers["location"]))
    assert "A new minimal flow" in html
    html = page(client.post(action(html, "/flow"), data={"csrf": csrf(client), "flow_id": "nonsense"}), 422)
    assert "flow_id-error" in html
    html = page(client.post(action(html, "/flow"), data={"csrf": csrf(client), "flow_id": "new"}))
    html = page(client.post(action(html, "/finish"), data={"csrf": csrf(client)}))
    assert "Done:" in html and entity["id"] not in html
    with transaction(write=False):
        onboard = Onboard.get(Onboard.invitation == entity["invitation_id"])
    assert onboard.status == "completed" and str(onboard.flow_id) in html and onboard.connection_id in html
    seller_steps = client.get(f"/flows/{flow['id']}", headers=seller.auth).json()["steps"]
    assert seller_steps[0]["enabled"] is True
    # The seller is told as the API path tells it: accepted, then ready to receive its leads.
    assert latest_mail("invitation_accepted", to=seller.email).connection_id == onboard.connection_id
    assert latest_mail("buyer_delivery_set_up", to=seller.email).connection_id == onboard.connection_id

    shown = page(client.post("/onboarding/key", data={"csrf": csrf(client)}))
    key = re.search(r'id="api-key" type="text" value="([0-9a-f]{40})" readonly', shown)
    assert key and f"curl -u API:{key[1]} " in shown
    listed = client.get("/onboards", headers=basic_auth(key[1]))
    assert listed.status_code == 200 and [o["id"] for o in listed.json()] == [onboard.id]
    assert key[1] not in page(client.post("/onboarding/key", data={"csrf": csrf(client)}))  # shown once


def test_a_link_that_no_longer_works_says_why_and_nothing_else(client, seller):
    assert "Not found" in page(client.get("/join/" + "A" * 43), 404)
    used, expired, withdrawn = (invite(client, seller, f"{who}@example.com") for who in ("used", "expired", "gone"))
    token = join_token(used["invitation_id"])
    client.post(f"/join/{token}/account", data={"csrf": csrf(client), "company": "Used Co", "user_name": "U"})
    with transaction():
        Invitation.update(expires_at=utcnow() - timedelta(seconds=1)).where(
            Invitation.id == expired["invitation_id"]).execute()
    gone = join_token(withdrawn["invitation_id"])
    assert client.delete(f"/invitations/{withdrawn['invitation_id']}", headers=seller.auth).status_code == 204
    fresh = TestClient(client.app)  # a browser with no session
    for link, why in ((token, "was used"), (join_token(expired["invitation_id"]), "has expired"),
                      (gone, "was withdrawn")):
        html = page(fresh.get(f"/join/{link}"), 410)
        assert why in html and "Acme Leads" not in html and "@example.com" not in html


def test_a_form_without_the_csrf_token_is_refused(client, seller):
    entity = invite(client, seller, "new@example.com")
    token = join_token(entity["invitation_id"])
    client.get(f"/join/{token}")
    for data in ({"company": "New Co", "user_name": "Ann"}, {"csrf": "forged", "company": "New Co", "user_name": "A"}):
        assert "form has expired" in page(client.post(f"/join/{token}/account", data=data), 403)
    with transaction(write=False):
        assert not User.select().where(User.email == "new@example.com").exists()


def test_an_existing_user_signs_in_with_a_code_and_the_session_is_rotated(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    html = page(client.get(f"/join/{join_token(entity['invitation_id'])}"))
    assert "E-mail me a sign-in code" in html and "Create your account" not in html
    html = page(client.post("/onboarding/sign-in", data={
        "csrf": csrf(client), "email": buyer.email, "next": f"/onboarding/invitations/{entity['invitation_id']}"}))
    code = sign_in_code(buyer.email)
    wrong = f"{(int(code) + 1) % 10 ** 6:06d}"
    form = {"csrf": csrf(client), "email": buyer.email, "next": f"/onboarding/invitations/{entity['invitation_id']}"}
    assert 'aria-invalid="true"' in page(client.post("/onboarding/code", data={**form, "code": wrong}), 422)
    signed = client.post("/onboarding/code", data={**form, "code": code}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == form["next"]
    first_session = client.cookies["onboards_session"]
    client.post("/onboarding/sign-in", data={**form})
    again = client.post("/onboarding/code", data={**form, "code": sign_in_code(buyer.email)}, follow_redirects=False)
    assert again.status_code == 303 and client.cookies["onboards_session"] != first_session
    html = page(client.get(form["next"]))
    client.post(action(html, "/accept"), data={"csrf": csrf(client)})
    assert onboards_of(buyer.email) == 1
    assert "Onboard " in page(client.get("/onboarding/"))  # the signed-in user's own page lists it


def test_the_invitee_declines_from_the_link(client, seller):
    entity = invite(client, seller, "new@example.com")
    token = join_token(entity["invitation_id"])
    client.get(f"/join/{token}")
    assert "You declined" in page(client.post(f"/join/{token}/decline", data={"csrf": csrf(client)}))
    assert client.get(f"/entities/{entity['id']}", headers=seller.auth).status_code == 404
    assert "was declined" in page(client.get(f"/join/{token}"), 410)


def test_pages_of_a_session_send_a_visitor_without_one_to_sign_in(client):
    response = client.get("/onboarding/key", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/onboarding/sign-in?next=")
    assert "Give one e-mail address" in page(client.post("/onboarding/sign-in", data={
        "csrf": csrf(client), "email": "not an address"}), 422)


@pytest.fixture
def strict_client(settings):
    """The service with FAILED_AUTH_PER_MINUTE=3, served as https://."""
    app = migrated(create_app(replace(settings, failed_auth_per_minute=3,
                                      public_base_url="https://onboards.example.com"), send_outbox=False))
    with TestClient(app, base_url="https://testserver") as client:
        yield client


def test_failed_join_attempts_count_against_the_apis_limit_and_cookies_are_secure_on_https(strict_client):
    fresh_window()
    statuses = [strict_client.get(f"/join/{'B' * 42}{n}").status_code for n in range(4)]
    assert statuses == [404, 404, 404, 429]
    fresh = TestClient(strict_client.app, base_url="https://testserver")
    assert "; Secure" in fresh.get("/onboarding/sign-in").headers["set-cookie"]


def test_the_access_log_never_shows_a_join_links_secret(client, seller, caplog):
    entity = invite(client, seller, "new@example.com")
    token = join_token(entity["invitation_id"])
    with caplog.at_level(logging.INFO, logger="onboards.access"):
        client.get(f"/join/{token}")
        client.post(f"/join/{token}/decline", data={"csrf": csrf(client)})
    logged = [r.getMessage() for r in caplog.records if r.name == "onboards.access"]
    assert any("GET /join/… 200" in line for line in logged) and any("/join/…/decline" in line for line in logged)
    server = [r for r in caplog.records if not r.name.startswith("httpx")]  # the test client logs its own URLs
    assert server and not any(token in r.getMessage() or token in str(r.__dict__) for r in server)


def test_no_mailbox_page_outside_sandbox_mode(client):
    assert client.get("/sandbox/mail").status_code == 404


def test_the_sandbox_mailbox_page_is_behind_the_sandbox_token(sandbox_client):
    html = page(sandbox_client.get("/sandbox/mail"))
    assert 'name="token"' in html
    wrong = sandbox_client.post("/sandbox/mail", data={"csrf": csrf(sandbox_client), "token": "nope"})
    assert "onboards_sandbox" not in sandbox_client.cookies and page(wrong, 403)
    made = sandbox_client.post("/sandbox/accounts", json={"name": "Acme", "email": "s@example.com"},
                               headers={"X-Sandbox-Token": "sandbox-token-0123456789"}).json()
    sandbox_client.post("/invitations/recipient", json={"email": "b@example.com"}, headers=basic_auth(made["api_key"]))
    html = page(sandbox_client.post("/sandbox/mail", data={"csrf": csrf(sandbox_client),
                                                           "token": "sandbox-token-0123456789"}))
    link = re.search(r'<a href="(http://[^"]+/join/[^"]+)">', html)
    assert link and "Acme invites you to connect" in html
