"""The XSLT view of Atom and RSS feeds (feedsvc/static/feed.xsl), without a browser.

The live service sends browsers the HTML preview instead (tests/test_web.py,
tests/test_browser.py); the stylesheet stays for static hosts that serve the
feed bytes to everyone (README, "Feeds in a browser"). lxml runs it with
libxslt, the XSLT engine Chromium used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from feedsvc.model import FeedDocument, Site
from feedsvc.render import render_feed
from tests.conftest import BASE_URL
from tests.feedcheck import ATOM, check_atom, check_rss

STYLESHEET = Path(__file__).resolve().parent.parent / "feedsvc" / "static" / "feed.xsl"
PI = f'<?xml-stylesheet type="text/xsl" href="{BASE_URL}/static/feed.xsl"?>'.encode()


@pytest.fixture(scope="module")
def transform() -> etree.XSLT:
    return etree.XSLT(etree.parse(str(STYLESHEET)))


def _view(transform: etree.XSLT, body: bytes) -> etree._Element:
    return etree.fromstring(str(transform(etree.fromstring(body))).encode(), etree.HTMLParser())


def _feed_paths(app, fmt: str) -> list[str]:
    collection = app.extensions["feedsvc"].collection
    return [f"{ref.prefix}/feed.{fmt}" for ref in collection.feed_refs()]


def test_atom_and_rss_name_the_stylesheet_and_stay_valid(app, client) -> None:
    for fmt, check in (("atom", check_atom), ("rss", check_rss)):
        for path in _feed_paths(app, fmt):
            body = client.get(path).data
            assert body.split(b"\n")[1] == PI, path
            check(body)  # RELAX NG (Atom) and feedparser with bozo false
    assert b"xml-stylesheet" not in client.get("/feed.json").data


def test_the_app_serves_the_stylesheet(client) -> None:
    response = client.get("/static/feed.xsl")
    assert response.status_code == 200
    assert response.headers["Content-Type"].split(";")[0] in (
        "application/xslt+xml", "application/xml", "text/xsl", "text/xml")
    assert response.data == STYLESHEET.read_bytes()


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_the_view_shows_title_hint_and_every_entry(app, client, transform, fmt: str) -> None:
    body = client.get(f"/topics/nato/feed.{fmt}").data
    parsed = (check_atom if fmt == "atom" else check_rss)(body)
    page = _view(transform, body)
    assert page.findtext(".//h1") == "NATO — feedsvc"
    kind = "Atom" if fmt == "atom" else "RSS"
    assert page.findtext(".//title") == f"NATO — feedsvc ({kind} feed)"
    hint = page.find(".//div[@id='subscribe']")
    assert "This is a web feed" in "".join(hint.itertext())
    assert hint.findtext("code") == f"{BASE_URL}/topics/nato/feed.{fmt}"
    links = page.findall(".//li[@class='entry']/h2/a")
    assert [a.text for a in links] == [e.title for e in parsed.entries]
    assert [a.get("href") for a in links] == [e.link for e in parsed.entries]
    summaries = [p.text for p in page.findall(".//li[@class='entry']/p[@class='summary']")]
    assert summaries and all(s and "<p>" not in s for s in summaries)


def test_archives_say_so_and_link_back(make_app, articles_dir, transform) -> None:
    client = make_app(articles_dir, feed_size=5).test_client()
    body = client.get("/archive/1/feed.atom").data
    page = _view(transform, body)
    assert "This document is an archive" in "".join(page.find(".//div[@id='subscribe']")
                                                    .itertext())
    nav = {a.text: a.get("href") for a in page.findall(".//p[@class='nav']/a")}
    assert nav["Current feed"] == f"{BASE_URL}/feed.atom"
    assert nav["Newer entries"] == f"{BASE_URL}/archive/2/feed.atom"
    current = _view(transform, client.get("/feed.atom").data)
    assert "archive" not in "".join(current.find(".//div[@id='subscribe']").itertext())


def test_an_odd_base_url_cannot_break_the_instruction() -> None:
    """The base URL may come from a request's Host: nothing in it may end the instruction."""
    doc = FeedDocument(title="T", subtitle="S", path="/feed", html_path="/", entries=(),
                       updated=datetime(2024, 1, 1, tzinfo=UTC))
    site = Site(title="T", subtitle="S", language="en")
    body = render_feed(doc, "atom", site, 'http://odd.example?>"<&')
    tree = etree.fromstring(body).getroottree()
    pis = [n for n in tree.getroot().itersiblings(preceding=True)
           if isinstance(n, etree._ProcessingInstruction)]
    assert len(pis) == 1 and pis[0].target == "xml-stylesheet"
    # Pseudo-attributes take entity references, which the browser expands.
    assert pis[0].get("href") == "http://odd.example%3F%3E%22%3C&amp;/static/feed.xsl"
    assert tree.getroot().tag == f"{ATOM}feed"


def test_the_live_service_sends_browsers_the_preview_not_the_stylesheet_view(client) -> None:
    """No XSLT for a browser: it gets HTML, never the feed retyped as application/xml."""
    chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for path in ("/feed.atom", "/topics/nato/feed.rss"):
        response = client.get(path, headers={"Accept": chrome})
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"<?xml-stylesheet" not in response.data
        assert client.get(path, headers={"Accept": "application/xml"}).headers[
            "Content-Type"] != "application/xml; charset=utf-8"
