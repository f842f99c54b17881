"""feedsvc as deployed: gunicorn with deploy/gunicorn.conf.py behind nginx with
deploy/nginx/feedsvc.conf, both real processes on 127.0.0.1.

The site file is the shipped one; only its marked lines (listen, upstream,
cache folder, log file) are replaced (see tests/deploy_harness.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import runpy
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree

from tests.conftest import BUNDLED, ROOT, write_article
from tests.deploy_harness import NGINX, NGINX_MISSING, Gunicorn, Nginx, Reply, fetch, site_from
from tests.feedcheck import ATOM, check_atom

MAX_AGE = 2
RELOAD = 0.5
SETTLE = 1.0  # the publisher's settle time for a file just written
SLACK = 3.0  # a loaded CI machine with other tests running
#: nginx keeps expiry times in whole seconds: an entry may stay fresh up to a
#: second past max-age.
NGINX_CLOCK = 1.1
PUBLIC_HOST = "feeds.example.test"


# -- the gunicorn settings file on its own ---------------------------------------


def _load_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name in ("FEEDSVC_BIND", "FEEDSVC_WORKERS", "FEEDSVC_MAX_WORKERS", "FEEDSVC_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))


def test_gunicorn_conf_workers_and_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    conf = _load_conf(monkeypatch)
    assert conf["workers"] == min(2 * cores + 1, 8)
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["control_socket_disable"] is True
    assert _load_conf(monkeypatch, FEEDSVC_MAX_WORKERS="2")["workers"] == 2
    assert _load_conf(monkeypatch, FEEDSVC_WORKERS="7")["workers"] == 7
    assert conf["default_workers"](16, 8) == 8 and conf["default_workers"](1, 8) == 3
    assert _load_conf(monkeypatch, FEEDSVC_BIND="0.0.0.0:80, unix:/run/f.sock")["bind"] == [
        "0.0.0.0:80", "unix:/run/f.sock"]


# -- through nginx ------------------------------------------------------------------


pytestmark = pytest.mark.slow


@dataclass
class Stack:
    nginx: Nginx
    gunicorn: Gunicorn
    articles: Path
    cache: Path

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return fetch(self.nginx.port, path, {"Host": PUBLIC_HOST, **(headers or {})})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if NGINX is None:
        pytest.skip(NGINX_MISSING)
    tmp = tmp_path_factory.mktemp("nginx")
    articles = tmp / "articles"
    shutil.copytree(BUNDLED, articles)
    gunicorn = Gunicorn(tmp, {
        "FEEDSVC_ARTICLES_DIR": str(articles),
        "FEEDSVC_LEDGER_PATH": str(tmp / "ledger.sqlite3"),
        "FEEDSVC_TRUSTED_PROXIES": "1",
        # The public name, and 127.0.0.1 for monitoring that asks gunicorn directly.
        "FEEDSVC_TRUSTED_HOSTS": f"{PUBLIC_HOST},127.0.0.1",
        "FEEDSVC_CACHE_MAX_AGE": str(MAX_AGE),
        "FEEDSVC_RELOAD_INTERVAL": str(RELOAD),
    })
    try:
        site = site_from("feedsvc.conf", {
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{gunicorn.port};",
            "proxy_cache_path /var/cache/nginx/feedsvc ": f"proxy_cache_path {tmp / 'cache'} ",
            "listen 80;": "listen 127.0.0.1:@PORT@;",
            "listen [::]:80;": "",
            "listen 80 default_server;": "listen 127.0.0.1:@PORT@ default_server;",
            "listen [::]:80 default_server;": "",
            "server_name news.example.org;": f"server_name {PUBLIC_HOST};",
            "access_log /var/log/nginx/feedsvc.access.log;": f"access_log {tmp / 'site.log'};",
        })
        nginx = Nginx(tmp / "nginx", site)
    except BaseException:
        gunicorn.stop()
        raise
    yield Stack(nginx, gunicorn, articles, tmp / "cache")
    nginx.stop()
    output = gunicorn.stop()
    print(output)  # shown by pytest when a test of this module fails
    assert "Traceback" not in output and "WORKER TIMEOUT" not in output, output


def test_second_request_is_a_cache_hit(stack: Stack) -> None:
    first = stack.get("/topics/nato/feed.atom")
    second = stack.get("/topics/nato/feed.atom")
    assert first.status == 200 and first.headers["X-Cache-Status"] == "MISS"
    assert second.status == 200 and second.headers["X-Cache-Status"] == "HIT"
    assert second.body == first.body and second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["Cache-Control"] == f"public, max-age={MAX_AGE}"
    check_atom(second.body)


def test_uncacheable_answers_are_never_cached(stack: Stack) -> None:
    """/healthz says no-store and a 404 says nothing: nginx must ask gunicorn each time."""
    for path in ("/healthz", "/topics/no-such-topic/feed.atom"):
        statuses = [stack.get(path).headers["X-Cache-Status"] for _ in range(3)]
        assert "HIT" not in statuses, (path, statuses)


def test_client_if_none_match_gets_304_from_the_cache(stack: Stack) -> None:
    first = stack.get("/authors/sara-wazowski/feed.rss")
    etag = first.headers["ETag"]
    again = stack.get("/authors/sara-wazowski/feed.rss", {"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.headers["ETag"] == etag
    assert again.headers["X-Cache-Status"] == "HIT"
    other = stack.get("/authors/sara-wazowski/feed.rss", {"If-None-Match": '"something-else"'})
    assert other.status == 200 and other.body == first.body


def test_stale_entry_is_revalidated_with_our_etag(stack: Stack) -> None:
    """After max-age nginx asks gunicorn with If-None-Match; gunicorn's 304 refreshes it."""
    path = "/topics/china/feed.json"
    first = stack.get(path)
    assert first.headers["X-Cache-Status"] == "MISS"
    time.sleep(MAX_AGE + NGINX_CLOCK)
    again = stack.get(path)
    assert again.status == 200 and again.body == first.body
    assert again.headers["X-Cache-Status"] == "REVALIDATED"
    deadline = time.monotonic() + 10
    pattern = re.compile(rf'"GET {re.escape(path)} HTTP/1\.1" 304 .* \d+ms ')
    while not pattern.search(stack.gunicorn.output()):  # the access log is buffered a little
        assert time.monotonic() < deadline, "no 304 for the revalidation in gunicorn's log"
        time.sleep(0.1)


