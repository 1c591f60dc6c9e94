"""The database handle, the base model and the conventions every model shares."""

import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, NamedTuple, Self

import orjson
import peewee
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import MaxConnectionsExceeded, PooledDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

_in_force: ContextVar[peewee.Database | None] = ContextVar("database", default=None)


class ContextDatabase(peewee.DatabaseProxy):
    """The models' database: the one in force in the current context. An app's runtime puts its own there for
    each request and each of its threads (onboards.runtime), a script its own (`bind`), so two apps in one
    process each query their own database."""

    @property
    def obj(self) -> peewee.Database | None:
        return _in_force.get()

    def initialize(self, database: peewee.Database | None) -> None:
        # peewee's Proxy calls this with None when it is made; any other database goes through use_database.
        if database is not None:
            raise TypeError("the models' database is the context's: use_database(database)")


db = ContextDatabase()


def use_database(database: peewee.Database) -> Token[peewee.Database | None]:
    """`database` the models' in this context (and in the worker threads it starts)."""
    return _in_force.set(database)

# Written by hand: pulling in pymongo's driver for a 12-byte id layout is not worth it.
_oid_counter = iter(range(secrets.randbelow(1 << 24), 1 << 62))
_oid_random = secrets.token_hex(5)
_oid_lock = threading.Lock()


def new_id() -> str:
    """A BSON-ObjectId-style id: 4 bytes of seconds, 5 random bytes per process, a 3-byte counter."""
    with _oid_lock:
        count = next(_oid_counter) & 0xFFFFFF
    return f"{int(time.time()):08x}{_oid_random}{count:06x}"


def digest_of(secret: str) -> str:
    """The SHA-256 hex digest a secret (an API key, a link, a code, a session) is kept as, or a client's
    subject is counted under: never the text itself."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_short_id() -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(6))


# What no one-line text holds: the control characters (Unicode's Cc) and the line and paragraph separators
# (Zl, Zp), each of which some mail software reads as a line break. The spec refuses them in names that
# e-mails quote in their subjects.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def utcnow() -> datetime:
    # Stored naive in UTC: SQLite has no time zones and PostgreSQL's `timestamp` matches.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


# A JSON body's times: RFC 3339 in UTC to the second, as rfc3339 writes them, written by orjson itself (stored times
# are naive UTC). A model's JSON leaves its times as they are, for to_json to write.
JSON_TIMES = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


def to_json(value: Any, *, indent: bool = False) -> bytes:
    """`value` as JSON, its times as rfc3339 writes them: every body a handler answers, its ETag's digest and the
    command line's JSON are made here (`indent`: two spaces a level, for people). Problem bodies hold no times."""
    return orjson.dumps(value, option=JSON_TIMES | (orjson.OPT_INDENT_2 if indent else 0))


