"""connexion's AsyncApp, with the work it repeats on every request done once per operation.

connexion 3.3 rebuilds each operation's handler chain on every request: `AsyncOperation.fn` is a
property that makes a new StarletteDecorator, whose wrapper then decorates the handler again (three
`functools.wraps`, one `inspect.signature` per layer) and makes a new URI parser. All of it depends on
the operation only, so here it is built once and kept; what a request needs (the request, its
parameters, its body) is still read per request, through the same connexion code.
Its HTTP Basic handler likewise inspects the verify function's signature on every request (and makes a
headers object to read one header); here, once (and from the scope).
Its request validation makes a URI parser, a parameter validator and a body validator per request, and
parses the Content-Type and matches it against the operation's media ranges; its parameter decorator
rewrites each argument's name with three regular expressions per request; here each is made once per
operation (a name once per name, a media type once per Content-Type value). Its response validation
middleware stays in the stack when responses are not validated; here it is left out. Its Swagger UI
middleware runs every request through a router of its own pages; here only a request whose path can
be one of them. Its parameter decorator reads the operation and the context through werkzeug
proxies, reads a form from every request and asks whether the handler is a coroutine function on
every request; here it is given the operation, reads a form only for an operation that takes one,
and asks once.
Each middleware's operation also appends the path's parameters to the operation's own list in the spec
they share, so an operation with parameters of its own validated the path's ones six times; here they
are merged into a list of the operation's own, as OpenAPI says (an operation's own parameter wins).
`tests/test_operations.py` fails if a connexion upgrade changes what this relies on.
"""

import asyncio
import base64
import codecs
import functools
import re
import typing as t

from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import _receive, _scope
from connexion.decorators import StarletteDecorator
from connexion.decorators.parameter import (
    CONTEXT_NAME,
    AsyncParameterDecorator,
    _get_body_argument,
    get_arguments,
    pythonic,
    sanitized,
    unwrap_decorators,
)
from connexion.exceptions import OAuthProblem, OAuthResponseProblem
from connexion.frameworks.abstract import Framework
from connexion.http_facts import FORM_CONTENT_TYPES
from connexion.lifecycle import ConnexionRequest
from connexion.middleware import routing
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import AbstractOperation, OpenAPIOperation
from connexion.security import NO_VALUE, BasicSecurityHandler
from connexion.utils import inspect_function_arguments, is_nullable
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers import runs_on_loop

BODY_VALIDATORS_KEPT = 8  # per operation, by Content-Type value: the client chooses it


# Names come from the spec (strict validation turns unknown query parameters away); bounded anyway.
SANITIZED = {False: functools.lru_cache(maxsize=1024)(sanitized), True: functools.lru_cache(maxsize=1024)(pythonic)}


class _Parameters(AsyncParameterDecorator):
    """connexion's parameter decorator, given its operation: connexion's reads the operation and the
    context through werkzeug proxies (some five calls a read), and reads a form from every request,
    whether the operation takes one or not. The arguments come from connexion's `get_arguments`."""

    def __init__(self, operation: AbstractOperation, *, framework: type[Framework],
                 pythonic_params: bool | None) -> None:
        super().__init__(framework=framework, pythonic_params=pythonic_params)
        self.operation = operation
        self.sanitize_fn = SANITIZED[bool(pythonic_params)]

    def __call__(self, function: t.Callable) -> t.Callable:
        arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
        operation, sanitize = self.operation, self.sanitize_fn
        takes_form = any(media in FORM_CONTENT_TYPES for media in operation.consumes)
        takes_body = operation.is_request_body_defined and operation.method.upper() != "TRACE"
        only_path = _only_path(operation, takes_form)

        async def get_all(request: ConnexionRequest, content_type: str) -> dict:
            wants_body = has_kwargs or sanitize(operation.body_name(content_type)) in arguments
            return get_arguments(
                operation, path_params=request.path_params,
                query_params=request.query_params if request.scope.get("query_string") else {},
                body=await request.get_body() if wants_body else None,
                files=await request.files() if takes_form else {}, arguments=arguments, has_kwargs=has_kwargs,
                sanitize=sanitize, content_type=request.mimetype)

        async def get_path_and_body(request: ConnexionRequest, content_type: str) -> dict:
            found = {sanitize(name): value for name, value in request.scope.get("path_params", {}).items()}
            if takes_body and (has_kwargs or sanitize(operation.body_name(content_type)) in arguments):
                found.update(_get_body_argument(await request.get_body(), operation=operation, arguments=arguments,
                                                has_kwargs=has_kwargs, sanitize=sanitize,
                                                content_type=request.mimetype))
            return found

        get = get_path_and_body if only_path else get_all

        @functools.wraps(function)
        async def wrapper(request: ConnexionRequest) -> t.Any:
            kwargs = await get(request, request.content_type)
            kwargs = {sanitize(name): value for name, value in kwargs.items()}
            context = request.context  # what connexion's context proxy stands for
            kwargs.update((name, value) for name, value in context.items() if has_kwargs or name in arguments)
            if CONTEXT_NAME in arguments:
                kwargs[CONTEXT_NAME] = context
            return await function(**kwargs)

        return wrapper


