"""The limits as a client sees them: every 429 says in its `detail` which limit and when to retry, as its
Retry-After header does, and `GET /metrics` counts each limit's refusals by name. The API's deadline 503s are
checked in tests/test_hostile.py, where server processes of their own meet a database that stops answering; a
join page's, which only words and counts what the API's deadline raises, here."""

from collections import Counter
from dataclasses import replace

from httpx2 import Response
from starlette.testclient import TestClient

from handlers.lifecycle import REQUEST_DEADLINE
from models.base import Unavailable
from onboards import join
from onboards.app import create_app
from onboards.config import Settings
from tests.helpers import basic_auth, fresh_window, migrated, refusal, refusals_counted

TOKEN = "sandbox-token-0123456789"
SANDBOX = {"X-Sandbox-Token": TOKEN}
# The detail of each limit's refusal, before the time to retry, with the limits test_every_refusal sets.
REACHED = {
    "resend-cooldown": "at most one e-mail per 300 seconds for one invitation",
    "invitations-per-address": "at most 1 invitation e-mails per day to this address from your account",
    "invitations-per-account": "at most 3 invitation e-mails per hour from your account",
    "failed-auth-per-key-prefix": "at most 2 failed authentications per minute of keys beginning as this one does",
    "failed-auth-per-address": "at most 2 failed authentications per minute from this address",
    "join-attempts-per-address": "at most 2 failed sign-in and join attempts per minute from this address",
}


def check(response: Response, limit: str) -> str:
    """The refusal names `limit` and says to retry when its Retry-After does; gives the limit's name."""
    assert refusal(response) == REACHED[limit]
    return limit


def test_every_refusal_names_its_limit_and_when_to_retry_and_is_counted_by_name(settings: Settings):
    tight = replace(settings, sandbox=True, sandbox_token=TOKEN, invitations_per_account_per_hour=3,
                    invitations_per_address_per_day=1, resend_cooldown_seconds=300, failed_auth_per_minute=2,
                    trusted_proxies="127.0.0.1")
    app = migrated(create_app(tight, send_outbox=False))
    refused: list[str] = []
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        made = client.post("/sandbox/accounts", json={"name": "Acme", "email": "seller@example.com"}, headers=SANDBOX)
        seller, auth = made.json(), basic_auth(made.json()["api_key"])

        def post_invitation(email: str) -> Response:
            return client.post("/invitations/recipient", json={"email": email}, headers=auth)

        resend = f"/invitations/{post_invitation('a@example.org').json()['entity']['id']}/resend"
        refused.append(check(client.put(resend, headers=auth), "resend-cooldown"))
        # Past the cooldown on the inviter's clock: the address's limit (the real clock's day) is reached.
        assert client.post(f"/sandbox/accounts/{seller['account_id']}/clock", json={"seconds": 301},
                           headers=SANDBOX).status_code == 200
        refused.append(check(client.put(resend, headers=auth), "invitations-per-address"))
        assert [post_invitation(f"{n}@example.org").status_code for n in "bc"] == [201, 201]
        refused.append(check(post_invitation("d@example.org"), "invitations-per-account"))

        def from_address(number: int) -> dict[str, str]:
            return {"x-forwarded-for": f"203.0.113.{number}"}

        fresh_window(needed=5)  # what follows counts per minute: all of it in one
        # Wrong keys of one prefix, each from an address of its own.
        codes = [client.get("/flows", headers={**basic_auth(f"wrongkey{n}" + "0" * 32), **from_address(n)})
                 for n in range(3)]
        assert [c.status_code for c in codes[:2]] == [401, 401]
        refused.append(check(codes[2], "failed-auth-per-key-prefix"))
        # The prefix's limit is no fault of that address: its next wrong key, of another prefix, is only a 401.
        assert client.get("/flows", headers={**basic_auth("z" * 40), **from_address(2)}).status_code == 401
        # Wrong keys and sandbox tokens from one address; then a client known to be over the limit.
        codes = [client.get("/flows", headers={**basic_auth(f"{n}" * 40), **from_address(9)}) for n in range(2)]
        codes.append(client.get("/sandbox/mailbox", headers={"X-Sandbox-Token": "wrong-" + TOKEN, **from_address(9)}))
        codes.append(client.get("/flows", headers={**basic_auth("9" * 40), **from_address(9)}))
        assert [c.status_code for c in codes[:2]] == [401, 401]
        refused += [check(c, "failed-auth-per-address") for c in codes[2:]]
        # The join pages: unknown links, then a page over the limit (counted), then one refused before it counts.
        pages = [client.get(f"/join/{'x' * 40}{n}", headers=from_address(10)) for n in range(4)]
        assert [p.status_code for p in pages[:2]] == [404, 404]
        refused += [check(p, "join-attempts-per-address") for p in pages[2:]]
        assert refusals_counted(client) == {limit: float(count) for limit, count in Counter(refused).items()}


def test_a_join_page_past_its_deadline_says_when_to_retry_and_is_counted(client: TestClient, monkeypatch):
    async def past_deadline(*_args: object) -> None:
        name, reached = REQUEST_DEADLINE
        raise Unavailable(name, reached.format(8), 1)

    monkeypatch.setattr(join, "_invitation", past_deadline)
    page = client.get(f"/join/{'x' * 41}")
    assert page.status_code == 503
    assert refusal(page) == "the database did not answer within the request's 8 seconds (REQUEST_TIMEOUT_SECONDS)"
    assert refusals_counted(client) == {"request-deadline": 1.0}
