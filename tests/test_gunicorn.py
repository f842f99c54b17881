"""The service as operators run it: ``gunicorn wsgi:app`` with 2 workers on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import feedparser
import pytest

from tests.conftest import BUNDLED, ROOT, write_article
from tests.feedcheck import CHECKS, check_atom

RELOAD = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, base: str, articles: Path) -> None:
        self.base = base
        self.articles = articles

    def get(self, path: str, headers: dict[str, str] | None = None):
        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def many(self, path: str, count: int = 60) -> list[tuple[int, dict, bytes]]:
        """Concurrent requests, so that both workers answer some."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda _: self.get(path), range(count)))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("gunicorn")
    articles = tmp / "articles"
    shutil.copytree(BUNDLED, articles)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_ARTICLES_DIR=str(articles), FEEDSVC_LEDGER_PATH=str(tmp / "ledger.db"),
               FEEDSVC_BASE_URL=base, FEEDSVC_RELOAD_INTERVAL=str(RELOAD),
               FEEDSVC_FEED_SIZE="5")
    log = (tmp / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--no-control-socket", "--log-level", "warning", "wsgi:app"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    srv = Server(base, articles)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if srv.get("/healthz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        proc.wait()
        pytest.fail("gunicorn did not start:\n" + (tmp / "gunicorn.log").read_text())
    seen: set[int] = set()
    while len(seen) < 2 and time.monotonic() < deadline:  # both workers booted
        seen |= _workers(srv)
    yield srv
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    output = (tmp / "gunicorn.log").read_text()
    print(output)  # shown by pytest when a test of this module fails
    assert "Traceback" not in output and "WORKER TIMEOUT" not in output, output


def _workers(server: Server) -> set[int]:
    """Workers that answered, once each has loaded the articles (feeds are 503 before)."""
    return {health["worker"] for _, _, body in server.many("/healthz")
            for health in [json.loads(body)] if health.get("loaded", True)}


def test_feeds_over_http_are_valid(server: Server) -> None:
    for path in ("/feed.atom", "/feed.rss", "/feed.json", "/topics/nato/feed.atom",
                 "/authors/sara-wazowski/feed.rss", "/archive/1/feed.json"):
        status, headers, body = server.get(path)
        assert status == 200, path
        CHECKS[path.rsplit(".", 1)[1]](body)


def test_etag_is_the_same_in_every_worker(server: Server) -> None:
    assert len(_workers(server)) == 2, "both workers should have answered"
    etags = {headers["ETag"] for _, headers, _ in server.many("/topics/china/feed.atom")}
    assert len(etags) == 1


def test_conditional_get_and_gzip_over_http(server: Server) -> None:
    status, headers, body = server.get("/feed.atom")
    assert status == 200
    for validators in ({"If-None-Match": headers["ETag"]},
                       {"If-Modified-Since": headers["Last-Modified"]},
                       {"If-None-Match": headers["ETag"],
                        "If-Modified-Since": headers["Last-Modified"]}):
        again = server.get("/feed.atom", validators)
        assert again[0] == 304 and again[2] == b""
    status, zheaders, zbody = server.get("/feed.atom", {"Accept-Encoding": "gzip"})
    assert zheaders["Content-Encoding"] == "gzip" and zheaders["ETag"] != headers["ETag"]
    assert gzip.decompress(zbody) == body
    assert server.get("/feed.atom", {"Accept-Encoding": "gzip",
                                     "If-None-Match": zheaders["ETag"]})[0] == 304


def test_feedparser_polls_with_etag_and_modified(server: Server) -> None:
    first = feedparser.parse(server.base + "/feed.atom")
    assert first.status == 200 and not first.bozo and first.entries
    second = feedparser.parse(server.base + "/feed.atom", etag=first.etag,
                              modified=first.modified)
    assert second.status == 304 and not second.entries


def test_bad_query_values(server: Server) -> None:
    for path in ("/feed.atom?limit=-1", "/feed.atom?limit=abc"):
        assert server.get(path)[0] == 400
    for path in ("/archive/999/feed.atom", "/archive/0/feed.rss", "/topics/none/feed.json"):
        assert server.get(path)[0] == 404


def _wait_until(check, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"not seen within {timeout} s")


def test_new_edited_and_deleted_files_reach_every_worker(server: Server) -> None:
    budget = RELOAD + 1.0 + 3.0  # interval + settle time + slack for a loaded machine
    path = write_article(server.articles, "live.txt", "Live Reload Reaches Workers",
                         author="Sara Wazowski", topic="live reload check",
                         body="A fresh paragraph for the live test.")

    def everyone_sees(needle: bytes, present: bool = True) -> bool:
        bodies = [body for _, _, body in server.many("/feed.atom?limit=100", 30)]
        return all((needle in body) == present for body in bodies)

    _wait_until(lambda: everyone_sees(b"Live Reload Reaches Workers"), budget)
    status, headers, body = server.get("/feed.atom?limit=100")
    parsed = check_atom(body)
    before = next(e for e in parsed.entries if e.title == "Live Reload Reaches Workers")
    time.sleep(1.1)
    path.write_text(path.read_text(encoding="utf-8").replace("fresh", "edited"),
                    encoding="utf-8")
    _wait_until(lambda: everyone_sees(b"A edited paragraph"), budget)
    status2, headers2, body2 = server.get("/feed.atom?limit=100")
    after = next(e for e in check_atom(body2).entries
                 if e.title == "Live Reload Reaches Workers")
    assert headers2["ETag"] != headers["ETag"]
    assert after.id == before.id and after.published == before.published
    assert after.updated > before.updated
    path.unlink()
    _wait_until(lambda: everyone_sees(b"Live Reload Reaches Workers", present=False), budget)


def test_archive_chain_over_http_collects_every_entry_once(server: Server) -> None:
    """Follow prev-archive from the subscription document to the oldest archive."""
    from lxml import etree

    atom = "{http://www.w3.org/2005/Atom}"
    ids: list[str] = []
    url: str | None = server.base + "/feed.atom"
    hops = 0
    while url:
        status, _, body = server.get(url.removeprefix(server.base))
        assert status == 200, url
        doc = etree.fromstring(body)
        ids += [e.findtext(f"{atom}id") for e in doc.iter(f"{atom}entry")]
        older = doc.findall(f"{atom}link[@rel='prev-archive']")
        url = older[0].get("href") if older else None
        hops += 1
    status, _, body = server.get("/feed.json?limit=1000")
    everything = [item["id"] for item in json.loads(body)["items"]]
    assert hops > 2
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(everything)
