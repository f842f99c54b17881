"""The collection: every published entry, indexed by topic and author.

Built once per reload from immutable entries and never mutated, so a request
that holds a reference sees one consistent version however reloads interleave.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from .model import Article, Author, Entry, Stamp, Topic, TopicRef
from .topics import TopicCatalog

FEED_KINDS = ("site", "topic", "author")


@dataclass(frozen=True, slots=True, order=True)
class FeedRef:
    """Names one feed: the whole site, one topic or one author."""

    kind: str
    slug: str = ""

    @property
    def prefix(self) -> str:
        """The URL path the feed's documents live under (``/topics/ukraine``)."""
        return {"site": "", "topic": f"/topics/{self.slug}", "author": f"/authors/{self.slug}"}[
            self.kind
        ]

    @property
    def html_path(self) -> str:
        """The HTML page the feed is the feed of."""
        return self.prefix + "/"


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
        id=fm.id or stamp.id,
        slug=stamp.slug,
        published=published,
        updated=updated,
        topics=tuple(topics),
    )
    return replace(entry, version=entry_version(entry))


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


class Collection:
    """Every published entry, newest first, with indexes and per-feed versions."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries: tuple[Entry, ...] = tuple(sorted(entries, key=_newest_first))
        self.by_slug: dict[str, Entry] = {e.slug: e for e in self.entries}
        topic_entries: dict[str, list[Entry]] = {}
        topic_names: dict[str, str] = {}
        author_entries: dict[str, list[Entry]] = {}
        author_latest: dict[str, Author] = {}
        for entry in self.entries:
            for ref in entry.topics:
                topic_entries.setdefault(ref.slug, []).append(entry)
                topic_names.setdefault(ref.slug, ref.name)
            for author in entry.authors:
                author_entries.setdefault(author.slug, []).append(entry)
                known = author_latest.get(author.slug)
                if known is None or (known.bio is None and author.bio):
                    author_latest[author.slug] = author
        self._feeds: dict[FeedRef, tuple[Entry, ...]] = {SITE_FEED: self.entries}
        for slug, items in topic_entries.items():
            self._feeds[FeedRef("topic", slug)] = tuple(items)
        for slug, items in author_entries.items():
            self._feeds[FeedRef("author", slug)] = tuple(items)
        self.topics: dict[str, Topic] = {
            slug: Topic(slug=slug, name=topic_names[slug], count=len(items))
            for slug, items in sorted(topic_entries.items())
        }
        self.authors: dict[str, AuthorInfo] = {
            slug: AuthorInfo(author=author_latest[slug], count=len(author_entries[slug]))
            for slug in sorted(author_entries)
        }
        self._versions: dict[FeedRef, str] = {
            ref: _version(items) for ref, items in self._feeds.items()
        }
        self.version: str = hashlib.blake2b(
            "".join(f"{r.kind}/{r.slug}={v};" for r, v in self._versions.items()).encode(),
            digest_size=16,
        ).hexdigest()

    def feed_refs(self) -> Iterator[FeedRef]:
        """Every feed the collection has: site, then topics, then authors."""
        return iter(self._feeds)

    def feed_entries(self, ref: FeedRef) -> tuple[Entry, ...] | None:
        """The entries of one feed, newest first; None for an unknown feed."""
        return self._feeds.get(ref)

    def feed_version(self, ref: FeedRef) -> str | None:
        """A digest that changes exactly when something shown in the feed changes."""
        return self._versions.get(ref)

    def title_of(self, ref: FeedRef) -> str | None:
        if ref.kind == "topic" and ref.slug in self.topics:
            return self.topics[ref.slug].name
        if ref.kind == "author" and ref.slug in self.authors:
            return self.authors[ref.slug].author.name
        return None

    @property
    def updated(self) -> datetime | None:
        """The newest ``updated`` of any entry: what the site last changed at."""
        return max((e.updated for e in self.entries), default=None)


def _version(entries: tuple[Entry, ...]) -> str:
    """A feed's version: a digest of its entries' versions, in order."""
    return hashlib.blake2b(
        b"".join(e.version or entry_version(e) for e in entries), digest_size=16
    ).hexdigest()


def changed_feeds(old: Collection, new: Collection) -> list[FeedRef]:
    """Feeds whose content differs between two collections, gone ones included."""
    refs = set(old.feed_refs()) | set(new.feed_refs())
    return sorted(ref for ref in refs if old.feed_version(ref) != new.feed_version(ref))
