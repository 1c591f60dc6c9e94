"""Issue 27, rows 2 and 5, measured against `onboards serve --demo` on SQLite (bench/README.md, "A hostile
client's connections and bodies"). Run from a checkout: `python -m bench.limits [ROOT]`, ROOT the checkout
whose code is served (by default this one), e.g. an older commit's `git archive` to compare."""

import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BODIES = 200  # row 5: chunked POSTs of 983 KB with a wrong key, the last chunk held back
STALLED = 1000  # row 2: sockets pipelining 40 x GET /docs/ and never reading
PROBES = 20


def main(root: Path) -> None:
    with tempfile.TemporaryDirectory() as directory, socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{directory}/limits.db", "PORT": str(port),
               "HOST": "127.0.0.1", "PYTHONPATH": str(root), "WRITE_TIMEOUT_SECONDS": "5"}
        server = subprocess.Popen([sys.executable, "-c", "import sys; from onboards.cli import main; sys.exit(main())",
                                   "serve", "--demo", "--no-access-log"], env=env, cwd=root,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        # The probes come from another address, as a load balancer's would.
        probe = httpx.Client(base_url=url, timeout=5, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        try:
            while not answers(probe, "/health"):
                time.sleep(0.1)
            print(json.dumps(held_back_bodies(port, server.pid)))
            print(json.dumps(never_reading(port, server.pid, probe)))
        finally:
            probe.close()
            server.terminate()
            server.wait(30)


def answers(probe: httpx.Client, path: str) -> int | str:
    try:
        return probe.get(path).status_code
    except httpx.TransportError as error:
        return type(error).__name__ if path != "/health" else 0


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS"))) // 1024


def held_back_bodies(port: int, pid: int) -> dict:
    key = base64.b64encode(b"API:" + b"0" * 40).decode()
    head = (f"POST /flows HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {key}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    body = b" " * (983 * 1024 - 1024)
    before, started, sockets = rss_mb(pid), time.monotonic(), []
    for _ in range(BODIES):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(2)
        sock.sendall(head)
        try:
            for start in range(0, len(body), 65536):
                piece = body[start:start + 65536]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:
            pass  # the server answered and reads no more of it
        sockets.append(sock)
    sent = rss_mb(pid)
    statuses = []
    for sock in sockets:
        sock.settimeout(15)
        try:
            answer = sock.recv(4096).decode(errors="replace")
            cause = re.search(r"/docs/problems#([a-z-]+)", answer)
            statuses.append(f"{answer[9:12]} {cause[1] if cause else ''}")
        except OSError as error:
            statuses.append(type(error).__name__)
        sock.close()
    return {"row": 5, "bodies": BODIES, "rss_mb_before": before, "rss_mb_all_sent": sent,
            "answers": {status: statuses.count(status) for status in sorted(set(statuses))},
            "seconds_to_every_answer": round(time.monotonic() - started, 1)}


def never_reading(port: int, pid: int, probe: httpx.Client) -> dict:
    sockets = []
    for _ in range(STALLED):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
        sockets.append(sock)
    time.sleep(1)  # the server takes them all in
    started = time.monotonic()
    health = [str(answers(probe, "/health")) for _ in range(PROBES)]
    served = None
    while served is None and time.monotonic() - started < 60:
        if answers(probe, "/openapi.json") == 200:
            served = round(time.monotonic() - started, 1)
        time.sleep(0.2)
    for sock in sockets:
        sock.close()
    return {"row": 2, "sockets": STALLED, "health": {s: health.count(s) for s in sorted(set(health))},
            "seconds_until_another_address_is_served": served, "rss_mb": rss_mb(pid)}


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve())
