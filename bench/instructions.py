"""`make bench-instructions`: machine instructions, cache misses and mispredicted branches per request
of the real servers, service against floor.

`make bench-levers` counts instructions with the apps called straight through ASGI in one process; here
the servers `make bench` runs (uvicorn, one worker, production settings) run under callgrind with its
cache and branch simulation, so uvicorn, the event loop and each app's own process (its memory, its
layout) are counted too. wrk sends one operation at one client for BENCH_DURATION seconds (10; the
server runs some 50 times slower), callgrind counts from zero to the end of the requests, then counts
an idle window as long (uvicorn's timers), which is taken off. The simulated caches are the first level
of this machine's and a last level of LL_BYTES (2 MiB, an L2 of this machine): simulated misses say where
two apps' memory access patterns differ, not what they cost in time. Verified keys are kept for the run
and the outbox sender does not poll (a POST's e-mail is not in its figure), so that every window holds
requests and nothing else. `make bench`'s 1 k data set on each of BENCH_DATABASES (sqlite; on
postgresql the figures are this process's, the client side), for BENCH_OPS (get,list,put,post).
Prints a table per database and writes it as JSON under bench/results/.

Run: python -m bench.instructions
"""

import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import dataset, run

APPS = ("service", "floor")
LL_BYTES = 2 * 1024 * 1024
# callgrind's events → the figures shown: each a sum of events
FIGURES = {"instructions": ("Ir",), "L1 instruction misses": ("I1mr",), "L1 data misses": ("D1mr", "D1mw"),
           "last-level misses": ("ILmr", "DLmr", "DLmw"), "mispredicted branches": ("Bcm", "Bim")}


def parse_dump(text: str) -> tuple[str | None, dict[str, int]]:
    """A callgrind dump's trigger (the name given with --dump=, None for another trigger) and its totals."""
    trigger = re.search(r"^desc: Trigger: dump (\S+)$", text, re.MULTILINE)
    events = re.search(r"^events: (.+)$", text, re.MULTILINE)
    summary = re.search(r"^summary: (.+)$", text, re.MULTILINE)
    if events is None or summary is None:
        raise ValueError("not a callgrind dump")
    totals = dict(zip(events[1].split(), (int(n) for n in summary[1].split()), strict=True))
    return (trigger[1] if trigger else None), totals


class Callgrind:
    """An app's server under callgrind; `window(name)` counts from zero until the block ends."""

    def __init__(self, app: str, url: str, folder: Path) -> None:
        self.folder = folder
        under = ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--branch-sim=yes", f"--LL={LL_BYTES},16,64",
                 f"--callgrind-out-file={folder}/{app}.%p"]
        self.server = run.Server(app, url, run.RESULTS / "logs" / f"instructions-{app}.log", under=under,
                                 settings={"AUTH_CACHE_SECONDS": "3600", "OUTBOX_POLL_SECONDS": "3600"},
                                 start_timeout=900)

    def control(self, command: str) -> None:
        # valgrind names its control pipe after the server's HOST variable: callgrind_control must share it.
        subprocess.run(["callgrind_control", command, str(self.server.process.pid)], check=True, capture_output=True,
                       env=self.server.env, timeout=300)

    def dumps(self) -> dict[str, dict[str, int]]:
        found = {}
        for path in self.folder.glob(f"{self.server.app}.*"):
            trigger, totals = parse_dump(path.read_text(errors="replace"))
            if trigger:
                found[trigger] = totals
        return found


def count(grind: Callgrind, data: dataset.DataSet, op: str, seconds: float, work: Path) -> dict:
    """Per request of one operation: the loaded window's counts less an idle window's as long."""
    auth, port = run.basic_auth(data), grind.server.port
    run.run_wrk(port, op, 1, 5, run.request_ids(data, op, 5, work, rps_hint=100), auth)  # warm-up
    ids = run.request_ids(data, op, seconds, work, rps_hint=100)
    grind.control("--zero")
    started = time.monotonic()
    result = run.run_wrk(port, op, 1, seconds, ids, auth)
    grind.control(f"--dump={op}")
    loaded = time.monotonic() - started
    grind.control("--zero")
    time.sleep(loaded)
    grind.control(f"--dump={op}-idle")
    if not result["requests"]:
        raise RuntimeError(f"{grind.server.app} answered no {op} request under callgrind")
    return {"requests": result["requests"], "window_seconds": round(loaded, 2)}


def table(kind: str, op: str, counted: dict[str, dict]) -> str:
    lines = [f"{kind} {run.OPS[op]}: per request ({counted['service']['requests']} and "
             f"{counted['floor']['requests']} requests)", f"  {'':24} {'service':>10} {'floor':>10} {'s/f':>6}"]
    for name in FIGURES:
        s, f = (counted[app]["per_request"][name] for app in APPS)
        lines.append(f"  {name:24} {s:10.0f} {f:10.0f} {(s / f if f else float('nan')):6.3f}")
    return "\n".join(lines)


def main() -> int:
    if not shutil.which("valgrind") or not shutil.which("callgrind_control") or not shutil.which("wrk"):
        print("bench-instructions: needs valgrind and wrk (apt-get install valgrind wrk)", file=sys.stderr)
        return 1
    cfg = run.config()
    databases = run.env_list("BENCH_DATABASES", "sqlite")
    seconds = float(os.environ.get("BENCH_DURATION", "10"))
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    results: list[dict] = []
    reports: list[str] = []
    for kind, url, data, work in run.small_data_sets(databases, cfg):
        counted: dict[str, dict[str, dict]] = {op: {} for op in cfg["ops"]}
        for app in APPS:
            folder = work / app
            folder.mkdir()
            grind = Callgrind(app, url, folder)
            try:
                for op in cfg["ops"]:
                    counted[op][app] = count(grind, data, op, seconds, work)
            finally:
                grind.server.stop()
            dumps = grind.dumps()
            for op in cfg["ops"]:
                loaded, idle, requests = dumps[op], dumps[f"{op}-idle"], counted[op][app]["requests"]
                counted[op][app]["per_request"] = {
                    name: sum(loaded.get(e, 0) - idle.get(e, 0) for e in events) / requests
                    for name, events in FIGURES.items()}
        for op in cfg["ops"]:
            reports.append(table(kind, op, counted[op]))
            print(reports[-1], flush=True)
            results.append({"database": kind, "op": op, **counted[op]})
    run.write_report("instructions", started, {"seconds": seconds, "ll_bytes": LL_BYTES, "results": results}, reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
