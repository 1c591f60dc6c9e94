"""A pytest plugin for client developers: a throw-away onboards sandbox server to test a LeadConduit
integration against (README, "Sandbox"). Registered through the `pytest11` entry point: installing
onboards is enough.

    def test_invitation(onboards_sandbox):
        seller = onboards_sandbox.account()
        ...
"""

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

READY_SECONDS = 60.0


@dataclass(frozen=True)
class SandboxAccount:
    """An account of the sandbox, with its first user's API key."""

    account_id: str
    user_id: str
    name: str
    email: str
    api_key: str

    @property
    def auth(self) -> tuple[str, str]:
        """HTTP Basic credentials for the API, as httpx takes them (`auth=`)."""
        return ("API", self.api_key)


class Sandbox:
    """A running sandbox server: its base URL, and its accounts, mailbox and clocks over HTTP."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self._http = httpx.Client(base_url=f"{url}/sandbox", headers={"X-Sandbox-Token": token}, timeout=30)

    def account(self, name: str = "Test Account", email: str | None = None) -> SandboxAccount:
        """A new account with a user (a fresh address unless `email` is given) and an API key."""
        email = email or f"user-{secrets.token_hex(6)}@example.com"
        return SandboxAccount(**self._call("POST", "/accounts", json={"name": name, "email": email}))

    def mailbox(self, to: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """Every e-mail the service sent or would send (to `to`, of `kind`), oldest first."""
        params = {k: v for k, v in (("to", to), ("kind", kind)) if v is not None}
        messages: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", "/mailbox", params={**params, "limit": 1000,
                                                         **({"after_id": messages[-1]["id"]} if messages else {})})
            messages += page
            if len(page) < 1000:
                return messages

    def advance_clock(self, account_id: str, seconds: int) -> dict[str, Any]:
        """Moves the account's clock forward: its invitations expire (and renew) by it."""
        return self._call("POST", f"/accounts/{account_id}/clock", json={"seconds": seconds})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._http.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def onboards_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """`onboards serve --sandbox` in a process of its own, on a temporary SQLite file and a free port of
    127.0.0.1, for the test session; stopped at its end."""
    directory = tmp_path_factory.mktemp("onboards-sandbox")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{directory}/sandbox.db", "HOST": "127.0.0.1", "PORT": str(port),
           "SANDBOX": "1", "SANDBOX_TOKEN": token, "SMTP_URL": "", "ACCESS_LOG": "0"}
    log = Path(directory, "server.log")
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "onboards.cli", "serve"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, log)
        sandbox = Sandbox(url, token)
        yield sandbox
        sandbox.close()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the sandbox server did not answer within {READY_SECONDS} s:\n{log.read_text()[-2000:]}")
