"""The ledger's policy: ids, slugs, renames and dates, written once for every backend.

A first sighting is stamped once: the row is inserted with ``ON CONFLICT DO
NOTHING`` and then the winner's row is read back, so two processes (or two
hosts) that see one new file at once return the same id, slug and dates.
Each function runs inside one transaction of the caller (:class:`feedsvc.sql.Tx`,
portable SQL with ``?`` placeholders) that the backend has serialised against
other stampers: SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's transaction-level
advisory lock. Nothing here knows which engine runs it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime

from .model import Stamp
from .sql import Tx
from .text import slugify

__all__ = ["MIN_PLAUSIBLE_MTIME", "VERSIONS_KEPT", "newest_version", "record_one",
           "row_of", "stamp_of", "store_moments"]

#: mtimes before this (1980-01-02 UTC) are not evidence of a writing date:
#: reproducible builds, Nix and ZIP tools stamp files with 0, 1 or 1980-01-01.
MIN_PLAUSIBLE_MTIME = 315_619_200

#: Versions of each feed document kept (the current one and a few before it,
#: so that a worker a reload behind still finds its own).
VERSIONS_KEPT = 8

ROW = "id, slug, first_seen, changed, hash"

_NUMBERED = re.compile(r"-([0-9]+)$")


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def stamp_of(row: tuple) -> Stamp:
    """A Stamp from ``(id, slug, first_seen, changed, hash)``."""
    id_, slug, first_seen, changed, content_hash = row
    return Stamp(
        id=id_,
        slug=slug,
        first_seen=utc(int(first_seen)),
        changed=None if changed is None else utc(int(changed)),
        content_hash=content_hash,
    )


def row_of(tx: Tx, path: str) -> tuple | None:
    return tx.one(f"SELECT {ROW} FROM articles WHERE path = ?", (path,))


def _set_changed(tx: Tx, path: str, content_hash: str, old: tuple, now: float) -> None:
    # Dates never go backwards, even if this host's clock is behind.
    changed = max(int(now), int(old[2]), int(old[3] or 0))
    tx.execute("UPDATE articles SET hash = ?, changed = ? WHERE path = ? AND hash <> ?",
               (content_hash, changed, path, content_hash))


def record_one(
    tx: Tx,
    s: object,
    present: Collection[str],
    seen_now: set[str],
    now: float,
    authority: str,
) -> Stamp:
    """Stamp one :class:`~feedsvc.ledger.Sighting`; returns what the database holds after."""
    path, content_hash = s.path, s.content_hash  # type: ignore[attr-defined]
    row = row_of(tx, path)
    if row is not None:
        if row[4] != content_hash:
            _set_changed(tx, path, content_hash, row, now)
            row = row_of(tx, path)
            assert row is not None
        return stamp_of(row)

    # The publisher matched this file to one gone in the same scan: moved,
    # perhaps edited. It keeps id, slug and first_seen; the date moves only
    # if the text changed.
    renamed_from = s.renamed_from  # type: ignore[attr-defined]
    if renamed_from and renamed_from not in present and renamed_from not in seen_now:
        old = row_of(tx, renamed_from)
        if old is not None:
            tx.execute("UPDATE articles SET path = ? WHERE path = ?", (path, renamed_from))
            if old[4] != content_hash:
                _set_changed(tx, path, content_hash, old, now)
            row = row_of(tx, path)
            assert row is not None
            return stamp_of(row)

    # A gone file with the same content is this file, moved: the newest wins.
    for (old_path,) in tx.all(
        "SELECT path FROM articles WHERE hash = ? "
        "ORDER BY COALESCE(changed, first_seen) DESC, path",
        (content_hash,),
    ):
        if old_path not in present and old_path not in seen_now:
            tx.execute("UPDATE articles SET path = ? WHERE path = ?", (path, old_path))
            row = row_of(tx, path)
            assert row is not None
            return stamp_of(row)

    mtime = s.mtime  # type: ignore[attr-defined]
    mtime_is_evidence = math.isfinite(mtime) and MIN_PLAUSIBLE_MTIME <= mtime < now
    first_seen = int(mtime) if mtime_is_evidence else int(now)
    slug = unique_slug(tx, slugify(s.slug_hint) or "article")  # type: ignore[attr-defined]
    id_ = new_id(tx, s.id_hint, authority, first_seen, slug)  # type: ignore[attr-defined]
    # Stamped once: whoever inserts first wins, and everyone returns the winner's row.
    tx.execute(
        "INSERT INTO articles (path, id, slug, first_seen, changed, hash) "
        "VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT DO NOTHING",
        (path, id_, slug, first_seen, content_hash),
    )
    row = row_of(tx, path)
    if row is None:  # lost on the slug or id to another stamper: theirs is taken now
        return record_one(tx, s, present, seen_now, now, authority)
    return stamp_of(row)


def unique_slug(tx: Tx, base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` ... whichever is first free, in one query.

    Slugs are ``[a-z0-9-]`` (slugify), so they hold no LIKE metacharacters.
    """
    taken = {
        row[0] for row in tx.all(
            "SELECT slug FROM articles WHERE slug = ? OR slug LIKE ?", (base, base + "-_%"))
        if row[0] == base or _NUMBERED.fullmatch(row[0][len(base):])
    }
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _id_taken(tx: Tx, id_: str) -> bool:
    return tx.one("SELECT 1 FROM articles WHERE id = ?", (id_,)) is not None


