"""Hostile and careless clients, against real server processes on both databases: what schemathesis never
sends. Each case asserts the answer, that nothing was stored or sent, and where time or memory is the
point, a bound as a ratio against a normal request measured in the same test (never an absolute time:
the machine is shared). README, "Hostile and careless clients", lists what each gets."""

import base64
import json
import re
import secrets
import socket
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from models.base import bind, release, transaction, utcnow
from models.flows import Flow
from models.invitations import Invitation
from models.limits import RateCounter
from models.migrations import migrate
from models.outbox import OutboxMessage
from onboards.clients import client_address, networks
from onboards.demo import SELLER_EMAIL, demo_key
from tests.helpers import (
    WORST_BODIES,
    basic_auth,
    fresh_window,
    parse,
    party,
    read_to_end,
    refusal,
    refusals_counted,
    wait_until,
)
from tests.postgres import ADMIN_URL, BACKENDS, throwaway_database
from tests.servers import RELAXED_LIMITS, Server, SmtpSink, TcpProxy, started

pytestmark = pytest.mark.slow

DEFAULT_LIMITS = {"INVITATIONS_PER_ACCOUNT_PER_HOUR": "100", "INVITATIONS_PER_ADDRESS_PER_DAY": "5",
                  "RESEND_COOLDOWN_SECONDS": "300", "FAILED_AUTH_PER_MINUTE": "20"}
BODY_OPERATIONS = [("POST", "/onboards"), ("PUT", "/onboards/{onboard}"), ("POST", "/onboard/buyer"),
                   ("POST", "/invitations/recipient"), ("POST", "/invitations/source"), ("POST", "/flows"),
                   ("PUT", "/flows/{flow}")]


@contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """A database of its own, migrated, the models of this process bound to it."""
    if kind == "sqlite":
        url = f"sqlite:///{directory}/hostile.db"
        bind(url, max_connections=4)
        migrate()
        yield url
        release()
        return
    with throwaway_database(ADMIN_URL, "onboards_hostile") as url:
        bind(url, max_connections=4)
        migrate()
        try:
            yield url
        finally:
            release()


