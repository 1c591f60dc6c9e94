"""`make bench-levers`: what each of the service's speed levers saves, measured in one process.

The app is called directly through ASGI (no sockets, no uvicorn), one request at a time, in variants
that each undo one lever, beside the floor (bench/floor.py) and the service with every lever. The
variants take turns in rounds of BENCH_LEVERS_REQUESTS requests (200), BENCH_LEVERS_ROUNDS times (12);
each figure is the process's CPU per request in its least disturbed round, so the noise of a shared
machine weighs on all variants alike. That noise still moves these figures by some 10 %, so two more
processes count what no other load can move: each variant's function calls per request (every thread,
Python and C), and, where valgrind is installed, its machine instructions per request (callgrind, every
thread, the process's own work: the database engine included, the kernel not), the steady stand-in for
CPU time. The calls process also counts each variant's SQL statements per request and says whether
they are the floor's, statement for statement (order aside): where they are, the database does the same work for
both, and the figures here are the whole difference. Every answer must be a success (PUT alternates
two real status changes; each POST accepts a fresh invitation, made before its round starts).
`make bench`'s 1 k data set (bench/dataset.py), as its load buyer (its key verified once and cached for the run):
the list is a page of 100. SQLite by default; BENCH_LEVERS_DATABASE=postgresql runs the same on a
throw-away PostgreSQL database (BENCH_POSTGRES_URL, as `make bench`), where CPU and instructions are
this process's, the client side (the server's CPU per request is `make bench`'s). With
BENCH_LEVERS_REFERENCES_ONLY=1, only the service, FastAPI and the floor run (3 apps instead of 25).
The lever that only shows under concurrency (WORKER_THREADS) is measured by `make bench`.

Run: python -m bench.levers [get,put,list,post]
"""

import asyncio
import importlib
import itertools
import json
import logging
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import connexion
import connexion.context
import orjson
import peewee
from connexion.decorators.main import ASGIDecorator
from connexion.decorators.parameter import AsyncParameterDecorator, pythonic, sanitized
from connexion.json_schema import Draft4RequestValidator
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import OpenAPIOperation
from connexion.validators import parameter as connexion_parameters
from jsonschema import Draft4Validator
from starlette.responses import Response
from starlette.types import ASGIApp, Message

import handlers
import handlers.onboards as handlers_onboards
import models
import models.base as models_base
from bench import dataset, run
from models.base import Prepared
from models.onboards import Onboard
from onboards import app as service
from onboards import fastlane, operations, problems
from onboards.config import Settings
from tests.postgres import unreachable

STATUSES = ("failed", "in_progress")  # real changes, each allowed after the other (as in bench/wrk.lua)
# The key cached for the whole run: at callgrind's pace a 5 s cache would expire inside the windows and
# add look-ups to some variants' counts and not others'.
KEY_CACHE_SECONDS = 3600
SUCCESS = {"get": 200, "list": 200, "put": 200, "post": 201}


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


def objects(body: Any) -> Any:
    """The body as Python objects: a list page comes written as JSON already (an orjson.Fragment, which
    only orjson can write), so the stand-ins below read it back first; on the list, their rows overstate
    what the lever saves by that read."""
    return orjson.loads(orjson.dumps(body)) if isinstance(body, orjson.Fragment) else body


def with_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """What the handlers answered before orjson: the body written by the standard library's json."""
    return Response(json.dumps(objects(body)), status, headers, media_type="application/json")


