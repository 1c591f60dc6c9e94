"""`make bench`: the service and the floor (bench/floor.py) under the same load, on SQLite and PostgreSQL.

For each database × data-set size: a fresh database is migrated and bulk-loaded (bench/dataset.py);
then, operation by operation, the apps take turns: each is started as its own process (one worker,
production settings) and wrk drives the operation at each concurrency for BENCH_DURATION seconds after
a BENCH_WARMUP-second warm-up.
Per run: requests/s, p50 and p99 latency (wrk), and the server's CPU time per request (user+system
of the server process from /proc over the run, divided by the requests completed). Prints a table
with the ratio service / floor of each figure and writes it as JSON under bench/results/.

Settings (environment): BENCH_SIZES (1000,1000000), BENCH_CONCURRENCY (1,16,64), BENCH_DURATION (5),
BENCH_WARMUP (1), BENCH_DATABASES (sqlite,postgresql), BENCH_OPS (get,list,put,post),
BENCH_APPS (service,floor), BENCH_REPEAT (2: each app runs each operation that many times, the
apps taking turns A B B A; the run with the least CPU per request is reported), BENCH_POSTGRES_URL
(postgresql://postgres@127.0.0.1:5432/postgres, a database a new one is created from and dropped
after), BENCH_QUICK=1 (1000 onboards, c 1 and 16, 3 s, one run each).
"""

import base64
import contextlib
import datetime
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import dataset
from models.base import bind, release
from models.migrations import migrate
from tests.postgres import throwaway_database, unreachable

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
OPS = {"get": "GET /onboards/{id}", "list": "GET /onboards?limit=100", "put": "PUT /onboards/{id}",
       "post": "POST /onboards"}
TICKS = os.sysconf("SC_CLK_TCK")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def config() -> dict[str, Any]:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    return {
        "quick": quick,
        "sizes": [int(s) for s in env_list("BENCH_SIZES", "1000" if quick else "1000,1000000")],
        "concurrency": [int(c) for c in env_list("BENCH_CONCURRENCY", "1,16" if quick else "1,16,64")],
        "duration": float(os.environ.get("BENCH_DURATION", "3" if quick else "5")),
        "warmup": float(os.environ.get("BENCH_WARMUP", "0.5" if quick else "1")),
        "databases": env_list("BENCH_DATABASES", "sqlite,postgresql"),
        "ops": [op for op in env_list("BENCH_OPS", "get,list,put,post") if op in OPS],
        "apps": env_list("BENCH_APPS", "service,floor"),
        "repeat": int(os.environ.get("BENCH_REPEAT", "1" if quick else "2")),
        "postgres_url": os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    }


# --- databases -------------------------------------------------------------------------------------

@contextlib.contextmanager
def database(kind: str, cfg: dict, size: int) -> Iterator[str]:
    """A fresh, migrated, empty database of `kind`; its URL. Removed afterwards."""
    if kind == "sqlite":
        RESULTS.mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=f"sqlite-{size}-", dir=RESULTS)
        url = f"sqlite:///{folder}/bench.db"
        try:
            yield _migrated(url)
        finally:
            release()
            shutil.rmtree(folder, ignore_errors=True)
        return
    with throwaway_database(cfg["postgres_url"], f"onboards_bench_{size}") as url:
        try:
            yield _migrated(url)
        finally:
            release()


def small_data_sets(databases: list[str], cfg: dict) -> Iterator[tuple[str, str, dataset.DataSet, Path]]:
    """For each of `databases` that can be reached: (kind, url, `make bench`'s 1 k data set loaded there,
    a scratch folder), both removed when the next is made."""
    for kind in databases:
        why = kind == "postgresql" and unreachable(cfg["postgres_url"])
        if why:
            print(f"!! PostgreSQL UNREACHABLE at {cfg['postgres_url']} ({why}): skipped", flush=True)
            continue
        with database(kind, cfg, 1000) as url, tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
            yield kind, url, dataset.load(1000), Path(tmp)


def write_report(name: str, started: datetime.datetime, report: dict, tables: list[str]) -> None:
    """`report` as bench/results/<name>-<when>.json, `tables` beside it as .txt."""
    stamp = started.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(
        {"started": started.isoformat(timespec="seconds"), **report}, indent=2) + "\n")
    (RESULTS / f"{name}-{stamp}.txt").write_text("\n\n".join(tables) + "\n")
    print(f"\nwritten: {RESULTS / f'{name}-{stamp}.json'}")


