"""Pure renderers: one :class:`FeedDocument` in, the bytes of one feed out.

Nothing here reads the clock, the disk or the request: the same inputs give
byte-identical output, so responses can carry stable ETags and archives never
change once written. Atom and RSS are built with feedgen (one fresh
``FeedGenerator`` per call, so no state leaks between requests); JSON Feed and
OPML are small enough to write directly.

Strings are used as they arrive: :class:`~feedsvc.model.Article` text is made
XML-safe once, when the file is read, and cleaning again here would double the
cost of every render.

Text or HTML: every field but the article content is plain text. Where a
format defines a field as HTML or readers take it for HTML (RSS 2.0 ``title``
and ``description``, see the RSS Best Practices Profile on character data;
OPML ``text``), the text is HTML-escaped first
(:func:`_as_html`) and the XML serializer escapes that again, so ``<b>`` is
shown as ``<b>``, never made bold. Atom text constructs say ``type="text"``
(RFC 4287 3.1.1), JSON Feed titles and summaries are plain text by definition.
README "Text and HTML in each format" has the table.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape
from typing import Any
from urllib.parse import quote

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from feedsvc import __version__, urls
from feedsvc.formats import Format, content_types, formats, get_format, media_types, register_format
from feedsvc.model import Entry, FeedDocument, Site

ATOM_NS = "http://www.w3.org/2005/Atom"
#: RFC 5005 (Feed Paging and Archiving) namespace, for ``<fh:archive/>``.
FH_NS = "http://purl.org/syndication/history/1.0"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
RSS_DOCS = "https://www.rssboard.org/rss-specification"
OPML_DOCS = "http://opml.org/spec2.opml"
GENERATOR = "feedsvc"

#: Registered name of :class:`_FeedsvcExtension` on a ``FeedGenerator``.
_EXT_NAME = "feedsvc"


def render_feed(
    doc: FeedDocument,
    fmt: str,
    site: Site,
    base_url: str,
    fragments: FragmentCache | None = None,
) -> bytes:
    """Render ``doc`` as ``fmt`` (a registered format, feedsvc.formats), UTF-8 bytes.

    With ``fragments``, entries rendered for earlier documents are reused
    (see :class:`FragmentCache`); the bytes are the same either way.
    Raises ValueError for an unknown format, so a bad extension in a URL is a
    caller's 404 rather than a silent fallback to some other format.
    """
    record = get_format(fmt)
    if record is None:
        known = [f.name for f in formats()]
        raise ValueError(f"unknown feed format {fmt!r}; expected one of {known}")
    if fragments is not None and fmt in FragmentCache.FORMATS and doc.entries:
        return fragments.assemble(doc, fmt, site, base_url)
    return record.renderer(doc, site, base_url)


class FragmentCache:
    """Each entry's rendered Atom, RSS and JSON Feed form, reused by every document
    showing it.

    feedgen costs about 130 µs an entry, so after one edit re-rendering the
    site, topic and author feeds of the edited article from scratch would
    redo hundreds of unchanged entries. Instead a document is feedgen's
    rendering of it *without* entries (the shell), with each entry's
    serialisation spliced in before the shell's closing tag, where feedgen
    puts entries (after all feed-level elements and extensions). An entry's
    serialisation is cut from feedgen's rendering of a one-entry document, so
    it is byte for byte what feedgen writes in a full one (tests check that).
    Bounded (least recently used out) in bytes, a share of the worker's
    cache bound, so memory stays proportional to what is served, not to the
    corpus or to how many versions of it have come and gone.
    """

    #: Where a document's entries end: its shell (no entries) ends so, and they go before it.
    _CLOSE = {"atom": b"</feed>\n", "rss": b"  </channel>\n</rss>\n", "json": b"]}"}
    _OPEN = {"atom": b"\n  <entry>", "rss": b"\n    <item>"}
    #: Between two entries: JSON Feed's items are array members ("items" is the last key).
    _JOIN = {"json": b","}
    #: The formats whose documents are assembled from entry fragments.
    FORMATS = frozenset(_CLOSE)

    #: Held per fragment besides its bytes: key tuple, its strings' share, the
    #: OrderedDict node (tracemalloc: about 0.2 KiB, checked by a test).
    OVERHEAD = 384

    def __init__(self, max_entries: int = 1 << 30, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[bytes | Entry, str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()  # request threads share it
        self.bytes = 0  # fragments' bytes plus OVERHEAD each: what the bound is on
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def uncached(self, entries: Iterable[Entry], fmt: str, base_url: str) -> list[Entry]:
        """The entries whose ``fmt`` fragment must be rendered for ``base_url`` (all of
        them for a format not assembled from fragments): whose content is needed."""
        if fmt not in self.FORMATS:
            return list(entries)
        with self._lock:
            return [e for e in entries if (e.version or e, fmt, base_url) not in self._items]

    def forget(self, versions: set[bytes]) -> None:
        """Drop the fragments of these entry versions (superseded: never shown again)."""
        with self._lock:
            for key in [k for k in self._items if k[0] in versions]:
                self.bytes -= len(self._items.pop(key)) + self.OVERHEAD

    def assemble(self, doc: FeedDocument, fmt: str, site: Site, base_url: str) -> bytes:
        shell = _RENDERERS[fmt](replace(doc, entries=()), site, base_url)
        close = self._CLOSE[fmt]
        if not shell.endswith(close):  # never expected; fall back to the reference path
            return _RENDERERS[fmt](doc, site, base_url)
        entries = self._JOIN.get(fmt, b"").join(
            [self._fragment(entry, fmt, site, base_url) for entry in doc.entries])
        return b"".join((shell[: -len(close)], entries, close))

    def _fragment(self, entry: Entry, fmt: str, site: Site, base_url: str) -> bytes:
        def make() -> bytes:
            if fmt == "json":  # an item's serialisation is the same alone or in its array
                return _json_bytes(_json_item(entry, base_url))
            single = FeedDocument(title="x", subtitle="x", path="/feed", html_path="/",
                                  entries=(entry,), updated=entry.updated)
            body = _RENDERERS[fmt](single, site, base_url)
            start = body.rindex(self._OPEN[fmt]) + 1
            return body[start : len(body) - len(self._CLOSE[fmt])]

        return self.remember(entry, fmt, base_url, make)

    def remember(self, entry: Entry, kind: str, base_url: str,
                 make: Callable[[], bytes]) -> bytes:
        """The fragment of ``entry`` of this kind (a feed format, or another
        representation's, such as the HTML preview's list item): cached, else
        ``make()``, kept within the bounds."""
        # entry.version digests everything an entry shows: a cheap key (hashing
        # the whole frozen Entry cost 3.7 ms a refresh); hand-made entries have none.
        key = (entry.version or entry, kind, base_url)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self.hits += 1
                self._items.move_to_end(key)
                return found
            self.misses += 1
        fragment = make()
        with self._lock:
            if key not in self._items:
                self._items[key] = fragment
                self.bytes += len(fragment) + self.OVERHEAD
            while self._items and (len(self._items) > self.max_entries
                                   or self.bytes > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped) + self.OVERHEAD
        return fragment


def render_opml(
    feeds: Sequence[tuple[str, str, str]], site: Site, base_url: str, updated: datetime
) -> bytes:
    """An OPML 2.0 subscription list of the Atom URL of each feed.

    ``feeds`` are ``(title, feed path without extension, html path)``.
    ``type="rss"`` is OPML's word for any feed. Dates come from ``updated``,
    never from the clock, so the list is as cacheable as the feeds. OPML 2.0
    lets ``text`` hold encoded HTML, so readers may render it: it is given as
    HTML (:func:`_as_html`); ``title`` and the head's ``title`` are plain text.
    """
    opml = etree.Element("opml", version="2.0")
    head = etree.SubElement(opml, "head")
    _text_elem(head, "title", site.title)
    _text_elem(head, "dateCreated", _rfc822(updated))
    _text_elem(head, "dateModified", _rfc822(updated))
    _text_elem(head, "docs", OPML_DOCS)
    body = etree.SubElement(opml, "body")
    for title, feed_path, html_path in feeds:
        etree.SubElement(
            body,
            "outline",
            type="rss",
            text=_as_html(title),
            title=title,
            xmlUrl=base_url + urls.with_format(feed_path, "atom"),
            htmlUrl=base_url + html_path,
        )
    return etree.tostring(opml, encoding="UTF-8", xml_declaration=True, pretty_print=True)


# --- shared helpers ---------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive value is taken to be UTC already.

    Converting makes every format show one offset, and treating naive values as
    UTC (rather than local time) keeps output independent of the host's zone.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _rfc3339(value: datetime) -> str:
    """RFC 3339 with ``Z``, as JSON Feed asks."""
    return _utc(value).isoformat().replace("+00:00", "Z")


def _rfc822(value: datetime) -> str:
    """RFC 822 date (OPML 2.0), locale-independent unlike ``strftime('%a')``."""
    return format_datetime(_utc(value))


def _text_elem(parent: etree._Element, tag: str, text: str) -> etree._Element:
    """Append ``<tag>text</tag>`` to parent; lxml's SubElement takes no text."""
    elem = etree.SubElement(parent, tag)
    elem.text = text
    return elem


