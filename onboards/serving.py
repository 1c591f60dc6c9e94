"""How a server process runs the app: uvicorn's options, its worker threads and the heap left by start-up.
Shared by `onboards serve` and bench/floor.py, so the floor is served as the service is."""

import gc
from typing import Any

from anyio import to_thread

from onboards.config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # uvicorn's own access log is off: onboards.observe writes a structured one (ACCESS_LOG).
    # On SIGTERM uvicorn stops accepting, finishes in-flight requests, then runs the lifespan
    # shutdown, which stops the outbox sender after the message in hand.
    return {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
            "timeout_graceful_shutdown": 30}


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
