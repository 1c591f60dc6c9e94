"""Statements compiled once (models.base.Compiled) return what peewee's query builder returns, on both databases:
the same SQL and parameters for the same values, and the same rows; BaseModel's get_by_id and create read and
write what peewee's own do."""

import json
from datetime import datetime, timedelta

import peewee
import pytest
from playhouse.shortcuts import model_to_dict

from models.accounts import Account, ApiKey, Principal, User
from models.base import STATEMENTS, BaseModel, Compiled, db, page, to_json, transaction, utcnow
from models.connections import Connection
from models.entities import Entity
from models.invitations import Invitation
from models.onboards import Onboard
from models.outbox import OutboxMessage
from tests.helpers import create_onboard, invite, put_status

MISSING = "0" * 24


@pytest.fixture
def onboards(client, make_party, buyer) -> list[dict]:
    """Four onboards of the buyer, each from a seller of its own, in the order made."""
    made = []
    for n in range(4):
        seller = make_party(f"Seller {n}", f"seller{n}@example.com")
        made.append(create_onboard(client, buyer, invite(client, seller, buyer.email)["invitation_id"]))
    return made


def test_each_compiled_statement_is_the_query_builders_for_the_same_values(client, buyer, onboards):
    assert put_status(client, buyer, onboards[0], "in_progress").status_code == 200
    for sort in ("asc", "desc"):
        for cursors in ({}, {"after_id": onboards[0]["id"]}, {"before_id": onboards[-1]["id"]},
                        {"after_id": onboards[0]["id"], "before_id": onboards[-1]["id"]}):
            assert client.get("/onboards", params={"limit": 2, "sort": sort, **cursors},
                              headers=buyer.auth).status_code == 200
    with transaction():  # the outbox's sender, as onboards.mailer drives it
        claimed, more = OutboxMessage.claim_due(utcnow(), timedelta(minutes=1), 100)
        assert len(claimed) == 8 and {(m.attempts, m.lease_token) for m in claimed} == {(1, claimed[0].lease_token)}
        assert not more
        assert OutboxMessage.claim_due(utcnow(), timedelta(minutes=1), 100) == ([], False)  # their lease holds
        claimed[0].mark_sent()
        assert OutboxMessage.get_by_id(claimed[0].id).sent_at is not None
        # Their lease lapsed: each is claimed again alone, in order, the one sent never.
        again = [OutboxMessage.claim_due(utcnow() + timedelta(minutes=2), timedelta(minutes=1), 100)[0]
                 for _ in claimed]
        assert [[m.id for m in claim] for claim in again] == [[m.id] for m in claimed[1:]] + [[]]
        assert {m.attempts for claim in again for m in claim} == {2}
        assert again[0][0].lease_token != claimed[0].lease_token
    # The statements the requests above and the fixture's made: a GET's and a PUT's look-up, the PUT's write,
    # the key's look-up, the eight shapes of a page and the account's count; a POST's look-ups of the invitation,
    # of an onboard made from it already, of the invitee's address and of the inviter's addresses, and its
    # accepting writes (the invitation, the inviter's entity, the connection); the outbox's read of the e-mails
    # due, its claim of them and its mark of one as sent.
    made = [key for key in STATEMENTS if key[0] in (Onboard, ApiKey, Invitation, User, OutboxMessage, Entity,
                                                     Connection)]
    assert {key[:2] for key in made} >= {(Invitation, "get_visible"), (Invitation, "accept"), (User, "has_email"),
                                         (User, "emails"), (Onboard, "of_invitation"), (Onboard, "count"),
                                         (Entity, "connected"), (Connection, "joined"), (OutboxMessage, "due"),
                                         (OutboxMessage, "claim"),
                                         (OutboxMessage, "mark_sent")}
    assert len(made) >= 21
    for key in made:
        statement = STATEMENTS[key]
        values = [f"{n:024x}" if kind is str else 7 + n for n, kind in enumerate(statement.kinds)]
        with db.connection_context():
            assert statement.statement(*values) == statement.build(*values).sql(), key


def as_json(rows: list[Onboard]) -> list[tuple[dict, int]]:
    return [(row.as_json(), row.version) for row in rows]