class Service:
    """A server process on a database of its own, with two parties, and an HTTP client."""

    def __init__(self, url: str, directory: Path, **settings: str) -> None:
        self.database_url = url
        self.server = Server(url, directory / f"server-{time.monotonic_ns()}.log", **settings)
        self.server.wait_ready()
        stamp = time.monotonic_ns()
        self.seller = party("Acme Leads", f"seller{stamp}@example.com")
        self.buyer = party("Bright Buyers", f"buyer{stamp}@example.com")
        self.http = httpx.Client(base_url=self.server.url, timeout=30)

    def close(self) -> None:
        self.http.close()
        self.server.stop()

    def outbox(self) -> list[OutboxMessage]:
        with transaction(write=False):
            return list(OutboxMessage.select().order_by(OutboxMessage.id))

    def invitations(self) -> int:
        with transaction(write=False):
            return Invitation.select().count()

    def timed(self, request: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = request()
        return response, time.perf_counter() - started

    def normal_seconds(self, request: Callable[[], httpx.Response], times: int = 5) -> float:
        """The median time of a normal request, measured now."""
        return statistics.median(self.timed(request)[1] for _ in range(times))


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One server per database for the cases that leave no state behind that matters to others."""
    directory = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with database(request.param, directory) as url:
        service = Service(url, directory)
        try:
            yield service
        finally:
            service.close()


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Starts a server with these settings on a database of its own (for limits, outages, logs)."""
    started: list[Service] = []
    with database(request.param, tmp_path) as url:

        def start(**settings: str) -> Service:
            started.append(Service(url, tmp_path, **settings))
            return started[-1]

        start.database_url = url  # type: ignore[attr-defined]
        try:
            yield start
        finally:
            for service in started:
                service.close()


def flow_body(size: int = 1) -> dict:
    return {"name": "Solar leads", "fields": ["email"] * size}


# 1. Bodies whose validation could cost per item: bounded before any per-item work, off the event loop.

@pytest.mark.parametrize(("member", "item"), [("fields", 7), ("sources", {"entity": 1}), ("steps", [])],
                         ids=["fields", "sources", "steps"])
def test_a_megabyte_of_invalid_items_is_refused_at_once_and_never_holds_the_loop(service, member, item):
    auth = service.seller.auth
    normal = service.normal_seconds(lambda: service.http.post("/flows", json=flow_body(), headers=auth))
    body = json.dumps({"name": "x", member: [item] * (1_000_000 // (len(json.dumps(item)) + 2))}).encode()
    assert 900_000 < len(body) <= 1024 * 1024
    health: list[float] = []
    with ThreadPoolExecutor(4) as pool:
        big = [pool.submit(service.timed, lambda: service.http.post(
            "/flows", content=body, headers={**auth, "Content-Type": "application/json"})) for _ in range(3)]
        while True:  # one probe at least: the three can be answered before the first check
            health.append(service.timed(lambda: service.http.get("/health"))[1])
            if all(f.done() for f in big):
                break
        answers = [f.result() for f in big]
    for response, seconds in answers:
        assert response.status_code == 400
        problem = response.json()
        if member == "fields":  # few containers: parsed, and its bound checked before any item
            assert problem["errors"] == [{"pointer": "/fields", "message": problem["errors"][0]["message"]}]
            assert problem["errors"][0]["message"] == "must hold at most 200 items"
        else:  # more arrays and objects than any body of the spec's holds: refused unparsed
            assert "arrays and objects" in problem["detail"]
        assert seconds < 200 * normal, (seconds, normal)
    assert max(health) < 100 * normal, (health, normal)


def test_an_object_of_a_hundred_thousand_unknown_members_is_one_short_error(service):
    body = {"name": "x", **{f"m{n}": n for n in range(60_000)}}
    response = service.http.post("/flows", json=body, headers=service.seller.auth)
    assert response.status_code == 400 and len(response.content) < 4000
    assert len(response.json()["errors"]) <= 20


@pytest.mark.parametrize("body", WORST_BODIES.values(), ids=WORST_BODIES.keys())
def test_a_megabyte_of_the_worst_shape_is_a_400_and_stores_nothing(service, body, capsys):
    assert len(body) <= 1024 * 1024
    headers = {**service.seller.auth, "Content-Type": "application/json"}
    flows = flow_count()
    service.http.get("/health")
    before = service.server.cpu_seconds()
    response = service.http.post("/flows", content=body, headers=headers)
    spent = service.server.cpu_seconds() - before
    assert response.status_code == 400, response.text  # under MAX_BODY_BYTES: refused for its shape
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400
    with capsys.disabled():  # measured for the record (make bench's hostile row bounds it), never asserted here
        print(f"\n  {len(body)} bytes: {response.status_code} in {spent * 1000:.0f} ms of server CPU")
    assert flow_count() == flows


def flow_count() -> int:
    with transaction(write=False):
        return Flow.select().count()


@pytest.mark.parametrize(("body", "pointer"), [
    (b'{"email": "a@example.com", "email": "b@example.com"}', "/email"),
    (b'{"email": "a@example.com", "description": "x", "description": "y"}', "/description"),
    (b'{"email": "a@example.com", "x": {"k": 1, "k": 2}}', "/x/k"),
    (b'{"email": "a@example.com", "x": [1, {"k": 1, "j": 0, "k": 1}]}', "/x/1/k"),
])
def test_a_member_given_twice_is_400_naming_it_and_nothing_is_sent(service, body, pointer):
    before = len(service.outbox())
    response = service.http.post("/invitations/recipient", content=body,
                                 headers={**service.seller.auth, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"] == [{"pointer": pointer, "message": "is given more than once"}]
    assert len(service.outbox()) == before


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    b"NOT A REQUEST\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello, to a plain HTTP port
])
def test_what_the_http_parser_refuses_is_a_problem(service, request_bytes):
    with socket.create_connection(("127.0.0.1", service.server.port), timeout=30) as sock:
        sock.sendall(request_bytes)
        answer = read_to_end(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert (problem["status"], problem["type"]) == (400, "/docs/problems#invalid-request")



def test_a_valid_pipelined_request_is_answered_before_the_junk_after_it(service):
    valid = b"GET /flows HTTP/1.1\r\nHost: x\r\nAuthorization: " + service.buyer.auth["Authorization"].encode()
    with socket.create_connection(("127.0.0.1", service.server.port), timeout=30) as sock:
        sock.sendall(valid + b"\r\n\r\nNOT A REQUEST\r\n\r\n")
        answer = read_to_end(sock)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 "), answer[:500]
    length = int(re.search(rb"(?im)^content-length: *(\d+)", first)[1])  # type: ignore[index]
    assert json.loads(rest[:length]) == []
    head, _, body = rest[length:].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"] == "/docs/problems#invalid-request"

# 2. Heads: size and time.

def test_huge_unfinished_headers_are_refused_before_they_pile_up(service):
    before = service.server.memory_bytes()
    chunk = b"a" * 65536
    refused = 0
    sockets = [socket.create_connection(("127.0.0.1", service.server.port)) for _ in range(16)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /flows HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(64):  # up to 4 MiB each, 64 MiB in all, if the server kept reading
            for sock in sockets:
                try:
                    sock.sendall(chunk)
                except OSError:
                    continue
        for sock in sockets:
            sock.settimeout(5)
            try:
                refused += sock.recv(100).startswith(b"HTTP/1.1 431")
            except OSError:
                refused += 1  # reset before the answer could be read: refused all the same
    finally:
        for sock in sockets:
            sock.close()
    assert refused == 16
    assert service.server.memory_bytes() - before < 32 * 1024 * 1024
    assert service.http.get("/health").status_code == 200


def test_slow_clients_are_cut_off_after_the_header_timeout(fresh):
    service = fresh(HEADER_TIMEOUT_SECONDS="1", MAX_CONNECTIONS_PER_CLIENT="200")  # a hundred from one address
    normal = service.normal_seconds(lambda: service.http.get("/health"))
    sockets = [socket.create_connection(("127.0.0.1", service.server.port)) for _ in range(100)]
    started = time.monotonic()
    for sock in sockets:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        sock.settimeout(10)
    answers = [read_to_end(sock) for sock in sockets]  # to the end: the server closes each
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)
    assert time.monotonic() - started < 8
    for sock in sockets:
        sock.close()
    assert service.timed(lambda: service.http.get("/health"))[1] < 100 * normal


# 3, 4. Addresses: exactly one, and nothing a mail library could read as more.

CRAFTED = ["x>,<evil@evil.example", "victim@example.org,evil", "g:evil@evil.example;", "a@b", "<a@b.example>",
           "Victim <victim@example.org>", '"quoted"@example.org', "a b@example.org", "victim@example.org\r\nBcc: x@y.z",
           "a\u0085@example.org", "a@exa\u2028mple.org", "a\x0b@example.org", "a\x0c@example.org", "ünï@example.org",
           "victim@example.org;evil@evil.example", "a@[127.0.0.1]", "a@example..org", ".a@example.org"]


@pytest.mark.parametrize("email", CRAFTED)
def test_a_crafted_address_is_400_and_nothing_is_stored_or_sent(service, email):
    before, outbox = service.invitations(), len(service.outbox())
    for kind in ("recipient", "source"):
        response = service.http.post(f"/invitations/{kind}", json={"email": email}, headers=service.seller.auth)
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["pointer"] == "/email"
    assert (service.invitations(), len(service.outbox())) == (before, outbox)


def test_stored_malformed_addresses_are_parked_once_and_never_delay_others(fresh):
    sink = SmtpSink()
    sink.start()
    try:
        poison = [f"bad{n}\u2028@example.org" for n in range(300)] + [f"x{n}>,<evil@evil.example" for n in range(300)]
        with transaction():  # as a database from before addresses were checked holds them
            OutboxMessage.enqueue("invitation_sent", poison, "old", "old")
        service = fresh(SMTP_URL=sink.url)
        answer = service.http.post("/invitations/recipient", json={"email": "new.buyer@example.org"},
                                   headers=service.seller.auth)
        assert answer.status_code == 201
        assert wait_until(lambda: sum(sink.received().values()) == 1, 30), sink.received()
        assert wait_until(lambda: all(m.state == "failed" for m in service.outbox()[:-1]), 30)
        rows = service.outbox()
        assert {(m.state, m.attempts) for m in rows[:-1]} == {("failed", 1)}
        assert rows[-1].to == "new.buyer@example.org" and rows[-1].state == "sent"
        assert 'onboards_outbox_failed 600.0' in service.http.get("/metrics").text
    finally:
        sink.stop()


# 5. Floods of e-mail: limits in the database, so they hold across processes.

def test_resends_are_cooled_down_and_invitations_limited_per_account(fresh):
    first = fresh(**DEFAULT_LIMITS)
    second = fresh(**DEFAULT_LIMITS)  # a second process on the same database: the limits are shared
    seller = first.seller.auth
    entity = first.http.post("/invitations/recipient", json={"email": "target@example.org"}, headers=seller).json()
    resends = [server.http.put(f"/invitations/{entity['entity']['id']}/resend", headers=seller)
               for server in (first, second) * 150]
    assert {r.status_code for r in resends} == {429}
    assert all(0 < int(r.headers["retry-after"]) <= 300 for r in resends)
    assert resends[0].headers["content-type"] == "application/problem+json"
    to_target = [m for m in first.outbox() if m.to == "target@example.org"]
    assert len(to_target) == 1
    # Per account and hour.
    codes = [(first, second)[n % 2].http.post("/invitations/recipient", json={"email": f"p{n}@example.org"},
                                              headers=seller).status_code for n in range(110)]
    assert codes == [201] * 99 + [429] * 11  # the first invitation counted too
    assert first.invitations() == 1 + 99


def test_the_per_address_limit_is_each_inviting_accounts_own(fresh):
    """Three accounts use up their own limit to one address; a fourth can still invite it: no party
    can stop another's invitation by inviting the address first."""
    limit = int(DEFAULT_LIMITS["INVITATIONS_PER_ADDRESS_PER_DAY"])
    first = fresh(**{**DEFAULT_LIMITS, "RESEND_COOLDOWN_SECONDS": "0"})
    second = fresh(**{**DEFAULT_LIMITS, "RESEND_COOLDOWN_SECONDS": "0"})  # the counts are shared by processes
    for n in range(3):
        inviter = party(f"Seller {n}", f"seller-{n}-{time.monotonic_ns()}@example.com")
        server = (first, second)[n % 2]
        invited = server.http.post("/invitations/recipient", json={"email": "target@example.org"},
                                   headers=inviter.auth)
        assert invited.status_code == 201, invited.text
        resend = f"/invitations/{invited.json()['entity']['id']}/resend"
        codes = [server.http.put(resend, headers=inviter.auth).status_code for _ in range(limit)]
        assert codes == [200] * (limit - 1) + [429]
    fourth = party("Seller 3", f"seller-3-{time.monotonic_ns()}@example.com")
    assert first.http.post("/invitations/source", json={"email": "target@example.org"},
                           headers=fourth.auth).status_code == 201
    assert len([m for m in first.outbox() if m.to == "target@example.org"]) == 3 * limit + 1


def test_sent_and_parked_messages_are_pruned_after_the_retention(fresh):
    old = utcnow() - timedelta(days=31)
    with transaction():
        OutboxMessage.enqueue("invitation_sent", ["a@example.org", "b@example.org", "c@example.org"], "s", "b")
        ids = [m.id for m in OutboxMessage.select().order_by(OutboxMessage.id)]
        OutboxMessage.update(sent_at=old).where(OutboxMessage.id == ids[0]).execute()
        OutboxMessage.update(failed_at=old).where(OutboxMessage.id == ids[1]).execute()
    service = fresh()
    assert wait_until(lambda: [m.id for m in service.outbox()][:1] == [ids[2]], 15), service.outbox()


# 6. A body without Content-Type: 415 naming application/json, nothing changed.

def test_a_body_without_content_type_is_415_on_every_body_operation(service):
    flow = service.http.post("/flows", json=flow_body(), headers=service.buyer.auth).json()
    before = (service.invitations(), len(service.outbox()))
    for method, path in BODY_OPERATIONS:
        url = path.format(onboard="0" * 24, flow=flow["id"])
        response = service.http.request(method, url, content=b'{"name": "x", "email": "a@example.org"}',
                                        headers=service.buyer.auth)
        assert response.status_code == 415, (method, path, response.text)
        assert "application/json" in response.json()["detail"]
    assert (service.invitations(), len(service.outbox())) == before
    assert service.http.get(f"/flows/{flow['id']}", headers=service.buyer.auth).json()["name"] == "Solar leads"


# 7. A database that stops answering.

@contextmanager
def behind_a_proxy(fresh: Callable[..., Service], **settings: str) -> Iterator[tuple[Service, TcpProxy]]:
    """A server whose PostgreSQL is reached through a TcpProxy that the test can pause."""
    target = urlparse(ADMIN_URL)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 5432))
    proxy.start()
    try:
        user = target.username or "postgres"
        proxied = urlparse(fresh.database_url)._replace(netloc=f"{user}@127.0.0.1:{proxy.port}")  # type: ignore[attr-defined]
        yield fresh(DATABASE_URL=proxied.geturl(), **settings), proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("fresh", ["postgres"], indirect=True)
def test_a_postgresql_that_stops_answering_gets_503s_in_bounded_time_then_recovers(fresh):
    """The server's TCP connections stay open and nothing comes back: no statement timeout of the server's
    can fire, so the service's own deadlines must."""
    with behind_a_proxy(fresh, AUTH_CACHE_SECONDS="0") as (service, proxy):
        auth = service.buyer.auth
        assert service.http.post("/flows", json=flow_body(), headers=auth).status_code == 201
        proxy.pause()
        with ThreadPoolExecutor(8) as pool:
            health = pool.submit(service.timed, lambda: service.http.get("/health"))
            work = [pool.submit(service.timed, lambda: service.http.post("/flows", json=flow_body(), headers=auth))
                    for _ in range(6)]
            health_answer, health_seconds = health.result()
            answers = [f.result() for f in work]
        assert health_answer.status_code == 503 and health_seconds < 4, (health_answer.text, health_seconds)
        assert refusal(health_answer) == "the database did not answer the health check within 2 seconds"
        # Past the deadline, or (its pooled connections all held by frozen work) the database unavailable at once.
        deadline = "the database did not answer within the request's 8 seconds (REQUEST_TIMEOUT_SECONDS)"
        details = [refusal(response) for response, _ in answers]
        assert set(details) <= {deadline, "the database is unavailable"}, details
        assert all(seconds < 12 for _, seconds in answers)
        proxy.resume()
        assert wait_until(lambda: service.http.get("/health").status_code == 200, 30)
        counts = {"request-deadline": details.count(deadline), "health-deadline": 1}
        assert refusals_counted(service.http) == {limit: count for limit, count in counts.items() if count}
        assert wait_until(lambda: service.http.get("/flows", headers=auth).status_code == 200, 30)
        # What was abandoned has finished, one way or the other, once no transaction is left open on the database.
        assert wait_until(lambda: transactions_open(fresh.database_url) == 0, 30)
        with transaction(write=False):
            assert Flow.select().count() == 1  # the requests answered 503 committed nothing


def transactions_open(database_url: str) -> int:
    """The sessions of other clients running a statement or holding a transaction open on the database."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction', "
                                 "'idle in transaction (aborted)')").fetchone()
    return row[0] if row else 0


DEADLINE_OF_2_SECONDS = ("the database did not answer within the request's 2 seconds (REQUEST_TIMEOUT_SECONDS)",
                         "the database is unavailable")


@pytest.mark.parametrize("fresh", ["postgres"], indirect=True)
def test_retries_with_the_same_idempotency_keys_through_a_frozen_postgresql_make_no_duplicate(fresh):
    """Eight writers, each retrying every POST with its key until it gets an answer, while PostgreSQL stops
    answering for longer than REQUEST_TIMEOUT_SECONDS: some requests get a 503 (their work may or may not
    have committed), yet each key makes exactly one flow, and every key's answer names it."""
    with behind_a_proxy(fresh, REQUEST_TIMEOUT_SECONDS="2") as (service, proxy):
        auth, stop = service.buyer.auth, threading.Event()
        answers: dict[str, str] = {}
        statuses: list[int] = []

        def write(writer: int) -> None:
            number = 0
            while not stop.is_set():
                key = f"writer-{writer}-{number}"
                while True:  # the same request, with the same key, until it is answered
                    try:
                        response = service.http.post("/flows", json={"name": key, "fields": ["email"]}, headers={
                            **auth, "Idempotency-Key": key})
                    except httpx.TransportError:
                        continue
                    statuses.append(response.status_code)
                    if response.status_code == 201:
                        answers[key] = response.json()["id"]
                        break
                    assert response.status_code in (409, 503), response.text
                    if response.status_code == 503:  # the work's deadline, or the key's claim's
                        assert refusal(response) in DEADLINE_OF_2_SECONDS, response.text
                    time.sleep(0.2)
                number += 1

        with ThreadPoolExecutor(8) as pool:
            writers = [pool.submit(write, n) for n in range(8)]
            try:
                assert wait_until(lambda: len(answers) >= 8, 30)
                proxy.pause()
                time.sleep(5)
                proxy.resume()
                answered = len(answers)
                assert wait_until(lambda: len(answers) >= answered + 8, 60)
            finally:  # the writers end, whatever failed: leaving the pool waits for them
                stop.set()
                proxy.resume()
            for writer in writers:
                writer.result(60)
        assert 503 in statuses, "the freeze hit no request"
        with transaction(write=False):
            made = [(flow.name, flow.id) for flow in Flow.select()]
        assert sorted(made) == sorted(answers.items())  # one flow per key, the one its answer names


@pytest.mark.parametrize("fresh", ["sqlite"], indirect=True)
def test_a_sqlite_file_locked_by_another_process_gets_503s_in_bounded_time_then_recovers(fresh):
    service = fresh()
    auth = service.buyer.auth
    path = urlparse(fresh.database_url).path.removeprefix("/")
    locker = sqlite3.connect(path, timeout=1, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        response, seconds = service.timed(lambda: service.http.post("/flows", json=flow_body(), headers=auth))
        assert refusal(response) == "the database is unavailable" and seconds < 12
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert service.http.post("/flows", json=flow_body(), headers=auth).status_code == 201


# 8. Lone surrogates anywhere: 400 naming the member.

@pytest.mark.parametrize(("path", "body", "pointer"), [
    ("/flows", '{"name": "x\\ud800"}', "/name"),
    ("/flows", '{"name": "x", "fields": ["ok", "\\udfff"]}', "/fields/1"),
    ("/invitations/recipient", '{"email": "a@example.org", "description": "\\ud83d"}', "/description"),
    ("/flows", '{"name": "x", "\\ud800": 1}', "/\ufffd"),  # an unknown member, its surrogate replaced
])
def test_a_lone_surrogate_is_400_naming_the_member(service, path, body, pointer):
    response = service.http.post(path, content=body.encode(), headers={**service.seller.auth,
                                                                      "Content-Type": "application/json"})
    assert response.status_code == 400
    assert pointer in [e["pointer"] for e in response.json()["errors"]]


# 9. Big flows: the page has a size bound, and so has the memory a page takes.

def test_pages_of_big_flows_end_at_their_size_bound(fresh):
    service = fresh()
    auth = service.buyer.auth
    mappings = [{"id": "abcdef", "property": "p", "value": "v" * 1000}] * 100
    step = {"type": "recipient", "id": "abcdef", "entity": {"id": "0" * 24, "name": "n"}, "enabled": True,
            "integration": {"module_id": "leadconduit-default.outbound", "mappings": mappings}}
    with transaction():  # 60 flows of about a megabyte each, within the spec's bounds
        for n in range(60):
            Flow.create(account=service.buyer.account_id, name=f"big {n}", steps=[step] * 10)
    normal_memory = service.server.memory_bytes()
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda _: service.http.get("/flows?limit=60", headers=auth), range(8)))
    for response in pages:
        assert response.status_code == 200 and len(response.content) <= 5 * 1024 * 1024
        assert 1 <= len(response.json()) < 60 and response.headers["link"].startswith("</flows?")
    assert service.server.memory_bytes() - normal_memory < 200 * 1024 * 1024


# 10. A flood of wrong keys: throttled per client address, and the valid user barely notices.

def test_a_flood_of_wrong_keys_is_throttled_and_the_valid_user_barely_notices(fresh):
    service = fresh(**DEFAULT_LIMITS)
    auth = service.buyer.auth
    normal = service.normal_seconds(lambda: service.http.post("/flows", json=flow_body(), headers=auth), 9)
    stop = threading.Event()
    codes: list[int] = []

    def flood() -> None:
        with httpx.Client(base_url=service.server.url, timeout=30) as http:
            while not stop.is_set():
                key = base64.b16encode(time.monotonic_ns().to_bytes(20, "big")).decode().lower()
                codes.append(http.get("/flows", headers=basic_auth(key)).status_code)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: 429 in codes, 30)  # the flood is under way, and throttled
        during = statistics.median(service.timed(
            lambda: service.http.post("/flows", json=flow_body(), headers=auth))[1] for _ in range(9))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert codes.count(401) == 20 and set(codes) == {401, 429}
    assert during < 10 * normal, (during, normal)
    throttled = service.http.get("/flows", headers=basic_auth("f" * 40))
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) <= 60


