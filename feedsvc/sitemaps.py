"""Sitemaps (sitemaps.org 0.9), the Google News sitemap and robots.txt: pure renderers.

Bytes out of a collection, a base URL and the site: no HTTP here. The web
layer caches and serves them like every other document (ETags, 304s, gzip),
and ``feedsvc build`` writes them.

- ``/sitemap.xml`` is a sitemap index naming the pages sitemap (home, topic
  and author pages, each with its feed's newest ``updated``) and the article
  sitemaps, oldest articles first so that a new article changes only the
  last one; each holds at most :data:`MAX_URLS` URLs and
  :data:`MAX_BYTES` bytes (the protocol's limits).
- ``lastmod`` is always the real ``updated`` (Google uses it only when it
  is accurate), written as a W3C datetime in UTC.
- ``/news-sitemap.xml`` lists the articles published in the last
  :data:`NEWS_DAYS` days (at most :data:`NEWS_MAX_URLS`, Google's limit); it
  may be empty, which is valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from . import urls
from .collection import SITE_FEED, Collection, FeedRef
from .model import Entry, Site

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
NEWS_NS = "http://www.google.com/schemas/sitemap-news/0.9"
#: sitemaps.org: at most 50,000 URLs and 50 MB (52,428,800 bytes) uncompressed.
MAX_URLS = 50_000
MAX_BYTES = 52_428_800
NEWS_DAYS = 2
NEWS_MAX_URLS = 1000

_HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_URLSET_OPEN = _HEAD + f'<urlset xmlns="{SITEMAP_NS}">\n'.encode()
_URLSET_CLOSE = b"</urlset>\n"


def w3c_datetime(moment: datetime) -> str:
    """``2026-11-03T08:00:00Z``: the W3C datetime form the schemas take (xsd:dateTime)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _url(loc: str, lastmod: datetime | None) -> bytes:
    mod = f"<lastmod>{w3c_datetime(lastmod)}</lastmod>" if lastmod is not None else ""
    return f"<url><loc>{escape(loc)}</loc>{mod}</url>\n".encode()


#: Bytes of a ``<url>`` element besides its escaped location, without and with ``lastmod``.
_URL_FRAME = len(_url("", None))
_LASTMOD = len(_url("", datetime(2000, 1, 1, tzinfo=UTC))) - _URL_FRAME


def _url_size(loc: str, lastmod: datetime | None) -> int:
    """``len(_url(loc, lastmod))`` without formatting the date: every W3C datetime of a
    year from 1000 on has the same length (planning 10,000 articles formatted 10,000
    dates, three times a build)."""
    size = _URL_FRAME + len(escape(loc).encode())
    if lastmod is None:
        return size
    if lastmod.astimezone(UTC).year < 1000:
        return len(_url(loc, lastmod))
    return size + _LASTMOD


def oldest_first(collection: Collection) -> list[Entry]:
    """Every article, oldest first: new articles only ever extend the last sitemap."""
    return list(reversed(collection.entries))


def plan_article_sitemaps(entries: Sequence[Entry], base_url: str, max_urls: int | None = None,
                          max_bytes: int | None = None) -> list[tuple[int, int]]:
    """Split the articles into sitemaps: ``(start, stop)`` slices of ``entries``,
    each at most ``max_urls`` URLs and ``max_bytes`` bytes as rendered
    (default: the protocol's limits, :data:`MAX_URLS` and :data:`MAX_BYTES`)."""
    max_urls = MAX_URLS if max_urls is None else max_urls
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    budget = max_bytes - len(_URLSET_OPEN) - len(_URLSET_CLOSE)
    if 0 < len(entries) <= max_urls:
        # One sitemap if even the longest URL, every character escaped to the
        # longest entity (6 bytes), fits the budget as often as there are articles:
        # 10,000 articles take 2 MB of the 50 MB, and the loop below costs a
        # rebuild 0.05 s each time it is planned.
        longest = len(base_url) + len(urls.article("")) + max(len(e.slug) for e in entries)
        if len(entries) * (_URL_FRAME + 6 * longest + _LASTMOD) <= budget:
            return [(0, len(entries))]
    plans: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, entry in enumerate(entries):
        cost = _url_size(base_url + urls.article(entry.slug), entry.updated)
        if index > start and (index - start >= max_urls or size + cost > budget):
            plans.append((start, index))
            start, size = index, 0
        size += cost
    if start < len(entries):
        plans.append((start, len(entries)))
    return plans


def render_urlset(items: Iterable[tuple[str, datetime | None]]) -> bytes:
    """A ``<urlset>`` of ``(absolute URL, lastmod)`` pairs."""
    return _URLSET_OPEN + b"".join(_url(loc, mod) for loc, mod in items) + _URLSET_CLOSE


def render_articles(entries: Sequence[Entry], base_url: str) -> bytes:
    """One article sitemap: each article page, ``lastmod`` its ``updated``."""
    return render_urlset((base_url + urls.article(e.slug), e.updated) for e in entries)


def feed_pages(collection: Collection) -> list[tuple[str, datetime | None]]:
    """The home, topic and author pages (site-relative), each with its feed's newest
    ``updated``."""
    pages: list[tuple[str, datetime | None]] = []
    refs = [SITE_FEED] + [FeedRef("topic", s) for s in collection.topics] + [
        FeedRef("author", s) for s in collection.authors]
    for ref in refs:
        entries = collection.feed_entries(ref) or ()
        newest = max((e.updated for e in entries), default=None)
        pages.append((urls.html_path(ref), newest))
    return pages


