"""The article store: every file's signature and every parsed version, in the ledger's file.

Each version of an article is read and parsed once, ever: the folder sync
(:mod:`feedsvc.sync`, one writer at a time, chosen by a lease in the
database) records each file's signature (size, mtime, inode) with the
version it holds, and each version's parsed fields, so a restart, a new
worker or a second process loads them from here instead of reading the
folder. Workers follow a change counter (:meth:`SqliteStore.changes`) and
update their in-memory view incrementally.

It lives in the ledger's database, so one file is backed up. :class:`Store`
names what the core needs, so that another backend (PostgreSQL, for several
hosts) can implement it; :class:`SqliteStore` is the SQLite one, built on
:mod:`feedsvc._sqlite` (plumbing) and :class:`~feedsvc.ledger.Ledger` (ids,
slugs and dates).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from . import _sqlite
from .errors import LedgerError
from .ledger import _GONE, SCHEMA_VERSION, Ledger, Sighting, _reason, _stamp
from .model import Article, Author, FrontMatter, Stamp, TopicRef
from .sql import DatabaseURL

__all__ = [
    "PARSER_VERSION",
    "STORE_SCHEMA_VERSION",
    "Batch",
    "FileRecord",
    "SqliteStore",
    "Snapshot",
    "Store",
    "StoredArticle",
    "decode_article",
    "encode_article",
    "open_store",
]

#: Bump when parse_article's output for the same bytes changes: stored
#: versions of an older parser are parsed again by the writer.
PARSER_VERSION = 1

#: The ledger file's ``PRAGMA user_version`` that has the store's tables (feedsvc.schema).
STORE_SCHEMA_VERSION = SCHEMA_VERSION

#: The lease the one folder-sync writer holds.
WRITER_LEASE = "folder-sync"




# -- what is stored ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the store knows of one path: its signature, last good version, current error."""

    path: str
    size: int | None
    mtime_ns: int | None
    inode: int | None
    version: str | None
    error: str | None = None
    line: int | None = None
    parser: int | None = None  # of ``version``; read back only
    content_hash: str | None = None  # of ``version``: its text's hash, for duplicates
    draft: bool = False  # ``version`` is a draft

    @property
    def listing_error(self) -> bool:
        """An entry the listing rejected (a symlink out, a FIFO): no signature."""
        return self.size is None


@dataclass(slots=True)
class Batch:
    """One transaction of the writer: versions first parsed, files as listed, paths gone.

    ``changed`` are the paths whose published state changed (followers look
    at them); a signature-only update (a ``touch``) changes nothing visible.
    """

    #: (version, meta, content, content hash, draft) of versions first parsed.
    versions: list[tuple[str, str, bytes, str, bool]] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    complete: bool = False  # the first full import is finished with this batch
    #: First sightings to stamp before the batch is stored (see Store.stamp).
    sightings: list[Sighting] = field(default_factory=list)


@dataclass(slots=True)
class Snapshot:
    """The store at one sequence number: files with their versions' fields, and stamps.

    From :meth:`Store.changes` it holds only the paths changed since: a path
    in ``changed`` but not in ``files`` is gone.
    """

    seq: int
    complete: bool
    generation: int
    files: dict[str, FileRecord]
    metas: dict[str, str]  # version -> meta JSON, for the versions of ``files``
    stamps: dict[str, Stamp]
    changed: set[str] = field(default_factory=set)
    full: bool = True


