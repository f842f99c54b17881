"""Hostile requests and hostile article text, against the real app.

Most requests go through the Flask test client; the ones a client library
would normalise or refuse to send (raw ``..``, backslashes, bad bytes, odd
methods, over-long request lines) go as raw bytes to a real ``gunicorn
wsgi:app`` on 127.0.0.1, started with ``FLASK_DEBUG=1`` in its environment to
prove the entry point never runs in debug mode. Every answer must be a clean
4xx (or a 200 where the request is harmless), never a 5xx, never a file from
outside the app, never a traceback or a filesystem path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import feedparser
import lxml.html
import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from feedsvc.collection import SITE_FEED
from tests.conftest import BUNDLED, ROOT, write_article
from tests.feedcheck import CHECKS, plain_text

#: Elements that article text must never become in a page or in feed HTML.
ACTIVE = {"script", "iframe", "img", "object", "embed", "style", "form", "svg", "math",
          "link", "meta", "base", "a", "b", "i", "textarea"}
HOSTILE_TITLE = "<script>alert(\"title\")</script> & Co ]]> \"quoted\" 'single'"
HOSTILE_AUTHOR = "<img src=x onerror=alert(2)> and Bob <i>Smith</i>"
HOSTILE_FOLDER = "<b onmouseover=alert(5)>evil<\\b>"  # a sub-folder: a "folder" topic
HOSTILE_ARTICLE = f"""---
summary: <script>alert('summary')</script> & ]]> <!-- x -->
topics: <script>t</script>, <img src=x onerror=alert(1)>
---
{HOSTILE_TITLE}

{HOSTILE_AUTHOR}
<script>topic</script> line

<script>alert("body")</script> paragraph with ]]> and &amp; and "quotes" and 'single'.

  • <iframe src="javascript:alert(3)"></iframe>
  • <a href="javascript:alert(4)">click</a>

<style>body{{display:none}}</style> And <textarea> And <base href=//evil>

