"""The article store's tables in the ledger's file: version 3 of its ``PRAGMA user_version``.

Kept apart from both their users: :class:`feedsvc.ledger.Ledger` creates them
with its own tables, in one transaction (so one chain of versions covers the
whole file: 1 articles, 2 feed_versions, 3 these), and
:class:`feedsvc.store.SqliteStore` reads and writes them.
"""

from __future__ import annotations

STORE_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS files (
        path TEXT PRIMARY KEY,      -- relative POSIX path
        size INTEGER,               -- signature; NULL for an entry the listing rejected
        mtime_ns INTEGER,
        inode INTEGER,
        version TEXT,               -- the last good version (published), or NULL
        error TEXT,                 -- why the file as it is now is rejected, or NULL
        line INTEGER                -- the line the error concerns, if any
    )""",
    """CREATE TABLE IF NOT EXISTS versions (
        version TEXT PRIMARY KEY,   -- digest of the file's path and bytes
        parser INTEGER NOT NULL,    -- PARSER_VERSION that parsed it
        hash TEXT NOT NULL,         -- the parser's content hash (the ledger's), for duplicates
        draft INTEGER NOT NULL,     -- 1 for a draft: never stamped, never published
        meta TEXT NOT NULL,         -- every parsed field but the content (JSON)
        content BLOB NOT NULL       -- the content HTML, zlib-compressed
    )""",
    "CREATE TABLE IF NOT EXISTS changes (path TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS changes_seq ON changes(seq)",
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,       -- host:pid of the process holding it
        expires REAL NOT NULL       -- unix seconds
    )""",
)
