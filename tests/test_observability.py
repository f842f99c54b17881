"""/readyz, /metrics and the reload log, through the real app and a real gunicorn."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BUNDLED, write_article
from tests.deploy_harness import Gunicorn, fetch


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition; 0 if it is absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_data(as_text=True)


# -- /readyz ------------------------------------------------------------------------


def test_readyz_when_ready(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready" and body["ledger"] == "ok" and body["published"] >= 20
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_when_another_process_holds_the_ledger(app, client, tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as a stuck writer would
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "not ready" and body["ledger"] == "error"
        assert any("locked" in reason for reason in body["reasons"]), body
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.get("/readyz").status_code == 200


def test_readyz_when_the_ledger_file_is_gone(app, client, tmp_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"ledger.sqlite3{suffix}").unlink(missing_ok=True)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "is missing; restore it" in " ".join(response.get_json()["reasons"])
    assert not (tmp_path / "ledger.sqlite3").exists(), "the probe must not create a new ledger"
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_readyz_probe_changes_nothing(app, client, tmp_path: Path) -> None:
    def tables() -> list[str]:
        with sqlite3.connect(tmp_path / "ledger.sqlite3") as conn:
            return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))

    before = tables()
    assert client.get("/readyz").status_code == 200
    assert tables() == before


def test_readyz_before_the_articles_are_loaded(app, client) -> None:
    app.extensions["feedsvc"].loaded = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "articles not loaded yet" in response.get_json()["reasons"]


# -- /metrics in one process ------------------------------------------------------------


def test_requests_by_route_and_status(client) -> None:
    first = client.get("/topics/nato/feed.atom")  # answered by the WSGI fast path
    for _ in range(3):
        assert client.get("/topics/nato/feed.atom",
                          headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert client.get("/feed.rss?limit=2").status_code == 200  # a feed through Flask
    assert client.get("/").status_code == 200
    assert client.get("/topics/nope/").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    text = scrape(client)
    assert sample(text, "feedsvc_http_requests_total", route="feed", status="200") == 2
    assert sample(text, "feedsvc_http_requests_total", route="feed", status="304") == 3
    assert sample(text, "feedsvc_http_requests_total", route="home", status="200") == 1
    assert sample(text, "feedsvc_http_requests_total", route="topic", status="404") == 1
    assert sample(text, "feedsvc_http_requests_total", route="unmatched", status="404") == 1
    again = scrape(client)  # the first scrape counted itself afterwards
    assert sample(again, "feedsvc_http_requests_total", route="metrics", status="200") == 1


def test_render_count_and_time(app, client) -> None:
    publisher = app.extensions["feedsvc"]
    before = sample(scrape(client), "feedsvc_renders_total")
    client.get("/authors/sara-wazowski/feed.json")
    client.get("/authors/sara-wazowski/feed.json")  # cached: not rendered again
    client.get("/authors/")
    text = scrape(client)
    assert sample(text, "feedsvc_renders_total") == before + 2 == publisher.renders
    seconds = sample(text, "feedsvc_render_seconds_total")
    assert seconds == pytest.approx(publisher.render_seconds) and seconds > 0


def test_reloads_and_article_counts(app, client, articles_dir: Path) -> None:
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    text = scrape(client)
    published = sample(text, "feedsvc_articles_published")
    assert published == len(publisher.collection.entries) >= 20
    assert sample(text, "feedsvc_articles_rejected") == 0
    write_article(articles_dir, "metrics.txt", "A Story For The Metrics")
    (articles_dir / "broken.txt").write_bytes(b"")
    publisher.refresh()
    publisher.refresh()
    text = scrape(client)
    assert sample(text, "feedsvc_reloads_total", outcome="changed") == 1
    assert sample(text, "feedsvc_reloads_total", outcome="unchanged") == 1
    assert sample(text, "feedsvc_reload_files_read_total") == 2
    assert sample(text, "feedsvc_reload_duration_seconds_count") == 2
    assert sample(text, "feedsvc_reload_duration_seconds_sum") > 0
    assert sample(text, "feedsvc_articles_published") == published + 1
    assert sample(text, "feedsvc_articles_rejected") == 1


def test_a_reload_logs_one_line_with_counts(make_app, articles_dir: Path, caplog) -> None:
    app = make_app(articles_dir, reload_interval=0.2)
    app.extensions["feedsvc"].settle_seconds = 0
    client = app.test_client()
    try:
        with caplog.at_level(logging.INFO, logger="feedsvc"):
            client.get("/")  # starts the reload thread
            write_article(articles_dir, "logged.txt", "A Story That Is Logged")
            deadline = time.monotonic() + 10
            while not [r for r in caplog.records if r.getMessage().startswith("reloaded")]:
                assert time.monotonic() < deadline, "no reload line logged"
                time.sleep(0.05)
    finally:
        app.extensions["feedsvc.reloader"].stop()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("reloaded"))
    count = len(app.extensions["feedsvc"].collection.entries)
    assert f"{count} published" in line and "0 rejected" in line and " s" in line


# -- /metrics under several gunicorn workers ---------------------------------------------


@pytest.mark.slow
def test_metrics_add_up_across_gunicorn_workers(tmp_path: Path) -> None:
    articles = tmp_path / "articles"
    shutil.copytree(BUNDLED, articles)
    server = Gunicorn(tmp_path, {"FEEDSVC_ARTICLES_DIR": str(articles),
                                 "FEEDSVC_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
                                 "FEEDSVC_RELOAD_INTERVAL": "0"})
    try:
        requests = 40
        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(pool.map(lambda _: fetch(server.port, "/topics/nato/feed.atom"),
                                    range(requests)))
        assert all(r.status == 200 for r in replies)
        assert len(server.worker_pids()) == 2, "both workers should answer"
        published = json.loads(fetch(server.port, "/healthz").body)["published"]
        assert published >= 20
        # Scrapes in parallel, so that both workers answer some: each reports
        # the sum over both, not its own share.
        with ThreadPoolExecutor(max_workers=8) as pool:
            scrapes = list(pool.map(lambda _: fetch(server.port, "/metrics"), range(16)))
        totals = set()
        for reply in scrapes:
            text = reply.body.decode()
            totals.add(sample(text, "feedsvc_http_requests_total", route="feed", status="200"))
            # One value for the site, not one per worker.
            assert [s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "feedsvc_articles_published"] == [published]
        assert totals == {requests}
    finally:
        output = server.stop()
    assert "Traceback" not in output, output
