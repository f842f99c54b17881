"""The ledger: a small SQLite file that makes ids, slugs and dates permanent.

Article files carry no dates and their modification times are reset by every
fresh checkout, yet feed readers treat a changed id or date as a new or
updated item. So the first time a file is seen its id, slug and date are
written down here and never recomputed; later sightings only record content
changes. Rows of deleted files are kept, so an id or slug is never handed to
another article and a file that comes back gets its old identity.

Several gunicorn workers may share one ledger file: every :meth:`Ledger.record`
is one ``BEGIN IMMEDIATE`` transaction that reads what is stored before
deciding, so concurrent writers serialise and all return what was committed.
The same holds for :meth:`Ledger.moments`, the first time any process saw
each version of a feed document: what ``Last-Modified`` is made of, so that it
is one value on every worker and host.

Every process that has the ledger open holds a shared ``flock`` on the file;
:func:`restore` takes it exclusively, so it refuses while a service runs.
Closing checkpoints the WAL into the main file (``wal_checkpoint(TRUNCATE)``),
and so does :meth:`Ledger.checkpoint_if_due`, which the reload thread calls,
so that the main file alone is a usable copy; :func:`backup` makes a
consistent one while serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from feedsvc import stamping
from feedsvc.errors import LedgerError
from feedsvc.model import Stamp
from feedsvc.schema import STORE_TABLES
from feedsvc.sql import sqlite_tx
from feedsvc.stamping import MIN_PLAUSIBLE_MTIME, VERSIONS_KEPT

__all__ = ["MIN_PLAUSIBLE_MTIME", "SCHEMA_VERSION", "VERSIONS_KEPT", "Ledger", "LedgerCopy",
           "Sighting", "backup", "restore"]

log = logging.getLogger("feedsvc")

#: Version of the tables below, in ``PRAGMA user_version`` (and, for feedsvc
#: releases before it used user_version, in ``meta``); bump with a migration.
#: 1: articles. 2: feed_versions (the moments behind Last-Modified).
#: 3: the article store's tables (feedsvc.schema: files, versions, changes, leases).
SCHEMA_VERSION = 3

#: Seconds between checkpoints of the WAL into the main file, after writes.
CHECKPOINT_INTERVAL = 60.0

#: How long a writer waits for another process's transaction, in milliseconds.
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS articles (
        path TEXT PRIMARY KEY,          -- POSIX path relative to the articles folder
        id TEXT NOT NULL UNIQUE,        -- assigned at first publication, never changed
        slug TEXT NOT NULL UNIQUE,      -- assigned at first publication, never changed
        first_seen INTEGER NOT NULL,    -- unix seconds, UTC
        changed INTEGER,                -- unix seconds of the last content change, or NULL
        hash TEXT NOT NULL              -- content hash of the version last seen
    )""",
    """CREATE TABLE IF NOT EXISTS feed_versions (
        doc TEXT NOT NULL,              -- a feed document ("site", "topic/nato", "pages")
        digest TEXT NOT NULL,           -- the collection's version digest of it
        moment INTEGER NOT NULL,        -- unix seconds: when this version first existed
        PRIMARY KEY (doc, digest)
    ) WITHOUT ROWID""",
)
# Rename detection looks rows up by content hash. Created after the column check,
# so that a foreign "articles" table is reported as such.
_INDEX = "CREATE INDEX IF NOT EXISTS articles_hash ON articles(hash)"
_COLUMNS = frozenset({"path", "id", "slug", "first_seen", "changed", "hash"})
_ROW = "id, slug, first_seen, changed, hash"
_READ_ONLY = (
    "ledger is read-only: the file and its folder must be writable by the service "
    "(SQLite also creates -wal and -shm files beside it)"
)
_GONE = (
    "ledger file is gone (deleted or moved while the service runs); nothing new is recorded "
    "until it is restored from a back-up - starting a new ledger would change published ids "
    "and dates"
)

# RFC 4151 taggingEntity authority: a DNS name or an e-mail address. Underscores
# are tolerated (container host names such as "feed_svc" have them); what would
# break the URI's structure (":" of a port, ",", "/", spaces ...) is not.
_DNS = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*"
_AUTHORITY = re.compile(rf"(?:[a-z0-9!$%&'*+=^_`{{|}}~.-]+@)?{_DNS}")


