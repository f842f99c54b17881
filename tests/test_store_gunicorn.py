"""The store under the shipped gunicorn settings (preload_app): SIGHUP without a gap,
inotify changes reaching every worker, and the rescan fallback with inotify off."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, write_article
from tests.deploy_harness import Gunicorn, fetch
from tests.test_store import _corpus

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, workers: int = 2, extra: int = 0, **env: str
           ) -> tuple[Gunicorn, Path]:
    articles = tmp_path / "articles"
    if not articles.exists():
        shutil.copytree(BUNDLED, articles)
        _corpus(articles / "generated", extra)
    server = Gunicorn(tmp_path, {"FEEDSVC_ARTICLES_DIR": str(articles),
                                 "FEEDSVC_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
                                 "FEEDSVC_BASE_URL": "https://news.example.org",
                                 "FEEDSVC_LOG_LEVEL": "warning", **env}, workers=workers)
    _wait(lambda: all(_health(server)[pid]["published"] > 20 for pid in _health(server))
          and len(_health(server)) == workers, "every worker ready")
    return server, articles


def _health(server: Gunicorn, count: int = 24) -> dict[int, dict]:
    """Each worker's /healthz, from enough concurrent requests that every worker answers."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: fetch(server.port, "/healthz"), range(count)))
    return {body["worker"]: body for r in replies if r.status == 200
            for body in [json.loads(r.body)]}


def _wait(condition, what: str, timeout: float = 20.0) -> float:  # noqa: ANN001
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def _everyone_sees(server: Gunicorn, predicate, workers: int = 2) -> bool:  # noqa: ANN001
    health = _health(server)
    return len(health) >= workers and all(predicate(body) for body in health.values())


def test_sighup_under_polling_leaves_no_gap(tmp_path: Path) -> None:
    # 3,000 articles: parsing them again in each new worker (as before the store) would
    # leave a gap of seconds; a worker forked from the master's view starts at once.
    server, _ = _start(tmp_path, extra=3000)
    replies: list[tuple[int, float]] = []
    moments: list[float] = []
    hups: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = fetch(server.port, "/feed.atom").status
            except OSError:
                status = 0  # refused or reset: a failed request
            replies.append((status, time.perf_counter() - started))
            moments.append(time.monotonic())

    threads = [threading.Thread(target=poll) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        before = set(_health(server))
        baseline = sorted(t for _, t in replies)[len(replies) // 2]
        for _ in range(2):
            hups.append(time.monotonic())
            os.kill(server.proc.pid, signal.SIGHUP)
            time.sleep(2.0)
        _wait(lambda: not (set(_health(server)) & before), "new workers only")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        output = server.stop()
    statuses = [s for s, _ in replies]
    assert len(replies) > 100
    failed = [round(at - hups[0], 3)
              for (s, _), at in zip(replies, moments, strict=True) if s != 200]
    assert set(statuses) == {200}, ({s: statuses.count(s) for s in set(statuses)}, failed,
                                    [round(h - hups[0], 3) for h in hups], output[-3000:])
    slowest = max(t for _, t in replies)
    slow = [(round(at - t - hups[0], 3), round(t, 3))
            for (_, t), at in zip(replies, moments, strict=True) if t > baseline + 0.2]
    assert slowest < baseline + 0.5, (slowest, baseline, slow,
                                      [round(h - hups[0], 3) for h in hups])
    assert "Traceback" not in output, output


def test_inotify_changes_reach_every_worker(tmp_path: Path) -> None:
    # A rescan every 60 s: only inotify can bring the changes in this quickly.
    server, articles = _start(tmp_path, FEEDSVC_RELOAD_INTERVAL="60")
    try:
        published = next(iter(_health(server).values()))["published"]
        tmp = articles / "incoming.txt.tmp"  # written aside, renamed into place
        write_article(articles, "incoming.txt.tmp", "Renamed Into Place Story")
        tmp.rename(articles / "incoming.txt")
        _wait(lambda: _everyone_sees(server, lambda b: b["published"] == published + 1),
              "the renamed-in article in every worker", timeout=5)
        seq = max(b["store_seq"] for b in _health(server).values())
        path = write_article(articles, "incoming.txt", "Renamed Into Place Story",
                             body="An edit written in place and closed.")
        _wait(lambda: _everyone_sees(server, lambda b: b["store_seq"] > seq),
              "the edit in every worker", timeout=5)
        bodies = {fetch(server.port, "/feed.atom").body for _ in range(12)}
        assert all(b"An edit written in place and closed." in body for body in bodies)
        path.unlink()
        _wait(lambda: _everyone_sees(server, lambda b: b["published"] == published),
              "the deletion in every worker", timeout=5)
    finally:
        output = server.stop()
    assert "Traceback" not in output, output


def test_without_inotify_the_rescan_still_finds_changes(tmp_path: Path) -> None:
    server, articles = _start(tmp_path, FEEDSVC_RELOAD_INTERVAL="0.3", FEEDSVC_INOTIFY="false")
    try:
        published = next(iter(_health(server).values()))["published"]
        write_article(articles, "rescanned.txt", "Found By The Rescan")
        _wait(lambda: _everyone_sees(server, lambda b: b["published"] == published + 1),
              "the new article in every worker", timeout=10)
    finally:
        output = server.stop()
    assert "Traceback" not in output, output
