"""Real servers for the tests: the app under uvicorn in a thread, `onboards serve` as a child process,
SMTP servers that keep or count what they receive, and a TCP proxy that can take a database away."""

import email
import email.policy
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from starlette.types import ASGIApp

from onboards.config import Settings
from onboards.demo import demo_key
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
ONBOARDS = Path(sys.executable).with_name("onboards")
SETTING_NAMES = {field.name.upper() for field in fields(Settings)}
READY_SECONDS = 60.0
# The abuse limits out of the way, unless a test sets them (tests/test_hostile.py).
RELAXED_LIMITS = {"INVITATIONS_PER_ACCOUNT_PER_HOUR": "100000", "INVITATIONS_PER_ADDRESS_PER_DAY": "100000",
                  "RESEND_COOLDOWN_SECONDS": "0", "FAILED_AUTH_PER_MINUTE": "100000"}
THREAD_READY_SECONDS = 10.0


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serves `app` with uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        if not wait_until(lambda: server.started or not thread.is_alive(), THREAD_READY_SECONDS) or not server.started:
            raise RuntimeError("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(THREAD_READY_SECONDS)
    assert not thread.is_alive(), "uvicorn did not stop"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """An SMTP server on 127.0.0.1:`port`, started on demand, keeping every message it accepts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"smtp://127.0.0.1:{port}"
        self._lock = threading.Lock()
        self._messages: list[tuple[list[str], EmailMessage]] = []
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook)
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        with self._lock:
            self._messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        """(envelope recipients, message) of each message received so far, in order."""
        with self._lock:
            return list(self._messages)

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, server_hostname="mail.test",
                                      ready_timeout=THREAD_READY_SECONDS)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def answers_health(http: httpx.Client) -> bool:
    """Whether GET /health answers 200 (not yet, while nothing listens)."""
    try:
        return http.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any onboards setting (nor NO_COLOR), plus `settings`."""
    env = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES and name != "NO_COLOR"}
    env.update(settings)
    return env


class Server:
    """`onboards serve` in a child process on a free port of 127.0.0.1, its output in `log_path`."""

    def __init__(self, database_url: str, log_path: Path, *, smtp_url: str = "", args: Sequence[str] = (),
                 **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log_path = log_path
        env = clean_env(**{"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(self.port),
                           "SMTP_URL": smtp_url, "OUTBOX_POLL_SECONDS": "0.05", "OUTBOX_RETRY_BASE_SECONDS": "0.1",
                           "OUTBOX_RETRY_MAX_SECONDS": "1", "OUTBOX_LEASE_SECONDS": "5", "VALIDATE_RESPONSES": "1",
                           **RELAXED_LIMITS, **settings})
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen([str(ONBOARDS), "serve", "--no-access-log", *args], env=env,
                                            cwd=log_path.parent, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def memory_bytes(self) -> int:
        """The process's resident memory now."""
        with open(f"/proc/{self.process.pid}/status") as status:
            kib = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
        return int(kib) * 1024

    def cpu_seconds(self) -> float:
        """The CPU time the process has used so far (user and system)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, seconds: float = READY_SECONDS) -> None:
        """Returns once GET /health answers 200; fails if the process ends or `seconds` pass first."""
        with httpx.Client(base_url=self.url, timeout=5) as http:
            healthy = wait_until(lambda: self.process.poll() is not None or answers_health(http), seconds, every=0.1)
        if self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        if not healthy:
            raise AssertionError(f"server not healthy within {seconds}s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, whatever it was doing."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


@contextmanager
def serve_onboards(directory: Path, *, demo: bool = True) -> Iterator[Server]:
    """`onboards serve [--demo]` on a free port with a fresh SQLite file in `directory`, ready; stopped on exit."""
    server = Server(f"sqlite:///{directory}/x.db", directory / "serve.log", args=["--demo"] if demo else [])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def started(directory: Path, *, args: list[str] | None = None, **settings: str) -> Iterator[Server]:
    """`onboards serve --demo` (or `args`) with `settings` on a fresh SQLite file in `directory`, ready; stopped
    after, its output free of tracebacks. A generator, for module fixtures to yield from."""
    server = Server(f"sqlite:///{directory}/edges.db", directory / "serve.log", args=args or ["--demo"], **settings)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


def get_as_demo(url: str, path: str, who: str) -> object:
    """GET `path` as the demo seller or buyer; the JSON body of a 200."""
    with httpx.Client(base_url=url, timeout=10, auth=("API", demo_key(who))) as http:
        response = http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


@contextmanager
def server_factory(directory: Path) -> Iterator[Callable[..., Server]]:
    """A function starting servers (`database_url`, `smtp_url=`), each ready; all stopped on exit."""
    started: list[Server] = []

    def start(database_url: str, *, smtp_url: str = "") -> Server:
        server = Server(database_url, directory / f"server-{len(started) + 1}.log", smtp_url=smtp_url)
        started.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


class SmtpSink:
    """An SMTP server on a free port of 127.0.0.1 that accepts everything and counts Message-IDs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._ids: Counter[str] = Counter()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=READY_SECONDS)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook)
        headers = BytesHeaderParser().parsebytes(envelope.original_content or envelope.content)
        with self._lock:
            self._ids[str(headers.get("Message-ID", "")).strip()] += 1
        return "250 Message accepted for delivery"

    def received(self) -> Counter[str]:
        """How many times each Message-ID arrived."""
        with self._lock:
            return Counter(self._ids)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`. `stop()` is the database going away: the listening
    socket and every open connection close. `start()` again brings it back on the same port. `pause()` is
    a database that stops answering while its connections stay open: nothing is forwarded, either way,
    until `resume()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._running = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener
        self._running.set()
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        self._running.clear()
        self._flowing.set()
        with self._lock:
            threads, self._threads = self._threads, []
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        for thread in threads:
            thread.join(10)
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            sock.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="tcp-proxy", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while self._running.is_set():
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    """Ends both directions now; the socket object stays open until `TcpProxy.stop` closes it."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
