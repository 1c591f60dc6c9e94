"""The fast lane (onboards/fastlane.py) answers as connexion's stack would, and answers the requests
it clears without going down that stack.

The differential tests send each request to two apps on one database: the service, and the same app
without the lane (every request down connexion's stack). Their handlers are replaced by recorders
that answer with the arguments they were given, so a request may be sent twice without side effects,
and the two answers (status, headers, body) must be the same: a lane that cleared what connexion
refuses, or passed other arguments, fails them.
"""

import asyncio
import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import peewee
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from starlette.responses import Response
from starlette.testclient import TestClient

import handlers.onboards as handlers_onboards
from models.accounts import Account, ApiKey
from models.base import transaction
from models.migrations import migrate
from onboards import fastlane, problems
from onboards.app import SPEC, create_app, load_spec
from onboards.config import Settings
from tests.conftest import basic_auth, create_app_without_lane
from tests.support import invite

OPERATION_IDS = [op["operationId"] for item in load_spec()["paths"].values() for method, op in item.items()
                 if method in ("get", "put", "post", "delete", "patch")]
ID = "0123456789abcdef01234567"


def _recorder(original: Callable) -> Callable:
    """A handler with the original's signature (connexion reads it through __wrapped__) that answers
    with the arguments it was given."""

    @functools.wraps(original)
    def recorded(**kwargs: Any) -> Response:
        return Response(orjson.dumps({"handler": original.__name__, "kwargs": kwargs}, default=repr,
                                     option=orjson.OPT_SORT_KEYS), media_type="application/json")

    return recorded


@pytest.fixture
def recorders(monkeypatch) -> None:
    for operation_id in OPERATION_IDS:
        module_name, name = operation_id.rsplit(".", 1)
        module = importlib.import_module(module_name)
        monkeypatch.setattr(module, name, _recorder(getattr(module, name)))


@pytest.fixture
def pair(database_url: str, recorders: None) -> Iterator[tuple[TestClient, TestClient]]:
    """(with the lane, without it): recording apps on one database, responses not validated (the
    recorders' answers are not the spec's)."""
    settings = Settings.from_env({}, database_url=database_url)
    lane = create_app(settings, send_outbox=False)
    stack = create_app_without_lane(settings, send_outbox=False)
    migrate()
    with TestClient(lane) as with_lane, TestClient(stack) as without_lane:
        yield with_lane, without_lane


@pytest.fixture
def stack_calls(monkeypatch) -> list[str]:
    """The paths of the requests that reached connexion's request validation, i.e. went down its stack
    past routing and security."""
    calls: list[str] = []
    validate = problems.ParameterValidator.validate_request

    def counted(self: problems.ParameterValidator, request: Any) -> None:
        calls.append(request.scope["path"])
        validate(self, request)

    monkeypatch.setattr(problems.ParameterValidator, "validate_request", counted)
    return calls


