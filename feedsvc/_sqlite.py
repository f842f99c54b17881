"""SQLite plumbing: connections, pragmas, transactions, file identity.

Contains no business logic (as lemon24/reader's ``_sqlite_utils`` says of
itself): nothing here knows what an article, an id or a slug is. The store
(:mod:`feedsvc.store`) puts ledger policy and article versions on top.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Database",
    "connect",
    "file_identity",
    "transaction",
    "user_version",
]

#: How long a writer waits for another process's transaction, in milliseconds.
BUSY_TIMEOUT_MS = 10_000

def connect(path: Path, *, create: bool, timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """A connection in WAL mode with explicit transactions; ``create=False`` never makes a file.

    Once a database existed, a missing file means it was deleted, and a fresh
    one would silently hold nothing: so only the first open may create it.
    """
    target = str(path) if create else f"{Path(path).absolute().as_uri()}?mode=rw"
    conn = sqlite3.connect(
        target,
        timeout=timeout_ms / 1000,
        isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE
        check_same_thread=False,  # guarded by the owner's lock
        uri=not create,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
        conn.execute("PRAGMA journal_mode = WAL").fetchone()  # reads the header: fails on a non-db
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (writers) or ``BEGIN`` (a consistent read) ... ``COMMIT``.

    Rolls back on any error without masking it.
    """
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file now at ``path``; None if there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino)


class Database:
    """One connection per process to one file, reopened when the file is replaced.

    SQLite keeps using a file that was deleted or replaced while open, so each
    use compares the file's identity with the one connected to: a replaced
    file (a restore from a back-up) gets a fresh connection and bumps
    :attr:`generation`, so callers know to reload what they cached; a missing
    one raises FileNotFoundError (never a new, empty file). A process forked
    from the one that opened it gets its own connection (SQLite connections
    must not cross a fork); the inherited one is never closed in the child.
    """

    def __init__(self, path: Path, *, prepare: Callable[[sqlite3.Connection], None]) -> None:
        self.path = Path(path)
        self._prepare = prepare
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []  # kept, never closed, after a fork
        self.generation = 0

    def connection(self) -> sqlite3.Connection:
        """The open connection if the file is the one connected to; else a new one."""
        if self._pid != os.getpid():
            if self._conn is not None:
                self._inherited.append(self._conn)
            self._conn, self._pid = None, os.getpid()
        identity = file_identity(self.path)
        if self._conn is not None and identity == self._identity:
            return self._conn
        self.drop()
        if identity is None:
            raise FileNotFoundError(str(self.path))
        conn = connect(self.path, create=False)
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        if identity != self._identity:  # a first open, or another file: cached data is stale
            self.generation += 1
        self._conn, self._identity = conn, identity
        return conn

    def drop(self) -> None:
        """Close the connection (after a failure, or before a fork); the next use reopens."""
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                conn.close()
