"""Issue 27, rows 3, 4 and 12 behind a real nginx (Debian's, `make nginx`), configured with the very snippet
docs/deploying.md shows operators, in front of a server that trusts it (TRUSTED_PROXIES=127.0.0.1)."""

import base64
import getpass
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from onboards.demo import BUYER_EMAIL, demo_key
from tests.helpers import basic_auth, fresh_window, read_to_end, wait_until
from tests.servers import Server, free_port

pytestmark = pytest.mark.slow

DEPLOYING = Path(__file__).resolve().parent.parent / "docs" / "deploying.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def snippet() -> str:
    """The nginx snippet of docs/deploying.md, as operators copy it."""
    found = re.search(r"```nginx\n(.*?)```", DEPLOYING.read_text(), re.DOTALL)
    assert found, "docs/deploying.md shows no nginx snippet"
    return found[1]


class Nginx:
    """nginx in the foreground, a child of the tests, on a free port, proxying to `upstream_port`."""

    def __init__(self, directory: Path, upstream_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        location = snippet().replace("127.0.0.1:8080", f"127.0.0.1:{upstream_port}")
        temp = " ".join(f"{kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                          "uwsgi", "scgi"))
        (directory / "nginx.conf").write_text(
            # The workers run as the tests' user (root's would be `nobody`'s), to write in the tests' directory.
            f"daemon off;\nuser {getpass.getuser()};\nworker_processes 1;\npid {directory}/nginx.pid;\n"
            f"error_log {directory}/error.log;\n"
            f"events {{ worker_connections 64; }}\nhttp {{\n access_log off;\n {temp}\n"
            f" server {{\n  listen 127.0.0.1:{self.port};\n{location} }}\n}}\n")
        self.process = subprocess.Popen([NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                         "-e", str(directory / "error.log")], stdin=subprocess.DEVNULL)
        wait_until(lambda: self.process.poll() is not None or self.answers(), 30)
        assert self.process.poll() is None and self.answers(), (directory / "error.log").read_text()

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    directory = tmp_path_factory.mktemp("nginx")
    server = Server(f"sqlite:///{directory}/behind.db", directory / "serve.log", args=["--demo"],
                    TRUSTED_PROXIES="127.0.0.1", FAILED_AUTH_PER_MINUTE="20")
    try:
        server.wait_ready()
        proxy = Nginx(directory, server.port)
        try:
            yield proxy
        finally:
            proxy.stop()
    finally:
        server.stop()


def test_behind_nginx_forged_addresses_do_not_escape_the_limit_and_a_valid_key_is_served(nginx):
    fresh_window()
    with httpx.Client(base_url=nginx.url, timeout=30) as http:
        codes = [http.get("/flows", headers={**basic_auth(secrets.token_hex(20)), "x-forwarded-for": f"203.0.113.{n}",
                                             "forwarded": f"for=198.51.100.{n}"}).status_code
                 for n in range(21)]
        assert codes == [401] * 20 + [429]
        assert http.get("/flows", headers=basic_auth(demo_key(BUYER_EMAIL))).status_code == 200  # never used before


def test_behind_nginx_a_body_answered_early_leaves_the_connection_usable(nginx):
    body = b"x" * 40_000
    wrong = base64.b64encode(b"API:" + secrets.token_hex(20).encode())
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=30) as sock:
        sock.sendall(b"POST /flows HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + wrong +
                     b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:1000])
        time.sleep(0.5)  # the head and a first piece arrive on their own
        sock.sendall(body[1000:] + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = read_to_end(sock)
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", answers)
    assert statuses in ([b"401", b"200"], [b"429", b"200"]), answers[:1000]
