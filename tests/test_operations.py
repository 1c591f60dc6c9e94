"""The per-request work connexion repeats is done once (onboards/operations.py, onboards/problems.py):
these fail when a connexion upgrade changes the internals that relies on, instead of the saving
silently going away."""

import asyncio
import base64
import dataclasses
from collections.abc import Callable
from types import SimpleNamespace

import connexion.security
import pytest
from connexion import AsyncApp
from connexion.decorators import parameter as connexion_parameters
from connexion.exceptions import ProblemException
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.lifecycle import ConnexionRequest
from connexion.middleware import swagger_ui
from connexion.middleware.abstract import RoutedMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.uri_parsing import OpenAPIURIParser
from starlette.testclient import TestClient

from models.migrations import migrate
from onboards import operations, problems
from onboards.app import create_app, load_spec
from tests.conftest import create_app_without_lane


@pytest.fixture
def app(settings, send_outbox):
    """The service without its fast lane (onboards/fastlane.py), which answers the requests it clears
    before they reach connexion's stack: these tests are about that stack, which answers the rest."""
    application = create_app_without_lane(settings, send_outbox=send_outbox)
    migrate()
    return application


def test_each_operation_is_decorated_once(client, buyer, monkeypatch):
    calls = []
    decorate = operations._OnceDecorator.decorate

    def counted(self: operations._OnceDecorator, fn: Callable) -> Callable:
        calls.append(fn)
        return decorate(self, fn)

    monkeypatch.setattr(operations._OnceDecorator, "decorate", counted)
    for _ in range(3):
        assert client.get("/onboards", headers=buyer.auth).status_code == 200
        assert client.get("/entities", headers=buyer.auth).status_code == 200
    assert len(calls) == 2  # once per operation of this app


def test_the_basic_auth_function_is_inspected_once(client, buyer, monkeypatch):
    assert client.get("/onboards", headers=buyer.auth).status_code == 200  # built, and decorated
    calls = []
    inspect = operations.inspect_function_arguments

    def counted(fn: Callable) -> tuple:
        calls.append(fn)
        return inspect(fn)

    for module in (connexion.security, operations):
        monkeypatch.setattr(module, "inspect_function_arguments", counted)
    for _ in range(3):
        assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert calls == []


def test_the_basic_check_reads_the_header_as_connexion_does(client, buyer):
    key = buyer.auth["Authorization"].split()[1]
    assert client.get("/onboards", headers={"Authorization": f"bAsIc  {key}"}).status_code == 200
    for header in ("Basic", "Basic !!!", "Basic " + base64.b64encode(b"no colon").decode(), "Bearer x",
                   "Basic " + base64.b64encode(b"API:wrong").decode()):
        answer = client.get("/onboards", headers={"Authorization": header})
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic")


def test_an_info_function_taking_the_request_gets_connexions_own_check():
    def info(username: str, password: str, request: object) -> dict:
        return {"sub": username, "seen": request}

    verify = operations.BasicAuth()._get_verify_func(info)
    request = SimpleNamespace(headers={"Authorization": "Basic " + base64.b64encode(b"me:pw").decode()})
    assert asyncio.run(verify(request))["seen"] is request
    own = operations.BasicAuth()._get_verify_func(lambda username, password: {"sub": username})
    scope = {"headers": [(b"authorization", b"Basic " + base64.b64encode(b"me:pw"))]}
    assert asyncio.run(own(SimpleNamespace(scope=scope))) == {"sub": "me"}


def test_parameter_and_body_validators_are_compiled_once_per_schema(client, buyer):
    assert client.get("/onboards?limit=5&sort=desc", headers=buyer.auth).status_code == 200
    assert client.post("/flows", json={"name": "one"}, headers=buyer.auth).status_code == 201
    compiled = len(problems._COMPILED)
    assert compiled >= 3  # limit, sort, the flow body
    for _ in range(3):
        assert client.get("/onboards?limit=5&sort=desc", headers=buyer.auth).status_code == 200
        assert client.post("/flows", json={"name": "two"}, headers=buyer.auth).status_code == 201
    assert len(problems._COMPILED) == compiled


def test_a_bad_parameter_is_still_reported_in_connexions_words(client, buyer):
    answer = client.get("/onboards?limit=0", headers=buyer.auth)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"pointer": "query/limit", "message": "0 is less than the minimum of 1"}]


