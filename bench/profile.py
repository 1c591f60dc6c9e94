"""`make bench-profile`: where each app's CPU goes per request, sampled with py-spy under wrk load (bench/README.md).

Each operation and app (BENCH_OPS, BENCH_APPS; first of BENCH_DATABASES and BENCH_SIZES) runs under wrk at
BENCH_PROFILE_CONCURRENCY (16) for BENCH_PROFILE_SECONDS (10) while `py-spy record --gil` samples the thread
holding the GIL: without --gil it counts threads waiting on a lock or in the loop's poll as busy. Writes
bench/results/profile.txt and the collapsed stacks, profile-*.txt (speedscope and flamegraph.pl read them).
"""

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import run
from tests import dataset

COMPONENTS = [(name, re.compile(pattern)) for name, pattern in (  # against py-spy's "function (path:line)"
    ("peewee connection pool", r"^(Database\.(connect|close|_close)|\w+\._connect|_initialize_connection)\b"),
    ("database driver calls", r"^(Database\.execute_sql|Database\._execute_cursor|CursorWrapper\.iterate)\b"),
    ("peewee queries and rows", r"[(/](peewee\.py|playhouse/)"),
    ("psycopg", r"[(/]psycopg"),
    ("connexion", r"[(/]connexion/"),
    ("jsonschema", r"[(/](jsonschema|referencing|rpds)"),
    ("fastapi + pydantic", r"[(/](fastapi|pydantic)"),
    ("prometheus_client", r"[(/]prometheus_client/"),
    ("app code (models, handlers, onboards, bench)", r"[(/](models|handlers|onboards|bench)/"),
    ("starlette", r"[(/]starlette/"),
    ("uvicorn + httptools", r"[(/](uvicorn/|httptools)"),
    ("worker-thread hand-offs (anyio, threading)", r"[(/](anyio/|threading\.py|concurrent/futures|queue\.py)"),
    ("logging", r"[(/](logging/|pythonjsonlogger/)"),
    ("asyncio / uvloop", r"[(/](asyncio/|uvloop)"),
)]
RATE = 200  # samples per second
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
SHORTEN = re.compile(rf"^.*?(site-packages/|{re.escape(str(run.ROOT))}/|lib/python3\.\d+/)")


def component(frames: list[str]) -> str:
    """The innermost frame's component: the standard library's work counts for its caller's."""
    return next((name for frame in reversed(frames) for name, pattern in COMPONENTS if pattern.search(frame)),
                "other")


def function_name(frame: str) -> str:
    if not (match := FRAME.match(frame)):
        return frame
    return f"{match['function']} ({re.sub(SHORTEN, '', match['file'])})"


def summarize(raw: Path) -> tuple[int, dict[str, Counter[str]]]:
    counts: dict[str, Counter[str]] = {"component": Counter(), "self": Counter(), "inclusive": Counter()}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if frames:
            total += int(count)
            counts["component"][component(frames)] += int(count)
            counts["self"][function_name(frames[-1])] += int(count)
            for name in {function_name(f) for f in frames}:
                counts["inclusive"][name] += int(count)
    return total, counts


def report(title: str, cpu_ms: float, per: float, samples: int, counts: dict[str, Counter[str]]) -> list[str]:
    out = [f"== {title}: {cpu_ms:.3f} CPU ms/req = {per * samples:.3f} Python (GIL held) + "
           f"{max(0.0, cpu_ms - per * samples):.3f} without the GIL"]
    for heading, kind, top in (("by component", "component", 20), ("largest self times", "self", 15),
                               ("largest inclusive times", "inclusive", 40)):
        out.append(f"  Python ms per request, {heading}:")
        out += [f"    {per * n:6.3f} ms  {100 * n / max(1, samples):5.1f}%  {name}" for name, n in
                counts[kind].most_common(top)]
    return out


def difference(op: str, app: str, other: str, components: dict[str, dict[str, float]]) -> list[str]:
    mine, theirs = components[app], components[other]
    out = [f"== {app} - {other}, {run.OPS[op]}, Python ms per request by component:"]
    for name in sorted(mine.keys() | theirs.keys(), key=lambda n: theirs.get(n, 0) - mine.get(n, 0)):
        out.append(f"    {mine.get(name, 0) - theirs.get(name, 0):+7.3f} ms  "
                   f"({app} {mine.get(name, 0):6.3f}, {other} {theirs.get(name, 0):6.3f})  {name}")
    return out


def main() -> int:
    cfg = run.config()
    spy = run.VENV_BIN / "py-spy"
    if not spy.exists():
        print(f"bench.profile: {spy} is missing: {run.VENV_BIN / 'pip'} install py-spy", file=sys.stderr)
        return 1
    kind, size = cfg["databases"][0], cfg["sizes"][0]
    concurrency = int(os.environ.get("BENCH_PROFILE_CONCURRENCY", "16"))
    seconds = int(os.environ.get("BENCH_PROFILE_SECONDS", "10"))
    lines: list[str] = []

    def emit(section: list[str]) -> None:
        lines.extend(section)
        print("\n".join(section), flush=True)

    with contextlib.ExitStack() as stack:
        launch = run.launchers(cfg, stack, [])  # history too: where a regression's CPU went
        url = stack.enter_context(run.database(kind, cfg, size))
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=run.RESULTS))
        data = dataset.load(size)
        auth = run.basic_auth(data)
        for op in cfg["ops"]:
            components: dict[str, dict[str, float]] = {}
            for app in cfg["apps"]:
                server = run.Server(app, url, run.RESULTS / "logs" / f"profile-{kind}-{size}-{app}.log",
                                    *launch[app])
                try:
                    run.run_wrk(server.port, op, concurrency, 1, run.request_ids(data, op, 1, Path(tmp)), auth)
                    run.wait_outbox()
                    server.settle()
                    ids = run.request_ids(data, op, seconds, Path(tmp))
                    raw = run.RESULTS / f"profile-{kind}-{app}-{op}.txt"
                    spy_process = subprocess.Popen(
                        [str(spy), "record", "--pid", str(server.process.pid), "--duration", str(seconds),
                         "--rate", str(RATE), "--gil", "--format", "raw", "--output", str(raw)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    cpu_before = server.cpu_seconds()
                    result = run.run_wrk(server.port, op, concurrency, seconds, ids, auth)
                    run.wait_outbox()
                    cpu_ms = 1000 * (server.cpu_seconds() - cpu_before) / max(1, result["requests"])
                    spy_process.wait()
                    samples, counts = summarize(raw)
                    per = 1000 / RATE / max(1, result["requests"])
                    components[app] = {name: per * n for name, n in counts["component"].items()}
                    title = f"{app} {run.OPS[op]} c={concurrency} ({kind}, {size})"
                    if errors := {k: v for k, v in result["errors"].items() if v}:  # not the work meant: say so
                        title += f", !! errors {errors} of {result['requests']} requests"
                    emit(report(title, cpu_ms, per, samples, counts))
                finally:
                    server.stop()
            for other in sorted(components.keys() - {"service"}) if "service" in components else []:
                emit(difference(op, *(("stock", "service") if other == "stock" else ("service", other)), components))
    (run.RESULTS / "profile.txt").write_text("\n".join(lines) + "\n")
    print(f"\nwritten: {run.RESULTS / 'profile.txt'} and the collapsed stacks, profile-*.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
