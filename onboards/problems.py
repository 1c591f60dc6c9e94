"""RFC 9457 problem responses for every error, and the request checks connexion leaves open."""

import json
import logging
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import fastjsonschema
from connexion import AsyncApp
from connexion.exceptions import BadRequestProblem, ProblemException, UnsupportedMediaTypeProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem
from connexion.utils import is_null, is_nullable
from connexion.validators import JSONRequestBodyValidator
from connexion.validators import parameter as connexion_parameters
from jsonschema import Draft4Validator, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.base import DATABASE_UNAVAILABLE, DomainError

log = logging.getLogger("onboards")

MAX_DETAIL = 300
MAX_ERRORS = 20
_QUOTED = re.compile(r"'([^']{40})[^']+'")
DRAFT_4 = "http://json-schema.org/draft-04/schema#"


class Compiled:
    """One schema's validators, made once: connexion makes a new jsonschema validator for every request
    and parameter, but each schema is its operation's for the app's lifetime.

    fastjsonschema's code, generated from the schema, clears a valid instance in about a microsecond
    where jsonschema takes 15-20. jsonschema stays the judge of whatever it does not clear, and words the
    errors: fastjsonschema refuses a few values jsonschema allows (its `$` ends the string, it knows no
    `nullable`), never the other way round (tests/test_validation.py checks that on every request
    schema of the spec). A schema where they could differ the other way is left to jsonschema
    (_left_to_jsonschema).
    """

    def __init__(self, schema: dict, kind: type[Draft4Validator]) -> None:
        self.schema = schema
        self.full = kind(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
        own = {k: v for k, v in schema.items() if k != "components"}
        self._fast = None if _left_to_jsonschema(schema) else fastjsonschema.compile(
            {**own, "$schema": DRAFT_4}, use_default=False, use_formats=False, detailed_exceptions=False)

    def clears(self, instance: Any) -> bool:
        """Whether the fast check proves `instance` valid (False: ask `full`)."""
        if self._fast is None:
            return False
        try:
            self._fast(instance)
        except Exception:  # whatever stops the fast check, jsonschema judges the value
            return False
        return True


_DOLLAR = re.compile(r"(?<!\\)\$")  # an unescaped `$`, as fastjsonschema finds it to make it `\Z`


def _left_to_jsonschema(schema: Any) -> bool:
    r"""Whether `schema` or a schema inside it has what the fast check does not judge as jsonschema
    does: a `format` (they check formats apart), or a pattern whose `$` fastjsonschema's `\Z` would
    make other than stricter (one not at the end, or any inside a lookaround). `components`, which
    connexion puts beside a body's schema with its references already resolved, does not count."""
    if not isinstance(schema, dict):
        return False
    patterns = [schema["pattern"]] if isinstance(schema.get("pattern"), str) else []
    patterns += list(schema.get("patternProperties") or {})
    if "format" in schema or any("(?" in p or _DOLLAR.search(p.removesuffix("$")) for p in patterns):
        return True
    inner = [schema.get(k) for k in ("items", "additionalProperties", "not", "additionalItems")]
    inner += [s for k in ("allOf", "anyOf", "oneOf", "items") if isinstance(schema.get(k), list) for s in schema[k]]
    inner += [s for k in ("properties", "patternProperties", "definitions", "dependencies")
              for s in (schema.get(k) or {}).values()]
    return any(_left_to_jsonschema(s) for s in inner)


_COMPILED: dict[tuple[int, type], Compiled] = {}


def compiled(schema: dict, kind: type[Draft4Validator]) -> Compiled:
    """The schema's Compiled, kept per schema and kind. The cache holds the schema itself, so its id
    cannot be reused by another object."""
    key = (id(schema), kind)
    cached = _COMPILED.get(key)
    if cached is None or cached.schema is not schema:
        cached = _COMPILED[key] = Compiled(schema, kind)
    return cached


MAX_NESTING = 64  # levels of arrays and objects in a request body; the spec's bodies nest a handful
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def too_deep(text: str) -> bool:
    """Whether a JSON text nests arrays and objects over MAX_NESTING deep. Parsing and validating
    recurse once a level, and near Python's recursion limit (some 960 levels) that was a 500. Counted
    level by level only in a text that holds that many brackets at all."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_NESTING:
            return True
    return False


def shorten(text: str) -> str:
    """A message safe to send back: quoted input cut to 40 characters, the whole to MAX_DETAIL."""
    text = _QUOTED.sub(lambda m: f"'{m.group(1)}…'", str(text))
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def problem_response(status: int, detail: str, headers: dict | None = None,
                     errors: list[dict] | None = None, title: str | None = None) -> ConnexionResponse:
    detail = shorten(detail)
    ext: dict[str, Any] = {"error": detail}
    if errors:
        ext["errors"] = errors
    return problem(status=status, title=title or HTTPStatus(status).phrase, detail=detail,
                   headers=headers, ext=ext)


class BodyValidator(JSONRequestBodyValidator):
    """connexion's JSON body validator, reporting every violation (pointer + message) in short words,
    and answering 400 for a body that is not UTF-8."""

    @property
    def _compiled(self) -> Compiled:
        return compiled(self._schema, Draft4RequestValidator)

    async def _parse(self, stream: Any, scope: Scope) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return None
        try:
            text = raw.decode(self._encoding)
        except LookupError:  # the client's charset names no text encoding Python knows
            raise UnsupportedMediaTypeProblem(detail=f"charset {self._encoding!r} is not supported") from None
        except UnicodeDecodeError:
            raise BadRequestProblem(detail=f"request body is not valid {self._encoding}") from None
        if too_deep(text):
            raise BadRequestProblem(detail=f"request body nests arrays and objects over {MAX_NESTING} deep")
        try:
            return json.loads(text)
        except json.JSONDecodeError as bad:
            raise BadRequestProblem(detail=f"request body is not valid JSON: {bad.msg} at position {bad.pos}") from None
        except ValueError:  # an integer longer than Python reads (sys.get_int_max_str_digits)
            raise BadRequestProblem(detail="request body holds a number too long to read") from None

    def _validate(self, body: Any) -> dict | None:
        if not self._nullable and body is None:
            raise BadRequestProblem("request body must not be empty")
        checks = self._compiled
        if checks.clears(body):
            return None
        found = sorted(checks.full.iter_errors(body), key=lambda e: list(e.absolute_path))
        if not found:
            return None
        errors = [{"pointer": _pointer(e.absolute_path), "message": _message(e)} for e in found]
        raise _invalid(errors, f"{errors[0]['message']} (at {errors[0]['pointer'] or '/'})")


def _pointer(path: Iterable[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)[:200]


def _message(error: ValidationError) -> str:
    """jsonschema's message, without the offending value when that value is not short."""
    value = repr(error.instance)
    if len(value) <= 40:
        return shorten(error.message)
    if error.validator in ("required", "additionalProperties", "dependencies"):
        return shorten(error.message.replace(value, "the object"))
    return shorten(f"value does not satisfy '{error.validator}': {error.validator_value!r}"
                   if not isinstance(error.validator_value, (dict, list)) else
                   f"value does not satisfy '{error.validator}'")


class ParameterValidator(connexion_parameters.ParameterValidator):
    """connexion's parameter validator, reporting every bad parameter (pointer `query/<name>`,
    `path/<name>`, `header/<name>`) instead of the first, without echoing the schema."""

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict, param_name: str | None = None) -> str | None:
        # connexion's, with compiled validators instead of a deep copy and a new validator per request.
        if value is None or (is_nullable(param) and is_null(value)):
            return connexion_parameters.ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        checks = compiled(param.get("schema", param), Draft4Validator)
        if checks.clears(value):
            return None
        try:
            checks.full.validate(value)
        except ValidationError as exception:
            return str(exception)
        return None

    def validate_request(self, request: ConnexionRequest) -> None:
        errors = []
        # No query string, no query parameters: connexion would parse and resolve an empty one.
        has_query = bool(request.scope.get("query_string"))
        if self.strict_validation and has_query:
            extra = self.validate_query_parameter_list(request, security_params=self.security_query_params)
            errors += [{"pointer": shorten(f"query/{name[:40]}"), "message": "unknown query parameter"}
                       for name in sorted(extra)]
        checks = {"query": self.validate_query_parameter if has_query else self._absent_query_parameter,
                  "path": self.validate_path_parameter, "header": self.validate_header_parameter,
                  "cookie": self.validate_cookie_parameter}
        for where, check in checks.items():
            for param in self.parameters.get(where, []):
                message = check(param, request)
                if message:
                    errors.append({"pointer": f"{where}/{param['name']}",
                                   "message": shorten(message.split("\n\n", 1)[0])})
        if errors:
            raise _invalid(errors, f"{errors[0]['pointer']}: {errors[0]['message']}")

    def _absent_query_parameter(self, param: dict, _request: ConnexionRequest) -> str | None:
        return self.validate_parameter("query", None, param)


