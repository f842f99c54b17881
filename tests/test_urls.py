"""The format registry, the URL layout and content negotiation, on their own and
through the app: one record a format and one spelling of each path."""

from __future__ import annotations

import pytest
from flask import Flask
from lxml import html

from feedsvc import formats, urls
from feedsvc.collection import SITE_FEED, FeedRef
from feedsvc.documents import archive_document, subscription_document
from feedsvc.fastpath import feed_map, parse_feed_url
from feedsvc.formats import FEED_FORMATS, Format, content_types, get_format, register_format
from feedsvc.http import wants_preview
from feedsvc.model import FeedDocument, Site
from feedsvc.render import CONTENT_TYPES
from tests.conftest import BASE_URL
from tests.feedcheck import check_atom

TOPIC = FeedRef("topic", "nato")
AUTHOR = FeedRef("author", "sara-wazowski")


def test_the_registry_holds_one_record_per_format_name() -> None:
    assert [f.name for f in formats.formats()] == list(FEED_FORMATS) == ["atom", "rss", "json"]
    assert content_types() == CONTENT_TYPES
    assert get_format("atom").media_type == "application/atom+xml"
    assert get_format("json").content_type == "application/feed+json; charset=utf-8"
    assert get_format("xml") is None
    with pytest.raises(ValueError, match="not in FormatName"):
        register_format(Format("xml", "application/xml",  # type: ignore[arg-type]
                               lambda d, s, b: b"", "XML"))
    with pytest.raises(ValueError, match="registered already"):
        register_format(Format("atom", "text/plain", lambda d, s, b: b"", "Atom"))


def test_paths_are_spelled_once() -> None:
    assert urls.feed(SITE_FEED, "atom") == "/feed.atom"
    assert urls.feed(TOPIC, "rss") == "/topics/nato/feed.rss"
    assert urls.feed(AUTHOR, "json", 3) == "/authors/sara-wazowski/archive/3/feed.json"
    assert urls.html_path(SITE_FEED) == "/" and urls.html_path(TOPIC) == "/topics/nato/"
    assert TOPIC.prefix == "/topics/nato" and AUTHOR.html_path == urls.author("sara-wazowski")
    assert urls.article("x") == "/articles/x" and urls.static("style.css") == "/static/style.css"


def test_documents_use_the_layout(app: Flask) -> None:
    publisher = app.extensions["feedsvc"]
    collection, site = publisher.collection, publisher.site
    doc = subscription_document(SITE_FEED, collection, site, 3)
    assert doc.path == urls.feed_path(SITE_FEED) and doc.html_path == urls.HOME
    assert doc.links == (("prev-archive", urls.feed_path(SITE_FEED, doc_count(app, 3))),)
    older = archive_document(TOPIC, collection, site, 1, 2)
    assert older.path == urls.feed_path(TOPIC, 2)
    assert ("current", urls.feed_path(TOPIC)) in older.links


def doc_count(app: Flask, size: int) -> int:
    total = len(app.extensions["feedsvc"].collection.entries)
    return -(-(total - size) // size)


@pytest.mark.parametrize("path, expected", [
    ("/feed.atom", (SITE_FEED, "atom", None)),
    ("/archive/12/feed.rss", (SITE_FEED, "rss", 12)),
    ("/topics/nato/feed.json", (TOPIC, "json", None)),
    ("/authors/sara-wazowski/archive/1/feed.atom", (AUTHOR, "atom", 1)),
    ("/feed.xml", None),
    ("/feed.atom/", None),
    ("/topics/feed.atom", None),
    ("/topics/a/b/feed.atom", None),
    ("/archive/0123456789/feed.atom", None),  # ten digits: more than an archive number
    ("/archive/x/feed.atom", None),
    ("/topics//nato/feed.atom", None),  # a redirect in werkzeug: Flask answers it
])
def test_fast_path_map_matches_exactly_the_feed_rules(path: str, expected) -> None:
    assert parse_feed_url(feed_map().bind("localhost"), path) == expected


def test_flask_and_the_fast_path_have_the_same_feed_rules(app: Flask) -> None:
    flask_rules = {r.rule for r in app.url_map.iter_rules() if r.rule.endswith("<fmt:fmt>")}
    assert flask_rules == {r.rule for r in feed_map().iter_rules()}
    assert flask_rules == {r.pattern for r in urls.FEED_RULES}
    pages = {r.endpoint.removeprefix("feeds."): r.rule for r in app.url_map.iter_rules()}
    for endpoint, pattern in urls.PAGE_RULES.items():
        assert pages[endpoint] == pattern


CHROME = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
          "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SAFARI = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("accept, preview", [
    (CHROME, True), (FIREFOX, True), (SAFARI, True),
    ("TEXT/HTML", True),
    ("text/html;q=0.1, */*", True),
    (None, False), ("", False), ("*/*", False), ("application/xml", False),
    ("text/*", False),  # names no text/html: a wildcard is not a browser's navigation
    ("text/html;q=0, */*", False),
    ("text/html, application/atom+xml", False),
    ("text/html, application/rss+xml;q=0.1", False),
    ("text/html, application/feed+json", False),
    ("application/atom+xml,application/rdf+xml,application/rss+xml,application/xml;q=0.9,"
     "text/xml;q=0.2,*/*;q=0.1", False),  # feedparser
    ("text/html, application/atom+xml;q=0", True),  # q=0: not that type
])
def test_wants_preview(accept: str | None, preview: bool) -> None:
    environ = {} if accept is None else {"HTTP_ACCEPT": accept}
    assert wants_preview(environ) is preview


def _plain_text(doc: FeedDocument, site: Site, base_url: str) -> bytes:
    lines = [doc.title, base_url + urls.with_format(doc.path, "txt")]
    lines += [f"{e.published:%Y-%m-%d} {e.title}" for e in doc.entries]
    return ("\n".join(lines) + "\n").encode()


def test_a_new_format_is_one_name_and_one_registration(monkeypatch: pytest.MonkeyPatch,
                                                       make_app, articles_dir) -> None:
    """What README "Adding an output format" says: FormatName plus register_format.

    The test stands in for the Literal edit by extending FEED_FORMATS; every
    route, the fast path, pages, archives and the preview choice follow.
    """
    monkeypatch.setattr(formats, "FEED_FORMATS", (*FEED_FORMATS, "txt"))
    record = Format("txt", "text/plain", _plain_text, "Plain text", preview=False)
    monkeypatch.setitem(formats._FORMATS, "txt", record)
    app = make_app(articles_dir, feed_size=5)
    entered: list[str] = []
    app.before_request(lambda: entered.append("flask"))
    client = app.test_client()
    fast = client.get("/topics/nato/feed.txt", headers={"Accept": CHROME})
    assert entered == []  # the fast path's Map knows the new extension
    assert fast.status_code == 200
    assert fast.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert fast.headers["Vary"] == "Accept-Encoding"  # no preview for this one
    assert fast.data.split(b"\n")[1] == f"{BASE_URL}/topics/nato/feed.txt".encode()
    slow = client.get("/topics/nato/feed.txt?limit=2")
    assert entered == ["flask"] and len(slow.data.splitlines()) == 4
    assert client.get("/archive/1/feed.txt").status_code == 200
    home = html.fromstring(client.get("/").data)
    assert f"{BASE_URL}/feed.txt" in home.xpath("//link[@rel='alternate']/@href")
    preview = html.fromstring(client.get("/feed.atom", headers={"Accept": CHROME}).data)
    assert f"{BASE_URL}/feed.txt" in preview.xpath("//a/@href")
    check_atom(client.get("/feed.atom").data)  # the others are untouched