def rfc3339(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as RFC 3339, to the second. A naive time's isoformat() begins with its 19
    characters to the second whatever its microseconds; it is dearer with the timespec keyword, or strftime."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat()[:19] + "Z"


class JSONField(peewee.TextField):
    """JSON kept as text, so the same column works on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


def value_of(instance: peewee.Model, field: peewee.Field) -> Any:
    """A field's value in `instance`; a foreign key's through its id accessor: reading the field itself would
    fetch the row it refers to."""
    return getattr(instance, field.object_id_name if isinstance(field, peewee.ForeignKeyField) else field.name)


class BaseModel(peewee.Model):
    id = peewee.CharField(primary_key=True, max_length=24, default=new_id)

    class Meta:
        database = db
        legacy_table_names = False

    @classmethod
    def get_for_account(cls, account_id: str, object_id: str, *, for_update: bool = False) -> Self:
        """The object with this id in this account; any other account's object is not found.
        `for_update` locks the row until the transaction ends."""
        statement = compiled((cls, "get_for_account", for_update), lambda account, object_id: locked_if(
            cls.for_account(account).where(cls.id == object_id).limit(1), for_update), str, str)
        found = statement.first(cls, account_id, object_id.lower())
        if found is None:
            raise NotFound(f"{cls.__name__.lower()} not found")
        return found

    @classmethod
    def get_by_id(cls, pk: Any) -> Self:
        """peewee's get_by_id, its statement compiled once (Compiled): the models' commonest read."""
        key = cls.id  # every model's primary key
        statement = compiled((cls, "get_by_id"), lambda marker: cls.select().where(key == marker).limit(1),
                             int if isinstance(key, peewee.IntegerField) else str)
        found = statement.first(cls, key.db_value(pk))
        if found is None:
            raise cls.DoesNotExist(f"{cls.__name__} {pk} does not exist")  # type: ignore[attr-defined]
        return found

    @classmethod
    def create(cls, **values: Any) -> Self:
        """peewee's create, its INSERT compiled once per model and set of columns (Compiled). Like peewee's, it
        writes the columns given and those with a default; the database fills the others."""
        instance, _made = cls.write_new(None, values)
        return instance

    @classmethod
    def create_unless_taken(cls, unique: peewee.Field, **values: Any) -> Self | None:
        """`create`, or None where a row already holds this `unique` value: ON CONFLICT DO NOTHING, so that a
        lost race needs no savepoint to leave the transaction usable on PostgreSQL."""
        instance, made = cls.write_new(unique, values)
        return instance if made else None

    @classmethod
    def write_new(cls, unique: peewee.Field | None, values: dict[str, Any]) -> tuple[Self, bool]:
        """The instance of `values`, and whether its row was inserted (with `unique`: unless the value was taken)."""
        instance = cls(**values)
        fields = tuple(f for f in cls._meta.sorted_fields if f.name in values or f.default is not None)

        def build(*markers: str) -> peewee.Query:
            insert = cls.insert({f: peewee.Value(m, unpack=False) for f, m in zip(fields, markers, strict=True)})
            return insert if unique is None else insert.on_conflict(action="NOTHING", conflict_target=[unique])

        key = (cls, "create", unique and unique.name, *(f.name for f in fields))
        statement = compiled(key, build, *[str] * len(fields))
        return instance, statement.execute(*(f.db_value(value_of(instance, f)) for f in fields)).rowcount != 0

    def as_row(self) -> dict[str, Any]:
        """The instance's values by field name, as a page read as dicts holds a row (a foreign key's id)."""
        return {f.name: value_of(self, f) for f in type(self)._meta.sorted_fields}

    @classmethod
    def for_account(cls, account_id: str) -> "peewee.ModelSelect[Self]":
        return AccountRows.of(cls, account_id)

    def check_seen(self, if_match: set[int] | None) -> None:
        """For a model that keeps a version: `if_match`, when given, holds the versions the client saw
        (If-Match); any other is VersionChanged."""
        if if_match is not None and self.version not in if_match:  # type: ignore[attr-defined]
            raise VersionChanged(f"{type(self).__name__.lower()} has changed since it was read (If-Match)")


# What a database that is away (down, unreachable, pool exhausted) raises: worth a retry later.
DATABASE_UNAVAILABLE = (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)


class DomainError(Exception):
    """What the data refuses, named by its class (a subclass per cause); onboards/problems.py maps each
    class to what a client is answered."""


class VersionChanged(DomainError):
    """The object changed since the client read it (If-Match)."""


class NotFound(DomainError):
    """No such object in the account."""


class Gone(DomainError):
    """The object existed and is no longer usable (an expired invitation)."""


class Refused(DomainError):
    """A limit's refusal: `limit`, its stable name (the label its refusals are counted under), and the seconds
    until a retry may succeed, which the message ends with as the Retry-After header gives them."""

    def __init__(self, limit: str, reached: str, retry_after: float) -> None:
        self.limit = limit
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(f"{reached}: retry after {seconds(self.retry_after)}")


def seconds(count: int) -> str:
    return f"{count} second{'' if count == 1 else 's'}"


class Unavailable(Refused):
    """The database did not answer within the limit's time: try again shortly."""


class InvalidValue(DomainError):
    """A value the rules refuse that the spec's schemas let through (or a command line gave)."""


