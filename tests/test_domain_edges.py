"""Edges of the domain rules: a setup run before its onboard existed, names at their longest, a deleted flow,
a failed onboard's reason, a resend racing an accept, line breaks where one line belongs, the database's
own refusals answered as 4xx, and times as the API shows them."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import peewee
import pytest
from starlette.testclient import TestClient

from models.accounts import Account
from models.base import DomainError, rfc3339, to_json, transaction
from models.flows import Flow
from models.invitations import Invitation
from models.onboards import Onboard
from models.outbox import OutboxMessage
from tests.helpers import Party, create_onboard, invite, outbox, put_status, ready_to_complete

PROBLEM = "application/problem+json"


def answer(response: Any, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()




def test_an_onboard_made_after_post_onboard_buyer_completes_without_a_second_setup(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    answer(client.post("/onboard/buyer", json={"invitation_id": entity["invitation_id"]}, headers=buyer.auth), 200)
    sent = len(outbox("buyer_delivery_set_up"))
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    done = answer(put_status(client, buyer, onboard, "completed"), 200)
    assert done["status"] == "completed" and done["reason"] is None, done
    assert len(outbox("buyer_delivery_set_up")) == sent  # the setup did not run again


def test_the_buyer_flow_made_by_the_setup_has_a_name_that_fits(client, make_party):
    seller, buyer = make_party("S" * 200, "seller@example.com"), make_party("Buyer", "buyer@example.com")
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    done = answer(put_status(client, buyer, onboard, "completed"), 200)
    flow = answer(client.get(f"/flows/{done['flow_id']}", headers=buyer.auth), 200)  # response validation on
    assert flow["name"] == ("Leads from " + "S" * 200)[:200]


def test_deleting_a_flow_changes_the_onboards_naming_it(client, seller, buyer):
    flow = answer(client.post("/flows", json={"name": "Mine"}, headers=buyer.auth), 201)
    entity = invite(client, seller, buyer.email)
    onboard = create_onboard(client, buyer, entity["invitation_id"], flow_id=flow["id"])
    before = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)
    answer(client.delete(f"/flows/{flow['id']}", headers=buyer.auth), 200)
    after = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)
    assert after.json()["flow_id"] is None and after.headers["etag"] != before.headers["etag"]
    stale = client.get(f"/onboards/{onboard['id']}", headers={**buyer.auth, "If-None-Match": before.headers["etag"]})
    assert stale.status_code == 200


def test_a_failed_onboard_keeps_its_reason_until_its_status_changes(client, seller, buyer):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    with transaction():
        Onboard.update(status="failed", reason="the seller flow was locked").where(
            Onboard.id == onboard["id"]).execute()
    flow = answer(client.post("/flows", json={"name": "Mine"}, headers=buyer.auth), 201)
    moved = answer(put_status(client, buyer, onboard, "failed", flow_id=flow["id"]), 200)
    assert moved["flow_id"] == flow["id"] and moved["reason"] == "the seller flow was locked", moved
    retried = answer(put_status(client, buyer, onboard, "in_progress"), 200)
    assert retried["reason"] is None


def test_a_resend_does_not_renew_an_invitation_accepted_since_it_was_read(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    with transaction(write=False):
        read = Invitation.get_by_id(entity["invitation_id"])
    create_onboard(client, buyer, entity["invitation_id"])  # accepts it
    sent = len(outbox("invitation_sent"))
    with transaction():
        assert read.renew() is False
    with transaction(write=False):
        assert Invitation.get_by_id(read.id).expires_at == read.expires_at
    assert len(outbox("invitation_sent")) == sent
    answer(client.put(f"/invitations/{entity['id']}/resend", headers=seller.auth), 409)


@pytest.mark.parametrize(("path", "body"), [
    ("/invitations/recipient", {"email": "buyer@example.com\n"}),
    ("/invitations/source", {"email": "buyer@example.com\n"}),
    ("/onboards", {"invitation_id": "0123456789abcdef01234567\n"}),
])
def test_a_final_line_break_does_not_satisfy_a_pattern(client, seller, path, body):
    # The spec's patterns are ECMA-262: a final `$` is the end of the text, not the end of a line.
    problem = answer(client.post(path, json=body, headers=seller.auth), 400)
    assert problem["errors"][0]["pointer"] == "/" + next(iter(body))


def test_a_final_line_break_in_a_path_id_names_no_object(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    found = client.get(f"/onboards/{onboard['id']}%0A", headers=buyer.auth)
    assert found.status_code == 404 and found.headers["content-type"].startswith(PROBLEM), found.text


@pytest.mark.parametrize("name", ["Acme\r\nBcc: someone@example.com", "Acme\nLeads", "Acme\tLeads", "Acme\x7f",
                                  "a\u2028Bcc: x", "a\u2029b", "a\x85b", "a\x9fb"])
def test_an_account_name_is_one_line(client, seller, name):
    answer(client.put("/account", json={"name": name}, headers=seller.auth), 400)
    assert answer(client.get("/account", headers=seller.auth), 200)["name"] == "Acme Leads"
    with transaction(), pytest.raises(DomainError, match="one line"):
        Account.create_with_user(name, "new@example.com")


def test_an_e_mail_subject_is_one_line(app):
    with transaction():
        OutboxMessage.enqueue("invitation_sent", ["a@example.com"], "Acme\r\nLeads\x00 invites\u2028you\x85", "body")
        assert OutboxMessage.select().get().subject == "Acme Leads  invites you "


@pytest.mark.parametrize(("raised", "status"), [
    (peewee.IntegrityError("UNIQUE constraint failed: flow.name"), 409),
    (peewee.DataError("invalid byte sequence for encoding UTF8: 0x00"), 400),
])
def test_what_the_database_refuses_is_a_4xx_and_changes_nothing(client, buyer, monkeypatch, raised, status):
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        Flow.create(account=buyer.account_id, name="written before the refusal")
        raise raised

    monkeypatch.setattr(Flow, "create_from", refuse)
    response = client.post("/flows", json={"name": "Mine"}, headers=buyer.auth)
    assert answer(response, status)["status"] == status
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "UNIQUE" not in response.text and "0x00" not in response.text
    assert answer(client.get("/flows", headers=buyer.auth), 200) == []


def test_a_client_gone_before_its_body_arrived_is_not_an_error(app, buyer: Party, caplog):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/flows", "raw_path": b"/flows", "query_string": b"", "root_path": "", "client": ("1.2.3.4", 1),
             "server": ("testserver", 80), "headers": [
                 (b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", b"100"),
                 *((k.lower().encode(), v.encode()) for k, v in buyer.auth.items())]}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        with TestClient(app):  # the lifespan: the app's start-up
            await app(scope, receive, send)

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert sent[0]["status"] == 400
    with transaction(write=False):
        assert not Flow.select().where(Flow.account == buyer.account_id).exists()


def test_a_time_is_shown_as_rfc_3339_to_the_second_in_utc():
    assert rfc3339(None) is None
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 999999)) == "2026-01-02T03:04:05Z"  # truncated, never rounded up
    assert rfc3339(datetime(999, 12, 31, 23, 59, 59, 1)) == "0999-12-31T23:59:59Z"
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5)))) == "2026-01-02T08:04:05Z"


def test_a_json_body_writes_its_times_as_rfc3339_does():
    # Stored times are naive UTC; a model's JSON leaves them to to_json.
    times = [None, datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 3, 4, 5, 999999), datetime(999, 12, 31, 23, 59),
             datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)]
    assert to_json({"at": times}) == to_json({"at": [rfc3339(t) for t in times]})
    assert to_json({"at": times[1]}) == b'{"at":"2026-01-02T03:04:05Z"}'
    assert to_json({"a": [1]}, indent=True).decode() == '{\n  "a": [\n    1\n  ]\n}'
