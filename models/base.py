"""The database handle, the base model and the conventions every model shares."""

import json
import os
import secrets
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple, Self

import orjson
import peewee
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase, PooledSqliteDatabase

db = peewee.DatabaseProxy()

# Written by hand: pulling in pymongo's driver for a 12-byte id layout is not worth it.
_oid_counter = iter(range(secrets.randbelow(1 << 24), 1 << 62))
_oid_random = secrets.token_hex(5)
_oid_lock = threading.Lock()


def new_id() -> str:
    """A BSON-ObjectId-style id: 4 bytes of seconds, 5 random bytes per process, a 3-byte counter."""
    with _oid_lock:
        count = next(_oid_counter) & 0xFFFFFF
    return f"{int(time.time()):08x}{_oid_random}{count:06x}"


def new_short_id() -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(6))


def utcnow() -> datetime:
    # Stored naive in UTC: SQLite has no time zones and PostgreSQL's `timestamp` matches.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def rfc3339(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as RFC 3339, to the second; isoformat is twice as fast as strftime."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def rfc3339_column(field: peewee.Field) -> Any:
    """SQLite: the column as rfc3339 writes it. Times are stored naive in UTC (utcnow), as peewee writes
    them, `YYYY-MM-DD HH:MM:SS[.ffffff]`, so slicing the text is enough (SQLite's strftime, which parses
    it, cost a 100-row page a tenth of its work)."""
    return peewee.fn.substr(field, 1, 10).concat("T").concat(peewee.fn.substr(field, 12, 8)).concat("Z")


class Members:
    """An API object whose members are each one column of a model (text, a number or a time): `of` makes
    it from an instance (times by rfc3339); `json_rows` and `array` write a page of them as JSON without a
    model instance per row (models.base.page), from each object's JSON text as the database keeps it:
    SQLite in an index on `sqlite_object`, PostgreSQL in the column `stored`, which a trigger writes with
    `postgres_object` (migration 3)."""

    def __init__(self, stored: str, /, **fields: peewee.Field) -> None:
        self.stored = stored
        self.fields = fields
        self._plan = tuple((name, field.name, isinstance(field, peewee.DateTimeField))
                           for name, field in fields.items())

    def of(self, instance: peewee.Model) -> dict:
        data = instance.__data__.get  # the field values as peewee keeps them, foreign keys as ids
        return {name: rfc3339(data(field)) if time else data(field) for name, field, time in self._plan}

    def sqlite_object(self) -> peewee.ValueLiterals:
        """SQLite: the object's JSON text, as its json_object writes it, every constant written into the SQL
        rather than bound: then it is one and the same expression in a query and in an index on it, and
        SQLite reads a row's JSON from such an index (models.onboards.PAGE_INDEX) instead of writing it
        again, half of a 100-row page's instructions."""
        columns = {name: rfc3339_column(field) if isinstance(field, peewee.DateTimeField) else field
                   for name, field in self.fields.items()}
        pairs = [part for name, column in columns.items() for part in (name, column)]
        return peewee.ValueLiterals(peewee.fn.json_object(*pairs))

    def postgres_object(self, row: str) -> str:
        """PostgreSQL: SQL that writes the object's JSON text from the columns of `row` (a trigger's NEW),
        as `sqlite_object` and `of` write it. No index can hold it (to_json and to_char are STABLE), so a
        trigger keeps it in `stored`: written once per change, where a page would write it per row read."""
        parts: list[str] = []
        for name, field in self.fields.items():
            column = f'{row}."{field.column_name}"'
            value = (f"""'"' || to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '"'"""
                     if isinstance(field, peewee.DateTimeField) else f"to_json({column})::text")
            parts.append(f"""'{"," if parts else "{"}"{name}":' || coalesce({value}, 'null')""")
        return " || ".join(parts) + " || '}'"

    def json_rows(self, query: "peewee.ModelSelect[Any]") -> Any:
        """`query` selecting (id, the object's JSON text): on SQLite `sqlite_object`, which it reads from
        the index; on PostgreSQL the column `stored`."""
        if is_postgres():
            return query.select(self.fields["id"], peewee.SQL(f'"{self.stored}"'))
        return query.select(self.fields["id"], self.sqlite_object())

    @staticmethod
    def array(rows: list[tuple[str, str]]) -> orjson.Fragment:
        """The objects of `json_rows`' rows as one JSON array."""
        return orjson.Fragment("[" + ",".join(text for _id, text in rows) + "]")


