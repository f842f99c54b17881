"""Reading what we produce with real parsers: lxml + the Atom RELAX NG schema,
feedparser (bozo must be false), and the JSON Feed 1.1 required fields."""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
from lxml import etree
from lxml import html as lxml_html

from feedsvc.model import FEED_FORMATS

SCHEMA = Path(__file__).parent / "schemas" / "atom.rng"
ATOM = "{http://www.w3.org/2005/Atom}"


@cache
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def check_atom(body: bytes) -> feedparser.FeedParserDict:
    """Validate against RFC 4287's schema and parse with feedparser."""
    doc = etree.fromstring(body)
    atom_schema().assertValid(doc)
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return parsed


def check_rss(body: bytes) -> feedparser.FeedParserDict:
    etree.fromstring(body)  # well-formed
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    for item in parsed.entries:
        assert item.get("id"), "every RSS item needs a guid"
    return parsed


def check_json(body: bytes) -> dict:
    """JSON Feed 1.1: version, title and items are required; each item an id and content."""
    feed = json.loads(body)
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(feed["title"], str) and feed["title"]
    assert isinstance(feed["items"], list)
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert "content_html" in item or "content_text" in item
    return feed


CHECKS = {"atom": check_atom, "rss": check_rss, "json": check_json}


def plain_text(item: feedparser.FeedParserDict, key: str) -> str:
    """The plain text feedparser read for ``key`` (``title``, ``summary`` ...).

    A field given as text comes back as ``text/plain`` and is returned as is.
    One given as HTML (RSS ``title`` and ``description``, see README "Text and
    HTML in each format") comes back ``text/html``: it must hold no element at
    all after feedparser's sanitizer (text escaped as HTML has none), and is
    returned unescaped.
    """
    value = item[key]
    kind = item.get(f"{key}_detail", {}).get("type", "text/plain")
    if kind == "text/plain":
        return value
    assert kind == "text/html", f"{key}: unexpected type {kind}"
    fragment = lxml_html.fragment_fromstring(f"<div>{value}</div>")
    assert len(fragment) == 0, f"{key}: HTML elements in {value!r}"
    return html.unescape(value)


def feed_paths(app) -> list[str]:
    """Every feed document of an app, every format: current feeds, then their archives."""
    client = app.test_client()
    collection = app.extensions["feedsvc"].collection
    paths: list[str] = []
    for ref in collection.feed_refs():
        for fmt in FEED_FORMATS:
            path = f"{ref.prefix}/feed.{fmt}"
            seen = {path}
            while path:
                paths.append(path)
                path = _prev_archive(client.get(path).data, fmt)
                if path in seen:
                    break
                seen.add(path)
    return paths


def _prev_archive(body: bytes, fmt: str) -> str | None:
    """The path of the ``prev-archive`` document a feed links to, if any."""
    if fmt == "json":
        url = json.loads(body).get("next_url")
    else:
        doc = etree.fromstring(body)
        hrefs = doc.xpath("//*[local-name()='link'][@rel='prev-archive']/@href")
        url = hrefs[0] if hrefs else None
    return urlsplit(url).path if url else None