def test_request_validators_are_made_once_per_operation(client, buyer, monkeypatch):
    made = []
    for validator in (problems.ParameterValidator, problems.BodyValidator):
        init = validator.__init__

        def counted(self, *args, __init=init, **kwargs) -> None:
            made.append(type(self))
            __init(self, *args, **kwargs)

        monkeypatch.setattr(validator, "__init__", counted)
    for name in ("one", "two", "three"):
        assert client.get("/onboards?limit=5", headers=buyer.auth).status_code == 200
        assert client.post("/flows", json={"name": name}, headers=buyer.auth).status_code == 201
    assert sorted(m.__name__ for m in made) == ["BodyValidator", "ParameterValidator", "ParameterValidator"]


def test_a_charset_the_client_invents_does_not_grow_the_validators_kept(client, buyer):
    for n in range(3 * operations.BODY_VALIDATORS_KEPT):
        answer = client.post("/flows", content=b'{"name": "x"}', headers={
            **buyer.auth, "Content-Type": f"application/json;charset=x-{n}"})
        assert answer.status_code == 415
        assert answer.json()["detail"] == f"charset 'x-{n}' is not supported"
    for n in range(3 * operations.BODY_VALIDATORS_KEPT):  # charsets that exist: kept up to the limit
        answer = client.post("/flows", content=b'{"name": "x"}', headers={
            **buyer.auth, "Content-Type": f"application/json; charset={'utf-8' if n % 2 else 'UTF-8'}{' ' * n}"})
        assert answer.status_code == 201
    kept = [op._media for api in _apis(client.app, RequestValidationMiddleware)
            for op in api.operations.values() if "_media" in vars(op)]
    assert kept and all(len(validators) <= operations.BODY_VALIDATORS_KEPT for validators in kept)
    assert not any(b"x-" in (key or b"") for validators in kept for key in validators)  # a refused one is not


def _stack(app) -> list:
    """connexion's middleware stack inside the service's own middleware."""
    while not isinstance(app, AsyncApp):
        app = app.app
    return app.middleware.middleware_stack


def _apis(app, middleware: type[RoutedMiddleware]) -> list:
    """The APIs of the connexion middleware of this kind inside the service's ASGI stack."""
    found: list[RoutedMiddleware] = [m for m in _stack(app) if isinstance(m, middleware)]
    return [api for m in found for apis in m.apis.values() for api in apis]


def test_api_requests_skip_the_swagger_ui_router(client, buyer, monkeypatch):
    routed = []
    original_scope = swagger_ui._original_scope  # what its __call__ sets before it routes

    class Recorded:
        def set(self, scope: dict) -> None:
            routed.append(scope["path"])
            original_scope.set(scope)

        def get(self) -> dict:
            return original_scope.get()

    monkeypatch.setattr(swagger_ui, "_original_scope", Recorded())
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert client.get("/nothing/here").status_code == 404
    assert routed == []
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")
    assert "swagger-ui" in client.get("/ui/").text
    assert client.get("/ui", follow_redirects=False).status_code in (301, 302, 307, 308)
    assert client.get("/ui/swagger-ui.css").status_code == 200
    assert routed == ["/openapi.json", "/ui/", "/ui", "/ui/swagger-ui.css"]


def test_the_swagger_ui_is_found_under_a_root_path(app):
    with TestClient(app, root_path="/api") as client:
        assert client.get("/api/openapi.json").status_code == 200
        assert "swagger-ui" in client.get("/api/ui/").text


def test_argument_names_are_rewritten_once(client, buyer, monkeypatch):
    assert client.get("/onboards?limit=5&sort=desc", headers=buyer.auth).status_code == 200
    rewrites = []
    real_re = connexion_parameters.re

    def sub(*args, **kwargs) -> str:
        rewrites.append(args)
        return real_re.sub(*args, **kwargs)

    monkeypatch.setattr(connexion_parameters, "re", SimpleNamespace(sub=sub))
    for _ in range(3):
        assert client.get("/onboards?limit=5&sort=desc", headers=buyer.auth).status_code == 200
    assert rewrites == []


def test_the_request_holds_its_scope_not_a_proxy_of_it(client, buyer, monkeypatch):
    scopes = []
    get_request = StarletteFramework.get_request

    def recorded(*, scope, **kwargs):
        scopes.append(scope)
        return get_request(scope=scope, **kwargs)

    monkeypatch.setattr(StarletteFramework, "get_request", staticmethod(recorded))
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert [type(scope) for scope in scopes] == [dict]


def test_path_parameters_are_validated_once_per_request(client, buyer):
    # connexion appended /onboards/{id}'s `id` to PUT's own parameters once per middleware: six of them.
    answer = client.put("/onboards/zzz", json={"invitation_id": "0" * 24}, headers=buyer.auth)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"pointer": "path/id", "message": "'zzz' does not match '^[0-9a-fA-F]{24}$'"}]
    for api in _apis(client.app, RequestValidationMiddleware):
        for operation in api.operations.values():
            declared = [(p["name"], p["in"]) for p in operation._operation.parameters]
            assert len(declared) == len(set(declared)), operation._operation.operation_id


