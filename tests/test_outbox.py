"""E-mail delivery from the outbox to a real SMTP server, on each database.

The app's own sender runs while a `client` block serves the app (its lifespan); the tests about
failures and races drive `OutboxSender` instances themselves.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from models.accounts import User
from models.base import is_postgres, transaction, utcnow
from models.outbox import OutboxMessage
from onboards.config import Settings
from onboards.mailer import Lease, LeaseLost, OutboxSender, SmtpDeliverer, thread_in_context
from tests.helpers import Party, create_onboard, invite, put_status, seller_flow, wait_until
from tests.helpers import outbox as rows
from tests.servers import Mailbox, free_port
from tests.smtp_relay import PASSWORD, Certificates, Relay, server_tls

# aiosmtpd warns of AUTH without STARTTLS, not knowing that the smtps:// relay speaks TLS from the start.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
MAIL_FROM = "onboards@test"
WAIT = 10.0


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    """An SMTP server on a free port, not listening until started (so a test can start it late)."""
    mailbox = Mailbox(free_port())
    yield mailbox
    mailbox.stop()


@pytest.fixture
def mailbox(smtp: Mailbox) -> Mailbox:
    """The SMTP server, listening."""
    smtp.start()
    return smtp


@pytest.fixture
def settings(settings: Settings, smtp: Mailbox) -> Settings:
    return replace(settings, smtp_url=smtp.url, mail_from=MAIL_FROM)


@pytest.fixture
def send_outbox() -> bool:
    return True


@pytest.fixture
def senders() -> Iterator[list[OutboxSender]]:
    """Senders a test starts; all stopped at the end."""
    started: list[OutboxSender] = []
    yield started
    for sender in started:
        sender.stop()




def all_sent() -> bool:
    return all(m.sent_at is not None for m in rows())


def received(mailbox: Mailbox, subject_part: str = "") -> list[str]:
    """The envelope recipients of the messages received so far whose subject contains `subject_part`."""
    return sorted(to for rcpt, message in mailbox.messages if subject_part in message["Subject"] for to in rcpt)


def message_ids(mailbox: Mailbox) -> Counter:
    return Counter(str(message["Message-ID"]) for _rcpt, message in mailbox.messages)


def enqueue(count: int) -> list[str]:
    """`count` notifications to distinct people; their addresses."""
    addresses = [f"person{i}@example.com" for i in range(count)]
    with transaction():
        OutboxMessage.enqueue("invitation_sent", addresses, "You are invited", "Invitation id: 0\n")
    return addresses


def sender(smtp: Mailbox, *, retry_seconds: float = 0.1) -> OutboxSender:
    return OutboxSender(SmtpDeliverer(smtp.url, MAIL_FROM), poll_seconds=0.05,
                        retry_base_seconds=retry_seconds, retry_max_seconds=retry_seconds)


def add_user(party: Party, email: str) -> str:
    with transaction():
        return User.create(account=party.account_id, email=email).email


def test_invitation_email_arrives(client, mailbox, seller, buyer):
    entity = invite(client, seller, buyer.email)

    assert wait_until(lambda: mailbox.messages, WAIT), "no e-mail arrived"
    [(recipients, message)] = mailbox.messages
    assert recipients == [buyer.email]
    assert message["To"] == buyer.email and message["From"] == MAIL_FROM
    assert message["Subject"] == "Acme Leads invites you to connect"
    # Text and HTML, both from one template: the invitation id in the text, the join link in both.
    assert message.get_content_type() == "multipart/alternative"
    text, html = (message.get_body((kind,)).get_content() for kind in ("plain", "html"))
    assert entity["invitation_id"] in text
    assert wait_until(all_sent, WAIT)
    [row] = rows()
    assert row.link is not None and row.link.startswith("http") and "/join/" in row.link
    assert row.link in text and row.link in html
    assert "<script" not in html and "<img" not in html and row.invitation_id == entity["invitation_id"]
    assert row.kind == "invitation_sent" and row.sent_at is not None and row.attempts == 1 and row.last_error is None
    assert str(message["Message-ID"]) == f"<{row.id}@onboards>"


def test_workflow_emails_every_seller_user_once(client, mailbox, seller, buyer):
    colleague = add_user(seller, "colleague@example.com")
    entity = invite(client, seller, buyer.email)
    seller_flow(client, seller, entity["id"])
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    done = put_status(client, buyer, onboard, "completed")
    assert done.status_code == 200 and done.json()["status"] == "completed", done.text

    assert wait_until(lambda: len(mailbox.messages) >= 5 and all_sent(), WAIT), mailbox.messages
    assert received(mailbox, "invites you") == [buyer.email]
    assert received(mailbox, "accepted your invitation") == sorted([seller.email, colleague])
    assert received(mailbox, "ready to receive your leads") == sorted([seller.email, colleague])
    assert len(mailbox.messages) == 5
    assert set(message_ids(mailbox).values()) == {1}
    assert all(row.attempts == 1 for row in rows())


def test_smtp_down_loses_nothing(app, smtp, senders):
    addresses = enqueue(3)
    slow = sender(smtp, retry_seconds=3)
    before = utcnow()

    assert slow.send_due() == 0  # nothing listens on the port
    failed = rows()
    assert len(failed) == 3
    for row in failed:
        assert row.attempts == 1 and row.sent_at is None and row.claimed_until is None
        assert row.last_error and "Connection" in row.last_error
        assert row.next_attempt_at > before + timedelta(seconds=1), "a failed message must wait before a retry"
    assert slow.send_due() == 0 and [r.attempts for r in rows()] == [1, 1, 1], "retried before its time"

    smtp.start()
    slow.start()
    senders.append(slow)
    assert wait_until(all_sent, WAIT), [(r.to, r.attempts, r.last_error) for r in rows()]
    assert received(smtp) == sorted(addresses)
    assert set(message_ids(smtp).values()) == {1}
    assert {r.attempts for r in rows()} == {2}
    assert {r.last_error for r in rows()} == {None}


def test_app_sender_retries_until_smtp_is_back(client, smtp, seller, buyer):
    """The app's own sender: messages made while the mail server is down arrive once it is up."""
    invite(client, seller, buyer.email)
    invite(client, seller, "someone@example.com")
    assert wait_until(lambda: all(r.attempts >= 1 and r.last_error for r in rows()), WAIT), "no attempt was made"
    assert all(r.sent_at is None for r in rows())

    smtp.start()
    assert wait_until(all_sent, WAIT), [(r.to, r.attempts, r.last_error) for r in rows()]
    assert received(smtp) == sorted([buyer.email, "someone@example.com"])
    assert set(message_ids(smtp).values()) == {1}