def test_a_page_is_the_query_builders(buyer, outsider, onboards):
    ids = [onboard["id"] for onboard in onboards]
    built = Onboard.select().where(Onboard.account == buyer.account_id)  # a plain query: built each time
    with transaction(write=False):
        for sort in ("asc", "desc"):
            for after, before in ((None, None), (ids[0], None), (None, ids[-1]), (ids[0], ids[-1]),
                                  (ids[1].upper(), ids[2])):
                for limit in (1, 2, 10):
                    compiled = page(Onboard.for_account(buyer.account_id), limit=limit, after_id=after,
                                    before_id=before, sort=sort)
                    expected = page(built, limit=limit, after_id=after, before_id=before, sort=sort)
                    assert as_json(compiled.items) == as_json(expected.items)
                    assert compiled[1:] == expected[1:]
        assert page(Onboard.for_account(buyer.account_id), limit=10).items
        assert page(Onboard.for_account(outsider.account_id), limit=10).items == []
        assert Onboard.for_account(buyer.account_id).count() == built.count() == len(onboards)
        assert Onboard.for_account(outsider.account_id).count() == 0


def test_a_query_made_from_an_accounts_rows_is_built_as_written(client, buyer, onboards):
    assert put_status(client, buyer, onboards[1], "failed").status_code == 200
    with transaction(write=False):
        failed = Onboard.for_account(buyer.account_id).where(Onboard.status == "failed")
        assert [row.id for row in page(failed, limit=10).items] == [onboards[1]["id"]]
        assert failed.count() == 1  # counted as built, not as the account's rows


def test_an_onboard_read_by_id_is_the_query_builders(buyer, outsider, onboards):
    with transaction(write=False):
        for onboard in onboards:
            found = Onboard.get_for_account(buyer.account_id, onboard["id"].upper())
            built = Onboard.select().where(Onboard.account == buyer.account_id, Onboard.id == onboard["id"]).get()
            assert as_json([found]) == as_json([built])
        for account, onboard_id in ((outsider.account_id, onboards[0]["id"]), (buyer.account_id, MISSING)):
            with pytest.raises(Exception, match="onboard not found"):
                Onboard.get_for_account(account, onboard_id)


def test_a_compiled_status_change_writes_the_row_and_keeps_the_compare_and_set(client, buyer, onboards):
    before = client.get(f"/onboards/{onboards[2]['id']}", headers=buyer.auth)
    changed = put_status(client, buyer, onboards[2], "failed")
    assert changed.status_code == 200
    assert changed.headers["ETag"] == '"v2"' and before.headers["ETag"] == '"v1"'
    with transaction(write=False):
        row = Onboard.get_by_id(onboards[2]["id"])
    assert (row.status, row.version, row.reason) == ("failed", 2, None)
    assert changed.json() == json.loads(to_json(row.as_json()))
    assert client.get(f"/onboards/{onboards[2]['id']}", headers=buyer.auth).json() == json.loads(to_json(row.as_json()))
    # A write naming a version that is not the row's changes nothing: the compare-and-set holds.
    with transaction():
        stale = Onboard.get_by_id(onboards[2]["id"])
        stale.version = 1
        assert not stale._advance(status="in_progress")
        assert Onboard.get_by_id(onboards[2]["id"]).version == 2


def test_the_compiled_key_look_up_finds_live_keys_only(buyer, outsider):
    with transaction(write=False):
        assert ApiKey.authenticate(buyer.key) == Principal(user_id=buyer.user_id, account_id=buyer.account_id)
        assert ApiKey.authenticate(outsider.key) == Principal(user_id=outsider.user_id,
                                                              account_id=outsider.account_id)
        assert ApiKey.authenticate("f" * 40) is None
    with transaction():
        ApiKey.revoke(buyer.key[:8])
    with transaction(write=False):
        assert ApiKey.authenticate(buyer.key) is None


def fields_of(row: peewee.Model, *leaving_out: str) -> dict:
    return {name: value for name, value in model_to_dict(row, recurse=False).items() if name not in leaving_out}


def test_a_read_by_id_is_peewees(buyer, outsider, onboards):
    with transaction(write=False):
        rows: list[tuple[type[BaseModel], str]] = [(Onboard, o["id"]) for o in onboards] + [
            (Invitation, o["invitation_id"]) for o in onboards] + [(Account, buyer.account_id)]
        for model, row_id in rows:
            assert fields_of(model.get_by_id(row_id)) == fields_of(super(BaseModel, model).get_by_id(row_id))
        for missing in (Onboard, Invitation, Account):
            with pytest.raises(missing.DoesNotExist):  # type: ignore[union-attr]
                missing.get_by_id(MISSING)