def strftime(value: datetime | None) -> str | None:
    """RFC 3339 as written before: by strftime."""
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def as_tuple(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> tuple:
    """What the handlers answered before: a tuple connexion turns into a response per request."""
    return objects(body), status, {"Content-Type": "application/json", **(headers or {})}


SQLITE_OBJECT = models_base.Members.sqlite_object  # taken before a variant patches it


def bound_object(members: models_base.Members) -> peewee.Node:
    """Members.sqlite_object as written before the page index: its constants bound, not in the SQL."""
    return SQLITE_OBJECT(members).node


class Uncompiled(problems.Compiled):
    """What connexion makes for every request: a new jsonschema validator, no fast path."""

    def __init__(self, schema: dict, kind: type[Draft4Validator]) -> None:
        self.schema, self.full, self._fast = schema, kind(schema, format_checker=Draft4Validator.FORMAT_CHECKER), None


class Proxied:
    """A context variable's stand-in whose get() answers connexion's werkzeug proxy of it."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    def get(self) -> Any:
        return self.proxy


def variants() -> dict[str, tuple[list[Patch], list[Patch]]]:
    """Name → (patches while the app is built, patches while it serves): each undoes one lever."""

    def connexions(middleware: type) -> list[Any]:
        return [middleware if issubclass(m, middleware) else m for m in operations.MIDDLEWARES]

    tags = [importlib.import_module(f"handlers.{module.name}") for module in pkgutil.iter_modules(handlers.__path__)]
    handler_modules = [handlers, *(m for m in tags if getattr(m, "respond", None) is handlers.respond)]
    model_modules = [importlib.import_module(f"models.{module.name}")
                     for module in pkgutil.iter_modules(models.__path__)]
    return {
        "service (every lever)": ([], []),
        "- fast lane": ([(fastlane, "wrap", lambda app: app)], []),
        "- connexion's AsyncApp (App's levers)": ([(service, "App", connexion.AsyncApp)], []),
        "- path parameters merged once": ([(operations, "_SpecOperation", OpenAPIOperation)], []),
        "- basic auth worked out once": ([(service, "SECURITY_MAP", None)], []),
        "- validators compiled once": ([], [
            (problems.ParameterValidator, "validate_parameter",
             vars(connexion_parameters.ParameterValidator)["validate_parameter"]),
            (problems.BodyValidator, "_compiled", property(lambda v: Uncompiled(v._schema, Draft4RequestValidator)))]),
        "- fast validation path (fastjsonschema)": ([], [(problems.Compiled, "clears", lambda _self, _value: False)]),
        # Model levers: the floor shares them (it runs the same models), so they lower both.
        "- prepared queries": ([], [(Prepared, "rows", lambda prepared, *args: list(prepared.build(*args))),
                                    (Prepared, "values", lambda prepared, *args: list(prepared.build(*args).tuples())),
                                    (Prepared, "count", lambda prepared, *args: prepared.build(*args).execute())]),
        "- list written from its columns (Members)": ([], [(handlers_onboards, "MEMBERS", Onboard.as_json)]),
        # Its constants bound, the page's json_object is no longer the index's expression: SQLite writes it
        # again for each row. Pages prepared with the lever are put aside for the variant's own.
        "- SQLite page JSON read from its index": ([], [
            (models_base.Members, "sqlite_object", bound_object),
            (models_base, "_PAGES", {})]),
        "- model rows filled at once": ([], [(models_base._ModelRows, "all", lambda rows, cursor: list(
            peewee.ModelObjectCursorWrapper(cursor, rows.model, rows.select, rows.constructor)))]),
        "- finished responses": ([], [(module, "respond", as_tuple) for module in handler_modules]),
        "- orjson (json.dumps)": ([], [(module, "respond", with_json) for module in handler_modules]),
        "- rfc3339 by isoformat (strftime)": ([], [
            (module, "rfc3339", strftime) for module in model_modules if getattr(module, "rfc3339", None)]),
        "- routing by one expression per method": ([(operations, "MIDDLEWARES", connexions(RoutingMiddleware))], []),
        "- arguments of path-only operations": ([], [(operations, "_only_path", lambda _operation, _form: False)]),
        "- request validators made once": (
            [(operations, "MIDDLEWARES", connexions(RequestValidationMiddleware))], []),
        "- media type kept per Content-Type": ([], [(operations._Validation, "_media", property(lambda _: {}))]),
        "- response validation middleware only when on": (
            [(operations, "ResponseValidationMiddleware", object)], []),
        "- Swagger UI router only for its pages": ([(operations, "MIDDLEWARES", connexions(SwaggerUIMiddleware))], []),
        # While serving: the handlers are decorated at their first request.
        "- argument names rewritten once": ([], [(operations, "SANITIZED", {False: sanitized, True: pythonic})]),
        "- parameters read from the operation": ([], [
            (operations._Parameters, "__call__", vars(AsyncParameterDecorator)["__call__"])]),
        "- coroutine function asked once": ([], [
            (operations._OnceDecorator, "_sync_async_decorator", vars(ASGIDecorator)["_sync_async_decorator"])]),
        "- request reads its scope, not a proxy": ([], [(operations, "_scope", Proxied(connexion.context.scope)),
                                                       (operations, "_receive", Proxied(connexion.context.receive))]),
    }


class Caller:
    """Requests sent straight into an ASGI app as the data set's load buyer."""

    def __init__(self, app: ASGIApp, data: dataset.DataSet) -> None:
        self.app, self.data = app, data
        self.auth = run.basic_auth(data).encode()
        self.onboard_id, self.invitation_id = data.onboards[0]
        self.fresh: Iterator[str] = iter(())  # pending invitations, one for each POST

    def ready(self, op: str, requests: int) -> None:
        """Makes what the next `requests` requests of `op` need (outside any measured window)."""
        if op == "post":
            self.fresh = iter(dataset.add_invitations(self.data, requests))

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
        if op == "post":
            return await self.call("POST", "/onboards", body=json.dumps({"invitation_id": next(self.fresh)}).encode())
        body = {"invitation_id": self.invitation_id, "status": STATUSES[i % 2]}
        return await self.call("PUT", f"/onboards/{self.onboard_id}", body=json.dumps(body).encode())


async def answer_all(caller: Caller, serving: list[Patch], name: str, op: str, requests: int) -> None:
    """Sends the requests (made ready by `caller.ready`); each must succeed."""
    with patched(serving):
        answers = [await caller.op(op, i) for i in range(requests)]
    if set(answers) != {SUCCESS[op]}:
        raise SystemExit(f"{name}: {op} answered {sorted(set(answers))}")


async def warm_up(caller: Caller, serving: list[Patch], name: str, op: str, requests: int = 20) -> None:
    caller.ready(op, requests)
    await answer_all(caller, serving, name, op, requests)


async def cpu_per_request(callers: dict[str, tuple[Caller, list[Patch]]], op: str, requests: int,
                          rounds: int) -> dict[str, float]:
    """Each variant's CPU ms per request in its least disturbed round."""
    best: dict[str, float] = {}
    for name, (caller, serving) in callers.items():
        await warm_up(caller, serving, name, op, 50)
    for _ in range(rounds):
        for name, (caller, serving) in callers.items():
            caller.ready(op, requests)
            started = time.process_time()
            await answer_all(caller, serving, name, op, requests)
            spent = (time.process_time() - started) / requests * 1000
            best[name] = min(best.get(name, spent), spent)
    return best


CALLS = itertools.count()  # next() on it is atomic: safe from every thread
counting = False


def count_call(_frame: Any, event: str, _arg: Any) -> None:
    if counting and event in ("call", "c_call"):
        next(CALLS)


class Statements(logging.Handler):
    """The SQL statements peewee sends (it logs each one at DEBUG), while listening; a savepoint's
    random name written as `sp`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sent: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "peewee":  # not its pool's lines
            sql = record.msg[0] if isinstance(record.msg, tuple) else str(record.msg)
            self.sent.append(re.sub(r'SAVEPOINT "s[0-9a-f]+"', 'SAVEPOINT "sp"', sql))

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Peewee's log at DEBUG, to this handler alone (the app's own handlers would write every line)."""
        log = logging.getLogger("peewee")
        level, propagate = log.level, log.propagate
        log.addHandler(self)
        log.setLevel(logging.DEBUG)
        log.propagate = False
        try:
            yield
        finally:
            log.removeHandler(self)
            log.setLevel(level)
            log.propagate = propagate


async def calls_per_request(callers: dict[str, tuple[Caller, list[Patch]]], op: str) -> dict[str, Any]:
    """Each variant's function calls (Python and C) per request, in every thread: the machine's noise
    does not touch this figure, so it shows a lever's effect where CPU time cannot. Then, in a window of
    their own (logging them costs calls), its SQL statements per request, and whether they are the
    floor's, statement for statement (order aside)."""
    global counting
    calls: dict[str, float] = {}
    sent: dict[str, list[str]] = {}
    for name, (caller, serving) in callers.items():
        await warm_up(caller, serving, name, op)
        caller.ready(op, 100)
        counting, before = True, next(CALLS)
        await answer_all(caller, serving, name, op, 100)
        counting, after = False, next(CALLS)
        calls[name] = (after - before - 1) / 100
        caller.ready(op, 100)
        statements = Statements()
        with statements.listening():
            await answer_all(caller, serving, name, op, 100)
        sent[name] = sorted(statements.sent)
    return {"calls": calls, "statements": {name: len(sql) / 100 for name, sql in sent.items()},
            "as_floor": {name: sql == sent["floor"] for name, sql in sent.items()}}


def callgrind(command: str) -> None:
    """Sends a command to the valgrind running this process; it has acted when this returns."""
    subprocess.run(["callgrind_control", command, str(os.getpid())], check=True, capture_output=True)


async def instruction_windows(callers: dict[str, tuple[Caller, list[Patch]]], op: str, requests: int) -> None:
    """Callgrind counts from zero for each variant's requests, and for none (the cost of the window itself)."""
    for index, (name, (caller, serving)) in enumerate(callers.items()):
        await warm_up(caller, serving, name, op)
        caller.ready(op, requests)
        callgrind("--zero")
        await answer_all(caller, serving, name, op, requests)
        callgrind(f"--dump={op}-{index}")
    callgrind("--zero")
    callgrind(f"--dump={op}-empty")


def instructions_per_request(ops: list[str], names: list[str], requests: int) -> dict[str, dict[str, float]] | None:
    """Each variant's instructions per request, counted by callgrind in a process of its own (it runs
    some 50 times slower); None without valgrind."""
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        return None
    folder = tempfile.mkdtemp(prefix="onboards-callgrind-")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out.%p", sys.executable, "-m",
                    "bench.levers", ",".join(ops), "--instructions", str(requests)], check=True, capture_output=True)
    counted: dict[str, int] = {}
    for dump in Path(folder).iterdir():
        text = dump.read_text()
        window = re.search(r"^desc: Trigger: dump (\S+)$", text, re.MULTILINE)
        if window:
            counted[window[1]] = int(re.search(r"^summary: (\d+)$", text, re.MULTILINE)[1])  # type: ignore[index]
    shutil.rmtree(folder)
    return {op: {name: (counted[f"{op}-{index}"] - counted[f"{op}-empty"]) / requests
                 for index, name in enumerate(names)} for op in ops}


