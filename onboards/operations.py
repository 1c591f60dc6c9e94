"""connexion's AsyncApp, with the work it repeats on every request done once per operation.

connexion 3.3 rebuilds each operation's handler chain on every request: `AsyncOperation.fn` is a
property that makes a new StarletteDecorator, whose wrapper then decorates the handler again (three
`functools.wraps`, one `inspect.signature` per layer) and makes a new URI parser. All of it depends on
the operation only, so here it is built once and kept; what a request needs (the request, its
parameters, its body) is still read per request, through the same connexion code.
Its HTTP Basic handler likewise inspects the verify function's signature on every request; here, once.
`tests/test_operations.py` fails if a connexion upgrade changes what this relies on.
"""

import functools
import typing as t

from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.operations import AbstractOperation
from connexion.security import BasicSecurityHandler
from connexion.uri_parsing import AbstractURIParser


class _OnceDecorator(StarletteDecorator):
    def __call__(self, function: t.Callable) -> t.Callable:
        decorated = self.decorate(function)
        parser: AbstractURIParser | None = None

        @functools.wraps(function)
        async def wrapper() -> t.Any:
            nonlocal parser
            if parser is None:  # needs the operation, known only inside a request
                parser = self.uri_parser
            request = self.framework.get_request(uri_parser=parser, scope=scope, receive=receive)
            return await decorated(request)

        return wrapper


class _Operation(AsyncOperation):
    @functools.cached_property
    def fn(self) -> t.Callable:
        return _OnceDecorator(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(self._fn)


class _Api(AsyncApi):
    def make_operation(self, operation: AbstractOperation) -> AsyncOperation:
        return _Operation.from_operation(operation, pythonic_params=self.pythonic_params,
                                         jsonifier=self.jsonifier)


class _ASGIApp(AsyncASGIApp):
    api_cls = _Api


class BasicAuth(BasicSecurityHandler):
    _accepts_kwarg = staticmethod(functools.cache(BasicSecurityHandler._accepts_kwarg))


SECURITY_MAP = {"basic": BasicAuth}


class App(AsyncApp):
    """AsyncApp whose operations are decorated once (see the module's docstring)."""

    def __init__(self, import_name: str, **kwargs: t.Any) -> None:
        super().__init__(import_name, **kwargs)
        # AsyncApp makes its inner app before anything is added to it; swap in ours while it is empty.
        self._middleware_app = _ASGIApp()
        self.middleware.app = self._middleware_app
