"""Plain text stays plain text in every format (issue #12 part 1), through the real app.

A corpus of articles with markup-like text in every field (headline, byline,
topic line, lead paragraph, bio, front matter, folder name), bidi controls
and stray control bytes, next to real binaries, is written into a folder and
served by the app. Every feed document it makes, archives included, is read
back by feedparser (bozo false), lxml (+ the Atom RELAX NG schema) and
``json``: each text field must come back exactly as written, as text, with
no element left by any sanitizer. The HTML pages and the browser view of the
feeds (static/feed.xsl) must show the same text, never markup.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import lxml.html
import pytest
from flask import Flask
from lxml import etree

from tests.feedcheck import ATOM, check_atom, check_json, check_rss, feed_paths, plain_text

STYLESHEET = Path(__file__).resolve().parent.parent / "feedsvc" / "static" / "feed.xsl"
SITE = "feedsvc"
#: Elements that would mean text was taken for markup somewhere.
MARKUP_TAGS = ("script", "b", "i", "u", "em", "img", "description", "labs", "lee", "tags")

LONG_PARAGRAPH = ("Residents in Oslo welcomed the decision, the mayor said, and the harbour"
                  " authority promised to publish a timetable for the works before summer. ")


def _long_body(damage: str) -> str:
    paragraphs = [LONG_PARAGRAPH * 3 for _ in range(30)]
    paragraphs[12] = paragraphs[12].replace("timetable", "time" + damage + "table", 1)
    return "\n\n".join(paragraphs)


#: path -> (file bytes, what the feeds must say). "topics" are names the entry
#: must carry (others, found by the parser, may come too).
CORPUS: dict[str, tuple[bytes, dict]] = {
    "markup.txt": (
        (
            b"---\ndate: 2026-11-05 08:00 +00:00\n---\n"
            b'The <b>Bold</b> & <script>alert(1)</script> "Headline"\n\n'
            b"Sam <i>Tag</i>\n<b>markup</b> at&t &amp;lt; tags\n\n"
            b"The lead has <script>alert(1)</script> and <b>bold</b> & more, AT&T &amp; "
            b"&lt;tags&gt; \"quotes\" and 'single' ]]> </description>.\n\n"
            b"A second paragraph with <img src=x onerror=alert(2)> in it.\n\n"
            b"Sam <i>Tag</i> writes about <em>markup</em> & AT&T for a living.\n"
        ),
        {
            "title": 'The <b>Bold</b> & <script>alert(1)</script> "Headline"',
            "authors": ["Sam <i>Tag</i>"],
            "bio": "Sam <i>Tag</i> writes about <em>markup</em> & AT&T for a living.",
            "summary": "The lead has <script>alert(1)</script> and <b>bold</b> & more, AT&T"
                       " &amp; &lt;tags&gt; \"quotes\" and 'single' ]]> </description>.",
            "topics": ["<b>markup</b> at&t &amp;lt; tags"],
        },
    ),
    "entities.txt": (
        (
            b"---\ndate: 2026-11-02 10:00 +00:00\ntopics: <b>r&d</b>, Q&A <i>\n"
            b"summary: An editor's <em>summary</em> & a bare AT&T, &copy; and &#60;.\n---\n"
            b'AT&T Buys &lt;Spectrum&gt; For $1 &amp; More\n\nDana "D&D" <Lee>\n\n'
            b"Entities like &amp; and &#60; and &lt;b&gt; must stay literal, as must AT&T.\n\n"
            b'Dana "D&D" <Lee> covers telecoms & <cables>.\n'
        ),
        {
            "title": "AT&T Buys &lt;Spectrum&gt; For $1 &amp; More",
            "authors": ['Dana "D&D" <Lee>'],
            "bio": 'Dana "D&D" <Lee> covers telecoms & <cables>.',
            "summary": "An editor's <em>summary</em> & a bare AT&T, &copy; and &#60;.",
            "topics": ["<b>r&d</b>", "Q&A <i>"],
        },
    ),
    "R&D <labs>/bidi.txt": (
        (
            "---\ndate: 2026-11-03 12:00 +01:00\n---\n"
            "Invoice \u202egpj.exe\u202c Paid <u>Twice</u>\n\nAnn \u2066O'Neil\u2069\n"
            "\u202bspoof\u202c check\n\nThe body keeps \u202eabc\u202c as written.\n"
        ).encode(),
        {
            "title": "Invoice gpj.exe Paid <u>Twice</u>",
            "authors": ["Ann O'Neil"],
            "bio": None,
            "summary": "The body keeps \u202eabc\u202c as written.",
            "topics": ["Spoof check", "R&D <labs>"],
            "warnings": [
                "line 4: bidirectional control characters removed from the headline",
                "line 6: bidirectional control characters removed from the byline",
                "line 7: bidirectional control characters removed from the topic line",
            ],
        },
    ),
    "nul.txt": (
        ("Harbour Plan Survives A Stray Byte\n\nIngrid Halvorsen\nharbour plan\n\n"
         + _long_body("\x00") + "\n").encode(),
        {
            "title": "Harbour Plan Survives A Stray Byte",
            "authors": ["Ingrid Halvorsen"],
            "bio": None,
            "summary": (LONG_PARAGRAPH * 2).strip(),
            "topics": ["Harbour plan"],
            "warnings": ["line 30: 1 unprintable character removed (the first is U+0000)"],
        },
    ),
    "controls.txt": (
        (b"---\ndate: 2026-10-30 16:45 +01:00\n---\n"
         b"Council\x07 Approves Ferry Timetable\n\nIngrid Halvorsen\nferry timetable\n\n"
         b"The council\x1b approved the new ferry timetable on Monday.\x01\n\n"
         b"Sailings start in spring.\n"),
        {
            "title": "Council Approves Ferry Timetable",
            "authors": ["Ingrid Halvorsen"],
            "bio": None,
            "summary": "The council approved the new ferry timetable on Monday.",
            "topics": ["Ferry timetable"],
            "warnings": ["line 4: 3 unprintable characters removed (the first is U+0007)"],
        },
    ),
    "cp1252.txt": (
        ("---\ndate: 2026-10-28 07:30 +01:00\n---\n"
         "Caf\u00e9 Owners \u201cWelcome\u201d Harbour Plan\n\nJos\u00e9 Ruiz\n\n"
         "Caf\u00e9 owners said the plan was \u201cgood news\u201d.\x02\n\n"
         "Jos\u00e9 writes about Oslo.\n").encode("cp1252"),
        {
            "title": "Caf\u00e9 Owners \u201cWelcome\u201d Harbour Plan",
            "authors": ["Jos\u00e9 Ruiz"],
            "bio": "Jos\u00e9 writes about Oslo.",
            "summary": "Caf\u00e9 owners said the plan was \u201cgood news\u201d.",
            "topics": [],
        },
    ),
}

BINARIES = {
    "photo.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08"
                  b"\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\x00IEND\xaeB`\x82",
                  "binary file (PNG image signature)"),
    "notes.txt.gz": (gzip.compress(CORPUS["markup.txt"][0], mtime=0),
                     "binary file (gzip archive signature)"),
    "report.pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n",
                   "binary file (PDF document signature)"),
}

BY_TITLE = {expected["title"]: expected for _, expected in CORPUS.values()}


def write_corpus(folder: Path) -> None:
    """The corpus and the binaries, as files in ``folder``."""
    for path, (data, _) in {**CORPUS, **BINARIES}.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)


@pytest.fixture(scope="module")
def corpus_app(tmp_path_factory) -> Flask:
    from feedsvc.web import create_app

    root = tmp_path_factory.mktemp("corpus")
    folder = root / "articles"
    write_corpus(folder)
    return create_app(
        {"articles_dir": str(folder), "ledger_path": str(root / "ledger.sqlite3"),
         "base_url": "https://news.example.org", "reload_interval": 0, "feed_size": 2},
        instance_path=root / "instance",
    )


@pytest.fixture(scope="module")
def documents(corpus_app: Flask) -> dict[str, bytes]:
    client = corpus_app.test_client()
    return {path: client.get(path).data for path in feed_paths(corpus_app)}


def _expected(title: str) -> dict:
    assert title in BY_TITLE, f"unexpected title {title!r}"
    return BY_TITLE[title]


def test_text_files_are_published_and_binaries_rejected(corpus_app: Flask,
                                                       documents: dict[str, bytes]) -> None:
    publisher = corpus_app.extensions["feedsvc"]
    assert {p: e.reason for p, e in publisher.rejections.items()} == {
        p: reason for p, (_, reason) in BINARIES.items()}
    site = [path for path in documents if path.endswith(".json") and "/topics/" not in path
            and "/authors/" not in path]
    titles = {item["title"] for path in site for item in json.loads(documents[path])["items"]}
    assert titles == set(BY_TITLE)
    for path, (_, expected) in CORPUS.items():
        warnings = list(publisher.warnings.get(path, ()))
        if path == "cp1252.txt":
            assert warnings[0].endswith("decoded as Windows-1252")
            assert warnings[1] == "line 8: 1 unprintable character removed (the first is U+0002)"
        else:
            assert warnings == expected.get("warnings", []), path


def test_the_corpus_makes_archives(documents: dict[str, bytes]) -> None:
    """So that the checks below cover archive documents too."""
    assert any("/archive/" in path and path.endswith(".rss") for path in documents)
    assert any("/archive/" in path and path.endswith(".atom") for path in documents)


def test_atom_reads_back_every_field_as_text(documents: dict[str, bytes]) -> None:
    seen = set()
    for path, body in documents.items():
        if not path.endswith(".atom"):
            continue
        parsed = check_atom(body)  # RELAX NG and feedparser, bozo false
        root = etree.fromstring(body)
        for tag in ("title", "subtitle"):
            node = root.find(ATOM + tag)
            assert node.get("type") == "text"
            assert parsed.feed[f"{tag}_detail"].type == "text/plain"
            assert parsed.feed[tag] == node.text, path
        for node, got in zip(root.iter(ATOM + "entry"), parsed.entries, strict=True):
            expected = _expected(node.findtext(ATOM + "title"))
            seen.add(expected["title"])
            assert node.find(ATOM + "title").get("type") == "text"
            assert node.find(ATOM + "summary").get("type") == "text"
            assert node.findtext(ATOM + "summary") == expected["summary"]
            assert [a.findtext(ATOM + "name") for a in node.iter(ATOM + "author")] == expected[
                "authors"]
            labels = [c.get("label") for c in node.iter(ATOM + "category")]
            assert set(expected["topics"]) <= set(labels)
            # feedparser: the same text, as text/plain
            for key in ("title", "summary"):
                assert got[f"{key}_detail"].type == "text/plain"
                assert got[key] == expected[key]
            assert [a.name for a in got.authors] == expected["authors"]
            assert [t.label for t in got.get("tags", [])] == labels
    assert seen == set(BY_TITLE)


def test_rss_reads_back_every_field_as_text(documents: dict[str, bytes]) -> None:
    seen = set()
    for path, body in documents.items():
        if not path.endswith(".rss"):
            continue
        parsed = check_rss(body)
        atom = feedparser.parse(documents[path[:-4] + ".atom"])
        # channel title and description: HTML in RSS, the same text as in Atom
        assert plain_text(parsed.feed, "title") == atom.feed.title, path
        assert plain_text(parsed.feed, "subtitle") == atom.feed.subtitle, path
        for got in parsed.entries:
            expected = _expected(plain_text(got, "title"))
            seen.add(expected["title"])
            assert plain_text(got, "summary") == expected["summary"]
            assert [a.name for a in got.authors] == expected["authors"]  # dc:creator: text
            # category: text
            assert set(expected["topics"]) <= {t.term for t in got.get("tags", [])}
    assert seen == set(BY_TITLE)


def test_rss_writes_plain_text_escaped_as_html_with_hex_references(
        documents: dict[str, bytes]) -> None:
    body = documents["/authors/sam-i-tag-i/feed.rss"]
    assert b"<script>" not in body and b"&lt;script" not in body
    assert b"<title>The &#x26;lt;b&#x26;gt;Bold&#x26;lt;/b&#x26;gt; &#x26;amp; " in body
    item = etree.fromstring(body).find("channel/item")
    assert item.findtext("title").startswith("The &lt;b&gt;Bold&lt;/b&gt; &amp; &lt;script")
    assert b"<dc:creator>Sam &#x3C;i&#x3E;Tag&#x3C;/i&#x3E;</dc:creator>" in body


def test_json_feed_reads_back_every_field_as_text(documents: dict[str, bytes]) -> None:
    seen = set()
    for path, body in documents.items():
        if not path.endswith(".json"):
            continue
        feed = check_json(body)
        atom = feedparser.parse(documents[path[:-5] + ".atom"])
        assert feed["title"] == atom.feed.title
        for item in feed["items"]:
            expected = _expected(item["title"])
            seen.add(expected["title"])
            assert item["summary"] == expected["summary"]
            assert [a["name"] for a in item["authors"]] == expected["authors"]
            assert set(expected["topics"]) <= set(item.get("tags", []))
    assert seen == set(BY_TITLE)


def test_feed_titles_carry_names_as_written(documents: dict[str, bytes]) -> None:
    by_path = {path: feedparser.parse(body).feed for path, body in documents.items()
               if path.endswith(".atom")}
    assert by_path["/authors/sam-i-tag-i/feed.atom"].title == f"Sam <i>Tag</i> — {SITE}"
    assert by_path["/authors/sam-i-tag-i/feed.atom"].subtitle == CORPUS["markup.txt"][1]["bio"]
    assert by_path["/topics/r-d-labs/feed.atom"].title == f"R&D <labs> — {SITE}"


def test_opml_text_is_html_and_title_is_text(corpus_app: Flask,
                                             documents: dict[str, bytes]) -> None:
    root = etree.fromstring(corpus_app.test_client().get("/feeds.opml").data)
    outlines = root.findall("body/outline")
    assert outlines
    for outline in outlines:
        feed_path = urlsplit(outline.get("xmlUrl")).path
        title = feedparser.parse(documents[feed_path]).feed.title
        assert outline.get("title") == title
        text = {"text": outline.get("text"), "text_detail": {"type": "text/html"}}
        assert plain_text(text, "text") == title


def _page(client, path: str) -> lxml.html.HtmlElement:
    response = client.get(path)
    assert response.status_code == 200, path
    page = lxml.html.fromstring(response.data)
    for tag in MARKUP_TAGS:
        assert page.find(f".//{tag}") is None, f"<{tag}> element in {path}"
    return page


def test_html_pages_show_the_text(corpus_app: Flask, documents: dict[str, bytes]) -> None:
    client = corpus_app.test_client()
    home = _page(client, "/")
    headings = [h.text_content() for h in home.iterfind(".//ol[@class='entries']//h2")]
    assert set(headings) == set(BY_TITLE)
    summaries = {p.text_content() for p in home.iterfind(".//ol[@class='entries']//article/p")}
    assert {e["summary"] for e in BY_TITLE.values()} <= summaries
    for item in json.loads(documents["/feed.json"])["items"]:
        expected = _expected(item["title"])
        page = _page(client, urlsplit(item["url"]).path)
        assert page.findtext(".//h1") == expected["title"]
        assert page.find(".//title").text == f"{expected['title']} — {SITE}"
        assert [a.text for a in page.iterfind(".//a[@rel='author']")] == expected["authors"]
        assert set(expected["topics"]) <= {a.text for a in page.iterfind(".//a[@rel='tag']")}
        bios = [p.text_content() for p in page.iterfind(".//p[@class='bio']")]
        assert bios == ([expected["bio"]] if expected["bio"] else [])
        assert expected["summary"] in page.find(".//div[@class='content']").text_content()
    author = _page(client, "/authors/sam-i-tag-i/")
    assert author.findtext(".//h1") == "Sam <i>Tag</i>"
    assert author.find(".//p[@class='bio']").text_content() == CORPUS["markup.txt"][1]["bio"]
    topic = _page(client, "/topics/r-d-labs/")
    assert topic.findtext(".//h1") == "R&D <labs>"
    feeds = [link.get("title") for link in topic.iterfind(".//link[@rel='alternate']")]
    assert f"R&D <labs> — {SITE} (ATOM)" in feeds
    for listing in ("/topics/", "/authors/"):
        _page(client, listing)


@pytest.fixture(scope="module")
def transform() -> Callable[[bytes], lxml.html.HtmlElement]:
    xslt = etree.XSLT(etree.parse(str(STYLESHEET)))

    def view(body: bytes) -> lxml.html.HtmlElement:
        return lxml.html.fromstring(str(xslt(etree.fromstring(body))))

    return view


def test_the_browser_view_shows_the_text(documents: dict[str, bytes], transform) -> None:
    for path, body in documents.items():
        if path.endswith(".json"):
            continue
        page = transform(body)
        for tag in MARKUP_TAGS:
            assert page.find(f".//{tag}") is None, f"<{tag}> element in the view of {path}"
        atom = feedparser.parse(documents[path.rsplit(".", 1)[0] + ".atom"]).feed
        assert page.get_element_by_id("feed-title").text_content() == atom.title, path
        assert page.get_element_by_id("feed-subtitle").text_content() == atom.subtitle, path
        for entry in page.find_class("entry"):
            expected = _expected(entry.find("h2").text_content())
            assert entry.find_class("summary")[0].text_content() == expected["summary"]
            meta = entry.find_class("meta")[0].text_content()
            for name in expected["authors"]:
                assert name in meta
