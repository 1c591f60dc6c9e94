"""A real mail relay for the tests: aiosmtpd on a free port of 127.0.0.1, speaking TLS with a certificate
made at test time (STARTTLS on smtp://, implicit TLS on smtps://), asking for a login, and as slow as a
test wants it: a late reply to RCPT, a late or trickling reply to the final "."."""

import asyncio
import email
import email.policy
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.servers import THREAD_READY_SECONDS, free_port

USER, PASSWORD = "onboards", "relay-secret"


class _Controller(Controller):
    """aiosmtpd's controller, keeping each session so that they can be closed before it stops."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[SMTP] = []

    def factory(self) -> SMTP:
        session = super().factory()
        self.sessions.append(session)
        return session

    async def close_sessions(self) -> None:
        """Closes every session, and returns once each has seen its connection lost (the caller bounds the wait)."""
        for session in self.sessions:
            if session.transport is not None:
                session.transport.close()
        while any(session.transport is not None for session in self.sessions):  # until each connection_lost ran
            await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Certificates:
    """A CA the client is told to trust (its certificate in `ca_file`) and one it is not."""

    trusted: trustme.CA
    untrusted: trustme.CA
    ca_file: Path

    @classmethod
    def make(cls, directory: Path) -> "Certificates":
        trusted = trustme.CA()
        trusted.cert_pem.write_to_path(str(directory / "relay-ca.pem"))
        return cls(trusted, trustme.CA(), directory / "relay-ca.pem")


def server_tls(ca: trustme.CA, hostname: str = "127.0.0.1") -> ssl.SSLContext:
    """A relay's TLS: a certificate for `hostname` issued by `ca`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(hostname).configure_cert(context)
    return context


@dataclass
class Relay:
    """The relay. `tls` None speaks no TLS at all; with `implicit_tls` TLS starts at connect (smtps://),
    otherwise STARTTLS is offered. With `password`, MAIL needs a login first; `auth_reply` refuses every
    login with that reply. `rcpt_delay` holds the reply to RCPT; `data_delay` the reply to the final ".",
    or with `trickle` spreads it over that many continuation lines."""

    tls: ssl.SSLContext | None = None
    implicit_tls: bool = False
    password: str | None = PASSWORD
    auth_reply: str | None = None
    rcpt_delay: float = 0.0
    data_delay: float = 0.0
    trickle: int = 0
    port: int = field(default_factory=free_port)
    logins: list[str] = field(default_factory=list)  # the passwords received
    mail_from: list[str] = field(default_factory=list)
    rcpt_seen: threading.Event = field(default_factory=threading.Event)
    _received: list[tuple[list[str], EmailMessage, bool]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: _Controller | None = None

    def url(self) -> str:
        """The SMTP_URL a client uses, with the relay's login."""
        login = f"{USER}:{self.password}@" if self.password else ""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{login}127.0.0.1:{self.port}"

    @property
    def received(self) -> list[tuple[list[str], EmailMessage, bool]]:
        """(envelope recipients, message, whether it came over TLS) of each message accepted, in order."""
        with self._lock:
            return list(self._received)

    def message_ids(self) -> list[str]:
        return [str(message["Message-ID"]) for _rcpt, message, _tls in self.received]

    def __enter__(self) -> "Relay":
        starttls = self.tls if self.tls is not None and not self.implicit_tls else None
        self._controller = _Controller(
            self, hostname="127.0.0.1", port=self.port, ready_timeout=THREAD_READY_SECONDS,
            ssl_context=self.tls if self.implicit_tls else None, tls_context=starttls,
            authenticator=self._authenticate, auth_required=self.password is not None,
            # aiosmtpd counts only STARTTLS as TLS for AUTH; smtps:// is TLS from the start.
            auth_require_tls=not self.implicit_tls)
        self._controller.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._controller is not None:
            # A client still connected (a sender between messages) would leave its session's transport to
            # the garbage collector once the loop stops: an unclosed-transport warning in a later test.
            asyncio.run_coroutine_threadsafe(self._controller.close_sessions(), self._controller.loop).result(
                THREAD_READY_SECONDS)
            self._controller.stop()

    def _authenticate(self, _server: Any, _session: Any, _envelope: Any, _mechanism: str,
                      login: LoginPassword) -> AuthResult:
        password = login.password.decode()
        with self._lock:
            self.logins.append(password)
        if self.auth_reply:
            return AuthResult(success=False, handled=False, message=self.auth_reply)
        return AuthResult(success=password == self.password)

    async def handle_MAIL(self, _server: Any, _session: Any, envelope: Any, address: str,  # noqa: N802 (aiosmtpd)
                          options: list[str]) -> str:
        with self._lock:
            self.mail_from.append(address)
        envelope.mail_from, envelope.mail_options = address, options
        return "250 OK"

    async def handle_RCPT(self, _server: Any, _session: Any, envelope: Any, address: str,  # noqa: N802 (aiosmtpd)
                          _options: list[str]) -> str:
        self.rcpt_seen.set()
        await asyncio.sleep(self.rcpt_delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd)
        """The whole message is here: it counts as delivered now, however late the reply."""
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self._lock:
            self._received.append((list(envelope.rcpt_tos), message, self.implicit_tls or session.ssl is not None))
        for _ in range(self.trickle):
            await server.push("250-still writing it down")
            await asyncio.sleep(self.data_delay / self.trickle)
        if not self.trickle:
            await asyncio.sleep(self.data_delay)
        return "250 Message accepted for delivery"