def test_two_senders_deliver_each_message_once(app, mailbox, senders):
    addresses = enqueue(40)
    first, second = sender(mailbox), sender(mailbox)
    senders.extend([first, second])
    first.start()
    second.start()

    assert wait_until(all_sent, WAIT), sum(r.sent_at is None for r in rows())
    assert received(mailbox) == sorted(addresses)
    ids = message_ids(mailbox)
    assert set(ids) == {f"<{r.id}@onboards>" for r in rows()}
    assert [i for i, n in ids.items() if n > 1] == []
    assert {r.attempts for r in rows()} == {1}


def test_failing_delivery_is_retried_with_growing_delays(app):
    [address] = enqueue(1)
    failures = 4
    delivered: list[str | None] = []

    def flaky(message: OutboxMessage, _held: Callable[[], bool]) -> None:
        if len(delivered) < failures:
            delivered.append(None)
            raise ConnectionError("mail server away")
        delivered.append(message.to)

    mailer = OutboxSender(flaky, poll_seconds=0.05, retry_base_seconds=10, retry_max_seconds=60)
    delays = []
    for attempt in range(1, failures + 1):
        before = utcnow()
        assert mailer.send_due() == 0
        [row] = rows()
        assert row.attempts == attempt and row.sent_at is None
        assert row.last_error == "ConnectionError: mail server away"
        delays.append((row.next_attempt_at - before).total_seconds())
        assert mailer.send_due() == 0 and rows()[0].attempts == attempt, "retried before its time"
        with transaction():  # time passes: the retry is due
            OutboxMessage.update(next_attempt_at=utcnow() - timedelta(seconds=1)).execute()

    assert mailer.send_due() == 1
    [row] = rows()
    assert row.attempts == failures + 1 and row.sent_at is not None and row.last_error is None
    assert delivered[-1] == address
    assert delays == sorted(delays) and delays[0] < delays[1] < delays[2], delays
    assert delays[0] >= 10 and delays[-1] <= 61, delays


# A real TLS relay (tests/smtp_relay.py): certificates, STARTTLS, logins, slow replies, several senders.

@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("relay-ca"))


