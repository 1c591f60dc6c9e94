"""`make bench`: up to four apps side by side under the same load, on SQLite and PostgreSQL. bench/README.md
says how it works and how to read it.

Settings (environment): BENCH_APPS (service,floor,history; also stock, fastapi, pipeline), BENCH_SIZES (1000,1000000),
BENCH_CONCURRENCY (1,16,64), BENCH_DURATION (5), BENCH_WARMUP (1), BENCH_DATABASES (sqlite,postgresql),
BENCH_OPS (get,list,put,post), BENCH_REPEAT (2), BENCH_POSTGRES_URL (where throw-away databases are made),
BENCH_RESULTS (bench/results: the reports, and the SQLite files), BENCH_QUICK=1 (1000 onboards, c 1 and 16,
3 s, one run each), BENCH_BASELINE (596076d: the commit the `history` app serves).
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.base import bind, release
from models.migrations import migrate
from tests import dataset
from tests.postgres import throwaway_database, unreachable

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = Path(os.environ.get("BENCH_RESULTS", BENCH / "results"))  # where the reports go, and SQLite files
VENV_BIN = Path(sys.executable).parent
SERVE = "import sys; from onboards.cli import main; sys.exit(main())"
OPS = {"get": "GET /onboards/{id}", "list": "GET /onboards?limit=100", "put": "PUT /onboards/{id}",
       "post": "POST /onboards"}
APPS = {"service": [str(VENV_BIN / "onboards"), "serve", "--no-access-log", "--workers", "1"],
        "floor": [sys.executable, "-m", "bench.floor"], "stock": [sys.executable, "-m", "bench.stock"],
        "fastapi": [sys.executable, "-m", "bench.fastapi_ref"], "pipeline": [sys.executable, "-m", "bench.pipeline"],
        "history": []}  # history: made by baseline()
ANSWER_HEADERS = ("ETag", "X-Total-Count", "Link")  # the spec's headers of the benchmarked operations' answers
FIXED_ANSWERS = {"pipeline"}  # apps whose answers are fixed by design (bench/pipeline.py), not held to the others
TICKS = os.sysconf("SC_CLK_TCK")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def config() -> dict[str, Any]:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    apps = env_list("BENCH_APPS", "service,floor,history")
    if unknown := set(apps) - APPS.keys():
        raise SystemExit(f"BENCH_APPS: unknown {sorted(unknown)}; choose from {', '.join(APPS)}")
    return {
        "quick": quick, "apps": apps,
        "sizes": [int(s) for s in env_list("BENCH_SIZES", "1000" if quick else "1000,1000000")],
        "concurrency": [int(c) for c in env_list("BENCH_CONCURRENCY", "1,16" if quick else "1,16,64")],
        "duration": float(os.environ.get("BENCH_DURATION", "3" if quick else "5")),
        "warmup": float(os.environ.get("BENCH_WARMUP", "0.5" if quick else "1")),
        "databases": env_list("BENCH_DATABASES", "sqlite,postgresql"),
        "ops": [op for op in env_list("BENCH_OPS", "get,list,put,post") if op in OPS],
        "repeat": int(os.environ.get("BENCH_REPEAT", "1" if quick else "2")),
        "postgres_url": os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        "baseline": os.environ.get("BENCH_BASELINE", "596076d"),
    }


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def baseline(commit: str) -> Iterator[dict[str, Any]]:
    """The service at `commit`, checked out in a git worktree of its own in a temp dir: its serve command and
    directory. It shares this virtualenv when its dependencies are these (pyproject.toml, constraints.txt), and
    gets its own otherwise. Its own directory first on sys.path, so its code is imported, not this one's."""
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        where = Path(tmp) / "onboards"
        git("worktree", "add", "--detach", "--quiet", str(where), commit)
        try:
            python = sys.executable
            if any(git("show", f"{commit}:{name}") != (ROOT / name).read_text().strip()
                   for name in ("pyproject.toml", "constraints.txt")):
                print(f"bench: {commit} has other dependencies: installing them in its own virtualenv", flush=True)
                subprocess.run([sys.executable, "-m", "venv", str(where / ".venv")], check=True)
                python = str(where / ".venv" / "bin" / "python")
                subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c",
                                str(where / "constraints.txt"), str(where)], check=True)
            yield {"command": [python, "-c", SERVE, "serve", "--no-access-log", "--workers", "1"], "cwd": where,
                   "commit": git("rev-parse", "--short", commit), "shared_venv": python == sys.executable}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=False,
                           capture_output=True)


