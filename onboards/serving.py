"""How a server process runs an app: uvicorn's options and the heap left by start-up. Shared by
`onboards serve` and bench/floor.py, so the floor is measured as the service is served."""

import gc
from typing import Any

from onboards.config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # uvicorn's own access log is off: onboards.observe writes a structured one (ACCESS_LOG).
    # On SIGTERM uvicorn stops accepting, finishes in-flight requests, then runs the lifespan
    # shutdown, which stops the outbox sender after the message in hand.
    return {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
            "timeout_graceful_shutdown": 30, "loop": settings.event_loop}


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
