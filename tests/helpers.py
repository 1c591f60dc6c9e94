"""Helpers the tests share: the parties of the workflow, its steps over HTTP, the outbox, raw sockets."""

import base64
import html
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
from starlette.testclient import TestClient

from models.accounts import Account
from models.base import transaction, use_database
from models.migrations import migrate
from models.outbox import OutboxMessage
from onboards.runtime import Serving


@dataclass(frozen=True)
class Party:
    """An account with one user and a live API key."""

    account_id: str
    user_id: str
    email: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return basic_auth(self.key)


def migrated(app: Serving) -> Serving:
    """`app` with its database migrated and made the models' in this context, so that the test's own queries
    (party, outbox, ...) reach it."""
    use_database(app.runtime.database)
    migrate()
    return app


def party(name: str, email: str) -> Party:
    """A new account with its first user and key, made in the models' database in this context."""
    with transaction():
        account, user, key = Account.create_with_user(name, email)
    return Party(account.id, user.id, user.email, key)


def outbox(kind: str | None = None) -> list[OutboxMessage]:
    """The outbox's messages (of one kind), in the order they were written."""
    with transaction(write=False):
        query = OutboxMessage.select().order_by(OutboxMessage.id)
        return list(query.where(OutboxMessage.kind == kind) if kind else query)


def recipients(kind: str) -> list[str]:
    """Whom the outbox's messages of `kind` go to, sorted."""
    return sorted(message.to for message in outbox(kind))


def read_to_end(sock: socket.socket) -> bytes:
    """What the peer sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers by lower-case name, body) of one response with a Content-Length."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def basic_auth(key: str, user: str = "API") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


# A megabyte of the worst shapes for each check a body of POST /flows meets (onboards/validation.py), each
# a 400: nesting, strings that never end (each `\\"` once made the string search start again), brackets inside
# strings, repeated members, then what the parser and the schema's checks read (numbers, surrogates, items,
# members). tests/test_hostile.py sends each; make bench's hostile row (bench/hostile.py) bounds their CPU.
MEGABYTE = 1024 * 1024 - 64
WORST_BODIES = {
    "unterminated string of escaped quotes": b"[" * 70 + b'"' + b'\\"' * ((MEGABYTE - 71) // 2),
    "unterminated string of backslashes": b"[" * 70 + b'"' + b"\\" * (MEGABYTE - 71),
    "quotes that never close a string": b'{"name": ' + b'"\\' * ((MEGABYTE - 9) // 3),
    "nested to the container limit": b"[" * 24_000 + b"]" * 24_000,
    "nested past the container limit": b"[" * MEGABYTE,
    "brackets inside a string": b'{"name": "' + b"[{" * ((MEGABYTE - 12) // 2) + b'"}',
    "unterminated string after deep nesting": b'{"a":' * 65 + b'"' + b"x" * (MEGABYTE - 400),
    "one member repeated": b'{"name": "x"' + b', "fields": []' * ((MEGABYTE - 13) // 14) + b"}",
    "a member repeated at depth": b'{"name": "x", "steps": [{"id": "a", "id": "b"}], "fields": ["'
                                  + b"e" * (MEGABYTE - 100) + b'"]}',
    "a string of lone surrogates": b'{"name": "' + b"\\ud800" * ((MEGABYTE - 12) // 6) + b'"}',
    "an integer of a million digits": b'{"name": "x", "fields": [' + b"9" * (MEGABYTE - 30) + b"]}",
    "a number of a million digits and a fraction": b'{"name": "x", "fields": [1.' + b"3" * (MEGABYTE - 32) + b"]}",
    "half a million invalid items": b'{"name": "x", "fields": [' + b"0," * ((MEGABYTE - 30) // 2) + b"0]}",
    "eighty thousand unknown members": b'{"name": "x"' + b"".join(b', "m%05d": 0' % n for n in range(80_000)) + b"}",
    "invalid objects to the container limit": b'{"name": "x", "steps": ['
                                              + b'{"type": 1, "entity": 2, "x": 3},' * 24_000 + b"{}]}",
    "whitespace then a body": b" " * (MEGABYTE - 2) + b"{}",
    "bytes that are not UTF-8": b'{"name": "' + b"\xff" * (MEGABYTE - 12) + b'"}',
}


def refusals_counted(client: TestClient | httpx.Client) -> dict[str, float]:
    """The refusals `GET /metrics` counts, by limit."""
    text = client.get("/metrics").text
    return {name: float(count) for name, count in
            re.findall(r'^onboards_limit_refusals_total\{limit="([^"]+)"\} (\S+)$', text, re.MULTILINE)}


def refusal(response: httpx.Response | httpx2.Response) -> str:
    """What a 429 or 503 says of the limit it reached: its problem's detail (or a join page's message), less
    the time to retry it ends with, which must be the time its Retry-After header gives."""
    assert response.status_code in (429, 503), response.text
    if response.headers["content-type"] == "application/problem+json":
        said = response.json()["detail"]
    else:
        page = re.search(r"<p>([^<]*)\.</p>", response.text)
        assert page is not None, response.text
        message = html.unescape(page.group(1))
        said = message[:1].lower() + message[1:]
    retry = int(response.headers["retry-after"])
    reached, _, when = said.rpartition(": retry after ")
    assert when == f"{retry} second{'' if retry == 1 else 's'}", (said, retry)
    return reached


def wait_until(condition: Callable[[], Any], seconds: float = 10.0, every: float = 0.02) -> Any:
    """Polls `condition` until it returns something true or `seconds` pass; its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)