def _answer(client: TestClient, method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    response = client.request(method, url, **kwargs)
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
    return response.status_code, headers, response.content


def _same(pair: tuple[TestClient, TestClient], method: str, url: str, **kwargs: Any) -> tuple[int, dict, bytes]:
    with_lane, without_lane = pair
    answer = _answer(with_lane, method, url, **kwargs)
    assert answer == _answer(without_lane, method, url, **kwargs), (method, url, kwargs)
    return answer


# Requests at the edges of what the lane clears: each must be answered as connexion answers it.
EDGES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/onboards", {}),
    ("GET", "/onboards?limit=5&sort=desc", {}),
    ("GET", f"/onboards?after_id={ID}&before_id={ID.upper()}", {}),
    ("GET", "/onboards?limit=5&limit=6", {}),  # repeated
    ("GET", "/onboards?limit=", {}),  # blank
    ("GET", "/onboards?limit=%2B5", {}),  # +5
    ("GET", "/onboards?limit=%205", {}),  # " 5"
    ("GET", "/onboards?limit=%D9%A5", {}),  # an Arabic-Indic 5, which int() reads
    ("GET", "/onboards?limit=1_0", {}),
    ("GET", "/onboards?limit=-0", {}),
    ("GET", "/onboards?limit=0", {}),
    ("GET", "/onboards?limit=1000", {}),
    ("GET", "/onboards?limit=1001", {}),
    ("GET", "/onboards?limit=99999999999999999999999", {}),
    ("GET", "/onboards?limit=five", {}),
    ("GET", "/onboards?sort=DESC", {}),
    ("GET", "/onboards?unknown=1", {}),
    ("GET", "/onboards?limit", {}),
    ("GET", "/onboards?&&", {}),
    ("GET", "/onboards?after_id=%00", {}),
    ("GET", "/connections?relationship_type=buyer", {}),
    ("GET", "/connections?relationship_type=nobody", {}),
    ("GET", f"/onboards/{ID}", {}),
    ("GET", f"/onboards/{ID.upper()}", {}),
    ("GET", "/onboards/0123", {}),
    ("GET", f"/onboards/{ID}%0A", {}),
    ("GET", f"/onboards/{ID}/", {}),
    ("GET", f"/onboards/{ID}", {"headers": {"Content-Type": "application/json"}}),
    ("GET", f"/onboards/{ID}", {"headers": {"Content-Type": "text/plain"}}),
    ("HEAD", f"/onboards/{ID}", {}),
    ("OPTIONS", "/onboards", {}),
    ("DELETE", "/onboards", {}),
    ("GET", "/health", {}),
    ("GET", "/nowhere", {}),
    ("POST", "/onboards", {"json": {"invitation_id": ID}}),
    ("POST", "/onboards", {"json": {"invitation_id": ID, "flow_id": ID}}),
    ("POST", "/onboards", {"json": {"invitation_id": ID, "extra": 1}}),
    ("POST", "/onboards", {"json": {}}),
    ("POST", "/onboards", {"json": None}),
    ("POST", "/onboards", {"json": [ID]}),
    ("POST", "/onboards", {"content": b""}),
    ("POST", "/onboards", {"content": b"{"}),
    ("POST", "/onboards", {"content": b"\xef\xbb\xbf{}"}),  # a UTF-8 byte order mark
    ("POST", "/onboards", {"content": b'{"invitation_id": "\xff"}'}),  # not UTF-8
    ("POST", "/onboards", {"content": b'{"invitation_id": NaN}'}),
    ("POST", "/onboards", {"content": f'{{"invitation_id": "x", "invitation_id": "{ID}"}}'.encode()}),
    ("POST", "/onboards", {"content": f'{{"invitation_id": "{ID}"}}'.encode()}),  # no Content-Type
    *(("POST", "/onboards", {"content": f'{{"invitation_id": "{ID}"}}'.encode(), "headers": {"Content-Type": kind}})
      for kind in ("application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8",
                   "application/json; charset=latin-1", "application/json; charset=nope", "Application/JSON",
                   "application/merge-patch+json", "text/plain", "application/jsonx", "")),
    ("POST", "/onboards", {"content": f'{{"invitation_id": "{ID}"}}'.encode(),
                           "headers": [("Content-Type", "application/json"), ("Content-Type", "text/plain")]}),
    ("POST", "/onboards?x=1", {"json": {"invitation_id": ID}}),
    ("PUT", f"/onboards/{ID}", {"json": {"invitation_id": ID, "status": "completed"}}),
    ("PUT", f"/onboards/{ID}", {"json": {"invitation_id": ID, "status": "done"}}),
    ("PUT", f"/onboards/{ID}", {"json": {"status": "completed"}, "headers": {"If-Match": '"v3"'}}),
    ("PUT", f"/onboards/{ID}", {"json": {"invitation_id": ID}, "headers": {"If-Match": "x" * 201}}),
    ("PUT", f"/onboards/{ID}", {"json": {"invitation_id": ID},
                                "headers": [("If-Match", '"v1"'), ("If-Match", '"v2"')]}),
    ("PUT", "/onboards/nope", {"json": {"invitation_id": ID}}),
    ("PUT", f"/invitations/{ID}/resend", {}),
    ("POST", f"/invitations/{ID}/accept", {}),
    ("POST", f"/invitations/{ID}/accept", {"json": {}}),
    ("POST", "/flows", {"json": {"name": "a flow"}}),
    ("POST", "/flows", {"content": b'{"name": "x", "fields": ' + b"[" * 65 + b"]" * 65 + b"}",
                        "headers": {"Content-Type": "application/json"}}),  # over MAX_NESTING
    ("POST", "/flows", {"content": b'{"name": "x", "fields": ' + b"[" * 2000 + b"]" * 2000 + b"}",
                        "headers": {"Content-Type": "application/json"}}),  # past Python's recursion limit
    ("POST", "/flows", {"content": b'{"name": "x", "fields": ' + b"[" * 64 + b"]" * 64 + b"}",
                        "headers": {"Content-Type": "application/json"}}),  # deep, but allowed
    ("POST", "/flows", {"content": b'{"name": "' + b"[" * 100 + b'"}',  # brackets in a string do not nest
                        "headers": {"Content-Type": "application/json"}}),
    ("POST", "/onboards", {"content": b'{"invitation_id": ' + b"9" * 5000 + b"}",
                           "headers": {"Content-Type": "application/json"}}),  # past int()'s 4,300 digits
]


