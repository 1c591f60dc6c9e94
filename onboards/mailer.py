"""Delivers the outbox: a background thread that sends due messages and retries with backoff."""

import contextlib
import functools
import logging
import smtplib
import threading
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlparse

from models.accounts import is_address
from models.base import DATABASE_UNAVAILABLE, transaction, utcnow
from models.limits import RateCounter
from models.outbox import OutboxMessage
from onboards.config import Settings

log = logging.getLogger("onboards.mailer")

Deliver = Callable[[OutboxMessage], None]


class SmtpDeliverer:
    """Sends through the SMTP server `smtp_url` names: smtp://[user:pass@]host[:port], or smtps://.
    One connection serves a whole round of messages; `close()` ends it. Each message is recorded
    as sent as soon as the server has accepted it, before the session closes, so that a crash
    leaves the smallest window in which a sent message is not yet marked sent."""

    def __init__(self, smtp_url: str, mail_from: str) -> None:
        url = urlparse(smtp_url)
        self.host, self.secure = url.hostname or "localhost", url.scheme == "smtps"
        self.port = url.port or (465 if self.secure else 25)
        self.login = (unquote(url.username), unquote(url.password or "")) if url.username else None
        self.mail_from = mail_from
        self._smtp: smtplib.SMTP | None = None

    def __call__(self, message: OutboxMessage) -> None:
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.mail_from, message.to, message.subject
        # Stable across retries: a receiver can drop the duplicate of a message resent after a crash.
        email["Message-ID"] = f"<{message.id}@onboards>"
        email.set_content(message.body)
        if message.html:  # multipart/alternative: the text first, the HTML written from the same template
            email.add_alternative(message.html, subtype="html")
        if self._smtp is None:
            smtp_class = smtplib.SMTP_SSL if self.secure else smtplib.SMTP
            self._smtp = smtp_class(self.host, self.port, timeout=10)
            if self.login:
                self._smtp.login(*self.login)
        try:
            # To the stored address exactly: never to what a header parser would make of it.
            self._smtp.send_message(email, from_addr=self.mail_from, to_addrs=[message.to])
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()
            raise

    def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()


def permanent(failure: Exception) -> bool:
    """Whether the mail server refused the message for good (a 5xx reply): trying again cannot help."""
    if isinstance(failure, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _reply in failure.recipients.values())
    return isinstance(failure, smtplib.SMTPDataError) and failure.smtp_code >= 500


def log_deliverer(message: OutboxMessage) -> None:
    log.info("e-mail to %s: %s", message.to, message.subject)


class OutboxSender:
    """Sends due messages every `poll_seconds`, and at once again while a round found more. Several
    senders (threads or processes) may run: each message is claimed by a conditional update before it is
    sent. A message refused for good, or failing `max_attempts` times, is parked as failed; sent and parked
    messages are deleted after `retention`, with the abuse limits' counts of windows past."""

    def __init__(self, deliver: Deliver, *, poll_seconds: float, retry_base_seconds: float,
                 retry_max_seconds: float, lease_seconds: float = 60, batch: int = 50, max_attempts: int = 10,
                 retention: timedelta = timedelta(days=30), prune_every: timedelta = timedelta(minutes=10)) -> None:
        self.deliver, self.poll_seconds, self.batch = deliver, poll_seconds, batch
        self.lease = timedelta(seconds=lease_seconds)
        self.retry_base, self.retry_max, self.max_attempts = retry_base_seconds, retry_max_seconds, max_attempts
        self.retention, self.prune_every = retention, prune_every
        self.more_due = False
        self._pruned_at = utcnow() - prune_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "OutboxSender":
        deliver: Deliver = SmtpDeliverer(settings.smtp_url, settings.mail_from) if settings.smtp_url else log_deliverer
        return cls(deliver, poll_seconds=settings.outbox_poll_seconds,
                   retry_base_seconds=settings.outbox_retry_base_seconds,
                   retry_max_seconds=settings.outbox_retry_max_seconds,
                   lease_seconds=settings.outbox_lease_seconds, max_attempts=settings.outbox_max_attempts,
                   retention=timedelta(days=settings.outbox_retention_days))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)
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
        self._pruned_at = now

    def send_due(self) -> int:
        """One round: sends what is due; how many were sent. `more_due` tells whether more may be due."""
        with transaction(write=False):
            due = OutboxMessage.due(utcnow(), self.batch)
        self.more_due = len(due) == self.batch
        sent = 0
        try:
            for message in due:
                if self._stop.is_set():
                    break
                with transaction():
                    if not message.claim(utcnow(), self.lease):
                        continue
                if self._attempt(message):
                    sent += 1
        finally:
            close = getattr(self.deliver, "close", None)
            if close is not None:
                close()
        return sent

    def _attempt(self, message: OutboxMessage) -> bool:
        """One delivery of a claimed message; whether it went out."""
        if not is_address(message.to):  # stored before addresses were checked as they are now
            log.error("e-mail %s parked: %r is not one e-mail address", message.id, message.to[:100])
            self._record(functools.partial(message.mark_failed, "not one e-mail address", None))
            return False
        try:
            self.deliver(message)
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}"
            if permanent(failure) or message.attempts >= self.max_attempts:
                log.error("e-mail %s to %s parked after attempt %d: %s", message.id, message.to, message.attempts,
                          error)
                self._record(functools.partial(message.mark_failed, error, None))
                return False
            delay = min(self.retry_base * 2 ** (message.attempts - 1), self.retry_max)
            log.warning("e-mail %s to %s failed (attempt %d), retry in %.1fs: %s",
                        message.id, message.to, message.attempts, delay, failure)
            self._record(functools.partial(message.mark_failed, error, utcnow() + timedelta(seconds=delay)))
            return False
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