class JSONField(peewee.TextField):
    """JSON kept as text, so the same column works on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


STAND_IN_INT = -(1 << 62)  # stand-in integers are spaced far apart, below anything stored


def _stand_in(kind: type, index: int) -> Any:
    """A value no request sends, of the kind a field converts to itself unchanged; the string is
    mixed-case and padded, so that lowercasing or stripping it shows."""
    if kind is str:
        return f" \x00Prepared Parameter {index}\x00 "
    if kind is int:
        return STAND_IN_INT - index * (1 << 32)
    if kind is datetime:
        return datetime(1, 1, 1, 0, 0, 0, index + 1)
    raise TypeError(f"no stand-in for {kind.__name__} parameters")


def _derived_from_a_stand_in(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value  # no stored text holds a NUL (PostgreSQL cannot store one)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value - STAND_IN_INT) < (1 << 48)
    return isinstance(value, datetime) and value.year == 1


class _ModelRows:
    """The rows of a prepared query whose columns are all fields of one model, as instances that get
    their field values at once: peewee sets them one by one through the fields' descriptors, then
    clears the changes it recorded (some 40 calls for a row of ten columns, a third of a 100-row list's
    work). A text or integer column's value is taken as the driver gives it: its field's converter would
    hand it back unchanged (two calls a column, most of what is left). Which columns to convert is
    worked out by peewee (`initialize`) at the first run and kept: the SQL, and so its columns, is the
    same on every run."""

    def __init__(self, wrapper: peewee.ModelObjectCursorWrapper) -> None:
        self.model, self.select, self.constructor = wrapper.model, wrapper.select, wrapper.constructor
        self.layout: tuple[list[str], list[tuple[str, Callable[[Any], Any]]]] | None = None

    def all(self, cursor: Any) -> list[Any]:
        layout = self.layout
        if layout is None:
            peewees = peewee.ModelObjectCursorWrapper(cursor, self.model, self.select, self.constructor)
            peewees.initialize()
            columns = peewees.unique_columns
            layout = self.layout = (columns, [(columns[i], peewees.converters[i]) for i in peewees.convert
                                              if not _as_given(peewees.fields[i], peewees.converters[i])])
        columns, converted = layout
        rows = cursor.fetchall()  # at once: peewee's iteration fetches and counts them one by one
        cursor.close()
        made, constructor, new = [], self.constructor, self.constructor.__new__
        for row in rows:
            instance = new(constructor)
            data = instance.__data__ = dict(zip(columns, row, strict=True))
            for name, converter in converted:
                data[name] = converter(data[name])
            instance._dirty = set()
            instance.__rel__ = {}
            made.append(instance)
        return made


# What a field's peewee converter makes of the value the driver reads from its column: the same value.
# Text columns read as str (SQLite's TEXT affinity stores any value as text; PostgreSQL's types are
# strict), integer columns as int; a str is what the string fields' adapt hands back unchanged, an int
# what the integer fields' does.
_AS_GIVEN = {vars(peewee._StringField)["adapt"], vars(peewee.IntegerField)["adapt"]}


def _as_given(field: Any, converter: Any) -> bool:
    """Whether `converter` is this plain text or integer field's own, which keeps what the driver reads."""
    while isinstance(field, peewee.ForeignKeyField) and converter == field.python_value:
        field, converter = field.rel_field, field.rel_field.python_value
    kind = type(field)
    return (isinstance(field, peewee.Field) and converter == field.python_value
            and kind.python_value is peewee.Field.python_value and kind.adapt in _AS_GIVEN)


