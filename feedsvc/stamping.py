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
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime

from .model import Stamp
from .sql import Tx
from .text import slugify

__all__ = ["MIN_PLAUSIBLE_MTIME", "VERSIONS_KEPT", "newest_version", "record_all",
           "record_one", "row_of", "stamp_of", "store_moments"]

#: mtimes before this (1980-01-02 UTC) are not evidence of a writing date:
#: reproducible builds, Nix and ZIP tools stamp files with 0, 1 or 1980-01-01.
MIN_PLAUSIBLE_MTIME = 315_619_200

#: Versions of each feed document kept (the current one and a few before it,
#: so that a worker a reload behind still finds its own).
VERSIONS_KEPT = 8

ROW = "id, slug, first_seen, changed, hash"


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


#: Keys per ``IN (...)`` of a batch's reads.
_CHUNK = 500


def _rows_in(tx: Tx, sql: str, keys: Sequence[str], tail: str = "") -> Iterator[tuple]:
    """``sql IN (keys) tail``, per :data:`_CHUNK` keys."""
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        yield from tx.all(f"{sql} IN ({', '.join('?' * len(chunk))}){tail}", chunk)


def _first_seen(mtime: float, now: float) -> int:
    mtime_is_evidence = math.isfinite(mtime) and MIN_PLAUSIBLE_MTIME <= mtime < now
    return int(mtime) if mtime_is_evidence else int(now)


def _tag(authority: str, first_seen: int, slug: str) -> str:
    return f"tag:{authority},{utc(first_seen).strftime('%Y-%m-%d')}:/articles/{slug}"


class _Prefetched:
    """What stamping a batch reads, fetched for the whole batch in a few queries.

    A first import stamps thousands of new files: one at a time, each cost six
    statements (its row, rows with its hash, its slug, its id hint, its tag,
    the insert); with these reads done up front it costs the insert alone.
    The answers stay true while the batch runs, in order, inside the one
    serialised transaction: stamping inserts rows, moves a row to the path of
    the sighting being stamped, and changes a row's hash and date, but never
    a slug or id, and never the row of a path stamped later in the batch
    (paths are distinct). So a path's row is as fetched when its turn comes;
    rows with a hash are as fetched but for those moved (:attr:`moved`, and
    their new path is a sighting's); a slug or id is taken if it was then or
    was inserted since. Anything not fetched is asked of the database.
    """

    def __init__(self, tx: Tx, sightings: Sequence[object], now: float,
                 authority: str) -> None:
        paths = [s.path for s in sightings]  # type: ignore[attr-defined]
        self.rows = {row[0]: row[1:] for row in _rows_in(
            tx, f"SELECT path, {ROW} FROM articles WHERE path", paths)}
        new = [s for s in sightings if s.path not in self.rows]  # type: ignore[attr-defined]
        hashes = sorted({s.content_hash for s in new})  # type: ignore[attr-defined]
        self.by_hash: dict[str, list[str]] = {}
        for content_hash, path in _rows_in(
                tx, "SELECT hash, path FROM articles WHERE hash", hashes,
                " ORDER BY hash, COALESCE(changed, first_seen) DESC, path"):
            self.by_hash.setdefault(content_hash, []).append(path)
        self.moved: set[str] = set()
        bases = sorted({slugify(s.slug_hint) or "article" for s in new})  # type: ignore[attr-defined]
        self.slug_keys = set(bases)
        self.slugs = {row[0] for row in _rows_in(tx, "SELECT slug FROM articles WHERE slug",
                                                  bases)}
        ids = {(s.id_hint or "").strip() for s in new} - {""}  # type: ignore[attr-defined]
        ids |= {_tag(authority, _first_seen(s.mtime, now),  # type: ignore[attr-defined]
                     slugify(s.slug_hint) or "article") for s in new}  # type: ignore[attr-defined]
        self.id_keys = ids
        self.ids = {row[0] for row in _rows_in(tx, "SELECT id FROM articles WHERE id",
                                                sorted(ids))}

    def slug_taken(self, tx: Tx, slug: str) -> bool:
        if slug in self.slug_keys:
            return slug in self.slugs
        return tx.one("SELECT 1 FROM articles WHERE slug = ?", (slug,)) is not None

    def id_taken(self, tx: Tx, id_: str) -> bool:
        if id_ in self.id_keys:
            return id_ in self.ids
        return _id_taken(tx, id_)

    def inserted(self, slug: str, id_: str) -> None:
        self.slug_keys.add(slug)
        self.slugs.add(slug)
        self.id_keys.add(id_)
        self.ids.add(id_)