def relay_sender(relay: Relay, certificates: Certificates, *, require_tls: bool = False,
                 lease_seconds: float = 60, retry_seconds: float = 0.1) -> OutboxSender:
    deliverer = SmtpDeliverer(relay.url(), MAIL_FROM, ca_file=str(certificates.ca_file), require_tls=require_tls)
    return OutboxSender(deliverer, poll_seconds=0.05, retry_base_seconds=retry_seconds,
                        retry_max_seconds=retry_seconds, lease_seconds=lease_seconds)


def assert_nothing_counted(error: str) -> None:
    """Every message waits for the relay: none sent, parked or charged an attempt; the first says why."""
    outbox = rows()
    assert [(r.sent_at, r.failed_at, r.attempts) for r in outbox] == [(None, None, 0)] * len(outbox)
    assert outbox[0].last_error and error in outbox[0].last_error, outbox[0].last_error


@pytest.mark.parametrize("implicit_tls", [True, False], ids=["smtps", "starttls"])
def test_a_tls_relay_gets_the_messages_and_the_password_over_tls(app, certificates, implicit_tls):
    enqueue(3)
    with Relay(server_tls(certificates.trusted), implicit_tls=implicit_tls) as relay:
        assert relay_sender(relay, certificates).send_due() == 3
    assert [tls for _rcpt, _message, tls in relay.received] == [True] * 3
    assert relay.logins == [PASSWORD]  # one session for the round
    assert sorted(relay.message_ids()) == sorted(f"<{r.id}@onboards>" for r in rows())
    assert {(r.attempts, r.lease_token) for r in rows()} == {(1, None)}


@pytest.mark.parametrize("implicit_tls", [True, False], ids=["smtps", "starttls"])
@pytest.mark.parametrize("issuer, hostname", [("untrusted", "127.0.0.1"), ("trusted", "mail.other.example")],
                         ids=["unknown-ca", "other-host"])
def test_a_relay_whose_certificate_is_refused_gets_no_password_and_parks_nothing(
        app, certificates, caplog, implicit_tls, issuer, hostname):
    enqueue(2)
    tls = server_tls(getattr(certificates, issuer), hostname)
    with Relay(tls, implicit_tls=implicit_tls) as relay:
        # A back-off longer than the test: the second round must find the relay left alone, however slow
        # the machine is between the two.
        sender_ = relay_sender(relay, certificates, retry_seconds=600)
        assert sender_.send_due() == 0
        assert sender_.send_due() == 0
    assert relay.logins == [] and relay.mail_from == [] and relay.received == []
    assert_nothing_counted("certificate")
    assert [r.levelname for r in caplog.records if "MAIL RELAY IS REFUSED" in r.message] == ["ERROR"]


def test_smtp_require_tls_refuses_a_relay_without_starttls(app, certificates):
    enqueue(1)
    with Relay(tls=None, password=None) as relay:
        assert relay_sender(relay, certificates, require_tls=True).send_due() == 0
    assert relay.mail_from == [] and relay.received == []
    assert_nothing_counted("offers no STARTTLS, and SMTP_REQUIRE_TLS is set")


@pytest.mark.parametrize("reply", ["454 4.7.0 Temporary authentication failure", "535 5.7.8 Bad credentials"])
def test_a_refused_login_ends_the_session_and_parks_nothing(app, certificates, senders, reply):
    enqueue(2)
    with Relay(server_tls(certificates.trusted), auth_reply=reply) as relay:
        mailer = relay_sender(relay, certificates)
        assert mailer.send_due() == 0
        assert relay.logins and relay.mail_from == [], "a message went over a session that did not log in"
        assert_nothing_counted("refused the login")

        relay.auth_reply = None  # the relay mended
        mailer.start()
        senders.append(mailer)
        assert wait_until(all_sent, WAIT), [(r.attempts, r.last_error) for r in rows()]
    assert sorted(relay.message_ids()) == sorted(f"<{r.id}@onboards>" for r in rows())
    assert {r.attempts for r in rows()} == {1}


def test_a_slow_reply_to_the_final_dot_is_waited_for_not_sent_again(app, certificates, senders):
    """RFC 5321 gives the reply to "." ten minutes; a relay slower than the old 10 s timeout got every
    message again at each retry."""
    enqueue(1)
    with Relay(tls=None, password=None, data_delay=11) as relay:
        mailer = relay_sender(relay, certificates)
        senders.append(mailer)
        mailer.start()
        assert wait_until(all_sent, 60), [(r.attempts, r.last_error) for r in rows()]
    assert relay.message_ids() == [f"<{rows()[0].id}@onboards>"]
    assert rows()[0].attempts == 1