def launchers(cfg: dict, stack: contextlib.ExitStack, skipped: list[dict]) -> dict[str, tuple[list[str], Path]]:
    """The command and directory each of `cfg`'s apps is started with; `history`'s from BENCH_BASELINE's worktree,
    made on `stack` (cfg's baseline then the short commit). A clone without that commit (a shallow one) leaves
    `history` out, saying so and why in `skipped`."""
    launch = {app: (APPS[app], ROOT) for app in cfg["apps"]}
    if "history" in cfg["apps"] and subprocess.run(
            ["git", "cat-file", "-e", f"{cfg['baseline']}^{{commit}}"], cwd=ROOT, capture_output=True).returncode:
        print(f"!! BENCH_BASELINE {cfg['baseline']} is no commit of this clone (a shallow one?): history skipped",
              flush=True)
        cfg["apps"].remove("history")
        skipped.append({"app": "history", "reason": f"no commit {cfg['baseline']}"})
    if "history" in cfg["apps"]:
        then = stack.enter_context(baseline(cfg["baseline"]))
        launch["history"] = (then["command"], then["cwd"])
        cfg["baseline"] = then["commit"]
        print(f"bench: history is the service at {then['commit']} "
              f"({'this virtualenv' if then['shared_venv'] else 'its own virtualenv'})", flush=True)
    return launch


@contextlib.contextmanager
def database(kind: str, cfg: dict, size: int) -> Iterator[str]:
    """A fresh, migrated, empty database of `kind`, bound here too; its URL. Removed afterwards."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory(prefix=f"sqlite-{size}-", dir=RESULTS) if kind == "sqlite"
          else throwaway_database(cfg["postgres_url"], f"onboards_bench_{size}")) as where:
        url = f"sqlite:///{where}/bench.db" if kind == "sqlite" else where
        bind(url, max_connections=4)
        try:
            migrate()
            yield url
        finally:
            release()


class Server:
    """One app in its own process, one worker, production settings."""

    def __init__(self, app: str, url: str, log: Path, command: list[str] | None = None, cwd: Path = ROOT,
                 ready_seconds: float = 60) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.app, self.port = app, s.getsockname()[1]
        env = {**os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(self.port),
               "VALIDATE_RESPONSES": "0", "ACCESS_LOG": "0", "SMTP_URL": "", "PYTHONPATH": str(cwd)}
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("ab")
        self.process = subprocess.Popen(command or APPS[app], cwd=cwd, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{app} exited with {self.process.returncode}; see {log}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url("/health"), timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{app} did not answer /health within {ready_seconds:g} s; see {log}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all threads) so far."""
        return pid_cpu(self.process.pid) or 0.0

    def settle(self, timeout: float = 10) -> None:
        """Until the requests still in flight when wrk stopped are done: the process goes quiet."""
        deadline, last = time.monotonic() + timeout, self.cpu_seconds()
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


def pid_cpu(pid: int) -> float | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    return None


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the machine has used (all cores, idle and iowait left out) and of those, the seconds the
    hypervisor gave other machines (steal): a run with much of it was slowed by a neighbour."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS, ticks[7] / TICKS


def postgres_cpu() -> dict[int, float] | None:
    """PostgreSQL only: CPU seconds so far of each backend serving the bench database."""
    pids = dataset.backend_pids()
    return None if pids is None else {pid: cpu for pid in pids if (cpu := pid_cpu(pid)) is not None}


def run_wrk(port: int, op: str, concurrency: int, seconds: float, ids: Path, auth: str) -> dict:
    """One wrk run (one thread, `concurrency` keep-alive connections); its BENCH_RESULT and its own CPU."""
    env = {**os.environ, "BENCH_OP": op, "BENCH_IDS": str(ids), "BENCH_AUTH": auth}
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "--latency",
         "-s", str(BENCH / "wrk.lua"), f"http://127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, check=False)
    wall, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    result = json.loads(line.split(" ", 1)[1])
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["client_cpu_pct"] = round(100 * client / wall, 1)
    return result


def write_ids(path: Path, rows: list) -> Path:
    path.write_text("".join((" ".join(r) if isinstance(r, tuple) else r) + "\n" for r in rows))
    return path