class Prepared:
    """A peewee query built once with stand-in parameters, its SQL kept per database.

    Peewee builds and compiles a query anew on every call: a two-condition lookup takes some 1,300
    function calls (about 170 µs here), most of a GET's database work, where running kept SQL and
    reading its rows through the same query's cursor wrapper takes about 300. Written by hand because
    peewee keeps no compiled queries. `build` takes one argument per entry of `kinds` and must hand each
    to peewee as it is (no Python-side change): every stand-in is checked to reach the SQL's parameters
    unchanged. A parameter compared in a WHERE must not be None at run time (peewee writes `IS NULL`
    for a None it is given, but a kept `= ?` never matches NULL)."""

    def __init__(self, build: Callable[..., Any], *kinds: type) -> None:
        self.build, self.kinds = build, kinds
        self._made: weakref.WeakKeyDictionary[peewee.Database, _Made] = weakref.WeakKeyDictionary()

    def _prepared(self) -> "_Made":
        database = db.obj
        made = self._made.get(database)
        if made is None:
            stand_ins = [_stand_in(kind, index) for index, kind in enumerate(self.kinds)]
            query = self.build(*stand_ins)
            sql, params = query.sql()
            slots = [(position, index) for position, value in enumerate(params)
                     for index, stand_in in enumerate(stand_ins) if type(value) is type(stand_in) and value == stand_in]
            taken = {position for position, _ in slots}
            if {index for _, index in slots} != set(range(len(stand_ins))) or any(
                    _derived_from_a_stand_in(value) for position, value in enumerate(params) if position not in taken):
                raise TypeError(f"a parameter of {sql!r} was changed on its way to the SQL")
            # Rows of one model whose columns are all its fields can skip peewee's per-field setting.
            columns = getattr(query, "_returning", None) or ()
            wrapper = query._get_cursor_wrapper(None) if columns else None  # a wrapper only holds its cursor
            whole = (type(wrapper) is peewee.ModelObjectCursorWrapper and wrapper.is_model
                     and all(isinstance(column, peewee.Field) for column in columns))
            rows = _ModelRows(wrapper) if whole and wrapper is not None else None
            made = self._made[database] = _Made(query, sql, params, slots, rows)
        return made

    def _execute(self, args: tuple[Any, ...]) -> tuple["_Made", Any]:
        made = self._prepared()
        params = list(made.params)
        for position, index in made.slots:
            params[position] = args[index]
        return made, db.execute_sql(made.sql, params)

    def rows(self, *args: Any) -> list[Any]:
        """The SELECT's rows, made by the query's own cursor wrapper (model instances, joins and all)."""
        made, cursor = self._execute(args)
        if made.model_rows is not None:
            return made.model_rows.all(cursor)
        return list(made.query._get_cursor_wrapper(cursor))

    def values(self, *args: Any) -> list[tuple[Any, ...]]:
        """The SELECT's rows as the driver reads them, for a query whose columns need no converting."""
        _made, cursor = self._execute(args)
        rows = cursor.fetchall()
        cursor.close()
        return rows

    def first(self, *args: Any) -> Any:
        rows = self.rows(*args)
        return rows[0] if rows else None

    def count(self, *args: Any) -> int:
        """The rows an UPDATE or DELETE changed."""
        _made, cursor = self._execute(args)
        return db.rows_affected(cursor)


class _Made(NamedTuple):
    """A Prepared query on one database: the query built with stand-ins, its SQL, its parameters (the
    stand-ins' positions in `slots`, each with its argument's index), what makes its rows when they are
    whole models."""

    query: Any
    sql: str
    params: list[Any]
    slots: list[tuple[int, int]]
    model_rows: "_ModelRows | None"


