"""Prepared queries (models.base.Prepared) answer what peewee's own query answers, on both databases."""

import itertools
import json
import logging
from datetime import datetime

import orjson
import peewee
import pytest
from peewee import fn

from bench import dataset
from models.base import _LOOKUPS, NotFound, Prepared, db, is_postgres, make_database, page, page_query, transaction
from models.connections import Connection
from models.flows import Flow
from models.onboards import MEMBERS, Onboard
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


@pytest.mark.parametrize("build", [
    lambda steps: Flow.select().where(Flow.steps == steps),  # a JSON field serializes the stand-in
    lambda name: Flow.select().where(Flow.name == name.lower()),  # changed in Python before peewee saw it
    lambda name: Flow.select().where((Flow.id == name) | (Flow.name == name.strip())),  # a second use changed
], ids=["field", "python", "second use"])
def test_a_parameter_changed_on_its_way_to_the_sql_is_refused(app, build):
    with transaction(write=False), pytest.raises(TypeError, match="changed on its way"):
        Prepared(build, str).first("x")


def test_an_integer_changed_in_python_is_refused(app):
    bumped = Prepared(lambda version: Onboard.update(version=version + 1).where(Onboard.version == version), int)
    with transaction(), pytest.raises(TypeError, match="changed on its way"):
        bumped.count(1)


def test_the_sql_is_made_once_per_database(app, tmp_path, caplog):
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
    bound, other = db.obj, make_database(f"sqlite:///{tmp_path}/other.db")
    db.initialize(other)
    try:
        with db.connection_context():
            db.create_tables([Flow.account.rel_model, Flow])
            assert lookup.first("0" * 24) is None
    finally:
        db.initialize(bound)
    assert len(built) == 2 and set(lookup._made) == {bound, other}


def test_a_locking_lookup_locks_on_postgresql(client, buyer):
    flow = client.post("/flows", json={"name": "locked"}, headers=buyer.auth).json()
    with transaction():
        assert Flow.get_for_account(buyer.account_id, flow["id"], for_update=True).name == "locked"
        locking = _LOOKUPS[Flow, True]._made[db.obj].sql
        plain = _LOOKUPS[Flow, False]._made.get(db.obj)
    assert ("FOR UPDATE" in locking) is is_postgres()
    assert plain is None or "FOR UPDATE" not in plain.sql


def test_columns_that_are_no_fields_come_back_as_peewee_makes_them(client, buyer):
    assert client.post("/flows", json={"name": "named"}, headers=buyer.auth).status_code == 201
    named = Prepared(lambda account: Flow.select(Flow.id, fn.UPPER(Flow.name).alias("shout")).where(
        Flow.account == account), str)
    with transaction(write=False):
        [row] = named.rows(buyer.account_id)
    assert row.shout == "NAMED"


def test_every_page_shape_matches_peewees_own_query(client, buyer):
    for n in range(5):
        assert client.post("/flows", json={"name": f"flow {n}"}, headers=buyer.auth).status_code == 201
    with transaction(write=False):
        ids = [f.id for f in Flow.for_account(buyer.account_id).order_by(Flow.id)]
        cursors = [None, ids[1], ids[3]]
        for after, before, sort, limit in itertools.product(cursors, cursors, ("asc", "desc"), (1, 2, 10)):
            found = page(Flow.for_account, buyer.account_id, Flow, limit=limit, after_id=after,
                         before_id=before, sort=sort)
            expected = list(page_query(Flow.for_account(buyer.account_id), Flow, fetch=limit + 1, after_id=after,
                                       before_id=before, sort=sort))
            assert [r.id for r in found.items] == [r.id for r in expected[:limit]]
            assert found.more == (len(expected) > limit)
            assert found.last_id == (expected[:limit][-1].id if expected else None)


def test_rows_of_one_model_are_whole_models(client, buyer):
    for n in range(3):
        made = client.post("/flows", json={"name": f"flow {n}", "fields": ["email"]}, headers=buyer.auth)
        assert made.status_code == 201
    with transaction():
        rows = page(Flow.for_account, buyer.account_id, Flow, limit=10, after_id=None, before_id=None, sort="asc").items
        plain = list(Flow.for_account(buyer.account_id).order_by(Flow.id))
        assert [r.__data__ for r in rows] == [p.__data__ for p in plain] and len(rows) == 3
        assert type(rows[0]) is Flow and not any(r.dirty_fields for r in rows)
        assert rows[0].fields == ["email"]  # converted by the field, as peewee does
        rows[0].name = "renamed"
        assert rows[0].dirty_fields == [Flow.name]
        rows[0].save()
    assert client.get(f"/flows/{rows[0].id}", headers=buyer.auth).json()["name"] == "renamed"


def test_a_page_of_members_is_written_as_as_json_writes_it(app, database_url):
    """Onboard pages written from their columns (Members) against the models' as_json, in every page
    shape, with text that needs escaping, a null and a time with microseconds."""
    data = dataset.load(40)
    with transaction():
        onboards = list(Onboard.select().where(Onboard.account == data.account_id).order_by(Onboard.id))
        assert len(onboards) == 20
        tricky = ['quote " backslash \\ slash / tab \t newline \n', "é ü 中文 😀", "\x01\x1f", ""]
        for onboard, reason in zip(onboards, tricky, strict=False):
            Onboard.update(reason=reason, flow=None, updated_at=datetime(2026, 1, 2, 3, 4, 5, 678901)).where(
                Onboard.id == onboard.id).execute()
    with transaction(write=False):
        cursors = [None, onboards[2].id, onboards[15].id.upper()]
        for after, before, sort, limit in itertools.product(cursors, cursors, ("asc", "desc"), (1, 3, 100)):
            written = page(Onboard.for_account, data.account_id, Onboard, limit=limit, after_id=after,
                           before_id=before, sort=sort, members=MEMBERS)
            models = page(Onboard.for_account, data.account_id, Onboard, limit=limit, after_id=after, before_id=before,
                          sort=sort)
            assert json.loads(orjson.dumps(written.items)) == [o.as_json() for o in models.items]
            assert (written.more, written.last_id) == (models.more, models.last_id)
    first, = json.loads(orjson.dumps(page(Onboard.for_account, data.account_id, Onboard, members=MEMBERS, limit=1,
                                          after_id=None, before_id=None, sort="asc").items))
    assert first["reason"] == tricky[0] and first["flow_id"] is None and first["updated_at"] == "2026-01-02T03:04:05Z"