def _migrated(url: str) -> str:
    bind(url, max_connections=4)
    migrate()
    return url


# --- servers ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One app (`service` or `floor`) in its own process, one worker, production settings."""

    def __init__(self, app: str, url: str, log: Path, *, under: list[str] | None = None,
                 settings: dict[str, str] | None = None, start_timeout: float = 60) -> None:
        """`under`: a command the server runs under (e.g. valgrind's); `settings`: more environment."""
        self.app, self.port = app, free_port()
        self.env = {**os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(self.port),
                    "VALIDATE_RESPONSES": "0", "ACCESS_LOG": "0", "SMTP_URL": "", "PYTHONPATH": str(ROOT),
                    **(settings or {})}
        command = ([str(VENV_BIN / "onboards"), "serve", "--no-access-log", "--workers", "1"] if app == "service"
                   else [sys.executable, "-m", "bench.floor"])
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("ab")
        self.process = subprocess.Popen([*(under or []), *command], cwd=ROOT, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self._wait_ready(start_timeout)

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.process.returncode}; see {self.log.name}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url("/health"), timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.app} did not answer /health within {timeout:.0f} s; see {self.log.name}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all threads) so far."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def settle(self, timeout: float = 10) -> None:
        """Until the requests still in flight when wrk stopped are done: the process goes quiet."""
        deadline = time.monotonic() + timeout
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.cpu_seconds()
            if now - last < 0.02:
                return
            last = now

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# --- load ------------------------------------------------------------------------------------------

def run_wrk(port: int, op: str, concurrency: int, seconds: float, ids: Path, auth: str) -> dict:
    """One wrk run (one thread, `concurrency` keep-alive connections); its BENCH_RESULT and its own CPU."""
    env = {**os.environ, "BENCH_OP": op, "BENCH_IDS": str(ids), "BENCH_AUTH": auth}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "--latency",
         "-s", str(BENCH / "wrk.lua"), f"http://127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    result = json.loads(line.split(" ", 1)[1])
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["client_cpu_pct"] = round(100 * client_cpu / wall, 1)
    return result


def machine_cpu() -> tuple[float, float]:
    """CPU seconds all processes of the machine have used (every core), to see what else ran, and of
    those the seconds the hypervisor gave to other machines instead (steal): a run with much of it
    was slowed by a neighbour, and its CPU figures with it."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS, ticks[7] / TICKS  # all but idle and iowait; steal


def db_cpu(data: dataset.DataSet, before: dict[int, float] | None = None) -> Any:
    """PostgreSQL only: CPU seconds of the backends serving the bench database, by pid; with `before`,
    the CPU used since then (backends that started since count whole). None on SQLite."""
    pids = dataset.backend_pids()
    if pids is None:
        return None
    now = {}
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            now[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    if before is None:
        return now
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())


def write_ids(path: Path, rows: list) -> Path:
    path.write_text("".join((" ".join(r) if isinstance(r, tuple) else r) + "\n" for r in rows))
    return path


def wait_outbox(timeout: float = 300) -> None:
    """Until the app's outbox sender has delivered every e-mail the POSTs queued."""
    deadline = time.monotonic() + timeout
    while dataset.outbox_backlog() and time.monotonic() < deadline:
        time.sleep(0.2)


def basic_auth(data: dataset.DataSet) -> str:
    return "Basic " + base64.b64encode(f"API:{data.api_key}".encode()).decode()


def request_ids(data: dataset.DataSet, op: str, seconds: float, work: Path, rps_hint: float | None = None) -> Path:
    """The ids file for wrk's next run of `op`, made ready: for a POST, a generous pool of fresh
    invitations (one per request); for a PUT, the onboards reset so that each request changes one."""
    if op == "post":
        count = math.ceil((rps_hint or 3000) * (seconds + 1) * 1.3) + 100
        return write_ids(work / f"invitations-{time.monotonic_ns()}.txt", dataset.add_invitations(data, count))
    if op == "put":
        dataset.reset_for_put(data)
    onboards = work / "onboards.txt"
    if not onboards.exists():
        write_ids(onboards, data.onboards)
    return onboards


