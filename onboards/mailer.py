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

from models.base import DATABASE_UNAVAILABLE, transaction, utcnow
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
        if self._smtp is None:
            smtp_class = smtplib.SMTP_SSL if self.secure else smtplib.SMTP
            self._smtp = smtp_class(self.host, self.port, timeout=10)
            if self.login:
                self._smtp.login(*self.login)
        try:
            self._smtp.send_message(email)
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()
            raise

    def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()


def log_deliverer(message: OutboxMessage) -> None:
    log.info("e-mail to %s: %s", message.to, message.subject)


class OutboxSender:
    """Sends due messages every `poll_seconds`. Several senders (threads or processes) may run:
    each message is claimed by a conditional update before it is sent."""

    def __init__(self, deliver: Deliver, *, poll_seconds: float, retry_base_seconds: float,
                 retry_max_seconds: float, lease_seconds: float = 60, batch: int = 50) -> None:
        self.deliver, self.poll_seconds, self.batch = deliver, poll_seconds, batch
        self.lease = timedelta(seconds=lease_seconds)
        self.retry_base, self.retry_max = retry_base_seconds, retry_max_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "OutboxSender":
        deliver: Deliver = SmtpDeliverer(settings.smtp_url, settings.mail_from) if settings.smtp_url else log_deliverer
        return cls(deliver, poll_seconds=settings.outbox_poll_seconds,
                   retry_base_seconds=settings.outbox_retry_base_seconds,
                   retry_max_seconds=settings.outbox_retry_max_seconds,
                   lease_seconds=settings.outbox_lease_seconds)

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
            except Exception:  # the database may be away; the next round tries again
                log.exception("outbox round failed")
            self._stop.wait(self.poll_seconds)

    def send_due(self) -> int:
        """One round: sends what is due; how many were sent."""
        with transaction(write=False):
            due = OutboxMessage.due(utcnow(), self.batch)
        sent = 0
        try:
            for message in due:
                if self._stop.is_set():
                    break
                with transaction():
                    if not message.claim(utcnow(), self.lease):
                        continue
                try:
                    self.deliver(message)
                except Exception as failure:
                    delay = min(self.retry_base * 2 ** message.attempts, self.retry_max)
                    log.warning("e-mail %s to %s failed (attempt %d), retry in %.1fs: %s",
                                message.id, message.to, message.attempts + 1, delay, failure)
                    self._record(functools.partial(message.mark_failed, f"{type(failure).__name__}: {failure}",
                                                   utcnow() + timedelta(seconds=delay)))
                    continue
                self._record(message.mark_sent)
                sent += 1
        finally:
            close = getattr(self.deliver, "close", None)
            if close is not None:
                close()
        return sent

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
