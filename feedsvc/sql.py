"""One small SQL API over SQLite and PostgreSQL, for the state features keep in the store.

The article store has backends of its own (:mod:`feedsvc.store`); the smaller
pieces of shared state that later features keep beside it (hub subscriptions
and deliveries, purge queues, subscriber counts) need only transactions and
portable SQL. Written once against this module, they work on the embedded
SQLite file and on PostgreSQL alike, so every worker on every host shares them.

Portable SQL here means: ``?`` placeholders (turned into psycopg's ``%s`` for
PostgreSQL; so never write a literal ``?`` or ``%`` in a statement), the
types TEXT, BIGINT, DOUBLE PRECISION and BYTEA, ``INSERT ... ON CONFLICT``
and ``RETURNING`` (SQLite has both since 3.35). Where the dialects differ
(an auto-numbered key), a migration step is a function that asks
:attr:`Tx.dialect` or uses :attr:`Tx.serial_key`.

Each feature owns its tables and versions them on its own in the table
``component_schemas``, so features migrate independently and a database
written by a newer release is refused with a clear message.

No business logic lives here.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "REGISTRY",
    "ComponentSchema",
    "Lease",
    "DatabaseURL",
    "SchemaTooNew",
    "SqlDatabase",
    "Tx",
    "open_database",
    "postgres_tx",
    "sqlite_tx",
]

Dialect = Literal["sqlite", "postgresql"]

#: How long a SQLite writer waits for another process's transaction, in milliseconds.
SQLITE_BUSY_MS = 10_000


class SchemaTooNew(Exception):
    """A component's tables were written by a newer release than this one."""

    def __init__(self, component: str, found: int, known: int) -> None:
        self.component, self.found, self.known = component, found, known
        super().__init__(
            f"the {component} tables were written by a newer feedsvc (schema version "
            f"{found}; this one understands up to {known}): upgrade feedsvc, or restore a "
            "back-up made by this release"
        )


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """Where the store lives: ``sqlite:////abs/path`` or a libpq ``postgresql://`` URL.

    ``str()`` and :attr:`redacted` never show a password, so the value can go
    into logs, health reports and error messages as it is.
    """

    dialect: Dialect
    #: The SQLite file (absolute), or None for PostgreSQL.
    path: Path | None
    #: The libpq connection string (PostgreSQL only; holds the password).
    conninfo: str | None

    @classmethod
    def parse(cls, value: str) -> DatabaseURL:
        """Parse a database URL; ValueError with the reason for anything else."""
        try:
            parts = urlsplit(value.strip())
        except ValueError as exc:  # "Invalid IPv6 URL"
            raise ValueError(f"not a database URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme == "sqlite":
            # sqlite:////var/lib/x.sqlite3: an empty authority, then the absolute path.
            if parts.netloc or not parts.path.startswith("//"):
                raise ValueError(
                    "a SQLite URL is sqlite:// followed by an absolute path, as in "
                    "sqlite:////var/lib/feedsvc/ledger.sqlite3 (three slashes, then the path)"
                )
            return cls("sqlite", Path(unquote(parts.path[1:])), None)
        if scheme in ("postgresql", "postgres"):
            if not parts.path.strip("/") and "dbname=" not in parts.query:
                raise ValueError("a PostgreSQL URL names its database: postgresql://host/dbname")
            if "," not in parts.netloc:  # libpq's host1:port1,host2:port2 is no one port
                try:
                    port = parts.port
                except ValueError:
                    port = 0
                if port == 0:  # else libpq only says that it cannot connect
                    raise ValueError("a PostgreSQL URL's port is a number from 1 to 65535, "
                                     f"got {parts.netloc.rsplit(':', 1)[-1]!r}")
            return cls("postgresql", None, value.strip())
        raise ValueError(
            f"unknown database URL scheme {parts.scheme!r}: use sqlite:////path or "
            "postgresql://user@host/dbname"
        )

    @property
    def redacted(self) -> str:
        """The URL with any password (in the authority or the query) replaced by ``***``."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        parts = urlsplit(self.conninfo or "")
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{host}"
        query = re.sub(r"(?i)(^|&)(password)=[^&]*", r"\1\2=***", parts.query)
        text = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
        # urlunsplit drops the "//" of an empty authority: postgresql:///db is no postgresql:/db
        return text if netloc else text.replace(":", "://", 1)

    def __str__(self) -> str:
        return self.redacted


class Tx(Protocol):
    """One open transaction: portable statements with ``?`` placeholders."""

    dialect: Dialect
    #: The column definition of an auto-numbered BIGINT primary key.
    serial_key: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class SqlDatabase(Protocol):
    """What a feature's storage needs: transactions, and closing."""

    dialect: Dialect
    url: DatabaseURL

    def transaction(self) -> contextlib.AbstractContextManager[Tx]: ...

    def close(self) -> None: ...


Step = str | Callable[[Tx], None]

#: Every ComponentSchema made, by component: ``feedsvc migrate`` creates each one the
#: source lists in the target, then copies their tables.
REGISTRY: dict[str, ComponentSchema] = {}


@dataclass(frozen=True, slots=True)
class ComponentSchema:
    """A feature's tables: ``steps[i]`` turns version ``i`` into ``i + 1``."""

    component: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        REGISTRY[self.component] = self

    @property
    def version(self) -> int:
        return len(self.steps)

    def ensure(self, db: SqlDatabase) -> int:
        """Create or upgrade the tables in one transaction; returns the version found.

        Two processes starting together both try; the primary key on
        ``component_schemas`` makes the loser's transaction fail, and it then
        finds the work done.
        """
        for attempt in (0, 1):
            try:
                with db.transaction() as tx:
                    return self._ensure(tx)
            except SchemaTooNew:
                raise
            except Exception:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _ensure(self, tx: Tx) -> int:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS component_schemas ("
            " component TEXT PRIMARY KEY, version BIGINT NOT NULL)"
        )
        row = tx.one("SELECT version FROM component_schemas WHERE component = ?",
                     (self.component,))
        found = int(row[0]) if row else 0
        if found > self.version:
            raise SchemaTooNew(self.component, found, self.version)
        for step in self.steps[found:]:
            if isinstance(step, str):
                tx.execute(step)
            else:
                step(tx)
        if found != self.version:
            tx.execute(
                "INSERT INTO component_schemas (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (self.component, self.version),
            )
        return found


LEASES = ComponentSchema("leases", (
    "CREATE TABLE IF NOT EXISTS leases ("
    " name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)",
))


class Lease:
    """A named lease in the database: at most one holder at a time, across every host.

    The holder renews it well within ``ttl``; when the holder dies, the lease
    runs out and the next :meth:`acquire` by another process takes it. Time
    is each caller's wall clock, so hosts need roughly synchronised clocks
    (NTP); the ``ttl`` should dwarf their skew.
    """

    def __init__(self, db: SqlDatabase, name: str, holder: str) -> None:
        self.db, self.name, self.holder = db, name, holder
        LEASES.ensure(db)

    def acquire(self, ttl: float, now: float) -> bool:
        """Take or renew the lease until ``now + ttl``; False while another holds it."""
        with self.db.transaction() as tx:
            row = tx.one(
                "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires = excluded.expires "
                "WHERE leases.holder = excluded.holder OR leases.expires < ? "
                "RETURNING holder",
                (self.name, self.holder, now + ttl, now),
            )
        return row is not None

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown), if this holder has it."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM leases WHERE name = ? AND holder = ?",
                       (self.name, self.holder))

    def current_holder(self, now: float) -> str | None:
        with self.db.transaction() as tx:
            row = tx.one("SELECT holder FROM leases WHERE name = ? AND expires >= ?",
                         (self.name, now))
        return row[0] if row else None


