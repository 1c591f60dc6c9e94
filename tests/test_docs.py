"""The API reference: openapi.yaml documents every operation fully, and docs/index.html (`make docs`,
Redocly's build-docs) is built from the current spec and works offline."""

import json
import re
from typing import Any

import pytest

from onboards.app import load_spec
from onboards.sandbox import load_spec as load_sandbox_spec
from onboards.specs import CHECKOUT as ROOT

SPEC = load_spec()
DOCS = ROOT / "docs" / "index.html"
SANDBOX_DOCS = ROOT / "docs" / "sandbox.html"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
REBUILD = "docs/index.html is out of date: run `make docs` and commit it"


def operations() -> list[tuple[str, dict]]:
    """("METHOD /path", operation) for every operation of the spec."""
    return [(f"{method.upper()} {path}", operation) for path, item in SPEC["paths"].items()
            for method, operation in item.items() if method in METHODS]


OPERATIONS = operations()
NAMES = [name for name, _ in OPERATIONS]


def deref(node: Any) -> Any:
    """`node` with its local $ref (and its target's, and so on) followed."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def illustrated(media: dict) -> bool:
    """A media type shows an example: its own `example`/`examples`, or a whole-value example of its
    schema (of the items, for an array), which renderers show as the sample."""
    if "example" in media or "examples" in media:
        return True
    schema = deref(media.get("schema", {}))
    if schema.get("type") == "array":
        schema = deref(schema.get("items", {}))
    return "example" in schema


def missing_examples(operation: dict) -> list[str]:
    missing = []
    body = deref(operation.get("requestBody", {}))
    missing += [f"request body ({media_type})" for media_type, media in body.get("content", {}).items()
                if not illustrated(media)]
    for status, response in operation["responses"].items():
        missing += [f"response {status} ({media_type})" for media_type, media in deref(response).get("content", {})
                    .items() if not illustrated(media)]
    return missing


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=NAMES)
def test_every_operation_has_a_summary_and_a_description(name: str, operation: dict) -> None:
    assert [field for field in ("summary", "description") if not str(operation.get(field, "")).strip()] == []


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=NAMES)
def test_every_body_of_every_operation_has_an_example(name: str, operation: dict) -> None:
    assert missing_examples(operation) == []


@pytest.mark.parametrize("name", sorted(SPEC["components"].get("responses", {})))
def test_every_component_response_has_an_example(name: str) -> None:
    content = SPEC["components"]["responses"][name].get("content", {})
    assert [media_type for media_type, media in content.items() if "example" not in media and
            "examples" not in media] == []


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=NAMES)
def test_extensions_say_so(name: str, operation: dict) -> None:
    if operation.get("x-extension"):
        assert "(Extension.)" in operation["description"]


@pytest.mark.parametrize("name", sorted(SPEC["components"].get("parameters", {})))
def test_extension_parameters_say_so(name: str) -> None:
    parameter = SPEC["components"]["parameters"][name]
    if parameter.get("x-extension"):
        assert "(Extension.)" in parameter["description"]


def embedded_definition(page: str) -> Any:
    """The API definition Redoc renders, as build-docs embedded it in the page."""
    match = re.search(r"^\s*const __redoc_definition = (.*);$", page, re.MULTILINE)
    assert match, "docs/index.html holds no Redoc definition: was it made by `make docs`?"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def page() -> str:
    assert DOCS.is_file(), "docs/index.html is missing: run `make docs`"
    return DOCS.read_text(encoding="utf-8")


def differences(spec: dict, definition: dict) -> list[str]:
    """Where `definition` differs from `spec`: top-level members, or the paths and components within."""
    found = []
    for key in sorted(spec.keys() | definition.keys()):
        mine, theirs = spec.get(key), definition.get(key)
        if mine != theirs and isinstance(mine, dict) and isinstance(theirs, dict) and key in ("paths", "components"):
            found += [f"{key} {sub}" for sub in sorted(mine.keys() | theirs.keys()) if mine.get(sub) != theirs.get(sub)]
        elif mine != theirs:
            found.append(key)
    return found


def test_the_docs_are_built_from_the_current_spec(page: str) -> None:
    assert differences(SPEC, embedded_definition(page)) == [], REBUILD


def test_the_docs_name_every_operation(page: str) -> None:
    missing = [f"{name}: {operation.get('summary')}" for name, operation in OPERATIONS
               if json.dumps(operation.get("summary", name), ensure_ascii=False)[1:-1] not in page]
    assert missing == [], REBUILD


def test_the_docs_work_offline(page: str) -> None:
    remote_tags = re.findall(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>", page, re.I)
    remote_imports = re.findall(r"""\bimport\b[^;'"]{0,200}?\bfrom\s*["'](?:https?:)?//[^"']+["']""", page)
    assert (remote_tags, remote_imports) == ([], []), "build the docs with --inlineBundle"
    assert "<script" in page and "hydrate" in page  # the renderer itself is inlined


# What a browser fetches by itself: an element's src (an HTML attribute or a JS property), a stylesheet
# or icon <link>, a CSS url() or @import. (Links the reader follows, <a href>, are not fetched.)
REMOTE_LOADS = re.compile(r"""\bsrc\s*[:=]\s*[^,;{}<>]{0,80}?["'`]?(?:https?:)?//[^"'`\s]+"""
                          r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^>]*>"""
                          r"""|\burl\(\s*["']?(?:https?:)?//[^)]*\)|@import\s+["']?(?:https?:)?//[^;]*""", re.I)


@pytest.mark.parametrize("page_file", [DOCS, SANDBOX_DOCS], ids=["index", "sandbox"])
def test_the_docs_fetch_nothing_from_the_network(page_file) -> None:
    assert REMOTE_LOADS.findall(page_file.read_text(encoding="utf-8")) == [], "run `make docs` (tools/offline_docs.py)"


@pytest.mark.parametrize("page_file", [DOCS, SANDBOX_DOCS], ids=["index", "sandbox"])
def test_the_unknown_anchor_guard_is_in_the_page(page_file) -> None:
    """The renderer answers an anchor it has no section for with its "No page at this address" view;
    tools/offline_docs.py's guard, run after it draws, takes such an address back to the top. The guard
    looks for the renderer's own words: both must be in the page."""
    page = page_file.read_text(encoding="utf-8")
    hydrate = page.index("hydrate(__redoc_definition")
    guard = page.find("toTopWhenUnknown", hydrate)
    assert guard > hydrate, "run `make docs` (tools/offline_docs.py)"
    assert page.count("No page at this address") >= 2  # the renderer's view, and the guard looking for it
    assert "location.replace(location.pathname + location.search)" in page[guard:]  # tests/test_browser.py: live


def test_the_server_serves_the_docs(client) -> None:
    response = client.get("/docs/")
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == DOCS.read_bytes()
    moved = client.get("/docs", follow_redirects=False)
    assert moved.status_code in (301, 307, 308) and moved.headers["location"].endswith("/docs/")


def test_the_sandbox_docs_are_built_from_the_current_sandbox_spec(sandbox_client) -> None:
    page = SANDBOX_DOCS.read_text(encoding="utf-8")
    assert differences(load_sandbox_spec(), embedded_definition(page)) == [], REBUILD
    served = sandbox_client.get("/docs/sandbox/")
    assert served.status_code == 200 and served.content == SANDBOX_DOCS.read_bytes()


def test_the_sandbox_docs_exist_in_sandbox_mode_only(client) -> None:
    assert client.get("/docs/sandbox/").status_code == 404
