"""Request ids, the structured access log and the Prometheus metrics."""

import json
import logging
import re

import pytest

from tests.helpers import invite


def test_a_sane_request_id_is_echoed(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123.x"}).headers["x-request-id"] == "abc-123.x"


@pytest.mark.parametrize("offered", [None, "", "x" * 129, "bad id with spaces", "<script>"])
def test_otherwise_one_is_made(client, offered):
    headers = {"X-Request-ID": offered} if offered is not None else {}
    made = client.get("/health", headers=headers).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_made_ids_differ_between_requests(client):
    assert len({client.get("/health").headers["x-request-id"] for _ in range(50)}) == 50


def test_errors_carry_the_request_id_too(client):
    response = client.get("/onboards", headers={"X-Request-ID": "req-401"})
    assert response.status_code == 401 and response.headers["x-request-id"] == "req-401"


def test_access_log_is_one_json_line_per_request(client, seller, caplog):
    caplog.set_level(logging.INFO, logger="onboards.access")
    client.get("/flows", headers={**seller.auth, "X-Request-ID": "req-flows"})
    [record] = [r for r in caplog.records if r.name == "onboards.access"]
    assert record.__dict__["operation_id"] == "listFlows"
    assert record.__dict__["account_id"] == seller.account_id
    assert record.__dict__["status"] == 200 and record.__dict__["request_id"] == "req-flows"
    assert record.__dict__["duration_ms"] >= 0
    formatted = json.loads(_json_handler().format(record))
    assert formatted["level"] == "INFO" and formatted["request_id"] == "req-flows" and formatted["status"] == 200


def _json_handler() -> logging.Handler:
    [handler] = [h for h in logging.getLogger().handlers if getattr(h, "onboards", False)]
    return handler


def test_metrics_count_requests_by_operation_and_status(client, seller):
    def count(status: str) -> float:
        text = client.get("/metrics").text
        pattern = rf'onboards_requests_total{{operation="getFlow",status="{status}"}} (\S+)'
        match = re.search(pattern, text)
        return float(match.group(1)) if match else 0.0

    before = count("404")
    client.get("/flows/5fd4371e940df5a34a3888b2", headers=seller.auth)
    assert count("404") == before + 1
    assert "onboards_request_duration_seconds_bucket" in client.get("/metrics").text


def test_metrics_show_the_outbox_backlog(client, seller, buyer):
    invite(client, seller, buyer.email)
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert "onboards_outbox_backlog 1.0" in response.text
