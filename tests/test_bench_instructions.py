"""bench/instructions.py counts what it says: the instructions of the requests it sends, so that the count per
request does not depend on how many were sent. Run as `make bench-instructions` runs it (tests import no bench
code), on the floor, the quickest app to start under valgrind, with its reports in a folder of the test's."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def per_request(requests: int, results: Path) -> float:
    """The floor's M instructions per SQLite GET, counted over `requests` GETs."""
    env = {**os.environ, "BENCH_APPS": "floor", "BENCH_DATABASES": "sqlite", "BENCH_OPS": "get",
           "BENCH_INSTRUCTIONS_REQUESTS": str(requests), "BENCH_RESULTS": str(results)}
    subprocess.run([sys.executable, "-m", "bench.instructions"], cwd=ROOT, env=env, check=True, timeout=600,
                   capture_output=True)
    return json.loads((results / "instructions.json").read_text())["results"]["sqlite"]["floor"]["get"]


def test_the_count_per_request_does_not_depend_on_how_many_were_sent(tmp_path: Path) -> None:
    few, many = per_request(10, tmp_path / "few"), per_request(40, tmp_path / "many")
    # What is not the requests' (the settling after them, some 0.2 M) weighs a tenth as much over 40 as over 10.
    assert 0.1 < many < few < many * 1.15
