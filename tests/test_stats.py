"""Who reads it, through the app: counting on every feed URL, /stats, /metrics, feedsvc stats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from feedsvc import cli
from feedsvc.audience import DAY, day_of
from feedsvc.audiencestore import AudienceStore
from feedsvc.sql import open_database
from tests.test_audience import AGGREGATOR_AGENTS

FEEDLY = AGGREGATOR_AGENTS[0][0]
FEED_URLS = ["/feed.atom", "/feed.rss", "/feed.json", "/archive/1/feed.atom",
             "/feed.atom?limit=2"]


@pytest.fixture
def counting(make_app, articles_dir: Path) -> Flask:
    # A flush interval long enough that only the test flushes.
    return make_app(articles_dir, feed_size=5, audience_flush_interval=3600)


def _flush(app: Flask) -> dict:
    audience = app.extensions["feedsvc.audience"]
    audience.flush()
    audience.upkeep()
    return audience.current()


def _tables(ledger: Path) -> list:
    db = open_database(f"sqlite:///{ledger}")
    try:
        with db.transaction() as tx:
            return [tx.all(f"SELECT * FROM {t}")
                    for t in ("audience_aggregators", "audience_polls")]
    finally:
        db.close()


def test_every_format_and_archive_counts_for_its_feed_and_nothing_is_written_per_request(
        counting: Flask, tmp_path: Path) -> None:
    client = counting.test_client()
    for url in FEED_URLS:
        assert client.get(url, headers={"User-Agent": "newsboat/2.36"}).status_code == 200
    assert client.get("/feed.atom", headers={"User-Agent": FEEDLY}).status_code == 200
    topic = next(iter(counting.extensions["feedsvc"].collection.topics))
    client.get(f"/topics/{topic}/feed.rss", headers={"User-Agent": "Miniflux/2.1"})
    client.get(f"/topics/{topic}/feed.json", headers={"User-Agent": "Miniflux/2.1"})
    # A browser opening a feed gets the preview: a person looking, not a subscriber.
    browser = {"User-Agent": "Mozilla/5.0 Chrome/131", "Accept": "text/html"}
    for _ in range(3):
        client.get("/feed.atom", headers=browser)
    assert _tables(tmp_path / "ledger.sqlite3") == [[], []]  # all in memory so far
    counts = _flush(counting)
    assert counts["site"].by_source() == {"aggregator": 462, "reader": 1, "hub": 0}
    assert counts[f"topic/{topic}"].readers == 1
    assert set(counts) == {"site", f"topic/{topic}"}


def test_the_client_address_comes_from_a_proxy_only_when_trusted(
        make_app, articles_dir: Path, tmp_path: Path) -> None:
    def readers(app: Flask) -> int:
        client = app.test_client()
        for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
            for _ in range(2):
                client.get("/feed.atom", headers={"User-Agent": "newsboat",
                                                  "X-Forwarded-For": address})
        return _flush(app)["site"].readers

    # Untrusted, the header is the client's word: all three are one address (the proxy's).
    assert readers(make_app(articles_dir, audience_flush_interval=3600)) == 1
    trusted = make_app(articles_dir, audience_flush_interval=3600, trusted_proxies=1,
                       ledger_path=str(tmp_path / "other.sqlite3"))
    assert readers(trusted) == 3


def test_stats_is_for_operators_only(make_app, articles_dir: Path) -> None:
    app = make_app(articles_dir, audience_flush_interval=3600)
    local = app.test_client().get("/stats")
    assert local.status_code == 200
    assert local.headers["Cache-Control"] == "no-store"
    assert local.headers["Content-Security-Policy"].startswith("default-src 'none'")
    outside = app.test_client().get("/stats", environ_base={"REMOTE_ADDR": "203.0.113.5"})
    assert outside.status_code == 403
    assert "FEEDSVC_STATS_ALLOW" in outside.get_data(as_text=True)
    # A client cannot claim to be local through a header no proxy vouches for.
    forged = app.test_client().get("/stats", environ_base={"REMOTE_ADDR": "203.0.113.5"},
                                   headers={"X-Forwarded-For": "127.0.0.1"})
    assert forged.status_code == 403
    allowed = make_app(articles_dir, stats_allow="203.0.113.0/24, 2001:db8::/32")
    for address in ("203.0.113.5", "2001:db8::7"):
        reply = allowed.test_client().get("/stats", environ_base={"REMOTE_ADDR": address})
        assert reply.status_code == 200, address
    assert allowed.test_client().get(
        "/stats", environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code == 403


def test_a_bad_allow_list_is_refused(make_app, articles_dir: Path) -> None:
    from feedsvc.errors import ConfigError

    with pytest.raises(ConfigError, match="FEEDSVC_STATS_ALLOW.*10.0.0.0/33"):
        make_app(articles_dir, stats_allow="10.0.0.0/33")


def test_counting_can_be_turned_off(make_app, articles_dir: Path) -> None:
    app = make_app(articles_dir, count_subscribers=False)
    assert "feedsvc.audience" not in app.extensions
    assert app.extensions["feedsvc.fastpath"].feed_observers == []
    assert app.test_client().get("/stats").status_code == 404
    assert b"feedsvc_feed_subscribers" not in app.test_client().get("/metrics").data


def metrics_counts(text: str) -> dict[tuple[str, str], int]:
    """``feedsvc_feed_subscribers`` from a Prometheus exposition: (feed, source) -> n."""
    found = {}
    for feed, source, value in re.findall(
            r'^feedsvc_feed_subscribers\{feed="([^"]+)",source="([^"]+)"\} ([0-9.e+]+)$',
            text, re.MULTILINE):
        found[(feed, source)] = int(float(value))
    return found


def cli_counts(text: str) -> dict[tuple[str, str], int]:
    """The same numbers from ``feedsvc stats``'s table."""
    found = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 5 and not line.startswith(" "):
            feed, _total, aggregator, reader, hub = parts
            found.update({(feed, "aggregator"): int(aggregator), (feed, "reader"): int(reader),
                          (feed, "hub"): int(hub)})
    return found


