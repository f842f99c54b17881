"""Surrogate keys: which keys a document shows, and which documents a change touched.

Caches that are told what changed can keep documents for a day and still show
an edit within seconds. Every document is tagged with short, stable keys
(``site``, ``topic/<slug>``, ``author/<slug>``, ``article/<slug>``,
``topics``, ``authors``, ``opml``): its own key first, then an
``article/<slug>`` for every entry it lists. A change is compared document by
document (a cheap signature of what each document shows, never its bytes):
:func:`touched` returns the documents whose content changed, each with its own
key and URL path, so a purge by key or by URL removes exactly what changed.

Pure: collections in, keys and paths out. No HTTP here; the web layer turns
keys into ``Surrogate-Key`` / ``Cache-Tag`` headers and :mod:`feedsvc.purge`
sends them to caches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from . import documents, sitemaps, urls
from .collection import SITE_FEED, Collection, FeedRef, changed_feeds
from .formats import formats
from .model import Entry, Site

SITE = "site"
TOPICS = "topics"
AUTHORS = "authors"
OPML = "opml"
SITEMAPS = "sitemaps"
#: Entries listed on the home page (web.py's ``home``).
HOME_ENTRIES = 50


def feed_key(ref: FeedRef) -> str:
    """The key of a feed's documents and page: ``site``, ``topic/<slug>``, ``author/<slug>``."""
    return SITE if ref == SITE_FEED else f"{ref.kind}/{ref.slug}"


def article_key(slug: str) -> str:
    return f"article/{slug}"


def listing_keys(own: Iterable[str], entries: Iterable[Entry]) -> tuple[str, ...]:
    """A document's keys: its own, then one per entry it lists (in order, no repeats)."""
    keys = dict.fromkeys(own)
    keys.update(dict.fromkeys(article_key(e.slug) for e in entries))
    return tuple(keys)


def page_keys(page: str, collection: Collection, slug: str = "") -> tuple[str, ...]:
    """The keys of one HTML page (web.py's endpoints: home, topics, topic, ...)."""
    if page == "home":
        return listing_keys((SITE, TOPICS, AUTHORS), collection.entries[:HOME_ENTRIES])
    if page in ("topics", "authors"):
        return (page,)
    if page in ("topic", "author"):
        ref = FeedRef(page, slug)
        return listing_keys((feed_key(ref),), collection.feed_entries(ref) or ())
    if page == "article":
        return (article_key(slug),)
    raise ValueError(f"unknown page {page!r}")


@dataclass(frozen=True, slots=True)
class Document:
    """One changed document: its own key, its URL path, digests of its old and new state.

    The digests are the same on every worker and host that sees the same
    change (made from versions, never from time), so queues deduplicate on
    them; ``"gone"`` for a document that no longer exists, ``"new"`` for one
    that did not exist.
    """

    key: str
    path: str
    digest: str
    before: str = "new"

    @property
    def transition(self) -> str:
        return f"{self.before}>{self.digest}"


@dataclass(frozen=True, slots=True)
class Touched:
    """What a change touched: every changed document, with its key and URL path."""

    documents: tuple[Document, ...]

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(d.key for d in self.documents)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(d.path for d in self.documents)

    def key_digests(self) -> dict[str, str]:
        """Per key, a digest of its changed documents' new states (for deduplication)."""
        grouped: dict[str, list[str]] = {}
        for doc in self.documents:
            grouped.setdefault(doc.key, []).append(f"{doc.path}={doc.transition}")
        return {key: _digest(sorted(parts)) for key, parts in grouped.items()}