Bob wrote this <script>alert("bio")</script> bio.
"""
#: Markers of a file from outside the app that a traversal might serve.
LEAKS = (b"root:x:0:0", b"create_app", b"import ", b"Traceback", b'File "', b"/work/",
         str(ROOT).encode(), b"werkzeug", b"site-packages", b"__debugger__", b"SECRET")
TRAVERSALS = [
    "/topics/..%2f..%2fetc/feed.atom", "/topics/..%2F..%2F..%2Fetc%2Fpasswd",
    "/topics/%2e%2e/%2e%2e/etc/passwd", "/topics/..%5c..%5cetc/feed.atom",
    "/topics/..\\..\\etc/feed.atom", "/authors/....//....//etc/passwd",
    "/articles/..%2f..%2fwsgi.py", "/articles/%2e%2e%2fwsgi.py", "/articles/..",
    "/static/../wsgi.py", "/static/..%2fweb.py", "/static/..%2f..%2fwsgi.py",
    "/static/%2e%2e/%2e%2e/wsgi.py", "/static/..%5c..%5cwsgi.py", "/static/..\\..\\wsgi.py",
    "/static/%252e%252e/wsgi.py", "/static/%c0%ae%c0%ae/wsgi.py", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "//etc/passwd", "/..%2f..%2f..%2fetc/passwd",
    "/topics/nato/../../wsgi.py", "/archive/..%2f/feed.atom", "/feed.atom/../../wsgi.py",
    "/feed.atom%00.txt", "/articles/%00", "/static/style.css%00.py",
]


# --- helpers ---------------------------------------------------------------------------


def call(app: Flask, path: str, method: str = "GET", headers: dict[str, str] | None = None,
         query: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """Call the WSGI app as a server does: an exception escaping it is a 500.

    Used instead of the test client where the client itself would choke on
    the request (it rebuilds the URL from the Host header for its cookies).
    """
    environ = EnvironBuilder(path=path, method=method, headers=headers,
                             query_string=query).get_environ()
    try:
        body, status, response_headers = run_wsgi_app(app, environ, buffered=True)
        data = b"".join(body)
    except Exception:  # noqa: BLE001 - what a WSGI server turns into a 500
        return 500, {}, b""
    return int(status.split()[0]), dict(response_headers), data


def assert_clean_error(status: int, body: bytes, what: str) -> None:
    assert 400 <= status < 500, (what, status, body[:200])
    for marker in LEAKS:
        assert marker not in body, (what, marker, body[:300])


@pytest.fixture
def hostile_dir(articles_dir: Path) -> Path:
    """The bundled articles plus one whose every field is markup."""
    folder = articles_dir / HOSTILE_FOLDER
    folder.mkdir()
    (folder / "hostile.txt").write_text(HOSTILE_ARTICLE, encoding="utf-8")
    return articles_dir


@pytest.fixture
def hostile(make_app, hostile_dir: Path) -> Flask:
    app = make_app(hostile_dir)
    assert app.extensions["feedsvc"].rejections == {}
    return app


def _pages(app: Flask) -> list[str]:
    collection = app.extensions["feedsvc"].collection
    return (["/", "/topics/", "/authors/"]
            + [f"/topics/{slug}/" for slug in collection.topics]
            + [f"/authors/{slug}/" for slug in collection.authors]
            + [f"/articles/{entry.slug}" for entry in collection.entries])


def _active_elements(html: str | bytes, allowed: set[str] = frozenset()) -> list[str]:
    """Active elements and event-handler attributes in an HTML document or fragment."""
    if isinstance(html, bytes):
        html = html.decode("utf-8")
    doc = lxml.html.fromstring(f"<div>{html}</div>") if not html.lstrip().startswith(
        "<!doctype") else lxml.html.fromstring(html)
    found = []
    for element in doc.iter():
        if not isinstance(element.tag, str):
            continue
        if element.tag in ACTIVE - allowed:
            found.append(element.tag)
        found += [f"{element.tag}@{name}" for name in element.attrib
                  if name.lower().startswith("on")]
    return found


# --- markup in articles ------------------------------------------------------------------


# What our own templates use, and so may appear; article text must add none of them.
TEMPLATE_ELEMENTS = {"a", "link", "meta"}


def test_markup_in_articles_is_text_in_every_page(hostile: Flask) -> None:
    client = hostile.test_client()
    entry = next(e for e in hostile.extensions["feedsvc"].collection.entries
                 if e.title == HOSTILE_TITLE)
    pages = _pages(hostile)
    assert len(pages) > 20
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.get_data(as_text=True)
        assert _active_elements(html, TEMPLATE_ELEMENTS) == [], url
        doc = lxml.html.fromstring(html)
        # <a> elements are ours: each one's href is a link of the site, never article text
        for link in doc.iter("a", "link"):
            assert link.get("href", "").startswith(("https://news.example.org/", "#")), (
                url, lxml.html.tostring(link))
        assert "javascript:" not in " ".join(
            value for el in doc.iter() if isinstance(el.tag, str) for value in el.attrib.values())
    article = lxml.html.fromstring(client.get(f"/articles/{entry.slug}").data)
    # the text survives as text: escaped, not stripped
    assert article.findtext(".//h1") == HOSTILE_TITLE
    assert article.find(".//title").text.startswith(HOSTILE_TITLE)
    content = article.find_class("content")[0].text_content()
    assert '<script>alert("body")</script> paragraph with ]]> and &amp; and' in content
    assert '<iframe src="javascript:alert(3)"></iframe>' in content
    assert article.find_class("bio")[0].text_content() == (
        'Bob wrote this <script>alert("bio")</script> bio.')
    names = [a.text for a in article.iter("a") if a.get("rel") == "author"]
    assert names == ["<img src=x onerror=alert(2)>", "Bob <i>Smith</i>"]


def test_markup_in_articles_is_text_in_every_feed(hostile: Flask) -> None:
    client = hostile.test_client()
    collection = hostile.extensions["feedsvc"].collection
    entry = next(e for e in collection.entries if e.title == HOSTILE_TITLE)
    refs = [ref for ref in collection.feed_refs()
            if entry in collection.feed_entries(ref)]
    assert len(refs) >= 6  # site, topics (story, folder, front matter), authors
    for ref in refs:
        for fmt in ("atom", "rss", "json"):
            body = client.get(f"{ref.prefix}/feed.{fmt}").data
            parsed = CHECKS[fmt](body)
            if fmt == "json":
                item = next(i for i in parsed["items"] if i["id"] == entry.id)
                assert item["title"] == HOSTILE_TITLE
                assert _active_elements(item["content_html"]) == []
                continue
            item = next(e for e in parsed.entries if e.id == entry.id)
            assert plain_text(item, "title") == HOSTILE_TITLE  # HTML-escaped in RSS
            html = item.content[0].value if fmt == "atom" else item.get(
                "content", [{"value": item.description}])[0]["value"]
            assert '&lt;script&gt;alert("body")' in html or "&lt;script&gt;alert(&quot;body" in html
            assert _active_elements(html) == []
    # feedparser sanitises; read the Atom once without it, as a strict reader would
    atom = client.get("/feed.atom").data
    raw = feedparser.parse(atom, sanitize_html=False)
    item = next(e for e in raw.entries if e.id == entry.id)
    assert _active_elements(item.content[0].value) == []


def test_pages_send_security_headers(hostile: Flask) -> None:
    client = hostile.test_client()
    for url in _pages(hostile):
        first = client.get(url)
        again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304
        for response in (first, again):
            csp = response.headers["Content-Security-Policy"]
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
            assert directives["default-src"] == "'none'", url
            assert "script-src" not in directives, url  # falls back to 'none'
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, url
            assert directives["frame-ancestors"] == "'none'"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] in (
                "no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin")


# --- hostile requests through the test client ----------------------------------------------


def test_path_traversal_is_a_clean_4xx(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/static/style.css").status_code == 200  # the control
    for path in TRAVERSALS:
        response = client.get(path, follow_redirects=True)
        assert_clean_error(response.status_code, response.data, path)


def test_very_long_paths_and_query_strings(app: Flask) -> None:
    client = app.test_client()
    for path in ("/" + "a" * 100_000, "/topics/" + "x" * 100_000 + "/feed.atom",
                 "/articles/" + "%2e" * 30_000, "/authors/" + "é" * 20_000 + "/"):
        response = client.get(path)
        assert_clean_error(response.status_code, response.data, path[:40])
    for query in ("x=" + "y" * 200_000, "limit=1&" * 20_000, "&" * 100_000,
                  "limit=" + "9" * 4_000, "%" * 50_000):
        response = client.get("/feed.atom", query_string=query)
        assert response.status_code in (200, 400), (query[:30], response.status_code)
        if response.status_code == 200:
            CHECKS["atom"](response.data)
        else:
            assert_clean_error(response.status_code, response.data, query[:30])


def test_archive_number_of_any_length_is_a_404(app: Flask) -> None:
    """int() of more than 4300 digits raises: it once escaped the fast path as a 500."""
    for path in ("/archive/" + "9" * 5_000 + "/feed.atom",
                 "/topics/nato/archive/" + "1" * 10_000 + "/feed.rss"):
        status, _, body = call(app, path)
        assert_clean_error(status, body, path[:30])


def test_limit_of_thousands_of_digits_is_a_400(app: Flask) -> None:
    """The length is checked before int(), which raises past 4300 digits (once a 500)."""
    for digits in (5_000, 100_000):
        status, _, body = call(app, "/feed.atom", query="limit=" + "9" * digits)
        assert status == 400, (digits, status)
        assert_clean_error(status, body, f"{digits} digits")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT",
                                    "PROPFIND", "FOO", "M-SEARCH"])
def test_unknown_methods_are_405(app: Flask, method: str) -> None:
    client = app.test_client()
    for path in ("/feed.atom", "/", "/articles/" + app.extensions["feedsvc"].collection
                 .entries[0].slug, "/healthz", "/feeds.opml", "/topics/nato/feed.json"):
        response = client.open(path, method=method, data=b"x" * 1000)
        assert response.status_code == 405, (method, path, response.status_code)
        assert "GET" in response.headers["Allow"]
        assert_clean_error(response.status_code, response.data, f"{method} {path}")


BAD_DATES = ["garbage", "\x00", "Mon, 99 Foo 2020 99:99:99 GMT", "-1", "0",
             "Sat, 01 Jan 10000 00:00:00 GMT", "Mon, 31 Feb 2020 00:00:00 GMT",
             "Tue, 01 Jan 0000 00:00:00 GMT", "9" * 400, "Wed, 21 Oct 2015 07:28:00 XYZ",
             "Thu, 01 Jan 1970 00:00:00 GMT, Fri, 02 Jan 1970 00:00:00 GMT"]


@pytest.mark.parametrize("path", ["/feed.atom", "/topics/nato/feed.rss", "/feed.json?limit=5",
                                  "/", "/feeds.opml"])
def test_bad_if_modified_since_is_ignored(app: Flask, path: str) -> None:
    client = app.test_client()
    full = client.get(path)
    assert full.status_code == 200
    for value in BAD_DATES:
        for extra in ({}, {"If-None-Match": '"nope"'}, {"Accept-Encoding": "gzip;q=nan"}):
            response = client.get(path, headers={"If-Modified-Since": value, **extra})
            assert response.status_code == 200, (value, extra)
            if "Accept-Encoding" not in extra:
                assert response.data == full.data


@pytest.mark.parametrize("path", ["/feed.atom", "/topics/nato/feed.rss", "/feed.json?limit=5",
                                  "/", "/feeds.opml"])
def test_preconditions_follow_rfc_9110_order(app: Flask, path: str) -> None:
    """13.2.2: If-Match first (a false one is a 412 whatever follows), lists of dates ignored."""
    client = app.test_client()
    full = client.get(path)
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
    future = "Fri, 01 Jan 2100 00:00:00 GMT"

    def status(**headers: str) -> int:
        return client.get(path, headers={k.replace("_", "-"): v for k, v in headers.items()}
                          ).status_code

    # The two cases of issue #15 part 4.
    assert status(If_Match='"nope"', If_None_Match='"other"') == 412
    assert status(If_Match='"nope"', If_None_Match=etag) == 412
    assert status(If_Match='"nope"', If_Modified_Since=future) == 412
    two = f"{future}, {future}"
    assert status(If_Modified_Since=two) == 200
    assert status(If_Modified_Since=f"{modified}, {modified}") == 200
    # What stays as it was.
    assert status(If_Match=etag) == 200 and status(If_Match="*") == 200
    assert status(If_Match=f'"nope", {etag}', If_None_Match=etag) == 304
    assert status(If_Match=f"W/{etag}") == 412  # If-Match compares strongly
    assert status(If_None_Match=f"W/{etag}") == 304  # If-None-Match weakly
    assert status(If_None_Match='"other"', If_Modified_Since=future) == 200  # INM wins
    assert status(If_Modified_Since=modified) == 304 and status(If_Modified_Since=future) == 304
    assert status(If_Unmodified_Since="Thu, 01 Jan 1970 00:00:00 GMT") == 412
    assert status(If_Unmodified_Since=future) == 200
    assert status(If_Unmodified_Since=f"{future}, {future}") == 200  # ignored too
    assert status(If_Match=etag, If_Unmodified_Since="Thu, 01 Jan 1970 00:00:00 GMT") == 200
    failed = client.get(path, headers={"If-Match": '"nope"'})
    assert failed.data == b"412 Precondition Failed\n"


ABSURD_LIMITS = ["-1", "0", "-0", "1e3", "0x10", "+5", " 5", "5 ", "5.0", "١٢", "５",
                 "99999999999999999999", "9" * 4000, "NaN", "inf", "", "%00", "1 OR 1=1",
                 "<script>", "[]", "{}", "5\x00"]


def test_absurd_limit_and_page_values(app: Flask) -> None:
    client = app.test_client()
    maximum = app.config["FEEDSVC"].max_limit
    for value in ABSURD_LIMITS:
        for path in ("/feed.atom", "/topics/nato/feed.json"):
            response = client.get(path, query_string={"limit": value})
            assert_clean_error(response.status_code, response.data, f"limit={value!r}")
            assert response.status_code == 400
    # huge but well-formed: clamped to the maximum, as documented
    response = client.get("/feed.json", query_string={"limit": str(maximum * 1000)})
    assert response.status_code == 200
    CHECKS["json"](response.data)
    for value in ("-1", "0", "9" * 50, "abc", "<script>"):  # there is no page parameter
        response = client.get("/feed.atom", query_string={"page": value})
        assert response.status_code == 200
        assert b"<script>" not in response.data


def test_error_pages_leak_nothing(make_app, articles_dir: Path) -> None:
    app = make_app(articles_dir)

    def boom() -> str:
        raise RuntimeError(f"failed reading {ROOT}/secret.txt\nTraceback (most recent call)")

    app.add_url_rule("/boom", "boom", boom)
    client = app.test_client()
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.content_type.startswith("text/plain")
    for marker in LEAKS:
        assert marker not in response.data
    for path in ("/nope", "/topics/nope/", "/articles/nope", "/archive/9/feed.atom",
                 "/feed.atom?limit=x"):
        response = client.get(path)
        assert_clean_error(response.status_code, response.data, path)
        assert response.content_type.startswith("text/plain"), path


def test_hostile_host_header_without_base_url(make_app, articles_dir: Path) -> None:
    """Links come from the Host header then; werkzeug raises on a port above 65535."""
    app = make_app(articles_dir, base_url=None)
    for host in ("x:99999999", "x:abc", "[::1", "a b", "x:-1", "<script>", "evil.example"):
        for path in ("/feed.atom", "/", "/feed.rss?limit=2", "/feeds.opml"):
            status, _, body = call(app, path, headers={"Host": host})
            assert status < 500, (host, path, status)
            assert b"<script>" not in body


TRUSTED_PATHS = ["/feed.atom", "/topics/nato/feed.rss", "/archive/1/feed.json", "/",
                 "/feed.rss?limit=2", "/feeds.opml", "/static/style.css", "/nope", "/healthz"]


def test_untrusted_hosts_get_one_400_before_any_render(make_app, articles_dir: Path) -> None:
    """FEEDSVC_TRUSTED_HOSTS: the fast path and Flask refuse alike, and nothing renders."""
    app = make_app(articles_dir, base_url=None,
                   trusted_hosts="news.example.org,.example.net,[::1]")
    publisher = app.extensions["feedsvc"]
    refused: set[bytes] = set()
    for host in ("evil.example", "news.example.org.evil", "xnews.example.org", "example.com",
                 "[::2]", "[::1x]", "[fe80::1]:80", "localhost", "news.example.org@evil",
                 # werkzeug takes lower case only: case variants would be new links each
                 "NEWS.example.org"):
        for path in TRUSTED_PATHS:
            status, headers, body = call(app, path, headers={"Host": host})
            assert status == 400, (host, path, status)
            assert headers["Content-Type"].startswith("text/plain")
            refused.add(body.replace(repr(host).encode(), b"HOST"))
    assert refused == {b"400 Bad Request: Host HOST is not trusted.\n"}, refused
    assert publisher.renders == 0
    for host in ("news.example.org", "news.example.org:8443", "example.net", "a.b.example.net",
                 "[::1]", "[::1]:8000"):
        status, _, body = call(app, "/feed.atom", headers={"Host": host})
        assert status == 200, host
        assert f"http://{host}/feed.atom".encode() in body, host
    assert call(app, "/feed.rss?limit=2", headers={"Host": "news.example.org"})[0] == 200


def test_random_hosts_render_nothing(make_app, articles_dir: Path) -> None:
    """Issue #15 part 2: a new Host per request no longer means a new render."""
    import random

    app = make_app(articles_dir, base_url=None, trusted_hosts="news.example.org")
    publisher = app.extensions["feedsvc"]
    assert call(app, "/feed.atom", headers={"Host": "news.example.org"})[0] == 200
    renders = publisher.renders
    rng = random.Random(2)
    for number in range(300):
        host = f"{rng.getrandbits(48):x}.example:{rng.randrange(1, 65536)}"
        path = ("/feed.atom", "/feed.json", "/", "/topics/nato/feed.rss?limit=3")[number % 4]
        assert call(app, path, headers={"Host": host})[0] == 400
    assert publisher.renders == renders
    assert len(publisher.cache.items) == 1


