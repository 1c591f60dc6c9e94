"""The fast lane: a request connexion's stack would pass, answered without going down that stack.

In connexion's app a request passes eleven layers before its handler runs: its app and middleware
entry, its server-error and exception middlewares (two request objects and two wrappers of every
message sent), then nine more, where it is routed twice, made into a request object three times, its
query string is parsed twice, and its body is read and parsed twice. The lane sits in front of the
app, behind Guard (create_app: Observe, Guard, the lane, connexion's app). For
each operation whose security, parameters and body are of the plain kinds `_plan_lane` accepts, the
lane reads the request once: it matches the path with `_Routing`'s expressions, checks HTTP Basic
credentials with `BasicAuth`'s check of the spec's `x-basicInfoFunc`, clears each parameter and a
JSON body with the validators connexion's validators hold (`problems.Compiled`), sets connexion's
context as its ContextMiddleware does, and calls the resolved handler with the arguments connexion's
parameter decorator gives it, through connexion's response decorator (and, when responses are
validated, connexion's response validation).

The lane never refuses a request. Whatever it cannot clear (no credentials, a value its compiled
check does not clear, a duplicated or unknown parameter, an unusual Content-Type, ...) goes down
connexion's stack as it came (a body already read is replayed), and connexion judges it and words the
answer (the stack checks the credentials again: within AUTH_CACHE_SECONDS, a dictionary look-up).
What the lane does raise is what connexion raises at the same step (the info function's errors, the
handler's, response validation's), and connexion's server-error and exception middlewares answer it,
as in the stack: the lane runs them, with an app that raises the error, only when there is one.
tests/test_fastlane.py holds the lane's answers and arguments to connexion's.
"""

import copy
import json
import re
import typing as t
from urllib.parse import parse_qsl