# 11, 12. Ambiguous and unsupported requests.

def test_duplicated_headers_and_parameters_are_400(service):
    one, two = service.buyer.auth["Authorization"], service.seller.auth["Authorization"]
    response = service.http.get("/flows", headers=[("Authorization", one), ("Authorization", two)])
    assert response.status_code == 400 and response.json()["errors"] == [
        {"header": "authorization", "message": "given more than once"}]
    for query in ("limit=2&limit=9", "sort=asc&sort=desc", "after_id=" + "0" * 24 + "&after_id=" + "1" * 24):
        response = service.http.get(f"/onboards?{query}", headers=service.buyer.auth)
        assert response.status_code == 400 and response.json()["errors"][0]["message"] == "given more than once"


@pytest.mark.parametrize("content_type", ["application/json; charset=bogus", "application/json; charset=latin-1",
                                          "application/json; charset=utf-16", "text/plain", "application/xml"])
def test_a_charset_or_media_type_other_than_json_in_utf8_is_415(service, content_type):
    before = len(service.http.get("/flows", headers=service.seller.auth).json())
    response = service.http.post("/flows", content=b'{"name": "x"}',
                                 headers={**service.seller.auth, "Content-Type": content_type})
    assert response.status_code == 415
    assert len(service.http.get("/flows", headers=service.seller.auth).json()) == before


