"""`make bench-instructions`: the instructions each app executes per request, counted by valgrind's callgrind
(bench/README.md, "Instructions per request"). CPU seconds on this shared machine swing by a third from one run
to the next; an instruction count does not, so this is the yardstick for a small difference (a regression
of a few per cent, a lever near its 10 % bar).

Each app (BENCH_APPS, default all six) runs under callgrind with instrumentation off, on a fresh database of
each kind (BENCH_DATABASES), 1000 onboards. Per operation (BENCH_OPS): a warm-up uninstrumented, then the
counters zeroed, instrumentation on, BENCH_INSTRUCTIONS_REQUESTS requests one after another on one keep-alive
connection (the requests wrk.lua sends), the e-mails of a POST delivered, and every thread's count read. What
this cannot see: the kernel's work (system calls, I/O), cache misses, and contention between threads
(valgrind runs one thread at a time); `make bench` measures those.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import run
from tests import dataset

WARMUP = 20
REQUESTS = {"get": 100, "list": 30, "put": 100, "post": 50}  # the dearer, the fewer: a list returns 100 onboards
THREAD_TOTAL = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)


class Counted:
    """One app's server process under callgrind, instrumentation off until `count` asks for it."""

    def __init__(self, app: str, url: str, log: Path, command: list[str], cwd: Path) -> None:
        self.pipes = tempfile.mkdtemp(prefix="vgdb-")  # valgrind's control pipes, removed by stop()
        self.prefix = f"{self.pipes}/vgdb"
        # valgrind names its control pipes after $HOST, which the server's environment sets to its address.
        self.control_env = {**os.environ, "HOST": "127.0.0.1"}
        wrapped = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--vgdb-prefix={self.prefix}",
                   f"--callgrind-out-file={os.devnull}", *command]
        self.server = run.Server(app, url, log, wrapped, cwd, ready_seconds=600)

    def control(self, *args: str) -> str:
        done = subprocess.run(["callgrind_control", f"--vgdb-prefix={self.prefix}", *args,
                               str(self.server.process.pid)], capture_output=True, text=True, env=self.control_env,
                              check=False)
        if "OK" not in done.stdout and "Totals" not in done.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(args)}: {done.stdout.strip()} {done.stderr.strip()}")
        return done.stdout

    def count(self, work: Callable[[], None]) -> int:
        """The instructions all of the server's threads execute while `work` runs (and the server settles)."""
        self.control("--instr=on")
        self.control("--zero")
        work()
        self.server.settle()
        totals = self.control("-e", "Ir")
        self.control("--instr=off")
        return sum(int(n.replace(",", "")) for n in THREAD_TOTAL.findall(totals))

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.pipes, ignore_errors=True)


def requests(op: str, data: dataset.DataSet, count: int) -> list[tuple[str, str, str | None]]:
    """The method, path and body of `count` requests of `op`, as wrk.lua makes them (gets in order, not at random:
    the same onboards for every app)."""
    if op == "post":
        return [("POST", "/onboards", json.dumps({"invitation_id": invitation}))
                for invitation in dataset.add_invitations(data, count)]
    if op == "put":
        dataset.reset_for_put(data)  # each PUT then changes a status, as in make bench
        return [("PUT", f"/onboards/{onboard}", json.dumps({"invitation_id": invitation, "status": "failed"}))
                for onboard, invitation in data.onboards[:count]]
    if op == "list":
        return [("GET", "/onboards?limit=100", None)] * count
    return [("GET", f"/onboards/{onboard}", None) for onboard, _ in data.onboards[:count]]


def send(connection: http.client.HTTPConnection, auth: str, calls: list[tuple[str, str, str | None]]) -> int:
    """Sends `calls` one after another on `connection`, kept alive; how many were answered 2xx."""
    answered = 0
    for method, path, body in calls:
        headers = {"Authorization": auth} | ({"Content-Type": "application/json"} if body else {})
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        response.read()
        answered += 200 <= response.status < 300
    return answered


