"""Delivers the outbox: a background thread that sends due messages and retries with backoff."""

import contextlib
import contextvars
import functools
import logging
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from urllib.parse import unquote, urlparse

from models.accounts import is_address
from models.base import DATABASE_UNAVAILABLE, transaction, utcnow
from models.idempotency import IdempotencyKey
from models.limits import RateCounter
from models.outbox import OutboxMessage
from onboards.config import Settings

log = logging.getLogger("onboards.mailer")

# Whether the sender still holds the message's lease (Lease.held).
Held = Callable[[], bool]
Deliver = Callable[[OutboxMessage, Held], None]


@dataclass(frozen=True)
class SmtpTimeouts:
    """How long each phase of an SMTP session waits for the relay, in seconds: the least RFC 5321
    (section 4.5.3.2) lets a client wait. A relay slower than that is in trouble; one merely slow must be
    waited for, since giving up after the message's data went out sends it again."""

    initial: float = 300.0  # the greeting
    command: float = 300.0  # EHLO, STARTTLS, AUTH, MAIL, RCPT (the RFC's MAIL and RCPT)
    data_init: float = 120.0  # the 354 that answers DATA
    data_block: float = 180.0  # each block of the message's data sent
    data_end: float = 600.0  # the reply to the final "."


DATA_BLOCK = 64 * 1024
FINAL_DOT = b".\r\n"


class RelayRefused(Exception):
    """The relay is at fault, not the message: a certificate not verified, no TLS where it is required,
    a login refused. No message is parked for it; the sender waits and tries the relay again."""


class LeaseLost(Exception):
    """The sender's lease on the message ended (another sender took it over, or the database was away for
    as long as the lease): it stopped before the final ".", so the relay dropped the message unsent."""