@pytest.mark.parametrize("credentials", [lambda key: f"Basic {_b64('API:' + key)} junk",
                                         lambda key: f"Basic {_b64('API:' + key)[:-1]}",
                                         lambda key: f"Basic {_b64('API:' + key)}!",
                                         lambda key: f"Basic  {_b64('API:' + key)}x"])
def test_basic_credentials_are_one_token_of_strict_base64(service, credentials):
    response = service.http.get("/flows", headers={"Authorization": credentials(service.buyer.key)})
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Basic")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_weak_if_match_never_matches(service):
    flow = service.http.post("/flows", json=flow_body(), headers=service.buyer.auth)
    tag = flow.headers["etag"]
    response = service.http.put(f"/flows/{flow.json()['id']}", json={"name": "changed"},
                                headers={**service.buyer.auth, "If-Match": f"W/{tag}"})
    assert response.status_code == 412
    assert service.http.get(f"/flows/{flow.json()['id']}", headers=service.buyer.auth).json()["name"] == "Solar leads"


# 13. Redirects and links never name the host the client sent.

def test_redirects_and_links_never_reflect_the_host_header(service):
    evil = {"Host": "evil.example"}
    response = service.http.get("/flows/?limit=1", headers={**service.buyer.auth, **evil}, follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/flows?limit=1"
    for _ in range(2):
        service.http.post("/flows", json=flow_body(), headers=service.buyer.auth)
    listed = service.http.get("/flows?limit=1", headers={**service.buyer.auth, **evil})
    assert listed.headers["link"].startswith("</flows?") and "evil" not in listed.headers["link"]


# 14. Text logs a person can read.

def test_text_access_lines_say_method_path_status_duration_and_request_id(fresh, tmp_path):
    buyer = party("Text Logs", f"text{time.monotonic_ns()}@example.com")
    server = Server(fresh.database_url, tmp_path / "text.log", LOG_FORMAT="text", args=["--access-log"])
    try:
        server.wait_ready()
        httpx.get(f"{server.url}/flows", headers={**buyer.auth, "X-Request-ID": "req-text-1"})
        line = wait_until(lambda: next((line for line in server.log().splitlines() if "req-text-1" in line), None))
        assert line and "onboards.access" in line and "GET /flows 200" in line and line.rstrip().endswith("ms")
    finally:
        server.stop()


assert set(RELAXED_LIMITS) == set(DEFAULT_LIMITS)


# 15. Behind a reverse proxy (issue 27, rows 3 and 4): the client's address is believed only from TRUSTED_PROXIES, and
# the rate-limit keys stay bounded whatever a client sends.

def wrong_key() -> str:
    return secrets.token_hex(20)


@pytest.mark.parametrize(("peer", "headers", "trusted", "client"), [
    ("127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9")], "", "127.0.0.1"),
    ("127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9")], "127.0.0.1", "203.0.113.9"),
    ("127.0.0.1", [(b"x-forwarded-for", b"198.51.100.1, 203.0.113.9, 10.0.0.2")], "127.0.0.1,10.0.0.0/8",
     "203.0.113.9"),
    ("127.0.0.1", [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"203.0.113.9")], "127.0.0.1",
     "203.0.113.9"),
    ("127.0.0.1", [(b"forwarded", b'for=198.51.100.1, for="[2001:db8::7]:4711";proto=https')], "127.0.0.1",
     "2001:db8::7"),
    ("127.0.0.1", [(b"forwarded", b"for=203.0.113.9:80;by=10.0.0.2")], "127.0.0.0/8", "203.0.113.9"),
    ("127.0.0.1", [(b"forwarded", b"for=198.51.100.1"), (b"x-forwarded-for", b"203.0.113.9")], "127.0.0.1",
     "203.0.113.9"),
    ("127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9, junk")], "127.0.0.1", "127.0.0.1"),
    ("127.0.0.1", [(b"forwarded", b"for=unknown")], "127.0.0.1", "127.0.0.1"),
    ("127.0.0.1", [(b"forwarded", b"proto=https")], "127.0.0.1", "127.0.0.1"),
    ("127.0.0.1", [(b"x-forwarded-for", b"10.0.0.3, 10.0.0.2")], "127.0.0.1,10.0.0.0/8", "10.0.0.3"),
    ("127.0.0.1", [], "127.0.0.1", "127.0.0.1"),
    ("192.0.2.5", [(b"x-forwarded-for", b"203.0.113.9")], "127.0.0.1", "192.0.2.5"),
])
def test_the_client_is_the_peer_unless_a_trusted_proxy_names_one(peer, headers, trusted, client):
    assert client_address({"client": (peer, 1234), "headers": headers}, networks(trusted)) == client


