"""`make bench-layers`: each benchmarked operation's database work alone, the service's against the floor's, in one
process (bench/README.md, "The targets"). The service's: its models in the unit of work its handlers open
(`models.base.transaction`), the response's JSON; the floor's: bench/floor.py's own functions on one driver
connection, as its stores run them. Then the e-mails the POSTs queued, sent by each one's sender (the service's
`OutboxSender` with the log deliverer, as without SMTP_URL; the floor's `send_due`). CPU per operation
(`time.process_time`, the best of BENCH_LAYERS_REPEAT rounds), so a database's own time is left out and what is
left is each side's Python and driver work. What the floor's share of its own request is tells how close the
service could come to the floor if its models cost no more than hand-written SQL: see bench/README.md.

Settings: BENCH_DATABASES (sqlite,postgresql), BENCH_POSTGRES_URL, BENCH_LAYERS_CALLS (GET, PUT and POST calls
per round: 200; a list a fifth), BENCH_LAYERS_REPEAT (5). Output: bench/results/layers.txt and .json
(BENCH_RESULTS). Each sender must send every e-mail queued, or the run fails.
"""

import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg

from bench import run
from models.base import make_database, page, transaction, use_database
from models.onboards import Onboard
from models.outbox import OutboxMessage
from onboards.connexion_patches import PostgresPool
from onboards.mailer import OutboxSender, log_deliverer
from tests import dataset

CALLS = int(os.environ.get("BENCH_LAYERS_CALLS", "200"))
REPEAT = int(os.environ.get("BENCH_LAYERS_REPEAT", "5"))


def cpu_us(call: Callable[[int], Any], calls: int) -> float:
    """The least CPU microseconds per call of `call(i)` over REPEAT rounds (other load only adds to it)."""
    best = float("inf")
    for _ in range(REPEAT):
        started = time.process_time()
        for i in range(calls):
            call(i)
        best = min(best, (time.process_time() - started) / calls)
    return best * 1e6


@contextmanager
def floor_for(url: str) -> Iterator[tuple[Any, Callable[..., Any]]]:
    """bench.floor, imported for `url` (it reads DATABASE_URL when imported), and a runner of its units of work
    on one connection as its stores run them: SQLite's writes between BEGIN IMMEDIATE and COMMIT, PostgreSQL's
    in a transaction, reads on their own."""
    os.environ["DATABASE_URL"] = url
    from bench import floor
    postgres = not url.startswith("sqlite")
    connection: Any = (psycopg.connect(url, autocommit=True) if postgres
                       else sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None))

    def unit(work: Callable[[Any], Any], write: bool = False) -> Any:
        cursor = connection.cursor()
        if not write:
            return work(floor.Tx(cursor, postgres))
        if postgres:
            with connection.transaction():
                return work(floor.Tx(cursor, True))
        cursor.execute("BEGIN IMMEDIATE")
        result = work(floor.Tx(cursor, False))
        cursor.execute("COMMIT")
        return result

    try:
        yield floor, unit
    finally:
        connection.close()