class Compiled:
    """A statement whose shape never changes, its SQL made once per kind of database through peewee's public API
    (`Query.sql()`), then run with each call's values (`Model.raw`, `Database.execute_sql`): peewee builds a
    query's SQL anew on every run, some thousand Python calls for one GET. `build` makes the query from markers
    standing for the values (`kinds`: str or int, each); a call's values go where its markers went. They reach
    the driver as given: pass them as the database stores them (a field's `db_value`)."""

    def __init__(self, build: Callable[..., peewee.Query], *kinds: type) -> None:
        self.build, self.kinds = build, kinds
        self.made: dict[type, tuple[str, list[tuple[int | None, Any]]]] = {}

    def statement(self, *values: Any) -> tuple[str, list[Any]]:
        """The SQL for the bound database and its parameters for `values`."""
        made = self.made.get(type(db.obj))
        if made is None:
            markers = [f"\x00compiled {i}\x00" if kind is str else -(10**15 + i) for i, kind in enumerate(self.kinds)]
            sql, params = self.build(*markers).sql()
            slots = [(next((i for i, m in enumerate(markers) if type(m) is type(p) and m == p), None), p)
                     for p in params]
            if {i for i, _ in slots if i is not None} != set(range(len(markers))):
                # A marker the query converted (a field's db_value) would run as a constant, whatever the value.
                raise TypeError(f"each value must reach the SQL as one parameter, unconverted: {sql}")
            made = self.made[type(db.obj)] = (sql, slots)
        sql, slots = made
        return sql, [p if i is None else values[i] for i, p in slots]

    def rows(self, model: type[peewee.Model], *values: Any, dicts: bool = False) -> list[Any]:
        """The statement's rows as `model`'s instances, as iterating the built query gives them; with `dicts`, as
        its `dicts()` gives them (each value as its field makes it, keyed by the field's name) for a statement
        that selects `model`'s own columns by name, as `page`'s does: an alias, an expression or a join's column
        would be keyed and converted differently than peewee's dicts() does."""
        sql, params = self.statement(*values)
        if not dicts:
            return list(model.raw(sql, *params))
        # Read from the cursor, not through peewee's dicts(): it calls each field's python_value on every value,
        # most of a long page's cost, where the drivers already give most values as the field would make them.
        cursor = db.execute_sql(sql, params)
        fields = [model._meta.columns.get(column[0]) for column in cursor.description]
        names = [column[0] if field is None else field.name
                 for column, field in zip(cursor.description, fields, strict=True)]
        converted = [(i, field.python_value) for i, field in enumerate(fields) if not _as_read(field)]
        found = []
        for row in cursor:
            values_of = list(row)
            for i, python_value in converted:
                values_of[i] = python_value(values_of[i])
            found.append(dict(zip(names, values_of, strict=True)))
        return found

    def first(self, model: type[peewee.Model], *values: Any) -> Any:
        """The statement's first row as `model`'s instance, or None."""
        return next(iter(self.rows(model, *values)), None)

    def execute(self, *values: Any) -> Any:
        """Runs the statement; the driver's cursor (its rows, or `rowcount` for a write)."""
        sql, params = self.statement(*values)
        return db.execute_sql(sql, params)


def _as_read(field: peewee.Field | None) -> bool:
    """Whether both drivers (sqlite3, psycopg) already give a column's values as `field`'s python_value makes them:
    text as str and integers as int, which CharField, TextField and IntegerField (exactly: a subclass may change
    them) and a foreign key to one of them leave alone. A column no field has is left as read, as peewee leaves
    it."""
    while isinstance(field, peewee.ForeignKeyField):
        field = field.rel_field
    return field is None or type(field) in (peewee.CharField, peewee.TextField, peewee.IntegerField)


STATEMENTS: dict[Any, Compiled] = {}


def compiled(key: Any, build: Callable[..., peewee.Query], *kinds: type) -> Compiled:
    """The Compiled statement kept under `key` (made from `build` and `kinds` the first time)."""
    found = STATEMENTS.get(key)
    if found is None:
        found = STATEMENTS[key] = Compiled(build, *kinds)
    return found