# --- SQLite ---------------------------------------------------------------------------


class _SqliteTx:
    dialect: Dialect = "sqlite"
    serial_key = "INTEGER PRIMARY KEY"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, [tuple(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(sql, tuple(params)).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()


def sqlite_tx(conn: sqlite3.Connection) -> Tx:
    """A :class:`Tx` over a connection whose transaction the caller opened (BEGIN IMMEDIATE)."""
    return _SqliteTx(conn)


class SqliteDatabase:
    """The embedded backend: one connection per process, opened after any fork.

    Writers serialise on SQLite's own lock (``BEGIN IMMEDIATE`` with a busy
    timeout); within a process a lock keeps threads off one connection.
    """

    dialect: Dialect = "sqlite"

    def __init__(self, url: DatabaseURL) -> None:
        assert url.path is not None
        self.url = url
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: the parent's connection is not ours to use
            self._conn, self._pid = None, os.getpid()
        if self._conn is None:
            conn = sqlite3.connect(str(self.url.path), timeout=SQLITE_BUSY_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if not conn.in_transaction:
                    raise
                self._conn = None  # a connection we could not roll back is not reused
                raise

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    conn.close()


# --- PostgreSQL -----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\?")


def _pg_sql(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (portable statements hold no literal ``?``/``%``)."""
    return _PLACEHOLDER.sub("%s", sql)


class _PostgresTx:
    dialect: Dialect = "postgresql"
    serial_key = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), [tuple(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(_pg_sql(sql), tuple(params)).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(_pg_sql(sql), tuple(params)).fetchall()


def postgres_tx(conn: Any) -> Tx:
    """A :class:`Tx` over a psycopg connection whose transaction the caller opened."""
    return _PostgresTx(conn)


class PostgresDatabase:
    """PostgreSQL through psycopg 3's connection pool, opened lazily after any fork.

    A pool made before gunicorn forks would hand the same sockets to every
    worker; so each process makes its own on first use.
    """

    dialect: Dialect = "postgresql"

    def __init__(self, url: DatabaseURL, *, max_size: int = 4, timeout: float = 5.0) -> None:
        self.url = url
        self._max_size = max_size
        self._timeout = timeout
        self._lock = threading.Lock()
        self._pool: Any = None
        self._pid = os.getpid()

    def _get_pool(self) -> Any:
        with self._lock:
            if self._pid != os.getpid():
                self._pool, self._pid = None, os.getpid()
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.url.conninfo or "", min_size=1, max_size=self._max_size,
                    timeout=self._timeout, open=True, name="feedsvc",
                    kwargs={"connect_timeout": max(1, int(self._timeout))},
                )
            return self._pool

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._get_pool().connection() as conn, conn.transaction():
            yield _PostgresTx(conn)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None and self._pid == os.getpid():
                pool.close()


def open_database(url: DatabaseURL | str) -> SqlDatabase:
    """The database a URL names; nothing is connected until the first transaction."""
    parsed = url if isinstance(url, DatabaseURL) else DatabaseURL.parse(url)
    if parsed.dialect == "sqlite":
        return SqliteDatabase(parsed)
    return PostgresDatabase(parsed)
