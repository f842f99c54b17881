"""The collection: every published entry, indexed by topic and author.

Built once per reload from immutable entries and never mutated, so a request
that holds a reference sees one consistent version however reloads interleave.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import operator
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any

from . import urls
from .layered import Layered
from .model import Article, Author, Entry, Stamp, Topic, TopicRef
from .topics import TopicCatalog

FEED_KINDS = ("site", "topic", "author")

#: Versions are sums of 128-bit digests modulo 2**128: a set's digest that one
#: edit updates by a subtraction and an addition, whatever the set's size.
_MODULUS = 1 << 128
_updated_of = operator.attrgetter("updated")


@dataclass(frozen=True, slots=True, order=True)
class FeedRef:
    """Names one feed: the whole site, one topic or one author."""

    kind: str
    slug: str = ""

    @property
    def prefix(self) -> str:
        """The URL path the feed's documents live under (``/topics/ukraine``)."""
        return urls.feed_prefix(self.kind, self.slug)

    @property
    def html_path(self) -> str:
        """The HTML page the feed is the feed of."""
        return urls.html_path(self)


SITE_FEED = FeedRef("site")


@dataclass(frozen=True, slots=True)
class AuthorInfo:
    """An author across the collection: newest name and bio, and a count."""

    author: Author
    count: int


def make_entry(article: Article, stamp: Stamp, catalog: TopicCatalog) -> Entry:
    """Join what the file says with what the ledger remembers.

    published = front-matter ``date``, else first seen; updated = front-matter
    ``updated``, else the last content change, else published; never earlier
    than published, which readers would show as nonsense.
    """
    fm = article.front_matter
    published = fm.date or stamp.first_seen
    # The id is the ledger's, never the file's: an id must not change once
    # published, and two articles claiming one id must not both carry it.
    updated = fm.updated or stamp.changed or published
    updated = max(updated, published)
    topics: list[TopicRef] = []
    seen: set[str] = set()
    for ref in article.topics:
        resolved = catalog.resolve(ref)
        if resolved.slug not in seen:
            seen.add(resolved.slug)
            topics.append(resolved)
    entry = Entry(
        article=article,
        id=stamp.id,  # the ledger honoured a front-matter id at first sight, if it was free
        slug=stamp.slug,
        published=published,
        updated=updated,
        topics=tuple(topics),
    )
    # Set in place rather than through dataclasses.replace, which built every
    # entry twice (a fifth of loading 100,000 articles from the store).
    object.__setattr__(entry, "version", entry_version(entry))
    return entry


def entry_version(entry: Entry) -> bytes:
    """A digest of everything any feed or page shows of one entry."""
    return hashlib.blake2b(
        f"{entry.id}\0{entry.slug}\0{entry.article.content_hash}\0"
        f"{entry.published.timestamp()}\0{entry.updated.timestamp()}\0"
        f"{'|'.join(f'{t.slug}={t.name}' for t in entry.topics)}\0"
        f"{'|'.join(f'{a.slug}={a.name}={a.bio}' for a in entry.authors)}".encode(),
        digest_size=16,
    ).digest()


def _newest_first(entry: Entry) -> tuple[float, str]:
    # Ties broken by id so that two instances order equal dates the same way.
    return (-entry.published.timestamp(), entry.id)


def _refs_of(entry: Entry) -> Iterator[FeedRef]:
    """The feeds an entry appears in."""
    yield SITE_FEED
    for topic in entry.topics:
        yield FeedRef("topic", topic.slug)
    for author in entry.authors:
        yield FeedRef("author", author.slug)


def _canonical(ref: FeedRef) -> tuple[int, str]:
    return (FEED_KINDS.index(ref.kind), ref.slug)


