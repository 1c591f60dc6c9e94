"""Helpers the tests share: the parties of the workflow, its steps over HTTP, the outbox, raw sockets."""

import base64
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from models.accounts import Account
from models.base import transaction
from models.outbox import OutboxMessage


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


def party(name: str, email: str) -> Party:
    """A new account with its first user and key, made in the database the models are bound to."""
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
