"""The built-in hub under real gunicorn: 2 workers, one delivery per change; SIGKILL and restart."""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.parse
from pathlib import Path

import pytest

from feedsvc import hubworker
from tests.conftest import BASE_URL, BUNDLED, wait_until, write_article
from tests.deploy_harness import Gunicorn, fetch
from tests.hub_subscriber import valid_signature

pytestmark = pytest.mark.slow

SECRET = "a shared secret"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {"FEEDSVC_ARTICLES_DIR": str(tmp / "articles"),
            "FEEDSVC_LEDGER_PATH": str(tmp / "ledger.sqlite3"),
            "FEEDSVC_BASE_URL": BASE_URL, "FEEDSVC_RELOAD_INTERVAL": "0.2",
            "FEEDSVC_HUB": "builtin", "FEEDSVC_HUB_ALLOW_PRIVATE_CALLBACKS": "true",
            "FEEDSVC_ACCESS_LOG": "/dev/null", "FEEDSVC_LOG_LEVEL": "info", **extra}


def _subscribe(server: Gunicorn, topic: str, callback: str) -> int:
    import http.client

    body = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.topic": topic,
                                   "hub.callback": callback, "hub.secret": SECRET})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/hub", body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        return conn.getresponse().status
    finally:
        conn.close()


def _wait(check, timeout: float, what: str):
    return wait_until(check, timeout, what)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(BUNDLED, tmp_path / "articles")
    return tmp_path


def test_two_workers_deliver_each_change_once_within_2_s(folder, subscriber, capsys):
    """Done when: a new article reaches the site, topic and author feeds' subscribers once."""
    server = Gunicorn(folder, _env(folder), workers=2)
    try:
        assert len(server.worker_pids()) == 2
        topics = {"site": f"{BASE_URL}/feed.atom",
                  "topic": f"{BASE_URL}/topics/pushed-news/feed.rss",
                  "author": f"{BASE_URL}/authors/hub-tester/feed.json"}
        # The topic and author feeds must exist before they can be subscribed to.
        write_article(folder / "articles", "seed.txt", "Seed", author="Hub Tester",
                      topic="pushed news")
        _wait(lambda: fetch(server.port, "/authors/hub-tester/feed.json").status == 200, 10,
              "the seed article published")
        time.sleep(0.5)  # by both workers (each rescans on its own), so both agree on it
        for name, topic in topics.items():
            assert _subscribe(server, topic, subscriber.url(name)) == 202
        _wait(lambda: all(subscriber.verifications(n) for n in topics), 10, "verifications")
        time.sleep(0.5)  # the subscriptions are stored after the verification answers
        latencies: list[float] = []
        for n, title in enumerate(["First pushed article", "Second pushed article"], 1):
            closed = time.monotonic()
            write_article(folder / "articles", f"pushed-{n}.txt", title, author="Hub Tester",
                          topic="pushed news")
            for name in topics:
                delivery = _wait(lambda nm=name, k=n: len(subscriber.deliveries(nm)) >= k
                                 and subscriber.deliveries(nm)[k - 1], 10, f"{name} #{n}")
                latencies.append(delivery.at - closed)
                assert title.encode() in delivery.body
                assert valid_signature(delivery, SECRET)
            time.sleep(1.5)  # time for any second copy (another worker) to arrive
            for name in topics:
                assert len(subscriber.deliveries(name)) == n, (name, n)
        for name, topic in topics.items():
            path = urllib.parse.urlsplit(topic).path
            assert subscriber.deliveries(name)[-1].body == fetch(server.port, path).body
        metrics = fetch(server.port, "/metrics").body.decode()
        assert 'feedsvc_hub_deliveries_total{outcome="delivered"} 6.0' in metrics
        assert 'feedsvc_hub_subscriptions{feed="/feed.atom"} 1.0' in metrics
        with capsys.disabled():
            print(f"\nhub: file closed -> delivered: {', '.join(f'{s:.2f}' for s in latencies)}"
                  f" s (max {max(latencies):.2f} s)")
        assert max(latencies) < 10
    finally:
        output = server.stop()
    assert output.count("hub: verified subscribe") == 3, output


