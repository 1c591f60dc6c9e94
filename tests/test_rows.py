"""What a stored row becomes on its way out: model instances (models.base._ModelRows), RFC 3339 times
(models.base.rfc3339) and the JSON bytes of a response (handlers.respond)."""

from datetime import UTC, datetime, timedelta, timezone

import orjson
import peewee
import pytest

from handlers import respond
from models.accounts import Account, ApiKey, User
from models.base import Prepared, _as_given, rfc3339, transaction
from models.connections import Connection
from models.entities import Entity
from models.flows import Flow
from models.invitations import Invitation
from models.onboards import Onboard
from models.outbox import OutboxMessage
from tests.support import put_status, ready_to_complete

MODELS = [Account, User, ApiKey, Entity, Connection, Invitation, Flow, Onboard, OutboxMessage]


def test_every_models_rows_are_what_peewee_makes_of_them(client, seller, buyer):
    _flow, _step, onboard = ready_to_complete(client, seller, buyer)
    assert put_status(client, buyer, onboard, "completed").status_code == 200  # every table has rows now
    with transaction(write=False):
        for model in MODELS:
            everything = Prepared(lambda m=model: m.select().order_by(m.id))
            rows, plain = everything.rows(), list(model.select().order_by(model.id))
            assert rows and type(rows[0]) is model
            assert [r.__data__ for r in rows] == [p.__data__ for p in plain]
            # Equal is not enough (1 == True): each value is of the type peewee's converter gives it.
            assert [[type(v) for v in r.__data__.values()] for r in rows] == \
                   [[type(v) for v in p.__data__.values()] for p in plain]


def test_only_plain_text_and_integer_fields_keep_what_the_driver_reads():
    kept = {name for name, field in Entity._meta.fields.items() if _as_given(field, field.python_value)}
    assert {"id", "name", "account"} <= kept  # text, and a foreign key to a text id
    assert not kept & {"pending", "is_account", "module_ids", "created_at"}  # bool, JSON, time: converted
    assert _as_given(Onboard.version, Onboard.version.python_value)
    assert not _as_given(peewee.FixedCharField(), peewee.FixedCharField().python_value)  # strips: not as read
    assert not _as_given(Onboard.version, str)  # a converter other than the field's own


@pytest.mark.parametrize(("value", "text"), [
    (datetime(2026, 12, 1, 22, 39, 42), "2026-12-01T22:39:42Z"),
    (datetime(2026, 12, 1, 22, 39, 42, 999_999), "2026-12-01T22:39:42Z"),  # to the second, not rounded
    (datetime(1, 1, 1), "0001-01-01T00:00:00Z"),  # four digits of year, as RFC 3339 has it
    (datetime(2026, 12, 2, 0, 9, 42, tzinfo=timezone(timedelta(hours=1, minutes=30))), "2026-12-01T22:39:42Z"),
    (datetime(2026, 12, 1, 22, 39, 42, tzinfo=UTC), "2026-12-01T22:39:42Z"),
    (None, None),
])
def test_times_are_rfc3339_in_utc(value, text):
    assert rfc3339(value) == text


def test_a_response_is_compact_utf8_json():
    body = [{"name": "Zoë’s leads", "n": 1, "ok": True, "none": None, "nested": {"a": [1, 2]}}]
    response = respond(body, 201, {"ETag": '"v1"'})
    assert response.body == '[{"name":"Zoë’s leads","n":1,"ok":true,"none":null,"nested":{"a":[1,2]}}]'.encode()
    assert orjson.loads(response.body) == body
    assert response.status_code == 201 and response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == '"v1"'
