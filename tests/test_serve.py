"""`onboards serve --workers N`: several processes on one port, metrics summed across them, and a
graceful stop on SIGTERM."""

import re

import httpx
import pytest

from tests.helpers import basic_auth, fresh_window
from tests.servers import Server


@pytest.mark.slow
def test_workers_share_the_port_and_their_metrics(tmp_path):
    server = Server(f"sqlite:///{tmp_path}/x.db", tmp_path / "serve.log", args=["--workers", "2"],
                    FAILED_AUTH_PER_MINUTE="1")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(40):
                assert http.get("/health").status_code == 200
            fresh_window(needed=5)
            wrong = [http.get("/flows", headers=basic_auth(f"{n}" * 40)).status_code for n in range(10)]
            text = http.get("/metrics").text
    finally:
        server.stop()
    match = re.search(r'onboards_requests_total\{operation="getHealth",status="200"\} (\S+)', text)
    # Each worker counts what it served; the exposition sums them, whichever worker answers it.
    assert match is not None and float(match.group(1)) >= 40, text
    assert wrong == [401] + [429] * 9
    assert 'onboards_limit_refusals_total{limit="failed-auth-per-address"} 9.0' in text, text
    log = server.log()
    assert len(set(re.findall(r"Started server process \[(\d+)\]", log))) == 2, log
    assert server.process.returncode == 0  # the supervisor stops its workers, then exits cleanly
    assert log.count("Application shutdown complete") == 2, log
    assert "Traceback" not in log