def record_all(
    tx: Tx, sightings: Sequence[object], present: Collection[str], now: float, authority: str
) -> dict[str, Stamp]:
    """Stamp a batch in order, exactly as :func:`record_one` each; the reads done up front."""
    seen_now = {s.path for s in sightings}  # type: ignore[attr-defined]
    known = (_Prefetched(tx, sightings, now, authority)
             if len(seen_now) == len(sightings) else None)  # a path twice: no shortcut
    return {s.path: record_one(tx, s, present, seen_now, now, authority, known)  # type: ignore[attr-defined]
            for s in sightings}


def record_one(
    tx: Tx,
    s: object,
    present: Collection[str],
    seen_now: set[str],
    now: float,
    authority: str,
    known: _Prefetched | None = None,
) -> Stamp:
    """Stamp one :class:`~feedsvc.ledger.Sighting`; returns what the database holds after.

    ``known`` is what :func:`record_all` read for the whole batch.
    """
    path, content_hash = s.path, s.content_hash  # type: ignore[attr-defined]
    row = known.rows.get(path) if known is not None else row_of(tx, path)
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
            if known is not None:
                known.moved.add(renamed_from)
            if old[4] != content_hash:
                _set_changed(tx, path, content_hash, old, now)
            row = row_of(tx, path)
            assert row is not None
            return stamp_of(row)

    # A gone file with the same content is this file, moved: the newest wins.
    if known is not None:
        same_text = [p for p in known.by_hash.get(content_hash, ()) if p not in known.moved]
    else:
        same_text = [old_path for (old_path,) in tx.all(
            "SELECT path FROM articles WHERE hash = ? "
            "ORDER BY COALESCE(changed, first_seen) DESC, path",
            (content_hash,),
        )]
    for old_path in same_text:
        if old_path not in present and old_path not in seen_now:
            tx.execute("UPDATE articles SET path = ? WHERE path = ?", (path, old_path))
            if known is not None:
                known.moved.add(old_path)
            row = row_of(tx, path)
            assert row is not None
            return stamp_of(row)

    first_seen = _first_seen(s.mtime, now)  # type: ignore[attr-defined]
    slug = unique_slug(tx, slugify(s.slug_hint) or "article", known)  # type: ignore[attr-defined]
    id_ = new_id(tx, s.id_hint, authority, first_seen, slug, known)  # type: ignore[attr-defined]
    # Stamped once: whoever inserts first wins, and everyone returns the winner's row.
    # RETURNING gives back the row only if this insert made it (SQLite >= 3.35).
    inserted = tx.all(
        "INSERT INTO articles (path, id, slug, first_seen, changed, hash) "
        f"VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT DO NOTHING RETURNING {ROW}",
        (path, id_, slug, first_seen, content_hash),
    )
    if inserted:
        if known is not None:
            known.inserted(slug, id_)
        return stamp_of(inserted[0])
    row = row_of(tx, path)
    if row is None:  # lost on the slug or id to another stamper: theirs is taken now
        return record_one(tx, s, present, seen_now, now, authority)
    return stamp_of(row)


def unique_slug(tx: Tx, base: str, known: _Prefetched | None = None) -> str:
    """``base``, or ``base-2``, ``base-3`` ... whichever is first free.

    Probes the slug's unique index with equality only (``base`` first, then
    ``base-2`` .. ``base-33`` in one ``IN``, and so on): a ``LIKE 'base-%'``
    uses no index (SQLite's LIKE is case-blind, PostgreSQL's index has no
    pattern ops), so it read every stamped row and made a first import of n
    files cost O(n²); this costs one indexed lookup for a free slug.
    """
    if known is not None:
        if not known.slug_taken(tx, base):
            return base
    elif tx.one("SELECT 1 FROM articles WHERE slug = ?", (base,)) is None:
        return base
    start = 2
    while True:
        candidates = [f"{base}-{n}" for n in range(start, start + _SLUG_PROBES)]
        taken = {row[0] for row in tx.all(
            f"SELECT slug FROM articles WHERE slug IN ({', '.join('?' * len(candidates))})",
            candidates)}
        for slug in candidates:
            if slug not in taken:
                return slug
        start += _SLUG_PROBES


#: Numbered slugs probed per query once ``base`` is taken.
_SLUG_PROBES = 32


def _id_taken(tx: Tx, id_: str) -> bool:
    return tx.one("SELECT 1 FROM articles WHERE id = ?", (id_,)) is not None


def new_id(tx: Tx, hint: str | None, authority: str, first_seen: int, slug: str,
           known: _Prefetched | None = None) -> str:
    """The front-matter id if free, else an RFC 4151 tag URI from the unique slug.

    The tag can only be taken by another file's front-matter id; then
    ``/2``, ``/3`` ... is appended (no slug contains ``/``, so these are free
    of any tag minted later).
    """
    def taken(id_: str) -> bool:
        return known.id_taken(tx, id_) if known is not None else _id_taken(tx, id_)

    hint = (hint or "").strip()
    if hint and not taken(hint):
        return hint
    base = _tag(authority, first_seen, slug)
    id_, n = base, 2
    while taken(id_):
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