def test_gzip_passes_through_with_our_etag(stack: Stack) -> None:
    path = "/topics/ukraine/feed.atom"
    plain = stack.get(path)
    zipped = stack.get(path, {"Accept-Encoding": "gzip"})
    assert zipped.status == 200
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept, Accept-Encoding"
    # feedsvc's gzip ETag is a digest of its gzip bytes: the same bytes arrived,
    # not a copy nginx compressed again (nginx would also weaken the ETag).
    digest = hashlib.sha256(zipped.body).hexdigest()[:32]
    assert zipped.headers["ETag"] == f'"{digest}-gz"'
    assert gzip.decompress(zipped.body) == plain.body
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["ETag"] != zipped.headers["ETag"]
    # Every spelling that takes gzip shares one cache entry; q=0 refuses it.
    browser = stack.get(path, {"Accept-Encoding": "br, gzip, deflate, zstd"})
    assert browser.headers["X-Cache-Status"] != "MISS" and browser.body == zipped.body
    refused = stack.get(path, {"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in refused.headers and refused.body == plain.body
    assert stack.get(path, {"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]}
                     ).status == 304


def test_browsers_and_readers_get_their_own_cached_variant(stack: Stack) -> None:
    """A browser's HTML preview must never be served to a reader, or back."""
    path = "/topics/nato/feed.rss"
    chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    firefox = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
               "image/webp,*/*;q=0.8")
    reader = "application/rss+xml, application/atom+xml;q=0.9, */*;q=0.1"
    for _ in range(2):  # the second round comes from the cache
        as_browser = stack.get(path, {"Accept": chrome})
        as_reader = stack.get(path, {"Accept": reader})
        assert as_browser.headers["Content-Type"] == "text/html; charset=utf-8"
        assert as_browser.headers["X-Content-Type-Options"] == "nosniff"
        assert as_reader.headers["Content-Type"] == "application/rss+xml; charset=utf-8"
        assert b'id="feed-url"' in as_browser.body and b"<rss" in as_reader.body
        assert as_browser.headers["ETag"] != as_reader.headers["ETag"]
        for accept in ("text/html;q=0, */*", "application/xml", "text/html, application/rss+xml"):
            assert stack.get(path, {"Accept": accept}).body == as_reader.body, accept
    assert as_browser.headers["X-Cache-Status"] == "HIT"
    assert as_reader.headers["X-Cache-Status"] == "HIT"
    other = stack.get(path, {"Accept": firefox})  # another spelling: the same cache entry
    assert other.headers["X-Cache-Status"] == "HIT" and other.body == as_browser.body
    again = stack.get(path, {"Accept": chrome, "If-None-Match": as_browser.headers["ETag"]})
    assert again.status == 304


def test_links_use_the_public_host_scheme_and_port(stack: Stack) -> None:
    """No FEEDSVC_BASE_URL: links come from what nginx forwarded, through ProxyFix.

    The client also sends forged X-Forwarded-* headers: nginx replaces them.
    """
    public = f"http://{PUBLIC_HOST}:{stack.nginx.port}"
    reply = stack.get("/feed.atom", {"X-Forwarded-Host": "evil.example",
                                     "X-Forwarded-Proto": "https"})
    assert reply.headers["X-Cache-Status"] == "MISS"
    doc = etree.fromstring(reply.body)
    self_link = doc.find(f"{ATOM}link[@rel='self']").get("href")
    assert self_link == f"{public}/feed.atom"
    entry_links = doc.xpath("//a:entry/a:link/@href", namespaces={"a": ATOM[1:-1]})
    assert entry_links and all(link.startswith(f"{public}/articles/") for link in entry_links)
    assert f'href="{public}/static/feed.xsl"'.encode() in reply.body.split(b"\n", 2)[1]
    page = stack.get("/")
    assert f'href="{public}/topics/'.encode() in page.body


def test_a_change_reaches_clients_through_the_cache(stack: Stack) -> None:
    path = "/feed.atom?limit=100"
    assert stack.get(path).status == 200
    assert stack.get(path).headers["X-Cache-Status"] == "HIT"
    title = "Cache Passes Edits Along"
    written = time.monotonic()
    write_article(stack.articles, "through-nginx.txt", title, author="Sara Wazowski",
                  topic="cache check", body="A paragraph that must reach readers.")
    budget = MAX_AGE + NGINX_CLOCK + RELOAD + SETTLE + SLACK
    statuses: list[str] = []
    while True:
        reply = stack.get(path)
        statuses.append(reply.headers["X-Cache-Status"])
        if title.encode() in reply.body:
            break
        assert time.monotonic() - written < budget, f"not seen within {budget} s: {statuses}"
        time.sleep(0.1)
    # Seen because the cached copy expired and nginx fetched the new one.
    assert statuses[-1] in ("EXPIRED", "MISS"), statuses
    assert any(title == e.title for e in check_atom(reply.body).entries)


# -- forged forwarding and host headers ---------------------------------------------


def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until nginx closes: what came back (b"" for a 444)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _links(body: bytes, fmt: str) -> list[str]:
    """Every URL a reader follows in a feed: feed, entry and stylesheet links."""
    if fmt == "json":
        doc = json.loads(body)
        return [doc["home_page_url"], doc["feed_url"]] + [i["url"] for i in doc["items"]]
    parsed = feedparser.parse(body)
    links = [link.href for link in parsed.feed.get("links", [])]
    for entry in parsed.entries:
        links += [link.href for link in entry.get("links", [])]
    links += re.findall(rb'<\?xml-stylesheet [^>]*href="([^"]+)"', body)
    return [link.decode() if isinstance(link, bytes) else link for link in links]


def _assert_clean(stack: Stack, body: bytes, fmt: str) -> None:
    links = _links(body, fmt)
    assert len(links) > 2, body[:300]
    for link in links:
        parts = urlsplit(link)
        assert (parts.scheme, parts.netloc) == ("http", f"{PUBLIC_HOST}:{stack.nginx.port}"), link
        assert parts.path.startswith(("/articles/", "/authors/", "/topics/", "/static/",
                                      "/feed.", "/archive/")) or parts.path == "/", link
        assert "evil" not in link, link


FORGERIES: list[tuple[str, dict[str, str]]] = [
    ("prefix-userinfo", {"X-Forwarded-Prefix": "@evil.example"}),
    ("prefix-path", {"X-Forwarded-Prefix": "/evil-prefix"}),
    ("forwarded-host", {"X-Forwarded-Host": "evil.example"}),
    ("forwarded-proto", {"X-Forwarded-Proto": "https"}),
    ("forwarded-port", {"X-Forwarded-Port": "6666"}),
    ("forwarded-server", {"X-Forwarded-Server": "evil.example", "X-Forwarded-Ssl": "on"}),
    ("rfc7239", {"Forwarded": "for=6.6.6.6;host=evil.example;proto=https"}),
    ("host-with-port", {"Host": f"{PUBLIC_HOST}:6666"}),
    ("host-upper-case", {"Host": PUBLIC_HOST.upper()}),
    ("everything", {"X-Forwarded-Prefix": "@evil.example", "X-Forwarded-Host": "evil.example",
                    "X-Forwarded-Proto": "https", "X-Forwarded-Port": "6666",
                    "Forwarded": "host=evil.example", "X-Forwarded-For": "6.6.6.6"}),
]


def test_forged_forwarding_headers_never_reach_a_cached_response(stack: Stack) -> None:
    """Issue #15 part 1: the forged request fills the cache, a clean one reads it."""
    opml = stack.get("/feeds.opml")
    used = {"/topics/nato", "/topics/china", "/topics/ukraine", "/authors/sara-wazowski"}
    feeds = sorted({prefix.decode() for prefix in re.findall(
        rb'xmlUrl="[^"]*?(/(?:authors|topics)/[^/"]+)/feed\.atom"', opml.body)} - used)
    assert len(feeds) >= len(FORGERIES), feeds  # a fresh feed per forgery: the forged one fills it
    for number, ((name, forged), prefix) in enumerate(zip(FORGERIES, feeds, strict=False)):
        fmt = ("atom", "rss", "json")[number % 3]
        path = f"{prefix}/feed.{fmt}"
        poisoned = stack.get(path, forged)
        assert poisoned.status == 200, (name, poisoned.status)
        assert poisoned.headers["X-Cache-Status"] == "MISS", (name, path)
        _assert_clean(stack, poisoned.body, fmt)
        clean = stack.get(path)
        assert clean.headers["X-Cache-Status"] == "HIT", name
        assert clean.body == poisoned.body, name
        _assert_clean(stack, clean.body, fmt)


def test_absolute_form_targets(stack: Stack) -> None:
    """The request line's host chooses the server: another host is closed on, ours is pinned."""
    port = stack.nginx.port
    closed = _raw(port, f"GET http://evil.example/feed.rss HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\n"
                        "Connection: close\r\n\r\n".encode())
    assert closed == b""
    path = "/feed.rss"
    answer = _raw(port, f"GET http://{PUBLIC_HOST}{path} HTTP/1.1\r\nHost: evil.example\r\n"
                        "X-Forwarded-Prefix: @evil.example\r\nConnection: close\r\n\r\n"
                        .encode())
    status, headers, body = _split(answer)
    assert status == 200 and headers["X-Cache-Status"] == "MISS"
    _assert_clean(stack, body, "rss")
    again = stack.get(path)
    assert again.headers["X-Cache-Status"] == "HIT" and again.body == body
    _assert_clean(stack, again.body, "rss")


def _cache_files(folder: Path) -> tuple[int, int]:
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.exists() else []
    return len(files), sum(f.stat().st_size for f in files)


def _upstream_requests(stack: Stack) -> int:
    return sum('" 200 ' in line or '" 304 ' in line or '" 400 ' in line
               for line in stack.gunicorn.output().splitlines() if "HTTP/1." in line)


def test_random_hosts_cost_no_render_and_no_cache(stack: Stack) -> None:
    """Issue #15 part 2: a new Host per request is closed on by nginx's default server."""
    assert stack.get("/feed.json").status == 200  # something cached, and the log flushed
    time.sleep(1.0)  # gunicorn's access log reaches the file a little later
    cache_before, logged_before = _cache_files(stack.cache), _upstream_requests(stack)
    rng = random.Random(15)
    for number in range(200):
        host = f"h{rng.getrandbits(40):x}.example{':8080' if number % 2 else ''}"
        path = ("/feed.atom", "/feed.json", f"/topics/nato/feed.rss?n={number}")[number % 3]
        answer = _raw(stack.nginx.port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                                        "Connection: close\r\n\r\n".encode())
        assert answer == b"", (host, answer[:200])
    time.sleep(1.0)
    assert _cache_files(stack.cache) == cache_before
    assert _upstream_requests(stack) == logged_before
    # ... and the site itself still answers.
    assert stack.get("/feed.json").status == 200