def wait_outbox(timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while dataset.outbox_backlog() and time.monotonic() < deadline:
        time.sleep(0.2)


def basic_auth(data: dataset.DataSet) -> str:
    return "Basic " + base64.b64encode(f"API:{data.api_key}".encode()).decode()


def request_ids(data: dataset.DataSet, op: str, seconds: float, work: Path, rps_hint: float | None = None) -> Path:
    """The ids file for wrk's next run of `op`: for a POST, a generous pool of fresh invitations (one per
    request); for a PUT, the onboards reset so that each request changes one."""
    if op == "post":
        count = math.ceil((rps_hint or 3000) * (seconds + 1) * 1.3) + 100
        return write_ids(work / f"invitations-{time.monotonic_ns()}.txt", dataset.add_invitations(data, count))
    if op == "put":
        dataset.reset_for_put(data)
    onboards = work / "onboards.txt"
    return onboards if onboards.exists() else write_ids(onboards, data.onboards)


def answers(server: Server, data: dataset.DataSet) -> dict[str, tuple[int, list]]:
    """For requests all apps must answer alike: the status expected, the app's status (and, for a 200, its body and
    the headers the spec gives these operations)."""
    onboard, invitation = data.onboards[0]
    keys = {"": "", "key": basic_auth(data), "bad key": "Basic " + base64.b64encode(b"API:nokey").decode()}
    probes = [(200, "GET", f"/onboards/{onboard}", "key", None),
              (200, "GET", "/onboards?limit=3&sort=desc", "key", None), (401, "GET", f"/onboards/{onboard}", "", None),
              (401, "GET", f"/onboards/{onboard}", "bad key", None),
              (404, "GET", "/onboards/" + "0" * 24, "key", None), (400, "GET", "/onboards/nothex", "key", None),
              (400, "GET", "/onboards?limit=0", "key", None), (400, "GET", "/onboards?bogus=1", "key", None),
              (400, "PUT", f"/onboards/{onboard}", "key", {"invitation_id": invitation, "status": "done"}),
              (400, "POST", "/onboards", "key", {"invitation_id": "x"}), (400, "POST", "/onboards", "key", {})]
    found = {}
    for expected, method, path, key, body in probes:
        headers = {"Content-Type": "application/json"} | ({"Authorization": keys[key]} if keys[key] else {})
        sent = None if body is None else json.dumps(body)
        request = urllib.request.Request(server.url(path), sent.encode() if sent else None, headers, method=method)
        label = f"{method} {path} {sent or ''} ({key or 'no key'})"
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                found[label] = (expected, [answer.status, json.load(answer),
                                           {name: answer.headers.get(name) for name in ANSWER_HEADERS}])
        except urllib.error.HTTPError as refused:
            found[label] = (expected, [refused.code])
    return found


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
    writes_before = dataset.version_sum(data) if op == "put" else dataset.onboard_count(data) if op == "post" else 0
    db_before, machine_before = postgres_cpu(), machine_cpu()
    cpu_before, window_started = server.cpu_seconds(), time.monotonic()
    result = run_wrk(server.port, op, concurrency, cfg["duration"], ids, auth)
    if op == "post":
        wait_outbox()  # e-mail delivery is part of a POST's cost: charged to it
    cpu = server.cpu_seconds() - cpu_before
    machine, steal = (after - before for after, before in zip(machine_cpu(), machine_before, strict=True))
    window = time.monotonic() - window_started
    db_after = postgres_cpu()
    database_cpu = None if db_before is None or db_after is None else sum(
        cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
    requests = result["requests"]
    notes = [f"errors {errors}"] if (errors := {k: v for k, v in result["errors"].items() if v}) else []
    server.settle()
    writes = None
    if op in ("put", "post"):
        writes = (dataset.version_sum(data) if op == "put" else dataset.onboard_count(data)) - writes_before
        # A PUT overtaken by the next pass's PUT to the same onboard (SQLite's busy waits are not first come,
        # first served) finds its status already set: a no-op. A few are fine.
        if not (requests * 0.98 if op == "put" else requests) <= writes <= requests + concurrency:
            notes.append(f"{writes} rows written for {requests} requests")
    seconds = result["duration_us"] / 1e6
    return {
        "app": server.app, "op": op, "operation": OPS[op], "concurrency": concurrency,
        "requests": requests, "rows_written": writes, "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
        "mean_ms": round(result["mean_us"] / 1000, 3), "max_ms": result["max_us"] / 1000,
        "cpu_ms_per_request": round(1000 * cpu / requests, 3) if requests else None,
        "server_cpu_pct": round(100 * cpu / window, 1), "client_cpu_pct": result["client_cpu_pct"],
        "postgres_cpu_ms_per_request": round(1000 * database_cpu / requests, 3) if database_cpu and requests else None,
        "machine_busy_pct": round(100 * machine / window, 1), "steal_pct": round(100 * steal / window, 1),
        "cpu_window_seconds": round(window, 2), "check": "; ".join(notes) or "ok",
    }


def bench_dataset(kind: str, size: int, cfg: dict, launch: dict[str, tuple[list[str], Path]], runs: list[dict],
                  datasets: list[dict]) -> None:
    with database(kind, cfg, size) as url, tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        data = dataset.load(size)
        print(f"{kind} {size}: loaded {data.rows} rows in {data.seconds:.1f} s "
              f"(load account: {len(data.onboards)} onboards)", flush=True)
        logs = {app: RESULTS / "logs" / f"{kind}-{size}-{app}.log" for app in cfg["apps"]}
        wrong: dict[str, str] = {}
        # Per probe, the answer of the first app whose status was the one expected: the others are held to it.
        reference: dict[str, list] = {}
        # history last: its commit may predate a header added since, so it is held to statuses and bodies only.
        for app in sorted((app for app in cfg["apps"] if app not in FIXED_ANSWERS), key=lambda app: app == "history"):
            server = Server(app, url, logs[app], *launch[app])
            try:
                found = answers(server, data)
            finally:
                server.stop()
            bad = []
            for probe, (want, got) in found.items():
                held = reference.setdefault(probe, got) if got[0] == want else None
                if held is None or got[1:2] != held[1:2]:
                    bad.append(f"{probe}: {got[0]}")
                elif app != "history" and got[2:] != held[2:]:
                    bad.append(f"{probe}: headers {got[2]}, not {held[2]}")
            if bad:
                wrong[app] = "wrong answers: " + ", ".join(bad)
                print(f"!! {app}: {wrong[app]}", flush=True)
        datasets.append({"database": kind, "size": size, "load_seconds": round(data.seconds, 2), "rows": data.rows,
                         "rows_per_table": data.counts, "load_account_onboards": len(data.onboards),
                         "answers": wrong or "alike"})
        get_rps: dict[tuple[str, int], float] = {}
        for op in cfg["ops"]:
            # Each app's runs of one operation follow one another closely, in the order A B B A ...,
            # so that what else the machine does at the time weighs on all alike.
            for repeat in range(cfg["repeat"]):
                for app in cfg["apps"] if repeat % 2 == 0 else cfg["apps"][::-1]:
                    server = Server(app, url, logs[app], *launch[app])
                    try:
                        for concurrency in cfg["concurrency"]:
                            hint = get_rps.get((app, concurrency))
                            row = measure(server, data, op, concurrency, cfg, Path(tmp), hint)
                            if op == "get":
                                get_rps[(app, concurrency)] = row["rps"]
                            if app in wrong:
                                row["check"] = wrong[app] if row["check"] == "ok" else f"{row['check']}; {wrong[app]}"
                            row.update(database=kind, size=size, repeat=repeat)
                            runs.append(row)
                            print_run(row)
                    finally:
                        server.stop()


def print_run(row: dict) -> None:
    postgres = row["postgres_cpu_ms_per_request"]
    print(f"  {row['app']:8} {row['operation']:24} c={row['concurrency']:<3} {row['rps']:8.0f} rps  "
          f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  cpu {row['cpu_ms_per_request'] or 0:6.3f} ms/req"
          + (f"  postgres {postgres:6.3f} ms/req" if postgres is not None else "")
          + f"  (server {row['server_cpu_pct']}%, wrk {row['client_cpu_pct']}%, machine {row['machine_busy_pct']}%,"
          f" stolen {row['steal_pct']}%){'' if row['check'] == 'ok' else '  !! ' + row['check']}", flush=True)


# --- report ----------------------------------------------------------------------------------------

KEPT = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "steal_pct", "check")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def compare(runs: list[dict]) -> list[dict]:
    """One row per database × size × operation × concurrency, with each app's run of least CPU per request:
    the machine's other load only ever adds to that figure, so the least disturbed run is the closest to
    the app's own cost. Ratios of CPU per request: each app's to the floor's, and the service's targets."""
    rows: dict[tuple, dict] = {}
    for run in runs:
        key = (run["database"], run["size"], run["operation"], run["concurrency"])
        row = rows.setdefault(key, {**dict(zip(("database", "size", "operation", "concurrency"), key, strict=True)),
                                    "apps": {}})
        kept = row["apps"].get(run["app"])
        if kept is None or (run["cpu_ms_per_request"] or math.inf) < (kept["cpu_ms_per_request"] or math.inf):
            row["apps"][run["app"]] = {name: run[name] for name in KEPT}
    for row in rows.values():
        cpu = {app: figures["cpu_ms_per_request"] for app, figures in row["apps"].items()}
        for figures in row["apps"].values():  # requests a second one core would serve at this CPU per request
            figures["per_core"] = round(1000 / figures["cpu_ms_per_request"]) if figures["cpu_ms_per_request"] else None
        row["to_floor"] = {app: ratio(value, cpu.get("floor")) for app, value in cpu.items() if app != "floor"}
        for name, (_head, a, b) in RATIOS.items():
            row[name] = ratio(cpu.get(a), cpu.get(b))
    return list(rows.values())


# The service's ratios of CPU per request: name → (column head, numerator app, denominator app).
RATIOS = {"service/floor": ("s/floor", "service", "floor"), "stock/service": ("stock/s", "stock", "service"),
          "service/fastapi": ("s/fapi", "service", "fastapi"), "service/history": ("s/hist", "service", "history")}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[dict], apps: list[str]) -> str:
    """CPU ms per request of each app (× the floor's), requests a second per core, p99 latency, and the
    service's ratios."""
    others = [a for a in apps if a != "floor"]
    w = 8 * len(apps)
    head = (f"{'db':10} {'size':>7} {'operation':23} {'c':>3} | {'CPU ms/req':^{w}} | {'x floor':^{8 * len(others)}} "
            f"| {'req/s/core':^{w}} | {'p99 ms':^{w}} | " + " ".join(f"{head:>7}" for head, _a, _b in RATIOS.values()))
    names = "".join(f"{a:>8}" for a in apps)
    lines = [head, f"{'':47}| {names} | {''.join(f'{a:>8}' for a in others)} | {names} | {names} |", "-" * len(head)]
    for row in rows:
        figures = row["apps"]
        line = (f"{row['database']:10} {row['size']:>7} {row['operation']:23} {row['concurrency']:>3} | "
                + "".join(f"{_num(figures.get(a, {}).get('cpu_ms_per_request')):>8}" for a in apps) + " | "
                + "".join(f"{_num(row['to_floor'].get(a)):>8}" for a in others) + " | "
                + "".join(f"{_num(figures.get(a, {}).get('per_core')):>8}" for a in apps) + " | "
                + "".join(f"{_num(figures.get(a, {}).get('p99_ms')):>8}" for a in apps) + " | "
                + " ".join(f"{_num(row[r]):>7}" for r in RATIOS))
        lines.append(line)
        lines += [f"{'':47}!! {a}: {f['check']}" for a, f in figures.items() if f["check"] != "ok"]
    return "\n".join(lines)