def callers_for(url: str) -> dict[str, tuple[Caller, list[Patch]]]:
    """The variants and the floor on the (migrated, empty) database at `url`, given the 1 k data set."""
    settings = Settings.from_env({}, database_url=url, log_level="WARNING", access_log=False,
                                 auth_cache_seconds=KEY_CACHE_SECONDS)
    data = dataset.load(1000)
    dataset.reset_for_put(data)
    callers: dict[str, tuple[Caller, list[Patch]]] = {}
    every = variants()
    if os.environ.get("BENCH_LEVERS_REFERENCES_ONLY", "") not in ("", "0"):
        every = dict(itertools.islice(every.items(), 1))  # the service with every lever, no variant
    for name, (building, serving) in every.items():
        with patched(building):
            app = service.create_app(settings, send_outbox=False)
        callers[name] = (Caller(app, data), serving)
    os.environ.update(DATABASE_URL=url, AUTH_CACHE_SECONDS=str(KEY_CACHE_SECONDS))  # the floor reads them at import
    from bench import fastapi_ref, floor

    callers["FastAPI (bench/fastapi_ref.py)"] = (Caller(fastapi_ref.create_app(), data), [])
    callers["floor"] = (Caller(floor.create_app(), data), [])
    # Nor are connections renewed after 5 minutes, which would land a reconnect in some windows only.
    models_base.db.obj._stale_timeout = None
    return callers