def test_metrics_cli_and_stats_agree_and_survive_a_restart(
        make_app, articles_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(articles_dir, audience_flush_interval=3600)
    client = app.test_client()
    collection = app.extensions["feedsvc"].collection
    topic, author = next(iter(collection.topics)), next(iter(collection.authors))
    urls = ["/feed.atom", f"/topics/{topic}/feed.rss", f"/authors/{author}/feed.json"]
    for index, (agent, _) in enumerate(AGGREGATOR_AGENTS):
        client.get(urls[index % 3], headers={"User-Agent": agent})
    for family in ("newsboat/2.36", "FreshRSS/1.24", "NetNewsWire (RSS Reader)"):
        for _ in range(2):
            client.get(f"/topics/{topic}/feed.atom", headers={"User-Agent": family})
    client.get("/feed.atom", headers={"User-Agent": "Thunderbird/128"})  # once: not a reader
    _flush(app)
    from_metrics = metrics_counts(client.get("/metrics").get_data(as_text=True))
    expected_site = sum(h.subscribers for i, (_, h) in enumerate(AGGREGATOR_AGENTS)
                        if i % 3 == 0)
    assert from_metrics[("site", "aggregator")] == expected_site
    assert from_metrics[(f"topic/{topic}", "reader")] == 3
    assert from_metrics[("site", "reader")] == 0
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    assert cli.main(["stats"]) == 0
    table = capsys.readouterr().out
    assert cli_counts(table) == from_metrics
    assert "  Feedly" in table  # aggregators broken out under their feed
    page = client.get("/stats").get_data(as_text=True)
    for (feed, source), number in from_metrics.items():
        if source == "aggregator":
            row = re.search(rf'<tr data-feed="{re.escape(feed)}">.*?</tr>', page, re.S)
            assert row, feed
            totals = re.findall(r"<td[^>]*>(\d+)</td>", row.group(0))
            assert [int(t) for t in totals] == [
                sum(from_metrics[(feed, s)] for s in ("aggregator", "reader", "hub")),
                number, from_metrics[(feed, "reader")], from_metrics[(feed, "hub")]]
    from feedsvc.web import shutdown

    shutdown(app)
    restarted = make_app(articles_dir, audience_flush_interval=3600)
    again = metrics_counts(restarted.test_client().get("/metrics").get_data(as_text=True))
    assert again == from_metrics


def test_the_chart_shows_the_history(make_app, articles_dir: Path, tmp_path: Path) -> None:
    import time

    ledger = tmp_path / "ledger.sqlite3"
    app = make_app(articles_dir, audience_flush_interval=3600)
    today = day_of(time.time())
    store = AudienceStore(open_database(f"sqlite:///{ledger}"))
    store.record_history([("site", today - d, "aggregator", 100 + d) for d in range(1, 11)]
                         + [("topic/x", today - 3, "reader", 4)])
    page = app.test_client().get("/stats").get_data(as_text=True)
    days = dict(re.findall(r'<g class="day" data-day="([0-9-]+)" data-total="(\d+)">', page))
    assert len(days) == 90
    import datetime as dt

    def iso(day: int) -> str:
        return dt.datetime.fromtimestamp(day * DAY, dt.UTC).strftime("%Y-%m-%d")

    for d in range(1, 11):
        assert days[iso(today - d)] == str(100 + d + (4 if d == 3 else 0))
    assert days[iso(today - 20)] == "0"
    assert "<script" not in page


def test_feedsvc_stats_says_when_there_is_nothing(tmp_path: Path, make_app, articles_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "none.sqlite3"))
    assert cli.main(["stats"]) == 2
    assert "no ledger at" in capsys.readouterr().err
    make_app(articles_dir)  # a ledger, with nothing counted yet
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    assert cli.main(["stats"]) == 0
    assert "(no subscribers counted yet)" in capsys.readouterr().out