def count_op(counted: Counted, connection: http.client.HTTPConnection, auth: str, op: str,
             calls: list[tuple[str, str, str | None]]) -> int:
    """The instructions of `calls`, each answered 2xx (a POST's e-mails delivered too, as in make bench)."""
    answered: list[int] = []

    def work() -> None:
        answered.append(send(connection, auth, calls))
        if op == "post":
            run.wait_outbox()

    instructions = counted.count(work)
    if answered != [len(calls)]:
        raise RuntimeError(f"{counted.server.app} {op}: {answered} of {len(calls)} requests answered 2xx")
    return instructions


def measure(app: str, url: str, launch: tuple[list[str], Path], cfg: dict, data: dataset.DataSet) -> dict[str, float]:
    """Millions of instructions per request of each operation, for one app on one database."""
    auth = run.basic_auth(data)
    counted = Counted(app, url, run.RESULTS / "logs" / f"instructions-{app}.log", *launch)
    found: dict[str, float] = {}
    try:
        for op in cfg["ops"]:
            n = int(os.environ.get("BENCH_INSTRUCTIONS_REQUESTS", REQUESTS[op]))
            # The warm-up opens the connection the counted requests use: its opening is not theirs to pay.
            connection = http.client.HTTPConnection("127.0.0.1", counted.server.port, timeout=600)
            send(connection, auth, requests(op, data, WARMUP))
            run.wait_outbox()
            counted.server.settle()
            found[op] = count_op(counted, connection, auth, op, requests(op, data, n)) / n / 1e6
            connection.close()
            print(f"  {app:8} {run.OPS[op]:23} {found[op]:8.2f} M instructions per request ({n} requests)",
                  flush=True)
    finally:
        counted.stop()
    return found


def report(results: dict[str, dict[str, dict[str, float]]], apps: list[str], ops: list[str]) -> str:
    ratios = [(f"s/{a}" if a != "stock" else "stock/s", a) for a in apps if a != "service"]
    lines = ["M instructions per request (callgrind; one client, requests one after another)", "",
             f"{'db':10} {'operation':23} | " + "".join(f"{a:>9}" for a in apps) + " | "
             + "".join(f"{head:>11}" for head, _ in ratios)]
    for kind, by_app in results.items():
        for op in ops:
            mine = {a: by_app.get(a, {}).get(op) for a in apps}
            service = mine.get("service")
            shown = [None if not (service and (value := mine.get(other))) else
                     value / service if other == "stock" else service / value for _head, other in ratios]
            lines.append(f"{kind:10} {run.OPS[op]:23} | "
                         + "".join(f"{mine[a]:9.2f}" if mine[a] is not None else f"{'-':>9}" for a in apps) + " | "
                         + "".join(f"{v:11.2f}" if v is not None else f"{'-':>11}" for v in shown))
    return "\n".join(lines)


def main() -> int:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("bench.instructions: valgrind is not installed (apt-get install valgrind; `make bench-instructions` "
              "does it)", file=sys.stderr)
        return 1
    cfg = run.config()
    cfg["apps"] = run.env_list("BENCH_APPS", "service,floor,stock,fastapi,pipeline,history")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        launch = run.launchers(cfg, stack, [])
        for kind in cfg["databases"]:
            if kind == "postgresql" and (why := run.unreachable(cfg["postgres_url"])):
                print(f"!! PostgreSQL unreachable ({why}): skipped", flush=True)
                continue
            print(f"bench.instructions: {kind}", flush=True)
            with run.database(kind, cfg, 1000) as url:
                data = dataset.load(1000)
                results[kind] = {app: measure(app, url, launch[app], cfg, data) for app in cfg["apps"]}
    text = (f"Python {sys.version.split()[0]}; this commit {run.git('rev-parse', '--short', 'HEAD')}"
            + (f"; history the service at {cfg['baseline']}" if "history" in cfg["apps"] else "") + "\n\n"
            + report(results, cfg["apps"], cfg["ops"]))
    (run.RESULTS / "instructions.txt").write_text(text + "\n")
    (run.RESULTS / "instructions.json").write_text(json.dumps({"config": cfg, "results": results}, indent=2) + "\n")
    print("\n" + text + f"\n\nwritten: {run.RESULTS / 'instructions.txt'} (and instructions.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