def test_an_operations_own_parameter_wins_over_the_paths():
    path_level: list[dict] = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                  {"name": "q", "in": "query", "schema": {"type": "string"}}]
    own = [{"name": "q", "in": "query", "schema": {"type": "integer"}}]
    operation = operations._SpecOperation("get", "/things/{id}", {"parameters": own, "responses": {}},
                                          resolver=SimpleNamespace(resolve=lambda _op: SimpleNamespace(
                                              function=lambda: None, operation_id="x")),
                                          path_parameters=path_level)
    assert operation.parameters == [own[0], path_level[0]]
    assert own == [{"name": "q", "in": "query", "schema": {"type": "integer"}}]  # the spec's list untouched


class _Unreachable:
    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"read through connexion's proxy: {name}")


def test_arguments_are_read_from_the_operation_not_through_proxies(client, buyer, monkeypatch):
    assert client.get("/onboards?limit=5", headers=buyer.auth).status_code == 200  # decorated before the patch
    monkeypatch.setattr(connexion_parameters, "operation", _Unreachable())
    monkeypatch.setattr(connexion_parameters, "context", _Unreachable())
    monkeypatch.setattr(ConnexionRequest, "files", _Unreachable())  # no operation of the spec takes a form
    answer = client.get("/onboards?limit=1&sort=desc", headers=buyer.auth)
    assert answer.status_code == 200 and answer.json() == []
    made = client.post("/flows", json={"name": "proxied"}, headers=buyer.auth)
    assert made.status_code == 201
    changed = client.put(f"/flows/{made.json()['id']}", json={"name": "renamed"},
                         headers={**buyer.auth, "If-Match": made.headers["etag"]})
    assert changed.status_code == 200 and changed.json()["name"] == "renamed"


def test_whether_a_handler_is_a_coroutine_function_is_asked_once(client, buyer, monkeypatch):
    asked = []
    ask = operations.asyncio.iscoroutinefunction

    def counted(function: Callable) -> bool:
        asked.append(function)
        return ask(function)

    monkeypatch.setattr(operations.asyncio, "iscoroutinefunction", counted)
    for _ in range(3):
        assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert len(asked) == 1


def test_a_content_type_is_parsed_and_matched_once_per_operation(client, buyer, monkeypatch):
    parsed = []
    extract = operations._Validation.extract_content_type

    def counted(self, headers):
        parsed.append(headers)
        return extract(self, headers)

    monkeypatch.setattr(operations._Validation, "extract_content_type", counted)
    for name in ("one", "two", "three"):
        assert client.post("/flows", json={"name": name}, headers=buyer.auth).status_code == 201
        assert client.get("/flows", headers=buyer.auth).status_code == 200
    assert len(parsed) == 2  # POST /flows with application/json, GET /flows with none
    for _ in range(2):  # a refused one is not kept
        refused = client.post("/flows", content=b"name", headers={**buyer.auth, "Content-Type": "text/plain"})
        assert refused.status_code == 415
    assert len(parsed) == 4


def _middlewares(app) -> list[type]:
    return [type(m) for m in _stack(app)]


def test_response_validation_is_in_the_stack_only_when_on(settings, client, buyer):
    assert client.get("/onboards", headers=buyer.auth).status_code == 200  # the stack is built
    assert ResponseValidationMiddleware in _middlewares(client.app)  # the tests' settings turn it on
    with TestClient(create_app(dataclasses.replace(settings, validate_responses=False))) as plain:
        assert plain.get("/onboards", headers=buyer.auth).status_code == 200
        assert ResponseValidationMiddleware not in _middlewares(plain.app)
        assert RequestValidationMiddleware in [m.__base__ for m in _middlewares(plain.app)]
    with pytest.raises(TypeError, match="chosen when the App is made"):
        operations.App(__name__).add_api(load_spec(), validate_responses=True)


