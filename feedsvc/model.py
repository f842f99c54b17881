"""The data model every layer passes around: small, typed, immutable.

An :class:`Article` is what one file says; the ledger adds identity and dates
(:class:`Stamp`); together they make an :class:`Entry`, the published form.
A new version of a file is a new object, never a mutated one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

#: The feed formats' names (``FEED_FORMATS``, ``FormatName``) live with their
#: registry in formats.py; re-exported here for the model's users.
from .formats import FEED_FORMATS, FormatName  # noqa: F401

if TYPE_CHECKING:
    from .config import Settings

#: Where a topic of an article came from, in order of precedence.
TOPIC_KINDS = ("story", "broad", "folder", "front-matter")


@dataclass(frozen=True, slots=True)
class Author:
    """A person named in a byline; ``slug`` names their page and feed."""

    name: str
    slug: str
    bio: str | None = None


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A topic as attached to one article.

    ``kind`` is one of :data:`TOPIC_KINDS`: the topic line itself ("story"),
    a broad topic the topic line names ("broad"), the sub-folder the file sits
    in ("folder") or a front-matter ``topics`` value ("front-matter").
    """

    slug: str
    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic of the whole collection, with how many published entries carry it."""

    slug: str
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class FrontMatter:
    """The optional ``---`` fenced block at the top of a file; all fields optional."""

    date: datetime | None = None
    updated: datetime | None = None
    topics: tuple[str, ...] = ()
    summary: str | None = None
    id: str | None = None
    slug: str | None = None
    draft: bool = False


@dataclass(frozen=True, slots=True, init=False)
class Article:
    """What one article file says, parsed; it knows nothing of the ledger.

    Every string is already XML-safe (cleaned once when the file is read, so
    that rendering never has to). ``content_hash`` is over the normalised text,
    so that a ``touch`` or a CRLF/LF conversion is not a content change.

    The content HTML is kept zlib-compressed: it is most of an article's size,
    and as a ``str`` with typographic quotes CPython stores it at two bytes a
    character (2.2x the file); compressed it costs under half the file, and
    it is read only to render an entry once or to show its page.
    """

    path: str
    title: str
    authors: tuple[Author, ...]
    topic_line: str | None
    topics: tuple[TopicRef, ...]
    summary: str
    content_packed: bytes
    content_hash: str
    front_matter: FrontMatter
    warnings: tuple[str, ...]

    def __init__(
        self,
        *,
        path: str,
        title: str,
        authors: tuple[Author, ...],
        topic_line: str | None,
        topics: tuple[TopicRef, ...],
        summary: str,
        content_html: str,
        content_hash: str,
        front_matter: FrontMatter | None = None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        values = {
            "path": path,
            "title": title,
            "authors": authors,
            "topic_line": topic_line,
            "topics": topics,
            "summary": summary,
            "content_packed": zlib.compress(content_html.encode("utf-8"), 1),
            "content_hash": content_hash,
            "front_matter": front_matter if front_matter is not None else FrontMatter(),
            "warnings": warnings,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def content_html(self) -> str:
        """The story as HTML (sub-headings, lists, paragraphs; no bio)."""
        return zlib.decompress(self.content_packed).decode("utf-8")


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the ledger remembers of an article: assigned once, never recomputed.

    ``changed`` is the time of the last content change after first sight, or
    None if the text never changed since it was first seen.
    """

    id: str
    slug: str
    first_seen: datetime
    changed: datetime | None
    content_hash: str


@dataclass(frozen=True, slots=True)
class Entry:
    """An article as published: its content plus identity and dates.

    ``topics`` are resolved against the operator's topics file (aliases
    folded, display names applied), so renderers use them as they are.
    """

    article: Article
    id: str
    slug: str
    published: datetime
    updated: datetime
    topics: tuple[TopicRef, ...]
    #: A digest of everything a feed shows of this entry, computed once so
    #: that feed versions are a cheap join of these (see collection.py).
    version: bytes = field(default=b"", compare=False, repr=False)

    @property
    def title(self) -> str:
        return self.article.title

    @property
    def authors(self) -> tuple[Author, ...]:
        return self.article.authors

    @property
    def summary(self) -> str:
        return self.article.summary

    @property
    def content_html(self) -> str:
        return self.article.content_html


@dataclass(frozen=True, slots=True)
class Site:
    """Site-wide facts every feed and page shows."""

    title: str = "feedsvc"
    subtitle: str = "Articles published by feedsvc"
    language: str = "en"

    @classmethod
    def of(cls, settings: Settings) -> Site:
        """The site the settings describe (the publisher's, and what a build records)."""
        return cls(title=settings.site_title, subtitle=settings.site_subtitle,
                   language=settings.language)



@dataclass(frozen=True, slots=True)
class FeedDocument:
    """One feed document to render, in any of :data:`FEED_FORMATS`.

    Paths are site-relative. ``path`` ends before the format's extension
    (``/feed``, ``/topics/ukraine/feed``, ``/topics/ukraine/archive/2/feed``):
    the renderer appends ``.atom``/``.rss``/``.json`` and joins it to the base
    URL, so one document describes every format. ``links`` are further
    (rel, path-without-extension) pairs such as ``("prev-archive",
    "/archive/3/feed")`` or ``("current", "/feed")`` (RFC 5005). The feed's id
    is the absolute URL of ``html_path``, shared by every format and archive.
    ``updated`` is the newest entry's ``updated``, never the render time.
    """

    title: str
    subtitle: str
    path: str
    html_path: str
    entries: tuple[Entry, ...]
    updated: datetime
    archive: bool = False
    links: tuple[tuple[str, str], ...] = ()
    hubs: tuple[str, ...] = ()
