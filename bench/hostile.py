"""`make bench`'s hostile row (`make bench-hostile` runs it alone): the server CPU the service spends to answer
one authenticated `POST /flows` of a megabyte of each worst shape a body check meets (tests.helpers.WORST_BODIES),
beside the bound issue 27 sets, measured as bench/run.py measures CPU: the server process's user and system
time around the requests. bench/README.md, "Hostile row", says how to read it.

Settings (environment): BENCH_HOSTILE_REPEAT (5): requests per shape, whose CPU is averaged (the kernel counts
CPU in ticks of 10 ms)."""

import datetime
import http.client
import json
import os
import sys

from bench.run import RESULTS, Server, database
from tests.helpers import WORST_BODIES, basic_auth, party

BOUND_MS = 100.0


def post(port: int, headers: dict[str, str], body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/flows", body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def rows(repeat: int) -> list[dict]:
    """One row per shape: its size, the statuses it got and the server's CPU per request. SQLite only: no
    check of a body's shape reaches the database, and the key is looked up once, before the first shape."""
    with database("sqlite", {}, 0) as url:
        seller = party("Acme Leads", "seller@example.com")
        headers = {**basic_auth(seller.key), "Content-Type": "application/json"}
        server = Server("service", url, RESULTS / "hostile.log")
        try:
            post(server.port, headers, b'{"name": "warm-up"}')  # the key's look-up and the validators' first use
            found = []
            for shape, body in WORST_BODIES.items():
                server.settle()
                before = server.cpu_seconds()
                statuses = sorted({post(server.port, headers, body) for _ in range(repeat)})
                cpu_ms = 1000 * (server.cpu_seconds() - before) / repeat
                found.append({"shape": shape, "bytes": len(body), "statuses": statuses, "cpu_ms": round(cpu_ms, 1),
                              "bound_ms": BOUND_MS, "pass": cpu_ms < BOUND_MS and statuses == [400]})
            return found
        finally:
            server.stop()


def table(found: list[dict], repeat: int) -> str:
    width = max(len(row["shape"]) for row in found)
    lines = [f"hostile: server CPU per authenticated POST /flows of the worst shapes (mean of {repeat}; SQLite)",
             f"{'shape':{width}} {'bytes':>9} {'status':>7} {'CPU ms':>7} {'bound':>6}"]
    lines += [f"{row['shape']:{width}} {row['bytes']:>9} {'/'.join(map(str, row['statuses'])):>7} "
              f"{row['cpu_ms']:>7.1f} {row['bound_ms']:>6.0f} {'PASS' if row['pass'] else 'FAIL'}" for row in found]
    return "\n".join(lines)


def main() -> int:
    repeat = int(os.environ.get("BENCH_HOSTILE_REPEAT", "5"))
    started = datetime.datetime.now(datetime.UTC)
    found = rows(repeat)
    report = table(found, repeat)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    for name in (f"hostile-{stamp}", "hostile-latest"):
        (RESULTS / f"{name}.json").write_text(json.dumps({"started": started.isoformat(timespec="seconds"),
                                                          "repeat": repeat, "rows": found}, indent=2) + "\n")
        (RESULTS / f"{name}.txt").write_text(report + "\n")
    print("\n" + report)
    return 0 if all(row["pass"] for row in found) else 1


if __name__ == "__main__":
    sys.exit(main())
