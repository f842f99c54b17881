"""``feedsvc migrate SOURCE TARGET``: copy a whole store between backends, verified.

SQLite to PostgreSQL (moving a site to several hosts), PostgreSQL to SQLite
(a back-up, or going back) and SQLite to SQLite. Every id, slug, date,
content hash and parsed article is copied as stored, never recomputed, so
readers see no change; the change counter and the Last-Modified moments
come along too. The tables of the other components (``component_schemas``:
hub subscriptions, purge queues ...) are copied when the target has them
after their schemas are created there; the writer lease is not (it belongs
to running processes).

The target is written in one transaction: it holds the whole site or,
after any failure, what it held before. A target already holding another
site is refused. Afterwards both sides are compared, table by table, by row
count and a SHA-256 digest of every row.

:func:`backup` and :func:`restore` are ``feedsvc backup`` / ``restore`` for a
store on PostgreSQL: a back-up is this copy into a new SQLite file (the
same self-contained file ``feedsvc backup`` writes for a SQLite ledger, so
it can also be served as is), and a restore is the copy back.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pkgutil
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FeedsvcError, LedgerError
from .sql import REGISTRY, DatabaseURL, SqlDatabase, Tx, open_database

__all__ = ["CORE_TABLES", "MigrationError", "MigrationReport", "backup", "migrate", "restore"]

#: The store's own tables and the key each is copied in order of.
CORE_TABLES: dict[str, tuple[str, ...]] = {
    "articles": ("path",),
    "feed_versions": ("doc", "digest"),
    "versions": ("version",),
    "files": ("path",),
    "changes": ("path",),
}
#: Rows of ``meta`` that describe the site's content (not the file's schema).
META_KEYS = ("store_seq", "store_complete")
#: Never copied: schema bookkeeping each side keeps itself, and leases of live processes.
_SKIPPED = {"meta", "component_schemas", "leases", "sqlite_sequence"}
#: Rows read per query (the versions table holds every article's content).
CHUNK = 500


class MigrationError(FeedsvcError):
    """A migration that was refused or did not verify; the target was left as it was."""


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What was copied: rows per table, and the digest both sides agree on."""

    counts: dict[str, int]
    digest: str
    components: tuple[str, ...]


def _open_store(url: DatabaseURL, *, create: bool) -> None:
    """Create or upgrade the store's tables (the service's own code does it)."""
    if url.dialect == "sqlite":
        assert url.path is not None
        if not create and not url.path.is_file():
            raise MigrationError(f"{url.redacted}: no such ledger file")
        from .store import SqliteStore

        SqliteStore(Path(url.path), "localhost").close()
    else:
        from .pgstore import PostgresStore

        PostgresStore(url, "localhost").close()