def render_pages(collection: Collection, base_url: str) -> bytes:
    return render_urlset((base_url + path, mod) for path, mod in feed_pages(collection))


def render_index(items: Iterable[tuple[str, datetime | None]]) -> bytes:
    """A ``<sitemapindex>`` of ``(absolute sitemap URL, lastmod)`` pairs."""
    body = []
    for loc, mod in items:
        lastmod = f"<lastmod>{w3c_datetime(mod)}</lastmod>" if mod is not None else ""
        body.append(f"<sitemap><loc>{escape(loc)}</loc>{lastmod}</sitemap>\n")
    return (_HEAD + f'<sitemapindex xmlns="{SITEMAP_NS}">\n'.encode()
            + "".join(body).encode() + b"</sitemapindex>\n")


def index_items(collection: Collection, base_url: str,
                plans: Sequence[tuple[int, int]]) -> list[tuple[str, datetime | None]]:
    """The sitemaps the index names: the pages sitemap, then each article sitemap."""
    entries = oldest_first(collection)
    items: list[tuple[str, datetime | None]] = [
        (base_url + urls.PAGES_SITEMAP, collection.updated)]
    for number, (start, stop) in enumerate(plans, 1):
        newest = max(e.updated for e in entries[start:stop])
        items.append((base_url + urls.articles_sitemap(number), newest))
    return items


def news_entries(collection: Collection, now: datetime) -> list[Entry]:
    """The articles published in the last :data:`NEWS_DAYS` days, newest first."""
    cutoff = now - timedelta(days=NEWS_DAYS)
    found: list[Entry] = []
    for entry in collection.entries:  # newest published first: stop at the first too old
        if entry.published < cutoff:
            break
        if entry.published <= now:
            found.append(entry)
        if len(found) == NEWS_MAX_URLS:
            break
    return found


def news_language(tag: str) -> str:
    """FEEDSVC_LANGUAGE as Google News takes it: the ISO 639 code alone (``pt-BR`` ->
    ``pt``), but ``zh-cn`` or ``zh-tw`` for Chinese (traditional script: ``zh-tw``)."""
    parts = tag.lower().split("-")
    if parts[0] == "zh":
        return "zh-tw" if {"tw", "hk", "mo", "hant"} & set(parts[1:]) else "zh-cn"
    return parts[0]


def render_news(entries: Sequence[Entry], site: Site, base_url: str) -> bytes:
    """The Google News sitemap of ``entries``: publication, date and title each."""
    name, language = escape(site.title), escape(news_language(site.language))
    parts = [_HEAD, f'<urlset xmlns="{SITEMAP_NS}" xmlns:news="{NEWS_NS}">\n'.encode()]
    for entry in entries:
        parts.append(
            f"<url><loc>{escape(base_url + urls.article(entry.slug))}</loc><news:news>"
            f"<news:publication><news:name>{name}</news:name>"
            f"<news:language>{language}</news:language></news:publication>"
            f"<news:publication_date>{w3c_datetime(entry.published)}</news:publication_date>"
            f"<news:title>{escape(entry.title)}</news:title></news:news></url>\n".encode())
    parts.append(_URLSET_CLOSE)
    return b"".join(parts)


#: Paths crawlers have no business in (operators' pages).
ROBOTS_DISALLOW = (urls.STATS, "/metrics")


def render_robots(base_url: str, extra: str = "") -> bytes:
    """robots.txt (RFC 9309): everything allowed but the operators' pages, the
    operator's extra lines (``FEEDSVC_ROBOTS_EXTRA``), and both sitemaps."""
    lines = ["User-agent: *", "Allow: /"] + [f"Disallow: {path}" for path in ROBOTS_DISALLOW]
    extra = extra.replace("\r\n", "\n").strip("\n")
    if extra:
        lines += ["", extra]
    lines += ["", f"Sitemap: {base_url}{urls.SITEMAP_INDEX}",
              f"Sitemap: {base_url}{urls.NEWS_SITEMAP}"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def signatures(collection: Collection, site: Site, now: datetime) -> dict[str, str]:
    """A digest of what each sitemap shows, by path, for the purge announcements
    (feedsvc.surrogate): equal digests, equal documents. robots.txt never changes."""
    import hashlib

    def digest(parts: Iterable[object]) -> str:
        return hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=16).hexdigest()

    entries = oldest_first(collection)
    plans = plan_article_sitemaps(entries, "")
    out = {urls.PAGES_SITEMAP: digest(feed_pages(collection))}
    for number, (start, stop) in enumerate(plans, 1):
        out[urls.articles_sitemap(number)] = digest(
            (e.slug, e.updated.timestamp()) for e in entries[start:stop])
    out[urls.SITEMAP_INDEX] = digest([len(plans), collection.updated] + [
        max(e.updated for e in entries[start:stop]) for start, stop in plans])
    out[urls.NEWS_SITEMAP] = digest([site.title, site.language] + [
        (e.slug, e.title, e.published.timestamp()) for e in news_entries(collection, now)])
    return out
