"""`make bench-profile`: where each app's CPU goes per request, sampled with py-spy under wrk load.

For each app and operation (one database, one data-set size, one concurrency) it runs wrk while
`py-spy record --gil` samples the thread holding the GIL; the measured CPU ms per request splits
into Python time (samples / rate), by component (the package of the innermost frame) and by
function (inclusive), and the rest, spent without the GIL (database engine and driver, sockets).
Writes bench/results/profile.txt, the raw stacks (profile-*.txt, collapsed format: speedscope and
flamegraph.pl read them) and profile.json.

Settings: BENCH_DATABASES (first one; sqlite), BENCH_SIZES (first one; 1000), BENCH_OPS,
BENCH_APPS, BENCH_PROFILE_CONCURRENCY (16), BENCH_PROFILE_SECONDS (10). Needs py-spy in the venv.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import dataset, run

COMPONENTS = [  # matched against py-spy's "function (path:line)", path relative to sys.path
    ("peewee connect/close (pool checkout and return)",
     re.compile(r"^(Database\.connect|Database\.close|Database\._close|SqliteDatabase\._connect|"
                r"SqliteDatabase\._set_pragmas|_initialize_connection)\b.*peewee\.py")),
    ("database driver (peewee execute, fetch)",
     re.compile(r"^(Database\.execute_sql|Database\._execute_cursor|CursorWrapper\.iterate)\b.*peewee\.py")),
    ("peewee (query building, rows)", re.compile(r"[(/](peewee\.py|playhouse/)")),
    ("psycopg", re.compile(r"[(/]psycopg")),
    ("connexion (+ werkzeug)", re.compile(r"[(/](connexion|werkzeug)/")),
    ("jsonschema", re.compile(r"[(/](jsonschema|referencing|rpds)")),
    ("prometheus_client", re.compile(r"[(/]prometheus_client/")),
    ("app code (models, handlers, onboards, bench)", re.compile(r"[(/](models|handlers|onboards|bench)[/)]")),
    ("starlette", re.compile(r"[(/]starlette/")),
    ("uvicorn + httptools", re.compile(r"[(/](uvicorn/|httptools)")),
    ("anyio + threads (hand-offs to worker threads)",
     re.compile(r"[(/](anyio/|threading\.py|concurrent/futures|queue\.py)")),
    ("json", re.compile(r"[(/]json/")),
    ("logging", re.compile(r"[(/](logging/|pythonjsonlogger/)")),
    ("asyncio / uvloop", re.compile(r"[(/](asyncio/|uvloop)")),
]
RATE = 200  # samples per second
INTERESTING = re.compile(  # the frames worth an inclusive figure: app code and each layer's entry
    r"\((models|handlers|onboards|bench)/|^(RequestResponseCycle\.run_asgi|ConnexionMiddleware\.__call__|"
    r"SecurityMiddleware\.__call__|RequestValidationMiddleware\.__call__|RoutingMiddleware\.__call__|"
    r"ContextMiddleware\.__call__|run_in_threadpool|AsyncOperation\.__call__|WorkerThread\.run|"
    r"JSONResponse\.render|.*Validator\.validate\w*|Draft4Validator\.iter_errors|"
    r"Select\.__sql__|ModelSelect\.__sql__|BaseQuery\.execute|ModelObjectCursorWrapper\.process_row)\b")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def component(frames: list[str]) -> str:
    """The component of the innermost frame that belongs to one: stdlib work counts for its caller."""
    for frame in reversed(frames):
        for name, pattern in COMPONENTS:
            if pattern.search(frame):
                return name
    return "other"


def function_name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path})"


def summarize(raw: Path) -> dict:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[component(frames)] += count
        leaf[function_name(frames[-1])] += count
        for name in {function_name(f) for f in frames}:
            inclusive[name] += count
    return {"samples": total, "components": own, "inclusive": inclusive, "self": leaf}


def main() -> int:
    cfg = run.config()
    spy = run.VENV_BIN / "py-spy"
    if not spy.exists():
        print(f"bench.profile: {spy} is missing: {run.VENV_BIN / 'pip'} install py-spy", file=sys.stderr)
        return 1
    kind, size = cfg["databases"][0], cfg["sizes"][0]
    concurrency = int(os.environ.get("BENCH_PROFILE_CONCURRENCY", "16"))
    seconds = int(os.environ.get("BENCH_PROFILE_SECONDS", "10"))
    cfg.update(duration=seconds, warmup=1.0)
    results: dict[str, dict] = {}
    lines: list[str] = []
    with run.database(kind, cfg, size) as url, tempfile.TemporaryDirectory(dir=run.RESULTS) as tmp:
        data = dataset.load(size)
        auth = run.basic_auth(data)
        for app in cfg["apps"]:
            server = run.Server(app, url, run.RESULTS / "logs" / f"profile-{kind}-{size}-{app}.log")
            try:
                for op in cfg["ops"]:
                    ids = run.request_ids(data, op, seconds, Path(tmp))
                    raw = run.RESULTS / f"profile-{kind}-{app}-{op}.txt"
                    spy_process = subprocess.Popen(
                        [str(spy), "record", "--pid", str(server.process.pid), "--duration", str(seconds),
                         "--rate", str(RATE), "--gil", "--format", "raw", "--output", str(raw)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    cpu_before = server.cpu_seconds()
                    result = run.run_wrk(server.port, op, concurrency, seconds, ids, auth)
                    if op == "post":
                        run.wait_outbox()
                    cpu_ms = 1000 * (server.cpu_seconds() - cpu_before) / max(1, result["requests"])
                    spy_process.wait()
                    server.settle()
                    summary = summarize(raw)
                    results[f"{app} {op}"] = {"cpu_ms_per_request": round(cpu_ms, 3), **{
                        k: dict(v.most_common(25)) if isinstance(v, Counter) else v for k, v in summary.items()}}
                    lines += report(app, op, concurrency, result, cpu_ms, summary)
                    print("\n".join(lines[-40:]), flush=True)
            finally:
                server.stop()
    (run.RESULTS / "profile.txt").write_text("\n".join(lines) + "\n")
    (run.RESULTS / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {run.RESULTS / 'profile.txt'}, profile.json, profile-*.txt (collapsed stacks)")
    return 0


def report(app: str, op: str, concurrency: int, result: dict, cpu_ms: float, summary: dict) -> list[str]:
    """py-spy samples only the thread holding the GIL: samples / RATE is the Python time; what the
    process used beyond it ran without the GIL (SQLite's engine, libpq/psycopg, sockets, syscalls)."""
    total = summary["samples"] or 1
    requests = max(1, result["requests"])
    python_ms = 1000 * summary["samples"] / RATE / requests
    rps = result["requests"] / (result["duration_us"] / 1e6)
    out = [f"== {app} {run.OPS[op]}  c={concurrency}  {rps:.0f} req/s  {cpu_ms:.2f} CPU ms/req "
           f"= {python_ms:.2f} Python (GIL held) + {max(0.0, cpu_ms - python_ms):.2f} outside the GIL "
           f"(C: database engine/driver, sockets)", "  Python ms per request by component (innermost frame):"]
    for name, count in summary["components"].most_common():
        out.append(f"    {python_ms * count / total:6.3f} ms  {100 * count / total:5.1f}%  {name}")
    out.append("  largest self times:")
    for name, count in summary["self"].most_common(12):
        out.append(f"    {python_ms * count / total:6.3f} ms  {100 * count / total:5.1f}%  {name}")
    out.append("  inclusive times of the app's own layers and of the libraries' entry points:")
    for name, count in summary["inclusive"].most_common():
        if INTERESTING.search(name):
            out.append(f"    {python_ms * count / total:6.3f} ms  {100 * count / total:5.1f}%  {name}")
    return out


if __name__ == "__main__":
    sys.exit(main())