@pytest.mark.parametrize(("method", "url", "kwargs"), EDGES, ids=[f"{m} {u}" for m, u, _ in EDGES])
def test_the_lane_answers_as_connexion_does(pair, buyer_key, method, url, kwargs):
    headers = kwargs.get("headers", {})
    headers = [*basic_auth(buyer_key).items(), *(headers.items() if isinstance(headers, dict) else headers)]
    _same(pair, method, url, **{**kwargs, "headers": headers})


AUTHORIZATIONS = [None, "", "Basic", "Basic !!!", "Bearer abc", "Basic " + "QVBJOndyb25n",  # API:wrong
                  "Basic QVBJ"]  # no colon


@pytest.mark.parametrize("authorization", AUTHORIZATIONS)
def test_credentials_the_lane_cannot_clear_get_connexions_answer(pair, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    status, found, _body = _same(pair, "GET", "/onboards", headers=headers)
    assert status == 401 and found["www-authenticate"].startswith("Basic")


def test_the_key_is_read_whatever_the_user_name_and_the_scheme_case(pair, buyer_key):
    for user in ("API", "", "someone else"):
        assert _same(pair, "GET", "/onboards", headers=basic_auth(buyer_key, user))[0] == 200
    lower = basic_auth(buyer_key)["Authorization"].replace("Basic", "bAsIc  ")
    assert _same(pair, "GET", "/onboards", headers={"Authorization": lower})[0] == 200
    twice = [("Authorization", basic_auth(buyer_key)["Authorization"]), ("Authorization", "Basic QVBJOndyb25n")]
    assert _same(pair, "GET", "/onboards", headers=twice)[0] == 200  # the first one counts


@pytest.fixture
def buyer_key(pair) -> str:
    with transaction():
        _account, _user, key = Account.create_with_user("Bright Buyers", "buyer@example.com")
    return key


def _generated_cases() -> st.SearchStrategy[Any]:
    """schemathesis's cases for every operation of the spec, valid and invalid."""
    schema = schemathesis.openapi.from_path(str(SPEC), config=SchemathesisConfig.from_dict({}))
    every = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    return st.sampled_from(every).flatmap(lambda operation: st.sampled_from(list(GenerationMode)).flatmap(
        lambda mode: operation.as_strategy(generation_mode=mode)))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=_generated_cases(), keep_their_auth=st.booleans())
def test_generated_requests_are_answered_as_connexion_does(pair, buyer_key, case, keep_their_auth):
    """Mostly with the buyer's key, sometimes with whatever authorization schemathesis made up."""
    request = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v for k, v in request.get("headers", {}).items() if k.lower() != "x-schemathesis-testcaseid"}
    if not keep_their_auth or "Authorization" not in headers:
        headers.update(basic_auth(buyer_key))
    if request.get("cookies"):
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in request["cookies"].items())
    kwargs = {name: request[name] for name in ("params", "json", "files") if name in request}
    if "data" in request:
        kwargs["content" if isinstance(request["data"], (bytes, str)) else "data"] = request["data"]
    _same(pair, request["method"], request["url"], headers=headers, **kwargs)