def _only_path(operation: AbstractOperation, takes_form: bool) -> bool:
    """Whether connexion's `get_arguments` comes down to the path parameters and the body argument: no
    query or form parameters (it passes no header or cookie parameter on), and path parameters that are
    plain strings, which connexion's parser and its `make_type` hand back as the router read them."""
    return not takes_form and all(
        parameter["in"] in ("header", "cookie") or (parameter["in"] == "path" and _plain_string(parameter))
        for parameter in operation.parameters)


def _plain_string(parameter: dict) -> bool:
    schema = parameter.get("schema", {})
    return schema.get("type") == "string" and "format" not in schema and not is_nullable(schema)


class _OnceDecorator(StarletteDecorator):
    """connexion's decorator chain for one operation, built once."""

    def __init__(self, operation: AbstractOperation, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self.operation = operation

    @property
    def _sync_async_decorator(self) -> t.Callable[[t.Callable], t.Callable]:
        return _awaitable

    def decorate(self, function: t.Callable) -> t.Callable:
        function = _Parameters(self.operation, framework=self.framework, pythonic_params=self.pythonic_params)(
            self._sync_async_decorator(function))
        return self._response_decorator_cls(framework=self.framework, jsonifier=self.jsonifier)(function)

    def __call__(self, function: t.Callable) -> t.Callable:
        decorated = self.decorate(function)
        parser = (self.uri_parser_class or self.operation.uri_parser_class)(
            self.operation.parameters, self.operation.body_definition())

        @functools.wraps(function)
        async def wrapper() -> t.Any:
            # The request's scope and receive themselves, where connexion gives it werkzeug proxies of
            # them: each of the request's reads of its scope would go through the proxy again.
            request = self.framework.get_request(uri_parser=parser, scope=_scope.get(), receive=_receive.get())
            return await decorated(request)

        return wrapper


def _awaitable(function: t.Callable) -> t.Callable:
    """The handler as a coroutine function: a plain one runs in the worker thread pool, or on the loop
    where handlers.runs_on_loop says so. connexion asks which it is on every request; here once."""
    if asyncio.iscoroutinefunction(function):
        return function
    if runs_on_loop(getattr(function, "writes", True)):

        @functools.wraps(function)
        async def on_loop(*args: t.Any, **kwargs: t.Any) -> t.Any:
            return function(*args, **kwargs)

        return on_loop

    @functools.wraps(function)
    async def in_thread(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return await asyncio.to_thread(function, *args, **kwargs)  # onboards.serving.start_worker_threads

    return in_thread


class _Operation(AsyncOperation):
    spec: AbstractOperation  # what connexion reads through its `operation` proxy inside a request

    @classmethod
    def from_operation(cls, operation: AbstractOperation, *, pythonic_params: bool,
                       jsonifier: t.Any) -> "_Operation":
        made = t.cast(_Operation, super().from_operation(operation, pythonic_params=pythonic_params,
                                                          jsonifier=jsonifier))
        made.spec = operation
        return made

    @functools.cached_property
    def fn(self) -> t.Callable:
        return _OnceDecorator(self.spec, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(self._fn)


class _Api(AsyncApi):
    def make_operation(self, operation: AbstractOperation) -> AsyncOperation:
        return _Operation.from_operation(operation, pythonic_params=self.pythonic_params,
                                         jsonifier=self.jsonifier)


class _ASGIApp(AsyncASGIApp):
    api_cls = _Api


class _Validation(RequestValidationOperation):
    """connexion's request validation, its validators made once per operation."""

    @functools.cached_property
    def _parameter_validator(self) -> t.Any:
        parameters = self._operation.parameters
        uri_parser = self._operation.uri_parser_class(parameters, self._operation.body_definition())
        return self._validator_map["parameter"](parameters, uri_parser=uri_parser,
                                                strict_validation=self.strict_validation,
                                                security_query_params=self.security_query_params)

    @functools.cached_property
    def _media(self) -> dict[bytes | None, t.Any]:
        return {}

    def _body_validator(self, headers: list[tuple[bytes, bytes]]) -> t.Any:
        """connexion's body validator for the request's media type and charset, which must be one the
        operation consumes; None where it validates no body. Kept per Content-Type value: connexion
        parses the header and matches it against the operation's media ranges on every request."""
        raw = next((value for name, value in headers if name == b"content-type"), None)  # ASGI names: lowercase
        if raw in self._media:
            return self._media[raw]
        mime_type, encoding = self.extract_content_type(headers)
        self.validate_mime_type(mime_type)
        schema = self._operation.body_schema(mime_type)
        make = self._validator_map["body"].get(mime_type) if schema else None
        validator = make and make(
            schema=schema, required=self._operation.request_body.get("required", False),
            nullable=is_nullable(self._operation.body_definition(mime_type)), encoding=encoding,
            strict_validation=self.strict_validation,
            uri_parser=self._operation.uri_parser_class(self._operation.parameters,
                                                        self._operation.body_definition()))
        if len(self._media) < BODY_VALIDATORS_KEPT and _known_charset(encoding):
            self._media[raw] = validator
        return validator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # connexion's order: parameters, then the media type, then the body.
        self._parameter_validator.validate(scope)
        validator = self._body_validator(scope["headers"])
        if validator:
            receive, scope = await validator.wrap_receive(receive, scope=scope)
        await self.next_app(scope, receive, send)


def _known_charset(encoding: str) -> bool:
    """Whether Python can decode this charset: the body validator refuses any other with a 415, and a
    refused one is not worth a place among the validators kept."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        return False
    return True


class _ValidationApi(RequestValidationAPI):
    def make_operation(self, operation: AbstractOperation) -> RequestValidationOperation:
        return _Validation(self.next_app, operation=operation, strict_validation=self.strict_validation,
                           validator_map=self.validator_map)


class _RequestValidation(RequestValidationMiddleware):
    api_cls = _ValidationApi


def _prefixes(routes: list[BaseRoute], under: str = "") -> t.Iterator[str]:
    """What every path one of these routes can match starts with."""
    for route in routes:
        path = under + getattr(route, "path", "").split("{", 1)[0]
        inner = getattr(route, "routes", None)
        if inner:
            yield from _prefixes(inner, path)
        else:
            yield path


class _SwaggerUI(SwaggerUIMiddleware):
    """connexion's Swagger UI and spec pages, its router tried only where a path can be one of them."""

    _pages: tuple[str, ...] = ()

    def add_api(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().add_api(*args, **kwargs)
        self._pages = tuple(_prefixes(self.router.routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if scope["type"] == "http" and not path.startswith(self._pages):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Routing(RoutingMiddleware):
    """connexion's routing, each method's routes tried in one regular expression. connexion's router
    tries a mount, then each route in turn (some 30 calls for `GET /onboards/{id}`); here a request
    whose method and path one route of an API at the root matches fully goes straight to that route's
    operation, the first in the router's order, its path parameters converted by the route's own
    convertors. Anything else (no route, a method no route of the path takes, a mounted base path) goes
    through connexion's router as before."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self._methods: _Routes = {}

    def add_api(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().add_api(*args, **kwargs)
        self._methods = _by_method(self.router)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._methods.get(scope.get("method", "")) if scope["type"] == "http" else None
        matched = found and found[0].fullmatch(get_route_path(scope))
        if not matched:
            await super().__call__(scope, receive, send)
            return
        operation, parameters = found[1][int(matched.lastgroup[1:])]  # type: ignore[index]
        path_params = {**scope.get("path_params", {}),
                       **{name: convertor.convert(matched[group]) for name, group, convertor in parameters}}
        routing._scope.set(dict(scope))  # as connexion's __call__ does: the scope its operation passes on
        await operation({**scope, "path_params": path_params}, receive, send)


# Per method: the expression, and per route its operation and its parameters (name, group, convertor).
_Routes = dict[str, tuple[re.Pattern[str], list[tuple[ASGIApp, list[tuple[str, str, t.Any]]]]]]


def _by_method(router: Router) -> _Routes:
    """Per method: one expression of every route that takes it, in order (a group `r<i>` per route,
    its parameters renamed `r<i>_<name>`), and each route's operation and parameters. Empty unless the
    router holds just one API, at the root, whose routes are plain."""
    mounts = router.routes
    if len(mounts) != 1 or not isinstance(mounts[0], Mount) or mounts[0].path != "":
        return {}
    routes = mounts[0].routes
    if not all(isinstance(route, Route) and route.methods for route in routes):
        return {}
    methods: dict[str, tuple[list[str], list[tuple[ASGIApp, list[tuple[str, str, t.Any]]]]]] = {}
    for route in t.cast(list[Route], routes):
        for method in sorted(t.cast(set[str], route.methods)):
            alternatives, targets = methods.setdefault(method, ([], []))
            index = len(targets)
            pattern = route.path_regex.pattern.removeprefix("^").removesuffix("$").replace("(?P<", f"(?P<r{index}_")
            alternatives.append(f"(?P<r{index}>{pattern})")
            targets.append((route.app, [(name, f"r{index}_{name}", convertor)
                                        for name, convertor in route.param_convertors.items()]))
    return {method: (re.compile("|".join(alternatives)), targets)
            for method, (alternatives, targets) in methods.items()}


MIDDLEWARES = [{SwaggerUIMiddleware: _SwaggerUI, RequestValidationMiddleware: _RequestValidation,
                RoutingMiddleware: _Routing}.get(m, m)
               for m in ConnexionMiddleware.default_middlewares]


class BasicAuth(BasicSecurityHandler):
    """connexion's HTTP Basic check, with what it works out on every request worked out once: whether
    the info function takes `required_scopes` or `request` (ours takes neither). The header is read
    from the request's scope, where connexion makes a headers object for it."""

    def _get_verify_func(self, basic_info_func: t.Callable) -> t.Callable:
        check = self.header_check(basic_info_func)
        if check is None:
            return super()._get_verify_func(basic_info_func)

        async def verify(request: ConnexionRequest) -> t.Any:
            # ASGI header names are lowercase; the first Authorization header, as connexion reads it.
            return await check(next((value for name, value in request.scope["headers"] if name == b"authorization"),
                                    None))

        return verify

    def header_check(self, basic_info_func: t.Callable) -> t.Callable[[bytes | None], t.Awaitable[t.Any]] | None:
        """The check of an Authorization header's value: the info function's token info, NO_VALUE
        without Basic credentials, or connexion's error. None when the info function takes
        `required_scopes` or `request`: connexion's own check serves it."""
        arguments, has_kwargs = inspect_function_arguments(basic_info_func)
        if has_kwargs or {self.required_scopes_kw, self.request_kw} & set(arguments):
            return None

        async def check(header: bytes | None) -> t.Any:
            if not header:
                return NO_VALUE
            try:
                auth_type, user_pass = header.decode("latin-1").split(maxsplit=1)
            except ValueError:
                raise OAuthProblem(detail="Invalid authorization header") from None
            if auth_type.lower() != "basic":
                return NO_VALUE
            try:
                username, password = base64.b64decode(user_pass).decode("latin1").split(":", 1)
            except ValueError:  # not base64 (binascii.Error), or no colon
                raise OAuthProblem(detail="Invalid authorization header") from None
            token_info = basic_info_func(username, password)
            while asyncio.iscoroutine(token_info):  # as connexion: a wrapped function may answer one
                token_info = await token_info
            if token_info is NO_VALUE:
                return NO_VALUE
            if token_info is None:
                raise OAuthResponseProblem(detail="Provided authorization is not valid")
            return token_info

        return check


SECURITY_MAP = {"basic": BasicAuth}


class _SpecOperation(OpenAPIOperation):
    def __init__(self, method: str, path: str, operation: dict, resolver: t.Any,
                 path_parameters: list[dict] | None = None, **kwargs: t.Any) -> None:
        own = operation.get("parameters", [])
        declared = {(p["name"], p["in"]) for p in own}
        merged = [*own, *(p for p in path_parameters or [] if (p["name"], p["in"]) not in declared)]
        super().__init__(method, path, {**operation, "parameters": merged}, resolver, **kwargs)


class App(AsyncApp):
    """AsyncApp whose operations are decorated once (see the module's docstring). Whether responses
    are validated is chosen here, for every API: without it, connexion's response validation
    middleware would only look each request's operation up and pass it on."""

    def __init__(self, import_name: str, *, validate_responses: bool = False, middlewares: list[type] | None = None,
                 **kwargs: t.Any) -> None:
        middlewares = [m for m in (MIDDLEWARES if middlewares is None else middlewares)
                       if validate_responses or m is not ResponseValidationMiddleware]
        super().__init__(import_name, **{"middlewares": middlewares, **kwargs}, validate_responses=validate_responses)
        # AsyncApp makes its inner app before anything is added to it; swap in ours while it is empty.
        self._middleware_app = _ASGIApp()
        self.middleware.app = self._middleware_app

    def add_api(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if "validate_responses" in kwargs:
            raise TypeError("validate_responses is chosen when the App is made")
        api = super().add_api(*args, **kwargs)
        # Every middleware makes its operations with the class the specification names.
        self.middleware.apis[-1].specification.operation_cls = _SpecOperation
        return api
