"""Patches for connexion's defects: the only module that touches connexion's private names.

Each patch is small, names its item in onboards/UPSTREAM.md (the reports to file upstream), and has a
tripwire in tests/test_connexion_patches.py that fails when an upgrade changes what it relies on. They
are verified against one connexion version: `apply()` refuses any other (ConnexionVersionError), because
a patch applied to code it was not written for fails in ways no test here would see.
"""

import functools
import importlib.metadata
import typing as t

from connexion.apps.asynchronous import AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.operations import OpenAPIOperation
from connexion.security import AbstractSecurityHandler

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