def measure(server: Server, data: dataset.DataSet, op: str, concurrency: int, cfg: dict, work: Path,
            rps_hint: float | None) -> dict:
    """Warm-up, then the measured run of one operation at one concurrency; one result row."""
    auth = basic_auth(data)
    if cfg["warmup"] > 0:
        run_wrk(server.port, op, concurrency, cfg["warmup"], request_ids(data, op, cfg["warmup"], work, rps_hint), auth)
        if op == "post":
            wait_outbox()
        server.settle()
    ids = request_ids(data, op, cfg["duration"], work, rps_hint)
    writes_before = (dataset.version_sum(data) if op == "put" else
                     dataset.onboard_count(data) if op == "post" else 0)
    db_before = db_cpu(data)
    machine_before = machine_cpu()
    cpu_before, window_started = server.cpu_seconds(), time.monotonic()
    result = run_wrk(server.port, op, concurrency, cfg["duration"], ids, auth)
    if op == "post":
        wait_outbox()  # e-mail delivery is part of a POST's cost: charged to it
    cpu = server.cpu_seconds() - cpu_before
    machine, steal = (after - before for after, before in zip(machine_cpu(), machine_before, strict=True))
    window = time.monotonic() - window_started
    database_cpu = db_cpu(data, db_before)
    requests = result["requests"]
    notes = []
    errors = {k: v for k, v in result["errors"].items() if v}
    if errors:
        notes.append(f"errors {errors}")
    server.settle()
    writes = None
    if op in ("put", "post"):
        writes = (dataset.version_sum(data) if op == "put" else dataset.onboard_count(data)) - writes_before
        # A PUT overtaken by the next pass's PUT to the same onboard (SQLite's busy waits are not
        # first come, first served) finds its status already set: a no-op. A few are fine.
        low = requests * 0.98 if op == "put" else requests
        if not low <= writes <= requests + concurrency:
            notes.append(f"{writes} rows written for {requests} requests")
    seconds = result["duration_us"] / 1e6
    return {
        "app": server.app, "op": op, "operation": OPS[op], "concurrency": concurrency,
        "requests": requests, "rows_written": writes, "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
        "mean_ms": round(result["mean_us"] / 1000, 3), "max_ms": result["max_us"] / 1000,
        "cpu_ms_per_request": round(1000 * cpu / requests, 3) if requests else None,
        "server_cpu_pct": round(100 * cpu / window, 1),
        "client_cpu_pct": result["client_cpu_pct"],
        "postgres_cpu_ms_per_request": (round(1000 * database_cpu / requests, 3)
                                        if database_cpu is not None and requests else None),
        "machine_busy_pct": round(100 * machine / window, 1), "steal_pct": round(100 * steal / window, 1),
        "cpu_window_seconds": round(window, 2),
        "check": "; ".join(notes) or "ok",
    }


def bench_dataset(kind: str, size: int, cfg: dict, runs: list[dict], datasets: list[dict]) -> None:
    with database(kind, cfg, size) as url, tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        data = dataset.load(size)
        print(f"{kind} {size}: loaded {data.rows} rows in {data.seconds:.1f} s "
              f"(load account: {len(data.onboards)} onboards)", flush=True)
        datasets.append({"database": kind, "size": size, "load_seconds": round(data.seconds, 2), "rows": data.rows,
                         "rows_per_table": data.counts, "load_account_onboards": len(data.onboards)})
        get_rps: dict[tuple[str, int], float] = {}
        for op in cfg["ops"]:
            # Each app's runs of one operation follow one another closely, in the order A B B A ...,
            # so that what else the machine does at the time weighs on both alike.
            for repeat in range(cfg["repeat"]):
                for app in (cfg["apps"] if repeat % 2 == 0 else cfg["apps"][::-1]):
                    server = Server(app, url, RESULTS / "logs" / f"{kind}-{size}-{app}.log")
                    try:
                        for concurrency in cfg["concurrency"]:
                            row = measure(server, data, op, concurrency, cfg, Path(tmp),
                                          get_rps.get((app, concurrency)))
                            if op == "get":
                                get_rps[(app, concurrency)] = row["rps"]
                            row.update(database=kind, size=size, repeat=repeat)
                            runs.append(row)
                            _print_run(row)
                    finally:
                        server.stop()


