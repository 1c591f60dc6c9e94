"""The fast path of request validation (onboards.problems.Compiled) never clears what jsonschema, the
spec's own validator, refuses: checked on every request body and parameter schema of the spec."""

import re
from typing import Any

import fastjsonschema
import pytest
from connexion.json_schema import Draft4RequestValidator
from connexion.spec import Specification
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator

from onboards.app import load_spec
from onboards.problems import Compiled

SPEC = Specification.load(load_spec())


def request_schemas() -> list[tuple[str, dict, type[Draft4Validator]]]:
    """(where, schema, the jsonschema validator connexion judges it with) for every body and parameter."""
    found = []
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for param in [*operation.get("parameters", []), *item.get("parameters", [])]:
                found.append((f"{method} {path} {param['in']} {param['name']}", param["schema"], Draft4Validator))
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                found.append((f"{method} {path} body {media}", content["schema"], Draft4RequestValidator))
    return found


def vocabulary(schema: Any) -> tuple[set[str], set[Any]]:
    """The member names and the values a schema mentions (enum members, examples, patterns' literals)."""
    names: set[str] = set()
    values: set[Any] = set()
    if isinstance(schema, dict):
        names |= set(schema.get("properties", {}))
        values |= {v for v in schema.get("enum", []) if not isinstance(v, (dict, list))}
        if isinstance(schema.get("example"), (str, int, float, bool)):
            values.add(schema["example"])
        for value in schema.values():
            inner_names, inner_values = vocabulary(value)
            names, values = names | inner_names, values | inner_values
    elif isinstance(schema, list):
        for item in schema:
            inner_names, inner_values = vocabulary(item)
            names, values = names | inner_names, values | inner_values
    return names, values


def near_misses(values: set[Any]) -> st.SearchStrategy[Any]:
    """Strings at the edges of the spec's rules: its own values, ids one off in length or alphabet,
    a trailing newline (Python's `$` matches before it), NUL, non-ASCII digits."""
    strings = sorted(v for v in values if isinstance(v, str)) or ["x"]
    edits = st.sampled_from([lambda s: s, lambda s: s + "\n", lambda s: s[:-1], lambda s: s + "0",
                             lambda s: s.upper(), lambda s: "\u0660" + s[1:], lambda s: s + "\x00", lambda s: " " + s])
    return st.builds(lambda s, edit: edit(s), st.sampled_from(strings), edits)


def guided(schema: Any, values: set[Any]) -> st.SearchStrategy[Any]:
    """Instances shaped by the schema, each part valid or nearly: objects with some of their members
    (and now and then one more), strings from the pattern or the spec's own values, numbers at the bounds."""
    if not isinstance(schema, dict):
        return leaves(values)
    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator in schema:
            return st.one_of(*(guided(s, values) for s in schema[combinator]), leaves(values))
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), near_misses(values))
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        members = schema.get("properties", {})
        return st.one_of(st.fixed_dictionaries({}, optional={name: guided(s, values) for name, s in members.items()})
                         .flatmap(lambda found: st.dictionaries(st.text(max_size=6), leaves(values), max_size=1)
                                  .map(lambda extra: {**extra, **found})), leaves(values))
    if kind == "array":
        return st.one_of(st.lists(guided(schema.get("items", {}), values), max_size=schema.get("maxItems", 5) + 1),
                         leaves(values))
    if kind == "string" and "pattern" in schema:
        return st.one_of(st.from_regex(schema["pattern"]), near_misses(values))
    if kind == "integer":
        bounds = [b + d for b in (schema.get("minimum", 0), schema.get("maximum", 100)) for d in (-1, 0, 1)]
        return st.one_of(st.sampled_from(bounds), st.sampled_from([float(b) for b in bounds]), leaves(values))
    return leaves(values)


def leaves(values: set[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
        st.from_regex(re.compile(r"[^@\s]{1,5}@[^@\s]{1,5}"), fullmatch=True), near_misses(values))


def instances(schema: dict) -> st.SearchStrategy[Any]:
    """Instances the schema guides, and any JSON made of its member names and values."""
    names, values = vocabulary({k: v for k, v in schema.items() if k != "components"})
    keys = st.one_of(st.sampled_from(sorted(names)), st.text(max_size=8)) if names else st.text(max_size=8)
    anything = st.recursive(leaves(values), lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=len(names) + 2)), max_leaves=12)
    return st.one_of(guided(schema, values), anything)


@pytest.mark.parametrize(("where", "schema", "kind"), request_schemas(), ids=[w for w, _, _ in request_schemas()])
def test_the_fast_check_clears_nothing_jsonschema_refuses(where: str, schema: dict,
                                                          kind: type[Draft4Validator]) -> None:
    compiled = Compiled(schema, kind)
    cleared = []

    @given(instances(schema))
    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def agrees(instance: Any) -> None:
        if compiled.clears(instance):
            cleared.append(instance)
            assert compiled.full.is_valid(instance), f"{where}: cleared {instance!r}"

    agrees()
    assert cleared, f"{where}: no instance was cleared, so nothing was compared"


def test_the_fast_check_leaves_values_it_is_stricter_about_to_jsonschema() -> None:
    object_id = next(s for w, s, _ in request_schemas() if w == "get /onboards/{id} path id")
    compiled = Compiled(object_id, Draft4Validator)
    assert compiled.clears("5fd4371e940df5a34a3888b2")
    assert not compiled.clears("5fd4371e940df5a34a3888b2\n")  # jsonschema's `$` admits it; the request decides
    nullable = Compiled({"type": "string", "nullable": True}, Draft4RequestValidator)
    assert not nullable.clears(None) and nullable.full.is_valid(None)


def test_a_schema_with_a_format_is_left_to_jsonschema() -> None:
    compiled = Compiled({"type": "object", "properties": {"at": {"type": "string", "format": "date-time"}}},
                        Draft4RequestValidator)
    assert not compiled.clears({"at": "2023-11-07T05:31:56Z"})
    plain = Compiled({"type": "object", "properties": {"format": {"type": "string"}}}, Draft4RequestValidator)
    assert plain.clears({"format": "x"})


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "^x(?!$)"},  # fastjsonschema's `\\Z` would clear "x\n", which jsonschema refuses
    {"type": "string", "pattern": "^[$]x"},
    {"type": "object", "patternProperties": {"^a$b": {"type": "string"}}},
    {"type": "object", "dependencies": {"a": {"properties": {"at": {"format": "date-time"}}}}},
], ids=["lookahead", "class", "pattern-properties", "dependencies"])
def test_a_schema_the_two_could_judge_apart_is_left_to_jsonschema(schema: dict) -> None:
    assert Compiled(schema, Draft4RequestValidator)._fast is None


def test_why_a_lookaround_is_left_to_jsonschema() -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "string", "pattern": "^x(?!$)"}
    fastjsonschema.compile(schema)("x\n")  # passes: its `\Z` inside the lookahead turns the rule round
    assert not Draft4Validator(schema).is_valid("x\n")


def test_a_fast_check_that_fails_leaves_the_verdict_to_jsonschema(monkeypatch) -> None:
    compiled = Compiled({"type": "string"}, Draft4Validator)

    def broken(_value: object) -> None:
        raise RecursionError

    monkeypatch.setattr(compiled, "_fast", broken)
    assert not compiled.clears("x") and compiled.full.is_valid("x")