def test_limits_redirect_to_a_few_documents(make_app, articles_dir: Path) -> None:
    """Issue #15 part 5: ?limit=1..N makes a handful of documents per feed, not N."""
    from feedsvc.publisher import allowed_limits

    app = make_app(articles_dir, feed_size=5, max_limit=100)
    client = app.test_client()
    publisher = app.extensions["feedsvc"]
    total = len(publisher.collection.entries)
    allowed = allowed_limits(5, 100)
    assert allowed == (1, 2, 5, 10, 100)
    assert allowed_limits(50, 1000) == (1, 2, 5, 10, 20, 50, 100, 1000)

    def ratio(a: int, b: int) -> float:
        return max(a / b, b / a)

    for n in range(1, 130):
        response = client.get(f"/feed.json?limit={n}")
        if n in allowed or n > 100:  # above max_limit: clamped, as before
            assert response.status_code == 200, n
            served = min(n, 100)
        else:
            assert response.status_code == 301, n
            location = response.headers["Location"]
            assert location.startswith("/feed.json?limit="), location
            served = int(location.rsplit("=", 1)[1])
            assert served in allowed, n
            assert all(ratio(a, n) >= ratio(served, n) for a in allowed), (n, served)
            assert response.headers["Cache-Control"].startswith("public, max-age=")
            response = client.get(location)
        items = CHECKS["json"](response.data)["items"]
        assert len(items) == min(served, total), n
    keys = [k for k in publisher.cache.items if k[0] == "feed"]
    # limit=5 is the subscription document itself; limits past the feed's length are one
    assert len(keys) == 1 + len({min(a, total) for a in allowed if a != 5}) <= len(allowed), keys
    assert publisher.feed(SITE_FEED, "json", "https://x.example", limit=37).body == (
        publisher.feed(SITE_FEED, "json", "https://x.example", limit=50).body)