def test_what_the_lane_clears_never_goes_down_connexions_stack(pair, buyer_key, stack_calls):
    with_lane, without_lane = pair
    auth = basic_auth(buyer_key)
    cleared = [("GET", "/onboards", {}), ("GET", f"/onboards?limit=5&sort=desc&after_id={ID}", {}),
               ("GET", f"/onboards/{ID}", {}), ("POST", "/onboards", {"json": {"invitation_id": ID}}),
               ("PUT", f"/onboards/{ID}", {"json": {"invitation_id": ID, "status": "failed"},
                                           "headers": {"If-Match": '"v1"'}}),
               ("POST", "/flows", {"json": {"name": "x"}}), ("GET", "/connections?relationship_type=buyer", {}),
               ("POST", f"/invitations/{ID}/accept", {}), ("GET", "/health", {})]
    for method, url, kwargs in cleared:
        response = with_lane.request(method, url, **{**kwargs, "headers": {**auth, **kwargs.get("headers", {})}})
        assert response.status_code == 200, (method, url)
    assert stack_calls == []
    for method, url, kwargs in cleared:  # the count sees the requests that do go down the stack
        without_lane.request(method, url, **{**kwargs, "headers": {**auth, **kwargs.get("headers", {})}})
    assert len(stack_calls) == len(cleared)
    assert with_lane.get("/onboards?limit=0", headers=auth).status_code == 400
    assert len(stack_calls) == len(cleared) + 1


def test_a_handlers_errors_are_the_same_problems_in_the_lane(settings, client, seller, buyer, stack_calls):
    """With the real handlers: a missing onboard, a missing one to change, a seller onboarding from
    its own invitation."""
    with TestClient(create_app_without_lane(settings, send_outbox=False)) as stack:
        entity = invite(client, seller, buyer.email)
        stack_calls.clear()
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", f"/onboards/{ID}", {}),
            ("PUT", f"/onboards/{ID}", {"json": {"invitation_id": ID, "status": "failed"}}),
            ("POST", "/onboards", {"json": {"invitation_id": entity["invitation_id"]}})]
        for method, url, kwargs in requests:
            answer = client.request(method, url, headers=seller.auth, **kwargs)
            assert answer.status_code in (404, 409) and answer.headers["content-type"] == "application/problem+json"
            assert stack_calls == []
            again = stack.request(method, url, headers=seller.auth, **kwargs)
            assert (again.status_code, again.json()) == (answer.status_code, answer.json())
            stack_calls.clear()


def _errors_pair(database_url: str) -> tuple[TestClient, TestClient, str]:
    """(with the lane, without it) on one database that holds a buyer; the buyer's key."""
    settings = Settings.from_env({}, database_url=database_url)
    lane, stack = create_app(settings, send_outbox=False), create_app_without_lane(settings, send_outbox=False)
    migrate()
    with transaction():
        _account, _user, key = Account.create_with_user("Bright Buyers", "buyer@example.com")
    return (TestClient(lane, raise_server_exceptions=False), TestClient(stack, raise_server_exceptions=False),
            key)


def test_an_unexpected_error_of_a_handler_is_connexions_500_in_the_lane(database_url, monkeypatch, stack_calls):
    def broken(**_kwargs: Any) -> Response:
        raise RuntimeError("a bug")

    monkeypatch.setattr("handlers.onboards.get_onboard", functools.wraps(handlers_onboards.get_onboard)(broken))
    with_lane, without_lane, key = _errors_pair(database_url)
    with with_lane, without_lane:
        status, headers, body = _same((with_lane, without_lane), "GET", f"/onboards/{ID}", headers=basic_auth(key))
    assert status == 500 and headers["content-type"] == "application/problem+json"
    assert orjson.loads(body)["detail"] == "internal error"
    assert stack_calls == [f"/onboards/{ID}"]  # the second app's only: the lane answered the first


def test_a_failed_key_look_up_is_connexions_503_in_the_lane(database_url, monkeypatch):
    with_lane, without_lane, key = _errors_pair(database_url)

    def unavailable(_cls: type, _key: str) -> None:
        raise peewee.OperationalError("database is locked")

    monkeypatch.setattr(ApiKey, "authenticate", classmethod(unavailable))
    with with_lane, without_lane:
        status, headers, _body = _same((with_lane, without_lane), "GET", f"/onboards/{ID}", headers=basic_auth(key))
    assert status == 503 and headers["retry-after"] == "1"


