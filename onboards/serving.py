"""How a server process runs the app: uvicorn's options, its worker threads and the heap left by start-up.
Shared by `onboards serve` and bench/floor.py, so the floor is served as the service is."""

import asyncio
import gc
from typing import Any

from anyio import to_thread
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from onboards.config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # uvicorn's own access log is off: onboards.observe writes a structured one (ACCESS_LOG).
    # On SIGTERM uvicorn stops accepting, finishes in-flight requests, then runs the lifespan
    # shutdown, which stops the outbox sender after the message in hand.
    return {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
            "timeout_graceful_shutdown": 30, "http": "onboards.serving:HttpProtocol",
            "timeout_keep_alive": settings.keep_alive_seconds, "limit_concurrency": settings.max_connections}


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with the limits it lacks on a request's head: over
    MAX_HEADER_BYTES the client gets 431 and the connection closes, before the bytes pile up; a head not
    complete within HEADER_TIMEOUT_SECONDS of the connection (or of the previous response) gets 408 and
    the connection closes, so slow clients cannot hold connections open. Configured from the environment
    (uvicorn makes the protocol, and starts worker processes afresh)."""

    settings: Settings | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if HttpProtocol.settings is None:
            HttpProtocol.settings = Settings.from_env()
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self._await_head()

    def _await_head(self) -> None:
        """Starts the clock for the next request's head, which a new cycle (its head complete) stops."""
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_bytes, self.head_of = 0, self.cycle
        self.head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_late)

    @property
    def limits(self) -> Settings:
        return HttpProtocol.settings or Settings()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_timer is None or self.transport.is_closing():
            return  # not waiting for a head: these bytes are a body's
        if self.cycle is not self.head_of:  # the head is complete: its clock stops
            self.head_timer.cancel()
            self.head_timer = None
            return
        self.head_bytes += len(data)
        if self.head_bytes > self.limits.max_header_bytes:
            self._refuse(431, b"Request Header Fields Too Large")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        super().connection_lost(exc)

    def _head_late(self) -> None:
        if self.cycle is self.head_of and not self.transport.is_closing():
            self._refuse(408, b"Request Timeout")

    def _refuse(self, status: int, reason: bytes) -> None:
        body = reason + b"\n"
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()


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