def invite(client: TestClient | httpx.Client, inviter: Party, email: str, kind: str = "recipient") -> dict:
    """Sends an invitation; the inviter's pending entity (its `invitation_id` names the invitation)."""
    response = client.post(f"/invitations/{kind}", json={"email": email}, headers=inviter.auth)
    assert response.status_code == 201, response.text
    return response.json()["entity"]


def seller_flow(client: TestClient, seller: Party, buyer_entity_id: str, name: str = "Solar leads") -> dict:
    """A seller flow with a disabled buyer step for `buyer_entity_id`."""
    response = client.post("/flows", headers=seller.auth, json={
        "name": name, "fields": ["email"],
        "steps": [{"type": "recipient", "entity": {"id": buyer_entity_id}, "enabled": False}]})
    assert response.status_code == 201, response.text
    return response.json()


def create_onboard(client: TestClient, buyer: Party, invitation_id: str, **extra: str) -> dict:
    response = client.post("/onboards", json={"invitation_id": invitation_id, **extra}, headers=buyer.auth)
    assert response.status_code == 201, response.text
    return response.json()


def put_status(client: TestClient, buyer: Party, onboard: dict, status: str, **extra: str):
    return client.put(f"/onboards/{onboard['id']}", headers=buyer.auth,
                      json={"invitation_id": onboard["invitation_id"], "status": status, **extra})


def ready_to_complete(client: TestClient, seller: Party, buyer: Party) -> tuple[dict, dict, dict]:
    """Invitation sent, a seller flow with a buyer step, onboard created: (entity, seller flow, onboard)."""
    entity = invite(client, seller, buyer.email)
    flow = seller_flow(client, seller, entity["id"])
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    return entity, flow, onboard


def latest_mail(kind: str, **where: str) -> OutboxMessage:
    """The newest e-mail of `kind` (and the outbox columns `where` names)."""
    with transaction(write=False):
        query = OutboxMessage.select().where(OutboxMessage.kind == kind, *(
            getattr(OutboxMessage, name) == value for name, value in where.items()))
        message = query.order_by(OutboxMessage.id.desc()).first()
    assert message is not None, f"no {kind} e-mail"
    return message


def join_token(invitation_id: str) -> str:
    """The secret of the invitation's latest join link, as its e-mail carries it."""
    link = latest_mail("invitation_sent", invitation_id=invitation_id).link
    assert link is not None
    return link.rsplit("/join/", 1)[1]


def sign_in_code(email: str) -> str:
    """The code of the latest sign-in e-mail to `email`, read as a person reads it."""
    found = re.search(r"code for onboards: (\d{6})", latest_mail("sign_in_code", to=email).body)
    assert found is not None
    return found[1]


def readme_example() -> str:
    """The README's client test (its one ```python block under "## Sandbox")."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme.split("## Sandbox", 1)[1], re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "one ```python block under '## Sandbox'"
    return blocks[0]


def fresh_window(seconds: int = 60, needed: float = 20.0) -> None:
    """Waits, when fewer than `needed` seconds are left of the current window of the limits (they count per
    fixed window of `seconds`: models.limits.RateCounter), for the next one to begin, so that a run of
    requests counted against one limit is counted in one window."""
    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.1)
