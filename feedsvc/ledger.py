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
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from feedsvc.errors import LedgerError
from feedsvc.model import Stamp
from feedsvc.text import slugify

__all__ = ["SCHEMA_VERSION", "Ledger", "Sighting"]

#: Version of the tables below, kept in ``meta``; bump with a migration.
SCHEMA_VERSION = 1

#: How long a writer waits for another process's transaction, in milliseconds.
BUSY_TIMEOUT_MS = 10_000

#: mtimes before this (1980-01-02 UTC) are not evidence of a writing date:
#: reproducible builds, Nix and ZIP tools stamp files with 0, 1 or 1980-01-01.
MIN_PLAUSIBLE_MTIME = 315_619_200

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


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _stamp(row: tuple[str, str, int, int | None, str]) -> Stamp:
    id_, slug, first_seen, changed, content_hash = row
    return Stamp(
        id=id_,
        slug=slug,
        first_seen=_utc(first_seen),
        changed=None if changed is None else _utc(changed),
        content_hash=content_hash,
    )


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
            # happens to read it; the ledger is small, so check it all now.
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise LedgerError(
                    str(self.path),
                    "database disk image is malformed (corrupt: "
                    + "; ".join(problems)
                    + "); restore it from a back-up - starting a new ledger would change "
                    "published ids and dates",
                )
            self._signature = self._file_signature()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise LedgerError(str(self.path), _reason(exc)) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

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
            for statement in _SCHEMA:
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
                    raise LedgerError(
                        str(self.path),
                        f"written by a newer feedsvc (schema version {version}; "
                        f"this one understands up to {SCHEMA_VERSION})",
                    )
            # Always a write, even when unchanged: a read-only ledger fails now.
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
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
        seen_now = {s.path for s in batch}
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = {
                        s.path: self._record_one(conn, s, present, seen_now, now) for s in batch
                    }
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            self._signature = self._file_signature()  # our own commit may checkpoint
        return result

    def _record_one(
        self,
        conn: sqlite3.Connection,
        s: Sighting,
        present: Collection[str],
        seen_now: set[str],
        now: float,
    ) -> Stamp:
        row = _row(conn, s.path)
        if row is not None:
            if row[4] != s.content_hash:
                # Dates never go backwards, even if this worker's clock is behind.
                changed = max(int(now), row[2], row[3] or 0)
                conn.execute(
                    "UPDATE articles SET hash = ?, changed = ? WHERE path = ? AND hash <> ?",
                    (s.content_hash, changed, s.path, s.content_hash),
                )
                row = _row(conn, s.path)
                assert row is not None
            return _stamp(row)

        # A gone file with the same content is this file, moved: the newest wins.
        for (old_path,) in conn.execute(
            "SELECT path FROM articles WHERE hash = ? "
            "ORDER BY COALESCE(changed, first_seen) DESC, path",
            (s.content_hash,),
        ).fetchall():
            if old_path not in present and old_path not in seen_now:
                conn.execute("UPDATE articles SET path = ? WHERE path = ?", (s.path, old_path))
                row = _row(conn, s.path)
                assert row is not None
                return _stamp(row)

        mtime_is_evidence = math.isfinite(s.mtime) and MIN_PLAUSIBLE_MTIME <= s.mtime < now
        first_seen = int(s.mtime) if mtime_is_evidence else int(now)
        slug = _unique_slug(conn, slugify(s.slug_hint) or "article")
        id_ = _new_id(conn, s.id_hint, self.id_authority, first_seen, slug)
        conn.execute(
            "INSERT INTO articles (path, id, slug, first_seen, changed, hash) "
            "VALUES (?, ?, ?, ?, NULL, ?)",
            (s.path, id_, slug, first_seen, s.content_hash),
        )
        return Stamp(id_, slug, _utc(first_seen), None, s.content_hash)

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
            self._closed = True
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


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; never mask the error being handled."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _row(conn: sqlite3.Connection, path: str) -> tuple[str, str, int, int | None, str] | None:
    return conn.execute(f"SELECT {_ROW} FROM articles WHERE path = ?", (path,)).fetchone()


def _unique_slug(conn: sqlite3.Connection, base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` ... whichever is first free, in one query.

    Slugs are ``[a-z0-9-]`` (slugify), so they hold no GLOB metacharacters.
    """
    taken = {
        row[0]
        for row in conn.execute(
            "SELECT slug FROM articles WHERE slug = ? OR slug GLOB ?", (base, base + "-[0-9]*")
        )
    }
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _id_taken(conn: sqlite3.Connection, id_: str) -> bool:
    return conn.execute("SELECT 1 FROM articles WHERE id = ?", (id_,)).fetchone() is not None


def _new_id(
    conn: sqlite3.Connection, hint: str | None, authority: str, first_seen: int, slug: str
) -> str:
    """The front-matter id if free, else an RFC 4151 tag URI from the unique slug.

    The tag can only be taken by another file's front-matter id; then
    ``/2``, ``/3`` ... is appended (no slug contains ``/``, so these are free
    of any tag minted later).
    """
    hint = (hint or "").strip()
    if hint and not _id_taken(conn, hint):
        return hint
    day = _utc(first_seen).strftime("%Y-%m-%d")
    base = f"tag:{authority},{day}:/articles/{slug}"
    id_, n = base, 2
    while _id_taken(conn, id_):
        id_, n = f"{base}/{n}", n + 1
    return id_