def new_id(tx: Tx, hint: str | None, authority: str, first_seen: int, slug: str) -> str:
    """The front-matter id if free, else an RFC 4151 tag URI from the unique slug.

    The tag can only be taken by another file's front-matter id; then
    ``/2``, ``/3`` ... is appended (no slug contains ``/``, so these are free
    of any tag minted later).
    """
    hint = (hint or "").strip()
    if hint and not _id_taken(tx, hint):
        return hint
    day = utc(first_seen).strftime("%Y-%m-%d")
    base = f"tag:{authority},{day}:/articles/{slug}"
    id_, n = base, 2
    while _id_taken(tx, id_):
        id_, n = f"{base}/{n}", n + 1
    return id_


def newest_version(tx: Tx, doc: str) -> tuple[str, int] | None:
    row = tx.one(
        "SELECT digest, moment FROM feed_versions WHERE doc = ? ORDER BY moment DESC LIMIT 1",
        (doc,),
    )
    return None if row is None else (row[0], int(row[1]))


def store_moments(
    tx: Tx, versions: Mapping[str, tuple[str, int]], now: float,
    aliases: Callable[[str], str | None] | None = None,
) -> tuple[dict[str, int], bool]:
    """The moment of each document's version, storing new ones; (moments, anything written).

    A version new to the store (or one come back after a newer one) gets
    ``max(now, floor, newest stored moment + 1)``, so it never goes backwards;
    at most :data:`VERSIONS_KEPT` versions of a document are kept.
    ``aliases(doc)`` names the digest an earlier release gave the same
    version (asked only of documents whose newest digest differs): a newest
    row under that digest is renamed and keeps its moment, so an upgrade
    moves no ``Last-Modified``.
    """
    result: dict[str, int] = {}
    wrote = False
    for doc, (digest, floor) in versions.items():
        newest = newest_version(tx, doc)
        if newest is not None and newest[0] == digest:
            result[doc] = newest[1]
            continue
        if newest is not None and aliases is not None and aliases(doc) == newest[0]:
            tx.execute("DELETE FROM feed_versions WHERE doc = ? AND digest = ?", (doc, digest))
            tx.execute("UPDATE feed_versions SET digest = ? WHERE doc = ? AND digest = ?",
                       (digest, doc, newest[0]))
            result[doc] = newest[1]
            wrote = True
            continue
        moment = max(int(now), int(floor), newest[1] + 1 if newest else 0)
        tx.execute(
            "INSERT INTO feed_versions (doc, digest, moment) VALUES (?, ?, ?) "
            "ON CONFLICT (doc, digest) DO UPDATE SET moment = excluded.moment",
            (doc, digest, moment),
        )
        tx.execute(
            "DELETE FROM feed_versions WHERE doc = ? AND digest NOT IN "
            "(SELECT digest FROM feed_versions WHERE doc = ? ORDER BY moment DESC LIMIT ?)",
            (doc, doc, VERSIONS_KEPT),
        )
        result[doc] = moment
        wrote = True
    return result, wrote
