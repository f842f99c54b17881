"""Generated article files through the real publisher and app (hypothesis).

Each example writes one generated file into a real folder beside a control
article, rescans it with the app's own publisher and asks the app (Flask test
client) for every feed the file could touch in every format. Either the file
is published and every one of those feeds validates (Atom against the RFC 4287
schema, RSS and JSON through feedparser / the JSON Feed rules), or the file is
rejected with the specific reason the parser gives. Nothing may raise.

How many files were tried, and what became of them, is printed at the end of
the module (``-rA`` or ``-s`` shows it; the figures are also asserted).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from feedsvc.collection import FeedRef
from feedsvc.config import load_settings
from feedsvc.errors import ArticleError
from feedsvc.parser import parse_article
from feedsvc.publisher import Publisher
from feedsvc.web import create_app
from tests.conftest import BASE_URL, write_article
from tests.feedcheck import CHECKS

PAST = 1_700_000_000  # an mtime well in the past: settled, and evidence of a date
FORMATS = ("atom", "rss", "json")
# Elements that must never come out of article text into a page.
ACTIVE = ("script", "iframe", "img", "object", "embed", "style", "form", "svg", "math")
CONTROL_TITLE = "Control Story Stays Published"
GOOD = (Path(__file__).parent / "data" / "seed.txt").read_bytes()

# The examples each property runs: 440 files, about 10-15 s on a busy 2-core machine.
EXAMPLES = {"structured": 200, "text": 80, "bytes": 80, "front_matter": 80}


# --- the harness: one real app over one folder for the whole module ----------------


@dataclass
class Harness:
    app: Flask
    client: FlaskClient
    publisher: Publisher
    folder: Path
    tried: Counter[str] = field(default_factory=Counter)
    published: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    serial: int = 0


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
            ) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp("properties")
    folder = tmp / "articles"
    folder.mkdir()
    control = write_article(folder, "control.txt", CONTROL_TITLE, author="Sara Wazowski",
                            topic="control topic",
                            body="The control story is always here.\n\nSara writes stories.")
    os.utime(control, (PAST, PAST))
    # environ={}: a developer's FEEDSVC_* variables must not change the run.
    config = load_settings({"articles_dir": str(folder), "ledger_path": str(tmp / "l.db"),
                            "base_url": BASE_URL, "reload_interval": 0}, environ={})
    app = create_app(config, instance_path=tmp / "instance")
    h = Harness(app, app.test_client(), app.extensions["feedsvc"], folder)
    yield h
    total = sum(h.tried.values())
    lines = [f"test_properties: {total} generated article files tried "
             f"({sum(h.published.values())} published, {sum(h.reasons.values())} rejected); "
             + ", ".join(f"{k}: {n} tried, {h.published[k]} published"
                         for k, n in sorted(h.tried.items()))]
    lines += [f"    rejected {n:4d} x {reason}" for reason, n in h.reasons.most_common()]
    _say(request, lines)


def _say(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Write to the terminal past output capture (the figures are the point)."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover - plugins disabled
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def _reason_kind(reason: str) -> str:
    """A rejection reason with its particulars (numbers, quoted values) taken out."""
    reason = re.sub(r"'.*'", "'…'", reason)  # quoted values may hold quotes themselves
    return re.sub(r"\d+", "N", reason)


def _get(client: FlaskClient, url: str, expected: int = 200) -> bytes:
    response = client.get(url)
    assert response.status_code == expected, (url, response.status_code, response.data[:300])
    return response.data


def _check_page(client: FlaskClient, url: str) -> None:
    """Served, with the security headers, and no active element from article text."""
    response = client.get(url)
    assert response.status_code == 200, url
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    doc = lxml.html.fromstring(response.data)
    found = [el.tag for el in doc.iter() if isinstance(el.tag, str) and el.tag in ACTIVE]
    assert found == [], (url, found)


def check_file(h: Harness, data: bytes, kind: str) -> None:
    """Write ``data`` as one article file, rescan, and check the outcome everywhere."""
    h.serial += 1
    h.tried[kind] += 1
    rel = f"gen-{h.serial}.txt"
    path = h.folder / rel
    path.write_bytes(data)
    os.utime(path, (PAST, PAST))
    try:
        try:
            expected: ArticleError | None = None
            article = parse_article(data, rel)
        except ArticleError as exc:  # anything else escaping fails the test
            expected = exc
        report = h.publisher.refresh()  # must not raise
        assert report.error is None, report.error
        rejections = h.publisher.rejections
        published = [e for e in h.publisher.collection.entries if e.article.path == rel]
        if expected is not None:
            assert rel in rejections, f"{rel} neither published nor rejected"
            reason = rejections[rel].reason
            assert reason == expected.reason
            assert reason.strip() and "Traceback" not in reason and "Error(" not in reason
            assert not published
            h.reasons[_reason_kind(reason)] += 1
        else:
            assert rel not in rejections, rejections.get(rel)
            fm = article.front_matter
            now = datetime.now(UTC)
            if fm.draft or (fm.date is not None and fm.date > now):
                assert not published  # a draft, or scheduled for later
            else:
                assert len(published) == 1
                h.published[kind] += 1
        refs = [FeedRef("site")]
        for entry in published:
            refs += [FeedRef("topic", t.slug) for t in entry.topics]
            refs += [FeedRef("author", a.slug) for a in entry.authors]
        for ref in refs:
            for fmt in FORMATS:
                body = _get(h.client, f"{ref.prefix}/feed.{fmt}")
                parsed = CHECKS[fmt](body)
                ids = ([item["id"] for item in parsed["items"]] if fmt == "json"
                       else [e.id for e in parsed.entries])
                assert len(ids) == len(set(ids)), f"duplicate ids in {ref} {fmt}"
                for entry in published:
                    assert entry.id in ids
        site = json.loads(_get(h.client, "/feed.json"))
        assert CONTROL_TITLE in [item["title"] for item in site["items"]]
        for entry in published:
            _check_page(h.client, f"/articles/{entry.slug}")
            for ref in refs[1:]:
                _check_page(h.client, ref.html_path)
        opml = _get(h.client, "/feeds.opml")
        assert opml.startswith(b"<?xml")
        _check_page(h.client, "/")
    finally:
        path.unlink()


# --- strategies ------------------------------------------------------------------

# Every code point, surrogates and XML-illegal ones included.
ANY_CHAR = st.characters(exclude_categories=())
# The same but NUL, which makes a file binary at once: structured files get theirs apart.
TEXT_CHAR = st.characters(exclude_categories=(), exclude_characters="\x00")
MARKUP = st.sampled_from([
    "<script>alert(1)</script>", "]]>", "&amp;", "&", '"', "'", "<![CDATA[x]]>",
    "<img src=x onerror=alert(1)>", "</textarea>", "<!--", "\x01", "\ufffe", "\ud800",
    "\x1b[31m", "\u202e", "\x85", "\u2028", "\r", "\x0c", "•", "1.", "---", "By ",
])
WORDS = st.sampled_from([
    "NATO", "Ukraine", "council", "Harbour", "the", "said", "Oslo", "北京", "Zürich",
    "Київ", "and", "Why This Matters", "•", "-", "*", "–", "·", "1.", "2)", "  •", "By",
    "Sara", "Wazowski", ".", ",", "“", "”", "’", "!", "?", "…",
])


@st.composite
def fragments(draw: st.DrawFn, max_size: int = 12, min_size: int = 0) -> str:
    """A line-ish piece of text: words, markup, arbitrary characters."""
    parts = draw(st.lists(st.one_of(WORDS, WORDS, MARKUP, st.text(TEXT_CHAR, max_size=8)),
                          min_size=min_size, max_size=max_size))
    return " ".join(parts)


@st.composite
def huge_lines(draw: st.DrawFn) -> str:
    unit = draw(st.one_of(WORDS, st.text(TEXT_CHAR, min_size=1, max_size=5)))
    return (unit + draw(st.sampled_from(["", " ", ". "]))) * draw(st.integers(1_000, 20_000))


DATES = st.one_of(
    st.sampled_from([
        "2026-11-27 14:30 +01:00", "27 Nov 2026 18:00 CET", "2026-02-30", "0000-00-00",
        "9999-12-31 23:59 -14:00", "0001-01-01 00:00 +14:00", "yesterday", "1e10", "nan",
        "2026-11-27T25:61:61", "Mon, 31 Feb 2020", "UTC+99", "2026-11-27 12:00 IST",
        "2026-11-27 12:00 +99:00", "12", "2126-01-01", "1970-01-01", "-1", "2026",
        "2026-11-27 12:00 GMT+5", "\x00", "2026-11-27\u200b", "٢٠٢٦-١١-٢٧",
    ]),
    st.text(ANY_CHAR, max_size=30),
    st.datetimes().map(str),
)


@st.composite
def front_matter(draw: st.DrawFn) -> str:
    keys = st.one_of(
        st.sampled_from(["date", "updated", "topics", "summary", "id", "slug", "draft"]),
        st.text(ANY_CHAR, max_size=10),
    )
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(keys)
        value = draw(st.one_of(
            DATES, fragments(),
            st.sampled_from(["true", "false", "yes", "maybe", "[a, b, c]", '"quoted"', ""]),
        ))
        lines.append(draw(st.sampled_from([f"{key}: {value}"] * 6 + [f"{key}:{value}", key,
                                                                      f"# {value}", ""])))
    closed = draw(st.sampled_from([True] * 9 + [False]))
    return "---\n" + "\n".join(lines) + ("\n---\n" if closed else "\n")


@st.composite
def article_texts(draw: st.DrawFn) -> str:
    """Something shaped like an article, with every variation torn at."""
    def blanks() -> str:
        return "\n" * draw(st.sampled_from([1, 2, 2, 2, 3, 40]))

    headline = draw(st.one_of(fragments(), huge_lines(), fragments().map(str.upper)))
    header = draw(st.lists(st.one_of(fragments(6), st.just("Sara Wazowski and John Doe"),
                                     st.just("By Sara Wazowski"), st.just("nato ukraine talks")),
                           max_size=3))
    paragraph = st.one_of(
        fragments(30, min_size=1),
        fragments(30, min_size=1),
        st.lists(st.tuples(st.sampled_from(["  • ", "- ", "* ", "– ", "· ", "1. ", "12) "]),
                           fragments(8)).map("".join), min_size=1, max_size=6).map("\n".join),
        st.just("Why This Matters Now"),
        huge_lines(),
        st.just(""),
    )
    body = draw(st.lists(paragraph, min_size=1, max_size=8))
    bio = draw(st.sampled_from(["", "Sara writes about things.", "Sara Wazowski is a writer."]))
    text = headline + blanks() + "\n".join(header) + blanks()
    text += "".join(p + blanks() for p in body) + bio
    if draw(st.booleans()):
        text = draw(front_matter()) + text
    if draw(st.sampled_from([False] * 19 + [True])):  # now and then a NUL byte somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + "\x00" + text[at:]
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    text = text.replace("\n", newline)
    if draw(st.booleans()):
        text += draw(st.sampled_from(["", "\n", " \t ", "\n\n\n"]))
    return text


def encode(text: str, encoding: str) -> bytes:
    if encoding == "utf-8":
        return text.encode("utf-8", "surrogatepass")
    if encoding == "utf-8-sig":
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    return text.encode(encoding, "replace")


ENCODINGS = st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "cp1252", "latin-1", "utf-16"])

_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.data_too_large,
                                                        HealthCheck.large_base_example])


# --- the properties ------------------------------------------------------------------


@settings(max_examples=EXAMPLES["structured"], **_SETTINGS)
@given(text=article_texts(), encoding=ENCODINGS)
def test_article_like_files_publish_valid_feeds_or_are_rejected(
    harness: Harness, text: str, encoding: str
) -> None:
    check_file(harness, encode(text, encoding), "structured")


@settings(max_examples=EXAMPLES["text"], **_SETTINGS)
@given(lines=st.lists(st.text(ANY_CHAR, max_size=200), max_size=30),
       breaks=st.lists(st.sampled_from(["\n", "\n\n", "\r\n\r\n", "\n\n\n\n"]), min_size=1))
def test_arbitrary_unicode_lines(harness: Harness, lines: list[str], breaks: list[str]) -> None:
    text = "".join(line + breaks[n % len(breaks)] for n, line in enumerate(lines))
    check_file(harness, encode(text, "utf-8"), "text")


@settings(max_examples=EXAMPLES["bytes"], **_SETTINGS)
@given(data=st.one_of(
    st.binary(max_size=4000),
    # random bytes spliced into a good article
    st.tuples(st.integers(0, len(GOOD)), st.binary(min_size=1, max_size=64)).map(
        lambda t: GOOD[: t[0]] + t[1] + GOOD[t[0]:]),
))
def test_arbitrary_bytes(harness: Harness, data: bytes) -> None:
    check_file(harness, data, "bytes")


@settings(max_examples=EXAMPLES["front_matter"], **_SETTINGS)
@given(fm=front_matter(), body=fragments(20))
def test_garbage_front_matter(harness: Harness, fm: str, body: str) -> None:
    text = fm + "Council Backs New Harbour Plan\n\nSara Wazowski\nharbour plan\n\n"
    check_file(harness, encode(text + (body or "A body.") + "\n", "utf-8"), "front_matter")


def test_every_generated_file_was_tried(harness: Harness) -> None:
    """Runs last in the module: the figures the note reports, checked."""
    if harness.serial == 0:
        pytest.skip("run with the property tests of this module")
    assert harness.tried["structured"] >= EXAMPLES["structured"] // 2
    assert sum(harness.reasons.values()) > 0, "no generated file was ever rejected"
    assert sum(harness.tried.values()) > sum(harness.reasons.values()), "none was published"


# --- ids: two files naming the same front-matter id -------------------------------


@settings(max_examples=30, deadline=None, phases=[Phase.generate, Phase.shrink])
@given(ids=st.lists(st.sampled_from(["tag:example.org,2020:same", "urn:x", "same"]),
                    min_size=2, max_size=3))
def test_front_matter_ids_never_give_two_entries_one_id(tmp_path_factory, ids: list[str]
                                                        ) -> None:
    """The ledger refuses a front-matter id another article has; the feeds must agree.

    (They once published ``fm.id or stamp.id``: two entries with one id.)
    """
    tmp = tmp_path_factory.mktemp("ids")
    folder = tmp / "articles"
    for n, id_ in enumerate(ids):
        path = write_article(folder, f"{n}.txt", f"Story Number {n}",
                             front=f"---\nid: {id_}\n---\n")
        os.utime(path, (PAST + n, PAST + n))
    config = load_settings({"articles_dir": str(folder), "ledger_path": str(tmp / "l.db"),
                            "base_url": BASE_URL, "reload_interval": 0}, environ={})
    client = create_app(config, instance_path=tmp / "instance").test_client()
    items = CHECKS["json"](client.get("/feed.json").data)["items"]
    assert len(items) == len(ids)
    published = [item["id"] for item in items]
    assert len(set(published)) == len(published), published