class BaseModel(peewee.Model):
    id = peewee.CharField(primary_key=True, max_length=24, default=new_id)

    class Meta:
        database = db
        legacy_table_names = False

    @classmethod
    def get_for_account(cls, account_id: str, object_id: str, *, for_update: bool = False) -> Self:
        """The object with this id in this account; any other account's object is not found.
        `for_update` locks the row until the transaction ends."""
        lookup = _LOOKUPS.get((cls, for_update))
        if lookup is None:
            def build(account: str, object_id: str) -> "peewee.ModelSelect[Self]":
                query = cls.for_account(account).where(cls.id == object_id)
                return (locked(query) if for_update else query).limit(1)

            lookup = _LOOKUPS[cls, for_update] = Prepared(build, str, str)
        found = lookup.first(account_id, object_id.lower())
        if found is None:
            raise NotFound(f"{cls.__name__.lower()} not found")
        return found

    @classmethod
    def get_by_id(cls, pk: Any) -> Self:
        """peewee's, prepared (Prepared): the object with this id, else the model's DoesNotExist."""
        lookup = _LOOKUPS.get((cls, None))
        if lookup is None:
            lookup = _LOOKUPS[cls, None] = Prepared(lambda object_id: cls.select().where(cls.id == object_id).limit(1),
                                                    str)
        found = lookup.first(pk)
        if found is None:
            raise cls.DoesNotExist(f"{cls.__name__} matching id {pk!r} does not exist")  # type: ignore[attr-defined]
        return found

    @classmethod
    def for_account(cls, account_id: str) -> "peewee.ModelSelect[Self]":
        return cls.select().where(cls.account == account_id)  # type: ignore[attr-defined]


# Made at a model's first lookup, since each model (and locking) has its own query: get_for_account's
# per (model, locking), get_by_id's per (model, None).
_LOOKUPS: dict[tuple[type, bool | None], Prepared] = {}

# What a database that is away (down, unreachable, pool exhausted) raises: a 503, and a retry later.
DATABASE_UNAVAILABLE = (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)


class DomainError(Exception):
    """A request that conflicts with the data; `status` is the HTTP status it maps to."""

    status = 409
    title = "Conflict"


class PreconditionFailed(DomainError):
    status = 412
    title = "Precondition Failed"


class NotFound(DomainError):
    status = 404
    title = "Not Found"


class Gone(DomainError):
    status = 410
    title = "Gone"


def page_query(query: "peewee.ModelSelect[Any]", model: type[BaseModel], *, fetch: int, after_id: str | None,
               before_id: str | None, sort: str) -> "peewee.ModelSelect[Any]":
    """The query for `fetch` rows of `query` in id order, after and before the given ids.

    Ids are time-ordered, so id order is creation order and the primary key index serves it.
    """
    if after_id is not None:
        query = query.where(model.id > after_id)
    if before_id is not None:
        query = query.where(model.id < before_id)
    order = model.id.desc() if sort == "desc" else model.id.asc()
    return query.order_by(order).limit(fetch)


# Each page shape is a query of its own (a cursor adds a condition, the order flips the sort).
_PAGES: dict[tuple[Any, ...], Prepared] = {}


class Page(NamedTuple):
    items: Any  # the model instances; with Members, the objects as one JSON array (orjson.Fragment)
    more: bool  # whether more items follow
    last_id: str | None  # the last item's id, None when empty


def page(source: Callable[..., "peewee.ModelSelect[Any]"], account_id: str, model: type[BaseModel], *, limit: int,
         after_id: str | None, before_id: str | None, sort: str, members: Members | None = None,
         **shape: Any) -> Page:
    """One page of `source(account_id, **shape)` in id order (page_query). The query is prepared
    (Prepared) per source, `shape`, cursors given, sort order and `members`. With `members`, the items
    are those objects as one JSON array, written from the rows as the driver reads them (Members): making
    a model instance of each row and writing its JSON from that was four fifths of a 100-row page's work."""
    cursors = [cursor.lower() for cursor in (after_id, before_id) if cursor]
    key = (source, tuple(sorted(shape.items())), bool(after_id), bool(before_id), sort, members)
    prepared = _PAGES.get(key)
    if prepared is None:
        def build(account: str, fetch: int, *given: str) -> Any:
            after, before = (given[0] if after_id else None), (given[-1] if before_id else None)
            query = page_query(source(account, **shape), model, fetch=fetch, after_id=after, before_id=before,
                               sort=sort)
            return members.json_rows(query) if members else query

        prepared = _PAGES[key] = Prepared(build, str, int, *(str for _ in cursors))
    if members is None:
        rows = prepared.rows(account_id, limit + 1, *cursors)
        return Page(rows[:limit], len(rows) > limit, rows[:limit][-1].id if rows else None)
    found = prepared.values(account_id, limit + 1, *cursors)
    return Page(members.array(found[:limit]), len(found) > limit, found[:limit][-1][0] if found else None)