class Collection:
    """Every published entry, newest first, with indexes and per-feed versions.

    Built whole from entries, or from the previous collection by
    :meth:`evolve` when a few entries changed: both give equal collections
    (tests check it), the second in time proportional to the entries
    changed (and C-speed copies of the indexes), so one edit among 100,000
    articles costs no pass over them in Python.
    """

    def __init__(self, entries: Iterable[Entry]) -> None:
        ordered = sorted(entries, key=_newest_first)
        members: dict[FeedRef, list[Entry]] = {}
        for entry in ordered:
            for ref in _refs_of(entry):
                members.setdefault(ref, []).append(entry)
        members.setdefault(SITE_FEED, [])
        self._sums: dict[FeedRef, int] = {ref: _sum(items) for ref, items in members.items()}
        self._newest: dict[FeedRef, datetime] = {
            ref: max(map(_updated_of, items)) for ref, items in members.items() if items}
        self._finish(
            {ref: tuple(items) for ref, items in members.items()},
            {e.slug: e for e in ordered},
            previous=None,
        )
        self._parent: weakref.ref[Collection] | None = None
        self._touched: frozenset[FeedRef] = frozenset()
        self._delta: tuple[tuple[Entry, ...], tuple[Entry, ...]] = ((), ())

    def evolve(self, removed: Iterable[Entry], added: Iterable[Entry]) -> Collection:
        """A new collection with ``removed`` taken out and ``added`` put in.

        Only the feeds those entries belong to are re-sorted and re-versioned;
        every other feed's tuple, topic, author and version is carried over.
        """
        removed, added = list(removed), list(added)
        feeds = dict(self._feeds)
        touched: dict[FeedRef, list[Entry]] = {}
        changes: dict[FeedRef, tuple[list[Entry], list[Entry]]] = {}
        for entry in removed:
            for ref in _refs_of(entry):
                items = touched.setdefault(ref, list(feeds.get(ref, ())))
                index = bisect.bisect_left(items, _newest_first(entry), key=_newest_first)
                while items[index] is not entry:
                    index += 1
                del items[index]
                changes.setdefault(ref, ([], []))[0].append(entry)
        for entry in added:
            for ref in _refs_of(entry):
                items = touched.setdefault(ref, list(feeds.get(ref, ())))
                bisect.insort(items, entry, key=_newest_first)
                changes.setdefault(ref, ([], []))[1].append(entry)
        for ref, items in touched.items():
            if items or ref == SITE_FEED:
                feeds[ref] = tuple(items)
            else:
                feeds.pop(ref, None)
        by_slug = (self.by_slug if isinstance(self.by_slug, Layered)
                   else Layered.over(self.by_slug)).edit()  # shared, not copied
        for entry in removed:
            by_slug.pop(entry.slug, None)
        for entry in added:
            by_slug[entry.slug] = entry
        new = Collection.__new__(Collection)
        new._finish(feeds, by_slug.done(), previous=(self, changes))
        new._parent = weakref.ref(self)  # weak: a chain of versions must not pile up
        new._touched = frozenset(touched)
        new._delta = (tuple(removed), tuple(added))
        if "_ordered_refs" in self.__dict__ and all(
                (ref in feeds) == (ref in self._feeds) for ref in touched):
            new.__dict__["_ordered_refs"] = self._ordered_refs  # the same feeds: no sort
        return new

    def _finish(
        self,
        feeds: dict[FeedRef, tuple[Entry, ...]],
        by_slug: Mapping[str, Entry],
        previous: tuple[Collection, dict[FeedRef, tuple[list[Entry], list[Entry]]]] | None,
    ) -> None:
        """Derive topics, authors and versions; reuse ``previous`` for untouched feeds.

        ``previous`` is the collection evolved from and, by touched feed, the
        entries taken out of it and put in. Everything here is a dict copy plus
        work per changed entry: a feed's version and newest date are updated
        from the entries that changed, not recomputed over the feed (the site
        feed holds every entry); orderings (feed_refs, topics, authors) are
        derived on first use, so an edit among 100,000 articles sorts nothing.
        """
        self._feeds = feeds
        self.entries: tuple[Entry, ...] = feeds[SITE_FEED]
        #: Every entry by slug: a dict, or after an edit a Layered mapping over it.
        self.by_slug: Mapping[str, Entry] = by_slug
        changes: dict[FeedRef, tuple[list[Entry], list[Entry]]]
        if previous is None:  # __init__ has summed every feed
            self._versions: dict[FeedRef, str] = {}
            self._topics: dict[str, Topic] = {}
            self._authors: dict[str, AuthorInfo] = {}
            self._total = 0
            changes = {ref: ([], []) for ref in feeds}
        else:
            old, changes = previous
            self._sums = dict(old._sums)
            self._newest = dict(old._newest)
            self._versions = dict(old._versions)
            self._topics = dict(old._topics)
            self._authors = dict(old._authors)
            self._total = old._total
        for ref, (out, into) in changes.items():
            items = feeds.get(ref)
            table: dict[str, Any] | None = (
                self._topics if ref.kind == "topic" else
                self._authors if ref.kind == "author" else None
            )
            was = self._versions.get(ref)
            if was is not None:
                self._total -= _term(ref, was)
            if items is None:  # the feed is gone
                self._versions.pop(ref, None)
                self._sums.pop(ref, None)
                self._newest.pop(ref, None)
                if table is not None:
                    table.pop(ref.slug, None)
                continue
            if previous is not None:
                self._sums[ref] = (self._sums.get(ref, 0) + _sum(into) - _sum(out)) % _MODULUS
                self._newest_after(ref, items, out, into)
            version = self._versions[ref] = f"{self._sums[ref]:032x}"
            self._total += _term(ref, version)
            if ref.kind == "topic":
                self._topics[ref.slug] = _topic(ref.slug, items)
            elif ref.kind == "author":
                self._authors[ref.slug] = _author_info(ref.slug, items)
        self._total %= _MODULUS

    def _newest_after(
        self, ref: FeedRef, items: tuple[Entry, ...], out: list[Entry], into: list[Entry]
    ) -> None:
        """The feed's newest ``updated`` after a change: a pass over it (in C) only when
        the entry that held the newest date was taken out."""
        newest = self._newest.get(ref)
        top = max(map(_updated_of, into)) if into else None
        if not items:
            self._newest.pop(ref, None)
        elif newest is not None and top is not None and top >= newest:
            self._newest[ref] = top
        elif newest is None or any(e.updated >= newest for e in out):
            self._newest[ref] = max(map(_updated_of, items))

    @functools.cached_property
    def _ordered_refs(self) -> list[FeedRef]:
        return sorted(self._feeds, key=_canonical)

    def feed_refs(self) -> Iterator[FeedRef]:
        """Every feed the collection has: site, then topics, then authors, by slug."""
        return iter(self._ordered_refs)

    @functools.cached_property
    def topics(self) -> dict[str, Topic]:
        """Every topic by slug, in slug order."""
        return {slug: self._topics[slug] for slug in sorted(self._topics)}

    @functools.cached_property
    def authors(self) -> dict[str, AuthorInfo]:
        """Every author by slug, in slug order."""
        return {slug: self._authors[slug] for slug in sorted(self._authors)}

    @property
    def version(self) -> str:
        """A digest of every feed's version: changes when anything shown changes.

        The sum of a digest of each feed's name and version, kept by
        :meth:`_finish` as feeds change, so no edit walks every feed.
        """
        return f"{self._total:032x}"

    def feed_entries(self, ref: FeedRef) -> tuple[Entry, ...] | None:
        """The entries of one feed, newest first; None for an unknown feed."""
        return self._feeds.get(ref)

    def feed_version(self, ref: FeedRef) -> str | None:
        """A digest that changes exactly when something shown in the feed changes."""
        return self._versions.get(ref)

    def title_of(self, ref: FeedRef) -> str | None:
        if ref.kind == "topic" and ref.slug in self._topics:
            return self._topics[ref.slug].name
        if ref.kind == "author" and ref.slug in self._authors:
            return self._authors[ref.slug].author.name
        return None

    def topic(self, slug: str) -> Topic | None:
        """One topic, without building the ordered :attr:`topics`."""
        return self._topics.get(slug)

    def author(self, slug: str) -> AuthorInfo | None:
        """One author, without building the ordered :attr:`authors`."""
        return self._authors.get(slug)

    @property
    def updated(self) -> datetime | None:
        """The newest ``updated`` of any entry: what the site last changed at."""
        return self._newest.get(SITE_FEED)

    def feed_updated(self, ref: FeedRef) -> datetime | None:
        """The newest ``updated`` among one feed's entries; None if it has none."""
        return self._newest.get(ref)

    def legacy_feed_version(self, ref: FeedRef) -> str | None:
        """A feed's version as releases before the sums made it: an ordered digest.

        Only for carrying the moments an earlier release stored over an upgrade
        (:func:`feedsvc.stamping.store_moments`); a pass over the feed.
        """
        items = self._feeds.get(ref)
        if items is None:
            return None
        legacy = self._legacy.get(ref)
        if legacy is None:
            legacy = self._legacy[ref] = hashlib.blake2b(
                b"".join(e.version or entry_version(e) for e in items), digest_size=16
            ).hexdigest()
        return legacy

    def legacy_version(self) -> str:
        """:attr:`version` as releases before the sums made it (see legacy_feed_version)."""
        return hashlib.blake2b(
            "".join(f"{r.kind}/{r.slug}={self.legacy_feed_version(r)};"
                    for r in self._ordered_refs).encode(),
            digest_size=16,
        ).hexdigest()

    @functools.cached_property
    def _legacy(self) -> dict[FeedRef, str]:
        return {}

    def delta_from(self, old: Collection) -> tuple[tuple[Entry, ...], tuple[Entry, ...]] | None:
        """The entries taken out of ``old`` and put in to make this collection, if it
        was evolved from ``old``; None if it was built some other way."""
        if self._parent is not None and self._parent() is old:
            return self._delta
        return None


