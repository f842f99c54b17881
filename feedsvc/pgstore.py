"""The store on PostgreSQL: one truth for every host (``FEEDSVC_DATABASE_URL=postgresql://``).

The same :class:`~feedsvc.store.Store` as :class:`~feedsvc.store.SqliteStore`
and the same ledger policy (:mod:`feedsvc.stamping`), so ids, slugs and dates
are decided by one rule whichever engine holds them. What differs is how
processes on several hosts agree:

- Stamping runs under a transaction-level advisory lock (the equivalent of
  SQLite's ``BEGIN IMMEDIATE``), and each first sighting is inserted with
  ``ON CONFLICT DO NOTHING`` and read back: the winner's row is everyone's.
- The one folder writer holds a session-level advisory lock
  (``pg_try_advisory_lock``) on a connection of its own, and writes only
  through that connection: while it can write, the lock is its own. The
  lock dies with the process; and since that session sets
  ``idle_session_timeout`` (and ``idle_in_transaction_session_timeout``) to
  a fraction of the lease and a heartbeat thread speaks on it more often,
  the server also ends it for a host that died, lost its network or hangs
  (SIGSTOP: its kernel still answers keepalives), and the next host to try
  takes the lock. A writer that wakes up finds its session gone at its next
  statement: it raises :class:`~feedsvc.errors.LeaseLost` and follows.
- Every batch the writer commits ends with ``pg_notify``; every process
  ``LISTEN``s on a connection of its own and reads the change counter as soon
  as a notification arrives, and at least every :data:`POLL_FALLBACK` seconds
  in case one was missed (or the listening connection is down).

Driver: psycopg 3 with psycopg_pool. It is the PostgreSQL project's
maintained Python driver (libpq underneath, so every libpq URL, ``sslmode``
and ``PGPASSFILE`` works as operators expect), it has LISTEN/NOTIFY and
pipelined ``executemany`` built in, and its pool reconnects by itself after a
server restart: what a service that must ride out outages needs.

Every failure is a :class:`~feedsvc.errors.LedgerError` naming the database by
its redacted URL; the password never appears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from . import stamping
from .background import join_all
from .errors import LeaseLost, LedgerError
from .ledger import _AUTHORITY, Sighting
from .model import Stamp
from .sql import ComponentSchema, DatabaseURL, SchemaTooNew, Tx, postgres_tx
from .store import PARSER_VERSION, Batch, FileRecord, Snapshot

__all__ = ["CHANNEL", "POLL_FALLBACK", "STORE_SCHEMA", "PostgresStore"]

log = logging.getLogger("feedsvc")
# The pool logs every failed reconnection attempt; an outage is reported once by
# the publisher instead (and these never carry the password, only libpq's reason).
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)

#: The channel the writer notifies after each commit; the payload is the new sequence number.
CHANNEL = "feedsvc_store"
#: Seconds a follower trusts its last read of the change counter without a notification.
POLL_FALLBACK = 1.0
#: Seconds to wait for a connection before calling the database unreachable.
CONNECT_TIMEOUT = 3.0

# Advisory lock keys (64-bit; advisory locks are per database, so sites on one
# cluster in different databases never contend).
_WRITER_KEY = 0x66656564_73796E63  # "feedsync": the one folder writer, session-level
_STAMP_KEY = 0x66656564_7374616D  # "feedstam": stampers and batch writes, per transaction
_SCHEMA_KEY = 0x66656564_73636865  # "feedsche": schema creation and migrations


def _silence_of(ttl: float) -> float:
    """Seconds the writer's session may stay silent before the server ends it.

    ``ttl`` is the publisher's lease, ``max(3 x reload interval, 10 s)``. A
    tenth of it is 1 s up to a 3.3 s reload interval and 0.3 x the interval
    above: with a follower trying the lock every ``min(interval, 1 s)``, a
    silent writer is replaced within ``silence + 1 s``, inside the promised
    ``2 x`` the reload interval from 1 s up. The heartbeat speaks three times
    per silence, so a live writer under load is not cut off.
    """
    return min(30.0, max(1.0, ttl / 10))


_FILE_COLUMNS = ("f.path, f.size, f.mtime_ns, f.inode, f.version, f.error, f.line, v.parser, "
                 "v.hash, COALESCE(v.draft, 0)")


def _step(*statements: str) -> Any:
    def run(tx: Tx) -> None:
        for statement in statements:
            tx.execute(statement)
    return run


#: The store's tables, versioned like the SQLite ledger's user_version: 1 articles,
#: 2 feed_versions, 3 the article store's own (files, versions, changes).
STORE_SCHEMA = ComponentSchema("store", (
    _step(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS articles (
            path TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, slug TEXT NOT NULL UNIQUE,
            first_seen BIGINT NOT NULL, changed BIGINT, hash TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS articles_hash ON articles(hash)",
    ),
    _step("""CREATE TABLE IF NOT EXISTS feed_versions (
        doc TEXT NOT NULL, digest TEXT NOT NULL, moment BIGINT NOT NULL,
        PRIMARY KEY (doc, digest))"""),
    _step(
        """CREATE TABLE IF NOT EXISTS files (
            path TEXT PRIMARY KEY, size BIGINT, mtime_ns BIGINT, inode BIGINT,
            version TEXT, error TEXT, line BIGINT)""",
        """CREATE TABLE IF NOT EXISTS versions (
            version TEXT PRIMARY KEY, parser BIGINT NOT NULL, hash TEXT NOT NULL,
            draft BIGINT NOT NULL, meta TEXT NOT NULL, content BYTEA NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS changes (path TEXT PRIMARY KEY, seq BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS changes_seq ON changes(seq)",
    ),
))