def test_two_senders_and_a_trickling_relay_deliver_once(app, certificates, senders):
    """The reply to "." trickles in for longer than a lease: the sender renews its lease meanwhile, so the
    other sender never takes the message over."""
    enqueue(1)
    with Relay(tls=None, password=None, data_delay=5, trickle=10) as relay:
        senders.extend(relay_sender(relay, certificates, lease_seconds=2) for _ in range(2))
        for mailer in senders:
            mailer.start()
        assert wait_until(all_sent, 30), [(r.attempts, r.last_error) for r in rows()]
    assert relay.message_ids() == [f"<{rows()[0].id}@onboards>"]
    assert rows()[0].attempts == 1


def test_a_sender_whose_lease_was_taken_over_never_sends_the_final_dot(app, certificates):
    enqueue(1)
    with Relay(tls=None, password=None, rcpt_delay=3) as relay:
        mailer = relay_sender(relay, certificates, lease_seconds=2)
        sending = thread_in_context(mailer.send_due, "sending")
        sending.start()
        assert relay.rcpt_seen.wait(WAIT)
        with transaction():  # another sender's claim, as if this one's lease had lapsed
            OutboxMessage.update(lease_token="another-sender", claimed_until=utcnow() + timedelta(minutes=5)).execute()
        sending.join(WAIT)
    assert not sending.is_alive()
    assert relay.received == []
    [row] = rows()
    assert (row.lease_token, row.sent_at, row.last_error, row.attempts) == ("another-sender", None, None, 1)


def claim(at: datetime, lease: timedelta, limit: int) -> list[OutboxMessage]:
    with transaction():
        return OutboxMessage.claim_due(at, lease, limit)[0]


def recording_sender(delivered: list[str], *, then: Callable[[OutboxMessage], None] = lambda _message: None,
                     max_attempts: int = 10, lease_seconds: float = 60) -> OutboxSender:
    """A sender whose deliverer only records each message's id, then does `then` with it."""

    def deliver(message: OutboxMessage, _held: Callable[[], bool]) -> None:
        delivered.append(message.id)
        then(message)

    return OutboxSender(deliver, poll_seconds=1, retry_base_seconds=1, retry_max_seconds=1, max_attempts=max_attempts,
                        lease_seconds=lease_seconds)