class AccountRows(peewee.ModelSelect):
    """BaseModel.for_account's query as it is made, an account's rows of one model: page() runs it as a statement
    compiled once. A query made from it (a where, a join, an order) is a plain ModelSelect again, built as usual."""

    account_id: str

    @classmethod
    def of(cls, model: Any, account_id: str) -> Any:
        query = model.select().where(model.account == account_id)
        query.__class__ = cls
        query.account_id = account_id
        return query

    def clone(self) -> Any:
        copy: Any = super().clone()
        copy.__class__ = peewee.ModelSelect
        return copy

    def count(self, database: Any = None, clear_limit: bool = False) -> int:
        """How many rows the account has, by a statement compiled once (peewee's count() builds a subquery).
        COUNT(*) counts the index's entries; COUNT(id) would read each one's id too, half as dear again."""
        model: Any = self.model
        statement = compiled((model, "count"), lambda account: model.for_account(account).select(
            peewee.fn.COUNT(peewee.SQL("*"))), str)
        return int(statement.execute(self.account_id).fetchone()[0])


class Page(NamedTuple):
    items: list[Any]  # the model instances, or their values by field name (page's `dicts`)
    more: bool  # whether more items follow
    last_id: str | None  # the last item's id, None when empty


def page_query(query: "peewee.ModelSelect[Any]", *, fetch: int, after_id: str | None = None,
               before_id: str | None = None, sort: str = "asc") -> "peewee.ModelSelect[Any]":
    """`fetch` rows of `query` in id order, after and before the given ids. Ids are time-ordered, so id
    order is creation order, and an (account, id) index serves an account's page as one range."""
    model = query.model
    if after_id is not None:
        query = query.where(model.id > after_id.lower())
    if before_id is not None:
        query = query.where(model.id < before_id.lower())
    return query.order_by(model.id.desc() if sort == "desc" else model.id.asc()).limit(fetch)


def page(query: "peewee.ModelSelect[Any]", *, limit: int, after_id: str | None = None, before_id: str | None = None,
         sort: str = "asc", dicts: bool = False) -> Page:
    """Up to `limit` rows of `query` (page_query); one more is read to know whether more follow. With `dicts`,
    each row is its values by field name (as `as_row` gives them), not a model instance: peewee's making of an
    instance, a field at a time through its descriptor, is most of a long page's cost."""
    if isinstance(query, AccountRows):
        model: Any = query.model
        after, before = after_id is not None, before_id is not None
        cursors = [cursor.lower() for cursor in (after_id, before_id) if cursor is not None]
        statement = compiled((model, "page", sort, after, before), lambda account, *marks: page_query(
            model.for_account(account), fetch=marks[-1], after_id=marks[0] if after else None,
            before_id=marks[-2] if before else None, sort=sort), str, *[str] * len(cursors), int)
        rows = statement.rows(model, query.account_id, *cursors, limit + 1, dicts=dicts)
    else:
        built = page_query(query, fetch=limit + 1, after_id=after_id, before_id=before_id, sort=sort)
        rows = list(built.dicts() if dicts else built)
    items = rows[:limit]
    return Page(items, len(rows) > limit, None if not items else items[-1]["id"] if dicts else items[-1].id)