def rate_keys() -> list[str]:
    with transaction(write=False):
        return [counter.id for counter in RateCounter.select()]


def test_forwarded_addresses_from_an_untrusted_peer_do_not_escape_the_limit(fresh):
    service = fresh(**DEFAULT_LIMITS)
    fresh_window()
    codes = [service.http.get("/flows", headers={**basic_auth(wrong_key()), "x-forwarded-for": f"203.0.113.{n}",
                                                 "forwarded": f"for=198.51.100.{n}"}).status_code
             for n in range(100)]
    assert codes == [401] * 20 + [429] * 80


def test_behind_a_trusted_proxy_each_forwarded_address_counts_on_its_own(fresh):
    service = fresh(**DEFAULT_LIMITS, TRUSTED_PROXIES="127.0.0.1")
    spread = [service.http.get("/flows", headers={**basic_auth(wrong_key()),
                                                  "x-forwarded-for": f"203.0.113.{n}"}).status_code
              for n in range(30)]
    assert spread == [401] * 30
    fresh_window()
    one = [service.http.get("/flows", headers={**basic_auth(wrong_key()),
                                               "forwarded": 'for="198.51.100.7:999"'}).status_code
           for _ in range(21)]
    assert one == [401] * 20 + [429]


def test_a_huge_forwarded_header_changes_nothing_and_the_stored_key_stays_short(fresh):
    service = fresh(**DEFAULT_LIMITS, TRUSTED_PROXIES="127.0.0.1")
    huge = {"x-forwarded-for": "1" * 15 * 1024}
    assert service.http.get("/flows", headers={**service.buyer.auth, **huge}).status_code == 200
    assert service.http.get("/flows", headers={**basic_auth(wrong_key()), **huge}).status_code == 401
    forged = {"x-forwarded-for": ", ".join(["203.0.113.1"] * 1200)}
    assert service.http.get("/flows", headers={**basic_auth(wrong_key()), **forged}).status_code == 401
    # Each stored key is a limit's name, the subject's digest and a window's start: its size is the same
    # whatever the client sent.
    stored = [key.split(":") for key in rate_keys()]
    assert stored and all(len(digest) == 64 and start.isdigit() and len(start) <= 12 and len(parts) == 0
                          for _name, digest, start, *parts in stored), stored