def _invalid(errors: list[dict], first: str) -> ProblemException:
    """The 400 for a request with these violations: the `first` in `detail`, up to MAX_ERRORS in `errors`."""
    detail = first if len(errors) == 1 else f"{first} and {len(errors) - 1} more problem(s)"
    return ProblemException(status=400, title="Bad Request", detail=shorten(detail),
                            ext={"errors": errors[:MAX_ERRORS]})


VALIDATOR_MAP = {
    "body": {"application/json": BodyValidator, "*/*json": BodyValidator},
    "parameter": ParameterValidator,
}


class Routes:
    """The methods each path of the spec allows. A literal path wins over a template that also
    matches (`/invitations/source` before `/invitations/{id}`), as OpenAPI prescribes. One regular
    expression holds every path, in that order, so a request's path is matched once."""

    def __init__(self, spec: dict) -> None:
        paths = sorted(spec["paths"].items(), key=lambda pair: pair[0].count("{"))
        self.methods = [sorted(m.upper() for m in item if m in ("get", "put", "post", "delete", "patch"))
                        for _, item in paths]
        alternatives = ("(" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + ")" for path, _ in paths)
        self.pattern = re.compile("^(?:" + "|".join(alternatives) + ")$")

    def allowed(self, path: str) -> list[str] | None:
        found = self.pattern.match(path)
        return None if found is None else self.methods[found.lastindex - 1]  # type: ignore[operator]


