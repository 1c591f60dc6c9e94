"""How a server process runs the app: uvicorn's options, its worker threads and the heap left by start-up.
Shared by `onboards serve` and bench/floor.py, so the floor is served as the service is."""

import asyncio
import gc
import heapq
import time
from http import HTTPStatus
from typing import Any

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from onboards import problems
from onboards.clients import trusted
from onboards.config import Settings
from onboards.runtime import Runtime, Serving


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # uvicorn's own access log is off: onboards.observe writes a structured one (ACCESS_LOG).
    # On SIGTERM uvicorn stops accepting, finishes in-flight requests, then runs the lifespan
    # shutdown, which stops the outbox sender after the message in hand. uvicorn's own trust of proxy headers
    # is off: onboards.clients derives the client's address from the proxies TRUSTED_PROXIES names.
    return {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
            "proxy_headers": False, "timeout_graceful_shutdown": 30, "http": "onboards.serving:HttpProtocol",
            "timeout_keep_alive": settings.keep_alive_seconds, "limit_concurrency": settings.max_connections}


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with the limits it lacks on a request's head and body: a head
    over MAX_HEADER_BYTES gets 431 (one arriving in pieces before the bytes pile up); a head not complete
    within HEADER_TIMEOUT_SECONDS of the connection (or of the previous response), or a body not complete
    within as long of its head, gets 408; each closes the connection, so slow clients cannot hold connections
    open. A client that takes none of the response bytes waiting for it for WRITE_TIMEOUT_SECONDS loses its
    connection. A peer address with MAX_CONNECTIONS_PER_CLIENT connections open gets a 429 problem for one
    more (a peer in TRUSTED_PROXIES is not capped). At MAX_CONNECTIONS, idle connections close, longest idle
    first, to make room for a new request; without enough of them, a request gets a 503 problem with
    Retry-After, a health probe (GET or HEAD /health) excepted. Its limits are the settings of the app it
    serves (the Runtime that onboards.runtime.Serving carries)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.runtime = runtime_of(self.app)
        self.settings = self.runtime.settings  # the served app's, where its limits are set
        self.head_bytes = self.body_bytes = 0
        self.refuse_when_answered = False
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        # The request being answered: behind pipelined ones, uvicorn's `cycle` is the last one parsed.
        self.answering: RequestResponseCycle | None = None
        # The concurrency limit (MAX_CONNECTIONS) is checked here (on_headers_complete), so that the 503 is a
        # problem: uvicorn's own check would answer text/plain without Retry-After.
        self.max_connections, self.limit_concurrency = self.limit_concurrency, None
        # No high-water mark above the kernel's buffer: any byte the kernel does not take pauses writing, so
        # the write clock (pause_writing) runs whenever the client stops reading, however little is left.
        transport.set_write_buffer_limits(high=0)
        # Connections are counted per peer: a trusted proxy's carry many clients (nginx keeps a pool of them),
        # whose addresses are known per request only, so the proxy's own limits (limit_conn) cap those.
        self.peer = None if self.client is None or trusted(self.client[0], self.runtime.trusted_proxies) \
            else self.client[0]
        if self.peer is not None:
            self.runtime.connections_by_peer[self.peer] += 1
            if self.runtime.connections_by_peer[self.peer] > self.settings.max_connections_per_client:
                return self.refuse_for("connections-per-client")
        self.await_head()

    def await_head(self) -> None:
        """Starts the clock for the next request's head, which a new cycle (its head complete) stops."""
        if self.head_timer is not None:
            self.head_timer.cancel()
        # Not the loop's time, which stands still while the loop handles what one poll brought: connections
        # accepted together would look idle alike.
        self.head_bytes, self.head_of, self.idle_since = 0, self.cycle, time.monotonic()
        self.head_timer = self.loop.call_later(self.settings.header_timeout_seconds, self.head_late)

    def data_received(self, data: bytes) -> None:
        self.body_bytes = 0
        super().data_received(data)
        if self.head_timer is None or self.transport.is_closing():
            return  # not waiting for a head: these bytes are a body's
        if self.cycle is not self.head_of:  # the head is complete: its clock stops
            self.head_timer.cancel()
            self.head_timer = None
            return
        # The rest of a body the app answered without reading is drained, within the head's clock: it is not
        # the next request's head.
        self.head_bytes += len(data) - self.body_bytes
        if self.head_bytes > self.settings.max_header_bytes:
            self.refuse(431, f"request line and headers over {self.settings.max_header_bytes} bytes")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self.body_bytes += len(body)

    def on_headers_complete(self) -> None:
        answer = self.refusal_for_head()
        if answer is None:
            super().on_headers_complete()
        else:  # the cycle uvicorn makes now (or queues behind pipelined ones) answers instead of the app
            app, self.app = self.app, answer
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        if not self.pipeline or self.pipeline[0][0] is not self.cycle:  # started now, not queued
            self.answering = self.cycle
        self.await_body(self.cycle)

    def refusal_for_head(self) -> Any:
        """The answer to a request whose head is complete, when not the app's: 431 or 503."""
        # data_received counts only the pieces of a head not complete yet: a head completed by the piece
        # that brings it is measured here, without a body that may follow it in the same piece.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.settings.max_header_bytes:
            return refusal(431, f"request line and headers over {self.settings.max_header_bytes} bytes")
        limit = self.max_connections
        if limit is None or self.probes_health():
            return None
        if len(self.tasks) >= limit or not self.room_made(limit):
            answer = self.runtime.refusal("connections")
            return refusal(answer.status, answer.detail, answer.headers, answer.cause)
        return None

    def probes_health(self) -> bool:
        """Whether the request is a health probe, which the connection limit never refuses: a probe that
        failed for the limit would have the service restarted for being busy."""
        return self.parser.get_method() in (b"GET", b"HEAD") and self.url.partition(b"?")[0] == b"/health"

    def room_made(self, limit: int) -> bool:
        """Whether this request fits within `limit` connections, once idle ones are closed, longest idle first;
        none is closed unless that makes enough room."""
        excess = len(self.connections) - limit + 1
        if excess <= 0:
            return True
        idle = heapq.nsmallest(excess, (other for other in self.connections if other is not self and
                                        isinstance(other, HttpProtocol) and other.idle()),
                               key=lambda other: other.idle_since)
        if len(idle) < excess:
            return False
        for other in idle:
            self.connections.discard(other)  # its connection_lost comes later: it is counted out now
            other.drop()
        return True

    def idle(self) -> bool:
        """No request in progress: none being answered or queued, no byte of the next head, no response byte
        waiting to be sent."""
        return ((self.cycle is None or self.cycle.response_complete) and not self.pipeline and not self.head_bytes
                and not self.transport.is_closing() and not self.transport.get_write_buffer_size())

    def await_body(self, cycle: RequestResponseCycle | None) -> None:
        """Starts the clock for the body of the request the app now serves; its last byte stops it."""
        self.stop_body_clock()
        if cycle is not None and cycle.more_body:
            self.body_timer = self.loop.call_later(self.settings.header_timeout_seconds, self.body_late, cycle)

    def stop_body_clock(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.stop_body_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.stop_body_clock()
        self.stop_write_clock()
        if self.peer is not None:
            self.runtime.connections_by_peer[self.peer] -= 1
            if not self.runtime.connections_by_peer[self.peer]:
                del self.runtime.connections_by_peer[self.peer]
        self.tell_client_gone()
        super().connection_lost(exc)

    def tell_client_gone(self) -> None:
        """Tells the request being answered that its client is gone, as uvicorn tells only the last request
        parsed (behind pipelined ones, another): the answer stops (starlette's streaming responses wait for
        the disconnect), and writes nothing to the closed transport (which uvloop's refuses with an
        exception)."""
        if self.answering is not None and not self.answering.response_complete:
            self.answering.disconnected = True
            self.answering.message_event.set()

    def pause_writing(self) -> None:
        """The transport holds bytes the kernel did not take: the write clock starts."""
        super().pause_writing()
        if self.write_timer is None:
            self.await_write(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        """The client took every byte waiting for it: the write clock stops."""
        super().resume_writing()
        self.stop_write_clock()

    def await_write(self, waiting: int) -> None:
        self.write_timer = self.loop.call_later(self.settings.write_timeout_seconds, self.write_late, waiting)

    def write_late(self, waiting: int) -> None:
        """A client that took some of the `waiting` bytes is given as long again; one that took none loses the
        connection. Aborted, not closed: closing would wait for the bytes to be sent, holding the slot."""
        left = self.transport.get_write_buffer_size()
        if 0 < left < waiting:
            self.await_write(left)
        else:
            self.write_timer = None
            self.drop()

    def drop(self) -> None:
        """Closes the connection at once, dropping what waits to be sent. The request being answered learns
        that its client is gone first: uvloop resumes writing before it reports the connection lost."""
        self.tell_client_gone()
        self.transport.abort()

    def stop_write_clock(self) -> None:
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def head_late(self) -> None:
        if self.cycle is self.head_of and not self.transport.is_closing():
            self.refuse(408, f"the request head did not arrive within {self.settings.header_timeout_seconds:g} s")

    def body_late(self, cycle: RequestResponseCycle) -> None:
        # An app that answered without the body has let it go; the head clock then covers what is left of it.
        # Closing wakes the app waiting for the body with a disconnect, and drops whatever it sends then.
        if cycle is self.cycle and cycle.more_body and not cycle.response_started and not self.transport.is_closing():
            self.refuse(408, f"the request body did not arrive within {self.settings.header_timeout_seconds:g} s")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses (it would send `msg` as text/plain): a problem, after
        the answers to the complete requests before those bytes (pipelined), which are being served."""
        if self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete:
            self.refuse_when_answered = True
            self.transport.pause_reading()
        else:
            self.refuse(400, INVALID)

    def on_response_complete(self) -> None:
        if self.pipeline and not self.transport.is_closing():  # uvicorn starts the oldest queued one now
            self.answering = self.pipeline[-1][0]
        super().on_response_complete()
        if self.refuse_when_answered and self.cycle is not None and self.cycle.response_complete:
            self.refuse(400, INVALID)
        elif not self.transport.is_closing() and not self.pipeline:
            self.await_head()

    def refuse_for(self, limit: str) -> None:
        """Answers the limit's refusal (onboards.runtime.Runtime.refusal) and closes the connection."""
        answer = self.runtime.refusal(limit)
        self.refuse(answer.status, answer.detail, answer.headers, answer.cause)

    def refuse(self, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = (),
               cause: str | None = None) -> None:
        body, phrase = problems.render(status, detail, cause=cause), HTTPStatus(status).phrase.encode()
        fields = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\ncontent-length: %d\r\n"
                             b"%sconnection: close\r\n\r\n%s" % (status, phrase, len(body), fields, body))
        self.transport.close()


def runtime_of(app: Any) -> Runtime:
    """The Runtime `app` carries, under the middleware uvicorn wraps an app in (each keeps the app it wraps
    as `app`)."""
    while app is not None and not isinstance(app, Serving):
        app = getattr(app, "app", None)
    if app is None:
        raise TypeError("onboards.serving.HttpProtocol serves an app of onboards.app.create_app only")
    return app.runtime


def refusal(status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = (), cause: str | None = None
            ) -> ASGIApp:
    """An ASGI app answering every request with this problem, closing the connection."""

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await problems.send_problem(send, status, detail, [*headers, (b"connection", b"close")], cause=cause)

    return refuse


INVALID = "the request is not valid HTTP/1.1"


def set_worker_threads(count: int) -> None:
    """The threads that run handlers and the key look-ups (starlette's thread pool, anyio's): `count`."""
    to_thread.current_default_thread_limiter().total_tokens = count


def freeze_heap() -> None:
    """Keeps what start-up built (the parsed spec, connexion's operations, compiled validators, models)
    out of the collector's way: a full collection would walk all of it while no request is answered, a
    pause every so often in the latency's tail (bench/README.md). What is garbage already goes first."""
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    """Undoes freeze_heap when the app stops: a process serving app after app (the tests) would
    otherwise keep every stopped app's cycles forever."""
    gc.unfreeze()