from connexion.apps.asynchronous import AsyncASGIApp
from connexion.context import _context, _operation, _receive, _scope
from connexion.decorators.parameter import CONTEXT_NAME, unwrap_decorators
from connexion.decorators.response import AsyncResponseDecorator
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.json_schema import Draft4RequestValidator
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.operations import AbstractOperation
from connexion.utils import inspect_function_arguments, is_nullable
from jsonschema import Draft4Validator
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboards import operations, problems

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}  # HEAD and the rest go down connexion's stack
JSON_TYPES = {b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"}
_DECIMAL = re.compile(r"-?[0-9]{1,18}")  # what int() reads as connexion's int() does, and nothing else


class _Unclear(Exception):
    """The lane cannot clear this request: connexion's stack judges it."""


class _Query(t.NamedTuple):
    argument: str | None  # the handler's name for it, None when the handler does not take it
    integer: bool
    check: problems.Compiled
    required: bool


class _Errors:
    """connexion's answer to an error: its server-error and exception middlewares (those of its stack,
    copied), in front of an app that raises the error."""

    def __init__(self, server_error: ServerErrorMiddleware, exceptions: ExceptionMiddleware) -> None:
        self.server_error, self.exceptions = server_error, exceptions

    async def answer(self, scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
        async def raising(_scope: Scope, _receive: Receive, _send: Send) -> None:
            raise error

        exceptions = copy.copy(self.exceptions)
        exceptions.app = raising
        outer = copy.copy(self.server_error)
        outer.app = exceptions
        await outer(scope, receive, send)

    async def around(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """`app` with an error it raises before its response starts answered as connexion answers it."""
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, sending)
        except Exception as error:
            if started:
                raise
            await self.answer(scope, receive, send, error)


class _Lane:
    """One operation's plan: what to check and where each argument comes from."""

    def __init__(self, operation_id: str, spec: AbstractOperation, *, check_credentials: t.Any,
                 path: list[tuple[str, str, t.Any, str, problems.Compiled]], query: dict[str, _Query],
                 defaults: dict[str, t.Any], headers: dict[bytes, tuple[problems.Compiled, bool]],
                 body: tuple[str | None, problems.Compiled] | None, arguments: list[str], has_kwargs: bool,
                 respond: t.Callable, response_validation: t.Any, errors: _Errors,
                 connexion: ConnexionMiddleware) -> None:
        self.operation_id, self.spec, self.check_credentials = operation_id, spec, check_credentials
        self.path, self.query, self.defaults, self.headers, self.body = path, query, defaults, headers, body
        self.arguments, self.has_kwargs, self.respond = arguments, has_kwargs, respond
        self.response_validation, self.errors, self.connexion = response_validation, errors, connexion
        # Headers read once from the request: the ones the lane checks, each of which must come once.
        self.watched = {b"authorization", b"content-type", b"content-length", *headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, matched: re.Match[str],
                       stack: ASGIApp) -> None:
        extensions = scope.setdefault("extensions", {})
        # As connexion's routing does, before anything can fail: the access log and metrics read it.
        extensions.setdefault("connexion_routing", {}).update({"api_base_path": "", "operation_id": self.operation_id})
        read = receive
        try:
            seen = self._headers(scope["headers"])
            kwargs: dict[str, t.Any] = {}
            credentials = None
            if self.check_credentials is not None:
                token_info = await self.check_credentials(seen.get(b"authorization"))
                if not isinstance(token_info, dict):  # NO_VALUE: connexion answers it
                    raise _Unclear
                credentials = {"user": token_info.get("sub", token_info.get("uid")), "token_info": token_info}
            path_params = {}
            for name, group, convertor, argument, check in self.path:
                value = path_params[name] = convertor.convert(matched[group])
                if not check.clears(value):
                    raise _Unclear
                kwargs[argument] = value
            self._read_query(scope.get("query_string"), kwargs)
            for header, (check, required) in self.headers.items():
                given = seen.get(header)
                if given is None:
                    if required:
                        raise _Unclear
                elif not check.clears(given.decode("latin-1")):
                    raise _Unclear
            if self.body is not None:
                # connexion reads no body without a Content-Length (Guard gives a chunked one its length)
                length = seen.get(b"content-length", b"")
                if seen.get(b"content-type") not in JSON_TYPES or not length.isdigit() or not int(length):
                    raise _Unclear
                raw, read = await _read_body(receive)
                if raw is None:  # the client went away: connexion answers what came
                    raise _Unclear
                body = _parse(raw)
                if body is None or not self.body[1].clears(body):
                    raise _Unclear
                if self.body[0] is not None:
                    kwargs[self.body[0]] = body
            elif b"content-type" in seen:  # connexion checks it against the operation's media types
                raise _Unclear
        except _Unclear:
            await stack(scope, read, send)
            return
        except Exception as error:  # the info function's: nothing is sent yet
            await self.errors.answer(scope, read, send, error)
            return
        # Set only now: a request handed on is the stack's to authenticate, as if the lane had not seen it.
        if credentials is None:
            context = extensions.get("connexion_context", {})
        else:
            context = extensions.setdefault("connexion_context", {})
            context.update(credentials)
        # As connexion's middleware entry sets it, and its router the path's parameters.
        scope = {**scope, "app": self.connexion, "path_params": path_params}
        # connexion's ContextMiddleware, then its parameter decorator's context arguments.
        _context.set(context)
        _operation.set(self.spec)
        _receive.set(read)
        _scope.set(scope)
        for key, value in context.items():
            if self.has_kwargs or key in self.arguments:
                kwargs[key] = value
        if CONTEXT_NAME in self.arguments:
            kwargs[CONTEXT_NAME] = context
        try:
            response = await self.respond(**kwargs)
        except Exception as error:  # the handler's: nothing is sent yet
            await self.errors.answer(scope, read, send, error)
            return
        if self.response_validation is None:
            # A finished response sends what it holds: the one thing that can fail is the server's send.
            await response(scope, read, send)
            return
        validation = copy.copy(self.response_validation)
        validation.next_app = response
        await self.errors.around(validation, scope, read, send)

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
        seen: dict[bytes, bytes] = {}
        watched = self.watched
        for name, value in headers:  # ASGI header names are lowercase
            if name in watched:
                if name in seen:
                    raise _Unclear
                seen[name] = value
        return seen

    def _read_query(self, query_string: bytes | None, kwargs: dict[str, t.Any]) -> None:
        """The query parameters as connexion's URI parser reads them (starlette's parse of the query
        string, each scalar coerced by its type), where each is given once and not empty."""
        given: dict[str, t.Any] = {}
        if query_string:
            for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
                spec = self.query.get(name)
                if spec is None or name in given or not value:
                    raise _Unclear
                if spec.integer and not _DECIMAL.fullmatch(value):
                    raise _Unclear
                typed = int(value) if spec.integer else value
                if not spec.check.clears(typed):
                    raise _Unclear
                given[name] = typed
        for name, spec in self.query.items():
            if name in given:
                if spec.argument is not None:
                    kwargs[spec.argument] = given[name]
            elif spec.required:
                raise _Unclear
        for argument, value in self.defaults.items():
            kwargs.setdefault(argument, value)


async def _read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The whole body (None if the client went away before its end), and a receive channel that hands
    on the messages read, as they came, before whatever comes next."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, problems.replay(messages, receive)
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages), problems.replay(messages, receive)


def _parse(raw: bytes) -> t.Any:
    """The body as connexion's validator parses it (UTF-8, the charset every type the lane takes
    names); None when connexion would have to judge it."""
    try:
        text = raw.decode("utf-8")
        return None if problems.too_deep(text) else json.loads(text)
    except ValueError:  # not UTF-8, not JSON, an integer past Python's digit limit
        return None


class FastLane:
    """The lane, in front of connexion's app: a request one of its lanes takes is answered here, any
    other goes on to the app. The lanes are planned at the first request after connexion has built its
    middleware stack (at the first request it serves, the lifespan's included), when every middleware of
    it holds the API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lanes: dict[str, tuple[re.Pattern[str], list[_Lane | None]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lanes = self._lanes
        if lanes is None:
            lanes = self._lanes = plan(self.app)
            if lanes is None:  # connexion has not built its stack yet
                await self.app(scope, receive, send)
                return
        # An app mounted under a route with parameters passes them on to the handler: left to connexion.
        found = lanes.get(scope.get("method", "")) if scope["type"] == "http" and not scope.get("path_params") else None
        matched = found and found[0].fullmatch(get_route_path(scope))
        lane = matched and found[1][int(matched.lastgroup[1:])]  # type: ignore[index]
        if not lane:
            await self.app(scope, receive, send)
            return
        await lane(scope, receive, send, t.cast(re.Match[str], matched), self.app)


def wrap(app: ASGIApp) -> ASGIApp:
    """connexion's app with the lane in front (tests/conftest.py and bench/levers.py replace this to
    measure and compare the app without it)."""
    return FastLane(app)


def plan(app: ASGIApp) -> dict[str, tuple[re.Pattern[str], list[_Lane | None]]] | None:
    """Per method, `_Routing`'s expression and a lane for each of its routes that can have one; None
    while connexion's app has not built its middleware stack. No lanes at all unless `app` is
    connexion's, its stack holds one API at the root and routes it with `_Routing`."""
    connexion = getattr(app, "middleware", None)
    if not isinstance(connexion, ConnexionMiddleware):
        return {}
    if connexion.middleware_stack is None:
        return None
    chain = list(connexion.middleware_stack)  # outermost first, down to its app

    def one(kind: type) -> t.Any:
        found = [m for m in chain if isinstance(m, kind)]
        return found[0] if len(found) == 1 else None

    routing, security, validation, context, endpoint, server_error, exceptions = (one(kind) for kind in (
        operations._Routing, SecurityMiddleware, operations._RequestValidation, ContextMiddleware, AsyncASGIApp,
        ServerErrorMiddleware, ExceptionMiddleware))
    responses = one(ResponseValidationMiddleware)
    layers = [security, validation, context, endpoint, *([responses] if responses else [])]
    if routing is None or not routing._methods or server_error is None or exceptions is None or not all(
            m and list(m.apis) == [""] and len(m.apis[""]) == 1 for m in layers):
        return {}
    errors = _Errors(server_error, exceptions)

    def operations_of(middleware: t.Any) -> t.Any:
        return middleware.apis[""][0].operations if middleware is not None else {}

    lanes = {}
    for method, (expression, routes) in routing._methods.items():
        lanes[method] = (expression, [_plan_lane(method, target.operation_id, parameters, *(
            operations_of(m).get(target.operation_id) for m in (security, validation, context, endpoint, responses)),
            errors=errors, connexion=connexion) for target, parameters in routes])
    return lanes


