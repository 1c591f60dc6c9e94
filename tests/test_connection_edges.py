"""The edges of a connection, against real server processes: heads over the size limit however they
arrive, bodies that never finish, clients that leave, the connection limit, and the answers of the
middlewares to raw requests no HTTP client library would send (encoded slashes, spaces around a media
type, a header given twice)."""

import asyncio
import base64
import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboards.demo import SELLER_EMAIL, demo_key
from onboards.metrics import Metrics
from onboards.observe import Observe
from tests.helpers import parse, read_to_end, wait_until
from tests.servers import Server, started

pytestmark = pytest.mark.slow

TOKEN = "edge-sandbox-token-0123456789"
AUTH = "Basic " + base64.b64encode(f"API:{demo_key(SELLER_EMAIL)}".encode()).decode()
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One demo server in sandbox mode, for the cases that leave nothing behind that matters to others."""
    yield from started(tmp_path_factory.mktemp("edges"), args=["--demo", "--sandbox"], SANDBOX_TOKEN=TOKEN)


def exchange(server: Server, request: bytes, seconds: float = 20) -> bytes:
    """Sends `request` in one piece; everything the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(seconds)
        sock.sendall(request)
        return read_to_end(sock)


def assert_problem(raw: bytes, status: int) -> dict[str, str]:
    """The response is one problem of `status` (RFC 9457, with `error`); its headers."""
    answer, headers, body = parse(raw)
    assert answer == status, raw[:500]
    assert headers["content-type"] == PROBLEM and int(headers["content-length"]) == len(body), raw[:500]
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["type"]
    assert problem["detail"] and problem["error"] == problem["detail"]
    return headers