def install(app: AsyncApp) -> None:
    async def on_http_error(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = 'Basic realm="onboards"'
        errors = None
        if isinstance(exc, ProblemException):
            errors = (exc.ext or {}).get("errors")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail else HTTPStatus(exc.status_code).phrase
        # jsonschema appends the whole schema and value after a blank line: keep the first part.
        detail = detail.split("\n\n", 1)[0]
        if exc.status_code == 401:
            detail = "authentication failed"
        return problem_response(exc.status_code, detail, headers=headers, errors=errors)

    async def on_domain_error(_request: ConnexionRequest, exc: DomainError) -> ConnexionResponse:
        return problem_response(exc.status, str(exc), title=exc.title)

    async def on_database_error(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.error("database unavailable: %r", exc)
        return problem_response(503, "database unavailable", headers={"Retry-After": "1"})

    async def on_unexpected(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.exception("unexpected error", exc_info=exc)
        return problem_response(500, "internal error")

    app.add_error_handler(HTTPException, on_http_error)
    app.add_error_handler(ProblemException, on_http_error)
    app.add_error_handler(DomainError, on_domain_error)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_error_handler(unavailable, on_database_error)
    app.add_error_handler(Exception, on_unexpected)


class Guard:
    """What connexion leaves open, before it parses anything: a method the spec does not declare
    gets 405 with the path's full `Allow` list, and OPTIONS answers with that list; a media type is
    lowercased; bodies over
    `limit` bytes get 413, at once when Content-Length says so. A chunked body (no Content-Length,
    which connexion would take for no body at all) is read up to the limit and handed on with its
    length."""

    def __init__(self, app: ASGIApp, spec: dict, limit: int) -> None:
        self.app, self.routes, self.limit = app, Routes(spec), limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        allowed = self.routes.allowed(scope["path"])
        method = scope["method"]
        if allowed is not None and method not in allowed and not (method == "HEAD" and "GET" in allowed):
            allow = ", ".join(allowed)
            if method == "OPTIONS":
                return await _send(send, 204, b"", [(b"allow", allow.encode())])
            return await _send_problem(send, 405, f"{method} is not allowed here; use {allow}",
                                       [(b"allow", allow.encode())])
        headers = dict(scope["headers"])
        media_type, semicolon, parameters = headers.get(b"content-type", b"").partition(b";")
        if media_type != media_type.lower():
            # Media types are case-insensitive (RFC 9110) but connexion compares them as written: it
            # let `Application/JSON` through unvalidated and handed the handler bytes (a 500).
            typed = media_type.lower() + semicolon + parameters
            scope = {**scope, "headers": [(k, typed if k == b"content-type" else v) for k, v in scope["headers"]]}
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _send_problem(send, 400, "invalid Content-Length")
            if int(length) > self.limit:
                return await _send_problem(send, 413, f"request body over {self.limit} bytes")
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await _send_problem(send, 413, f"request body over {self.limit} bytes")
            if not message.get("more_body", False):
                break
        scope = {**scope, "headers": [*scope["headers"], (b"content-length", str(len(body)).encode())]}
        await self.app(scope, replay([{"type": "http.request", "body": bytes(body), "more_body": False}], receive),
                       send)


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel that yields `messages` once, then whatever the client sends next."""
    pending = iter(messages)

    async def replayed() -> Message:
        return next(pending, None) or await receive()

    return replayed


async def _send_problem(send: Send, status: int, detail: str, headers: list | None = None) -> None:
    body = problem_response(status, detail).body.encode()
    await _send(send, status, body, [(b"content-type", b"application/problem+json"), *(headers or [])])


async def _send(send: Send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
