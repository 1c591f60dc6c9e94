"""Faults with real server processes: two processes on one database, `kill -9` under load, and the
database going away and coming back. Each starts `onboards serve` as a child process."""

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from models.accounts import Account, User
from models.base import bind, release, transaction
from models.connections import Connection
from models.flows import Flow
from models.migrations import migrate
from models.onboards import COMPLETING, Onboard
from models.outbox import OutboxMessage
from tests.helpers import Party, basic_auth, invite, wait_until
from tests.servers import Server, SmtpSink, TcpProxy, server_factory

pytestmark = pytest.mark.slow

CLIENTS = 50
HTTP_TIMEOUT = 15.0  # a request during a fault that takes longer than this is a hang
LOAD_THREADS = 6
LOAD_PAIRS = 400
COMPLETED_BEFORE_KILL = 12
# A message claimed by a killed process, or whose claim's commit went unanswered, stays claimed for
# mailer.LEASE (60 s): wait longer than that.
DRAIN_SECONDS = 150.0

StartServer = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    with server_factory(tmp_path) as start:
        yield start


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def prepare(url: str) -> None:
    """Binds the models of this process to `url` and migrates it."""
    bind(url, max_connections=8)
    migrate()


def make_parties(*names_and_emails: tuple[str, str]) -> list[Party]:
    """Accounts with one user and a live API key each, made in one transaction."""
    with transaction():
        made = [Account.create_with_user(name, email) for name, email in names_and_emails]
    return [Party(account.id, user.id, user.email, key) for account, user, key in made]


def checked(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.request.url.path}: " \
                                           f"{response.status_code} {response.text[:500]}"
    return response.json()


def flow_with_buyer_step(http: httpx.Client, seller: Party, entity_id: str) -> dict:
    return checked(http.post("/flows", headers=seller.auth, json={
        "name": "Leads", "steps": [{"type": "recipient", "entity": {"id": entity_id}, "enabled": False}]}), 201)


def no_unexpected_errors(*servers: Server) -> None:
    for server in servers:
        log = server.log()
        assert "unexpected error" not in log, log[-5000:]


# --- two processes on one database ------------------------------------------------------------------------------


def test_two_processes_complete_one_onboard_once(database_url, start_server):
    prepare(database_url)
    seller, buyer = make_parties(("Acme Leads", "seller@example.com"), ("Bright Buyers", "buyer@example.com"))
    with transaction():
        User.create(account=seller.account_id, email="colleague@example.com")
    first, second = start_server(database_url), start_server(database_url)

    with httpx.Client(base_url=first.url, timeout=HTTP_TIMEOUT) as http:
        entity = invite(http, seller, buyer.email)
        seller_flow = flow_with_buyer_step(http, seller, entity["id"])
        buyer_flow = checked(http.post("/flows", json={"name": "Inbound"}, headers=buyer.auth), 201)
        onboard = checked(http.post("/onboards", json={"invitation_id": entity["invitation_id"]},
                                    headers=buyer.auth), 201)
        checked(http.put(f"/onboards/{onboard['id']}", headers=buyer.auth, json={
            "invitation_id": onboard["invitation_id"], "flow_id": buyer_flow["id"], "status": "in_progress"}), 200)

    barrier = threading.Barrier(CLIENTS, timeout=60)
    body = {"invitation_id": onboard["invitation_id"], "status": "completed"}

    def complete(index: int) -> httpx.Response:
        with httpx.Client(base_url=(first, second)[index % 2].url, timeout=60) as http:
            barrier.wait()
            return http.put(f"/onboards/{onboard['id']}", json=body, headers=buyer.auth)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        responses = list(pool.map(complete, range(CLIENTS)))

    assert Counter(r.status_code for r in responses) == {200: CLIENTS}, [r.text[:300] for r in responses]
    assert {r.json()["status"] for r in responses} == {"completed"}
    with transaction(write=False):
        final = Onboard.get_by_id(onboard["id"])
        assert (final.status, final.flow_id) == ("completed", buyer_flow["id"])
        connection = Connection.get_by_id(onboard["connection_id"])
        assert connection.has_setup_buyer_delivery is True
        step = Flow.get_by_id(seller_flow["id"]).steps[0]
        assert step["enabled"] is True
        assert [(m["property"], m["value"]) for m in step["integration"]["mappings"]] == [("flow_id", buyer_flow["id"])]
        flows = list(Flow.for_account(buyer.account_id))
        assert [f.id for f in flows] == [buyer_flow["id"]], "a setup that lost the race left a flow behind"
        assert [s["entity"]["id"] for s in flows[0].sources] == [connection.seller_entity_id]
        mailed = sorted(m.to for m in OutboxMessage.select().where(OutboxMessage.kind == "buyer_delivery_set_up"))
        assert mailed == ["colleague@example.com", "seller@example.com"]
    no_unexpected_errors(first, second)


