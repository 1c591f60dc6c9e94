"""Delivers the outbox: a background thread that sends due messages and retries with backoff."""

import logging
import smtplib
import threading
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlparse

from models.base import transaction, utcnow
from models.outbox import OutboxMessage
from onboards.config import Settings

log = logging.getLogger("onboards.mailer")
LEASE = timedelta(seconds=60)

Deliver = Callable[[OutboxMessage], None]


def smtp_deliverer(smtp_url: str, mail_from: str) -> Deliver:
    """Sends through the SMTP server `smtp_url` names: smtp://[user:pass@]host[:port], or smtps://."""
    url = urlparse(smtp_url)
    host, secure = url.hostname or "localhost", url.scheme == "smtps"
    port = url.port or (465 if secure else 25)

    def deliver(message: OutboxMessage) -> None:
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = mail_from, message.to, message.subject
        email["Message-ID"] = f"<{message.id}@onboards>"
        email.set_content(message.body)
        smtp_class = smtplib.SMTP_SSL if secure else smtplib.SMTP
        with smtp_class(host, port, timeout=10) as smtp:
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(email)

    return deliver


def log_deliverer(message: OutboxMessage) -> None:
    log.info("e-mail to %s: %s", message.to, message.subject)


class OutboxSender:
    """Sends due messages every `poll_seconds`. Several senders (threads or processes) may run:
    each message is claimed by a conditional update before it is sent."""

    def __init__(self, deliver: Deliver, *, poll_seconds: float, retry_base_seconds: float,
                 retry_max_seconds: float, batch: int = 50) -> None:
        self.deliver, self.poll_seconds, self.batch = deliver, poll_seconds, batch
        self.retry_base, self.retry_max = retry_base_seconds, retry_max_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "OutboxSender":
        deliver = smtp_deliverer(settings.smtp_url, settings.mail_from) if settings.smtp_url else log_deliverer
        return cls(deliver, poll_seconds=settings.outbox_poll_seconds,
                   retry_base_seconds=settings.outbox_retry_base_seconds,
                   retry_max_seconds=settings.outbox_retry_max_seconds)

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
        for message in due:
            if self._stop.is_set():
                break
            with transaction():
                if not message.claim(utcnow(), LEASE):
                    continue
            try:
                self.deliver(message)
            except Exception as failure:
                delay = min(self.retry_base * 2 ** message.attempts, self.retry_max)
                log.warning("e-mail %s to %s failed (attempt %d), retry in %.1fs: %s",
                            message.id, message.to, message.attempts + 1, delay, failure)
                with transaction():
                    message.mark_failed(f"{type(failure).__name__}: {failure}",
                                        utcnow() + timedelta(seconds=delay))
                continue
            with transaction():
                message.mark_sent()
            sent += 1
        return sent