def _digest(parts: Iterable[str | bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _versions(entries: Iterable[Entry]) -> Iterator[bytes]:
    for entry in entries:
        yield entry.version or b""


def _listed(entries: Iterable[Entry], memo: dict[bytes, str] | None = None) -> Iterator[str]:
    """What a page's list of entries shows of each (_entries.html): not the body.

    ``memo`` (by entry version) serves a caller that lists every page: each
    entry is on several topic and author pages (a build: 37,352 listings of
    10,000 entries).
    """
    for e in entries:
        if memo is not None and e.version is not None:
            found = memo.get(e.version)
            if found is None:
                found = memo[e.version] = _listed_one(e)
            yield found
        else:
            yield _listed_one(e)


def _listed_one(e: Entry) -> str:
    return (f"{e.slug}|{e.title}|{e.summary}|{e.published.timestamp()}|"
            + "|".join(f"{a.slug}={a.name}" for a in e.authors))


def feed_signatures(ref: FeedRef, collection: Collection, site: Site,
                     size: int) -> dict[int | None, str]:
    """A digest per document of one feed (None: the subscription document; k: archive k).

    Each covers what that document shows: titles, its entries' versions and
    its archive links; so a full archive's digest stays put when new
    articles arrive and only the newest archive grows.
    """
    entries = collection.feed_entries(ref)
    if entries is None:
        return {}
    title, subtitle = documents._titles(ref, collection, site)
    count = documents.archive_count(len(entries), size)
    out: dict[int | None, str] = {None: _digest([title, subtitle, str(count > 0),
                                                 str(count), *_versions(entries[:size])])}
    rest_oldest_first = entries[size:][::-1]
    for number in range(1, count + 1):
        shown = rest_oldest_first[(number - 1) * size: number * size]
        out[number] = _digest([title, subtitle, str(number), str(number < count),
                               *_versions(shown)])
    return out


def page_signature(ref: FeedRef, collection: Collection, site: Site,
                   memo: dict[bytes, str] | None = None) -> str | None:
    """A digest of a topic or author page (title, bio, count, every entry it lists);
    ``memo`` as for :func:`_listed`."""
    entries = collection.feed_entries(ref)
    if entries is None:
        return None
    title, subtitle = documents._titles(ref, collection, site)
    return _digest([title, subtitle, str(len(entries)), *_listed(entries, memo)])


def _listing(collection: Collection, kind: str) -> str:
    table = collection.topics if kind == TOPICS else collection.authors
    parts = []
    for slug, item in table.items():
        name = item.name if kind == TOPICS else item.author.name
        parts.append(f"{slug}={name}={item.count}")
    return _digest(parts)


def site_signatures(collection: Collection, site: Site) -> dict[str, tuple[str, str]]:
    """Home, the topic and author lists, and the OPML list: path -> (key, digest).

    The OPML list carries the moment its version first existed, which moves
    whenever anything in the collection does; so its digest is the
    collection's version.
    """
    topics, authors = _listing(collection, TOPICS), _listing(collection, AUTHORS)
    home = _digest([topics, authors, *_listed(collection.entries[:HOME_ENTRIES])])
    return {
        urls.HOME: (SITE, home),
        urls.TOPICS: (TOPICS, topics),
        urls.AUTHORS: (AUTHORS, authors),
        urls.OPML: (OPML, collection.version),
        # robots.txt and the sitemaps (feedsvc.sitemaps), all under one key
        **{path: (SITEMAPS, digest) for path, digest in
           sitemaps.signatures(collection, site, datetime.now(UTC)).items()},
    }


def _changed_slugs(old: Collection, new: Collection) -> dict[str, tuple[str, str]]:
    """Article pages whose entry changed, appeared or went: slug -> (old, new) digest."""
    out: dict[str, tuple[str, str]] = {}
    before, after = old.by_slug, new.by_slug
    for slug in before.keys() | after.keys():
        a, b = before.get(slug), after.get(slug)
        if a is b or (a is not None and b is not None and a.version == b.version):
            continue
        out[slug] = ((a.version or b"").hex() if a else "new",
                     (b.version or b"").hex() if b else "gone")
    return out


def touched(old: Collection, new: Collection, site: Site, size: int) -> Touched:
    """Every document whose content differs between ``old`` and ``new``.

    Feeds whose version did not move are skipped whole (:func:`changed_feeds`),
    so one edit among 100,000 articles looks at the handful of feeds it is in.
    Every format of a changed feed document is listed (their URLs differ; a
    URL also stands for its HTML preview).
    """
    docs: list[Document] = []
    fmts = [f.name for f in formats()]
    for ref in changed_feeds(old, new):
        key = feed_key(ref)
        before = feed_signatures(ref, old, site, size)
        after = feed_signatures(ref, new, site, size)
        for number in sorted(before.keys() | after.keys(), key=lambda n: n or 0):
            digest, was = after.get(number, "gone"), before.get(number, "new")
            if was == digest:
                continue
            for fmt in fmts:
                docs.append(Document(key, urls.feed(ref, fmt, number), digest, was))
        if ref != SITE_FEED:
            page_before = page_signature(ref, old, site)
            page_after = page_signature(ref, new, site)
            if page_before != page_after:
                docs.append(Document(key, ref.html_path, page_after or "gone",
                                     page_before or "new"))
    site_before, site_after = site_signatures(old, site), site_signatures(new, site)
    for path, (key, digest) in site_after.items():
        was = site_before.get(path, (key, "new"))[1]
        if was != digest:
            docs.append(Document(key, path, digest, was))
    for path, (key, was) in site_before.items():
        if path not in site_after:  # an article sitemap fewer
            docs.append(Document(key, path, "gone", was))
    for slug, (was, digest) in sorted(_changed_slugs(old, new).items()):
        docs.append(Document(article_key(slug), urls.article(slug), digest, was))
    return Touched(tuple(docs))
