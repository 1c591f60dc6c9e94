"""bench/instructions.py counts what it says: the instructions of the requests it sends, each once, none of an
idle server's. Run on the floor (the quickest to start under valgrind) in a context of its own, so the database
the benchmark binds stays out of the other tests."""

import contextvars
import http.client
from pathlib import Path

from bench import instructions, run
from tests import dataset


def counts(log: Path) -> tuple[int, int, int]:
    with run.database("sqlite", run.config(), 1000) as url:
        data = dataset.load(1000)
        auth, calls = run.basic_auth(data), instructions.requests("get", data, 30)
        counted = instructions.Counted("floor", url, log, run.APPS["floor"], run.ROOT)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", counted.server.port, timeout=600)
            assert instructions.send(connection, auth, calls[:4]) == 4  # warm-up, not counted
            idle = counted.count(lambda: None)
            answered: list[int] = []
            few = counted.count(lambda: answered.append(instructions.send(connection, auth, calls[:10])))
            many = counted.count(lambda: answered.append(instructions.send(connection, auth, calls)))
            assert answered == [10, 30]
            connection.close()
            return idle, few, many
        finally:
            counted.stop()


def test_counts_each_request_once_and_nothing_while_idle(tmp_path: Path) -> None:
    idle, few, many = contextvars.Context().run(counts, tmp_path / "floor.log")
    per_request_of_few, per_request_of_many = (few - idle) / 10, (many - idle) / 30
    assert abs(per_request_of_many / per_request_of_few - 1) < 0.1  # grows with the requests, not with the time
    assert idle < per_request_of_many  # an idle server, settling, costs less than one request