def test_cache_bound_counts_everything_it_holds(make_app, articles_dir: Path) -> None:
    """Bodies, gzip forms, fragments and index entries are counted, and kept under the bound."""
    from feedsvc.http import forms_of
    from feedsvc.publisher import FRAGMENT_SHARE
    from feedsvc.rendercache import DOCUMENT_OVERHEAD

    bound = 1024 * 1024
    app = make_app(articles_dir, base_url=None, trusted_hosts=".example", cache_bytes=bound)
    publisher = app.extensions["feedsvc"]
    assert publisher.max_cache_bytes + publisher.fragments.max_bytes == bound
    assert publisher.fragments.max_bytes == int(bound * FRAGMENT_SHARE)
    paths = [f"{p}/feed.{f}" for p in ("", "/topics/nato", "/authors/sara-wazowski")
             for f in ("atom", "rss", "json")] + ["/", "/feeds.opml"]
    for number in range(60):  # many hosts: every one a new set of documents
        for path in paths:
            headers = {"Host": f"h{number}.example"}
            if number % 2:
                headers["Accept-Encoding"] = "gzip"
            assert call(app, path, headers=headers)[0] == 200
        held = sum(len(r.body) + len(forms_of(r).gzip_made or b"") + DOCUMENT_OVERHEAD
                   for _, r in publisher.cache.items.values())
        assert publisher.cache.bytes == held <= publisher.max_cache_bytes
        fragments = publisher.fragments
        assert fragments.bytes == sum(len(b) + fragments.OVERHEAD
                                      for b in fragments._items.values()) <= fragments.max_bytes
        indexed = {key for keys in publisher.cache.keys_by_ref.values() for key in keys}
        assert indexed <= set(publisher.cache.items), "evicted keys left in the per-feed index"
        assert publisher.cache_bytes <= bound
    assert publisher.renders > len(publisher.cache.items)  # evictions happened