def _tables(tx: Tx) -> set[str]:
    if tx.dialect == "sqlite":
        rows = tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = tx.all("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r[0] for r in rows}


def _columns(tx: Tx, table: str) -> list[str]:
    if tx.dialect == "sqlite":
        return [r[1] for r in tx.all(f"PRAGMA table_info({table})")]
    return [r[0] for r in tx.all(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]


def _components(tx: Tx) -> dict[str, int]:
    if "component_schemas" not in _tables(tx):
        return {}
    return {r[0]: int(r[1]) for r in tx.all("SELECT component, version FROM component_schemas")}


def _load_components() -> None:
    """Import every feedsvc module, so that each feature's ComponentSchema is registered."""
    import feedsvc

    for info in pkgutil.iter_modules(feedsvc.__path__):
        if info.name not in ("web", "cli", "fastpath", "__main__"):
            with contextlib.suppress(Exception):
                importlib.import_module(f"feedsvc.{info.name}")


def _norm(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _rows(tx: Tx, table: str, columns: Sequence[str], key: Sequence[str] | None
          ) -> Iterator[tuple]:
    """Every row, in key order, a chunk at a time (keyset paging)."""
    cols = ", ".join(columns)
    if not key:
        order = ", ".join(columns)
        yield from (tuple(map(_norm, r)) for r in tx.all(f"SELECT {cols} FROM {table} "
                                                         f"ORDER BY {order}"))
        return
    keys = ", ".join(key)
    last: tuple | None = None
    while True:
        if last is None:
            rows = tx.all(f"SELECT {cols} FROM {table} ORDER BY {keys} LIMIT ?", (CHUNK,))
        else:
            # (a, b) > (?, ?): row comparison, in SQLite and PostgreSQL alike.
            marks = ", ".join("?" * len(key))
            rows = tx.all(f"SELECT {cols} FROM {table} WHERE ({keys}) > ({marks}) "
                          f"ORDER BY {keys} LIMIT ?", (*last, CHUNK))
        if not rows:
            return
        idx = [list(columns).index(k) for k in key]
        for row in rows:
            yield tuple(map(_norm, row))
        last = tuple(rows[-1][i] for i in idx)


def _digest(tx: Tx, plan: dict[str, tuple[list[str], tuple[str, ...] | None]]
            ) -> tuple[dict[str, int], str]:
    """Rows per table and one digest of every row: the sum of each row's SHA-256.

    A sum does not depend on the order rows come in, which differs between
    the engines (PostgreSQL sorts text by its collation, SQLite by bytes).
    """
    counts: dict[str, int] = {}
    total = 0
    for table, (columns, key) in sorted(plan.items()):
        n = 0
        for row in _rows(tx, table, columns, key):
            total += int.from_bytes(hashlib.sha256(repr((table, row)).encode("utf-8")).digest())
            n += 1
        counts[table] = n
    for row in tx.all("SELECT key, value FROM meta WHERE key IN (?, ?)", META_KEYS):
        total += int.from_bytes(hashlib.sha256(repr(("meta", tuple(row))).encode()).digest())
    return counts, f"{total % (1 << 256):064x}"


def migrate(source: DatabaseURL | str, target: DatabaseURL | str,
            progress: Callable[[int, int, str], None] | None = None) -> MigrationReport:
    """Copy the store at ``source`` into ``target``; see the module's docstring."""
    src = source if isinstance(source, DatabaseURL) else DatabaseURL.parse(source)
    dst = target if isinstance(target, DatabaseURL) else DatabaseURL.parse(target)
    if src.dialect == dst.dialect and (src.path, src.conninfo) == (dst.path, dst.conninfo):
        raise MigrationError("the source and the target are the same database")
    _open_store(src, create=False)
    _open_store(dst, create=True)
    _load_components()
    sdb, tdb = open_database(src), open_database(dst)
    try:
        with sdb.transaction() as stx:
            wanted = _components(stx)
        for name in sorted(wanted):
            schema = REGISTRY.get(name)
            if schema is not None and name not in ("store", "leases"):
                schema.ensure(tdb)
        with sdb.transaction() as stx, tdb.transaction() as ttx:
            if stx.dialect == "postgresql":  # one consistent read of a live store
                stx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return _copy(stx, ttx, src, dst, wanted, progress)
    except LedgerError:
        raise
    except FeedsvcError:
        raise
    except Exception as exc:  # a driver's error: one line, naming neither password
        raise MigrationError(f"copying {src.redacted} to {dst.redacted} failed: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                             ) from exc
    finally:
        for db in (sdb, tdb):
            with contextlib.suppress(Exception):
                db.close()


def _plan(stx: Tx, ttx: Tx) -> tuple[dict[str, tuple[list[str], tuple[str, ...] | None]],
                                     list[str]]:
    """The tables to copy with their columns (those both sides have) and keys."""
    src_tables, dst_tables = _tables(stx), _tables(ttx)
    plan: dict[str, tuple[list[str], tuple[str, ...] | None]] = {}
    missing: list[str] = []
    for table in sorted(src_tables - _SKIPPED):
        if table not in dst_tables:
            missing.append(table)
            continue
        dst_cols = set(_columns(ttx, table))
        columns = [c for c in _columns(stx, table) if c in dst_cols]
        plan[table] = (columns, CORE_TABLES.get(table))
    return plan, missing


def _copy(stx: Tx, ttx: Tx, src: DatabaseURL, dst: DatabaseURL, components: dict[str, int],
          progress: Callable[[int, int, str], None] | None) -> MigrationReport:
    plan, missing = _plan(stx, ttx)
    if missing:
        raise MigrationError(f"{dst.redacted} has no table(s) {', '.join(missing)} of "
                             f"{src.redacted}: this feedsvc does not know the component that "
                             "made them (run the release that wrote the source)")
    # A target holding another site: any stamped article the source does not have as is.
    ours = {r[0]: tuple(r) for r in _rows(stx, "articles", ["path", "id", "slug"], ("path",))}
    theirs = list(_rows(ttx, "articles", ["path", "id", "slug"], ("path",)))
    foreign = [r for r in theirs if ours.get(r[0]) != r]
    if foreign:
        raise MigrationError(
            f"{dst.redacted} already holds another site ({len(theirs)} articles; e.g. "
            f"{foreign[0][0]} with id {foreign[0][1]}): give an empty database")
    counts_src, digest_src = _digest(stx, plan)
    total = sum(counts_src.values())
    done = 0
    for table in reversed(list(plan)):
        ttx.execute(f"DELETE FROM {table}")
    for table, (columns, key) in plan.items():
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        chunk: list[tuple] = []
        for row in _rows(stx, table, columns, key):
            chunk.append(row)
            if len(chunk) >= CHUNK:
                ttx.executemany(sql, chunk)
                done += len(chunk)
                chunk = []
                if progress is not None:
                    progress(done, total, table)
        if chunk:
            ttx.executemany(sql, chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total, table)
    for key_name in META_KEYS:
        row = stx.one("SELECT value FROM meta WHERE key = ?", (key_name,))
        if row is not None:
            ttx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", (key_name, row[0]))
    copied = tuple(sorted(c for c in components if c in REGISTRY and c not in ("store",
                                                                                  "leases")))
    counts_dst, digest_dst = _digest(ttx, plan)
    if (counts_dst, digest_dst) != (counts_src, digest_src):
        differ = [t for t in plan if counts_src.get(t) != counts_dst.get(t)]
        raise MigrationError(f"the copy in {dst.redacted} differs from {src.redacted} "
                             f"({', '.join(differ) or 'same counts, other rows'}); "
                             "nothing was written")
    return MigrationReport(counts_src, digest_src, copied)


def backup(source: DatabaseURL, dest: Path,
           progress: Callable[[int, int, str], None] | None = None) -> MigrationReport:
    """Write a consistent SQLite snapshot of the PostgreSQL store ``source`` to ``dest``.

    :func:`migrate` reads the source in one REPEATABLE READ transaction, so
    the file is the store at one instant while the service writes on. It is
    verified (counts and digest), turned into one self-contained file (no
    ``-wal``), integrity-checked, and only then renamed to ``dest``: ``dest``
    is never half a back-up.
    """
    from .ledger import _check_copy, _install

    dest = Path(dest)
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    sides = [partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")]
    try:
        for path in sides:
            path.unlink(missing_ok=True)
        report = migrate(source, DatabaseURL.parse(f"sqlite:///{partial.absolute()}"), progress)
        conn = sqlite3.connect(partial, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")  # the file alone is the copy
            _check_copy(conn, dest)
        finally:
            conn.close()
        _install(partial, dest)
    except sqlite3.Error as exc:
        raise LedgerError(str(dest), f"the back-up does not check: {exc}") from exc
    except OSError as exc:
        raise LedgerError(str(dest), f"cannot write the back-up: {exc.strerror or exc}") from exc
    finally:
        for path in sides:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
    return report


def restore(source: Path, target: DatabaseURL,
            progress: Callable[[int, int, str], None] | None = None) -> MigrationReport:
    """Copy the back-up file ``source`` into the PostgreSQL store ``target``, verified.

    The target must be empty or hold this very site (migrate refuses another
    one), and no feedsvc may be connected to it: a running writer would keep
    writing from what it believed the store held. The back-up is read from a
    private copy, so an older one's schema is upgraded there, not in the file.
    """
    from .ledger import _check_copy

    source = Path(source)
    if not source.is_file():
        raise LedgerError(str(source), "no such back-up file")
    wal = Path(f"{source}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise LedgerError(str(source), f"has a non-empty {wal.name} beside it, so the file "
                          "alone is not the whole copy; make back-ups with `feedsvc backup`")
    users = _feedsvc_sessions(target)
    if users:
        raise MigrationError(f"{target.redacted} is in use by {len(users)} feedsvc "
                             f"connection(s) (e.g. {users[0]}): stop every host, then restore")
    with tempfile.TemporaryDirectory(prefix="feedsvc-restore-") as tmp:
        copy = Path(tmp) / "backup.sqlite3"
        shutil.copyfile(source, copy)
        try:
            conn = sqlite3.connect(copy, isolation_level=None)
            try:
                _check_copy(conn, source)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise LedgerError(str(source), f"not a usable back-up: {exc}") from exc
        return migrate(DatabaseURL.parse(f"sqlite:///{copy}"), target, progress)


def _feedsvc_sessions(url: DatabaseURL) -> list[str]:
    """The application names of feedsvc sessions on ``url``'s database, but ours."""
    import psycopg

    try:
        with psycopg.connect(url.conninfo or "", connect_timeout=5,
                             application_name="feedsvc-restore-check") as conn:
            rows = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND application_name LIKE "
                "'feedsvc%%' AND application_name NOT LIKE 'feedsvc-restore%%' "
                "ORDER BY application_name").fetchall()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise MigrationError(f"{url.redacted}: cannot connect: {reason}") from exc
    return [r[0] for r in rows]


def _password(url: DatabaseURL) -> str | None:
    from .pgstore import _password_of

    return _password_of(url)


def describe(db: SqlDatabase) -> str:  # pragma: no cover - a helper for operators' shells
    return db.url.redacted
