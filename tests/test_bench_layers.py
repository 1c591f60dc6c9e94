"""bench/layers.py measures each benchmarked operation's database work on both sides, the e-mails the POSTs
queued sent by each side's sender (it fails when one is left unsent). Run as `make bench-layers` runs it (tests
import no bench code), briefly, on SQLite, with its reports in a folder of the test's."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ["GET /onboards/{id}", "GET /onboards?limit=100", "PUT /onboards/{id}", "POST /onboards, its writes",
              "POST /onboards, its e-mail sent"]


def test_each_operations_work_is_measured_on_both_sides(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_DATABASES": "sqlite", "BENCH_LAYERS_CALLS": "10", "BENCH_LAYERS_REPEAT": "2",
           "BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench.layers"], cwd=ROOT, env=env, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads((tmp_path / "layers.json").read_text())
    assert list(found) == ["sqlite"] and list(found["sqlite"]) == OPERATIONS
    assert all(side > 0 for figures in found["sqlite"].values() for side in figures.values())
    assert (tmp_path / "layers.txt").read_text().count("sqlite ") == len(OPERATIONS)