def test_sigkill_with_pending_deliveries_then_restart(folder, subscriber):
    env = _env(folder, FEEDSVC_HUB_RETRY_SECONDS="1")
    server = Gunicorn(folder, env, workers=2)
    try:
        assert _subscribe(server, f"{BASE_URL}/feed.atom", subscriber.url("k")) == 202
        _wait(lambda: subscriber.verifications("k"), 10, "verification")
        time.sleep(0.5)
        subscriber.deliver["k"] = 503
        write_article(folder / "articles", "before-kill.txt", "Before the kill")
        _wait(lambda: subscriber.deliveries("k"), 10, "a first (failed) attempt")
        pids = server.worker_pids()
        for pid in (*pids, server.proc.pid):
            os.kill(pid, signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()
    write_article(folder / "articles", "while-down.txt", "Written while down")
    subscriber.deliver["k"] = 200
    failed_before = len(subscriber.deliveries("k"))
    again = Gunicorn(folder, env, workers=2)
    try:
        _wait(lambda: any(b"Written while down" in d.body for d in subscriber.deliveries("k")),
              20, "the change made while down")
        _wait(lambda: any(b"Before the kill" in d.body and b"Written while down" not in d.body
                          for d in subscriber.deliveries("k")[failed_before:]), 20,
              "the pending delivery")
        time.sleep(2.0)
    finally:
        again.stop()
    after = subscriber.deliveries("k")[failed_before:]
    pending = [d for d in after if b"Written while down" not in d.body]
    missed = [d for d in after if b"Written while down" in d.body]
    assert len(pending) == 1 and len(missed) == 1
    assert after.index(pending[0]) < after.index(missed[0])  # versions in order
    assert all(valid_signature(d, SECRET) for d in after)


def test_a_sighup_during_a_stalled_delivery_hands_it_to_a_new_worker_at_once(folder,
                                                                              subscriber,
                                                                              capsys):
    """A reload (SIGHUP) stops the worker sending to a stalled callback: it gives the
    claim back, and a new worker sends it within seconds, not when the claim runs out."""
    server = Gunicorn(folder, _env(folder), workers=2)
    try:
        assert _subscribe(server, f"{BASE_URL}/feed.atom", subscriber.url("hup")) == 202
        _wait(lambda: subscriber.verifications("hup"), 10, "verification")
        time.sleep(0.5)
        subscriber.deliver["hup"] = "hang"
        subscriber.hang_seconds = 4.0  # still stalled when the old worker is told to stop
        write_article(folder / "articles", "hup.txt", "Under way at a SIGHUP")
        _wait(lambda: subscriber.deliveries("hup"), 10, "the delivery under way")
        subscriber.deliver["hup"] = 200
        old = server.worker_pids()
        hup = time.monotonic()
        os.kill(server.proc.pid, signal.SIGHUP)
        second = _wait(lambda: len(subscriber.deliveries("hup")) >= 2
                       and subscriber.deliveries("hup")[1], 20, "the delivery sent again")
        assert second.at - hup < 10 < hubworker.CLAIM_HOLD
        assert b"Under way at a SIGHUP" in second.body and valid_signature(second, SECRET)
        time.sleep(2.0)  # time for any third copy
        assert len(subscriber.deliveries("hup")) == 2
        assert not old & server.worker_pids()  # sent by a new worker
        with capsys.disabled():
            print(f"\nhub: SIGHUP -> sent again by a new worker: {second.at - hup:.2f} s "
                  f"(the callback stalled {subscriber.hang_seconds:g} s)")
    finally:
        output = server.stop()
    assert "1 unfinished claim(s) given back" in output, output
