"""Reading what we produce with real parsers: lxml + the Atom RELAX NG schema,
feedparser (bozo must be false), and the JSON Feed 1.1 required fields."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import feedparser
from lxml import etree

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
