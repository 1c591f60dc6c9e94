"""Request validation that words and bounds its findings, plugged into connexion through `validator_map`
(its documented extension point): parameters and JSON bodies against the spec's schemas, each schema's
validators made once, bounds first, at most MAX_ERRORS findings, every check linear in the body's size."""

import email.message
import functools
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jsonschema.validators
from anyio import to_thread
from connexion.exceptions import BadRequestProblem, ProblemException, UnsupportedMediaTypeProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.lifecycle import ConnexionRequest
from connexion.utils import is_null, is_nullable
from connexion.validators import JSONRequestBodyValidator
from connexion.validators import parameter as connexion_parameters
from jsonschema import Draft4Validator, ValidationError
from starlette.datastructures import Headers, QueryParams
from starlette.types import Scope

from onboards.problems import SURROGATE, shorten

MAX_ERRORS = 20  # validation stops once it has found this many
MAX_NESTING = 64  # levels of arrays and objects in a request body; the spec's bodies nest a handful
# Arrays and objects in one request body: more than the largest body the spec admits holds
# (tests/test_spec.py), counted before the body is parsed, so that no body costs more than that to read.
MAX_CONTAINERS = 25_000
INLINE_BODY_BYTES = 64 * 1024  # larger bodies are parsed and validated in a worker thread, off the event loop


def invalid(errors: list[dict], more: bool = False) -> ProblemException:
    """The 400 for a request with these violations: the first in `detail`, all of them in `errors`."""
    first = errors[0]
    where = first.get("pointer", first.get("parameter", first.get("header")))
    detail = f"{where or 'the request body'} {first['message']}"
    if len(errors) > 1 or more:
        detail += " and more problems" if more else f" and {len(errors) - 1} more problem(s)"
    return ProblemException(status=400, title="Bad Request", detail=shorten(detail), ext={"errors": errors})


# Keywords that bound how much work a value can cause, and those that lead to the values inside it.
_BOUNDS = ("maxItems", "maxLength", "maxProperties")
_DESCENT = ("properties", "patternProperties", "items", "allOf", "anyOf")


def _into_additional(validator: Any, additional: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    """Into the members a schema's `additionalProperties` describes. Where it allows none, an object with
    more members than the schema names holds one it does not take: a bound, reported before the members are
    read (jsonschema's own check names every unknown member in its message, tens of thousands of them)."""
    if isinstance(additional, dict):
        yield from Draft4Validator.VALIDATORS["additionalProperties"](validator, additional, instance, schema)
    elif additional is False and validator.is_type(instance, "object") and "patternProperties" not in schema \
            and len(instance) > len(schema.get("properties", {})):
        yield ValidationError("holds members this object does not take")


def _over(json_type: str) -> Callable[..., Iterator[ValidationError]]:
    """A bound on a length checked as jsonschema checks it, without its message, which repeats the value
    (a megabyte of it): _message words the violation from the keyword."""

    def check(validator: Any, bound: int, instance: Any, _schema: dict) -> Iterator[ValidationError]:
        if validator.is_type(instance, json_type) and len(instance) > bound:
            yield ValidationError("is over its bound")

    return check


# The bounds of any alternative hold: necessary, so a value over them is invalid whichever one it meant.
_BoundsValidator = jsonschema.validators.create(
    meta_schema=Draft4Validator.META_SCHEMA, type_checker=Draft4Validator.TYPE_CHECKER,
    validators={**{k: Draft4Validator.VALIDATORS[k] for k in _DESCENT},
                **dict(zip(_BOUNDS, map(_over, ("array", "string", "object")), strict=True)),
                "oneOf": Draft4Validator.VALIDATORS["anyOf"], "additionalProperties": _into_additional})


def _bounds_first(schema: Any, made: dict[int, Any] | None = None) -> Any:
    """`schema` with its bounds before every other keyword, at every level, so that an array too long is
    found before its items are looked at; and its patterns read as ECMA-262 reads them (_ecma). A part met
    again (connexion's resolved references share parts, and a recursive schema is a cycle) is made once:
    `made` maps each part's id to its copy."""
    made = {} if made is None else made
    if isinstance(schema, list):
        return [_bounds_first(s, made) for s in schema]
    if not isinstance(schema, dict):
        return schema
    copy = made.get(id(schema))
    if copy is None:
        copy = made[id(schema)] = {}
        for keyword, value in sorted(schema.items(), key=lambda item: item[0] not in _BOUNDS):
            copy[keyword] = _keyword(keyword, value, made)
    return copy


def _keyword(keyword: str, value: Any, made: dict[int, Any]) -> Any:
    if keyword == "pattern" and isinstance(value, str):
        return _ecma(value)
    return value if keyword in ("enum", "required", "type", "example") else _bounds_first(value, made)


def _ecma(pattern: str) -> str:
    """An OpenAPI pattern is ECMA-262, where a final `$` is the end of the text; jsonschema runs it with
    Python's re, where `$` also matches before a final newline (`"a@example.com\\n"` would pass)."""
    backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))  # an odd count escapes the `$`
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and backslashes % 2 == 0 else pattern