def test_a_valid_key_is_served_whatever_others_failed_from_its_address(fresh):
    service = fresh(**DEFAULT_LIMITS, AUTH_CACHE_SECONDS="1")
    assert service.http.get("/flows", headers=service.seller.auth).status_code == 200  # cached now
    fresh_window()
    codes = [service.http.get("/flows", headers=basic_auth(wrong_key())).status_code for _ in range(21)]
    assert codes == [401] * 20 + [429]
    assert service.http.get("/flows", headers=service.buyer.auth).status_code == 200  # never used before
    time.sleep(1.5)  # the seller's cache entry expires
    assert service.http.get("/flows", headers=service.seller.auth).status_code == 200
    assert service.http.get("/flows", headers=basic_auth(wrong_key())).status_code == 429


def test_wrong_keys_of_one_prefix_are_limited_from_any_address(fresh):
    service = fresh(**DEFAULT_LIMITS, TRUSTED_PROXIES="127.0.0.1")
    prefix = service.buyer.key[:8]
    fresh_window()
    codes = [service.http.get("/flows", headers={**basic_auth(prefix + wrong_key()[8:]),
                                                 "x-forwarded-for": f"203.0.113.{n}"}).status_code
             for n in range(21)]
    assert codes == [401] * 20 + [429]
    assert service.http.get("/flows", headers=service.buyer.auth).status_code == 200