class PostgresPool(PooledPostgresqlDatabase):
    """peewee's pool, without its ping: it sent `SELECT 1` to the server each time it handed out an
    idle connection, a round trip (two thread switches, the server's work) per request. An idle
    connection has nothing to say; one the server closed (restart, pg_terminate_backend, an idle
    timeout) or whose network went away has its farewell or end of stream waiting on the socket. So
    a poll of the socket without waiting tells which to discard, for one system call."""

    def _is_closed(self, conn: Any) -> bool:
        if conn.closed or self._adapter.txn_status(conn) != self._adapter.txn_idle:
            return bool(super()._is_closed(conn))  # peewee's: discard it, or roll back what it left open
        try:
            waiting = select.poll()
            waiting.register(conn.fileno(), select.POLLIN)
            ended = bool(waiting.poll(0))
        except (OSError, ValueError):
            ended = True
        if ended:
            self._close_raw(conn)  # the pool only forgets it
        return ended


def make_database(url: str, *, max_connections: int = 64, statement_timeout: float = 15) -> peewee.Database:
    """The database a DATABASE_URL names: `sqlite:///path` or `postgresql://user@host:port/name`."""
    scheme = url.split(":", 1)[0]
    params = parse_db_url(url)
    if scheme == "sqlite":
        path = params.pop("database")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Pooled, so a request reuses an open connection instead of opening the file and setting the
        # pragmas again; connections move between worker threads, hence check_same_thread=False.
        return PooledSqliteDatabase(path, max_connections=max_connections, timeout=30, stale_timeout=300,
                                    check_same_thread=False, pragmas={
                                        "journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1,
                                        "synchronous": "normal"})
    if scheme in ("postgres", "postgresql"):
        # A wait timeout instead of an error when every pooled connection is busy. A server that
        # stops answering on an open connection is noticed by the statement timeout and the TCP
        # keepalives instead of holding a request forever; either way the request gets a 503.
        return PostgresPool(
            params.pop("database"), max_connections=max_connections, timeout=30, stale_timeout=300,
            prefer_psycopg3=True, connect_timeout=5, options=f"-c statement_timeout={int(statement_timeout * 1000)}",
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3, tcp_user_timeout=10_000,
            **params,
        )
    raise ValueError(f"DATABASE_URL: unsupported scheme {scheme!r} (use sqlite:/// or postgresql://)")


def bind(url: str, **kwargs: Any) -> peewee.Database:
    """Points the models at the database `url` names, closing what the previous one held open."""
    database = make_database(url, **kwargs)
    release()
    db.initialize(database)
    return database


def release() -> None:
    """Closes the bound database's connections: the whole pool on PostgreSQL."""
    if db.obj is None:
        return
    close_all = getattr(db.obj, "close_all", None)
    if close_all is not None:
        close_all()
    else:
        db.close()


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


def is_postgres() -> bool:
    return isinstance(db.obj, peewee.PostgresqlDatabase)


def locked(query: "peewee.ModelSelect[Any]") -> "peewee.ModelSelect[Any]":
    """`query` taking row locks until the transaction ends. PostgreSQL needs FOR UPDATE for that;
    SQLite has no row locks and needs none: its IMMEDIATE write transactions run one at a time."""
    return query.for_update() if is_postgres() else query