class _NoLane(Exception):
    """This operation takes something the lane does not: its requests all go down connexion's stack."""


def _plan_lane(method: str, operation_id: str, route_parameters: list[tuple[str, str, t.Any]], security: t.Any,
               validation: t.Any, context: t.Any, app: t.Any, responses: t.Any, *, errors: _Errors,
               connexion: ConnexionMiddleware) -> _Lane | None:
    """The lane of one operation, from what connexion's middlewares made of it; None if it cannot have one."""
    if method not in METHODS or None in (security, validation, context, app):
        return None
    spec = validation._operation  # its parameters merged with the path's (operations._SpecOperation)
    function = app._fn
    arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
    sanitize = operations.SANITIZED[bool(app.pythonic_params)]
    try:
        check_credentials = _credentials_check(security)
        path, query, defaults, headers = _parameters(spec, route_parameters, arguments, has_kwargs, sanitize)
        body = _body(spec, method, validation, arguments, has_kwargs, sanitize)
    except _NoLane:
        return None
    respond = AsyncResponseDecorator(framework=StarletteFramework, jsonifier=app.jsonifier)(
        operations._awaitable(function))
    return _Lane(operation_id, context.operation, check_credentials=check_credentials, path=path, query=query,
                 defaults=defaults, headers=headers, body=body, arguments=arguments, has_kwargs=has_kwargs,
                 respond=respond, response_validation=responses, errors=errors, connexion=connexion)