# 16. The server's own limits against a client who means harm (issue 27, rows 2 and 5): clients that never read,
# many connections from one address, idle connections at the limit, bodies held back.

def connect(port: int, source: str = "127.0.0.1", receive_buffer: int = 0) -> socket.socket:
    """A connection to 127.0.0.1:`port` from `source` (any address of 127/8 is the loopback's on Linux)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:  # set before connecting: it bounds the window the server may send into
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    return sock


def served(port: int, source: str = "127.0.0.1", path: bytes = b"/health") -> int:
    """The status of a GET of `path` on a new connection from `source`."""
    with connect(port, source) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        return int(read_to_end(sock).split(b" ", 2)[1])


def one_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read whole without waiting for the connection to close."""
    raw = b""
    while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"(?im)^content-length: *(\d+)", raw)[1]):  # type: ignore[index]
        chunk = sock.recv(65536)
        assert chunk, raw[:500]
        raw += chunk
    return raw


def problem_of(raw: bytes) -> tuple[int, dict[str, str], dict]:
    """(status, headers by lower-case name, problem) of one problem response."""
    status, headers, body = parse(raw)
    assert headers["content-type"] == "application/problem+json", raw[:500]
    return status, headers, json.loads(body)


# Small limits, on SQLite: none of them involves the database. The demo data gives a key that verifies.
# The write timeout leaves the never-reading clients' test time to see the limit reached before they are dropped.
LIMITED = {"MAX_CONNECTIONS": "8", "MAX_CONNECTIONS_PER_CLIENT": "3", "WRITE_TIMEOUT_SECONDS": "5",
           "MAX_BODY_BYTES": "8000", "BODY_MEMORY_BYTES": "8000"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory.mktemp("limited"), args=["--demo"], **LIMITED)