def main() -> None:
    ops = (sys.argv[1] if len(sys.argv) > 1 else "get,put,list,post").split(",")
    kind, cfg = os.environ.get("BENCH_LEVERS_DATABASE", "sqlite"), run.config()
    if kind not in ("sqlite", "postgresql"):
        raise SystemExit(f"BENCH_LEVERS_DATABASE: sqlite or postgresql, not {kind!r}")
    why = kind == "postgresql" and unreachable(cfg["postgres_url"])
    if why:
        raise SystemExit(f"PostgreSQL unreachable at {cfg['postgres_url']}: {why}")
    # Each process (this one, the counting one, the one under callgrind) loads a database of its own.
    with run.database(kind, cfg, 1000) as url:
        if "--instructions" in sys.argv:  # under callgrind (instructions_per_request)
            callers = callers_for(url)
            for op in ops:
                asyncio.run(instruction_windows(callers, op, int(sys.argv[sys.argv.index("--instructions") + 1])))
        elif "--count" in sys.argv:  # the hook set before any thread starts, so that the worker threads count too
            threading.setprofile(count_call)
            sys.setprofile(count_call)
            callers = callers_for(url)
            print(json.dumps({op: asyncio.run(calls_per_request(callers, op)) for op in ops}))
        else:
            measure(ops, kind, url)