def _topic(slug: str, entries: tuple[Entry, ...]) -> Topic:
    """A topic's display name comes from its newest entry."""
    name = next(t.name for t in entries[0].topics if t.slug == slug)
    return Topic(slug=slug, name=name, count=len(entries))


def _author_info(slug: str, entries: tuple[Entry, ...]) -> AuthorInfo:
    """An author as their newest entry names them, with the newest bio there is.

    Stops at the first entry that gives a bio (mostly the newest): a list of
    every entry's names was 7 ms of each edit to a 2,000-entry author feed.
    """
    named = (a for e in entries for a in e.authors if a.slug == slug)
    first = next(named)
    author = first if first.bio else next((a for a in named if a.bio), first)
    return AuthorInfo(author=author, count=len(entries))


def _sum(entries: Iterable[Entry]) -> int:
    """The sum of the entries' versions as 128-bit numbers, modulo 2**128.

    A feed's version is the sum over its entries: order needs no digest of
    its own, as a feed's order follows from its entries' dates and ids,
    which their versions cover. Entries are distinct (one id each), so no two
    cancel out.
    """
    # All in C (a loop in Python was a third of building 10,000 entries' collection).
    return sum(map(int.from_bytes, map(_version_of, entries), repeat("big"))) % _MODULUS


def _version_of(entry: Entry) -> bytes:
    return entry.version or entry_version(entry)


def _term(ref: FeedRef, version: str) -> int:
    """One feed's share of the collection's version."""
    return int.from_bytes(hashlib.blake2b(
        f"{ref.kind}/{ref.slug}={version}".encode(), digest_size=16).digest(), "big")


def changed_feeds(old: Collection, new: Collection) -> list[FeedRef]:
    """Feeds whose content differs between two collections, gone ones included.

    When ``new`` was evolved from ``old`` only the feeds it touched can differ.
    """
    if new._parent is not None and new._parent() is old:
        refs: set[FeedRef] = set(new._touched)
    else:
        refs = set(old.feed_refs()) | set(new.feed_refs())
    return sorted(ref for ref in refs if old.feed_version(ref) != new.feed_version(ref))