def test_overhead_figures_cover_what_is_measured(make_app, articles_dir: Path) -> None:
    """DOCUMENT_OVERHEAD and FragmentCache.OVERHEAD are at least what tracemalloc sees."""
    import gc
    import tracemalloc

    from feedsvc.collection import FeedRef
    from feedsvc.http import forms_of
    from feedsvc.render import FragmentCache
    from feedsvc.rendercache import DOCUMENT_OVERHEAD, RenderKey

    app = make_app(articles_dir)
    publisher = app.extensions["feedsvc"]
    publisher.clear_cache()
    entries = publisher.collection.entries
    tracemalloc.start()
    try:
        # What a cache holds is what forgetting it frees.
        for n in range(300):
            ref = FeedRef("topic", f"topic-{n % 7}")
            key = RenderKey.feed(ref, "atom", f"https://host-{n}.example.org", limit=n)
            rendered = publisher.cached(key, f"{n:032x}", lambda n=n: (
                b"x" * (2000 + n), "application/atom+xml", entries[0].updated), "feed")
            forms_of(rendered).gzip(rendered)  # the web side's validators and gzip form
        del rendered
        held = sum(len(r.body) + len(forms_of(r).gzip_made or b"")
                   for _, r in publisher.cache.items.values())
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        publisher.clear_cache()
        gc.collect()
        per_document = (before - tracemalloc.get_traced_memory()[0] - held) / 300
        fragments = FragmentCache()
        for entry in entries:
            for fmt in ("atom", "rss"):
                fragments._fragment(entry, fmt, publisher.site, "https://news.example.org")
        count, held = len(fragments), sum(len(b) for b in fragments._items.values())
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        del fragments
        gc.collect()
        per_fragment = (before - tracemalloc.get_traced_memory()[0] - held) / count
    finally:
        tracemalloc.stop()
    assert 0 < per_document <= DOCUMENT_OVERHEAD, per_document
    assert 0 < per_fragment <= FragmentCache.OVERHEAD, per_fragment