class SmtpDeliverer:
    """Sends through the SMTP server `smtp_url` names: smtp://[user:pass@]host[:port], or smtps://.
    The relay's certificate is verified against `ca_file`, or without one the system's store; an smtp://
    session turns to TLS with STARTTLS where the relay offers it, and must with `require_tls`. A password
    is only ever sent over TLS. One session serves a whole round of messages; `close()` ends it. Each
    message is recorded as sent as soon as the server has accepted it, before the session closes, so that
    a crash leaves the smallest window in which a sent message is not yet marked sent."""

    def __init__(self, smtp_url: str, mail_from: str, *, ca_file: str = "", require_tls: bool = False,
                 timeouts: SmtpTimeouts = SmtpTimeouts()) -> None:
        url = urlparse(smtp_url)
        self.host, self.secure = url.hostname or "localhost", url.scheme == "smtps"
        self.port = url.port or (465 if self.secure else 25)
        self.login = (unquote(url.username), unquote(url.password or "")) if url.username else None
        self.mail_from, self.require_tls, self.timeouts = mail_from, require_tls, timeouts
        self.tls = ssl.create_default_context(cafile=ca_file or None)
        self._smtp: smtplib.SMTP | None = None

    def __call__(self, message: OutboxMessage, held: Held) -> None:
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.mail_from, message.to, message.subject
        # Stable across retries: a receiver can drop the duplicate of a message resent after a crash.
        email["Message-ID"] = f"<{message.id}@onboards>"
        email.set_content(message.body)
        if message.html:  # multipart/alternative: the text first, the HTML written from the same template
            email.add_alternative(message.html, subtype="html")
        if self._smtp is None:
            self._smtp = self._open()
        try:
            # To the stored address exactly: never to what a header parser would make of it.
            self._transact(self._smtp, message.to, email.as_bytes(policy=SMTP_POLICY), held)
        except (smtplib.SMTPServerDisconnected, OSError, LeaseLost):
            # Dropped, not QUIT: in the middle of DATA a QUIT would be read as the message's text.
            smtp, self._smtp = self._smtp, None
            smtp.close()
            raise

    def _open(self) -> smtplib.SMTP:
        """A session ready for MAIL: greeted, on TLS where it can or must be, logged in where a user is set."""
        try:
            if self.secure:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeouts.initial,
                                                      context=self.tls)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeouts.initial)
        except ssl.SSLError as failure:
            raise RelayRefused(f"TLS with {self.host}:{self.port} failed: {failure}") from failure
        try:
            self._secure_and_log_in(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _secure_and_log_in(self, smtp: smtplib.SMTP) -> None:
        assert smtp.sock is not None
        smtp.sock.settimeout(self.timeouts.command)
        smtp.ehlo()
        try:
            if not self.secure and smtp.has_extn("starttls"):
                smtp.starttls(context=self.tls)
                smtp.ehlo()
            elif not self.secure and (self.require_tls or self.login):
                why = "SMTP_REQUIRE_TLS is set" if self.require_tls else "a password is never sent in clear"
                raise RelayRefused(f"{self.host}:{self.port} offers no STARTTLS, and {why}")
            if self.login:
                smtp.login(*self.login)
        except ssl.SSLError as failure:
            raise RelayRefused(f"TLS with {self.host}:{self.port} failed: {failure}") from failure
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as failure:
            raise RelayRefused(f"{self.host}:{self.port} refused the login: {failure}") from failure

    def _transact(self, smtp: smtplib.SMTP, to: str, content: bytes, held: Held) -> None:
        """MAIL, RCPT and DATA, each phase waiting as long as its timeout; the final "." only while the
        lease is `held`: until then the relay drops what it got if the session ends."""
        assert smtp.sock is not None
        timeouts = self.timeouts
        smtp.sock.settimeout(timeouts.command)
        code, reply = smtp.mail(self.mail_from)
        if code != 250:
            self._reset(smtp)
            raise smtplib.SMTPSenderRefused(code, reply, self.mail_from)
        code, reply = smtp.rcpt(to)
        if code not in (250, 251):
            self._reset(smtp)
            raise smtplib.SMTPRecipientsRefused({to: (code, reply)})
        smtp.sock.settimeout(timeouts.data_init)
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            self._reset(smtp)
            raise smtplib.SMTPDataError(code, reply)
        smtp.sock.settimeout(timeouts.data_block)
        data = LEADING_DOT.sub(b"..", content)  # dot-stuffing (RFC 5321 section 4.5.2)
        for start in range(0, len(data), DATA_BLOCK):
            smtp.send(data[start:start + DATA_BLOCK])
        if not held():
            raise LeaseLost("the lease ended before the final '.'")
        smtp.sock.settimeout(timeouts.data_end)
        smtp.send(FINAL_DOT)
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """RSET after a refusal, so that the session serves the next message."""
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.rset()

    def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()


LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def permanent(failure: Exception) -> bool:
    """Whether the mail server refused the message for good (a 5xx reply): trying again cannot help."""
    if isinstance(failure, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _reply in failure.recipients.values())
    return isinstance(failure, smtplib.SMTPDataError) and failure.smtp_code >= 500


def log_deliverer(message: OutboxMessage, held: Held) -> None:
    log.info("e-mail to %s: %s", message.to, message.subject)


def thread_in_context(run: Callable[[], object], name: str) -> threading.Thread:
    """A daemon thread running `run` in a copy of the current context, as anyio's worker threads do: the
    starting app's database is the one its models use there."""
    return threading.Thread(target=contextvars.copy_context().run, args=(run,), name=name, daemon=True)


class Lease:
    """The lease on the messages one claim took (`OutboxMessage.claim_due`), renewed in the background while they
    wait their turn and are delivered, so that a slow relay never lets it lapse and no other sender takes them
    over meanwhile. `held(id)` turns false for good once a renewal finds the message no longer the claim's (taken
    over, sent or parked: the fence), and for all of them while the database is away for a third of the lease;
    the deliverer asks it before the final ".". One thread per claim, not per message: starting one costs more
    than sending an e-mail to the log."""

    def __init__(self, claimed: list[OutboxMessage], seconds: timedelta) -> None:
        self.token, self.seconds = claimed[0].lease_token, seconds
        self.until = claimed[0].claimed_until or utcnow()
        self._held = frozenset(message.id for message in claimed)
        self._done = threading.Event()
        self._thread = thread_in_context(self._renew, "outbox-lease")

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def held(self, message_id: str) -> bool:
        # A margin of a third: a renewal is due every third, so a held lease always has more left.
        return message_id in self._held and utcnow() + self.seconds / 3 < self.until

    def _renew(self) -> None:
        assert self.token is not None
        while not self._done.wait(self.seconds.total_seconds() / 3):
            until = utcnow() + self.seconds
            try:
                with transaction():
                    held = OutboxMessage.renew(self.token, self._held, until)
            except Exception:  # the database away: held() turns false as the lease runs out
                log.warning("the lease of e-mails %s could not be renewed", sorted(self._held), exc_info=True)
                continue
            self._held, self.until = frozenset(held), until
            if not held:
                return


class OutboxSender:
    """Sends due messages every `poll_seconds`, and at once again while a round found more. Several
    senders (threads or processes) may run: each message is claimed, a few at a time, by a conditional update
    before it is sent. A message refused for good, or failing `max_attempts` times, is parked as failed; sent and parked
    messages are deleted after `retention`, with the abuse limits' counts of windows past and the answers kept
    for Idempotency-Keys past their 24 hours."""

    def __init__(self, deliver: Deliver, *, poll_seconds: float, retry_base_seconds: float,
                 retry_max_seconds: float, lease_seconds: float = 60, batch: int = 50, claim: int = 10,
                 max_attempts: int = 10,
                 retention: timedelta = timedelta(days=30), prune_every: timedelta = timedelta(minutes=10)) -> None:
        self.deliver, self.poll_seconds, self.batch, self.claim = deliver, poll_seconds, batch, claim
        self.lease = timedelta(seconds=lease_seconds)
        self.retry_base, self.retry_max, self.max_attempts = retry_base_seconds, retry_max_seconds, max_attempts
        self.retention, self.prune_every = retention, prune_every
        self.more_due = False
        # After the relay failed (RelayRefused), none is tried before this; the wait doubles each time.
        self._relay_retry_at = utcnow()
        self._relay_failures = 0
        self._pruned_at = utcnow() - prune_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _backoff(self, failures: int) -> float:
        """Seconds before the next try after `failures` in a row: doubling from the base, up to the most."""
        return min(self.retry_base * 2 ** (failures - 1), self.retry_max)

    @classmethod
    def from_settings(cls, settings: Settings) -> "OutboxSender":
        deliver: Deliver = SmtpDeliverer(settings.smtp_url, settings.mail_from, ca_file=settings.smtp_ca_file,
                                         require_tls=settings.smtp_require_tls) if settings.smtp_url else log_deliverer
        return cls(deliver, poll_seconds=settings.outbox_poll_seconds,
                   retry_base_seconds=settings.outbox_retry_base_seconds,
                   retry_max_seconds=settings.outbox_retry_max_seconds,
                   lease_seconds=settings.outbox_lease_seconds, max_attempts=settings.outbox_max_attempts,
                   retention=timedelta(days=settings.outbox_retention_days))

    def start(self) -> None:
        self._stop.clear()
        self._thread = thread_in_context(self._run, "outbox-sender")
        self._thread.start()

    def stop(self, timeout: float = 15) -> None:
        """Stops after the message in hand, so none is left half-sent."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_due()
                self.prune()
            except Exception:  # the database may be away; the next round tries again
                log.exception("outbox round failed")
                self.more_due = False
            if not self.more_due:
                self._stop.wait(self.poll_seconds)

    def prune(self) -> None:
        """At most every `prune_every`: what is past its retention, and the counts of windows past."""
        now = utcnow()
        if now - self._pruned_at < self.prune_every:
            return
        with transaction():
            OutboxMessage.prune(now - self.retention)
            RateCounter.prune(now)
            IdempotencyKey.prune(now)
        self._pruned_at = now

    def send_due(self) -> int:
        """One round: sends what is due, up to `batch` messages, claiming `claim` at a time; how many were sent.
        `more_due` tells whether more may be due. A claim of more messages costs a sender less; but while a slow
        relay keeps the messages of a claim waiting for a third of the lease, the rest are given back, for other
        senders to share, and this one claims one at a time for the rest of the round."""
        self.more_due = False
        sent = tried = 0
        size = self.claim
        try:
            while tried < self.batch and self._may_send():
                with transaction():
                    claimed, more = OutboxMessage.claim_due(utcnow(), self.lease, min(size, self.batch - tried))
                went, tried_now, slow = self._send_claimed(claimed) if claimed else (0, 0, False)
                sent, tried = sent + went, tried + tried_now
                if slow:
                    size = 1
                if not self._may_send() or not (more or tried_now < len(claimed)):  # stopped, or none left due
                    return sent
            self.more_due = tried == self.batch
            return sent
        finally:
            close = getattr(self.deliver, "close", None)
            if close is not None:
                close()

    def _send_claimed(self, claimed: list[OutboxMessage]) -> tuple[int, int, bool]:
        """A claim's messages sent in turn under one lease: how many went out, how many were tried, and whether
        the relay was slow (the claim's messages waited a third of the lease). What was not tried, because the
        round stopped or the relay was slow, or was no longer held, is given back."""
        sent = tried = 0
        not_held: list[str] = []
        slow_after = time.monotonic() + self.lease.total_seconds() / 3
        with Lease(claimed, self.lease) as lease:
            try:
                for message in claimed:
                    if not self._may_send():
                        break
                    tried += 1
                    if lease.held(message.id):
                        sent += self._attempt(message, functools.partial(lease.held, message.id))
                    else:  # taken over, or the database away for a while: never handed to the relay
                        not_held.append(message.id)
                    if time.monotonic() >= slow_after:  # after one tried at least: never a loop
                        return sent, tried, True
            finally:
                if tried < len(claimed) or not_held:
                    self._give_back(lease.token, not_held + [message.id for message in claimed[tried:]])
        return sent, tried, False

    def _may_send(self) -> bool:
        return not self._stop.is_set() and utcnow() >= self._relay_retry_at

    def _give_back(self, lease_token: str | None, ids: list[str]) -> None:
        """Claimed messages never handed to the relay: due again at once (to another sender, or this one once the
        relay may be tried again). Only a saving: left to their lease's end where it fails."""
        assert lease_token is not None
        try:
            with transaction():
                OutboxMessage.unclaim(lease_token, ids)
        except Exception:
            log.warning("claimed e-mails could not be given back: they wait for their lease to end", exc_info=True)

    def _attempt(self, message: OutboxMessage, held: Held) -> bool:
        """One delivery of a claimed message; whether it went out."""
        if message.attempts > self.max_attempts:  # every claim past the last lapsed: it stops its senders
            log.error("e-mail %s parked: its sender stopped during each of its %d attempts", message.id,
                      self.max_attempts)
            self._record(functools.partial(message.mark_failed, "its sender stopped during each attempt", None))
            return False
        if not is_address(message.to):  # stored before addresses were checked as they are now
            log.error("e-mail %s parked: %r is not one e-mail address", message.id, message.to[:100])
            self._record(functools.partial(message.mark_failed, "not one e-mail address", None))
            return False
        try:
            self.deliver(message, held)
        except LeaseLost:
            log.warning("e-mail %s: its lease ended during delivery, before the final '.'; not sent by this "
                        "sender", message.id)
            return False
        except RelayRefused as failure:
            self._relay_failures += 1
            delay = self._backoff(self._relay_failures)
            self._relay_retry_at = utcnow() + timedelta(seconds=delay)
            log.error("THE MAIL RELAY IS REFUSED, no e-mail is sent; trying it again in %.1fs: %s", delay, failure)
            self._record(functools.partial(message.release, f"relay refused: {failure}", self._relay_retry_at))
            return False
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}"
            if permanent(failure) or message.attempts >= self.max_attempts:
                log.error("e-mail %s to %s parked after attempt %d: %s", message.id, message.to, message.attempts,
                          error)
                self._record(functools.partial(message.mark_failed, error, None))
                return False
            delay = self._backoff(message.attempts)
            log.warning("e-mail %s to %s failed (attempt %d), retry in %.1fs: %s",
                        message.id, message.to, message.attempts, delay, failure)
            self._record(functools.partial(message.mark_failed, error, utcnow() + timedelta(seconds=delay)))
            return False
        self._relay_failures = 0
        self._record(message.mark_sent)
        return True

    def _record(self, change: Callable[[], None]) -> None:
        """Commits what became of a delivery, retrying while the database is away: the message is
        already out (or refused), and giving up here would send it again when the lease ends."""
        delay = 0.05
        while True:
            try:
                with transaction():
                    change()
                return
            except DATABASE_UNAVAILABLE:
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 2.0)
