"""One module per tag of openapi.yaml, one function per operation; helpers they share: responses, ETags
and pages. Where their work runs is handlers.lifecycle's (unit_of_work, imported from here too)."""

import hashlib
import re
from collections.abc import Callable
from typing import Any

import peewee
from connexion import request
from connexion.context import scope
from starlette.responses import Response

from handlers.lifecycle import unit_of_work as unit_of_work
from models.base import VersionChanged, page, to_json


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # A finished response, so that connexion passes it on as it is; with problem+json documented beside
    # JSON, connexion could not choose the media type itself.
    return Response(to_json(body), status, headers, media_type="application/json")


def etag(version: int) -> str:
    return f'"v{version}"'


def _header(name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in scope["headers"] if key == name), None)


def if_match() -> set[int] | None:
    """The versions an If-Match header accepts; None when absent or `*` (then any version does). If-Match
    compares strongly (RFC 9110): a weak tag (`W/"v3"`), like any value that is no ETag of ours, accepts
    none."""
    header = _header(b"if-match")
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip() for tag in header.split(","))
    return {int(tag[2:-1]) for tag in tags if re.fullmatch(r'"v\d{1,9}"', tag)}


def _digest_tag(payload: bytes) -> str:
    return f'"{hashlib.blake2b(payload, digest_size=12).hexdigest()}"'


def if_match_digest(current: Callable[[], dict]) -> None:
    """For a resource whose ETag is a digest of its representation: a 412 unless an If-Match header is
    absent, `*`, or names the current one (strong comparison). `current` makes the representation, only
    when a header asks for the comparison."""
    header = _header(b"if-match")
    held = [] if header is None or header.strip() == "*" else [tag.strip() for tag in header.split(",")]
    if held and _digest_tag(to_json(current())) not in held:
        raise VersionChanged("it has changed since it was read (If-Match)")


def resource(body: dict, status: int = 200, version: int | None = None) -> Response:
    """One resource, with a strong ETag: its version where it keeps one (If-Match takes it), else a digest
    of its representation. A GET whose If-None-Match names it (weak comparison, RFC 9110) gets 304."""
    payload = to_json(body)
    tag = etag(version) if version is not None else _digest_tag(payload)
    seen = _header(b"if-none-match") if scope["method"] in ("GET", "HEAD") else None
    if seen is not None and (seen.strip() == "*" or tag in (t.strip().removeprefix("W/") for t in seen.split(","))):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(payload, status, {"ETag": tag}, media_type="application/json")


def versioned(model: Any, status: int = 200) -> Response:
    """A model that keeps a version (flows, onboards): its JSON, tagged by that version."""
    return resource(model.as_json(), status, model.version)


PAGE_BYTES = 4 * 1024 * 1024  # a list page ends early past this much JSON (docs/hostile.md)


def paged(query: "peewee.ModelSelect[Any]", render: Callable[[Any], dict], *, limit: int, after_id: str | None = None,
          before_id: str | None = None, sort: str = "asc", chunk: int | None = None,
          prepare: Callable[[list[Any]], None] | None = None, dicts: bool = False) -> Response:
    """A list response: up to `limit` rows of `query` in id order (models.base.page) as a plain array, each
    `render`ed, with the number of rows of `query` in X-Total-Count and a relative Link to the next page
    while more remain. The page ends early once it
    holds PAGE_BYTES of JSON (always after one item at least). `chunk` bounds the rows read at once, for
    models whose rows can be large; `prepare` sees each batch of rows before they are rendered (to read
    what they refer to in one query). With `dicts`, `render` gets each row's values by field name (page's
    `dicts`), not a model instance."""
    items: list[bytes] = []
    size, more = 2, False
    while not more and len(items) < limit:
        found = page(query, limit=min(chunk or limit, limit - len(items)), after_id=after_id, before_id=before_id,
                     sort=sort, dicts=dicts)
        if prepare is not None:
            prepare(found.items)
        for row in found.items:
            item = to_json(render(row))
            if items and size + len(item) + 1 > PAGE_BYTES:
                more = True
                break
            items.append(item)
            size += len(item) + 1
            row_id = row["id"] if dicts else row.id
            after_id, before_id = (after_id, row_id) if sort == "desc" else (row_id, before_id)
        else:
            more = found.more and len(items) == limit
            if not found.more:
                break
    # LeadConduit's lists return every item; a client can tell from the total that this one did not.
    headers = {"X-Total-Count": str(query.count())}
    if more and items:
        cursor = {"before_id": before_id} if sort == "desc" else {"after_id": after_id}
        # Relative: a URL built from the request's Host header would point wherever the client said.
        following = request.url.include_query_params(**cursor)
        headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return Response(b"[" + b",".join(items) + b"]", 200, headers, media_type="application/json")