@dataclass(frozen=True, slots=True)
class Sighting:
    """One file as read now: what the ledger needs to stamp it.

    ``mtime`` is evidence of when a never-seen file was written;
    ``slug_hint`` and ``id_hint`` are only used at first sight.
    """

    path: str
    content_hash: str
    mtime: float  # file mtime in unix seconds (evidence of when it was written)
    slug_hint: str  # front-matter slug or slugify(title): the slug wanted at first sight
    id_hint: str | None  # front-matter id, if any
    #: A file gone in the same scan that this one is (moved, perhaps edited):
    #: decided by the publisher's rename rule, see :mod:`feedsvc.identity`.
    renamed_from: str | None = None


_utc = stamping.utc
_stamp = stamping.stamp_of


def _reason(exc: sqlite3.Error) -> str:
    """A reason an operator can act on, from SQLite's error code and message."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    msg = str(exc)
    low = msg.lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in low:
        return (
            f"database is locked: another process kept it busy for more than "
            f"{BUSY_TIMEOUT_MS // 1000} s"
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in low or "read-only" in low:
        return _READ_ONLY
    if name == "SQLITE_NOTADB" or "not a database" in low:
        return (
            "file is not a database (corrupt, or not a feedsvc ledger); restore it from a "
            "back-up - starting a new ledger would change published ids and dates"
        )
    if name.startswith("SQLITE_CORRUPT") or "malformed" in low:
        return (
            "database disk image is malformed (corrupt); restore it from a back-up - "
            "starting a new ledger would change published ids and dates"
        )
    if name == "SQLITE_FULL" or "disk is full" in low:
        return "disk is full"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in low:
        return "cannot open the ledger file: its folder must exist and be writable"
    if name.startswith("SQLITE_PERM") or "permission" in low:
        return f"permission denied ({msg})"
    if name in ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_TRUNCATE"):
        # A file that cannot grow: ENOSPC after a partial write is SQLITE_FULL,
        # a failed write, a size limit (EFBIG) or a -shm that cannot grow are
        # these. One message for all, so a full disk is logged once, not per code.
        return "cannot write to the disk: it may be full, or a file size limit was reached"
    if name.startswith("SQLITE_IOERR"):
        return f"disk I/O error ({name})"
    return msg


#: Descriptors of ledger files this process opened for its flock and let go of.
_PARKED: list[int] = []


def _park(fd: int) -> None:
    """Keep a descriptor open for the life of the process instead of closing it.

    Closing any descriptor of a file drops every POSIX lock the process holds
    on that file, and SQLite's locks are POSIX locks: other connections of this
    process to the ledger's file (the subscriber counts, the store) would lose
    theirs, and another process could then take the file for its own (delete
    the WAL under them: "disk I/O error", then a malformed file). A process
    opens the ledger a few times at most, so the parked descriptors are few.
    """
    _PARKED.append(fd)


class Ledger:
    """The permanent record of every article's id, slug and dates, in one SQLite file.

    One connection per object, shared across threads (the web layer may
    record from a reload thread) and guarded by a lock. Every SQLite failure
    is raised as :class:`LedgerError` naming the file; a corrupt, foreign or
    read-only file fails here, at construction, rather than at first use.
    A file deleted, replaced or damaged while open is noticed at the next use
    (see :meth:`_connection`), and that use fails until the file is back.
    """

    def __init__(self, path: Path, id_authority: str) -> None:
        """Open (creating if needed) the ledger at ``path``.

        ``id_authority`` ("news.example.org", "localhost") goes into the
        ``tag:`` URIs minted for new articles; changing it later leaves
        existing ids alone. Raises ValueError if it is not a DNS name or an
        e-mail address (RFC 4151), e.g. ``"localhost:8000"``.
        """
        authority = id_authority.strip().lower()
        if not _AUTHORITY.fullmatch(authority):
            raise ValueError(
                f"id authority {id_authority!r} is not a DNS name or e-mail address "
                "(RFC 4151 tag URIs allow no scheme, port or path)"
            )
        self.path = Path(path)
        self.id_authority = authority
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock_fd: int | None = None  # the shared flock that says "a service has it open"
        self._lock_pid = os.getpid()
        self._dirty_since: float | None = None  # monotonic time of the first unsaved write
        self._checkpointed = time.monotonic()
        # What the file looked like after our last use of it; see _connection().
        self._signature: tuple[int, ...] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(
                str(self.path), f"cannot create its folder: {exc.strerror or exc}"
            ) from exc
        self._conn = self._connect(create=True)

    def _connect(self, create: bool) -> sqlite3.Connection:
        """Open, configure and check the file; ``create=False`` never makes a new one.

        Only the first open may create the file: once a ledger existed, a
        missing file means it was deleted, and a fresh one would hand out new
        ids and dates for articles already published.
        """
        # SQLite opens a file it may not write read-only, and then creates the
        # -wal and -shm files with the same read-only mode: they would outlive
        # the fix of the ledger's own mode. So a read-only file is not opened,
        # and side files left read-only (by any reader) get the ledger's mode.
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise LedgerError(str(self.path), f"{_READ_ONLY}; {self.path.name} is not writable")
        for side in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if side.exists() and not os.access(side, os.W_OK):
                with contextlib.suppress(OSError):  # not ours to change: said below
                    os.chmod(side, stat.S_IMODE(os.stat(self.path).st_mode))
                if not os.access(side, os.W_OK):
                    raise LedgerError(str(self.path), f"{_READ_ONLY}; {side.name} is not writable")
        conn: sqlite3.Connection | None = None
        try:
            target = self.path if create else f"{self.path.absolute().as_uri()}?mode=rw"
            conn = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE
                check_same_thread=False,
                uri=not create,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Reads the header: a file that is not SQLite fails here.
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
            self._initialise(conn)
            # A damaged page would otherwise surface only when some later query
            # happens to read it; the ledger's own tables are small, so check
            # them now. Not the article store's (feedsvc.schema): hundreds of MB
            # at 100,000 articles (quick_check of the whole file took 19 s
            # there), and derived from the folder, so damage there costs reads,
            # not ids; SQLite reports it where it is read.
            problems = _quick_check(conn, ("articles", "feed_versions"))
            if problems != ["ok"]:
                raise LedgerError(
                    str(self.path),
                    "database disk image is malformed (corrupt: "
                    + "; ".join(problems)
                    + "); restore it from a back-up - starting a new ledger would change "
                    "published ids and dates",
                )
            self._signature = self._file_signature()
            self._hold_shared_lock()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise LedgerError(str(self.path), _reason(exc)) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _hold_shared_lock(self) -> None:
        """Hold a shared ``flock`` on the file as long as it is open: :func:`restore` checks it.

        flock and SQLite's POSIX locks are independent on Linux, so this never
        blocks SQLite. Taken again on each reopen: a restored file is a new inode.
        """
        self._release_lock()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise LedgerError(str(self.path), f"cannot open: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            _park(fd)
            raise LedgerError(
                str(self.path), "a restore is replacing the ledger; start again when it is done"
            ) from None
        except OSError:  # a filesystem without flock: restore cannot tell, nothing else changes
            pass
        self._lock_fd, self._lock_pid = fd, os.getpid()

    def _release_lock(self) -> None:
        """Give the flock up, but never close its descriptor (see :func:`_park`)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        if self._lock_pid == os.getpid():
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        # In a forked child the descriptor shares the parent's open file, and with it
        # the parent's flock: unlocking it here would unlock the parent too.
        _park(fd)

    def _file_signature(self) -> tuple[int, ...] | None:
        """Identity and change times of the file now at ``path``; None if there is none."""
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise LedgerError(str(self.path), f"cannot stat: {exc.strerror or exc}") from exc
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _connection(self) -> sqlite3.Connection:
        """The open connection if the file is as we left it; else a fresh, checked one.

        SQLite keeps writing to a database file that was deleted or replaced
        while open, so everything recorded afterwards would vanish at the next
        start and those articles would get new ids and dates; and a cached
        connection does not notice a file damaged, restored or made read-only
        under it. So each use compares the file with how our last use left it:
        if it is gone, nothing is recorded until it is restored; if anything
        else changed (another worker's checkpoint, a restore, damage, a chmod)
        or an earlier use failed, it is reopened with every check of a first
        open, which costs a millisecond or two. Called with the lock held.
        """
        if self._closed:
            raise LedgerError(str(self.path), "ledger is closed")
        signature = self._file_signature()
        if self._conn is not None and signature == self._signature:
            return self._conn
        self._drop()
        if signature is None:
            raise LedgerError(str(self.path), _GONE)
        self._conn = self._connect(create=False)
        return self._conn

    def _drop(self) -> None:
        """Close the connection after a failure, so that the next use reopens the file."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _failed(self, exc: sqlite3.Error) -> LedgerError:
        """The LedgerError for ``exc``; drops the connection unless the file was just busy.

        A corrupt, read-only or full file may be repaired or replaced while we
        run: a fresh connection sees the repair, a cached one might not.
        """
        name = getattr(exc, "sqlite_errorname", "") or ""
        if not name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            self._drop()
        return LedgerError(str(self.path), _reason(exc))

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """Create or check the tables; write the schema version to fail fast if read-only."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            user_version = conn.execute("PRAGMA user_version").fetchone()[0]
            if user_version > SCHEMA_VERSION:
                raise LedgerError(str(self.path), _newer(user_version))
            # Migrations are the CREATE ... IF NOT EXISTS below: version 1 (no
            # user_version yet) gains feed_versions, 2 the store's tables; the
            # rows of each stay as they are.
            for statement in _SCHEMA + STORE_TABLES:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(articles)")}
            missing = _COLUMNS - columns
            if missing:
                raise LedgerError(
                    str(self.path),
                    "not a feedsvc ledger: table 'articles' lacks column(s) "
                    + ", ".join(sorted(missing)),
                )
            conn.execute(_INDEX)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None:
                try:
                    version = int(row[0])
                except ValueError:
                    raise LedgerError(
                        str(self.path), f"not a feedsvc ledger: schema version {row[0]!r}"
                    ) from None
                if version > SCHEMA_VERSION:
                    raise LedgerError(str(self.path), _newer(version))
            # Always a write, even when unchanged: a read-only ledger fails now.
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def record(
        self, sightings: Iterable[Sighting], present_paths: Collection[str], now: float
    ) -> dict[str, Stamp]:
        """Stamp each sighting, in one transaction; return the stored stamps by path.

        ``present_paths`` are all files present now (not just these
        sightings): a stored row whose file is gone and whose content hash
        equals a new file's is that file, moved or renamed, and keeps its id,
        slug and dates. ``now`` is unix seconds. The result is what the
        database holds after commit, so concurrent recorders agree.
        """
        batch = list(sightings)
        if not batch:
            return {}
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite unix time, not {now!r}")
        present: Collection[str] = (
            present_paths
            if isinstance(present_paths, AbstractSet | Mapping)
            else frozenset(present_paths)
        )
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = stamping.record_all(sqlite_tx(conn), batch, present, now,
                                                 self.id_authority)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            self._signature = self._file_signature()  # our own commit may checkpoint
            self._dirty()
        return result

    def moments(
        self, versions: Mapping[str, tuple[str, int]], now: float,
        aliases: Callable[[str], str | None] | None = None,
    ) -> dict[str, int]:
        """When each feed document's current version first existed, in unix seconds.

        ``versions`` maps a document key to ``(digest, floor)``: the version
        digest and the newest entry date it shows. A version seen before, by
        any process, keeps the moment stored then, so every worker and host
        answers the same ``Last-Modified``. A version new to the ledger (or
        one come back after a newer one, as when an edit is undone) gets
        ``max(now, floor, newest stored moment + 1)``: later than any earlier
        version's, so it never goes backwards and an ``If-Modified-Since``
        client sees every change even within one second. One transaction; at
        most :data:`VERSIONS_KEPT` versions of a document are kept. ``aliases``:
        see :func:`feedsvc.stamping.store_moments`.
        """
        if not versions:
            return {}
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite unix time, not {now!r}")
        result: dict[str, int] = {}
        with self._lock:
            conn = self._connection()
            try:
                # Mostly every version is known already (another worker wrote
                # it, or a restart): read without taking the write lock.
                known = {doc: stamping.newest_version(sqlite_tx(conn), doc)
                         for doc in versions}
                if all(k is not None and k[0] == versions[d][0] for d, k in known.items()):
                    return {doc: k[1] for doc, k in known.items() if k is not None}
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result, wrote = stamping.store_moments(sqlite_tx(conn), versions, now,
                                                              aliases)
                    conn.execute("COMMIT" if wrote else "ROLLBACK")
                except BaseException:
                    _rollback(conn)
                    raise
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            self._signature = self._file_signature()
            if wrote:
                self._dirty()
        return result

    def stamps_of(self, paths: Iterable[str]) -> dict[str, Stamp]:
        """What is recorded for these paths (those that have a row), by path."""
        wanted = list(paths)
        rows: list[tuple] = []
        with self._lock:
            conn = self._connection()
            try:
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += conn.execute(
                        f"SELECT path, {_ROW} FROM articles WHERE path IN ({marks})", chunk
                    ).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
        return {row[0]: _stamp(row[1:]) for row in rows}

    def path_of_slug(self, slug: str) -> str | None:
        """The file an article with this slug was last seen at, or None if it never existed."""
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute("SELECT path FROM articles WHERE slug = ?", (slug,)).fetchone()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
        return None if row is None else row[0]

    def _dirty(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def checkpoint(self) -> bool:
        """Copy the WAL into the main file and truncate it; True if it was complete.

        Incomplete (False) while another process reads an older snapshot;
        SQLite then copies what it can, and a later call finishes.
        """
        with self._lock:
            return self._checkpoint()

    def _checkpoint(self) -> bool:
        conn = self._conn
        if conn is None or self._closed:
            return False
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            log.warning("ledger %s: checkpoint failed: %s", self.path, _reason(exc))
            return False
        self._checkpointed = time.monotonic()
        if not busy:
            self._dirty_since = None
        self._signature = self._file_signature()
        return not busy

    def checkpoint_if_due(self, interval: float | None = None) -> bool:
        """Checkpoint if something was written and ``interval`` seconds passed since the last.

        ``interval`` defaults to :data:`CHECKPOINT_INTERVAL`.
        """
        if interval is None:
            interval = CHECKPOINT_INTERVAL
        with self._lock:
            if self._dirty_since is None or time.monotonic() - self._checkpointed < interval:
                return False
            return self._checkpoint()

    def stamps(self) -> dict[str, Stamp]:
        """Everything recorded, by path, including rows of files since deleted."""
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(f"SELECT path, {_ROW} FROM articles").fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
        return {row[0]: _stamp(row[1:]) for row in rows}

    def close(self) -> None:
        """Close the connection; further use raises LedgerError. Safe to call twice."""
        with self._lock:
            if self._conn is not None and not self._closed and self._dirty_since is not None:
                # So that the main file alone holds everything (a plain copy
                # of it is a usable back-up): SQLite would only do this when
                # the last of all processes closes it.
                self._checkpoint()
            self._closed = True
            self._release_lock()
            if self._conn is not None:
                conn, self._conn = self._conn, None
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise LedgerError(str(self.path), _reason(exc)) from exc

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _quick_check(conn: sqlite3.Connection, tables: tuple[str, ...]) -> list[str]:
    """``PRAGMA quick_check`` of these tables (and their indexes); of the whole file on
    SQLite before 3.33, which cannot name a table."""
    if sqlite3.sqlite_version_info < (3, 33, 0):
        return [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    problems: list[str] = []
    for table in tables:
        rows = [row[0] for row in conn.execute(f"PRAGMA quick_check({table})")]
        problems += [] if rows == ["ok"] else rows
    return problems or ["ok"]


def _newer(version: int) -> str:
    return (
        f"written by a newer feedsvc (schema version {version}; this one understands up to "
        f"{SCHEMA_VERSION}): run that release, or restore a back-up made by this one"
    )


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; never mask the error being handled."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


# -- back-up and restore: SQLite plumbing, no ledger policy ---------------------------


@dataclass(frozen=True, slots=True)
class LedgerCopy:
    """A checked ledger file: what a back-up or a restore wrote."""

    path: Path
    schema: int
    articles: int
    versions: int


_TABLES = ("articles", "feed_versions")  # counted in a LedgerCopy (the store's are derived)


def _schema_of(conn: sqlite3.Connection) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:  # before user_version: the meta row, else nothing of ours
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "articles" not in tables:
            raise sqlite3.DatabaseError("not a feedsvc ledger: no table 'articles'")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() \
            if "meta" in tables else None
        version = int(row[0]) if row and str(row[0]).isdigit() else 1
    return version


def _check_copy(conn: sqlite3.Connection, path: Path) -> LedgerCopy:
    """Integrity, schema and row counts of an open ledger file; LedgerError if unusable."""
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
    if problems != ["ok"]:
        raise LedgerError(str(path), "failed its integrity check: " + "; ".join(problems))
    try:
        schema = _schema_of(conn)
    except (sqlite3.DatabaseError, ValueError) as exc:
        raise LedgerError(str(path), str(exc)) from exc
    if schema > SCHEMA_VERSION:
        raise LedgerError(str(path), _newer(schema))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    counts = [
        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in tables else 0
        for t in _TABLES
    ]
    return LedgerCopy(path, schema, counts[0], counts[1])


def _rows(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute(f"SELECT path, {_ROW} FROM articles ORDER BY path").fetchall()


def _install(partial: Path, dest: Path) -> None:
    """Put a finished copy at ``dest`` in one rename, durably: a crash leaves the old
    file or the new one, never half of either."""
    _fsync_file(partial)
    os.replace(partial, dest)
    _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def backup(ledger_path: Path, dest: Path) -> LedgerCopy:
    """Copy the ledger to ``dest`` while it is in use, with SQLite's online back-up API.

    The copy is one consistent snapshot (the WAL included), written as a
    single self-contained file (rollback journal, no -wal beside it),
    checked (``integrity_check``, every article row equal to the snapshot's)
    and only then renamed to ``dest``, so ``dest`` is never half a copy.
    """
    ledger_path, dest = Path(ledger_path), Path(dest)
    if not ledger_path.is_file():
        raise LedgerError(str(ledger_path), "no ledger here to back up")
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    source = target = None
    try:
        source = sqlite3.connect(f"{ledger_path.absolute().as_uri()}?mode=ro", uri=True,
                                 timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        partial.unlink(missing_ok=True)
        target = sqlite3.connect(partial, isolation_level=None)
        source.execute("BEGIN")  # one read snapshot for the copy and the comparison
        expected = _rows(source)
        source.backup(target)
        source.execute("COMMIT")
        target.execute("PRAGMA journal_mode = DELETE")
        copy = _check_copy(target, dest)
        if _rows(target) != expected:
            raise LedgerError(str(dest), "the copy differs from the ledger; nothing was written")
        target.close()
        target = None
        _install(partial, dest)
    except sqlite3.Error as exc:
        raise LedgerError(str(ledger_path), f"cannot back up: {_reason(exc)}") from exc
    except OSError as exc:
        raise LedgerError(str(dest), f"cannot write the back-up: {exc.strerror or exc}") from exc
    finally:
        for conn in (source, target):
            if conn is not None:
                conn.close()
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return copy


def restore(source: Path, ledger_path: Path) -> LedgerCopy:
    """Put the back-up ``source`` in place of the ledger; refused while anything has it open.

    Every process with a :class:`Ledger` open holds a shared ``flock`` on the
    file; this takes it exclusively without waiting, so a running service
    (or ``feedsvc build``) makes it fail rather than have its connection
    write into the replaced file or replay its WAL over it. Then the stale
    ``-wal`` and ``-shm`` go (SQLite would replay a stale WAL over the
    restored file), the copy is renamed into place, and the result is
    checked row for row against the back-up.
    """
    source, ledger_path = Path(source), Path(ledger_path)
    if not source.is_file():
        raise LedgerError(str(source), "no such back-up file")
    wal = Path(f"{source}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise LedgerError(str(source), f"has a non-empty {wal.name} beside it, so the file "
                          "alone is not the whole copy; make back-ups with `feedsvc backup`")
    try:
        conn = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            copy = _check_copy(conn, source)
            expected = _rows(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LedgerError(str(source), f"not a usable back-up: {_reason(exc)}") from exc
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = None
    partial = ledger_path.parent / f".{ledger_path.name}.restoring-{os.getpid()}"
    try:
        if ledger_path.exists():
            lock_fd = os.open(ledger_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LedgerError(str(ledger_path), "is in use by a running feedsvc (a "
                                  "service, build or check has it open): stop it, then "
                                  "restore") from None
        shutil.copyfile(source, partial)
        # The service's user must be able to write it, also when root restores:
        # the owner and mode of the file replaced (or of its folder, if none).
        owner = os.stat(ledger_path if ledger_path.exists() else ledger_path.parent)
        with contextlib.suppress(PermissionError):
            os.chown(partial, owner.st_uid, owner.st_gid)
        if ledger_path.exists():
            os.chmod(partial, stat.S_IMODE(owner.st_mode))
        _fsync_file(partial)
        for side in (Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm")):
            side.unlink(missing_ok=True)
        os.replace(partial, ledger_path)
        _fsync_dir(ledger_path.parent)
    except OSError as exc:
        raise LedgerError(str(ledger_path), f"cannot restore: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if lock_fd is not None:
            os.close(lock_fd)
    try:
        conn = sqlite3.connect(ledger_path, isolation_level=None)
        try:
            restored = _check_copy(conn, ledger_path)
            if _rows(conn) != expected:
                raise LedgerError(str(ledger_path), "the restored file differs from the back-up")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LedgerError(str(ledger_path), f"restore did not verify: {_reason(exc)}") from exc
    if (restored.articles, restored.versions) != (copy.articles, copy.versions):
        raise LedgerError(str(ledger_path), "the restored file differs from the back-up")
    return restored