# --- the WSGI entry point ------------------------------------------------------------------


def test_wsgi_entry_point_never_debugs(tmp_path: Path) -> None:
    """Even with FLASK_DEBUG=1 (and the old FLASK_ENV) the app in wsgi.py is not in debug."""
    shutil.copytree(BUNDLED, tmp_path / "articles")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDSVC_", "FLASK_"))}
    env.update(FLASK_DEBUG="1", FLASK_ENV="development",
               FEEDSVC_ARTICLES_DIR=str(tmp_path / "articles"),
               FEEDSVC_LEDGER_PATH=str(tmp_path / "ledger.db"),
               FEEDSVC_BASE_URL="https://news.example.org")
    script = (
        "import json, wsgi\n"
        "app = wsgi.app\n"
        "def boom():\n"
        "    raise RuntimeError('secret path /work/x')\n"
        "app.add_url_rule('/boom', 'boom', boom)\n"
        "response = app.test_client().get('/boom')\n"
        "print(json.dumps({'debug': app.debug, 'DEBUG': app.config['DEBUG'],\n"
        "                  'status': response.status_code,\n"
        "                  'body': response.get_data(as_text=True)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["debug"] is False and result["DEBUG"] is False
    assert result["status"] == 500
    assert "secret path" not in result["body"] and "Traceback" not in result["body"]


# --- raw requests to a real gunicorn -------------------------------------------------------


class Gunicorn:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def raw(self, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        """Send raw bytes; return the status and the whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        answer = b"".join(chunks)
        match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
        assert match, answer[:200]
        return int(match[1]), answer

    def get(self, target: bytes, headers: bytes = b"", method: bytes = b"GET"
            ) -> tuple[int, bytes]:
        return self.raw(method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        + headers + b"Connection: close\r\n\r\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    tmp = tmp_path_factory.mktemp("hostile-gunicorn")
    articles = tmp / "articles"
    shutil.copytree(BUNDLED, articles)
    (articles / HOSTILE_FOLDER).mkdir()
    (articles / HOSTILE_FOLDER / "hostile.txt").write_text(HOSTILE_ARTICLE, encoding="utf-8")
    write_article(articles, "plain.txt", "Plain Story For Raw Requests")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDSVC_", "FLASK_"))}
    env.update(FEEDSVC_ARTICLES_DIR=str(articles), FEEDSVC_LEDGER_PATH=str(tmp / "l.db"),
               FEEDSVC_BASE_URL=f"http://127.0.0.1:{port}", FEEDSVC_RELOAD_INTERVAL="0",
               FLASK_DEBUG="1", FLASK_ENV="development")
    log_path = tmp / "gunicorn.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
             "--no-control-socket", "wsgi:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Gunicorn(port, log_path)
    deadline = time.monotonic() + 60
    ready = 0  # each of the 2 workers loads on its own: ask until both have answered ready
    while True:
        try:
            ready = ready + 1 if server.get(b"/readyz")[0] == 200 else 0
            if ready >= 20:
                break
        except OSError:
            ready = 0
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait()
            pytest.fail("gunicorn did not start:\n" + log_path.read_text())
        time.sleep(0.1)
    yield server
    proc.terminate()
    proc.wait(timeout=30)


RAW_TRAVERSALS = [t.encode() for t in TRAVERSALS] + [
    b"/static/../../../../etc/passwd", b"/static/..\\..\\..\\etc\\passwd",
    b"/topics/../../../etc/passwd/feed.atom", b"/./../wsgi.py", b"/%2e%2e/wsgi.py",
    b"/static/\xc0\xae\xc0\xae/wsgi.py", b"/\xff\xfe", b"/static/style.css/..",
]


def test_raw_traversals_over_http(gunicorn: Gunicorn) -> None:
    assert gunicorn.get(b"/static/style.css")[0] == 200  # the control
    for target in RAW_TRAVERSALS:
        status, answer = gunicorn.get(target)
        if status in (301, 302, 307, 308):  # merged slashes: follow it once, on this site
            location = re.search(rb"\r\nLocation: ([^\r]*)", answer)[1]
            assert re.match(rb"(/|http://127\.0\.0\.1[:/])", location), location
            status, answer = gunicorn.get(re.sub(rb"^http://[^/]+", b"", location))
        assert_clean_error(status, answer.split(b"\r\n\r\n", 1)[-1], repr(target))


def test_raw_garbage_over_http(gunicorn: Gunicorn) -> None:
    requests = {
        "long path": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "long query": b"GET /feed.atom?" + b"a=b&" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "long header": b"GET /feed.atom HTTP/1.1\r\nHost: x\r\nX-A: " + b"b" * 20000
                       + b"\r\n\r\n",
        "many headers": b"GET /feed.atom HTTP/1.1\r\nHost: x\r\n"
                        + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n",
        "lower-case method": b"get /feed.atom HTTP/1.1\r\nHost: x\r\n\r\n",
        "no version": b"GET /feed.atom\r\n\r\n",
        "garbage line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        "bad bytes in path": b"GET /\x00\x01\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        "smuggling": b"GET /feed.atom HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        "bad content length": b"POST /feed.atom HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "unknown method": b"BREW /feed.atom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "method on page": b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    }
    before = gunicorn.log.read_bytes()
    for what, request in requests.items():
        status, answer = gunicorn.raw(request)
        assert_clean_error(status, answer.split(b"\r\n\r\n", 1)[-1], what)
    after = gunicorn.log.read_bytes()[len(before):]
    assert b"Traceback" not in after, after.decode(errors="replace")


def test_bad_validators_and_limits_over_http(gunicorn: Gunicorn) -> None:
    full_status, full = gunicorn.get(b"/feed.atom")
    assert full_status == 200
    for value in BAD_DATES:
        status, answer = gunicorn.get(b"/feed.atom", b"If-Modified-Since: "
                                      + value.replace("\x00", "").encode() + b"\r\n")
        assert status == 200, value
    for value in ABSURD_LIMITS:
        target = b"/feed.atom?limit=" + value.encode().replace(b" ", b"%20")
        if len(target) > 4000:
            continue  # gunicorn's own request-line limit answers those (414)
        status, answer = gunicorn.get(target)
        assert_clean_error(status, answer.split(b"\r\n\r\n", 1)[-1], f"limit={value!r}")


def test_debugger_is_not_reachable_over_http(gunicorn: Gunicorn) -> None:
    """FLASK_DEBUG=1 in gunicorn's environment: still no debugger, no debug pages."""
    for target in (b"/?__debugger__=yes&cmd=resource&f=debugger.js",
                   b"/console", b"/?__debugger__=yes&cmd=printpin&s=x"):
        status, answer = gunicorn.get(target)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"javascript" not in head.lower() and b"Werkzeug" not in body
        assert b"pin" not in body.lower() or status == 200 and b"<!doctype html>" in body
        assert status in (200, 404)