def test_a_row_created_is_the_one_peewees_create_writes(buyer, outsider):
    # Every kind of column: given and defaulted, a foreign key given as an id and as a row, booleans both ways,
    # JSON, a time, a null.
    given = {"name": "Mirror", "source": "seller", "recipient": None, "is_account": True, "pending": False,
             "connected_account": outsider.account_id, "invitation_id": MISSING, "module_ids": ["a", "b"],
             "invitation_expires_at": datetime(2030, 1, 2, 3, 4, 5), "trustedform_certified_vendor": True}
    with transaction():
        account = Account.get_by_id(buyer.account_id)
        for owner in (buyer.account_id, account):
            ours = Entity.create(account=owner, **given)
            theirs = super(BaseModel, Entity).create(account=owner, **given)
            assert ours.id != theirs.id
            read = [fields_of(Entity.get_by_id(row.id), "id", "created_at", "updated_at") for row in (ours, theirs)]
            assert read[0] == read[1]
            assert read[0]["account"] == buyer.account_id and read[0]["module_ids"] == ["a", "b"]
            assert fields_of(ours, "id", "created_at", "updated_at") == read[0]  # the instance create returns
        with pytest.raises(peewee.IntegrityError), db.atomic():  # the database still refuses what it refused
            Entity.create(id=ours.id, account=buyer.account_id, name="again")


def test_create_unless_taken_makes_the_row_or_none_and_the_transaction_goes_on(buyer, onboards):
    with transaction():
        made = Entity.create_unless_taken(Entity.id, account=buyer.account_id, name="Mirror", pending=False)
        assert made is not None
        assert fields_of(Entity.get_by_id(made.id), "created_at", "updated_at") == fields_of(made, "created_at",
                                                                                            "updated_at")
        assert Entity.create_unless_taken(Entity.id, id=made.id, account=buyer.account_id, name="again") is None
        onboard = Onboard.get_by_id(onboards[0]["id"])
        assert Onboard.create_unless_taken(Onboard.invitation, account=buyer.account_id,
                                           invitation=onboard.invitation_id, connection=onboard.connection_id) is None
        # No error, and on PostgreSQL no aborted transaction: the rows are as they were, and can be read.
        assert Entity.get_by_id(made.id).name == "Mirror"
        assert [o.id for o in Onboard.select().where(Onboard.invitation == onboard.invitation_id)] == [onboard.id]


def test_a_page_read_as_dicts_holds_each_rows_values_by_field_name(client, buyer, onboards):
    assert put_status(client, buyer, onboards[3], "failed").status_code == 200  # a reason, a version, a change
    built = Onboard.select().where(Onboard.account == buyer.account_id)
    with transaction(write=False):
        for query in (Onboard.for_account(buyer.account_id), built):  # compiled, and built as written
            for sort, after in (("asc", None), ("desc", onboards[-1]["id"]), ("asc", onboards[0]["id"])):
                models = page(query, limit=3, after_id=after, sort=sort)
                dicts = page(query, limit=3, after_id=after, sort=sort, dicts=True)
                assert dicts.items == [row.as_row() for row in models.items]
                assert (dicts.more, dicts.last_id) == (models.more, models.last_id)
                assert [Onboard.json_of(row) for row in dicts.items] == [row.as_json() for row in models.items]
    listed = client.get("/onboards", params={"limit": 2}, headers=buyer.auth)
    assert listed.json() == [client.get(f"/onboards/{o['id']}", headers=buyer.auth).json() for o in onboards[:2]]
    assert listed.headers["Link"] == f'</onboards?limit=2&after_id={onboards[1]["id"]}>; rel="next"'


def test_a_statement_whose_value_would_be_converted_or_lost_is_refused(app):
    # Compiling needs the database's kind (the app's, in force here), not a connection.
    converted = Compiled(lambda pending: Entity.update(pending=pending).where(Entity.id == MISSING), bool)
    unused = Compiled(lambda _unused: Entity.select().where(Entity.id == MISSING), str)
    twice = Compiled(lambda row_id: Entity.select().where((Entity.id == row_id) | (Entity.see == row_id)), str)
    for statement in (converted, unused):
        with pytest.raises(TypeError, match="one parameter, unconverted"):
            statement.statement(MISSING)
    assert twice.statement("ab")[1] == ["ab", "ab"]  # a value used twice fills both of its places
