"""The benchmark's data set, written straight into the tables: executemany on SQLite, COPY on PostgreSQL.

Shape for `size` onboards (every row with consistent foreign keys, as the workflow would leave them):

* the *load buyer*: one account with USERS users, holding min(size // 2, 10 000) onboards; the
  benchmark authenticates as its first user, reads and updates its onboards and creates new ones;
* other buyers: one user each, ONBOARDS_PER_BUYER onboards each;
* sellers: max(100, size // 1000, load buyer's onboards / USERS) accounts, one user each; each
  onboard comes from a different seller of its buyer (one live invitation per seller and address,
  as the unique index demands);
* per onboard: the accepted recipient invitation, the seller's entity for the buyer, the buyer's
  mirror entity for the seller, the connection, the onboard (statuses mixed: mostly completed);
* every account has an API key and a flow.

`add_invitations` later adds pending invitations to the load buyer's users, one per POST /onboards.
"""

import contextlib
import hashlib
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import peewee

from models.accounts import Account, ApiKey, User
from models.base import BaseModel, db, new_id, utcnow
from models.connections import Connection
from models.entities import Entity
from models.flows import Flow
from models.invitations import Invitation
from models.onboards import Onboard

USERS = 10  # users of the load buyer; POST invitations are spread over them
ONBOARDS_PER_BUYER = 100
CHUNK = 20_000  # onboards per transaction
# Foreign-key order.
ORDER: tuple[type[BaseModel], ...] = (Account, User, ApiKey, Flow, Entity, Connection, Invitation, Onboard)
STATUSES = ["completed"] * 12 + ["in_progress"] * 3 + ["created"] * 3 + ["failed", "completed_flows_sync"]


@dataclass
class DataSet:
    size: int
    account_id: str  # the load buyer
    api_key: str
    emails: list[str]
    onboards: list[tuple[str, str]]  # the load buyer's (onboard id, invitation id)
    seconds: float = 0.0
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


class Writer:
    """Buffers rows per table and writes them in foreign-key order, one transaction per flush."""

    def __init__(self) -> None:
        self.postgres = isinstance(db.obj, peewee.PostgresqlDatabase)
        self.rows: dict[type[BaseModel], list[tuple]] = defaultdict(list)
        self.columns = {m: [f.column_name for f in m._meta.sorted_fields] for m in ORDER}
        self.written: dict[str, int] = defaultdict(int)

    def add(self, model: type[BaseModel], **values: Any) -> str:
        values.setdefault("id", new_id())
        columns = self.columns[model]
        if unknown := values.keys() - set(columns):
            raise ValueError(f"{model.__name__} has no column {sorted(unknown)}")
        self.rows[model].append(tuple(values[c] if c in values else self._default(model, c) for c in columns))
        return values["id"]

    @staticmethod
    def _default(model: type[BaseModel], column: str) -> Any:
        """A column this loader does not know (added since): the field's default, as stored."""
        field = next(f for f in model._meta.sorted_fields if f.column_name == column)
        value = field.default() if callable(field.default) else field.default
        value = field.db_value(value)
        return _ts(value) if hasattr(value, "strftime") else int(value) if isinstance(value, bool) else value

    def flush(self) -> None:
        with db.atomic():
            cursor = db.cursor()
            for model in ORDER:
                rows = self.rows.pop(model, [])
                if not rows:
                    continue
                table, columns = model._meta.table_name, self.columns[model]
                names = ", ".join(f'"{c}"' for c in columns)
                if self.postgres:
                    with cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                        copy.write("".join(_copy_lines(rows)))
                else:
                    marks = ", ".join("?" * len(columns))
                    cursor.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)
                self.written[table] += len(rows)


def _copy_lines(rows: Iterable[tuple]) -> Iterable[str]:
    # COPY's text format; none of our values holds a tab, newline or backslash.
    for row in rows:
        yield "\t".join("\\N" if v is None else str(int(v)) if isinstance(v, bool) else str(v) for v in row) + "\n"


def _account(w: Writer, name: str, email: str, now: str, key: str | None = None) -> tuple[str, str]:
    """An account with one user, an API key and a flow; (account id, flow id)."""
    account = w.add(Account, name=name, created_at=now)
    user = w.add(User, account_id=account, email=email, created_at=now)
    key = key or secrets.token_hex(20)
    w.add(ApiKey, user_id=user, prefix=key[:8], digest=hashlib.sha256(key.encode()).hexdigest(),
          created_at=now, revoked_at=None)
    flow = w.add(Flow, account_id=account, name=f"{name} inbound", enabled=True, fields="[]", sources="[]",
                 steps="[]", version=1, created_at=now, updated_at=now)
    return account, flow


