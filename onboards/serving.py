"""How a server process runs an app: uvicorn's options and the heap left by start-up. Shared by
`onboards serve` and bench/floor.py, so the floor is measured as the service is served."""

import asyncio
import gc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from anyio import to_thread

from onboards.config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # uvicorn's own access log is off: onboards.observe writes a structured one (ACCESS_LOG).
    # On SIGTERM uvicorn stops accepting, finishes in-flight requests, then runs the lifespan
    # shutdown, which stops the outbox sender after the message in hand.
    return {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
            "timeout_graceful_shutdown": 30, "loop": settings.event_loop}


def start_worker_threads(count: int) -> None:
    """The running loop's default executor, `count` threads, for the handlers' and the key look-ups'
    database work (`asyncio.to_thread`). A hand-off to it cost 14-18 µs of CPU with 16 at once, where
    anyio's worker threads (starlette's run_in_threadpool) cost 46-51 µs: a limiter to acquire and a
    cancel scope per call. anyio's, of the same size, keeps what the libraries hand it (a file the
    docs page reads). asyncio shuts the executor down when the loop ends."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(count, thread_name_prefix="worker"))
    to_thread.current_default_thread_limiter().total_tokens = count


def freeze_heap() -> None:
    """Keeps what start-up built (the parsed spec, connexion's operations, compiled validators, models)
    out of the collector's way: a full collection walked all of it, 60-70 ms during which no request is
    answered (the 99th percentile of a GET at 64 clients, 79-85 ms at a 22 ms median), about 1 ms once
    it is frozen. Whatever is garbage already is collected first, so none of it is kept for good."""
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    """Undoes freeze_heap when the app stops: a process serving app after app (the tests) would
    otherwise keep every stopped app's cycles forever."""
    gc.unfreeze()