def post_flow(body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (b"POST /flows HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + AUTH.encode() +
            b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


def counted(server: Server, status: int) -> float:
    """Requests of every operation the server counted with `status`."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(n) for n in re.findall(rf'onboards_requests_total{{[^}}]*status="{status}"}} (\S+)', text))


# 1. The head's size, however it arrives.

BIG_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"


def test_a_head_over_the_limit_in_one_piece_is_431_and_the_connection_closes(server):
    headers = assert_problem(exchange(server, BIG_HEAD), 431)  # exchange returns once the server closed
    assert headers["connection"] == "close"


def test_a_head_over_the_limit_completed_by_its_last_piece_is_431(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(20)
        sock.sendall(BIG_HEAD[:8000])  # under the limit, unfinished
        assert_unanswered(sock)
        sock.sendall(BIG_HEAD[8000:])
        assert_problem(read_to_end(sock), 431)


def assert_unanswered(sock: socket.socket) -> None:
    """Nothing came back on `sock` after a pause: the server has read what was sent by then (so that what
    is sent next arrives in a piece of its own), and it waits for more."""
    time.sleep(0.5)
    sock.setblocking(False)
    try:
        assert not sock.recv(1, socket.MSG_PEEK), "the server answered an unfinished request"
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(20)


def test_a_body_in_the_packet_of_a_small_head_does_not_count_against_the_head(server):
    body = b'{"name": "big body"' + b" " * 40_000 + b"}"
    answer, _, created = parse(exchange(server, post_flow(body)))
    assert answer == 201 and json.loads(created)["name"] == "big body"



def one_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read off `sock` (what follows stays unread)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(1) or b"\r\n\r\n"  # a closed connection ends the head
    length = int(parse(received)[1].get("content-length", "0"))
    while len(received.partition(b"\r\n\r\n")[2]) < length and (chunk := sock.recv(65536)):
        received += chunk
    return received


def test_after_an_early_answer_the_rest_of_the_body_is_never_read_as_a_head(server):
    """A wrong key is answered 401 after the head: the 40 KB body that still arrives is drained, not taken for
    the next request's head (431 before)."""
    body = b"x" * 40_000
    head = (b"POST /flows HTTP/1.1\r\nHost: x\r\nAuthorization: Basic QVBJOndyb25n\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(20)
        sock.sendall(head + body[:1000])
        early = one_response(sock)
        status, headers, _ = parse(early)
        assert status == 401, early[:500]
        with suppress(OSError):  # a server that closed after saying so may reset what follows
            sock.sendall(body[1000:])
            assert_unanswered(sock)  # the rest of the body is read before the next request comes
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            rest = read_to_end(sock)
        except ConnectionResetError:
            rest = b""
    if rest:
        assert parse(rest)[0] == 200, rest[:500]
    else:
        assert headers.get("connection") == "close", early[:500]

# 2. A body that never finishes.

@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Server]:
    yield from started(tmp_path, HEADER_TIMEOUT_SECONDS="1", MAX_CONNECTIONS="3")


def test_a_body_that_stops_is_408_and_frees_its_connection(impatient):
    stalled = [socket.create_connection(("127.0.0.1", impatient.port)) for _ in range(2)]
    try:
        for sock in stalled:  # at MAX_CONNECTIONS=3, these two would lock everyone else out
            sock.settimeout(20)
            sock.sendall(post_flow(b"{" + b" " * 99)[:-99])  # Content-Length: 100, then only "{"
        for sock in stalled:
            assert_problem(read_to_end(sock), 408)  # to the end: the server closes each
    finally:
        for sock in stalled:
            sock.close()
    assert httpx.get(f"{impatient.url}/health", timeout=10).status_code == 200


def test_a_trickling_body_is_408_too(impatient):
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.sendall(post_flow(b" " * 100)[:-100])
        sock.settimeout(0.2)
        answer = b""
        for _ in range(100):  # a byte every 0.2 s: 20 s for the whole body, if the server waited for it
            try:
                answer = sock.recv(65536)
                break
            except TimeoutError:
                sock.sendall(b" ")
        sock.settimeout(20)
        assert_problem(answer + read_to_end(sock), 408)


def test_a_body_that_arrives_in_time_is_served(impatient):
    body = b'{"name": "slow but in time"}'
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.settimeout(20)
        request = post_flow(body)
        sock.sendall(request[:-len(body)])
        sock.sendall(body)
        assert parse(read_to_end(sock))[0] == 201


# 3. Clients that leave count as 499, not as 500.

def test_a_client_gone_mid_body_or_with_a_bad_chunk_counts_as_499(server):
    before = counted(server, 499), counted(server, 500)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post_flow(b"{" + b" " * 99)[:-99])
        assert_unanswered(sock)  # the app waits for the rest of the body
    assert wait_until(lambda: counted(server, 499) == before[0] + 1), server.log()[-2000:]
    chunked = (b"POST /flows HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode() +
               b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert parse(exchange(server, chunked))[0] == 400  # uvicorn's own answer
    assert wait_until(lambda: counted(server, 499) == before[0] + 2), server.log()[-2000:]
    assert counted(server, 500) == before[1]


async def _observed(app: ASGIApp, receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/edge", "headers": []}
    with suppress(RuntimeError):
        await Observe(app, METRICS, access_log=False)(scope, receive, send)
    return sent


METRICS = Metrics()


def _count(status: str) -> float:
    [metric] = METRICS.requests.collect()
    return sum(s.value for s in metric.samples
               if s.name == "onboards_requests_total" and s.labels == {"operation": "-", "status": status})


def test_observe_counts_an_app_crash_or_a_missing_answer_as_500_and_a_departed_client_as_499():
    async def disconnect() -> Message:
        return {"type": "http.disconnect"}

    async def crashes(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    async def answers_nothing(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    async def answers_the_departed(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the client went away: what follows reaches nobody
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    before = _count("500"), _count("499"), _count("400")
    for app in (crashes, answers_nothing):
        asyncio.run(_observed(app, disconnect))
    asyncio.run(_observed(answers_the_departed, disconnect))
    assert (_count("500"), _count("499"), _count("400")) == (before[0] + 2, before[1] + 1, before[2])


# 4. The connection limit.

def test_the_connection_limit_is_a_503_problem_with_retry_after_but_never_for_a_health_probe(tmp_path):
    for server in started(tmp_path, MAX_CONNECTIONS="2"):
        with socket.create_connection(("127.0.0.1", server.port)) as busy:  # holds one of the two, not idle
            busy.sendall(post_flow(b"{" + b" " * 99)[:-99])
            raw = exchange(server, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            probe = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        headers = assert_problem(raw, 503)
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        assert json.loads(parse(raw)[2])["type"] == "/docs/problems#server-busy"
        assert parse(probe)[0] == 200


# 5-8. What the middlewares make of raw requests.

@pytest.mark.parametrize("path", ["/entities/%2F", "/onboards/%2F", "/flows/%2f"])
def test_an_encoded_slash_is_no_redirect_to_itself(server, path):
    raw = exchange(server, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: %s\r\n\r\n"
                   % (path.encode(), AUTH.encode()))
    headers = assert_problem(raw, 404)
    assert "location" not in headers


def test_a_trailing_slash_is_still_redirected(server):
    raw = exchange(server, b"GET /flows/?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = parse(raw)
    assert status == 307 and headers["location"] == "/flows?limit=1"


@pytest.mark.parametrize("order", [(TOKEN, "wrong-token-0123456789"), ("wrong-token-0123456789", TOKEN)])
def test_a_sandbox_token_given_twice_is_400(server, order):
    response = httpx.get(f"{server.url}/sandbox/mailbox", headers=[("X-Sandbox-Token", t) for t in order])
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM
    assert response.json()["errors"] == [{"header": "x-sandbox-token", "message": "given more than once"}]
    assert httpx.get(f"{server.url}/sandbox/mailbox", headers={"X-Sandbox-Token": TOKEN}).status_code == 200


@pytest.mark.parametrize("content_type", [b"application/json ", b"application/json\t",
                                          b"Application/JSON ; charset=utf-8 "])
def test_whitespace_around_the_media_type_is_not_part_of_it(server, content_type):
    raw = exchange(server, post_flow(b'{"name": "spaced"}', content_type))
    assert parse(raw)[0] == 201, raw[:500]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("OPTIONS", "/flows", "GET, HEAD, OPTIONS, POST"),
    ("DELETE", "/flows", "GET, HEAD, OPTIONS, POST"),
    ("OPTIONS", "/flows/5fd4371e940df5a34a3888b2", "DELETE, GET, HEAD, OPTIONS, PUT"),
    ("GET", "/onboard/buyer", "OPTIONS, POST"),
    ("GET", "/invitations/recipient", "OPTIONS, POST"),
])
def test_allow_names_head_where_get_is_allowed_and_options_everywhere(server, method, path, allow):
    response = httpx.request(method, f"{server.url}{path}", headers={"Authorization": AUTH})
    assert response.status_code == (204 if method == "OPTIONS" else 405)
    assert response.headers["allow"] == allow
    if method != "OPTIONS":
        assert allow in response.json()["detail"]


@pytest.mark.parametrize("codings", [b"gzip, chunked", b"deflate, chunked"])
def test_a_transfer_coding_besides_chunked_is_501(server, codings):
    # A final coding other than chunked (`deflate` alone) is refused by uvicorn's parser itself: a 400.
    raw = exchange(server, b"POST /flows HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + AUTH.encode()
                   + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: " + codings + b"\r\n\r\n"
                   + b"11\r\n" + b'{"name": "coded"}' + b"\r\n0\r\n\r\n")  # 0x11 bytes
    assert_problem(raw, 501)
    assert "coded" not in httpx.get(f"{server.url}/flows", headers={"Authorization": AUTH}).text


def test_a_line_break_in_a_path_stays_on_its_log_line(caplog):
    async def answer(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/flows/x\nforged line", "headers": []}
    with caplog.at_level("INFO", logger="onboards.access"):
        asyncio.run(Observe(answer, Metrics(), access_log=True)(scope, receive, lambda _message: asyncio.sleep(0)))
    [record] = [r for r in caplog.records if r.name == "onboards.access"]
    assert record.getMessage().startswith("GET /flows/x\\nforged line 404 "), record.getMessage()