def _as_html(text: str) -> str:
    """Plain text as the HTML that displays it, for fields a format defines as HTML.

    Only ``&``, ``<`` and ``>``: quotes mean nothing in HTML text, and the
    browser view (static/feed.xsl) undoes exactly these three for RSS.
    """
    return escape(text, quote=False)


def _is_http_url(value: str) -> bool:
    """Whether an entry id is a URL a reader could open (RSS ``isPermaLink``)."""
    return value.startswith(("http://", "https://"))


def _article_url(entry: Entry, base_url: str) -> str:
    return base_url + urls.article(entry.slug)


def _author_url(slug: str, base_url: str) -> str | None:
    return base_url + urls.author(slug) if slug else None


def _topic_scheme(base_url: str) -> str:
    return base_url + urls.TOPICS


def _feed_links(doc: FeedDocument, fmt: str, base_url: str) -> list[dict[str, str]]:
    """Feed-level links for Atom/RSS: self, doc.links, hubs, then the HTML page.

    The alternate HTML link goes last on purpose: feedgen uses the *last* link
    added as the RSS channel ``<link>``, which must be the page, not the feed.
    Links of ``doc.links`` point at the same format as the document itself.
    """
    links = [{"href": base_url + urls.with_format(doc.path, fmt), "rel": "self",
              "type": _LINK_TYPES[fmt]}]
    links += [
        {"href": base_url + urls.with_format(path, fmt), "rel": rel, "type": _LINK_TYPES[fmt]}
        for rel, path in doc.links
    ]
    links += [{"href": hub, "rel": "hub"} for hub in doc.hubs]
    links.append({"href": base_url + doc.html_path, "rel": "alternate", "type": "text/html"})
    return links


