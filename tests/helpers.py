"""Helpers the tests share: the parties of the workflow and its steps over HTTP."""

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient


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



def invite(client: TestClient, inviter: Party, email: str, kind: str = "recipient") -> dict:
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


def readme_example() -> str:
    """The README's client test (its one ```python block under "## Sandbox")."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme.split("## Sandbox", 1)[1], re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "one ```python block under '## Sandbox'"
    return blocks[0]