def _as_written(pattern: str) -> str:
    """A pattern as the spec writes it, undoing _ecma: messages quote the spec."""
    return pattern[:-2] + "$" if pattern.endswith(r"\Z") else pattern


class Checks:
    """One schema's validators, made once: connexion makes a new jsonschema validator per request."""

    def __init__(self, schema: dict, kind: type[Draft4Validator]) -> None:
        self.schema = schema
        ordered = _bounds_first(schema)
        self.bounds = _BoundsValidator(ordered)
        self.full = kind(ordered, format_checker=Draft4Validator.FORMAT_CHECKER)

    def errors(self, instance: Any) -> tuple[list[ValidationError], bool]:
        """Up to MAX_ERRORS violations, and whether more were left unlooked-for. A value over a bound of the
        schema is reported alone, before any of its items is validated."""
        over = next(iter(self.bounds.iter_errors(instance)), None)
        if over is not None:
            return [over], False
        found = list(itertools.islice(self.full.iter_errors(instance), MAX_ERRORS + 1))
        return sorted(found[:MAX_ERRORS], key=lambda e: [str(p) for p in e.absolute_path]), len(found) > MAX_ERRORS


_CHECKS: dict[tuple[int, type], Checks] = {}


def checks(schema: dict, kind: type[Draft4Validator]) -> Checks:
    """The schema's Checks, kept per schema and kind. The cache holds the schema itself, so its id cannot
    be reused by another object."""
    key = (id(schema), kind)
    found = _CHECKS.get(key)
    if found is None or found.schema is not schema:
        found = _CHECKS[key] = Checks(schema, kind)
    return found


def pointer(path: Iterable[Any]) -> str:
    """An RFC 6901 JSON Pointer; a member's name over 40 characters is cut (so that no input is echoed at
    length), and a lone surrogate in one replaced, as in shorten."""
    parts = (str(p) if len(str(p)) <= 40 else str(p)[:40] + "…" for p in path)
    return SURROGATE.sub("\ufffd", "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts))[:200]


def _violations(error: ValidationError) -> Iterator[tuple[list[Any], str]]:
    """(where, what) of each violation a jsonschema error stands for: a missing member and an unknown one
    are pointed at themselves, one by one."""
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        yield from (([*path, name], "is required") for name in missing[:1] if repr(name) in error.message)
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        yield from (([*path, name], "is not a member this object takes")
                    for name in error.instance if name not in known)
    else:
        yield path, _message(error)


_TYPES = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
          "object": "an object", "array": "an array", "null": "null"}


def _kind(kinds: Any) -> str:
    return " or ".join(_TYPES.get(kind, str(kind)) for kind in (kinds if isinstance(kinds, list) else [kinds]))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# What each JSON Schema keyword's violation means, in words; `bound` is the keyword's value.
_WORDS: dict[str, Callable[[Any], str]] = {
    "type": lambda bound: f"must be {_kind(bound)}",
    "enum": lambda bound: "must be one of " + ", ".join(json.dumps(v) for v in bound),
    "maxLength": lambda bound: f"must be at most {_plural(bound, 'character')} long",
    "minLength": lambda bound: f"must be at least {_plural(bound, 'character')} long",
    "maxItems": lambda bound: f"must hold at most {_plural(bound, 'item')}",
    "minItems": lambda bound: f"must hold at least {_plural(bound, 'item')}",
    "maxProperties": lambda bound: f"must hold at most {_plural(bound, 'member')}",
    "minProperties": lambda bound: f"must hold at least {_plural(bound, 'member')}",
    "maximum": lambda bound: f"must be at most {bound}",
    "minimum": lambda bound: f"must be at least {bound}",
    "pattern": lambda bound: f"must match the pattern {_as_written(bound)}" if len(bound) <= 60
    else "is not in the expected form",
    "format": lambda bound: f"must be a valid {bound}",
    "oneOf": lambda _bound: "must match exactly one of the forms this member takes",
    "anyOf": lambda _bound: "must match one of the forms this member takes",
    "nullable": lambda _bound: "must not be null",
    "readOnly": lambda _bound: "is read-only",
}