# --- Atom and RSS (feedgen) -------------------------------------------------


class _FeedsvcExtension(BaseExtension):
    """What feedgen cannot write itself.

    * RFC 5005 ``<fh:archive/>`` on archive documents (Atom feed, RSS channel):
      tells readers the document is fixed and will not change.
    * RSS ``<atom:link>`` elements other than ``rel=self`` (feedgen writes only
      that one): hubs, ``prev-archive``, ``current``...

    An extension rather than lxml post-processing: it runs inside feedgen's own
    tree building, so there is one serialisation and no re-parse.
    """

    def __init__(self) -> None:
        self.archive = False
        self.rss_links: list[dict[str, str]] = []

    def extend_ns(self) -> dict[str, str]:
        # Declare fh only where it is used, so current feeds stay uncluttered.
        return {"fh": FH_NS} if self.archive else {}

    def extend_atom(self, atom_feed: etree._Element) -> etree._Element:
        _mark_text(atom_feed, ("title", "subtitle"))
        if self.archive:
            etree.SubElement(atom_feed, f"{{{FH_NS}}}archive")
        return atom_feed

    def extend_rss(self, rss_feed: etree._Element) -> etree._Element:
        channel = rss_feed[0]
        for link in self.rss_links:
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", link)
        if self.archive:
            etree.SubElement(channel, f"{{{FH_NS}}}archive")
        return rss_feed


def _mark_text(parent: etree._Element, tags: tuple[str, ...]) -> None:
    """Say ``type="text"`` on Atom text constructs feedgen writes without a type.

    Absent means text too (RFC 4287 3.1.1), but saying it leaves no doubt
    to a reader that guesses HTML from the content.
    """
    for tag in tags:
        for elem in parent.iterchildren(tag):  # feedgen builds un-namespaced tags
            if elem.get("type") is None:
                elem.set("type", "text")


class _FeedsvcEntryExtension(BaseEntryExtension):
    """Puts back ``rel``/``type`` on an Atom entry's link; marks its title as text.

    feedgen 1.0.0 drops every attribute but ``href`` from entry links (a
    shadowed loop variable in ``FeedEntry.atom_entry``). A bare link still
    means rel=alternate (RFC 4287 4.2.7.2), but the explicit form is clearer.
    The only link an entry gets here is its article page.
    """

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        _mark_text(entry, ("title",))
        for link in entry.iterchildren("link"):  # feedgen builds un-namespaced tags
            if link.get("rel") is None:
                link.set("rel", "alternate")
                link.set("type", "text/html")
        return entry


def _feed_generator(doc: FeedDocument, fmt: str, site: Site, base_url: str) -> FeedGenerator:
    """A FeedGenerator holding ``doc`` for ``fmt`` ("atom" or "rss").

    Built per format because the self link differs, and every date feedgen
    would default to "now" (updated, lastBuildDate, entry updated) is set.
    """
    fg = FeedGenerator()
    fg.register_extension(_EXT_NAME, _FeedsvcExtension, _FeedsvcEntryExtension, atom=True, rss=True)
    rss = fmt == "rss"
    if rss:
        # dc:creator carries author names; RSS <author> is for e-mail addresses.
        fg.load_extension("dc", atom=False, rss=True)

    updated = _utc(doc.updated)
    fg.id(base_url + doc.html_path)
    html = _as_html if rss else str  # RSS title and description are HTML
    fg.title(html(doc.title))
    # RSS requires a non-empty channel description; fall back to the title.
    fg.subtitle(html(doc.subtitle or doc.title))
    fg.updated(updated)  # Atom <updated> and RSS <lastBuildDate>
    fg.pubDate(updated)
    fg.language(site.language)
    # A feed-level author satisfies RFC 4287 even if an entry has no byline.
    fg.author(name=site.title)
    fg.generator(GENERATOR, version=__version__, uri=base_url + "/")
    fg.docs(RSS_DOCS)

    links = _feed_links(doc, fmt, base_url)
    fg.link(links)
    ext: _FeedsvcExtension = getattr(fg, _EXT_NAME)
    ext.archive = doc.archive
    if rss:
        ext.rss_links = [link for link in links if link["rel"] not in ("self", "alternate")]

    for entry in doc.entries:
        # feedgen prepends by default; doc.entries is already newest first.
        _fill_entry(fg.add_entry(order="append"), entry, base_url, dc=rss)
    return fg


def _fill_entry(fe: FeedEntry, entry: Entry, base_url: str, *, dc: bool) -> None:
    """Copy one Entry into a feedgen entry, for RSS when ``dc`` (dc:creator) is set.

    RSS ``title`` and ``description`` are HTML, so their text goes in through
    :func:`_as_html`; author names (Atom ``name``, ``dc:creator``) and
    categories are plain text in both formats, as are Atom title and summary.
    """
    html = _as_html if dc else str
    # guid() also sets atom:id; URL ids are links a reader may open, tag: ids not.
    fe.guid(entry.id, permalink=_is_http_url(entry.id))
    fe.title(html(entry.title))
    fe.link(href=_article_url(entry, base_url), rel="alternate", type="text/html")
    fe.published(_utc(entry.published))  # also RSS pubDate
    fe.updated(_utc(entry.updated))
    for author in entry.authors:
        person = {"name": author.name}
        uri = _author_url(author.slug, base_url)
        if uri:
            person["uri"] = uri
        fe.author(person)  # no e-mail given, so feedgen writes no RSS <author>
        if dc:
            fe.dc.dc_creator(author.name)
    if entry.summary:
        # Also RSS <description>; without it feedgen puts the content there.
        fe.summary(html(entry.summary), type="text")
    fe.content(entry.content_html, type="html")  # RSS content:encoded
    scheme = _topic_scheme(base_url)
    for topic in entry.topics:
        fe.category(term=topic.slug, label=topic.name or topic.slug, scheme=scheme)


#: Where the browser view of Atom and RSS feeds lives, under the site's base URL.
STYLESHEET_PATH = urls.static("feed.xsl")


def _with_stylesheet(xml: bytes, base_url: str) -> bytes:
    """Insert ``<?xml-stylesheet?>`` right after feedgen's XML declaration.

    Browsers that apply XSLT show the feed as a page (feedsvc/static/feed.xsl);
    feed readers and validators ignore processing instructions. Inserted into
    the bytes because lxml, under feedgen, cannot put a node before the root.
    """
    declaration, newline, rest = xml.partition(b"\n")
    if not declaration.startswith(b"<?xml ") or not newline:
        raise ValueError("expected feedgen output to start with an XML declaration")
    # Percent-encoding leaves no "?>" to end the instruction early, whatever a
    # request's Host header held; escape() then makes it a valid pseudo-attribute.
    url = quote(base_url + STYLESHEET_PATH, safe=":/@!$&'()*+,;=-._~%[]")
    href = escape(url, quote=True).encode("ascii")
    return b"".join((declaration, b"\n<?xml-stylesheet type=\"text/xsl\" href=\"", href,
                     b"\"?>\n", rest))


def _render_atom(doc: FeedDocument, site: Site, base_url: str) -> bytes:
    return _with_stylesheet(
        _feed_generator(doc, "atom", site, base_url).atom_str(pretty=True), base_url
    )


def _render_rss(doc: FeedDocument, site: Site, base_url: str) -> bytes:
    return _with_stylesheet(
        _hex_references(_feed_generator(doc, "rss", site, base_url).rss_str(pretty=True)),
        base_url,
    )


_HEX_REFERENCES = {b"&amp;": b"&#x26;", b"&lt;": b"&#x3C;", b"&gt;": b"&#x3E;"}


def _hex_references(xml: bytes) -> bytes:
    """Write ``&``, ``<`` and ``>`` as ``&#x26;``, ``&#x3C;``, ``&#x3E;`` in RSS.

    The RSS Best Practices Profile (Character Data) asks for hexadecimal
    references, the form "that works in the widest number of aggregators",
    and the W3C validator warns (ContainsHTML) on an HTML-escaped title such
    as ``AT&amp;T`` written with named entities. The XML is the same either
    way; feedgen (lxml) only writes named ones, hence the byte replacement
    (the bundled site feed grows 3.5%, 0.4% gzipped).
    """
    for named, hexadecimal in _HEX_REFERENCES.items():
        xml = xml.replace(named, hexadecimal)
    return xml


# --- JSON Feed 1.1 ----------------------------------------------------------


def _json_item(entry: Entry, base_url: str) -> dict[str, Any]:
    """One JSON Feed item; empty optional fields are left out, not emitted empty."""
    item: dict[str, Any] = {
        "id": entry.id,
        "url": _article_url(entry, base_url),
        "title": entry.title,
    }
    if entry.summary:
        item["summary"] = entry.summary
    item["content_html"] = entry.content_html
    item["date_published"] = _rfc3339(entry.published)
    item["date_modified"] = _rfc3339(entry.updated)
    authors = []
    for author in entry.authors:
        person = {"name": author.name}
        url = _author_url(author.slug, base_url)
        if url:
            person["url"] = url
        authors.append(person)
    if authors:
        item["authors"] = authors
    if entry.topics:
        item["tags"] = [topic.name or topic.slug for topic in entry.topics]
    return item


def _render_json(doc: FeedDocument, site: Site, base_url: str) -> bytes:
    """JSON Feed 1.1, keys in a fixed order so the bytes are stable."""
    feed: dict[str, Any] = {
        "version": JSONFEED_VERSION,
        "title": doc.title,
        "home_page_url": base_url + doc.html_path,
        "feed_url": base_url + urls.with_format(doc.path, "json"),
    }
    if doc.subtitle:
        feed["description"] = doc.subtitle
    feed["language"] = site.language
    feed["authors"] = [{"name": site.title}]
    if doc.hubs:
        feed["hubs"] = [{"type": "WebSub", "url": hub} for hub in doc.hubs]
    older = next((path for rel, path in doc.links if rel == "prev-archive"), None)
    if older is not None:
        # JSON Feed's next_url pages towards older items, as RFC 5005 prev-archive does.
        feed["next_url"] = base_url + urls.with_format(older, "json")
    if doc.archive:
        feed["_feedsvc"] = {"archive": True}
    feed["items"] = [_json_item(entry, base_url) for entry in doc.entries]
    return _json_bytes(feed)


def _json_bytes(value: Any) -> bytes:
    """JSON Feed's serialisation: compact, UTF-8, keys in the order given."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- the built-in formats ----------------------------------------------------

register_format(Format("atom", "application/atom+xml", _render_atom, "Atom"))
register_format(Format("rss", "application/rss+xml", _render_rss, "RSS"))
register_format(Format("json", "application/feed+json", _render_json, "JSON Feed"))

#: Format name -> Content-Type, from the registry.
CONTENT_TYPES = content_types()
#: Media types of the feed documents themselves, for ``<link type=...>``.
_LINK_TYPES = media_types()
_RENDERERS: dict[str, Callable[[FeedDocument, Site, str], bytes]] = {
    fmt.name: fmt.renderer for fmt in formats()
}
