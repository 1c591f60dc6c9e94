"""Prepared queries (models.base.Prepared) answer what peewee's own query answers, on both databases."""

import itertools
import logging

import peewee
import pytest

from models.base import NotFound, Prepared, db, page, page_query, transaction
from models.connections import Connection
from models.flows import Flow
from models.onboards import Onboard
from tests.support import create_onboard, invite


def test_a_prepared_lookup_is_the_model_peewee_would_make(client, seller, buyer):
    invitation = invite(client, seller, buyer.email)["invitation_id"]
    onboard = create_onboard(client, buyer, invitation)
    with transaction(write=False):
        found = Onboard.get_for_account(buyer.account_id, onboard["id"].upper())
        plain = Onboard.select().where(Onboard.id == onboard["id"]).get()
        assert found.__data__ == plain.__data__ and not found.dirty_fields
        # A joined query: the related rows come back as models too.
        connection = Connection.get_for_account(seller.account_id, onboard["connection_id"])
        assert connection.buyer and connection.buyer.name == "Bright Buyers"
        assert connection.seller and connection.seller.name == "Acme Leads"
        with pytest.raises(NotFound):  # another account's object
            Onboard.get_for_account(seller.account_id, onboard["id"])


def test_a_prepared_update_counts_the_rows_it_changed(client, buyer):
    flow = client.post("/flows", json={"name": "one"}, headers=buyer.auth).json()
    rename = Prepared(lambda name, flow_id: Flow.update(name=name).where(Flow.id == flow_id), str, str)
    with transaction():
        assert rename.count("two", flow["id"]) == 1
        assert rename.count("three", "0" * 24) == 0
    assert client.get(f"/flows/{flow['id']}", headers=buyer.auth).json()["name"] == "two"


def test_a_parameter_a_field_converts_is_refused(app):
    # A JSON field serializes the stand-in: the kept SQL could not take the real value as it is.
    converted = Prepared(lambda steps: Flow.select().where(Flow.steps == steps), str)
    with transaction(write=False), pytest.raises(TypeError, match="converted"):
        converted.first("1")


def test_the_sql_is_kept_per_database_and_made_once(app, caplog):
    lookup = Prepared(lambda flow_id: Flow.select().where(Flow.id == flow_id), str)
    built = []
    build = lookup.build

    def counted(*args: str) -> "peewee.ModelSelect[Flow]":
        built.append(args)
        return build(*args)

    lookup.build = counted
    caplog.set_level(logging.DEBUG, logger="peewee")
    with transaction(write=False):
        for _ in range(3):
            assert lookup.first("0" * 24) is None
    assert len(built) == 1
    assert sum(r.name == "peewee" and "SELECT" in str(r.msg) for r in caplog.records) == 3  # run each time
    assert db.obj in lookup._made


def test_every_page_shape_matches_peewees_own_query(client, buyer):
    for n in range(5):
        assert client.post("/flows", json={"name": f"flow {n}"}, headers=buyer.auth).status_code == 201
    with transaction(write=False):
        ids = [f.id for f in Flow.for_account(buyer.account_id).order_by(Flow.id)]
        cursors = [None, ids[1], ids[3]]
        for after, before, sort, limit in itertools.product(cursors, cursors, ("asc", "desc"), (1, 2, 10)):
            rows, more = page(Flow.for_account, buyer.account_id, Flow, limit=limit, after_id=after,
                              before_id=before, sort=sort)
            expected = list(page_query(Flow.for_account(buyer.account_id), Flow, fetch=limit + 1, after_id=after,
                                       before_id=before, sort=sort))
            assert [r.id for r in rows] == [r.id for r in expected[:limit]]
            assert more == (len(expected) > limit)


def test_rows_of_one_model_are_whole_models(client, buyer):
    for n in range(3):
        made = client.post("/flows", json={"name": f"flow {n}", "fields": ["email"]}, headers=buyer.auth)
        assert made.status_code == 201
    with transaction():
        rows, _ = page(Flow.for_account, buyer.account_id, Flow, limit=10, after_id=None, before_id=None, sort="asc")
        plain = list(Flow.for_account(buyer.account_id).order_by(Flow.id))
        assert [r.__data__ for r in rows] == [p.__data__ for p in plain] and len(rows) == 3
        assert type(rows[0]) is Flow and not any(r.dirty_fields for r in rows)
        assert rows[0].fields == ["email"]  # converted by the field, as peewee does
        rows[0].name = "renamed"
        assert rows[0].dirty_fields == [Flow.name]
        rows[0].save()
    assert client.get(f"/flows/{rows[0].id}", headers=buyer.auth).json()["name"] == "renamed"