def _credentials_check(security: t.Any) -> t.Callable[[bytes | None], t.Awaitable[t.Any]] | None:
    """BasicAuth's check of the Authorization header for an operation whose one requirement is HTTP
    Basic, None for one that requires nothing."""
    requirements = security.security
    if not requirements:
        return None
    if len(requirements) != 1 or len(requirements[0]) != 1:
        raise _NoLane
    ((name, _scopes),) = requirements[0].items()
    scheme = security.security_schemes.get(name) or {}
    handler = security.security_handler_factory.security_handlers.get("basic")
    if scheme.get("type") != "http" or str(scheme.get("scheme", "")).lower() != "basic" or not (
            isinstance(handler, type) and issubclass(handler, operations.BasicAuth)):
        raise _NoLane
    auth = handler()
    info = auth._resolve_func(scheme)
    check = info and auth.header_check(info)
    if check is None:
        raise _NoLane
    return check


def _parameters(spec: AbstractOperation, route_parameters: list[tuple[str, str, t.Any]], arguments: list[str],
                has_kwargs: bool, sanitize: t.Callable[[str], str]) -> tuple[
                    list[tuple[str, str, t.Any, str, problems.Compiled]], dict[str, _Query], dict[str, t.Any],
                    dict[bytes, tuple[problems.Compiled, bool]]]:
    """What the lane checks of each parameter, and the defaults connexion gives the handler for query
    parameters not given. Path parameters must be plain strings, query ones plain integers or strings
    in connexion's default style, headers strings; cookies are left to connexion."""
    in_path: dict[str, problems.Compiled] = {}
    query: dict[str, _Query] = {}
    defaults: dict[str, t.Any] = {}
    headers: dict[bytes, tuple[problems.Compiled, bool]] = {}
    for parameter in spec.parameters:
        where, name, schema = parameter["in"], parameter["name"], parameter.get("schema", {})
        check = problems.compiled(parameter.get("schema", parameter), Draft4Validator)
        kind = schema.get("type")
        if is_nullable(schema) or "content" in parameter:
            raise _NoLane
        if where == "path" and operations._plain_string(parameter):
            in_path[name] = check
        elif where == "query" and kind in ("integer", "string") and not (
                {"style", "explode", "allowReserved", "allowEmptyValue"} & parameter.keys()
                or (kind == "string" and "format" in schema)):
            argument = sanitize(name)
            takes = has_kwargs or argument in arguments
            query[name] = _Query(argument if takes else None, kind == "integer", check, bool(parameter.get("required")))
            default = parameter.get("default", schema.get("default"))
            if takes and default is not None:
                defaults[argument] = int(default) if kind == "integer" else str(default)
        elif where == "header" and kind == "string" and "format" not in schema:
            headers[name.lower().encode("latin-1")] = (check, bool(parameter.get("required")))
        else:
            raise _NoLane
    if {name for name, _group, _convertor in route_parameters} != in_path.keys():
        raise _NoLane
    path = [(name, group, convertor, sanitize(name), in_path[name]) for name, group, convertor in route_parameters]
    return path, query, defaults, headers


def _body(spec: AbstractOperation, method: str, validation: t.Any, arguments: list[str], has_kwargs: bool,
          sanitize: t.Callable[[str], str]) -> tuple[str | None, problems.Compiled] | None:
    """For an operation that takes a JSON body: the handler's name for it (None if it takes none), and
    the check connexion's body validator holds."""
    if not spec.is_request_body_defined or method == "TRACE":
        return None
    schema = spec.body_schema("application/json")
    if not schema or "application/json" not in spec.consumes or not issubclass(
            validation._validator_map["body"].get("application/json", object), problems.BodyValidator):
        raise _NoLane
    argument = sanitize(spec.body_name("application/json"))
    return (argument if has_kwargs or argument in arguments else None,
            problems.compiled(schema, Draft4RequestValidator))