# --- kill -9 under load -----------------------------------------------------------------------------------------


def run_pair(http: httpx.Client, seller: Party, buyer: Party) -> None:
    """The whole workflow of one pair: invite, seller flow with a buyer step, onboard, complete."""
    entity = invite(http, seller, buyer.email)
    flow_with_buyer_step(http, seller, entity["id"])
    onboard = checked(http.post("/onboards", json={"invitation_id": entity["invitation_id"]}, headers=buyer.auth), 201)
    done = checked(http.put(f"/onboards/{onboard['id']}", headers=buyer.auth,
                            json={"invitation_id": onboard["invitation_id"], "status": "completed"}), 200)
    assert done["status"] == "completed", done


class Load:
    """Threads running `run_pair` over prepared pairs until the server dies or they run out."""

    def __init__(self, base_url: str, pairs: list[tuple[Party, Party]]) -> None:
        self.base_url, self.pairs = base_url, iter(pairs)
        self.lock = threading.Lock()
        self.completed = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._work, name=f"load-{n}") for n in range(LOAD_THREADS)]

    def _next(self) -> tuple[Party, Party] | None:
        with self.lock:
            return next(self.pairs, None)

    def _work(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=HTTP_TIMEOUT) as http:
            while (pair := self._next()) is not None:
                try:
                    run_pair(http, *pair)
                except httpx.TransportError:
                    return  # the server is gone
                except AssertionError as failure:
                    with self.lock:
                        self.failures.append(str(failure))
                    return
                with self.lock:
                    self.completed += 1

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pairs = iter(())
        for thread in self.threads:
            thread.join(HTTP_TIMEOUT * 4)
        assert not any(t.is_alive() for t in self.threads), "load threads did not stop"


def setup_effects(onboard: Onboard) -> dict[str, bool]:
    """Which of the buyer setup's effects are in the database for this onboard."""
    connection = Connection.get_by_id(onboard.connection_id)
    assert connection.seller_id and connection.buyer_entity_id, "an onboard's connection has both sides"
    seller_steps = [step for flow in Flow.for_account(connection.seller_id)
                    for step in flow.steps_for(connection.buyer_entity_id)]
    mappings = [m for step in seller_steps for m in step["integration"]["mappings"]]
    seller_email = User.get(User.account == connection.seller_id).email
    return {
        "connection flagged": connection.has_setup_buyer_delivery,
        "seller step mapped": any(m["property"] == "flow_id" for m in mappings),
        "seller step enabled": any(s["enabled"] for s in seller_steps),
        "buyer flow sourced": any(s["entity"]["id"] == connection.seller_entity_id
                                  for flow in Flow.for_account(onboard.account_id) for s in flow.sources),
        "buyer flow recorded": onboard.flow_id is not None,
        "seller mailed": OutboxMessage.select().where(
            OutboxMessage.kind == "buyer_delivery_set_up", OutboxMessage.to == seller_email,
            OutboxMessage.body.contains(connection.id)).exists(),
    }


def test_kill_9_under_load_leaves_whole_setups_and_loses_no_mail(database_url, start_server, smtp_sink):
    prepare(database_url)
    parties = make_parties(*((f"{role} {n}", f"{role.lower()}{n}@example.com")
                             for n in range(LOAD_PAIRS) for role in ("Seller", "Buyer")))
    pairs = list(zip(parties[::2], parties[1::2], strict=True))
    server = start_server(database_url, smtp_url=smtp_sink.url)

    with Load(server.url, pairs) as load:
        reached = wait_until(lambda: load.completed >= COMPLETED_BEFORE_KILL or load.failures, 120)
        server.kill()
    assert not load.failures, load.failures
    assert reached, f"only {load.completed} pairs completed before the deadline"

    restarted = start_server(database_url, smtp_url=smtp_sink.url)
    with transaction(write=False):
        onboards = list(Onboard.select())
        states = {o.id: (o.status, setup_effects(o)) for o in onboards}
    partial = {oid: (status, effects) for oid, (status, effects) in states.items()
               if len(set(effects.values())) != 1 or all(effects.values()) != (status in COMPLETING)}
    assert not partial, partial
    completed = sum(status in COMPLETING for status, _ in states.values())
    assert completed >= load.completed, (completed, load.completed)

    with transaction(write=False):
        multiple = [(to, n) for (to, _), n in Counter(
            (m.to, m.body) for m in OutboxMessage.select().where(OutboxMessage.kind == "buyer_delivery_set_up")
        ).items() if n > 1]
    assert not multiple, multiple

    # SMTP cannot be exactly-once across a crash: a message the mail server accepted in the instant
    # before the kill, whose "sent" was not yet committed, goes out again (same Message-ID, so the
    # receiver can drop it). The sender sends one message at a time, so at most that one.
    assert_mailed_once_each(smtp_sink, in_flight_at_crash=1)
    no_unexpected_errors(restarted)