def test_concurrent_claims_take_each_message_once(app):
    """Two senders claiming at once: on PostgreSQL the second skips the rows the first holds and claims others while
    the first's transaction is still open; on SQLite it waits for that transaction. Either way no message is
    claimed twice, and none is left out."""
    enqueue(6)
    claims: dict[str, list[OutboxMessage]] = {}
    first_claimed, second_claimed = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with transaction():
            claims["first"] = OutboxMessage.claim_due(utcnow(), timedelta(minutes=1), 3)[0]
            first_claimed.set()
            # SQLite's second cannot claim before this commits: a second is wait enough to see it does not.
            seen["second claimed while the first held its rows"] = second_claimed.wait(WAIT if is_postgres() else 1)
            seen["postgresql"] = is_postgres()

    def second() -> None:
        first_claimed.wait(WAIT)
        claims["second"] = claim(utcnow(), timedelta(minutes=1), 3)
        second_claimed.set()

    threads = [thread_in_context(run, run.__name__) for run in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    ids = [[m.id for m in claims[name]] for name in ("first", "second")]
    assert len(ids[0]) == len(ids[1]) == 3 and not set(ids[0]) & set(ids[1]), ids
    assert {(r.attempts, r.lease_token is not None) for r in rows()} == {(1, True)}
    assert seen["second claimed while the first held its rows"] is seen["postgresql"]


def test_a_claims_lease_is_renewed_for_each_message_it_still_holds(app):
    lease = timedelta(seconds=6)  # renewed every 2 s: room for a slow machine between the steps below
    enqueue(2)
    claimed = claim(utcnow(), lease, 2)
    lapsing = claimed[0].claimed_until
    assert lapsing is not None

    def row(message: OutboxMessage) -> OutboxMessage:
        with transaction(write=False):
            return OutboxMessage.get_by_id(message.id)

    with Lease(claimed, lease) as held:
        with transaction():  # another sender's claim of the second, as if its lease had lapsed
            OutboxMessage.update(lease_token="another-sender").where(OutboxMessage.id == claimed[1].id).execute()
        assert wait_until(lambda: not held.held(claimed[1].id), WAIT), "a message taken over still held"
        assert wait_until(lambda: (row(claimed[0]).claimed_until or lapsing) > lapsing, WAIT), "never renewed"
        assert held.held(claimed[0].id), "the message still the claim's lost its lease"
    assert row(claimed[0]).lease_token == claimed[0].lease_token
    taken = row(claimed[1])
    assert taken.lease_token == "another-sender" and taken.claimed_until == lapsing


def test_a_message_whose_claim_lapsed_is_claimed_alone(app):
    """Its sender stopped without a word, perhaps because of it: claimed with others, it would charge each of
    them an attempt every time it stopped a sender again."""
    enqueue(4)
    first, second = claim(utcnow(), timedelta(minutes=1), 2)
    later = utcnow() + timedelta(minutes=2)  # their lease lapsed, never renewed
    fresh = sorted(r.id for r in rows() if r.id not in (first.id, second.id))
    claims = []
    for _ in range(4):
        with transaction():
            claimed, more = OutboxMessage.claim_due(later, timedelta(minutes=1), 4)
        claims.append(([(m.id, m.attempts) for m in claimed], more))
    # First tries first: the two never tried, not the lapsed ones behind them; then each lapsed one alone.
    assert claims == [([(fresh[0], 1), (fresh[1], 1)], True), ([(first.id, 2)], True), ([(second.id, 2)], True),
                      ([], False)]


def test_a_round_sends_every_lapsed_message_one_claim_at_a_time(app):
    enqueue(4)
    claim(utcnow() - timedelta(minutes=2), timedelta(minutes=1), 4)  # their lease lapsed a minute ago
    delivered: list[str] = []
    mailer = recording_sender(delivered)
    assert mailer.send_due() == 4, "a claim cut short must not end the round"
    assert sorted(delivered) == sorted(r.id for r in rows()) and all_sent()


def test_a_message_that_stops_its_sender_at_every_attempt_is_parked(app):
    enqueue(1)
    with transaction():  # ten claims lapsed: its sender died each time before a word was written
        OutboxMessage.update(attempts=10, claimed_until=utcnow() - timedelta(minutes=1),
                             lease_token="a-sender-gone").execute()
    delivered: list[str] = []
    assert recording_sender(delivered, max_attempts=10).send_due() == 0
    [row] = rows()
    assert delivered == [] and row.failed_at is not None and row.sent_at is None
    assert row.last_error == "its sender stopped during each attempt" and row.lease_token is None


def test_a_round_stopped_gives_back_only_what_it_never_handed_to_the_relay(app):
    enqueue(3)
    delivered: list[str] = []

    def lose_the_lease_and_stop(_message: OutboxMessage) -> None:
        mailer.stop()  # as a shutdown asks while an e-mail is in hand
        raise LeaseLost("the lease ended before the final '.'")  # its row stays this claim's

    mailer = recording_sender(delivered, then=lose_the_lease_and_stop)
    assert mailer.send_due() == 0
    outbox = {r.id: r for r in rows()}
    tried = outbox.pop(delivered[0])
    assert (tried.attempts, tried.lease_token is not None, tried.sent_at) == (1, True, None)
    assert [(r.attempts, r.lease_token, r.claimed_until) for r in outbox.values()] == [(0, None, None)] * 2


def test_a_message_no_longer_held_is_given_back_not_sent(app, monkeypatch):
    enqueue(3)
    with transaction(write=False):
        skipped = sorted(r.id for r in OutboxMessage.select())[1]
    monkeypatch.setattr(Lease, "held", lambda self, message_id: message_id != skipped)  # as if taken over
    delivered: list[str] = []
    assert recording_sender(delivered).send_due() == 2
    assert skipped not in delivered
    row = next(r for r in rows() if r.id == skipped)
    assert (row.attempts, row.lease_token, row.claimed_until, row.sent_at) == (0, None, None, None)


def test_a_slow_relay_has_the_rest_of_a_claim_given_back_and_claims_one_at_a_time(app):
    """While a slow relay keeps a claim's messages waiting for a third of the lease, the rest go back for other
    senders to share: each later delivery finds only the message in hand claimed."""
    enqueue(3)
    claimed_then: list[int] = []

    def slow(_message: OutboxMessage) -> None:
        with transaction(write=False):
            claimed_then.append(OutboxMessage.select().where(OutboxMessage.lease_token.is_null(False)).count())
        time.sleep(1.1)  # longer than a third of the 3 s lease

    assert recording_sender([], then=slow, lease_seconds=3).send_due() == 3 and all_sent()
    assert claimed_then == [3, 1, 1]