class Store(Protocol):
    """What the core needs of a persistent store (SQLite here; PostgreSQL in feedsvc.pgstore)."""

    def stamp(
        self, sightings: Iterable[Sighting], present: Collection[str], now: float
    ) -> dict[str, Stamp]:
        """Give first sightings their id, slug and date, in one transaction; see Ledger.record."""
        ...

    def stamps_of(self, paths: Iterable[str]) -> dict[str, Stamp]:
        """What is stamped for these paths (those that have a row)."""
        ...

    def files(self) -> dict[str, FileRecord]:
        """Every path's record: what the writer compares a listing with."""
        ...

    def metas(self, versions: Iterable[str]) -> dict[str, str]:
        """The stored fields of a few versions (the writer's rename and duplicate rules)."""
        ...

    def write(self, batch: Batch) -> int:
        """Commit one batch of the writer; returns the new sequence number."""
        ...

    def snapshot(self) -> Snapshot:
        """Everything a worker's view needs, at one sequence number."""
        ...

    def changes(self, since: int, generation: int) -> Snapshot:
        """What changed after ``since``: a full snapshot if the store is another file now."""
        ...

    def seq(self) -> tuple[int, int, bool]:
        """(sequence number, generation, complete): what a follower polls, cheaply."""
        ...

    def content(self, version: str) -> bytes:
        """One version's compressed content HTML, fetched when it is rendered."""
        ...

    def prefetched(self, articles: Iterable[Article]) -> contextlib.AbstractContextManager[None]:
        """A block in which these articles' content() needs no round trip (one document)."""
        ...

    def acquire(self, ttl: float) -> bool:
        """Take or renew the writer lease for ``ttl`` seconds; False if another holds it."""
        ...

    def release(self) -> None:
        """Give the writer lease up (at exit), so another process takes over at once."""
        ...

    def moments(self, versions: Mapping[str, tuple[str, int]], now: float,
                aliases: Callable[[str], str | None] | None = None) -> dict[str, int]:
        """When each feed document's version first existed; see Ledger.moments."""
        ...

    def path_of_slug(self, slug: str) -> str | None:
        """The file an article with this slug was last seen at (for 410 Gone)."""
        ...

    def checkpoint_if_due(self, interval: float | None = None) -> bool:
        """Housekeeping the reload thread runs (SQLite's WAL checkpoint)."""
        ...

    def before_fork(self) -> None:
        """Close every connection; the next use in either process opens its own."""
        ...

    def close(self) -> None: ...