def test_the_lane_validates_responses_when_the_app_does(database_url, recorders, stack_calls):
    """The recorders' answers are not the spec's: with response validation on, a 500 either way."""
    settings = Settings.from_env({}, database_url=database_url, validate_responses=True)
    lane, stack = create_app(settings, send_outbox=False), create_app_without_lane(settings, send_outbox=False)
    migrate()
    with transaction():
        _account, _user, key = Account.create_with_user("Bright Buyers", "buyer@example.com")
    with TestClient(lane, raise_server_exceptions=False) as with_lane, \
            TestClient(stack, raise_server_exceptions=False) as without_lane:
        answer = _same((with_lane, without_lane), "GET", f"/onboards/{ID}", headers=basic_auth(key))
        assert answer[0] == 500
    assert stack_calls == [f"/onboards/{ID}"]  # the second app's only


def test_every_operation_of_the_spec_has_a_lane(client, buyer):
    assert client.get("/health").status_code == 200  # the lanes are planned
    app = client.app
    while not isinstance(app, fastlane.FastLane):
        app = app.middleware.middleware_stack[0] if hasattr(app, "middleware") else app.app
    planned = {lane.operation_id for _expression, lanes in (app._lanes or {}).values() for lane in lanes if lane}
    assert planned == set(OPERATION_IDS)


def _raw(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], messages: list[dict],
         path_params: dict | None = None) -> tuple[list[dict], int]:
    """One request straight through ASGI, its body as these messages, then a disconnect: what the app
    sent, and how many messages it read."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("testserver", 80), **({"path_params": path_params} if path_params
                                                                           else {})}
    pending = list(messages)
    sent: list[dict] = []
    read = 0

    async def receive() -> dict:
        nonlocal read
        read += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append({k: v for k, v in message.items() if k != "headers"} | (
            {"headers": [h for h in message["headers"] if h[0] not in (b"x-request-id", b"date")]}
            if "headers" in message else {}))

    asyncio.run(app(scope, receive, send))
    return sent, read


def _raw_same(pair: tuple[TestClient, TestClient], *args: Any, **kwargs: Any) -> list[dict]:
    with_lane, without_lane = pair
    answer = _raw(with_lane.app, *args, **kwargs)
    assert answer == _raw(without_lane.app, *args, **kwargs)
    return answer[0]


def test_a_body_without_a_length_is_left_to_connexion(pair, buyer_key):
    auth = [(b"authorization", basic_auth(buyer_key)["Authorization"].encode())]
    json_type = [(b"content-type", b"application/json")]
    body = [{"type": "http.request", "body": b'{"name": "x"}', "more_body": False}]
    for lengths in ([], [b"0"], [b"0", b"13"], [b"abc", b"13"]):
        headers = auth + json_type + [(b"content-length", length) for length in lengths]
        sent = _raw_same(pair, "POST", "/flows", headers, body)
        assert sent[0]["status"] in (400, 500) if lengths == [b"abc", b"13"] else sent[0]["status"] == 400


def test_a_client_gone_before_the_end_of_its_body_is_answered_as_connexion_answers(pair, buyer_key):
    headers = [(b"authorization", basic_auth(buyer_key)["Authorization"].encode()),
               (b"content-type", b"application/json"), (b"content-length", b"60")]
    for parts in ([], [b'{"invitation_id": "01'], [b'{"invitation_id": ', b'"0123456789abcdef01234567"}']):
        messages = [{"type": "http.request", "body": part, "more_body": True} for part in parts]
        sent = _raw_same(pair, "POST", "/onboards", headers, messages)
        assert sent[0]["status"] in (400, 500)


def test_path_parameters_from_an_outer_router_reach_the_handler_as_through_connexion(pair, buyer_key):
    headers = [(b"authorization", basic_auth(buyer_key)["Authorization"].encode())]
    sent = _raw_same(pair, "GET", f"/onboards/{ID}", headers, [{"type": "http.request", "body": b""}],
                     path_params={"tenant": "t1"})
    assert b'"tenant":"t1"' in sent[1]["body"]