_UNREACHABLE = ("PostgreSQL cannot be reached (it is down or restarting, or the network to it "
                "failed)")


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class PostgresStore:
    """The store in one PostgreSQL database, shared by every worker on every host."""

    def __init__(self, url: DatabaseURL | str, id_authority: str, *,
                 pool_size: int = 4) -> None:
        self.url = url if isinstance(url, DatabaseURL) else DatabaseURL.parse(url)
        if self.url.dialect != "postgresql":
            raise ValueError(f"not a PostgreSQL URL: {self.url.redacted}")
        authority = id_authority.strip().lower()
        if not _AUTHORITY.fullmatch(authority):
            raise ValueError(
                f"id authority {id_authority!r} is not a DNS name or e-mail address "
                "(RFC 4151 tag URIs allow no scheme, port or path)"
            )
        self.id_authority = authority
        #: What errors and reports name: the URL without its password.
        self.path = self.url.redacted
        self._password = _password_of(self.url)
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._pool: Any = None
        self._pid = os.getpid()
        self._writer_conn: Any = None  # holds the session-level advisory lock
        self._writer_lock = threading.RLock()  # the writer connection: one user at a time
        #: Once this process took the writer lock it writes only through that lock's
        #: session (a stale writer then cannot write); never set for migrate or restore.
        self._fenced = False
        self._silence = _silence_of(30.0)  # set from the lease by acquire()
        self._heartbeat: threading.Thread | None = None
        self.holder = _holder()
        # The follower's view of the change counter (see seq()).
        self._cached: tuple[int, int, bool] | None = None
        self._cached_at = 0.0
        self._dirty = True
        self._listening = False
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False  # by close(): further use raises LedgerError, as the ledger's
        self._local = threading.local()  # a render's prefetched contents (prefetched())
        self._inherited: list[Any] = []  # a forked child's copies of the parent's connections
        found = self._ensure_schema()
        if found != STORE_SCHEMA.version:
            log.info("store %s: schema version %d -> %d", self.path, found,
                     STORE_SCHEMA.version)

    def _ensure_schema(self) -> int:
        """Create or migrate the tables, on a direct connection: a wrong password or a
        missing database is reported as such (the pool would only say it timed out)."""
        import psycopg

        try:
            with psycopg.connect(self._conninfo(), connect_timeout=max(1, int(CONNECT_TIMEOUT)),
                                 application_name="feedsvc-schema") as conn, conn.transaction():
                tx = postgres_tx(conn)
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_KEY,))
                return STORE_SCHEMA._ensure(tx)  # noqa: SLF001 - under our own lock
        except LedgerError:
            raise
        except Exception as exc:  # SchemaTooNew too: one error type, naming the database
            raise self._failure(exc) from exc

    # -- connections ------------------------------------------------------------------

    def _conninfo(self) -> str:
        return self.url.conninfo or ""

    def _get_pool(self) -> Any:
        with self._lock:
            if self._closed:  # a thread that outlived its app must not reopen the store
                raise LedgerError(self.path, "the store is closed")
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours
                # Kept, never closed or collected here: closing would end the parent's
                # sessions (libpq says goodbye to the server on the shared socket).
                self._inherited.extend(x for x in (self._pool, self._writer_conn) if x)
                self._pool, self._writer_conn, self._listener = None, None, None
                self._listening, self._dirty, self._pid = False, True, os.getpid()
                self._has_lock, self._fenced, self._heartbeat = False, False, None
                self._stop = threading.Event()
                self.holder = _holder()
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self._conninfo(), min_size=1, max_size=self._pool_size,
                    timeout=CONNECT_TIMEOUT, open=True, name="feedsvc-store",
                    check=ConnectionPool.check_connection,
                    reconnect_timeout=365 * 86400.0,  # never give up: outages end
                    kwargs={"connect_timeout": max(1, int(CONNECT_TIMEOUT)),
                            "application_name": f"feedsvc {self.holder}"},
                )
            return self._pool

    def _failure(self, exc: BaseException) -> LedgerError:
        """One stable reason per kind of failure (so an outage is logged once), no password."""
        import psycopg
        from psycopg_pool import PoolTimeout

        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        low = text.lower()
        if "password authentication failed" in low or "no password supplied" in low:
            reason = "PostgreSQL refused the user name or password (check FEEDSVC_DATABASE_URL)"
        elif "does not exist" in low and "database" in low:
            reason = f"PostgreSQL has no such database ({text})"
        elif isinstance(exc, SchemaTooNew):
            reason = str(exc)
        elif isinstance(exc, PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError
                        | OSError):
            reason = _UNREACHABLE
        else:
            reason = text
        return LedgerError(self.path, reason)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Tx]:
        """One transaction on a pooled connection; every failure a LedgerError."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._get_pool().connection() as conn, conn.transaction():
                yield postgres_tx(conn)
        except LedgerError:
            raise
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise self._failure(exc) from exc

    @contextlib.contextmanager
    def _write_tx(self) -> Iterator[Tx]:
        """A writing transaction: on the writer lock's own session once this process
        took the lock, so that only the lock's holder can write.

        When the server has ended that session (silent too long: a hung or cut-off
        host) the write fails at once with :class:`LeaseLost`, before it changes
        anything, and another process may be the writer already. Processes that
        never take the lock (``feedsvc migrate``, ``restore``) write on the pool.
        """
        self._get_pool()  # a forked child starts unfenced, with no writer session
        if not self._fenced:
            with self._tx() as tx:
                yield tx
            return
        import psycopg

        with self._writer_lock:
            conn = self._writer_conn
            if conn is None or not self._has_lock:
                raise LeaseLost("this process no longer holds the writer lock")
            try:
                with conn.transaction():
                    yield postgres_tx(conn)
            except psycopg.Error as exc:
                if conn.closed or conn.broken:
                    self._lost("its session ended")
                    raise LeaseLost("the database ended the writer's session") from exc
                raise self._failure(exc) from exc

    def _lock_stamps(self, tx: Tx) -> None:
        """Take the stampers' transaction lock; a process that stops while holding it
        (SIGSTOP, a hung host) holds it only until the server ends its idle transaction."""
        tx.execute("SELECT pg_advisory_xact_lock(?), "
                   "set_config('idle_in_transaction_session_timeout', ?, true)",
                   (_STAMP_KEY, f"{int(self._silence * 1000)}ms"))

    # -- stamps: the shared policy under one advisory lock ------------------------------

    def stamp(
        self, sightings: Iterable[Sighting], present: Collection[str], now: float
    ) -> dict[str, Stamp]:
        batch = list(sightings)
        if not batch:
            return {}
        present_set = present if isinstance(present, set | frozenset | Mapping) else set(present)
        with self._write_tx() as tx:
            self._lock_stamps(tx)
            return stamping.record_all(tx, batch, present_set, now, self.id_authority)

    def stamps_of(self, paths: Iterable[str]) -> dict[str, Stamp]:
        wanted = list(paths)
        if not wanted:
            return {}
        with self._tx() as tx:
            rows = tx.all(f"SELECT path, {stamping.ROW} FROM articles WHERE path = ANY(?)",
                          (wanted,))
        return {row[0]: stamping.stamp_of(row[1:]) for row in rows}

    def stamps(self) -> dict[str, Stamp]:
        with self._tx() as tx:
            rows = tx.all(f"SELECT path, {stamping.ROW} FROM articles")
        return {row[0]: stamping.stamp_of(row[1:]) for row in rows}

    def moments(self, versions: Mapping[str, tuple[str, int]], now: float,
                aliases: Callable[[str], str | None] | None = None) -> dict[str, int]:
        """As :meth:`feedsvc.ledger.Ledger.moments`: one value for every worker and host."""
        if not versions:
            return {}
        # Every document's newest version in one round trip (stamping.newest_version's
        # rule: the highest moment), not one per document: a restart asks for ~all.
        with self._tx() as tx:
            known = {doc: (digest, int(moment)) for doc, digest, moment in tx.all(
                "SELECT DISTINCT ON (doc) doc, digest, moment FROM feed_versions "
                "WHERE doc = ANY(?) ORDER BY doc, moment DESC", (list(versions),))}
        result = {doc: known[doc][1] for doc, (digest, _) in versions.items()
                  if doc in known and known[doc][0] == digest}
        todo = {doc: version for doc, version in versions.items() if doc not in result}
        if todo:
            with self._tx() as tx:
                self._lock_stamps(tx)
                stored, _ = stamping.store_moments(tx, todo, now, aliases)
            result.update(stored)
        return result

    def path_of_slug(self, slug: str) -> str | None:
        with self._tx() as tx:
            row = tx.one("SELECT path FROM articles WHERE slug = ?", (slug,))
        return None if row is None else row[0]

    def checkpoint_if_due(self, interval: float | None = None) -> bool:
        """Nothing to do: PostgreSQL keeps its own files (SQLite's WAL needs this)."""
        return False

    # -- the writer -------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        with self._tx() as tx:
            rows = tx.all(f"SELECT {_FILE_COLUMNS} FROM files f "
                          "LEFT JOIN versions v ON v.version = f.version")
        return {row[0]: _record(row) for row in rows}

    def metas(self, versions: Iterable[str]) -> dict[str, str]:
        wanted = list(versions)
        if not wanted:
            return {}
        with self._tx() as tx:
            return dict(tx.all("SELECT version, meta FROM versions WHERE version = ANY(?)",
                               (wanted,)))  # type: ignore[arg-type]

    def write(self, batch: Batch) -> int:
        with self._write_tx() as tx:
            self._lock_stamps(tx)
            if batch.versions:
                tx.executemany(
                    "INSERT INTO versions (version, parser, hash, draft, meta, content) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (version) DO UPDATE SET "
                    "parser = excluded.parser, hash = excluded.hash, draft = excluded.draft, "
                    "meta = excluded.meta, content = excluded.content",
                    [(v, PARSER_VERSION, h, int(d), meta, content)
                     for v, meta, content, h, d in batch.versions],
                )
            if batch.files:
                tx.executemany(
                    "INSERT INTO files (path, size, mtime_ns, inode, version, error, line) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                    "size = excluded.size, mtime_ns = excluded.mtime_ns, "
                    "inode = excluded.inode, version = excluded.version, "
                    "error = excluded.error, line = excluded.line",
                    [(f.path, f.size, f.mtime_ns, f.inode, f.version, f.error, f.line)
                     for f in batch.files],
                )
            if batch.gone:
                tx.execute("DELETE FROM files WHERE path = ANY(?)", (list(batch.gone),))
            seq = _meta_int(tx, "store_seq")
            if batch.changed:
                seq += 1
                tx.executemany(
                    "INSERT INTO changes (path, seq) VALUES (?, ?) "
                    "ON CONFLICT (path) DO UPDATE SET seq = excluded.seq",
                    [(p, seq) for p in sorted(batch.changed)],
                )
                _set_meta(tx, "store_seq", str(seq))
            if batch.complete:
                _set_meta(tx, "store_complete", "1")
            if batch.changed or batch.complete:
                # Delivered at commit, to every listening process on every host.
                tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, str(seq)))
        self._dirty = True  # this process's own view need not wait for its notification
        return seq

    def forget_unused_versions(self) -> int:
        with self._write_tx() as tx:
            row = tx.one("WITH gone AS (DELETE FROM versions WHERE version NOT IN "
                         "(SELECT version FROM files WHERE version IS NOT NULL) RETURNING 1) "
                         "SELECT count(*) FROM gone")
        return int(row[0]) if row else 0

    # -- followers --------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._read(None)

    def changes(self, since: int, generation: int) -> Snapshot:
        return self._read(since)

    def seq(self) -> tuple[int, int, bool]:
        """The change counter, read when a notification came or :data:`POLL_FALLBACK` passed.

        A follower calls this every few milliseconds; between notifications
        the last value read stands, so the database sees one cheap query a
        second per process, not fifty.
        """
        self._ensure_listener()
        now = time.monotonic()
        cached = self._cached
        if (cached is not None and self._listening and not self._dirty
                and now - self._cached_at < POLL_FALLBACK):
            return cached
        self._dirty = False  # before reading: a notification during the read counts
        try:
            with self._tx() as tx:
                rows = dict(tx.all("SELECT key, value FROM meta "  # type: ignore[arg-type]
                                   "WHERE key IN ('store_seq', 'store_complete')"))
        except BaseException:
            # Read again next time: the listener may not have noticed the outage yet,
            # and a cached answer then would end the failure only to log it once more.
            self._dirty = True
            raise
        value = (int(rows.get("store_seq", 0)), 1, rows.get("store_complete") == "1")
        self._cached, self._cached_at = value, now
        return value

    def _read(self, since: int | None) -> Snapshot:
        with self._tx() as tx:
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot
            seq = _meta_int(tx, "store_seq")
            complete = _meta_int(tx, "store_complete") == 1
            if since is None:
                changed: set[str] = set()
                rows = tx.all(f"SELECT {_FILE_COLUMNS}, v.meta FROM files f "
                              "LEFT JOIN versions v ON v.version = f.version")
                stamp_rows = tx.all(f"SELECT path, {stamping.ROW} FROM articles")
            else:
                changed = {r[0] for r in tx.all("SELECT path FROM changes WHERE seq > ?",
                                                (since,))}
                rows = tx.all(
                    f"SELECT {_FILE_COLUMNS}, v.meta FROM changes c "
                    "JOIN files f ON f.path = c.path "
                    "LEFT JOIN versions v ON v.version = f.version WHERE c.seq > ?", (since,))
                stamp_rows = tx.all(
                    "SELECT a.path, a.id, a.slug, a.first_seen, a.changed, a.hash "
                    "FROM changes c JOIN articles a ON a.path = c.path WHERE c.seq > ?",
                    (since,))
        files = {row[0]: _record(row) for row in rows}
        metas = {row[4]: row[10] for row in rows if row[4] is not None and row[10] is not None}
        stamps = {row[0]: stamping.stamp_of(row[1:]) for row in stamp_rows}
        return Snapshot(seq, complete, 1, files, metas, stamps, changed, full=since is None)

    @contextlib.contextmanager
    def prefetched(self, articles: Iterable[Any]) -> Iterator[None]:
        """Within the block, this thread's content() of these articles costs no query."""
        from .store import StoredArticle

        versions = [a.version for a in articles if isinstance(a, StoredArticle)]
        if not versions:
            yield
            return
        with self._tx() as tx:
            found = {v: bytes(c) for v, c in tx.all(
                "SELECT version, content FROM versions WHERE version = ANY(?)", (versions,))}
        self._local.batch = found
        try:
            yield
        finally:
            self._local.batch = None

    def content(self, version: str) -> bytes:
        batch = getattr(self._local, "batch", None)
        if batch is not None and version in batch:
            return batch[version]
        with self._tx() as tx:
            row = tx.one("SELECT content FROM versions WHERE version = ?", (version,))
        return bytes(row[0]) if row is not None else zlib.compress(b"", 1)

    def _ensure_listener(self) -> None:
        self._get_pool()  # resets the listener state in a forked child
        if self._listener is not None:
            return
        with self._lock:
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, args=(self._stop,),
                                                  name="feedsvc-listen", daemon=True)
                self._listener.start()

    def _listen(self, stop: threading.Event) -> None:
        """LISTEN on a connection of its own; reconnect after any failure."""
        import psycopg

        while not stop.is_set():
            try:
                with psycopg.connect(self._conninfo(), autocommit=True,
                                     connect_timeout=max(1, int(CONNECT_TIMEOUT)),
                                     application_name=f"feedsvc-listen {self.holder}") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._dirty, self._listening = True, True
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._dirty = True
                        conn.execute("SELECT 1")  # notices a dead server between notifications
            except Exception:  # noqa: BLE001 - reported by the queries that fail; retry
                pass
            finally:
                self._listening = False
                self._dirty = True
            stop.wait(1.0)

    # -- the writer lock: a session-level advisory lock ---------------------------------

    def acquire(self, ttl: float) -> bool:
        """Hold the writer's advisory lock; False while another process has it.

        The lock lives as long as its session. Holding it, the session tells
        the server to end it after :func:`_silence_of` ``(ttl)`` seconds of
        silence and a heartbeat thread speaks more often than that: a writer
        killed, hung or cut off from the server lets the next :meth:`acquire`
        anywhere take over within about that time.
        """
        import psycopg

        self._get_pool()  # resets state in a forked child
        with self._writer_lock:
            self._silence = _silence_of(ttl)
            conn = self._writer_conn
            if conn is not None:
                try:
                    conn.execute("SELECT 1")  # a heartbeat, and: is the session still ours?
                    if self._has_lock:
                        return True
                except psycopg.Error:
                    self._lost("its session ended")
                    conn = None
            try:
                if conn is None:
                    # Keepalives both ways: the server frees the lock of a host that
                    # vanished, and this side notices that it lost the server.
                    idle = max(1, int(ttl / 6))
                    conn = psycopg.connect(
                        self._conninfo(), autocommit=True,
                        connect_timeout=max(1, int(CONNECT_TIMEOUT)),
                        application_name=f"feedsvc-writer {self.holder}",
                        keepalives=1, keepalives_idle=idle, keepalives_interval=1,
                        keepalives_count=3, tcp_user_timeout=int(ttl * 1000 / 2))
                    conn.execute(f"SET tcp_keepalives_idle = {idle}")
                    conn.execute("SET tcp_keepalives_interval = 1")
                    conn.execute("SET tcp_keepalives_count = 3")
                    self._writer_conn, self._has_lock = conn, False
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_WRITER_KEY,)).fetchone()
                if row and row[0]:
                    # Only the holder's session is timed: a follower's may idle freely.
                    # (idle_session_timeout is PostgreSQL 14's; before it, only a dead
                    # connection or the keepalives free the lock of a hung writer.)
                    silence = f"{int(self._silence * 1000)}ms"
                    names = ["idle_in_transaction_session_timeout"] + (
                        ["idle_session_timeout"] if conn.info.server_version >= 140000 else [])
                    conn.execute("SELECT " + ", ".join("set_config(%s, %s, false)"
                                                       for _ in names),
                                 [x for name in names for x in (name, silence)])
            except (psycopg.Error, OSError) as exc:
                self._drop_writer()
                raise self._failure(exc) from exc
            self._has_lock = bool(row and row[0])
            if self._has_lock:
                self._fenced = True
                self._start_heartbeat()
            return self._has_lock

    _has_lock = False

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beat, args=(self._stop,),
                                               name="feedsvc-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self, stop: threading.Event) -> None:
        """Speak on the writer's session three times per silence while it holds the lock.

        It stops with the process (or the store: ``stop``): a stopped or hung
        writer falls silent and the server ends its session, which frees the
        lock for another host.
        """
        import psycopg

        while True:
            if stop.wait(self._silence / 3):
                return
            with self._writer_lock:
                conn = self._writer_conn
                if conn is None or not self._has_lock or self._pid != os.getpid():
                    self._heartbeat = None
                    return
                try:
                    conn.execute("SELECT 1")
                except psycopg.Error:
                    self._lost("its session ended")
                    self._heartbeat = None
                    return

    def _lost(self, why: str) -> None:
        """The writer's session is gone, and the lock with it: say so once, then follow."""
        if self._has_lock:
            log.warning("store %s: this process lost the writer lock (%s: silent for over "
                        "%.1f s, or the network or the server failed); it follows now",
                        self.path, why, self._silence)
        self._drop_writer()

    def _drop_writer(self) -> None:
        conn, self._writer_conn, self._has_lock = self._writer_conn, None, False
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()

    def release(self) -> None:
        """Give the lock up at once, so another takes over.

        Unlocked by a statement before the connection closes: the server ends
        a closed session a moment later, and the next writer would wait for it.
        """
        with self._writer_lock:
            conn = self._writer_conn
            if conn is not None and self._has_lock and self._pid == os.getpid():
                with contextlib.suppress(Exception):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_WRITER_KEY,))
            self._drop_writer()

    def lease_holder(self) -> str | None:
        """The writer now, as ``host:pid``, from the lock holder's application name."""
        with self._tx() as tx:
            row = tx.one(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) "
                "AND ((l.classid::bigint << 32) | l.objid::bigint) = ?", (_WRITER_KEY,))
        return None if row is None else str(row[0]).removeprefix("feedsvc-writer ")

    # -- health -----------------------------------------------------------------------

    def problem(self) -> str | None:
        """Why the store cannot take a write now (for /readyz), or None if it can."""
        try:
            with self._tx() as tx:
                tx.execute("SELECT 1 FROM meta LIMIT 1")
                tx.execute("SELECT pg_advisory_xact_lock_shared(?)", (_STAMP_KEY,))
        except LedgerError as exc:
            return str(exc)
        return None

    def before_fork(self) -> None:
        """Close every connection and stop listening; each process opens its own."""
        self._disconnect()
        self._stop = threading.Event()

    def close(self) -> None:
        """Stop and join the listener and the heartbeat, give the lock up, close the pool;
        further use raises LedgerError (a thread left running must not reopen it)."""
        with self._lock:
            self._closed = True
        self._disconnect()

    def _disconnect(self) -> None:
        self._stop.set()
        heartbeat = self._heartbeat
        self.release()
        with self._lock:
            pool, self._pool = self._pool, None
            listener = self._listener
            self._listener, self._listening, self._cached = None, False, None
        if pool is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                pool.close(timeout=1.0)
        if self._pid == os.getpid():  # a forked child's copies of them never ran here
            join_all([t for t in (listener, heartbeat) if t is not None],
                     CONNECT_TIMEOUT + 2.0, f"store {self.path}")


def _password_of(url: DatabaseURL) -> str | None:
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url.conninfo or "")
    if parts.password:
        return unquote(parts.password)
    found = parse_qs(parts.query).get("password")
    return found[0] if found else None


def _record(row: tuple) -> FileRecord:
    return FileRecord(*row[:9], draft=bool(row[9]))


def _meta_int(tx: Tx, key: str) -> int:
    row = tx.one("SELECT value FROM meta WHERE key = ?", (key,))
    return int(row[0]) if row is not None else 0


def _set_meta(tx: Tx, key: str, value: str) -> None:
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))
