"""`make bench-levers`: what each of the service's speed levers saves, measured in one process.

The app is called directly through ASGI (no sockets, no uvicorn), one request at a time, in variants
that each undo one lever, beside the floor (bench/floor.py) and the service with every lever. The
variants take turns in rounds of BENCH_LEVERS_REQUESTS requests (200), BENCH_LEVERS_ROUNDS times (12);
each figure is the process's CPU per request in its least disturbed round, so the noise of a shared
machine weighs on all variants alike. Every answer must be 200 (PUT alternates two real status
changes). SQLite with `make bench`'s 1 k data set (bench/dataset.py), as its load buyer (the key
cached, as in production): the list is a page of 100. The lever that only
shows under concurrency (WORKER_THREADS) is measured by `make bench`.

Run: python -m bench.levers [get,put,list]
"""

import asyncio
import base64
import importlib
import json
import os
import pkgutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import connexion
from connexion.validators import JSONRequestBodyValidator
from connexion.validators import parameter as connexion_parameters
from starlette.types import ASGIApp, Message

import handlers
from bench import dataset
from models.base import bind
from models.migrations import migrate
from onboards import app as service
from onboards import problems
from onboards.config import Settings

STATUSES = ("failed", "in_progress")  # real changes, each allowed after the other (as in bench/wrk.lua)


Patch = tuple[Any, str, Any]  # (object, attribute, value)


@contextmanager
def patched(patches: list[Patch]) -> Iterator[None]:
    """Sets the attributes for the duration; class attributes are saved and restored as defined
    (a staticmethod stays one)."""
    saved = [(target, name, vars(target)[name] if isinstance(target, type) else getattr(target, name))
             for target, name, _ in patches]
    for target, name, value in patches:
        setattr(target, name, value)
    try:
        yield
    finally:
        for target, name, value in reversed(saved):
            setattr(target, name, value)


def as_tuple(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> tuple:
    """What the handlers answered before: a tuple connexion turns into a response per request."""
    return body, status, {"Content-Type": "application/json", **(headers or {})}


def variants() -> dict[str, tuple[list[Patch], list[Patch]]]:
    """Name → (patches while the app is built, patches while it serves): each undoes one lever."""
    handler_modules = [importlib.import_module(f"handlers.{module.name}")
                       for module in pkgutil.iter_modules(handlers.__path__)]
    handler_modules = [m for m in handler_modules if getattr(m, "respond", None) is handlers.respond]
    return {
        "service (every lever)": ([], []),
        "- decorated once per operation": ([(service, "App", connexion.AsyncApp)], []),
        "- basic-auth signature inspected once": ([(service, "SECURITY_MAP", None)], []),
        "- validators compiled once": ([], [
            (problems.ParameterValidator, "validate_parameter",
             vars(connexion_parameters.ParameterValidator)["validate_parameter"]),
            (problems.BodyValidator, "_validator", vars(JSONRequestBodyValidator)["_validator"])]),
        "- finished responses": ([], [(module, "respond", as_tuple) for module in handler_modules]),
    }


class Caller:
    """Requests sent straight into an ASGI app as the data set's load buyer."""

    def __init__(self, app: ASGIApp, auth: bytes, onboard_id: str, invitation_id: str) -> None:
        self.app, self.auth, self.onboard_id, self.invitation_id = app, auth, onboard_id, invitation_id

    async def call(self, method: str, path: str, query: bytes = b"", body: bytes = b"") -> int:
        headers = [(b"host", b"bench"), (b"authorization", self.auth)]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        statuses = []

        async def receive() -> Message:
            if pending:
                return pending.pop()
            await asyncio.Event().wait()  # no disconnect while the app answers
            raise AssertionError

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await self.app(scope, receive, send)
        return statuses[0]

    async def op(self, op: str, i: int) -> int:
        if op == "get":
            return await self.call("GET", f"/onboards/{self.onboard_id}")
        if op == "list":
            return await self.call("GET", "/onboards", b"limit=100")
        body = {"invitation_id": self.invitation_id, "status": STATUSES[i % 2]}
        return await self.call("PUT", f"/onboards/{self.onboard_id}", body=json.dumps(body).encode())


async def measure(callers: dict[str, tuple[Caller, list[Patch]]], ops: list[str], requests: int,
                  rounds: int) -> None:
    for op in ops:
        best: dict[str, float] = {}
        for name, (caller, serving) in callers.items():  # warm-up, and each variant answers right
            with patched(serving):
                for i in range(50):
                    status = await caller.op(op, i)
            if status != 200:
                raise SystemExit(f"{name}: {op} answered {status}")
        for _ in range(rounds):
            for name, (caller, serving) in callers.items():
                with patched(serving):
                    started = time.process_time()
                    answers = [await caller.op(op, i) for i in range(requests)]
                    spent = (time.process_time() - started) / requests * 1000
                if set(answers) != {200}:
                    raise SystemExit(f"{name}: {op} answered {sorted(set(answers))}")
                best[name] = min(best.get(name, spent), spent)
        service_ms = best["service (every lever)"]
        print(f"{op}: CPU ms per request, least disturbed of {rounds} rounds of {requests}")
        for name, ms in best.items():
            print(f"  {name:40} {ms:6.3f}   vs service {ms / service_ms:5.2f}   vs floor {ms / best['floor']:5.2f}")


def main() -> None:
    ops = (sys.argv[1] if len(sys.argv) > 1 else "get,put,list").split(",")
    folder = tempfile.mkdtemp(prefix="onboards-levers-")
    settings = Settings.from_env({}, database_url=f"sqlite:///{folder}/levers.db", log_level="WARNING",
                                 access_log=False)
    bind(settings.database_url)
    migrate()
    data = dataset.load(1000)
    dataset.reset_for_put(data)
    onboard_id, invitation_id = data.onboards[0]
    auth = b"Basic " + base64.b64encode(f"API:{data.api_key}".encode())

    def caller(app: ASGIApp) -> Caller:
        return Caller(app, auth, onboard_id, invitation_id)

    callers: dict[str, tuple[Caller, list[Patch]]] = {}
    for name, (building, serving) in variants().items():
        with patched(building):
            callers[name] = (caller(service.create_app(settings, send_outbox=False)), serving)
    os.environ["DATABASE_URL"] = settings.database_url  # the floor reads its settings at import
    from bench import floor

    callers["floor"] = (caller(floor.create_app()), [])
    asyncio.run(measure(callers, ops, int(os.environ.get("BENCH_LEVERS_REQUESTS", "200")),
                        int(os.environ.get("BENCH_LEVERS_ROUNDS", "12"))))


if __name__ == "__main__":
    main()
