"""What every request must satisfy before connexion routes it: plain ASGI middlewares."""

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboards.problems import send_problem
from onboards.runtime import BodyMemory, Refusal

# Headers a request may carry once: a second copy would be read by one layer and ignored by another.
SINGLE_VALUED = (b"authorization", b"content-type", b"content-length", b"if-match", b"if-none-match", b"host",
                 b"transfer-encoding", b"x-request-id", b"x-sandbox-token")


class RequestLimits:
    """A single-valued header sent twice is a 400; a transfer coding but chunked a 501; a body whose
    Content-Length is over `max_body_bytes` a 413, before anything is read. The media type is lowercased
    and the Content-Type value trimmed (media types are case-insensitive and a field value excludes
    surrounding whitespace, RFC 9110; connexion compares them as written)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        names = [name for name, _ in scope["headers"]]
        twice = next((name for name in SINGLE_VALUED if names.count(name) > 1), None)
        if twice:
            return await send_problem(send, 400, f"the {twice.decode()} header is given more than once",
                                      errors=[{"header": twice.decode(), "message": "given more than once"}])
        headers = Headers(scope=scope)
        given = headers.get("content-type", "")
        media_type, semicolon, parameters = given.strip(" \t").partition(";")
        typed = media_type.rstrip(" \t").lower() + semicolon + parameters
        if typed != given:
            value = typed.encode("latin-1")
            scope = {**scope, "headers": [(k, value if k == b"content-type" else v) for k, v in scope["headers"]]}
        codings = headers.get("transfer-encoding")
        if codings is not None and codings.strip(" \t").lower() != "chunked":
            # uvicorn undoes only the chunked coding: a gzip body would be read as if it were plain.
            return await send_problem(send, 501, "no transfer coding but chunked is supported")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await send_problem(send, 400, "invalid Content-Length")
            if int(length) > self.limit:
                return await send_problem(send, 413, f"request body over {self.limit} bytes")
        await self.app(scope, receive, send)


class Bodies:
    """After authentication, so that no body is read for a request that is refused anyway: each request
    body holds its bytes of the app's BODY_MEMORY_BYTES (`memory`) until the request ends, however it ends
    (a Content-Length body its declared length from the start, since connexion reads it whole; a chunked
    one as its bytes arrive); a body beyond it gets 503 with Retry-After. A chunked body is read here, a
    413 as soon as its bytes pass `max_body_bytes`, and handed on with its length, which connexion needs."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, memory: BodyMemory, refusal: Callable[[str], Refusal]
                 ) -> None:
        self.app, self.limit, self.memory, self.refusal = app, max_body_bytes, memory, refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is None and "transfer-encoding" not in headers:
            return await self.app(scope, receive, send)
        held = 0
        try:
            if length is not None:  # checked by RequestLimits: digits, at most max_body_bytes
                if not self.memory.take(int(length)):
                    return await self.refuse(send)
                held = int(length)
                return await self.app(scope, receive, send)
            body = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                piece = message.get("body", b"")
                if len(body) + len(piece) > self.limit:
                    return await send_problem(send, 413, f"request body over {self.limit} bytes")
                if not self.memory.take(len(piece)):
                    return await self.refuse(send)
                held += len(piece)
                body += piece
                more = message.get("more_body", False)
            scope = {**scope, "headers": [*scope["headers"], (b"content-length", str(len(body)).encode())]}
            await self.app(scope, replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive),
                           send)
        finally:
            self.memory.give_back(held)

    async def refuse(self, send: Send) -> None:
        answer = self.refusal("body-memory")
        await send_problem(send, answer.status, answer.detail, list(answer.headers), cause=answer.cause)


class Methods:
    """A method the spec does not declare for a path gets 405 with every method the path allows, and
    OPTIONS gets 204 with that list. connexion names one method (it routes each operation as a route of
    its own), and routes a literal path's undeclared method to a templated path that also matches
    (`GET /invitations/recipient` to `GET /invitations/{id}`), where OpenAPI matches literal paths first.
    The list names HEAD beside GET and OPTIONS everywhere, since both are answered (RFC 9110 §10.2.1).
    A spec path with a trailing slash is redirected to the path without it by a relative Location
    (starlette's redirect names the host the client sent); one ending in an encoded slash is a 404."""

    def __init__(self, app: ASGIApp, *, paths: dict[str, dict]) -> None:
        """`paths`: the spec's path items by path."""
        self.app = app
        ordered = sorted(paths.items(), key=lambda pair: pair[0].count("{"))  # literal paths first
        self.paths = [(compile_path(path)[0], _answered(item)) for path, item in ordered]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if len(path) > 1 and path.endswith("/") and self.allowed(path.rstrip("/")) is not None:
                raw_path = scope.get("raw_path") or path.encode()
                if not raw_path.endswith(b"/"):
                    # An encoded slash (`/entities/%2F`) ends the decoded path only: the path without the
                    # slash would be this request again, and starlette's redirect would name the Host.
                    return await send_problem(send, 404, "no resource at this path (it ends in an encoded slash)")
                query = scope.get("query_string", b"")
                location = raw_path.rstrip(b"/") + (b"?" + query if query else b"")
                await send({"type": "http.response.start", "status": 307,
                            "headers": [(b"location", location), (b"content-length", b"0")]})
                return await send({"type": "http.response.body", "body": b""})
            allowed = self.allowed(path)
            method = scope["method"]
            if allowed is not None and method not in allowed:
                allow = ", ".join(sorted({*allowed, "OPTIONS"}))
                if method == "OPTIONS":
                    await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow.encode())]})
                    return await send({"type": "http.response.body", "body": b""})
                return await send_problem(send, 405, f"{method[:20]} is not allowed here; use {allow}",
                                          [(b"allow", allow.encode())])
        await self.app(scope, receive, send)

    def allowed(self, path: str) -> frozenset[str] | None:
        """The methods answered on the spec path `path` matches (a literal path before a template), OPTIONS
        aside; None for none."""
        return next((methods for pattern, methods in self.paths if pattern.match(path)), None)


def _answered(item: dict) -> frozenset[str]:
    """The methods a path item declares, and HEAD where it declares GET."""
    declared = {m.upper() for m in item if m in _METHODS}
    return frozenset(declared | ({"HEAD"} if "GET" in declared else set()))


_METHODS = ("get", "put", "post", "delete", "patch")


def replay(message: Message, receive: Receive) -> Receive:
    """A receive channel that yields `message` once, then whatever the client sends next."""
    pending = [message]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed

