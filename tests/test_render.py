"""Tests of feedsvc.render, read back with real parsers (lxml, RELAX NG, feedparser).

Entries are built by hand so each test states exactly what goes in; the checks
are on what a feed reader would see, not on feedgen's internals.
"""

from __future__ import annotations

import html
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import feedgen.entry
import feedgen.feed
import feedparser
import pytest
from lxml import etree

from feedsvc import __version__
from feedsvc.model import FEED_FORMATS, Article, Author, Entry, FeedDocument, Site, TopicRef
from feedsvc.render import CONTENT_TYPES, render_feed, render_opml
from feedsvc.text import clean_xml_text
from tests.feedcheck import plain_text

BASE = "https://news.example.org"
SITE = Site(title="Example News", subtitle="News from the example", language="en")
SCHEMA_PATH = Path(__file__).parent / "schemas" / "atom.rng"

NS = {
    "a": "http://www.w3.org/2005/Atom",
    "fh": "http://purl.org/syndication/history/1.0",
    "dc": "http://purl.org/dc/elements/1.1/",
    "content": "http://purl.org/rss/1.0/modules/content/",
}

NASTY = '<script>alert(1)</script> & ]]> "quotes"'
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


# --- builders ----------------------------------------------------------------


def topic(slug: str, name: str) -> TopicRef:
    return TopicRef(slug=slug, name=name, kind="story")


def make_entry(
    n: int,
    title: str,
    *,
    authors: tuple[Author, ...] = (Author("Ann Lee", "ann-lee"),),
    topics: tuple[TopicRef, ...] = (),
    summary: str = "A summary.",
    content_html: str | None = None,
    entry_id: str | None = None,
    published: datetime | None = None,
    updated: datetime | None = None,
) -> Entry:
    """An Entry with plausible defaults; ``n`` keeps ids, slugs and dates apart."""
    published = published or T0 + timedelta(days=n)
    article = Article(
        path=f"article-{n}.txt",
        title=title,
        authors=authors,
        topic_line=None,
        topics=topics,
        summary=summary,
        content_html=content_html if content_html is not None else f"<p>Body {n}.</p>",
        content_hash=f"hash{n}",
    )
    return Entry(
        article=article,
        id=entry_id or f"tag:news.example.org,2024:{n}",
        slug=f"article-{n}",
        published=published,
        updated=updated or published + timedelta(hours=1),
        topics=topics,
    )


def two_authors() -> Entry:
    return make_entry(
        3,
        "Two bylines",
        authors=(Author("Ann Lee", "ann-lee"), Author("Bo Chen", "bo-chen")),
        topics=(topic("ukraine", "Ukraine"), topic("politics", "Politics")),
    )


def non_ascii() -> Entry:
    text = "«Привет», сказал он — “你好” ‘world’"
    return make_entry(
        2,
        "Киев и 北京: “quotes” ‘too’",
        authors=(Author("Анна Петрова", "anna-petrova"),),
        topics=(topic("kyiv", "Київ"), topic("beijing", "北京")),
        summary=text,
        content_html=f"<p>{html.escape(text, quote=False)}</p>",
    )


def nasty() -> Entry:
    """Markup-looking text, escaped as the article parser escapes it."""
    return make_entry(
        1,
        NASTY,
        summary=NASTY,
        content_html=f"<p>{html.escape(NASTY)}</p>",
        entry_id="https://news.example.org/ids/1",
        topics=(topic("security", "Security & Safety"),),
    )


ENTRIES = (two_authors(), non_ascii(), nasty())  # newest first, as the feed layer gives
UPDATED = max(e.updated for e in ENTRIES)


def current_doc(entries: tuple[Entry, ...] = ENTRIES) -> FeedDocument:
    return FeedDocument(
        title="All articles",
        subtitle="Everything, newest first",
        path="/feed",
        html_path="/",
        entries=entries,
        updated=UPDATED,
        links=(("prev-archive", "/archive/2/feed"),),
        hubs=("https://hub.example.net/",),
    )


def archive_doc() -> FeedDocument:
    return FeedDocument(
        title="All articles (archive 2)",
        subtitle="Older articles",
        path="/archive/2/feed",
        html_path="/",
        entries=ENTRIES[1:],
        updated=ENTRIES[1].updated,
        archive=True,
        links=(("current", "/feed"), ("prev-archive", "/archive/1/feed")),
    )


def empty_doc() -> FeedDocument:
    return FeedDocument(
        title="Topic: nothing yet",
        subtitle="",
        path="/topics/empty/feed",
        html_path="/topics/empty/",
        entries=(),
        updated=datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def ALL_DOCS() -> list[FeedDocument]:  # noqa: N802 - reads as a constant at call sites
    return [current_doc(), archive_doc(), empty_doc()]


DOC_IDS = ["current", "archive", "empty"]


# --- parse helpers -------------------------------------------------------------


@pytest.fixture(scope="module")
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA_PATH)))


def xml(doc: FeedDocument, fmt: str, base_url: str = BASE) -> etree._Element:
    return etree.fromstring(render_feed(doc, fmt, SITE, base_url))


def parsed(doc: FeedDocument, fmt: str) -> feedparser.FeedParserDict:
    result = feedparser.parse(render_feed(doc, fmt, SITE, BASE))
    assert not result.bozo, result.get("bozo_exception")
    return result


def links_by_rel(parent: etree._Element, tag: str = "a:link") -> dict[str, etree._Element]:
    return {link.get("rel", "alternate"): link for link in parent.findall(tag, NS)}


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- API ---------------------------------------------------------------------------


def test_content_types_are_exact() -> None:
    assert CONTENT_TYPES == {
        "atom": "application/atom+xml; charset=utf-8",
        "rss": "application/rss+xml; charset=utf-8",
        "json": "application/feed+json; charset=utf-8",
    }
    assert set(CONTENT_TYPES) == set(FEED_FORMATS)


@pytest.mark.parametrize("fmt", ["xml", "ATOM", "", "html"])
def test_unknown_format_is_value_error(fmt: str) -> None:
    with pytest.raises(ValueError, match="format"):
        render_feed(current_doc(), fmt, SITE, BASE)


# --- Atom ----------------------------------------------------------------------------


@pytest.mark.parametrize("doc", ALL_DOCS(), ids=DOC_IDS)
def test_atom_is_schema_valid(doc: FeedDocument, atom_schema: etree.RelaxNG) -> None:
    atom_schema.assertValid(xml(doc, "atom"))


def test_atom_feed_metadata() -> None:
    feed = xml(current_doc(), "atom")
    assert feed.tag == f"{{{NS['a']}}}feed"
    assert feed.findtext("a:id", namespaces=NS) == BASE + "/"
    assert feed.findtext("a:title", namespaces=NS) == "All articles"
    assert feed.findtext("a:subtitle", namespaces=NS) == "Everything, newest first"
    assert iso(feed.findtext("a:updated", namespaces=NS)) == UPDATED
    assert feed.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert feed.findtext("a:author/a:name", namespaces=NS) == SITE.title
    generator = feed.find("a:generator", NS)
    assert generator.text == "feedsvc"
    assert generator.get("version") == __version__
    assert generator.get("uri")


def test_atom_feed_links() -> None:
    links = links_by_rel(xml(current_doc(), "atom"))
    assert links["self"].get("href") == BASE + "/feed.atom"
    assert links["self"].get("type") == "application/atom+xml"
    assert links["alternate"].get("href") == BASE + "/"
    assert links["alternate"].get("type") == "text/html"
    assert links["hub"].get("href") == "https://hub.example.net/"
    assert links["prev-archive"].get("href") == BASE + "/archive/2/feed.atom"


def test_atom_archive_links_and_marker() -> None:
    feed = xml(archive_doc(), "atom")
    links = links_by_rel(feed)
    assert links["self"].get("href") == BASE + "/archive/2/feed.atom"
    assert links["current"].get("href") == BASE + "/feed.atom"
    assert links["prev-archive"].get("href") == BASE + "/archive/1/feed.atom"
    assert "hub" not in links
    assert len(feed.findall("fh:archive", NS)) == 1


def test_atom_no_archive_marker_on_current_feed() -> None:
    body = render_feed(current_doc(), "atom", SITE, BASE)
    assert etree.fromstring(body).find("fh:archive", NS) is None
    assert b"purl.org/syndication/history" not in body


def test_atom_entries_keep_given_order() -> None:
    feed = xml(current_doc(), "atom")
    ids = [entry.findtext("a:id", namespaces=NS) for entry in feed.findall("a:entry", NS)]
    assert ids == [e.id for e in ENTRIES]
    reversed_doc = current_doc(tuple(reversed(ENTRIES)))
    feed = xml(reversed_doc, "atom")
    ids = [entry.findtext("a:id", namespaces=NS) for entry in feed.findall("a:entry", NS)]
    assert ids == [e.id for e in reversed(ENTRIES)]


def test_atom_entry_fields() -> None:
    feed = xml(current_doc(), "atom")
    node = feed.find("a:entry", NS)
    entry = ENTRIES[0]
    assert node.findtext("a:title", namespaces=NS) == entry.title
    assert iso(node.findtext("a:published", namespaces=NS)) == entry.published
    assert iso(node.findtext("a:updated", namespaces=NS)) == entry.updated
    link = node.find("a:link", NS)
    assert link.get("href") == f"{BASE}/articles/{entry.slug}"
    assert link.get("rel") == "alternate"
    authors = [
        (a.findtext("a:name", namespaces=NS), a.findtext("a:uri", namespaces=NS))
        for a in node.findall("a:author", NS)
    ]
    assert authors == [
        ("Ann Lee", f"{BASE}/authors/ann-lee/"),
        ("Bo Chen", f"{BASE}/authors/bo-chen/"),
    ]
    cats = [
        (c.get("term"), c.get("label"), c.get("scheme")) for c in node.findall("a:category", NS)
    ]
    assert cats == [
        ("ukraine", "Ukraine", f"{BASE}/topics/"),
        ("politics", "Politics", f"{BASE}/topics/"),
    ]
    assert node.find("a:summary", NS).get("type") == "text"
    content = node.find("a:content", NS)
    assert content.get("type") == "html"
    assert content.text == entry.content_html


def test_atom_escapes_markup_in_text() -> None:
    body = render_feed(current_doc(), "atom", SITE, BASE)
    assert b"<script>" not in body
    node = etree.fromstring(body).findall("a:entry", NS)[2]
    assert node.findtext("a:title", namespaces=NS) == NASTY
    assert node.findtext("a:summary", namespaces=NS) == NASTY
    assert node.findtext("a:content", namespaces=NS) == f"<p>{html.escape(NASTY)}</p>"


def test_atom_feedparser_reads_everything() -> None:
    result = parsed(current_doc(), "atom")
    assert result.version == "atom10"
    assert result.feed.title == "All articles"
    assert len(result.entries) == len(ENTRIES)
    for got, entry in zip(result.entries, ENTRIES, strict=True):
        assert got.title == entry.title
        assert got.id == entry.id
        assert got.link == f"{BASE}/articles/{entry.slug}"
        assert [a.name for a in got.authors] == [a.name for a in entry.authors]
        assert [a.href for a in got.authors] == [f"{BASE}/authors/{a.slug}/" for a in entry.authors]
        assert [(t.term, t.label) for t in got.tags] == [(t.slug, t.name) for t in entry.topics]
        assert datetime(*got.published_parsed[:6], tzinfo=UTC) == entry.published
        assert datetime(*got.updated_parsed[:6], tzinfo=UTC) == entry.updated
        assert got.summary == entry.summary
        # The html content round-trips (feedparser's sanitiser has nothing to strip).
        assert got.content[0].type == "text/html"
        assert got.content[0].value == entry.content_html


def test_atom_feedparser_sees_feed_links() -> None:
    result = parsed(current_doc(), "atom")
    rels = {(link.rel, link.href) for link in result.feed.links}
    assert ("self", BASE + "/feed.atom") in rels
    assert ("alternate", BASE + "/") in rels
    assert ("hub", "https://hub.example.net/") in rels
    assert result.feed.link == BASE + "/"


# --- RSS -------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", ALL_DOCS(), ids=DOC_IDS)
def test_rss_is_well_formed_rss2(doc: FeedDocument) -> None:
    root = xml(doc, "rss")
    assert root.tag == "rss"
    assert root.get("version") == "2.0"
    channel = root.find("channel")
    for required in ("title", "link", "description"):
        assert channel.findtext(required), required


def test_rss_channel() -> None:
    channel = xml(current_doc(), "rss").find("channel")
    assert channel.findtext("link") == BASE + "/"
    assert channel.findtext("title") == "All articles"
    assert channel.findtext("description") == "Everything, newest first"
    assert channel.findtext("language") == "en"
    assert channel.findtext("generator") == "feedsvc"
    assert channel.findtext("docs")
    assert channel.findtext("lastBuildDate") == format_datetime(UPDATED)
    assert channel.findtext("pubDate") == format_datetime(UPDATED)
    assert parsedate_to_datetime(channel.findtext("lastBuildDate")) == UPDATED


def test_rss_atom_links() -> None:
    channel = xml(current_doc(), "rss").find("channel")
    links = links_by_rel(channel)
    assert links["self"].get("href") == BASE + "/feed.rss"
    assert links["self"].get("type") == "application/rss+xml"
    assert links["hub"].get("href") == "https://hub.example.net/"
    assert links["prev-archive"].get("href") == BASE + "/archive/2/feed.rss"
    assert channel.find("fh:archive", NS) is None


def test_rss_archive() -> None:
    channel = xml(archive_doc(), "rss").find("channel")
    links = links_by_rel(channel)
    assert links["self"].get("href") == BASE + "/archive/2/feed.rss"
    assert links["current"].get("href") == BASE + "/feed.rss"
    assert channel.findtext("link") == BASE + "/"
    assert len(channel.findall("fh:archive", NS)) == 1


def test_rss_items() -> None:
    items = xml(current_doc(), "rss").find("channel").findall("item")
    assert [i.findtext("guid") for i in items] == [e.id for e in ENTRIES]
    for item, entry in zip(items, ENTRIES, strict=True):
        # title and description are HTML in RSS: the text, HTML-escaped
        assert item.findtext("title") == html.escape(entry.title, quote=False)
        assert item.findtext("link") == f"{BASE}/articles/{entry.slug}"
        assert item.findtext("description") == html.escape(entry.summary, quote=False)
        assert item.findtext("content:encoded", namespaces=NS) == entry.content_html
        assert item.findtext("pubDate") == format_datetime(entry.published)
        assert item.find("author") is None
        assert [c.text for c in item.findall("dc:creator", NS)] == [a.name for a in entry.authors]
        cats = [(c.text, c.get("domain")) for c in item.findall("category")]
        assert cats == [(t.name, f"{BASE}/topics/") for t in entry.topics]


def test_rss_guid_permalink_only_for_http_ids() -> None:
    items = xml(current_doc(), "rss").find("channel").findall("item")
    flags = {i.findtext("guid"): i.find("guid").get("isPermaLink") for i in items}
    assert flags == {
        "tag:news.example.org,2024:3": "false",
        "tag:news.example.org,2024:2": "false",
        "https://news.example.org/ids/1": "true",
    }


def test_rss_feedparser_reads_everything() -> None:
    result = parsed(current_doc(), "rss")
    assert result.version == "rss20"
    assert result.feed.link == BASE + "/"
    assert len(result.entries) == len(ENTRIES)
    for got, entry in zip(result.entries, ENTRIES, strict=True):
        assert plain_text(got, "title") == entry.title
        assert plain_text(got, "summary") == entry.summary
        assert got.id == entry.id
        assert got.link == f"{BASE}/articles/{entry.slug}"
        assert [a.name for a in got.authors] == [a.name for a in entry.authors]
        assert [t.term for t in got.tags] == [t.name for t in entry.topics]
        assert datetime(*got.published_parsed[:6], tzinfo=UTC) == entry.published
        assert got.content[0].value == entry.content_html


# --- JSON Feed -------------------------------------------------------------------------


def load_json(doc: FeedDocument) -> dict:
    return json.loads(render_feed(doc, "json", SITE, BASE))


@pytest.mark.parametrize("doc", ALL_DOCS(), ids=DOC_IDS)
def test_json_required_fields(doc: FeedDocument) -> None:
    feed = load_json(doc)
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] == doc.title
    assert isinstance(feed["items"], list)
    assert len(feed["items"]) == len(doc.entries)
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert "content_html" in item or "content_text" in item


def test_json_feed_fields() -> None:
    feed = load_json(current_doc())
    assert feed["home_page_url"] == BASE + "/"
    assert feed["feed_url"] == BASE + "/feed.json"
    assert feed["description"] == "Everything, newest first"
    assert feed["language"] == "en"
    assert feed["authors"] == [{"name": SITE.title}]
    assert feed["hubs"] == [{"type": "WebSub", "url": "https://hub.example.net/"}]
    assert feed["next_url"] == BASE + "/archive/2/feed.json"
    assert "_feedsvc" not in feed


def test_json_items() -> None:
    items = load_json(current_doc())["items"]
    assert [i["id"] for i in items] == [e.id for e in ENTRIES]
    for item, entry in zip(items, ENTRIES, strict=True):
        assert item["url"] == f"{BASE}/articles/{entry.slug}"
        assert item["title"] == entry.title
        assert item["summary"] == entry.summary
        assert item["content_html"] == entry.content_html
        assert iso(item["date_published"]) == entry.published
        assert iso(item["date_modified"]) == entry.updated
        assert item["date_published"].endswith(("Z", "+00:00"))
        assert item["authors"] == [
            {"name": a.name, "url": f"{BASE}/authors/{a.slug}/"} for a in entry.authors
        ]
        assert item["tags"] == [t.name for t in entry.topics]


def test_json_archive() -> None:
    feed = load_json(archive_doc())
    assert feed["_feedsvc"] == {"archive": True}
    assert feed["next_url"] == BASE + "/archive/1/feed.json"
    assert feed["feed_url"] == BASE + "/archive/2/feed.json"
    assert "hubs" not in feed


def test_json_keeps_non_ascii_as_utf8() -> None:
    body = render_feed(current_doc(), "json", SITE, BASE)
    assert "Київ".encode() in body
    assert "北京".encode() in body
    assert b"\\u" not in body


# --- empty feeds -----------------------------------------------------------------------


def test_empty_feed_all_formats(atom_schema: etree.RelaxNG) -> None:
    doc = empty_doc()
    atom = xml(doc, "atom")
    atom_schema.assertValid(atom)
    assert atom.findall("a:entry", NS) == []
    assert iso(atom.findtext("a:updated", namespaces=NS)) == doc.updated
    channel = xml(doc, "rss").find("channel")
    assert channel.findall("item") == []
    assert channel.findtext("lastBuildDate") == format_datetime(doc.updated)
    assert channel.findtext("description")  # RSS needs one even with no subtitle
    assert parsed(doc, "atom").entries == []
    assert parsed(doc, "rss").entries == []
    feed = load_json(doc)
    assert feed["items"] == []
    assert "next_url" not in feed


# --- inputs at the edges ---------------------------------------------------------------


def test_base_url_with_path_prefix() -> None:
    base = "https://x.org/news"
    atom = xml(current_doc(), "atom", base)
    links = links_by_rel(atom)
    assert links["self"].get("href") == base + "/feed.atom"
    assert links["alternate"].get("href") == base + "/"
    assert atom.find("a:entry/a:link", NS).get("href") == base + "/articles/article-3"
    assert atom.find("a:entry/a:category", NS).get("scheme") == base + "/topics/"
    channel = xml(current_doc(), "rss", base).find("channel")
    assert channel.findtext("link") == base + "/"
    feed = json.loads(render_feed(current_doc(), "json", SITE, base))
    assert feed["feed_url"] == base + "/feed.json"


def test_cleaned_text_renders(atom_schema: etree.RelaxNG) -> None:
    """Control characters are removed upstream; what is left must render everywhere."""
    dirty = "Bell\x07 and null\x00 and \x1b escape"
    entry = make_entry(
        9,
        clean_xml_text(dirty),
        summary=clean_xml_text(dirty),
        content_html=f"<p>{html.escape(clean_xml_text(dirty))}</p>",
    )
    doc = current_doc((entry,))
    atom_schema.assertValid(xml(doc, "atom"))
    assert parsed(doc, "rss").entries[0].title == "Bell and null and  escape"
    assert load_json(doc)["items"][0]["title"] == "Bell and null and  escape"


def test_other_timezones_and_naive_dates_become_utc() -> None:
    kyiv = timezone(timedelta(hours=3))
    aware = make_entry(5, "Aware", published=datetime(2024, 6, 1, 15, 0, tzinfo=kyiv))
    naive = make_entry(6, "Naive", published=datetime(2024, 6, 2, 12, 0))
    doc = current_doc((naive, aware))
    items = load_json(doc)["items"]
    assert items[0]["date_published"] == "2024-06-02T12:00:00Z"
    assert items[1]["date_published"] == "2024-06-01T12:00:00Z"
    atom = xml(doc, "atom")
    published = [e.findtext("a:published", namespaces=NS) for e in atom.findall("a:entry", NS)]
    assert published == ["2024-06-02T12:00:00+00:00", "2024-06-01T12:00:00+00:00"]


def test_entry_without_summary_or_topics() -> None:
    entry = make_entry(7, "Bare", summary="", authors=())
    doc = current_doc((entry,))
    atom_entry = xml(doc, "atom").find("a:entry", NS)
    assert atom_entry.find("a:summary", NS) is None
    assert atom_entry.find("a:category", NS) is None
    # The feed-level author covers an entry without a byline (RFC 4287 4.1.1).
    assert parsed(doc, "atom").entries[0].content[0].value == entry.content_html
    item = load_json(doc)["items"][0]
    assert "summary" not in item and "tags" not in item and "authors" not in item


# --- determinism -------------------------------------------------------------------------


FROZEN = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)


class _ClockMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, datetime)  # feedgen type-checks the dates it is given


class _FrozenClock(metaclass=_ClockMeta):
    """Stands in for ``datetime`` inside feedgen, whose defaults read the clock."""

    @staticmethod
    def now(tz: object = None) -> datetime:
        return FROZEN


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedgen.feed, "datetime", _FrozenClock)
    monkeypatch.setattr(feedgen.entry, "datetime", _FrozenClock)
    # The patch must bite, or the tests below would pass vacuously.
    assert feedgen.feed.FeedGenerator().updated() == FROZEN


@pytest.mark.parametrize("fmt", FEED_FORMATS)
@pytest.mark.parametrize("doc", ALL_DOCS(), ids=DOC_IDS)
def test_output_ignores_the_clock(
    doc: FeedDocument, fmt: str, request: pytest.FixtureRequest
) -> None:
    first = render_feed(doc, fmt, SITE, BASE)
    request.getfixturevalue("frozen_clock")
    second = render_feed(doc, fmt, SITE, BASE)
    assert second == first
    assert b"1999" not in second


def test_opml_is_deterministic() -> None:
    feeds = [("All articles", "/feed", "/")]
    first = render_opml(feeds, SITE, BASE, UPDATED)
    time.sleep(1.1)  # OPML does not use feedgen; a real second must pass unnoticed
    assert render_opml(feeds, SITE, BASE, UPDATED) == first


# --- OPML ----------------------------------------------------------------------------------


def test_opml() -> None:
    feeds = [
        ("All articles", "/feed", "/"),
        ("Topic: Київ", "/topics/kyiv/feed", "/topics/kyiv/"),
        ("Author: Ann Lee & co", "/authors/ann-lee/feed", "/authors/ann-lee/"),
    ]
    updated = datetime(2024, 5, 3, 8, 0, tzinfo=UTC)
    root = etree.fromstring(render_opml(feeds, SITE, BASE, updated))
    assert root.tag == "opml"
    assert root.get("version") == "2.0"
    head = root.find("head")
    assert head.findtext("title") == SITE.title
    assert head.findtext("dateModified") == format_datetime(updated)
    assert head.findtext("dateCreated") == format_datetime(updated)
    outlines = root.findall("body/outline")
    assert len(outlines) == len(feeds)
    for outline, (title, path, html_path) in zip(outlines, feeds, strict=True):
        assert outline.get("type") == "rss"
        # OPML 2.0: text may hold encoded HTML, so it is given as HTML; title is text
        assert outline.get("text") == html.escape(title, quote=False)
        assert outline.get("title") == title
        assert outline.get("xmlUrl") == BASE + path + ".atom"
        assert outline.get("htmlUrl") == BASE + html_path


def test_opml_empty() -> None:
    root = etree.fromstring(render_opml([], SITE, BASE, UPDATED))
    assert root.findall("body/outline") == []
    assert root.find("body") is not None