def history(rows: list[dict], commit: str) -> str:
    """Per database and operation, the service's CPU per request over the same service's at the baseline commit,
    at each concurrency: above 1, this commit is dearer than the baseline."""
    lines = [f"history (service now / service at {commit}, CPU per request; requests a second per core, now and then):"]
    for kind, size, operation in dict.fromkeys((r["database"], r["size"], r["operation"]) for r in rows):
        mine = [r for r in rows if (r["database"], r["size"], r["operation"]) == (kind, size, operation)
                and r["service/history"] is not None]
        if mine:
            lines.append(f"  {kind:10} {size:>7} {operation:23} " + "; ".join(
                f"c={r['concurrency']} {_num(r['service/history'])} ({_num(r['apps']['service']['per_core'])} vs "
                f"{_num(r['apps']['history']['per_core'])})" for r in mine))
    return "\n".join(lines)


def floor_bound(kind: str, operation: str) -> float:
    """Issue 28's bound on service / floor: a GET (the floor's cheapest request) 4 × on SQLite and 3 × on
    PostgreSQL, where the database's round trip weighs in both; the list, PUT and POST 2.5 ×."""
    if operation == OPS["get"]:
        return 4.0 if kind == "sqlite" else 3.0
    return 2.5


def targets(rows: list[dict]) -> str:
    """The issue's targets for the service, each judged on its worst row."""
    lines = ["targets (service, worst row of each database × operation):"]
    for kind, operation in dict.fromkeys((r["database"], r["operation"]) for r in rows):
        mine = [r for r in rows if (r["database"], r["operation"]) == (kind, operation)]
        verdicts = []
        bounds = [("service/floor", floor_bound(kind, operation), True), ("service/fastapi", 2.0, True),
                  ("stock/service", 2.0, False)]
        if kind == "sqlite" and operation == OPS["get"]:
            bounds.append(("service/history", 1 / 3, True))
        for name, bound, below in bounds:
            if values := [r[name] for r in mine if r[name] is not None]:
                value = max(values) if below else min(values)
                met = value <= bound if below else value >= bound
                verdicts.append(f"{name} {value:.2f} {'<=' if below else '>='} {bound:.2f} "
                                f"{'met' if met else 'NOT MET'}")
        if verdicts:
            lines.append(f"  {kind:10} {operation:23} " + "; ".join(verdicts))
    large = [r for r in rows if r["operation"] == OPS["list"] and r["size"] > 1000 and "service" in r["apps"]]
    for row in large:
        small = next((r for r in rows if r["operation"] == OPS["list"] and r["size"] == 1000
                      and (r["database"], r["concurrency"]) == (row["database"], row["concurrency"])), None)
        if small and "service" in small["apps"]:
            p50, p99 = (ratio(row["apps"]["service"][f], small["apps"]["service"][f]) for f in ("p50_ms", "p99_ms"))
            lines.append(f"  {row['database']:10} list at {row['size']} / at 1000, c={row['concurrency']}: p50 "
                         f"{_num(p50)}, p99 {_num(p99)} (<= 1.3: {'met' if p50 and p50 <= 1.3 else 'NOT MET'})")
    return "\n".join(lines)