def _message(error: ValidationError) -> str:
    """The violation in words for people, naming the bound, never echoing the value."""
    words = _WORDS.get(str(error.validator))
    if words is not None:
        return shorten(words(error.validator_value))
    return shorten(f"does not satisfy '{error.validator}'")


def _surrogates(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """The paths of the strings (members' names included) holding a lone surrogate, which no database
    stores and no JSON writer writes."""
    if isinstance(value, str):
        if SURROGATE.search(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if SURROGATE.search(key):
                yield (*path, key)
            yield from _surrogates(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _surrogates(item, (*path, index))


# An opening bracket as the signed byte 1, a closing one as -1, every other byte dropped: the running depth is
# summed in C, where a regular expression over each string and a Python loop over each bracket of a large body
# cost twice the body's parse.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")


def too_deep(text: str) -> bool:
    """Whether a JSON text nests arrays and objects over MAX_NESTING deep: parsing and validating recurse
    once a level, and near Python's recursion limit that is an error. A few linear passes over the text, in C;
    the count stops where a bracket closes what was never opened, as the parser stops there. A text with no
    more opening brackets than MAX_NESTING is not read further: it cannot nest deeper."""
    opening = text.count("[") + text.count("{")
    if opening <= MAX_NESTING:
        return False
    # Brackets inside strings are text. Inside a string a quote after an odd run of backslashes is escaped: with
    # each pair of backslashes dropped, then each escaped quote, every quote left opens or closes a string. (A
    # backslash outside a string is where the parser stops, and the count only matters up to there.)
    quoted = text.replace("\\\\", "").replace('\\"', "").split('"')
    # An unterminated string's text is the last, odd, part. A lone surrogate (never in a body read as UTF-8) is
    # kept as bytes that are no bracket.
    outside = "".join(quoted[::2]).encode("utf-8", "surrogatepass")
    # Closing brackets are not capped as opening ones are (MAX_CONTAINERS): the cut bounds the depths kept. With
    # at most `opening` brackets opened, one closing what was never opened comes within the first 2 × opening
    # + 1, and every depth before it is inside the cut.
    steps = outside.translate(_DEPTH_STEPS, _NOT_BRACKETS)[:2 * opening + 1]
    depths = list(itertools.accumulate(memoryview(steps).cast("b")))
    if -1 in depths:
        depths = depths[:depths.index(-1)]
    return max(depths, default=0) > MAX_NESTING


def _repeated_member(body: Any, objects: list[tuple[dict, str]]) -> list[dict]:
    """The violation for the first object of `objects` (as read, with a member given twice), with its pointer."""
    held, name = objects[0]
    stack: list[tuple[Any, tuple]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if value is held:
            return [{"pointer": pointer((*path, name)), "message": "is given more than once"}]
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((item, (*path, key)) for key, item in items if isinstance(item, dict | list))
    return [{"pointer": pointer((name,)), "message": "is given more than once"}]


def _first_repeated(names: Iterable[str]) -> str:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    raise ValueError("no name is repeated")


def _object_noting_repeats(objects: list[tuple[dict, str]]) -> Callable[[list[tuple[str, Any]]], dict]:
    """json's object_pairs_hook: the object, as json makes it, noting into `objects` one that names a member
    twice (json would keep the last one silently)."""

    def made(pairs: list[tuple[str, Any]]) -> dict:
        found = dict(pairs)
        if len(found) < len(pairs):
            objects.append((found, _first_repeated(name for name, _ in pairs)))
        return found

    return made


def _charset(content_type: str) -> str | None:
    """The Content-Type's charset parameter, as RFC 9110 writes parameters (connexion misses one after a
    space)."""
    message = email.message.Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    return charset if isinstance(charset, str) else None


class BodyValidator(JSONRequestBodyValidator):
    """connexion's JSON body validator, bounded: JSON is read as UTF-8 only (RFC 8259), a body without a
    Content-Type is refused, and the violations are reported with pointers, at most MAX_ERRORS of them.
    A large body is read and validated in a worker thread. `_parse` and `_validate` are the hooks connexion's
    docs (validation.rst, "Custom validators") tell a subclass to override."""

    def __init__(self, *, schema: dict, nullable: bool = False, **kwargs: Any) -> None:
        super().__init__(schema=schema, nullable=nullable, **kwargs)
        self.schema, self.nullable = schema, nullable

    async def _parse(self, stream: Any, scope: Scope) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return None
        content_type = Headers(scope=scope).get("content-type")
        if content_type is None:
            raise UnsupportedMediaTypeProblem(detail="a request body needs Content-Type: application/json")
        charset = _charset(content_type)
        if charset is not None and charset.lower().replace("-", "") != "utf8":
            raise UnsupportedMediaTypeProblem(detail=f"charset {charset[:40]!r} is not supported: "
                                                     "JSON is read as UTF-8")
        read = functools.partial(self.read_json, raw)
        return await to_thread.run_sync(read) if len(raw) > INLINE_BODY_BYTES else read()

    def read_json(self, raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestProblem(detail="request body is not valid UTF-8") from None
        if text.count("[") + text.count("{") > MAX_CONTAINERS:
            raise BadRequestProblem(detail=f"request body holds over {MAX_CONTAINERS} arrays and objects")
        if too_deep(text):
            raise BadRequestProblem(detail=f"request body nests arrays and objects over {MAX_NESTING} deep")
        repeats: list[tuple[dict, str]] = []
        try:
            body = json.loads(text, object_pairs_hook=_object_noting_repeats(repeats))
        except json.JSONDecodeError as bad:
            raise BadRequestProblem(detail=f"request body is not valid JSON: {bad.msg} at position {bad.pos}") from None
        except ValueError:  # an integer longer than Python reads (sys.get_int_max_str_digits)
            raise BadRequestProblem(detail="request body holds a number too long to read") from None
        if repeats:
            raise invalid(_repeated_member(body, repeats))
        self.check(body)
        return body

    def check(self, body: Any) -> None:
        found, more = checks(self.schema, Draft4RequestValidator).errors(body)
        violations = itertools.islice((violation for error in found for violation in _violations(error)), MAX_ERRORS)
        errors = [{"pointer": pointer(where), "message": what} for where, what in violations]
        if not errors:  # the schema's bounds hold: the walk is bounded too
            errors = [{"pointer": pointer(path), "message": "a string holds a lone surrogate (not Unicode text)"}
                      for path in itertools.islice(_surrogates(body), MAX_ERRORS)]
        if errors:
            raise invalid(errors, more)

    def _validate(self, body: Any) -> None:
        # The body was validated as it was read (read_json); here only its absence is left to judge.
        if body is None and not self.nullable:
            raise BadRequestProblem("request body must not be empty")


class ParameterValidator(connexion_parameters.ParameterValidator):
    """connexion's parameter validator, reporting every bad parameter by name (`parameter`) instead of the
    first, refusing a single-valued parameter given twice, without echoing the schema."""

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict, param_name: str | None = None) -> str | None:
        if value is None or (is_nullable(param) and is_null(value)):
            return connexion_parameters.ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        found, _more = checks(param.get("schema", param), Draft4Validator).errors(value)
        return next(what for error in found for _where, what in _violations(error)) if found else None

    def validate_request(self, request: ConnexionRequest) -> None:
        errors: list[dict] = []
        query = QueryParams(request.scope.get("query_string", b""))
        if self.strict_validation and query:
            extra = self.validate_query_parameter_list(request, security_params=self.security_query_params)
            errors += [{"parameter": shorten(name[:40]), "message": "unknown query parameter"}
                       for name in sorted(extra)]
        for param in self.parameters.get("query", []):
            if param.get("schema", {}).get("type") != "array" and len(query.getlist(param["name"])) > 1:
                errors.append({"parameter": param["name"], "message": "given more than once"})
        checks_by_place: dict[str, Callable] = {
            "query": self.validate_query_parameter, "path": self.validate_path_parameter,
            "header": self.validate_header_parameter, "cookie": self.validate_cookie_parameter}
        for where, check in checks_by_place.items():
            for param in self.parameters.get(where, []):
                message = check(param, request)
                if message:
                    errors.append({"header" if where == "header" else "parameter": param["name"],
                                   "message": shorten(message.split("\n\n", 1)[0])})
        if errors:
            raise invalid(errors[:MAX_ERRORS], len(errors) > MAX_ERRORS)


VALIDATOR_MAP = {
    "body": {"application/json": BodyValidator},
    "parameter": ParameterValidator,
}