def assert_mailed_once_each(smtp_sink: SmtpSink, in_flight_at_crash: int = 0) -> None:
    """Waits until the outbox is empty, then checks that the sink got each of its messages exactly once,
    but for at most `in_flight_at_crash` messages received twice, each on its second attempt."""

    def drained() -> bool:
        with transaction(write=False):
            return OutboxMessage.backlog() == 0

    assert wait_until(drained, DRAIN_SECONDS, every=0.5), "the outbox did not drain"
    with transaction(write=False):
        rows = {f"<{m.id}@onboards>": m for m in OutboxMessage.select()}
    received = smtp_sink.received()
    lost = rows.keys() - received.keys()
    unknown = received.keys() - rows.keys()
    twice = {message_id: (n, rows[message_id].attempts if message_id in rows else None)
             for message_id, n in received.items() if n > 1}
    resent_in_flight = {message_id for message_id, (n, attempts) in twice.items() if n == 2 and attempts == 2}
    assert (lost, unknown) == (set(), set()) and len(twice) <= in_flight_at_crash and set(twice) == resent_in_flight, (
        f"{len(rows)} outbox rows, {sum(received.values())} e-mails received: {len(lost)} lost, "
        f"{len(unknown)} unknown, {len(twice)} received more than once (Message-ID: (times, attempts)): "
        f"{sorted(twice.items())[:10]}")


# --- the database goes away and comes back ----------------------------------------------------------------------


@pytest.fixture
def empty_postgres(postgres_url: str) -> Iterator[str]:
    """The run's throw-away PostgreSQL database with an empty schema, migrated and bound here."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    prepare(postgres_url)
    yield postgres_url
    release()


@pytest.fixture
def database_proxy(empty_postgres: str) -> Iterator[TcpProxy]:
    url = urlparse(empty_postgres)
    proxy = TcpProxy((url.hostname or "127.0.0.1", url.port or 5432))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def through(proxy: TcpProxy, database_url: str) -> str:
    url = urlparse(database_url)
    netloc = url.netloc.rpartition("@")[0] + "@" if "@" in url.netloc else ""
    return url._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}").geturl()


def unavailable(response: httpx.Response) -> bool:
    return (response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
            and response.json()["status"] == 503)


def test_database_going_away_is_503_and_the_service_recovers(empty_postgres, database_proxy, start_server,
                                                           smtp_sink):
    seller, buyer = make_parties(("Acme Leads", "seller@example.com"), ("Bright Buyers", "buyer@example.com"))
    server = start_server(through(database_proxy, empty_postgres), smtp_url=smtp_sink.url)

    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT) as http:
        entity = invite(http, seller, buyer.email)
        flow_with_buyer_step(http, seller, entity["id"])
        checked(http.get("/onboards", headers=buyer.auth), 200)
        create = {"invitation_id": entity["invitation_id"]}

        database_proxy.stop()
        outage: list[str] = []
        for _ in range(25):  # more requests than the server's pool has connections
            for method, path, body in (("GET", "/health", None), ("GET", "/onboards", None),
                                       ("POST", "/onboards", create)):
                try:
                    response = http.request(method, path, json=body, headers=basic_auth(buyer.key))
                except httpx.TimeoutException:
                    pytest.fail(f"{method} {path} hung (no answer in {HTTP_TIMEOUT}s) while the database was away")
                if not unavailable(response):
                    outage.append(f"{method} {path} -> {response.status_code} {response.text[:200]}")
        assert not outage, outage[:10]

        database_proxy.start()
        assert wait_until(lambda: http.get("/health").status_code == 200, 60, every=0.2), "no recovery in 60 s"
        onboard = checked(http.post("/onboards", json=create, headers=buyer.auth), 201)
        done = checked(http.put(f"/onboards/{onboard['id']}", headers=buyer.auth,
                                json={"invitation_id": onboard["invitation_id"], "status": "completed"}), 200)
        assert done["status"] == "completed", done

    def list_onboards(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT) as client:
            return client.get("/onboards", headers=buyer.auth).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert Counter(pool.map(list_onboards, range(40))) == {200: 40}

    assert_mailed_once_each(smtp_sink)
    no_unexpected_errors(server)
