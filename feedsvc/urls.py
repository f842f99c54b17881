"""The URL layout, in one place: every path feedsvc serves or links to.

Pure functions of a feed, a slug or a format, returning site-relative paths
(join them to a base URL for links). Feeds, documents, renderers, the export
and the templates (the ``urls`` Jinja global) ask here, and the Flask routes
and the fast path's werkzeug ``Map`` are built from :data:`FEED_RULES` and
:data:`PAGE_RULES`, so a path is spelled once. No HTTP and no Flask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .collection import FeedRef

HOME = "/"
TOPICS = "/topics/"
AUTHORS = "/authors/"
OPML = "/feeds.opml"
STATIC = "/static"
ROBOTS = "/robots.txt"
SITEMAP_INDEX = "/sitemap.xml"
NEWS_SITEMAP = "/news-sitemap.xml"
PAGES_SITEMAP = "/sitemaps/pages.xml"
STATS = "/stats"

#: Where each kind of feed lives; the werkzeug rule form names the slug.
_PREFIXES = {"site": "", "topic": "/topics/{slug}", "author": "/authors/{slug}"}
_RULE_PREFIXES = {"site": "", "topic": "/topics/<slug>", "author": "/authors/<slug>"}


def feed_prefix(kind: str, slug: str = "") -> str:
    """The path a feed's documents live under (``/topics/ukraine``; ``""`` for the site)."""
    return _PREFIXES[kind].format(slug=slug)


def html_path(ref: FeedRef) -> str:
    """The HTML page of a feed's site, topic or author."""
    return feed_prefix(ref.kind, ref.slug) + "/"


def feed_path(ref: FeedRef, archive: int | None = None) -> str:
    """A feed document's path without the format's extension (FeedDocument.path).

    The subscription document is ``<prefix>/feed``; RFC 5005 archive ``k``
    (1 = oldest) is ``<prefix>/archive/<k>/feed``.
    """
    prefix = feed_prefix(ref.kind, ref.slug)
    return f"{prefix}/feed" if archive is None else f"{prefix}/archive/{archive}/feed"


def with_format(path: str, fmt: str) -> str:
    """A document path (as :func:`feed_path` gives) in format ``fmt``."""
    return f"{path}.{fmt}"


def feed(ref: FeedRef, fmt: str, archive: int | None = None) -> str:
    """The path of one feed document in one format (``/topics/nato/feed.rss``)."""
    return with_format(feed_path(ref, archive), fmt)


def article(slug: str) -> str:
    return f"/articles/{slug}"


def topic(slug: str) -> str:
    return f"/topics/{slug}/"


def author(slug: str) -> str:
    return f"/authors/{slug}/"


def static(name: str) -> str:
    return f"{STATIC}/{name}"


def articles_sitemap(number: int) -> str:
    """Sitemap ``number`` (1 = the oldest articles) of the article pages."""
    return f"/sitemaps/articles-{number}.xml"


@dataclass(frozen=True, slots=True)
class FeedRule:
    """One feed URL rule: which kind of feed, whether an archive, its werkzeug pattern."""

    endpoint: str
    kind: str
    archive: bool
    pattern: str


def _feed_rule(kind: str, archive: bool) -> FeedRule:
    prefix = _RULE_PREFIXES[kind]
    middle = "/archive/<archive:number>" if archive else ""
    return FeedRule(f"{kind}_{'archive' if archive else 'feed'}", kind, archive,
                    f"{prefix}{middle}/feed.<fmt:fmt>")


#: Every feed URL: ``[/topics/<slug>|/authors/<slug>][/archive/<k>]/feed.<fmt>``.
#: ``fmt`` and ``archive`` are converters the HTTP side defines from the format
#: registry and the archive-number rule.
FEED_RULES: tuple[FeedRule, ...] = tuple(
    _feed_rule(kind, archive) for kind in _PREFIXES for archive in (False, True)
)

#: Page endpoint -> werkzeug pattern.
PAGE_RULES: dict[str, str] = {
    "home": HOME,
    "topics": TOPICS,
    "topic": "/topics/<slug>/",
    "authors": AUTHORS,
    "author": "/authors/<slug>/",
    "article": "/articles/<slug>",
    "opml": OPML,
    "robots": ROBOTS,
    "sitemap_index": SITEMAP_INDEX,
    "news_sitemap": NEWS_SITEMAP,
    "pages_sitemap": PAGES_SITEMAP,
    "articles_sitemap": "/sitemaps/articles-<int(min=1):number>.xml",
    "stats": STATS,
}
