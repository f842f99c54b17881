"""What aggregators that poll rely on: validators, cached renders, archives,
scheduled articles and WebSub pings, through the real app."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from lxml import etree

from feedsvc.websub import HubNotifier
from tests.conftest import BASE_URL, write_article
from tests.feedcheck import ATOM, CHECKS, check_atom, check_json

FH = "{http://purl.org/syndication/history/1.0}"


def test_unchanged_feed_is_never_rendered_twice(app) -> None:
    publisher = app.extensions["feedsvc"]
    client = app.test_client()
    first = client.get("/topics/nato/feed.atom")
    renders = publisher.renders
    for _ in range(5):
        again = client.get("/topics/nato/feed.atom",
                           headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304
        assert client.get("/topics/nato/feed.atom").data == first.data
    assert publisher.refresh().changed is False
    assert client.get("/topics/nato/feed.atom").status_code == 200
    assert publisher.renders == renders


def test_editing_one_article_rerenders_only_its_feeds(app, articles_dir) -> None:
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    client = app.test_client()
    before = {p: client.get(p).headers["ETag"] for p in (
        "/feed.atom", "/topics/china/feed.atom", "/topics/nato/feed.atom",
        "/authors/tomas-redfern/feed.atom")}
    target = next(p for p in articles_dir.glob("*.txt")
                  if "China Sends Three Astronauts" in p.read_text(encoding="utf-8"))
    time.sleep(1.1)
    target.write_text(target.read_text(encoding="utf-8").replace("Three", "3", 1) + "\n",
                      encoding="utf-8")
    assert publisher.refresh().read == 1
    after = {p: client.get(p).headers["ETag"] for p in before}
    assert after["/topics/nato/feed.atom"] == before["/topics/nato/feed.atom"]
    for path in ("/feed.atom", "/topics/china/feed.atom", "/authors/tomas-redfern/feed.atom"):
        assert after[path] != before[path], path


def _follow_chain(client, path: str, fmt: str) -> tuple[list[str], list[str]]:
    """Collect entry ids from the subscription document back through prev-archive."""
    ids: list[str] = []
    visited: list[str] = []
    while path:
        visited.append(path)
        response = client.get(path)
        assert response.status_code == 200, path
        body = response.data
        CHECKS[fmt](body)
        if fmt == "json":
            feed = json.loads(body)
            ids += [item["id"] for item in feed["items"]]
            nxt = feed.get("next_url")
        else:
            doc = etree.fromstring(body)
            if fmt == "atom":
                ids += [e.findtext(f"{ATOM}id") for e in doc.iter(f"{ATOM}entry")]
                links = doc.findall(f"{ATOM}link[@rel='prev-archive']")
            else:
                ids += [i.findtext("guid") for i in doc.iter("item")]
                links = doc.find("channel").findall(f"{ATOM}link[@rel='prev-archive']")
            nxt = links[0].get("href") if links else None
            if len(visited) > 1:
                assert doc.find(f".//{FH}archive") is not None, path
        path = nxt.removeprefix(BASE_URL) if nxt else None
    return ids, visited


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_archive_chain_collects_every_entry_exactly_once(make_app, articles_dir, fmt) -> None:
    app = make_app(articles_dir, feed_size=5)
    client = app.test_client()
    everything = app.extensions["feedsvc"].collection.entries
    ids, visited = _follow_chain(client, f"/feed.{fmt}", fmt)
    assert sorted(ids) == sorted(e.id for e in everything)
    assert len(ids) == len(set(ids))
    assert visited[1:] == [f"/archive/{k}/feed.{fmt}" for k in (4, 3, 2, 1)]
    topic_ids, _ = _follow_chain(client, f"/topics/china/feed.{fmt}", fmt)
    assert len(topic_ids) == len(set(topic_ids)) == app.extensions["feedsvc"].collection.topics[
        "china"].count


def test_archives_are_stable_and_long_lived(make_app, articles_dir) -> None:
    app = make_app(articles_dir, feed_size=5)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    client = app.test_client()
    oldest = client.get("/archive/1/feed.atom")
    assert oldest.headers["Cache-Control"] == "public, max-age=86400"
    partial = client.get("/archive/4/feed.atom")  # 21 - 5 = 16 = 5 + 5 + 5 + 1
    assert partial.headers["Cache-Control"] == "public, max-age=300"
    doc = etree.fromstring(oldest.data)
    rels = {link.get("rel"): link.get("href") for link in doc.findall(f"{ATOM}link")}
    assert rels["current"] == f"{BASE_URL}/feed.atom"
    assert rels["next-archive"] == f"{BASE_URL}/archive/2/feed.atom"
    assert "prev-archive" not in rels
    write_article(articles_dir, "brand-new.txt", "Brand New Story Arrives")
    publisher.refresh()
    assert client.get("/archive/1/feed.atom").data == oldest.data
    assert b"Brand New Story Arrives" in client.get("/feed.atom").data


@pytest.mark.parametrize("path", ["/archive/0/feed.atom", "/archive/99/feed.atom",
                                  "/archive/-1/feed.atom", "/archive/x/feed.atom",
                                  "/topics/nato/archive/1/feed.rss"])
def test_missing_archives_are_404(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/plain")


def test_limit_is_clamped(make_app, articles_dir) -> None:
    client = make_app(articles_dir, max_limit=7).test_client()
    assert len(check_json(client.get("/feed.json?limit=5000").data)["items"]) == 7
    assert len(check_json(client.get("/feed.json?limit=2").data)["items"]) == 2


def test_future_article_appears_when_its_time_comes(make_app, articles_dir) -> None:
    soon = time.time() + 3600
    stamp = time.strftime("%Y-%m-%d %H:%M:%S +00:00", time.gmtime(soon))
    write_article(articles_dir, "later.txt", "Embargoed Story Goes Live",
                  front=f"---\ndate: {stamp}\n---\n")
    app = make_app(articles_dir)
    publisher = app.extensions["feedsvc"]
    client = app.test_client()
    assert b"Embargoed Story Goes Live" not in client.get("/feed.atom").data
    assert publisher.next_due == pytest.approx(int(soon), abs=1)
    publisher.clock = lambda: soon + 1
    assert publisher.refresh().changed
    assert b"Embargoed Story Goes Live" in client.get("/feed.atom").data


# -- WebSub -------------------------------------------------------------------------


class _Hub:
    """A real HTTP server on 127.0.0.1 standing in for a WebSub hub."""

    def __init__(self, status: int = 204) -> None:
        self.pings: list[dict[str, list[str]]] = []
        self.status = status
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                hub.pings.append(parse_qs(self.rfile.read(length).decode()))
                self.send_response(hub.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub():
    server = _Hub()
    yield server
    server.close()


def test_feeds_advertise_the_hub(make_app, articles_dir, hub) -> None:
    client = make_app(articles_dir, websub_hubs=hub.url).test_client()
    response = client.get("/topics/nato/feed.atom")
    assert f'<{hub.url}>; rel="hub"' in response.headers["Link"]
    assert f'<{BASE_URL}/topics/nato/feed.atom>; rel="self"' in response.headers["Link"]
    doc = etree.fromstring(response.data)
    assert [link.get("href") for link in doc.findall(f"{ATOM}link[@rel='hub']")] == [hub.url]
    rss = etree.fromstring(client.get("/feed.rss").data)
    assert rss.find(f"channel/{ATOM}link[@rel='hub']").get("href") == hub.url
    assert check_json(client.get("/feed.json").data)["hubs"] == [
        {"type": "WebSub", "url": hub.url}]


def test_a_change_pings_the_hub_for_every_feed_it_touches(make_app, articles_dir, hub) -> None:
    app = make_app(articles_dir, websub_hubs=hub.url)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    notifier: HubNotifier = app.extensions["feedsvc.websub"]
    assert hub.pings == []  # starting up is not a change
    write_article(articles_dir, "ping.txt", "NATO Story That Pings", author="Sara Wazowski",
                  topic="nato ping test", body="NATO said something new today.")
    publisher.refresh()
    assert notifier.wait_idle()
    urls = sorted(p["hub.url"][0] for p in hub.pings)
    assert all(p["hub.mode"] == ["publish"] for p in hub.pings)
    expected = sorted(f"{BASE_URL}{prefix}/feed.{fmt}" for fmt in ("atom", "rss", "json")
                      for prefix in ("", "/topics/nato", "/topics/nato-ping-test",
                                     "/authors/sara-wazowski"))
    assert urls == expected


def test_a_hub_that_is_down_never_slows_serving(make_app, articles_dir, caplog) -> None:
    dead = _Hub()
    dead_url = dead.url
    dead.close()  # nothing listens there now
    app = make_app(articles_dir, websub_hubs=dead_url)
    notifier: HubNotifier = app.extensions["feedsvc.websub"]
    notifier.backoff = 0.05
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    write_article(articles_dir, "x.txt", "Story While Hub Is Down")
    started = time.perf_counter()
    publisher.refresh()
    response = app.test_client().get("/feed.atom")
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 200
    with caplog.at_level("ERROR", logger="feedsvc.websub"):
        assert notifier.wait_idle(timeout=30)
    assert notifier.failed > 0 and notifier.sent == 0
    assert any("did not take the ping" in r.getMessage() for r in caplog.records)


def test_a_failing_hub_is_retried_with_backoff() -> None:
    calls: list[float] = []

    def flaky(hub: str, url: str, timeout: float) -> int:
        calls.append(time.monotonic())
        return 503 if len(calls) < 3 else 202

    notifier = HubNotifier(["http://127.0.0.1:9/hub"], backoff=0.05, send=flaky)
    notifier.notify(["https://x.example/feed.atom"])
    assert notifier.wait_idle()
    assert len(calls) == 3 and notifier.sent == 1 and notifier.failed == 0
    assert calls[2] - calls[1] >= calls[1] - calls[0] >= 0.04
    notifier.stop()


def test_hubs_without_base_url_is_a_config_error(make_app, articles_dir) -> None:
    from feedsvc.errors import ConfigError

    with pytest.raises(ConfigError, match="FEEDSVC_WEBSUB_HUBS"):
        make_app(articles_dir, websub_hubs="http://127.0.0.1:1/hub", base_url=None)


def test_feedparser_gets_304_on_second_poll_over_the_test_client(client) -> None:
    first = client.get("/feed.atom")
    parsed = check_atom(first.data)
    assert parsed.entries
    again = client.get("/feed.atom", headers={"If-None-Match": first.headers["ETag"],
                                              "If-Modified-Since": first.headers[
                                                  "Last-Modified"]})
    assert again.status_code == 304


def test_fast_path_and_flask_route_answer_alike(app) -> None:
    """Feed GETs without a query skip Flask; with one they go through it: same answer."""
    entered: list[str] = []
    app.before_request(lambda: entered.append("flask"))
    client = app.test_client()
    for headers in ({}, {"Accept-Encoding": "gzip"}):
        fast = client.get("/topics/nato/feed.rss", headers=headers)
        assert entered == []
        slow = client.get("/topics/nato/feed.rss?limit=50", headers=headers)
        assert entered == ["flask"]
        entered.clear()
        assert fast.data == slow.data
        for name in ("ETag", "Last-Modified", "Cache-Control", "Vary", "Content-Type",
                     "Content-Length"):
            assert fast.headers.get(name) == slow.headers.get(name), name
    head = client.head("/feed.json")
    assert head.status_code == 200 and head.data == b""
    assert int(head.headers["Content-Length"]) == len(client.get("/feed.json").data)
    assert client.get("/topics/missing/feed.atom").status_code == 404  # falls through
    assert client.post("/feed.atom").status_code == 405


def test_an_idle_service_still_notices_changes_and_pings(make_app, articles_dir, hub) -> None:
    """No request arrives, yet a new article is published and the hub told."""
    app = make_app(articles_dir, websub_hubs=hub.url, reload_interval=0.2)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    write_article(articles_dir, "quiet.txt", "Published While Nobody Asked")
    deadline = time.monotonic() + 10
    while not hub.pings and time.monotonic() < deadline:
        time.sleep(0.05)
    app.extensions["feedsvc.reloader"].stop()
    assert app.extensions["feedsvc.websub"].wait_idle()
    assert any(e.title == "Published While Nobody Asked" for e in publisher.collection.entries)
    assert f"{BASE_URL}/feed.atom" in {p["hub.url"][0] for p in hub.pings}