def _onboard(w: Writer, seller: tuple[str, str, str], buyer: tuple[str, str, str], email: str, status: str,
             now: str, expired: str) -> tuple[str, str]:
    """An accepted recipient invitation from `seller` to `email` of `buyer`, and its onboard."""
    seller_id, seller_name, seller_email = seller
    buyer_id, buyer_name, buyer_flow = buyer
    invitation = new_id()
    for_buyer = w.add(Entity, account_id=seller_id, name=buyer_name, source=None, recipient="buyer", is_account=True,
                      pending=False, connected_account_id=buyer_id, invitation_id=invitation,
                      invitation_expires_at=expired, module_ids="[]", created_at=now, updated_at=now)
    for_seller = w.add(Entity, account_id=buyer_id, name=seller_name, source="seller", recipient=None,
                       is_account=True, pending=False, connected_account_id=seller_id, invitation_id=invitation,
                       invitation_expires_at=None, module_ids="[]", created_at=now, updated_at=now)
    done = status.startswith("completed")
    connection = w.add(Connection, seller_id=seller_id, buyer_id=buyer_id, buyer_entity_id=for_buyer,
                       seller_entity_id=for_seller, invitation_id=invitation, created_by=seller_email,
                       has_setup_buyer_delivery=done, created_at=now, updated_at=now)
    w.add(Invitation, id=invitation, kind="recipient", account_id=seller_id, email=email, description=None,
          expires_at=expired, accepted_at=now, accepted_by_id=buyer_id, entity_id=for_buyer,
          connection_id=connection, created_at=now)
    onboard = w.add(Onboard, account_id=buyer_id, invitation_id=invitation, connection_id=connection,
                    flow_id=None if status == "created" else buyer_flow, status=status,
                    reason="seeded failure" if status == "failed" else None, version=1, created_at=now,
                    updated_at=now)
    return onboard, invitation