def main() -> int:
    cfg = config()
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk; `make bench` does it)", file=sys.stderr)
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    skipped = []
    if "postgresql" in cfg["databases"] and (why := unreachable(cfg["postgres_url"])):
        print(f"!! PostgreSQL UNREACHABLE at {cfg['postgres_url']} ({why}): PostgreSQL skipped", flush=True)
        cfg["databases"].remove("postgresql")
        skipped.append({"database": "postgresql", "reason": why})
    python = f"Python {sys.version.split()[0]} ({sys.executable})"
    print(f"bench: {python}; {cfg}", flush=True)
    runs: list[dict] = []
    datasets: list[dict] = []
    with contextlib.ExitStack() as stack:
        launch = launchers(cfg, stack, skipped)
        for kind in cfg["databases"]:
            for size in cfg["sizes"]:
                bench_dataset(kind, size, cfg, launch, runs, datasets)
    rows = compare(runs)
    then_line = f"history: the service at {cfg['baseline']}; " if "history" in cfg["apps"] else ""
    report = (f"{python}; {then_line}this commit {git('rev-parse', '--short', 'HEAD')}"
              f"{' (with uncommitted changes)' if git('status', '--porcelain', '--untracked-files=no') else ''}\n\n"
              + table(rows, cfg["apps"]) + "\n\n" + (history(rows, cfg["baseline"]) + "\n\n" if "history" in cfg["apps"]
                                                      else "") + targets(rows))
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    result = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "python_path": sys.executable,
                 "wrk": wrk_version.strip()},
        "config": cfg, "skipped": skipped, "datasets": datasets, "table": rows, "runs": runs,
    }
    stamp = started.strftime("%Y%m%d-%H%M%S")
    for name in (f"bench-{stamp}", "latest"):
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.txt").write_text(report + "\n")
    print("\n" + report + "".join(f"\n!! {s.get('database') or s['app']} skipped ({s['reason']})" for s in skipped))
    print(f"\nwritten: {RESULTS / f'bench-{stamp}.json'} (and latest.json, latest.txt)")
    # Apps that answer differently are not doing the same work: their figures are written, the run fails.
    unlike = [f"{d['database']} {d['size']}" for d in datasets if d["answers"] != "alike"]
    if unlike:
        print(f"!! the apps answered differently ({', '.join(unlike)}): see the '!!' lines above", file=sys.stderr)
    return 1 if unlike else 0


if __name__ == "__main__":
    sys.exit(main())
