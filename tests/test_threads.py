"""Closing an app (or its publisher, or a store) stops and joins every thread it started.

A thread that outlives its app uses a store that is closed (and reopens it),
or a folder a test's teardown removed, and logs its failures into whatever
runs next. These tests look at ``threading.enumerate()`` right after a close:
every feedsvc thread is named ``feedsvc-...``.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from feedsvc import hubworker, watch
from feedsvc.background import ProcessThreads
from feedsvc.errors import LedgerError
from feedsvc.web import shutdown
from tests.conftest import BASE_URL, in_forked_child, wait_until, write_article
from tests.hub_subscriber import Subscriber


def _alive() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def _ours(before: set[int]) -> list[str]:
    """The feedsvc threads alive now that were not alive at ``before``."""
    return sorted(t.name for t in threading.enumerate()
                  if t.name.startswith("feedsvc") and t.ident not in before and t.is_alive())


def _errors(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [f"{r.threadName} {r.name}: {r.getMessage()}" for r in caplog.records
            if r.name.startswith("feedsvc") and r.levelno >= level]


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A listening socket that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()


def _busy_app(make_app: Callable[..., Flask], articles_dir: Path, port: int) -> Flask:
    """An app with every background part on: rescans (and inotify), the built-in hub,
    purges, WebSub pings and the subscriber counts."""
    app = make_app(articles_dir, reload_interval=0.2, hub="builtin",
                   hub_allow_private_callbacks=True, purge=f"webhook:http://127.0.0.1:{port}/p",
                   websub_hubs=f"http://127.0.0.1:{port}/hub", audience_flush_interval=0.1)
    app.extensions["feedsvc"].settle_seconds = 0
    return app


@pytest.mark.parametrize("close", ["publisher", "app"])
def test_closing_stops_and_joins_every_thread(make_app, articles_dir: Path, silent,
                                              close: str) -> None:
    before = _alive()
    app = _busy_app(make_app, articles_dir, silent.getsockname()[1])
    client = app.test_client()
    assert client.get("/feed.atom").status_code == 200
    write_article(articles_dir, "new.txt", "A change for every part")  # pings, purges
    wanted = {"feedsvc-reload", "feedsvc-audience", "feedsvc-purge", "feedsvc-hub-announce",
              "feedsvc-hub-deliver", "feedsvc-websub"} | (
        {"feedsvc-inotify"} if watch.available() else set())
    wait_until(lambda: wanted <= set(_ours(before)), what=f"{wanted} running")
    started = time.monotonic()
    if close == "publisher":
        app.extensions["feedsvc"].close()
    else:
        shutdown(app)
    assert _ours(before) == []
    # A ping or purge under way waits for its time-out (5 s) at most.
    assert time.monotonic() - started < 8.0
    # A request after the close starts none of them again.
    client.get("/healthz")
    client.get("/feed.atom")
    assert _ours(before) == []
    shutdown(app)  # twice is fine
    assert _ours(before) == []


def test_a_close_during_a_delivery_logs_nothing_and_gives_it_back_to_the_next_holder(
        make_app, articles_dir: Path, tmp_path: Path, subscriber: Subscriber,
        caplog: pytest.LogCaptureFixture) -> None:
    """The callback hangs when the app closes: the close waits for the send (not for
    ever), records no attempt, warns of nothing, and gives the claim back: the delivery
    is due at once, for whichever process holds the lease next."""
    before = _alive()
    app = make_app(articles_dir, hub="builtin", hub_allow_private_callbacks=True)
    app.extensions["feedsvc"].settle_seconds = 0
    app.extensions["feedsvc.hub"].poll = 0.05
    subscriber.deliver["slow"] = "hang"
    subscriber.hang_seconds = 1.5
    client = app.test_client()
    client.post("/hub", data={"hub.mode": "subscribe", "hub.topic": f"{BASE_URL}/feed.atom",
                              "hub.callback": subscriber.url("slow")})
    hub = app.extensions["feedsvc.hub"]
    wait_until(lambda: hub.store.subscriptions(time.time()), what="verified")
    write_article(articles_dir, "late.txt", "Delivered as the app closes")
    assert app.extensions["feedsvc"].refresh().changed
    wait_until(lambda: subscriber.deliveries("slow"), what="the delivery under way")
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    shutdown(app)
    assert time.monotonic() - started < subscriber.hang_seconds + 2.0
    assert _ours(before) == []
    assert _errors(caplog) == []
    # Nothing was recorded for the cut-short attempt: still due, no attempt counted,
    # claimed by nobody.
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        assert db.execute("SELECT attempts, claimed_until FROM hub_deliveries").fetchall() == [
            (0, 0)]
    time.sleep(subscriber.hang_seconds)  # the callback's answer would come now
    assert _errors(caplog) == []


def test_a_close_gives_back_the_sends_still_queued_unsent(
        make_app, articles_dir: Path, tmp_path: Path, subscriber: Subscriber,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """More deliveries claimed than senders to send them (the pool has SENDERS threads;
    raising the claim limit after it started queues two): the close cancels the queued
    ones, and gives them back with the ones cut short."""
    app = make_app(articles_dir, hub="builtin", hub_allow_private_callbacks=True)
    app.extensions["feedsvc"].settle_seconds = 0
    hub = app.extensions["feedsvc.hub"]
    hub.poll = 0.05
    subscriber.hang_seconds = 1.5
    names = [f"q{n}" for n in range(hubworker.SENDERS + 2)]
    client = app.test_client()
    for name in names:
        subscriber.deliver[name] = "hang"
        client.post("/hub", data={"hub.mode": "subscribe", "hub.topic": f"{BASE_URL}/feed.atom",
                                  "hub.callback": subscriber.url(name)})
    wait_until(lambda: len(hub.store.subscriptions(time.time())) == len(names), what="verified")
    monkeypatch.setattr(hubworker, "SENDERS", hubworker.SENDERS + 2)  # claims; not threads
    write_article(articles_dir, "queued.txt", "More than the senders")
    assert app.extensions["feedsvc"].refresh().changed
    wait_until(lambda: sum(len(subscriber.deliveries(n)) for n in names) == len(names) - 2,
               what="every sender busy")
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        claimed = db.execute("SELECT COUNT(*) FROM hub_deliveries WHERE claimed_until > 0")
        assert claimed.fetchone() == (len(names),)  # and two of them queued
    shutdown(app)
    assert sum(len(subscriber.deliveries(n)) for n in names) == len(names) - 2  # none sent
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        rows = db.execute("SELECT attempts, claimed_until FROM hub_deliveries").fetchall()
    assert rows == [(0, 0)] * len(names)


def test_a_send_still_under_way_when_the_stop_gives_up_keeps_its_claim(
        make_app, articles_dir: Path, tmp_path: Path, subscriber: Subscriber,
        caplog: pytest.LogCaptureFixture) -> None:
    """Given back while it may still reach the subscriber, a delivery could be sent twice
    at once, and arrive after a newer one: it keeps its claim, and records nothing."""
    before = _alive()
    app = make_app(articles_dir, hub="builtin", hub_allow_private_callbacks=True)
    app.extensions["feedsvc"].settle_seconds = 0
    hub = app.extensions["feedsvc.hub"]
    hub.poll = 0.05
    subscriber.deliver["stuck"] = "hang"
    subscriber.hang_seconds = 2.0
    app.test_client().post("/hub", data={
        "hub.mode": "subscribe", "hub.topic": f"{BASE_URL}/feed.atom",
        "hub.callback": subscriber.url("stuck")})
    wait_until(lambda: hub.store.subscriptions(time.time()), what="verified")
    write_article(articles_dir, "stuck.txt", "Still being sent at the stop")
    assert app.extensions["feedsvc"].refresh().changed
    wait_until(lambda: subscriber.deliveries("stuck"), what="the delivery under way")
    caplog.set_level(logging.INFO)
    hub.stop(timeout=0.5)
    assert [m for m in _errors(caplog) if "still under way" in m]
    assert not [r for r in caplog.records if "given back" in r.getMessage()]
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        ((attempts, claimed_until),) = db.execute(
            "SELECT attempts, claimed_until FROM hub_deliveries").fetchall()
    assert attempts == 0 and claimed_until > time.time() + hubworker.CLAIM_HOLD - 10
    wait_until(lambda: not [n for n in _ours(before) if n.startswith("feedsvc-hub")],
               what="the sender ended")
    time.sleep(0.5)
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:  # the late end recorded nothing
        assert db.execute("SELECT attempts, claimed_until FROM hub_deliveries").fetchall() == [
            (0, claimed_until)]
    assert len(_errors(caplog)) == 1
    shutdown(app)


def test_a_close_during_a_purge_logs_nothing_and_gives_the_rows_back(
        make_app, tmp_path: Path, silent: socket.socket,
        caplog: pytest.LogCaptureFixture) -> None:
    """The cache never answers: the close waits for the purge's time-out, reports no
    failure of the cache, and gives its rows back unsent for the next lease holder."""
    before = _alive()
    folder = tmp_path / "articles"
    write_article(folder, "a.txt", "First story")
    app = make_app(folder, purge=f"webhook:http://127.0.0.1:{silent.getsockname()[1]}/h")
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    write_article(folder, "b.txt", "Second story")
    assert publisher.refresh().changed
    silent.settimeout(10)
    connection, _ = silent.accept()  # the purge is under way
    caplog.set_level(logging.INFO)
    try:
        shutdown(app)
    finally:
        connection.close()
    assert _ours(before) == []
    assert _errors(caplog) == []
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        rows = db.execute("SELECT attempts, claimed_by, done_at FROM purge_queue").fetchall()
    assert rows and all(row == (0, None, None) for row in rows), rows


def test_a_closed_postgres_store_joins_its_threads_and_is_not_reopened(
        postgres_url: str) -> None:
    from feedsvc.pgstore import PostgresStore

    before = _alive()
    store = PostgresStore(postgres_url, "news.example.org")
    assert store.acquire(3.0)  # the heartbeat
    store.seq()  # the listener, and the pool's own threads
    wait_until(lambda: {"feedsvc-heartbeat", "feedsvc-listen"} <= set(_ours(before)))
    store.close()
    assert _ours(before) == []
    with pytest.raises(LedgerError, match="closed"):
        store.seq()
    assert _ours(before) == []


def test_process_threads_start_once_per_process_and_stop_for_good() -> None:
    threads = ProcessThreads("test")
    runs: list[threading.Event] = []

    def start(stopping: threading.Event) -> list[threading.Thread]:
        runs.append(stopping)
        return [threading.Thread(target=stopping.wait, name="feedsvc-test", daemon=True)]

    before = _alive()
    assert threads.ensure(start) and threads.running
    assert not threads.ensure(start)
    # The child starts its own thread; the parent's is not its to join.
    assert in_forked_child(lambda: threads.ensure(start) and len(runs) == 2
                           and threads.stop(1.0))
    assert len(runs) == 1 and not runs[0].is_set()  # the child's stop is not the parent's
    assert _ours(before) == ["feedsvc-test"]
    assert threads.stop(1.0)
    assert _ours(before) == [] and runs[0].is_set()
    assert not threads.ensure(start) and not threads.running  # closed: never again


def test_a_failed_read_of_the_counter_is_not_answered_from_the_cache_next(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notification came, then the read it asked for failed (the server just went
    down), and the listener thread has not noticed yet (as under load): the next seq()
    must read again, not answer the cached counter. That answer ended the failure
    for the publisher, which logged it a second time once the listener caught up."""
    import contextlib

    from feedsvc.pgstore import PostgresStore

    store = PostgresStore(postgres_url, "news.example.org")
    try:
        cached = store.seq()
        wait_until(lambda: store._listening)  # noqa: SLF001

        @contextlib.contextmanager
        def down():  # noqa: ANN202 - what _tx raises while the server is down
            raise LedgerError(store.path, "PostgreSQL cannot be reached")
            yield

        monkeypatch.setattr(store, "_tx", down)
        store._dirty = True  # noqa: SLF001 - a notification, as the listener sets it
        for _ in range(2):
            with pytest.raises(LedgerError):
                store.seq()
        monkeypatch.undo()
        assert store.seq() == cached
    finally:
        store.close()