def test_without_a_query_string_query_parameters_are_checked_as_absent(client, buyer):
    params = [{"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}]
    validator = problems.ParameterValidator(params, uri_parser=OpenAPIURIParser(params, {}), strict_validation=True)

    def problem(query: bytes) -> list | None:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": query}
        try:
            validator.validate(scope)
        except ProblemException as found:
            return (found.ext or {})["errors"]
        return None

    assert problem(b"") == [{"pointer": "query/q", "message": "Missing query parameter 'q'"}]
    assert problem(b"q=x") is None
    assert problem(b"q=x&z=1") == [{"pointer": "query/z", "message": "unknown query parameter"}]
    assert client.get("/onboards", headers=buyer.auth).status_code == 200  # limit's default still applies



def _routed(routing: RoutingMiddleware, requests: list[tuple[str, str, str]]) -> list:
    """What connexion's routing hands on for each (method, path, root path): the operation id and
    path parameters it passes to the next app, or the status it answers itself."""
    handed: list = []

    async def next_app(scope: dict, _receive: Callable, _send: Callable) -> None:
        handed.append((scope["extensions"]["connexion_routing"]["operation_id"], scope["path_params"]))

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            handed.append(message["status"])

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    mount = routing.router.routes[0]
    for operation in [*(route.app for route in mount.routes), mount.app.default, routing.router.default]:
        operation.next_app = next_app
    answers = []
    for method, path, root_path in requests:
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": root_path,
                 "query_string": b"", "headers": [], "path_params": {"outer": "kept"}}
        asyncio.run(routing(scope, receive, send))
        answers.append(handed[:])
        handed.clear()
    return answers


def test_routing_finds_what_connexions_router_finds(client):
    routing = next(m for m in _stack(client.app) if isinstance(m, operations._Routing))
    assert routing._methods  # the one-expression path is in use
    ids = {"{id}": "0123456789abcdef01234567", "{entityId}": "e-1"}
    paths = [path.replace("{id}", ids["{id}"]).replace("{entityId}", ids["{entityId}"])
             for path in load_spec()["paths"]]
    paths += ["/onboards/", "/onboards/a/b", "/ONBOARDS", "/onboards/a%2Fb", "/onboards/%", "/nowhere", "/", ""]
    requests = [(method, path, "") for path in paths for method in ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS")]
    requests += [("GET", "/api/onboards/x", "/api"), ("GET", "/api", "/api"), ("GET", "/onboards/x", "/api")]
    answers = _routed(routing, requests)
    fast = routing._methods
    routing._methods = {}  # connexion's own router for every request
    try:
        assert answers == _routed(routing, requests)
    finally:
        routing._methods = fast
    found = dict(zip(requests, answers, strict=True))
    assert found[("HEAD", f"/onboards/{ids['{id}']}", "")] == [("handlers.onboards.get_onboard",
                                                                {"outer": "kept", "id": ids["{id}"]})]
    assert found[("POST", "/invitations/source", "")][0][0] == "handlers.invitations.invite_source"
    assert found[("GET", "/api/onboards/x", "/api")][0][0] == "handlers.onboards.get_onboard"


def _arguments(operation, path_params: dict, body: bytes) -> dict:
    """The keyword arguments the service's parameter decorator hands this operation's handler."""
    handed: list[dict] = []

    async def handler(**kwargs: object) -> None:
        handed.append(kwargs)

    decorated = operations._Parameters(operation, framework=StarletteFramework, pythonic_params=False)(handler)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] if body else []
    scope = {"type": "http", "method": operation.method.upper(), "path": "/", "query_string": b"", "headers": headers,
             "path_params": path_params, "extensions": {"connexion_context": {"token_info": {"sub": "u"}, "user": "u"}}}

    async def receive() -> dict:
        return {"type": "http.request", "body": body}

    parser = operation.uri_parser_class(operation.parameters, operation.body_definition())
    asyncio.run(decorated(StarletteFramework.get_request(uri_parser=parser, scope=scope, receive=receive)))
    return handed[0]


def test_operations_taking_only_path_parameters_get_what_connexions_get_arguments_gives(client, monkeypatch):
    app = client.app
    while not isinstance(app, AsyncApp):
        app = app.app
    specs = [operation.spec for apis in app._middleware_app.apis.values() for api in apis
             for operation in api.operations.values()]
    only_path = [spec for spec in specs if operations._only_path(spec, False)]
    onboards = {"handlers.onboards.get_onboard", "handlers.onboards.update_onboard", "handlers.onboards.create_onboard"}
    assert onboards <= {spec.operation_id for spec in only_path}
    assert "handlers.onboards.list_onboards" not in {spec.operation_id for spec in only_path}  # it takes a query
    for spec in only_path:
        path_params = {p["name"]: "0123456789abcdef01234567" for p in spec.parameters if p["in"] == "path"}
        bodies = [b'{"name": "x", "status": "in_progress"}', b""] if spec.is_request_body_defined else [b""]
        for body in bodies:
            fast = _arguments(spec, path_params, body)
            with monkeypatch.context() as patched:
                patched.setattr(operations, "_only_path", lambda _operation, _takes_form: False)
                assert fast == _arguments(spec, path_params, body), spec.operation_id
