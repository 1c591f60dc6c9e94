"""Idempotency-Key on POST, on each database: a retried request gets the first answer and does nothing
again; another request under a used key is a 422; a key in use is a 409; answers that changed nothing are
not kept."""

import json
from datetime import timedelta
from typing import Any

import pytest

from models import idempotency
from models.base import DomainError, transaction, utcnow
from models.flows import Flow
from models.idempotency import IdempotencyKey
from tests.helpers import Party

PROBLEM = "application/problem+json"
FLOW = {"name": "Solar leads", "fields": ["email"]}
CLAIM = timedelta(minutes=1)


def post_flow(client, party: Party, key: str, body: dict = FLOW):
    return client.post("/flows", json=body, headers={**party.auth, "Idempotency-Key": key})


def flows(party: Party) -> int:
    with transaction(write=False):
        return Flow.for_account(party.account_id).count()


def test_a_retried_post_gets_the_first_answer_and_makes_nothing_again(client, seller):
    first = post_flow(client, seller, "key-1")
    again = post_flow(client, seller, "key-1")
    assert first.status_code == again.status_code == 201, first.text
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert flows(seller) == 1


def test_the_same_key_with_another_body_is_a_422_and_changes_nothing(client, seller):
    assert post_flow(client, seller, "key-1").status_code == 201
    reused = post_flow(client, seller, "key-1", {**FLOW, "name": "Another"})
    assert reused.status_code == 422 and reused.headers["content-type"] == PROBLEM, reused.text
    assert "Idempotency-Key" in reused.json()["detail"]
    assert flows(seller) == 1


def test_a_key_is_its_accounts_own(client, seller, buyer):
    assert post_flow(client, seller, "shared").status_code == 201
    theirs = post_flow(client, buyer, "shared")
    assert theirs.status_code == 201 and flows(buyer) == 1, theirs.text


def test_an_answer_that_changed_nothing_is_not_kept(client, seller, monkeypatch):
    create = Flow.create_from

    def refuse_once(*args: Any, **kwargs: Any) -> Flow:
        monkeypatch.setattr(Flow, "create_from", create)
        Flow.create(account=seller.account_id, name="written before the refusal")
        raise DomainError("refused this time")

    monkeypatch.setattr(Flow, "create_from", refuse_once)
    assert post_flow(client, seller, "key-1").status_code == 409
    assert flows(seller) == 0
    assert post_flow(client, seller, "key-1").status_code == 201  # run again, not replayed
    assert flows(seller) == 1


def test_a_key_in_use_is_a_409(client, seller):
    body = json.dumps(FLOW).encode()
    fingerprint = idempotency.digest(b"POST", b"/flows", b"", body)
    with transaction():
        assert idempotency.begin(seller.account_id, "busy", fingerprint, CLAIM).claim is not None
        with pytest.raises(idempotency.KeyInProgress):
            idempotency.begin(seller.account_id, "busy", fingerprint, CLAIM)
    response = client.post("/flows", content=body, headers={**seller.auth, "Idempotency-Key": "busy",
                                                              "Content-Type": "application/json"})
    assert response.status_code == 409 and response.headers["content-type"] == PROBLEM, response.text
    assert "in progress" in response.json()["detail"]
    assert response.json()["type"] == "/docs/problems#idempotency-key-in-use"


def test_the_claim_of_a_request_that_died_is_taken_over_and_fences_it(app, seller):
    with transaction():
        died = idempotency.begin(seller.account_id, "k", "f", CLAIM).claim
        IdempotencyKey.update(claimed_until=utcnow() - timedelta(seconds=1)).execute()
        taker = idempotency.begin(seller.account_id, "k", "f", CLAIM).claim
    assert died is not None and taker is not None and taker.token != died.token
    token = idempotency.current.set(died)
    try:
        with pytest.raises(idempotency.KeyInProgress), transaction():
            idempotency.settle(201, {}, b"late")
    finally:
        idempotency.current.reset(token)


@pytest.mark.parametrize("key", [b"has space", b"x" * 256, "ünï".encode()])
def test_a_malformed_key_is_a_400(client, seller, key):
    response = client.post("/flows", json=FLOW, headers={**seller.auth, "Idempotency-Key": key})
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM, response.text
    assert flows(seller) == 0


def test_kept_answers_are_pruned_after_24_hours(client, seller):
    assert post_flow(client, seller, "old").status_code == 201
    assert post_flow(client, seller, "new").status_code == 201
    with transaction():
        IdempotencyKey.update(created_at=utcnow() - timedelta(hours=25)).where(
            IdempotencyKey.id == idempotency.digest(seller.account_id.encode(), b"old")).execute()
        assert IdempotencyKey.prune(utcnow()) == 1
        assert IdempotencyKey.select().count() == 1