def make_database(url: str, *, max_connections: int = 64, statement_timeout: float = 5,
                  postgres_pool: type[PooledPostgresqlDatabase] = PooledPostgresqlDatabase) -> peewee.Database:
    """The database a DATABASE_URL names: `sqlite:///path` or `postgresql://user@host:port/name` (pooled by
    `postgres_pool`: the server's own is onboards.connexion_patches.PostgresPool)."""
    scheme = url.split(":", 1)[0]
    params = parse_db_url(url)
    if scheme == "sqlite":
        path = params.pop("database")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Pooled, so a request reuses an open connection instead of opening the file and setting the
        # pragmas again; connections move between worker threads, hence check_same_thread=False.
        # A write waits up to `statement_timeout` for another process's lock.
        return PooledSqliteDatabase(path, max_connections=max_connections, timeout=statement_timeout,
                                    stale_timeout=300, check_same_thread=False, pragmas={
                                        "journal_mode": "wal", "busy_timeout": int(statement_timeout * 1000),
                                        "foreign_keys": 1,
                                        "synchronous": "normal"})
    if scheme in ("postgres", "postgresql"):
        # A wait for a free pooled connection, a connect and a statement each end within their timeouts;
        # a server that stops answering on an open connection is noticed by the TCP keepalives and user
        # timeout, and the request meanwhile gives up at its own deadline (handlers.lifecycle).
        return postgres_pool(
            params.pop("database"), max_connections=max_connections, timeout=statement_timeout, stale_timeout=300,
            prefer_psycopg3=True, connect_timeout=max(2, int(statement_timeout)),
            options=f"-c statement_timeout={int(statement_timeout * 1000)}",
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3, tcp_user_timeout=10_000,
            **params,
        )
    raise ValueError(f"DATABASE_URL: unsupported scheme {scheme!r} (use sqlite:/// or postgresql://)")


def bind(url: str, **kwargs: Any) -> peewee.Database:
    """The database `url` names made the models' in this context (a script's, a test's: an app's is its
    runtime's), after closing what the previous one held open."""
    database = make_database(url, **kwargs)
    release()
    use_database(database)
    return database


@contextmanager
def opened(url: str, **kwargs: Any) -> Iterator[peewee.Database]:
    """The database `url` names, the models' in this context while the block runs; closed after it."""
    database = make_database(url, **kwargs)
    in_force = use_database(database)
    try:
        yield database
    finally:
        _in_force.reset(in_force)
        release(database)


def release(database: peewee.Database | None = None) -> None:
    """Closes the connections `database` (else the context's) holds: the whole pool on PostgreSQL."""
    database = db.obj if database is None else database
    if database is None:
        return
    close_all = getattr(database, "close_all", None)
    if close_all is not None:
        close_all()
    else:
        database.close()


@contextmanager
def transaction(write: bool = True) -> Iterator[None]:
    """One unit of work on a connection of this thread.

    SQLite write transactions begin IMMEDIATE so that two writers queue on the busy timeout
    instead of failing with "database is locked" when one upgrades a read lock. A read on PostgreSQL
    runs each statement on its own: at READ COMMITTED, its default and ours, each statement of a
    transaction takes a snapshot of its own anyway, so BEGIN and COMMIT would only add two round
    trips. A read on SQLite keeps one snapshot for all its statements, and costs no round trip.
    """
    with db.connection_context():
        if write and isinstance(db.obj, peewee.SqliteDatabase):
            with db.atomic("IMMEDIATE"):
                yield
        elif write or not is_postgres():
            with db.atomic():
                yield
        else:
            yield


def connected_at_once() -> bool:
    """Whether this thread holds a connection of the context's database, taking a free one of its pool if it
    held none; never waiting for one to be given back, as the pool's own `connect` does (up to its timeout)."""
    if not db.is_closed():
        return True
    try:  # PooledDatabase.connect waits for a free connection; the connect it wraps refuses at once
        super(PooledDatabase, db.obj).connect()
    except MaxConnectionsExceeded:
        return False
    return True


def is_postgres() -> bool:
    return isinstance(db.obj, peewee.PostgresqlDatabase)


def locked_if(query: "peewee.ModelSelect[Any]", lock: bool) -> "peewee.ModelSelect[Any]":
    return locked(query) if lock else query


def locked(query: "peewee.ModelSelect[Any]", *, shared: bool = False) -> "peewee.ModelSelect[Any]":
    """`query` taking row locks until the transaction ends (`shared`: locks that keep the rows from changing
    or going, and let other readers lock them too). PostgreSQL needs FOR UPDATE (FOR SHARE) for that;
    SQLite has no row locks and needs none: its IMMEDIATE write transactions run one at a time."""
    if not is_postgres():
        return query
    # peewee's docs take the clause as a string ("FOR SHARE"); its type hint says bool.
    return query.for_update("FOR SHARE" if shared else True)  # type: ignore[arg-type]
