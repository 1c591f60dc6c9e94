"""`make bench-syscalls`: the system calls each request costs the real server, service against floor.

`make bench-levers` counts machine instructions in user space (callgrind does not see the kernel); this
counts the other side, the calls into the kernel, on the servers `make bench` runs (uvicorn, one
worker, production settings). strace follows every thread of the server, first while it is idle for
BENCH_DURATION seconds (3), then while wrk sends one operation for as long at BENCH_CONCURRENCY (1); the
idle calls per second (uvicorn's timers, the outbox sender's polls) are taken off the loaded run's, and
what remains is divided by the requests completed. strace slows the server many times over, but what
is counted per request is the work itself, not the machine's noise, with one exception: `futex`, a
thread waking another or waiting for the GIL, follows how the threads' timing falls (the floor's count
per GET was 3.0, 6.2 and 7.4 in three runs), so the table adds a total without it. (At more clients one
epoll wake-up serves several requests, so counts per request fall as the server is slower: compare apps
within one run.) `make bench`'s 1 k data set on each of BENCH_DATABASES (sqlite,postgresql), for
BENCH_OPS (get,list,put,post); a POST's e-mail delivery is counted with it, as `make bench` charges it.
Prints a table per database and operation and writes them as JSON under bench/results/.

Run: python -m bench.syscalls
"""

import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import dataset, run

APPS = ("service", "floor")


def summary_counts(text: str) -> dict[str, int]:
    """System call → calls, from `strace -c`'s summary table (its `total` row left out)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall": a row starts with a percentage.
        if len(fields) >= 5 and fields[0].replace(".", "", 1).isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    return counts


class Traced:
    """strace -c following every thread of `pid` until the block ends; then `counts` and `seconds`."""

    def __init__(self, pid: int, output: Path) -> None:
        self.pid, self.output = pid, output
        self.counts: dict[str, int] = {}
        self.seconds = 0.0

    def __enter__(self) -> "Traced":
        self.process = subprocess.Popen(["strace", "-c", "-f", "-o", str(self.output), "-p", str(self.pid)],
                                        stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        said = []
        for line in self.process.stderr:  # "strace: Process N attached with M threads": every thread
            if "attached" in line:
                self.started = time.monotonic()
                return self
            said.append(line.strip())
        raise RuntimeError(f"strace could not attach to {self.pid} ({self.process.wait()}): {' '.join(said)}")

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.monotonic() - self.started
        self.process.send_signal(signal.SIGINT)  # detaches, then writes the summary
        try:
            self.process.communicate(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.counts = summary_counts(self.output.read_text() if self.output.exists() else "")
        if not self.counts:
            raise RuntimeError(f"strace wrote no summary to {self.output}")


def count(server: run.Server, data: dataset.DataSet, op: str, concurrency: int, seconds: float,
          work: Path) -> dict:
    """System calls per request of one app for one operation: a warm-up, the idle server traced, then
    the loaded one; the idle calls per second taken off the loaded run's."""
    auth = run.basic_auth(data)
    warm = run.run_wrk(server.port, op, concurrency, 1, run.request_ids(data, op, 1, work), auth)
    if op == "post":
        run.wait_outbox()
    server.settle()
    with Traced(server.process.pid, work / f"{server.app}-{op}-idle.strace") as idle:
        time.sleep(seconds)
    ids = run.request_ids(data, op, seconds, work, rps_hint=warm["requests"])  # strace only slows it
    with Traced(server.process.pid, work / f"{server.app}-{op}.strace") as loaded:
        result = run.run_wrk(server.port, op, concurrency, seconds, ids, auth)
        if op == "post":
            run.wait_outbox()
    requests = result["requests"]
    if not requests:
        raise RuntimeError(f"{server.app} answered no {op} request under strace")
    per_request = {name: (calls - idle.counts.get(name, 0) / idle.seconds * loaded.seconds) / requests
                   for name, calls in loaded.counts.items()}
    return {"requests": requests, "per_request": per_request,
            "idle_per_second": {name: calls / idle.seconds for name, calls in idle.counts.items()}}


TOTALS = {"total": (), "total but futex": ("futex",)}  # row → the calls it leaves out


def figure(per_request: dict[str, float], row: str) -> float:
    if row in TOTALS:
        return sum(calls for name, calls in per_request.items() if name not in TOTALS[row])
    return per_request.get(row, 0.0)


def table(kind: str, op: str, counted: dict[str, dict]) -> str:
    service, floor = (counted[app]["per_request"] for app in APPS)
    names = sorted(set(service) | set(floor), key=lambda name: -max(service.get(name, 0), floor.get(name, 0)))
    lines = [f"{kind} {run.OPS[op]}: system calls per request ({counted['service']['requests']} and "
             f"{counted['floor']['requests']} requests)", f"  {'call':18} {'service':>8} {'floor':>8} {'s/f':>6}"]
    for row in [*names, *TOTALS]:
        s, f = figure(service, row), figure(floor, row)
        if row in TOTALS or max(s, f) >= 0.01:
            lines.append(f"  {row:18} {s:8.2f} {f:8.2f} {(s / f if f else float('nan')):6.2f}")
    return "\n".join(lines)


def main() -> int:
    if not shutil.which("strace") or not shutil.which("wrk"):
        print("bench-syscalls: needs strace and wrk (apt-get install strace wrk)", file=sys.stderr)
        return 1
    cfg = run.config()
    concurrency = int(run.env_list("BENCH_CONCURRENCY", "1")[0])
    seconds = float(os.environ.get("BENCH_DURATION", "3"))
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    results: list[dict] = []
    reports: list[str] = []
    for kind, url, data, work in run.small_data_sets(cfg["databases"], cfg):
        for op in cfg["ops"]:
            counted = {}
            for app in APPS:
                server = run.Server(app, url, run.RESULTS / "logs" / f"syscalls-{kind}-{app}.log")
                try:
                    counted[app] = count(server, data, op, concurrency, seconds, work)
                finally:
                    server.stop()
            reports.append(table(kind, op, counted))
            print(reports[-1], flush=True)
            results.append({"database": kind, "op": op, "concurrency": concurrency, **counted})
    run.write_report("syscalls", started, {"seconds": seconds, "results": results}, reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
