"""One app's runtime: what `create_app` builds from its Settings and every layer reads while serving it (the
database, the limits, the key cache, the deadlines, the clocks, the metrics, the sandbox token, the outbox
sender, the connections open per client address and the memory request bodies hold). `Serving` puts it in each
request's ASGI state (`request.state.runtime`) and sets, for the request's context and the lifespan's, what the
handlers and models read there (the database, the deadline, the limits, whether clocks may run ahead); worker
threads and the outbox sender's threads inherit that context, so two apps in one process never see each other's."""

import contextlib
from collections import Counter
from collections.abc import Iterator
from contextvars import Token
from dataclasses import fields
from typing import Any, NamedTuple

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers.lifecycle import use_deadline
from models import limits
from models.accounts import use_clocks
from models.base import make_database, release, use_database
from models.invitations import use_base_url
from onboards import connexion_patches, problems
from onboards.auth import Keys
from onboards.clients import networks
from onboards.config import Settings
from onboards.mailer import OutboxSender
from onboards.metrics import Metrics

HEALTH_THREADS = 2


class Refusal(NamedTuple):
    """The problem a request or connection refused for a server limit gets."""

    status: int
    detail: str
    cause: str
    headers: tuple[tuple[bytes, bytes], ...]


class BodyMemory:
    """The bytes of request bodies the app's requests hold at once, up to `total` (BODY_MEMORY_BYTES). Only
    the event loop takes and gives back, so no lock is needed."""

    def __init__(self, total: int) -> None:
        self.total, self.held = total, 0

    def take(self, size: int) -> bool:
        """Whether `size` more bytes fit; if so they are held until given back."""
        if self.held + size > self.total:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class Runtime:
    def __init__(self, settings: Settings, *, send_outbox: bool = True) -> None:
        self.settings = settings
        self.database = make_database(settings.database_url, max_connections=settings.db_max_connections,
                                      statement_timeout=settings.db_statement_timeout_seconds,
                                      postgres_pool=connexion_patches.PostgresPool)
        self.limits = limits.Limits(**{f.name: getattr(settings, f.name) for f in fields(limits.Limits)})
        self.keys = Keys(settings.auth_cache_seconds)
        self.trusted_proxies = networks(settings.trusted_proxies)
        self.metrics = Metrics()
        self.sandbox_token = settings.sandbox_token.encode() if settings.sandbox else b""
        self.sender = OutboxSender.from_settings(settings) if send_outbox else None
        self.connections_by_peer: Counter[str] = Counter()  # counted by onboards.serving.HttpProtocol
        self.body_memory = BodyMemory(settings.body_memory_bytes)
        self._health: anyio.CapacityLimiter | None = None

    def health_limiter(self) -> anyio.CapacityLimiter:
        """The worker threads health checks take, apart from the handlers' (made on the event loop)."""
        if self._health is None:
            self._health = anyio.CapacityLimiter(HEALTH_THREADS)
        return self._health

    def refusal(self, limit: str) -> Refusal:
        """The answer to what `limit` refuses, by its stable name: `connections` (MAX_CONNECTIONS),
        `connections-per-client` (MAX_CONNECTIONS_PER_CLIENT), `body-memory` (BODY_MEMORY_BYTES), counted in the
        metrics under that name. The detail ends with when to retry, as the other limits' do."""
        settings = self.settings
        status, cause, reached = {
            "connections": (503, problems.BUSY, f"at most {settings.max_connections} connections at once "
                            "(MAX_CONNECTIONS)"),
            "connections-per-client": (429, problems.PER_CLIENT, f"at most {settings.max_connections_per_client} "
                                       "connections from one client address (MAX_CONNECTIONS_PER_CLIENT); reuse one"),
            "body-memory": (503, problems.BODY_MEMORY, f"at most {settings.body_memory_bytes} bytes of request "
                            "bodies held at once (BODY_MEMORY_BYTES)"),
        }[limit]
        self.metrics.refused(limit)
        return Refusal(status, f"{reached}: retry after 1 second", cause, ((b"retry-after", b"1"),))

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This runtime's database, deadline, limits and clocks in force in the current context."""
        tokens: list[Token[Any]] = [use_database(self.database), use_deadline(self.settings.request_timeout_seconds),
                                    limits.use(self.limits), use_clocks(self.settings.sandbox),
                                    use_base_url(self.settings.base_url)]
        try:
            yield
        finally:
            for token in reversed(tokens):
                token.var.reset(token)

    def close(self) -> None:
        """Closes the connections the database holds open (it opens new ones when used again)."""
        release(self.database)


class Serving:
    """The outermost ASGI app: `app` with `runtime` in every request's state and context."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.runtime.entered():
            if scope["type"] == "lifespan":  # its state is the server's, shared with the requests: kept as it is
                return await self.app(scope, receive, send)
            await self.app({**scope, "state": {**scope.get("state", {}), "runtime": self.runtime}}, receive, send)