def measure(kind: str, cfg: dict) -> list[tuple[str, float, float]]:
    """(operation, the service's CPU µs, the floor's) for each operation on a fresh database of `kind`."""
    with run.database(kind, cfg, 1000) as url, floor_for(url) as (floor, unit):
        use_database(make_database(url, postgres_pool=PostgresPool))  # the server's pool, not the tests'
        data = dataset.load(1000)
        account, onboards = data.account_id, data.onboards

        def service_get(i: int) -> None:
            with transaction(write=False):
                orjson.dumps(Onboard.get_for_account(account, onboards[i % len(onboards)][0]).as_json())

        def floor_get(i: int) -> None:
            orjson.dumps(unit(lambda tx: floor.fetch(tx, account, onboards[i % len(onboards)][0]))[0])

        def service_list(_i: int) -> None:
            with transaction(write=False):
                rows = page(Onboard.for_account(account), limit=100, dicts=True).items
                b"[" + b",".join(orjson.dumps(Onboard.json_of(row)) for row in rows) + b"]"
                Onboard.for_account(account).count()

        def floor_list(_i: int) -> None:
            orjson.dumps(unit(lambda tx: floor.list_page(tx, account, 100, "asc", None, None))[0][:100])

        def service_put(i: int) -> None:
            onboard_id, invitation_id = onboards[i % len(onboards)]
            with transaction():
                onboard = Onboard.get_for_account(account, onboard_id)
                status = "in_progress" if onboard.status == "failed" else "failed"
                orjson.dumps(onboard.update_from({"invitation_id": invitation_id, "status": status}).as_json())

        def floor_put(i: int) -> None:
            onboard_id, invitation_id = onboards[i % len(onboards)]

            def change(tx: Any) -> Any:
                status = "in_progress" if floor.fetch(tx, account, onboard_id)[0]["status"] == "failed" else "failed"
                return floor.change(tx, account, onboard_id, {"invitation_id": invitation_id, "status": status}, None)

            orjson.dumps(unit(change, write=True)[0])

        dataset.reset_for_put(data)
        found = [("GET /onboards/{id}", cpu_us(service_get, CALLS), cpu_us(floor_get, CALLS)),
                 ("GET /onboards?limit=100", cpu_us(service_list, CALLS // 5), cpu_us(floor_list, CALLS // 5)),
                 ("PUT /onboards/{id}", cpu_us(service_put, CALLS), cpu_us(floor_put, CALLS))]
        theirs = iter(dataset.add_invitations(data, CALLS * REPEAT))
        ours = iter(dataset.add_invitations(data, CALLS * REPEAT))

        def service_post(_i: int) -> None:
            with transaction():
                orjson.dumps(Onboard.create_from_invitation(account, next(ours), None)[0].as_json())

        def floor_post(_i: int) -> None:
            orjson.dumps(unit(lambda tx: floor.create(tx, account, next(theirs), None), write=True)[0])

        found.append(("POST /onboards, its writes", cpu_us(service_post, CALLS), cpu_us(floor_post, CALLS)))
        found.append(("POST /onboards, its e-mail sent", *send_each(floor, unit)))
        return found


def send_each(floor: Any, unit: Callable[..., Any]) -> tuple[float, float]:
    """CPU µs per e-mail the POSTs queued, sent by the service's sender, then (queued again) by the floor's."""
    logging.disable(logging.CRITICAL)  # both log each e-mail: the formatting is not what is compared
    try:
        with transaction(write=False):
            queued = OutboxMessage.waiting().count()
        sender = OutboxSender(log_deliverer, poll_seconds=1, retry_base_seconds=1, retry_max_seconds=1, batch=queued)
        started = time.process_time()
        sent = sender.send_due()
        if sent != queued:
            raise RuntimeError(f"the service sent {sent} e-mails of {queued}")
        ours = (time.process_time() - started) / sent * 1e6
        with transaction():
            OutboxMessage.update(sent_at=None, attempts=0, claimed_until=None, lease_token=None).execute()
        started, sent = time.process_time(), 0
        while done := unit(floor.send_due, write=True):  # the floor sends 50 a round
            sent += done
        if sent != queued:  # each sender sends every e-mail the POSTs of both sides queued
            raise RuntimeError(f"the floor sent {sent} e-mails of {queued}")
        return ours, (time.process_time() - started) / sent * 1e6
    finally:
        logging.disable(logging.NOTSET)


def main() -> int:
    cfg = run.config()
    lines = [f"Python {sys.version.split()[0]}; CPU µs per operation's database work, in one process "
             f"(best of {REPEAT} rounds)", "",
             f"{'db':10} {'operation':32} | {'service':>9} {'floor':>9} | {'s/floor':>7}"]
    found: dict[str, dict[str, dict[str, float]]] = {}
    for kind in cfg["databases"]:
        if kind == "postgresql" and (why := run.unreachable(cfg["postgres_url"])):
            print(f"!! PostgreSQL UNREACHABLE at {cfg['postgres_url']} ({why}): skipped", flush=True)
            continue
        for operation, service, floor in measure(kind, cfg):
            found.setdefault(kind, {})[operation] = {"service": service, "floor": floor}
            lines.append(f"{kind:10} {operation:32} | {service:9.1f} {floor:9.1f} | {service / floor:7.2f}")
            print(lines[-1], flush=True)
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    (run.RESULTS / "layers.txt").write_text("\n".join(lines) + "\n")
    (run.RESULTS / "layers.json").write_text(json.dumps(found, indent=2) + "\n")
    print("\n".join(lines) + f"\n\nwritten: {run.RESULTS / 'layers.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
