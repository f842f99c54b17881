"""Which entries go in which feed document: subscription documents and archives.

RFC 5005 section 4 (archived feeds): the subscription document holds the
newest ``size`` entries; the rest are cut into archive documents of ``size``
entries numbered from the oldest, so a full archive's membership never
changes when new articles arrive (only the newest, partial archive grows).
A reader following ``prev-archive`` links collects every entry exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from . import urls
from .collection import Collection, FeedRef
from .model import Entry, FeedDocument, Site

#: The ``updated`` of a feed with no entries: fixed, so empty feeds are stable too.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def archive_count(total: int, size: int) -> int:
    """How many archive documents a feed of ``total`` entries has."""
    rest = max(0, total - size)
    return -(-rest // size)


def archive_path(ref: FeedRef, number: int) -> str:
    return urls.feed_path(ref, number)


def feed_path(ref: FeedRef) -> str:
    return urls.feed_path(ref)


def _titles(ref: FeedRef, collection: Collection, site: Site) -> tuple[str, str]:
    """Title and subtitle of a feed the collection has (callers checked it exists)."""
    topic, info = collection.topic(ref.slug), collection.author(ref.slug)
    if ref.kind == "topic" and topic is not None:
        return f"{topic.name} — {site.title}", f"Articles about {topic.name} on {site.title}"
    if ref.kind == "author" and info is not None:
        name = info.author.name
        return f"{name} — {site.title}", info.author.bio or f"Articles by {name}"
    return site.title, site.subtitle


def _updated(entries: tuple[Entry, ...]) -> datetime:
    return max((e.updated for e in entries), default=EPOCH)


def subscription_document(
    ref: FeedRef,
    collection: Collection,
    site: Site,
    size: int,
    hubs: tuple[str, ...] = (),
    limit: int | None = None,
) -> FeedDocument | None:
    """The document at ``<prefix>/feed.<fmt>``; None if the feed does not exist.

    With ``limit`` the newest ``limit`` entries are shown instead and the
    archive chain is left out, since it would repeat or skip entries.
    """
    entries = collection.feed_entries(ref)
    if entries is None:
        return None
    title, subtitle = _titles(ref, collection, site)
    links: tuple[tuple[str, str], ...] = ()
    if limit is None:
        shown = entries[:size]
        archives = archive_count(len(entries), size)
        if archives:
            links = (("prev-archive", archive_path(ref, archives)),)
    else:
        shown = entries[:limit]
    return FeedDocument(
        title=title,
        subtitle=subtitle,
        path=feed_path(ref),
        html_path=ref.html_path,
        entries=shown,
        updated=_updated(shown),
        links=links,
        hubs=hubs,
    )


def archive_document(
    ref: FeedRef,
    collection: Collection,
    site: Site,
    size: int,
    number: int,
    hubs: tuple[str, ...] = (),
) -> FeedDocument | None:
    """Archive ``number`` (1 = oldest) of a feed; None if there is no such archive."""
    entries = collection.feed_entries(ref)
    if entries is None:
        return None
    archives = archive_count(len(entries), size)
    if not 1 <= number <= archives:
        return None
    rest_oldest_first = entries[size:][::-1]  # everything not in the subscription document
    shown = tuple(reversed(rest_oldest_first[(number - 1) * size : number * size]))
    links: list[tuple[str, str]] = [("current", feed_path(ref))]
    if number > 1:
        links.append(("prev-archive", archive_path(ref, number - 1)))
    if number < archives:
        links.append(("next-archive", archive_path(ref, number + 1)))
    title, subtitle = _titles(ref, collection, site)
    return FeedDocument(
        title=title,
        subtitle=subtitle,
        path=archive_path(ref, number),
        html_path=ref.html_path,
        entries=shown,
        updated=_updated(shown),
        archive=True,
        links=tuple(links),
        hubs=hubs,
    )


def archive_is_complete(ref: FeedRef, collection: Collection, size: int, number: int) -> bool:
    """Whether an archive is full, and so changes only when an old article does."""
    entries = collection.feed_entries(ref) or ()
    rest = max(0, len(entries) - size)
    return number * size <= rest
