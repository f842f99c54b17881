"""Who reads it, for real: fetches with every aggregator's User-Agent and readers' polls
through gunicorn (two workers, behind a trusted proxy), then /metrics, ``feedsvc stats``,
/stats in headless Chromium (screenshot) and the counts after a restart all agree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedsvc.audience import DAY, day_of
from feedsvc.audiencestore import AudienceStore
from feedsvc.sql import open_database
from tests.conftest import BUNDLED, ROOT
from tests.deploy_harness import Gunicorn, fetch
from tests.test_audience import AGGREGATOR_AGENTS
from tests.test_browser import browser  # noqa: F401 - the fixture, with its Chromium checks
from tests.test_stats import cli_counts, metrics_counts

pytestmark = pytest.mark.slow

SEEDED = {d: 50 + 3 * d for d in range(1, 31)}  # days ago -> subscribers that day


def _env(tmp: Path, articles: Path) -> dict[str, str]:
    return {"FEEDSVC_ARTICLES_DIR": str(articles),
            "FEEDSVC_LEDGER_PATH": str(tmp / "ledger.sqlite3"),
            "FEEDSVC_RELOAD_INTERVAL": "0",
            "FEEDSVC_TRUSTED_PROXIES": "1",  # as behind nginx: X-Forwarded-For is the client
            "FEEDSVC_AUDIENCE_FLUSH_INTERVAL": "0.2"}


def _send_traffic(port: int, topic: str, author: str) -> dict[tuple[str, str], int]:
    """Every aggregator once (some twice, the later count winning) and readers polling;
    returns the counts this must give, by (feed, source)."""
    feeds = [("site", "/feed.atom"), (f"topic/{topic}", f"/topics/{topic}/feed.rss"),
             (f"author/{author}", f"/authors/{author}/feed.json")]
    expected: dict[tuple[str, str], int] = {}
    for key, _ in feeds:
        expected.update({(key, "aggregator"): 0, (key, "reader"): 0, (key, "hub"): 0})
    requests = []
    for index, (agent, hit) in enumerate(AGGREGATOR_AGENTS):
        key, path = feeds[index % 3]
        requests.append((path, {"User-Agent": agent, "X-Forwarded-For": "192.0.2.10"}))
        expected[(key, "aggregator")] += hit.subscribers
    readers = [("newsboat/2.36.0 (Linux x86_64)", "198.51.100.1"),
               ("Mozilla/5.0 (compatible; Miniflux/2.1.3; +https://miniflux.app)",
                "198.51.100.2"),
               ("FreshRSS/1.24.0 (Linux; https://freshrss.org)", "198.51.100.3"),
               ("NetNewsWire (RSS Reader; https://netnewswire.com/)", "198.51.100.4")]
    for agent, address in readers:
        for path in (f"/topics/{topic}/feed.atom", f"/topics/{topic}/feed.json"):
            requests.append((path, {"User-Agent": agent, "X-Forwarded-For": address}))
    expected[(f"topic/{topic}", "reader")] = len(readers)
    # Thunderbird polled once: not (yet) a reader.
    requests.append(("/feed.atom", {"User-Agent": "Mozilla/5.0 Thunderbird/128.3.0",
                                    "X-Forwarded-For": "198.51.100.9"}))
    with ThreadPoolExecutor(max_workers=4) as pool:  # spread over both workers
        statuses = list(pool.map(lambda r: fetch(port, r[0], r[1]).status, requests))
    assert statuses == [200] * len(requests)
    return expected


def _metrics(port: int) -> dict[tuple[str, str], int]:
    return metrics_counts(fetch(port, "/metrics").body.decode())


def _wait_for(port: int, expected: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    deadline = time.monotonic() + 20
    while True:
        found = _metrics(port)
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_every_view_agrees_on_every_feeds_counts(tmp_path: Path, browser) -> None:  # noqa: F811
    articles = tmp_path / "articles"
    shutil.copytree(BUNDLED, articles)
    env = _env(tmp_path, articles)
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
    server = Gunicorn(tmp_path / "first", env, workers=2)
    try:
        topic = re.findall(r'/topics/([^/"]+)/"', fetch(server.port, "/topics/").body.decode())[0]
        author = re.findall(r'/authors/([^/"]+)/"',
                            fetch(server.port, "/authors/").body.decode())[0]
        # History the chart must show: thirty past days, written as the upkeep writes them.
        today = day_of(time.time())
        store = AudienceStore(open_database(f"sqlite:///{tmp_path / 'ledger.sqlite3'}"))
        store.record_history([("site", today - d, "aggregator", n) for d, n in SEEDED.items()])
        store.db.close()
        expected = _send_traffic(server.port, topic, author)
        served = _wait_for(server.port, expected)
        assert served == expected

        # Today's bar appears with the next upkeep (every 12 flushes: 2.4 s here).
        today_total = sum(expected.values())
        deadline = time.monotonic() + 20
        while f'data-total="{today_total}"' not in fetch(server.port, "/stats").body.decode():
            assert time.monotonic() < deadline, "the upkeep did not write today's totals"
            time.sleep(0.2)

        # feedsvc stats, as an operator runs it on the host.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
        out = subprocess.run([sys.executable, "-m", "feedsvc.cli", "stats"], cwd=ROOT,
                             env={**clean, **env}, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert cli_counts(out.stdout) == expected

        # /stats in Chromium: the page a person sees, with the chart drawn from the history.
        browser.get(f"http://127.0.0.1:{server.port}/stats")
        browser.save_screenshot(str(tmp_path / "stats.png"))
        assert (tmp_path / "stats.png").stat().st_size > 10_000
        from selenium.webdriver.common.by import By

        shown: dict[tuple[str, str], int] = {}
        for row in browser.find_elements(By.CSS_SELECTOR, "table.feeds tbody tr[data-feed]"):
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            feed = row.get_attribute("data-feed")
            shown.update({(feed, "aggregator"): int(cells[2]), (feed, "reader"): int(cells[3]),
                          (feed, "hub"): int(cells[4])})
            assert int(cells[1]) == int(cells[2]) + int(cells[3]) + int(cells[4])
        assert shown == expected
        top = [r.get_attribute("data-aggregator") for r in
               browser.find_elements(By.CSS_SELECTOR, "table.aggregators tr[data-aggregator]")]
        assert top[0] == "Overcast" and len(top) == len(AGGREGATOR_AGENTS)
        # The chart is drawn (inline SVG under the page's CSP): one bar group per day,
        # each seeded day with its total, and bars with a real height on screen.
        chart = browser.find_element(By.CSS_SELECTOR, "svg.chart")
        assert chart.size["height"] > 100 and chart.size["width"] > 300
        days = {g.get_attribute("data-day"): int(g.get_attribute("data-total"))
                for g in browser.find_elements(By.CSS_SELECTOR, "svg.chart g.day")}
        assert len(days) == 90
        for ago, number in SEEDED.items():
            date = datetime.fromtimestamp((today - ago) * DAY, UTC).strftime("%Y-%m-%d")
            assert days[date] == number, date
        assert days[datetime.fromtimestamp(today * DAY, UTC).strftime("%Y-%m-%d")] == today_total
        heights = browser.execute_script(
            "return Array.from(document.querySelectorAll('svg.chart rect.bar'))"
            ".map(r => r.getBoundingClientRect().height)")
        assert len(heights) >= len(SEEDED) and min(heights) > 0
    finally:
        output = server.stop()
    assert "Traceback" not in output, output

    # After a restart (no new fetches), the counts are the store's: the same.
    again = Gunicorn(tmp_path / "second", env, workers=2)
    try:
        assert _metrics(again.port) == expected
    finally:
        output = again.stop()
    assert "Traceback" not in output, output
