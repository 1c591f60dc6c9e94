"""Patches of the frameworks: the only module that touches the private names of connexion, starlette,
uvicorn, anyio or peewee (tests/test_layers.py). Named for connexion, which most of them patch.

Each patch is small, names its item in onboards/UPSTREAM.md (the reports to file upstream), and has a
tripwire in tests/test_connexion_patches.py that fails when an upgrade changes what it relies on. They
are verified against one connexion version: `apply()` refuses any other (ConnexionVersionError), because
a patch applied to code it was not written for fails in ways no test here would see.
"""

import functools
import importlib.metadata
import select
import typing as t

from connexion.apps.asynchronous import AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.operations import OpenAPIOperation
from connexion.security import AbstractSecurityHandler
from playhouse.pool import PooledPostgresqlDatabase

from onboards.config import ConfigError

VERIFIED_VERSION = "3.3.0"


class ConnexionVersionError(ConfigError):
    """The installed connexion is not the version the patches were verified against."""


class DecoratedOnce(StarletteDecorator):
    """UPSTREAM.md item 1: the handler's decorator chain, built once per operation instead of per request.
    The URI parser, which reads the operation from connexion's request context, is made at the first
    request and kept."""

    def __call__(self, function: t.Callable) -> t.Callable:
        decorated = self.decorate(function)
        parsers: list[t.Any] = []

        @functools.wraps(function)
        async def wrapper(*_args: t.Any, **_kwargs: t.Any) -> t.Any:
            if not parsers:
                parsers.append(self.uri_parser)
            return await decorated(self.framework.get_request(uri_parser=parsers[0], scope=scope, receive=receive))

        return wrapper


CONNEXION_FN = vars(AsyncOperation)["fn"]


def _decorated_once(operation: AsyncOperation) -> t.Callable:
    return DecoratedOnce(pythonic_params=operation.pythonic_params, jsonifier=operation.jsonifier)(operation._fn)


CONNEXION_OPERATION_INIT = OpenAPIOperation.__init__


def _operation_init(self: OpenAPIOperation, method: str, path: str, operation: dict, resolver: t.Any,
                    path_parameters: list[dict] | None = None, **kwargs: t.Any) -> None:
    """UPSTREAM.md item 2: connexion appends the path's parameters to the operation's own list in the spec
    itself, once more for every middleware that reads it. Here the operation gets a merged copy, its own
    parameter winning over a path parameter of the same name and place, as OpenAPI says."""
    own = operation.get("parameters", [])
    declared = {(p["name"], p["in"]) for p in own}
    merged = [*own, *(p for p in path_parameters or [] if (p["name"], p["in"]) not in declared)]
    CONNEXION_OPERATION_INIT(self, method, path, {**operation, "parameters": merged}, resolver, **kwargs)


@functools.cache
def _accepts_kwarg(func: t.Callable, keyword: str) -> bool:
    """UPSTREAM.md item 3: whether the security function takes `keyword`, asked once per function instead of
    twice per request (connexion inspects its signature each time)."""
    return CONNEXION_ACCEPTS_KWARG(func, keyword)


CONNEXION_ACCEPTS_KWARG = AbstractSecurityHandler._accepts_kwarg


def apply() -> None:
    """Patches connexion's classes in place; safe to call again."""
    installed = importlib.metadata.version("connexion")
    if installed != VERIFIED_VERSION:
        raise ConnexionVersionError(
            f"connexion {installed} is installed, but onboards' patches of connexion are verified against "
            f"{VERIFIED_VERSION} only: install connexion=={VERIFIED_VERSION} (constraints.txt)")
    if not isinstance(vars(AsyncOperation).get("fn"), functools.cached_property):
        fn = functools.cached_property(_decorated_once)
        fn.__set_name__(AsyncOperation, "fn")
        AsyncOperation.fn = fn
    OpenAPIOperation.__init__ = _operation_init
    AbstractSecurityHandler._accepts_kwarg = staticmethod(_accepts_kwarg)


class PostgresPool(PooledPostgresqlDatabase):
    """peewee's pool, without its ping: it sent `SELECT 1` to the server each time it handed out an
    idle connection, a round trip (two thread switches, the server's work) per request. An idle
    connection has nothing to say; one the server closed (restart, pg_terminate_backend, an idle
    timeout) or whose network went away has its farewell or end of stream waiting on the socket. So
    a poll of the socket without waiting tells which to discard, for one system call."""

    def _is_closed(self, conn: t.Any) -> bool:
        if conn.closed or self._adapter.txn_status(conn) != self._adapter.txn_idle:
            return bool(super()._is_closed(conn))  # peewee's: discard it, or roll back what it left open
        try:
            waiting = select.poll()
            waiting.register(conn.fileno(), select.POLLIN)
            ended = bool(waiting.poll(0))
        except (OSError, ValueError):
            ended = True
        if ended:
            self._close_raw(conn)  # the pool only forgets it
        return ended