def measure(ops: list[str], kind: str, url: str) -> None:
    # Counted in a process of its own: the profile hook would slow the timed runs.
    counted = subprocess.run([sys.executable, "-m", "bench.levers", ",".join(ops), "--count"],
                             capture_output=True, text=True)
    if counted.returncode:
        raise SystemExit(f"the counting process failed:\n{counted.stderr[-3000:]}")
    counts = json.loads(counted.stdout.strip().splitlines()[-1])
    callers = callers_for(url)
    instructions = instructions_per_request(ops, list(callers), int(os.environ.get("BENCH_LEVERS_COUNTED", "100")))
    requests = int(os.environ.get("BENCH_LEVERS_REQUESTS", "200"))
    rounds = int(os.environ.get("BENCH_LEVERS_ROUNDS", "12"))
    print(f"database: {kind}")
    for op in ops:
        cpu = asyncio.run(cpu_per_request(callers, op, requests, rounds))
        calls, statements, as_floor = counts[op]["calls"], counts[op]["statements"], counts[op]["as_floor"]
        print(f"{op}: CPU ms per request (least disturbed of {rounds} rounds of {requests}); calls and "
              f"instructions per request (x service, x floor); SQL statements per request (= the floor's)")
        for name in cpu:
            line = (f"  {name:40} {cpu[name]:6.3f} ms {ratios(cpu, name)}  {calls[name]:7.0f} calls "
                    f"{ratios(calls, name)}")
            if instructions:
                line += f"  {instructions[op][name] / 1e6:6.2f} M instr {ratios(instructions[op], name)}"
            line += f"  {statements[name]:5.2f} SQL {'=' if as_floor[name] else '!='}"
            print(line)


def ratios(figures: dict[str, float], name: str) -> str:
    return f"{figures[name] / figures['service (every lever)']:5.2f}x {figures[name] / figures['floor']:5.2f}x"


if __name__ == "__main__":
    main()