# -- articles in and out -------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _date(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode_article(article: Article) -> str:
    """Every field of a parsed article but its path and content, as compact JSON."""
    fm = article.front_matter
    return json.dumps(
        [
            article.title,
            [[a.name, a.slug, a.bio] for a in article.authors],
            article.topic_line,
            [[t.slug, t.name, t.kind] for t in article.topics],
            article.summary,
            article.content_hash,
            [_iso(fm.date), _iso(fm.updated), list(fm.topics), fm.summary, fm.id, fm.slug,
             fm.draft],
            list(article.warnings),
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


class StoredArticle(Article):
    """An article whose content HTML stays in the store until it is rendered.

    A worker holds what routing and entry selection need; the content (most
    of an article's size) is fetched by version when an entry's fragment is
    first rendered (fragments are cached) or its page is shown, so memory
    does not grow with the corpus times the workers.
    """

    __slots__ = ("version", "_fetch")

    @property  # type: ignore[override]
    def content_packed(self) -> bytes:
        return self._fetch(self.version)

    @property
    def content_html(self) -> str:
        return zlib.decompress(self._fetch(self.version)).decode("utf-8")


_NO_FRONT_MATTER = FrontMatter()


def decode_article(
    path: str, version: str, meta: str, fetch: Any, shared: dict[Any, Any] | None = None
) -> StoredArticle:
    """The article ``encode_article`` stored, with its content fetched through ``fetch``.

    ``shared`` (one dict per view) hands out one object for equal authors,
    topics and author tuples: 100,000 articles have a few hundred authors and
    topics, and one copy of each is both faster to build and smaller.
    """
    title, authors, topic_line, topics, summary, content_hash, fm, warnings = json.loads(meta)
    if shared is None:
        shared = {}
    author_key = ("a", *map(tuple, authors))
    found_authors = shared.get(author_key)
    if found_authors is None:
        found_authors = shared[author_key] = tuple(
            shared.setdefault(("A", n, s, b), Author(n, s, b)) for n, s, b in authors)
    topic_refs = tuple(
        shared.setdefault(("T", s, n, k), TopicRef(s, n, k)) for s, n, k in topics)
    if fm == [None, None, [], None, None, None, False]:
        front_matter = _NO_FRONT_MATTER
    else:
        front_matter = FrontMatter(
            date=_date(fm[0]), updated=_date(fm[1]), topics=tuple(fm[2]), summary=fm[3],
            id=fm[4], slug=fm[5], draft=fm[6],
        )
    article = object.__new__(StoredArticle)
    setattr_ = object.__setattr__
    setattr_(article, "path", path)
    setattr_(article, "title", title)
    setattr_(article, "authors", found_authors)
    setattr_(article, "topic_line", topic_line)
    setattr_(article, "topics", topic_refs)
    setattr_(article, "summary", summary)
    setattr_(article, "content_hash", content_hash)
    setattr_(article, "front_matter", front_matter)
    setattr_(article, "warnings", tuple(warnings) if warnings else ())
    setattr_(article, "version", version)
    setattr_(article, "_fetch", fetch)
    return article


# -- the SQLite store ---------------------------------------------------------------


def _holder() -> str:
    """This process, as a lease holder: every store of one process holds the lease as one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(holder: str) -> bool:
    """Whether ``holder`` names a process of this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_FILE_COLUMNS = ("f.path, f.size, f.mtime_ns, f.inode, f.version, f.error, f.line, v.parser, "
                 "v.hash, COALESCE(v.draft, 0)")


class SqliteStore:
    """The store in the ledger's SQLite file: the ledger's tables plus the store's own.

    One connection per process (reopened after a fork or a restore), shared by
    threads under a lock. Every failure is a :class:`LedgerError` naming the
    file, as for the ledger itself.
    """

    def __init__(self, path: Path, id_authority: str) -> None:
        self.ledger = Ledger(path, id_authority)  # creates the file, checks and opens it
        self.path = self.ledger.path
        # Two connections, each with its own lock: the request threads' reads
        # (content, the change counter) never wait behind the writer's batches.
        self._dbs = {side: _sqlite.Database(self.path, prepare=self._prepare)
                     for side in ("read", "write")}
        self._locks = {side: threading.Lock() for side in ("read", "write")}
        self._local = threading.local()  # a render's prefetched contents (prefetched())
        self.holder = _holder()
        self._holder_pid = os.getpid()
        with self._using("write"):
            pass

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file has the store's tables: the Ledger creates and upgrades them."""
        found = _sqlite.user_version(conn)
        if found != STORE_SCHEMA_VERSION:
            raise LedgerError(str(self.path), f"schema version {found}, not "
                              f"{STORE_SCHEMA_VERSION}: replaced by another release while open")

    @contextlib.contextmanager
    def _using(self, side: str) -> Iterator[sqlite3.Connection]:
        """One side's connection with its lock held; every failure a LedgerError.

        A busy database is not the file's fault; anything else drops the
        connection, so that the next use sees a repaired or restored file.
        """
        db = self._dbs[side]
        with self._locks[side]:
            try:
                conn = db.connection()
            except FileNotFoundError:
                raise LedgerError(str(self.path), _GONE) from None
            except sqlite3.Error as exc:
                db.drop()
                raise LedgerError(str(self.path), _reason(exc)) from exc
            try:
                yield conn
            except sqlite3.Error as exc:
                name = getattr(exc, "sqlite_errorname", "") or ""
                if not name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                    db.drop()
                raise LedgerError(str(self.path), _reason(exc)) from exc

    def _my_holder(self) -> str:
        if self._holder_pid != os.getpid():  # a forked child is another process
            self.holder, self._holder_pid = _holder(), os.getpid()
        return self.holder

    # -- stamps (ledger policy lives in Ledger) ---------------------------------------

    def stamp(
        self, sightings: Iterable[Sighting], present: Collection[str], now: float
    ) -> dict[str, Stamp]:
        return self.ledger.record(sightings, present, now)

    def stamps_of(self, paths: Iterable[str]) -> dict[str, Stamp]:
        return self.ledger.stamps_of(paths)

    def moments(self, versions: Mapping[str, tuple[str, int]], now: float,
                aliases: Callable[[str], str | None] | None = None) -> dict[str, int]:
        return self.ledger.moments(versions, now, aliases)

    def path_of_slug(self, slug: str) -> str | None:
        return self.ledger.path_of_slug(slug)

    def checkpoint_if_due(self, interval: float | None = None) -> bool:
        return self.ledger.checkpoint_if_due(interval)

    # -- the writer -------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        with self._using("write") as conn:
            rows = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files f "
                "LEFT JOIN versions v ON v.version = f.version"
            ).fetchall()
        return {row[0]: _record(row) for row in rows}

    def metas(self, versions: Iterable[str]) -> dict[str, str]:
        """The stored fields (JSON) of these versions, for the writer's rename and duplicate
        rules: a few files per pass, never the whole folder."""
        wanted = list(versions)
        found: dict[str, str] = {}
        with self._using("write") as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                found.update(conn.execute(
                    f"SELECT version, meta FROM versions WHERE version IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall())
        return found

    def write(self, batch: Batch) -> int:
        with self._using("write") as conn, _sqlite.transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO versions (version, parser, hash, draft, meta, content) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(v, PARSER_VERSION, h, int(d), meta, content)
                 for v, meta, content, h, d in batch.versions],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, inode, version, error, line) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(f.path, f.size, f.mtime_ns, f.inode, f.version, f.error, f.line)
                 for f in batch.files],
            )
            conn.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in batch.gone])
            seq = _meta_int(conn, "store_seq")
            if batch.changed:
                seq += 1
                conn.executemany(
                    "INSERT OR REPLACE INTO changes (path, seq) VALUES (?, ?)",
                    [(p, seq) for p in sorted(batch.changed)],
                )
                _set_meta(conn, "store_seq", str(seq))
            if batch.complete:
                _set_meta(conn, "store_complete", "1")
        return seq

    def forget_unused_versions(self) -> int:
        """Delete versions no file holds any more (old texts of edited files)."""
        with self._using("write") as conn, _sqlite.transaction(conn):
            cursor = conn.execute(
                "DELETE FROM versions WHERE version NOT IN "
                "(SELECT version FROM files WHERE version IS NOT NULL)"
            )
        return cursor.rowcount

    # -- followers --------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._read(None, -1)

    def changes(self, since: int, generation: int) -> Snapshot:
        return self._read(since, generation)

    def seq(self) -> tuple[int, int, bool]:
        """(sequence number, generation, complete): what a follower polls, cheaply."""
        with self._using("read") as conn:
            rows = dict(conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('store_seq', 'store_complete')"
            ).fetchall())
            generation = self._dbs["read"].generation
        return int(rows.get("store_seq", 0)), generation, rows.get("store_complete") == "1"

    def _read(self, since: int | None, generation: int) -> Snapshot:
        with self._using("read") as conn:
            if since is not None and generation != self._dbs["read"].generation:
                since = None  # another file (restored from a back-up): start over
            with _sqlite.transaction(conn, immediate=False):
                seq = _meta_int(conn, "store_seq")
                complete = _meta_int(conn, "store_complete") == 1
                if since is None:
                    changed: set[str] = set()
                    rows = conn.execute(
                        f"SELECT {_FILE_COLUMNS}, v.meta FROM files f "
                        "LEFT JOIN versions v ON v.version = f.version"
                    ).fetchall()
                    stamp_rows = conn.execute(
                        "SELECT path, id, slug, first_seen, changed, hash FROM articles"
                    ).fetchall()
                else:
                    changed = {r[0] for r in conn.execute(
                        "SELECT path FROM changes WHERE seq > ?", (since,))}
                    rows = conn.execute(
                        f"SELECT {_FILE_COLUMNS}, v.meta FROM changes c "
                        "JOIN files f ON f.path = c.path "
                        "LEFT JOIN versions v ON v.version = f.version WHERE c.seq > ?",
                        (since,),
                    ).fetchall()
                    stamp_rows = conn.execute(
                        "SELECT a.path, a.id, a.slug, a.first_seen, a.changed, a.hash "
                        "FROM changes c JOIN articles a ON a.path = c.path WHERE c.seq > ?",
                        (since,),
                    ).fetchall()
            generation = self._dbs["read"].generation
        files = {row[0]: _record(row) for row in rows}
        metas = {row[4]: row[10] for row in rows if row[4] is not None and row[10] is not None}
        stamps = {row[0]: _stamp(row[1:]) for row in stamp_rows}
        return Snapshot(seq, complete, generation, files, metas, stamps, changed,
                        full=since is None)

    @contextlib.contextmanager
    def prefetched(self, articles: Iterable[Article]) -> Iterator[None]:
        """Within the block, this thread's content() of these articles costs no query.

        Fetched in one query per 500 (only articles of the store: a freshly
        parsed one carries its content), and dropped at the end of the block.
        """
        versions = [a.version for a in articles if isinstance(a, StoredArticle)]
        if not versions:
            yield
            return
        found: dict[str, bytes] = {}
        with self._using("read") as conn:
            for start in range(0, len(versions), 500):
                chunk = versions[start:start + 500]
                found.update(conn.execute(
                    f"SELECT version, content FROM versions WHERE version IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall())
        self._local.batch = found
        try:
            yield
        finally:
            self._local.batch = None

    def content(self, version: str) -> bytes:
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            hit = batch.get(version)
            if hit is not None:
                return hit
        with self._using("read") as conn:
            row = conn.execute(
                "SELECT content FROM versions WHERE version = ?", (version,)
            ).fetchone()
        # Gone only if the file changed and an old entry is rendered in the moment
        # before the follower swaps it out: an empty body, never an error page.
        return row[0] if row is not None else zlib.compress(b"", 1)

    # -- the writer lease -----------------------------------------------------------

    def acquire(self, ttl: float) -> bool:
        holder, now = self._my_holder(), time.time()
        with self._using("write") as conn, _sqlite.transaction(conn):
            row = conn.execute(
                "SELECT holder, expires FROM leases WHERE name = ?", (WRITER_LEASE,)
            ).fetchone()
            if row is not None and row[0] != holder and row[1] > now and not _dead_here(row[0]):
                return False
            conn.execute(
                "INSERT OR REPLACE INTO leases (name, holder, expires) VALUES (?, ?, ?)",
                (WRITER_LEASE, holder, now + ttl),
            )
        return True

    def release(self) -> None:
        holder = self._my_holder()
        with contextlib.suppress(LedgerError), self._using("write") as conn, \
                _sqlite.transaction(conn):
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?",
                         (WRITER_LEASE, holder))

    def lease_holder(self) -> str | None:
        with self._using("read") as conn:
            row = conn.execute(
                "SELECT holder FROM leases WHERE name = ? AND expires > ?",
                (WRITER_LEASE, time.time()),
            ).fetchone()
        return None if row is None else row[0]

    def before_fork(self) -> None:
        """Close every connection: a process about to fork workers must not hand them on."""
        for side, db in self._dbs.items():
            with self._locks[side]:
                db.drop()
        self.ledger._drop()  # noqa: SLF001 - reopened at its next use

    def close(self) -> None:
        for side, db in self._dbs.items():
            with self._locks[side]:
                db.drop()
        self.ledger.close()


def open_store(where: Path | DatabaseURL, id_authority: str) -> Store:
    """The store a database URL (or a SQLite file's path) names: SQLite or PostgreSQL."""
    if isinstance(where, DatabaseURL):
        if where.dialect == "postgresql":
            from .pgstore import PostgresStore

            return PostgresStore(where, id_authority)
        assert where.path is not None
        where = where.path
    return SqliteStore(Path(where), id_authority)


def _record(row: tuple) -> FileRecord:
    return FileRecord(*row[:9], draft=bool(row[9]))


def _meta_int(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row is not None else 0


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