def test_clients_that_never_read_lose_their_connections_and_health_answers_meanwhile(limited):
    port = limited.port
    # One connection from each of seven addresses (the cap per address is 3), the eighth place the probes'.
    stalled = [connect(port, f"127.0.1.{n}", receive_buffer=4096) for n in range(1, 8)]
    try:
        for sock in stalled:  # the reference page is megabytes: none of it is read
            sock.sendall(b"GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
        # At the limit with no idle connection to close: requests are refused, health probes never.
        assert wait_until(lambda: served(port, path=b"/openapi.json") == 503, 4)
        assert [served(port) for _ in range(5)] == [200] * 5
        assert wait_until(lambda: served(port, path=b"/openapi.json") == 200, 15)  # the stalled ones were dropped
    finally:
        for sock in stalled:
            sock.close()


def test_one_address_over_its_connection_cap_is_refused_while_another_is_served(limited):
    port = limited.port
    held = [connect(port, "127.0.0.2") for _ in range(3)]
    try:
        with connect(port, "127.0.0.2") as extra:
            extra.settimeout(5)
            status, headers, problem = problem_of(read_to_end(extra))  # refused before it sends anything
        assert (status, headers["retry-after"], headers["connection"]) == (429, "1", "close")
        assert problem["type"] == "/docs/problems#connections-per-client" and "3 connections" in problem["detail"]
        assert served(port, "127.0.0.3") == 200 and served(port) == 200
        held.pop().close()
        assert wait_until(lambda: served(port, "127.0.0.2") == 200, 5)  # a connection that ends frees its place
    finally:
        for sock in held:
            sock.close()


def test_idle_connections_at_the_limit_give_way_to_a_new_request_longest_idle_first(limited):
    port = limited.port
    idle = [connect(port, f"127.0.2.{n}") for n in range(1, 9)]
    try:  # once the server has taken all eight, a request makes room by closing the two idle longest
        assert wait_until(lambda: served(port, path=b"/openapi.json") == 200 and closed(idle[0]), 5)
        assert not closed(idle[-1])
    finally:
        for sock in idle:
            sock.close()


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (without sending anything), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False


def chunked_flow(auth: dict[str, str]) -> bytes:
    return (b"POST /flows HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth["Authorization"].encode() +
            b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")


def test_chunked_bodies_with_a_wrong_key_get_401_before_their_bodies_are_read(service):
    sockets = [connect(service.server.port) for _ in range(20)]
    try:
        for sock in sockets:  # the first chunk, and the rest never
            sock.sendall(chunked_flow(basic_auth(wrong_key())) + b"%x\r\n%s\r\n" % (1000, b" " * 1000))
        for sock in sockets:
            status, _, problem = problem_of(one_response(sock))
            assert (status, problem["type"]) == (401, "/docs/problems#unauthenticated")
    finally:
        for sock in sockets:
            sock.close()


def test_request_bodies_share_one_memory_budget_given_back_when_each_request_ends(limited):
    port, auth = limited.port, basic_auth(demo_key(SELLER_EMAIL))

    def post(size: int) -> int:
        with connect(port) as sock:
            sock.sendall(b"POST /flows HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " +
                         auth["Authorization"].encode() + b"\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (size, b"x" * size))
            raw = read_to_end(sock)
        if raw.startswith(b"HTTP/1.1 503 "):
            _, headers, problem = problem_of(raw)
            assert headers["retry-after"] == "1" and problem["type"] == "/docs/problems#body-memory"
        return int(raw.split(b" ", 2)[1])

    with connect(port) as chunked:  # holds 3,000 bytes, the rest of its body held back
        chunked.sendall(chunked_flow(auth) + b"%x\r\n%s\r\n" % (3000, b" " * 3000))
        assert wait_until(lambda: post(6000) == 503, 5)
        assert post(5000) == 400  # what fits is read (and is not JSON)
    assert wait_until(lambda: post(6000) == 400, 5)  # the client left: its bytes are given back
    with connect(port) as whole:  # a Content-Length body takes its length at once: all of the budget
        whole.sendall(b"POST /flows HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth["Authorization"].encode() +
                      b"\r\nContent-Type: application/json\r\nContent-Length: 8000\r\n\r\n{")
        assert wait_until(lambda: post(1) == 503, 5)
        whole.sendall(b" " * 7999)
        assert one_response(whole).startswith(b"HTTP/1.1 400 ")
    assert post(8000) == 400  # answered: every byte given back