def _print_run(row: dict) -> None:
    print(f"  {row['app']:7} {row['operation']:24} c={row['concurrency']:<3} {row['rps']:8.0f} rps  "
          f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
          f"cpu {row['cpu_ms_per_request']:6.3f} ms/req  "
          + (f"  postgres {row['postgres_cpu_ms_per_request']:6.3f} ms/req"
             if row["postgres_cpu_ms_per_request"] is not None else "")
          + f"  (server {row['server_cpu_pct']}%, wrk {row['client_cpu_pct']}%, "
          f"machine {row['machine_busy_pct']}% cpu, stolen {row['steal_pct']}%)"
          f"{'' if row['check'] == 'ok' else '  !! ' + row['check']}", flush=True)


# --- report ----------------------------------------------------------------------------------------

FIGURES = (("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("cpu_ms_per_request", "CPU ms/req"))


def compare(runs: list[dict]) -> list[dict]:
    """One row per database × size × operation × concurrency: service, floor and service / floor. Of an
    app's repeated runs, the one with the least CPU per request stands for it: the machine's other load
    only ever adds to that figure, so the least disturbed run is the closest to the app's own cost."""
    rows: dict[tuple, dict] = {}
    for run in runs:
        key = (run["database"], run["size"], run["operation"], run["concurrency"])
        row = rows.setdefault(key, dict(zip(("database", "size", "operation", "concurrency"), key, strict=True)))
        kept = row.get(run["app"])
        if kept is None or (run["cpu_ms_per_request"] or math.inf) < (kept["cpu_ms_per_request"] or math.inf):
            row[run["app"]] = {name: run[name] for name, _ in FIGURES} | {"check": run["check"]}
    for row in rows.values():
        if "service" in row and "floor" in row:
            row["ratio"] = {name: (round(row["service"][name] / row["floor"][name], 2) if row["floor"][name] else None)
                            for name, _ in FIGURES}
    return list(rows.values())


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[dict]) -> str:
    head1 = f"{'db':10} {'size':>7} {'operation':24} {'c':>3} |"
    head2 = f"{'':10} {'':>7} {'':24} {'':>3} |"
    for _, title in FIGURES:
        head1 += f" {title:^22} |"
        head2 += f" {'service':>7} {'floor':>7} {'s/f':>6} |"
    lines = [head1, head2, "-" * len(head1)]
    for row in rows:
        line = f"{row['database']:10} {row['size']:>7} {row['operation']:24} {row['concurrency']:>3} |"
        for name, _ in FIGURES:
            service, floor = row.get("service", {}).get(name), row.get("floor", {}).get(name)
            ratio = row.get("ratio", {}).get(name)
            line += f" {_num(service):>7} {_num(floor):>7} {('-' if ratio is None else f'{ratio:.2f}'):>6} |"
        lines.append(line)
        for app in ("service", "floor"):
            if row.get(app, {}).get("check", "ok") != "ok":
                lines.append(f"{'':43}!! {app}: {row[app]['check']}")
    return "\n".join(lines)


def main() -> int:
    cfg = config()
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk; `make bench` does it)", file=sys.stderr)
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    skipped = []
    if "postgresql" in cfg["databases"]:
        why = unreachable(cfg["postgres_url"])
        if why:
            print(f"!! PostgreSQL UNREACHABLE at {cfg['postgres_url']} ({why}): PostgreSQL skipped", flush=True)
            cfg["databases"].remove("postgresql")
            skipped.append({"database": "postgresql", "reason": why})
    print(f"bench: {cfg}", flush=True)
    runs: list[dict] = []
    datasets: list[dict] = []
    for kind in cfg["databases"]:
        for size in cfg["sizes"]:
            bench_dataset(kind, size, cfg, runs, datasets)
    rows = compare(runs)
    report = table(rows)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    result = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "wrk": wrk_version.strip()},
        "config": cfg, "skipped": skipped, "datasets": datasets, "table": rows, "runs": runs,
    }
    stamp = started.strftime("%Y%m%d-%H%M%S")
    for name in (f"bench-{stamp}", "latest"):
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.txt").write_text(report + "\n")
    print("\n" + report)
    for s in skipped:
        print(f"\n!! PostgreSQL UNREACHABLE: skipped ({s['reason']})")
    print(f"\nwritten: {RESULTS / f'bench-{stamp}.json'} (and latest.json, latest.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