def load(size: int) -> DataSet:
    """Writes the data set for `size` onboards into the (migrated, empty) bound database."""
    started = time.perf_counter()
    with _bulk_session():
        w = Writer()
        now = _ts(utcnow() - timedelta(days=30))
        expired = _ts(utcnow() - timedelta(days=23))
        load_count = min(size // 2, 10_000)
        seller_count = max(100, size // 1000, -(-load_count // USERS))

        sellers = []
        for s in range(seller_count):
            seller_id, _ = _account(w, f"Seller {s}", f"seller{s}@bench.test", now)
            sellers.append((seller_id, f"Seller {s}", f"seller{s}@bench.test"))
        api_key = secrets.token_hex(20)
        emails = [f"load{u}@bench.test" for u in range(USERS)]
        load_id, load_flow = _account(w, "Load Buyer", emails[0], now, key=api_key)
        for email in emails[1:]:
            w.add(User, account_id=load_id, email=email, created_at=now)
        w.flush()

        mine = []
        for j in range(load_count):
            mine.append(_onboard(w, sellers[j // USERS], (load_id, "Load Buyer", load_flow), emails[j % USERS],
                                 STATUSES[j % len(STATUSES)], now, expired))
            if len(w.rows[Onboard]) >= CHUNK:
                w.flush()
        rest, b = size - load_count, 0
        while rest > 0:
            count = min(rest, ONBOARDS_PER_BUYER)
            name, email = f"Buyer {b}", f"buyer{b}@bench.test"
            buyer_id, buyer_flow = _account(w, name, email, now)
            for j in range(count):
                _onboard(w, sellers[(b * 37 + j) % seller_count], (buyer_id, name, buyer_flow), email,
                         STATUSES[(b + j) % len(STATUSES)], now, expired)
            rest, b = rest - count, b + 1
            if len(w.rows[Onboard]) >= CHUNK:
                w.flush()
        w.flush()
    _finish()
    return DataSet(size=size, account_id=load_id, api_key=api_key, emails=emails, onboards=mine,
                   seconds=time.perf_counter() - started, rows=sum(w.written.values()), counts=dict(w.written))


def add_invitations(data: DataSet, count: int) -> list[str]:
    """`count` fresh pending recipient invitations to the load buyer's users, from new sellers (each
    seller invites every user once); their ids. Each POST /onboards consumes one."""
    w = Writer()
    now = utcnow()
    created, expires = _ts(now), _ts(now + timedelta(days=7))
    ids: list[str] = []
    while len(ids) < count:
        seller_id = new_id()
        seller_email = f"seller-{seller_id}@bench.test"
        w.add(Account, id=seller_id, name=f"Seller {seller_id}", created_at=created)
        w.add(User, account_id=seller_id, email=seller_email, created_at=created)
        for email in data.emails:
            invitation = new_id()
            entity = w.add(Entity, account_id=seller_id, name=email, source=None, recipient="buyer", is_account=True,
                           pending=True, connected_account_id=None, invitation_id=invitation,
                           invitation_expires_at=expires, module_ids="[]", created_at=created, updated_at=created)
            connection = w.add(Connection, seller_id=seller_id, buyer_id=None, buyer_entity_id=entity,
                               seller_entity_id=None, invitation_id=invitation, created_by=seller_email,
                               has_setup_buyer_delivery=False, created_at=created, updated_at=created)
            w.add(Invitation, id=invitation, kind="recipient", account_id=seller_id, email=email, description=None,
                  expires_at=expires, accepted_at=None, accepted_by_id=None, entity_id=entity,
                  connection_id=connection, created_at=created)
            ids.append(invitation)
    with db.connection_context():
        with _bulk_session():
            w.flush()
        _checkpoint()  # else the app measured next pays for checkpointing these rows out of the WAL
    return ids[:count]


def reset_for_put(data: DataSet) -> int:
    """Puts the load buyer's seeded onboards back to `in_progress` (so that the PUT run's first
    round, to `failed`, changes every one); the sum of their versions after."""
    ids = [o for o, _ in data.onboards]
    with db.connection_context(), db.atomic():
        for start in range(0, len(ids), 5000):
            Onboard.update(status="in_progress", reason=None).where(Onboard.id.in_(ids[start:start + 5000])).execute()
        return version_sum(data)


def version_sum(data: DataSet) -> int:
    with db.connection_context():
        return int(Onboard.select(peewee.fn.SUM(Onboard.version)).where(Onboard.account == data.account_id).scalar())


def onboard_count(data: DataSet) -> int:
    with db.connection_context():
        return Onboard.select().where(Onboard.account == data.account_id).count()


def outbox_backlog() -> int:
    from models.outbox import OutboxMessage

    with db.connection_context():
        return OutboxMessage.backlog()


def backend_pids() -> list[int] | None:
    """The PostgreSQL backends connected to the bound database (but this one); None on SQLite."""
    if not isinstance(db.obj, peewee.PostgresqlDatabase):
        return None
    with db.connection_context():
        rows = db.execute_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                              "AND pid <> pg_backend_pid()").fetchall()
    return [pid for (pid,) in rows]


SQLITE_BULK = {"foreign_keys": "OFF", "synchronous": "OFF", "cache_size": "-1000000"}


@contextlib.contextmanager
def _bulk_session() -> Iterator[None]:
    """This connection set for bulk writes, then set back: the pool hands it on afterwards, to the app
    itself where it runs in this process."""
    if isinstance(db.obj, peewee.SqliteDatabase):
        # Rows are consistent by construction, and a crash loses only the bench db.
        saved = {pragma: db.execute_sql(f"PRAGMA {pragma}").fetchone()[0] for pragma in SQLITE_BULK}
        for pragma, value in SQLITE_BULK.items():
            db.execute_sql(f"PRAGMA {pragma} = {value}")
        try:
            yield
        finally:
            for pragma, value in saved.items():
                db.execute_sql(f"PRAGMA {pragma} = {value}")
        return
    db.execute_sql("SET synchronous_commit = off")
    with contextlib.suppress(peewee.DatabaseError):  # no foreign-key triggers (superusers only): 2x faster
        db.execute_sql("SET session_replication_role = replica")
    try:
        yield
    finally:
        db.execute_sql("RESET ALL")


def _checkpoint() -> None:
    """SQLite's write-ahead log emptied into the database file (PostgreSQL needs nothing of the kind)."""
    if isinstance(db.obj, peewee.SqliteDatabase):
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _finish() -> None:
    """What a production database would have done by itself after such a load."""
    if isinstance(db.obj, peewee.SqliteDatabase):
        _checkpoint()
    else:
        db.execute_sql("VACUUM ANALYZE")  # autovacuum's job; statistics shape the plans
