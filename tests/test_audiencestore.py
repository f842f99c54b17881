"""Subscriber counts in the store, on SQLite and on a real PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedsvc.audience import DAY, AggregatorReport, day_of, period_of
from feedsvc.audiencestore import SCHEMA, AudienceService, AudienceStore, Polls
from feedsvc.sql import open_database
from tests.conftest import in_forked_child

NOW = 1_800_000_000.0  # a Friday in 2027; any moment works


@pytest.fixture
def store(db_url: str):
    db = open_database(db_url)
    yield AudienceStore(db, window_days=7)
    db.close()


def _dump(store: AudienceStore) -> str:
    """Every value of every audience table, as text."""
    tables = ["audience_aggregators", "audience_polls", "audience_keys", "audience_history",
              "audience_hub"]
    with store.db.transaction() as tx:
        return repr([tx.all(f"SELECT * FROM {name}") for name in tables])


def test_latest_count_per_feed_id_is_kept_and_feed_ids_summed(store: AudienceStore) -> None:
    store.record([AggregatorReport("site", "Feedbin", "1", 100, NOW - 60)], [], NOW - 60)
    store.record([AggregatorReport("site", "Feedbin", "1", 102, NOW - 10),
                  AggregatorReport("site", "Feedbin", "2", 5, NOW - 10)], [], NOW - 10)
    # A flush from a slower worker carrying an older report does not win.
    store.record([AggregatorReport("site", "Feedbin", "1", 90, NOW - 30)], [], NOW)
    assert store.current(NOW)["site"].aggregators == {"Feedbin": 107}


def test_an_aggregator_drops_out_after_the_window(store: AudienceStore) -> None:
    store.record([AggregatorReport("site", "Feedly", "", 462, NOW)], [], NOW)
    assert store.current(NOW + 7 * DAY - 1)["site"].aggregators == {"Feedly": 462}
    assert "site" not in store.current(NOW + 7 * DAY + 1)
    store.maintain(NOW + 7 * DAY + 1)
    with store.db.transaction() as tx:
        assert tx.all("SELECT * FROM audience_aggregators") == []


def test_readers_count_after_two_polls_and_no_address_is_stored(store: AudienceStore) -> None:
    day = day_of(NOW)
    store.record([], [Polls("site", "203.0.113.7", "newsboat", day, 1),
                      Polls("site", "203.0.113.8", "Miniflux", day, 1)], NOW)
    assert "site" not in store.current(NOW)  # one poll each: not readers yet
    store.record([], [Polls("site", "203.0.113.7", "newsboat", day, 1),
                      # the same address with another reader is another reader
                      Polls("site", "203.0.113.7", "Miniflux", day, 2)], NOW + 5)
    assert store.current(NOW + 5)["site"].readers == 2
    dump = _dump(store)
    assert "203.0.113" not in dump
    # A reader polling on two different days in the window counts too.
    store.record([], [Polls("topic/x", "198.51.100.1", "newsboat", day, 1)], NOW)
    store.record([], [Polls("topic/x", "198.51.100.1", "newsboat", day + 1, 1)], NOW + DAY)
    assert store.current(NOW + DAY)["topic/x"].readers == 1


def test_the_readers_key_rotates_with_the_window(store: AudienceStore) -> None:
    boundary = (period_of(NOW, 7) + 1) * 7 * DAY  # where one period ends and the next begins
    start = boundary - 3600
    store.record([], [Polls("site", "192.0.2.1", "newsboat", day_of(start), 2)], start)
    with store.db.transaction() as tx:
        first = tx.all("SELECT period, secret FROM audience_keys")
        hashed = tx.one("SELECT reader FROM audience_polls")[0]
    later = boundary + 10  # the next period
    store.record([], [Polls("site", "192.0.2.1", "newsboat", day_of(later), 2)], later)
    store.maintain(later)
    with store.db.transaction() as tx:
        keys = tx.all("SELECT period, secret FROM audience_keys")
        readers = {row[0] for row in tx.all("SELECT reader FROM audience_polls")}
    assert [k[0] for k in keys] == [period_of(later, 7)]  # the old key is deleted
    assert bytes(keys[0][1]) != bytes(first[0][1])
    assert hashed in readers and len(readers) == 2  # the same reader, unlinkable hashes
    # Both periods lie in the window: the steady reader is counted once.
    assert store.current(later)["site"].readers == 1


def test_history_holds_each_days_totals(store: AudienceStore) -> None:
    today = day_of(NOW)
    store.record_history([("site", today - 2, "aggregator", 10), ("site", today - 2, "reader", 2),
                          ("topic/x", today - 2, "aggregator", 3), ("site", today - 200,
                                                                    "aggregator", 99)])
    store.record([AggregatorReport("site", "Feedly", "", 40, NOW)], [], NOW)
    store.maintain(NOW, hub={"site": 4})
    history = dict(store.history(NOW, days=5))
    assert list(history) == list(range(today - 4, today + 1))
    assert history[today - 2] == {"aggregator": 13, "reader": 2, "hub": 0}
    assert history[today - 1] == {"aggregator": 0, "reader": 0, "hub": 0}
    assert history[today] == {"aggregator": 40, "reader": 0, "hub": 4}
    assert store.current(NOW)["site"].hub == 4
    store.maintain(NOW, hub=None)  # the hub was turned off
    assert store.current(NOW)["site"].hub == 0


def test_workers_flush_into_one_count_and_one_upkeeps(db_url: str) -> None:
    """Two workers (two services over one database): counts merge, the lease picks one."""
    clock = [NOW]
    services = [AudienceService(AudienceStore(open_database(db_url)), 5.0, lambda: clock[0])
                for _ in range(2)]
    feedly = "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 462 subscribers; )"
    services[0].counter.observe("site", feedly, "10.0.0.1")
    services[1].counter.observe("site", "newsboat/2.36", "10.0.0.2")
    services[0].counter.observe("site", "newsboat/2.36", "10.0.0.2")  # the same reader
    for service in services:
        service.flush()
    assert [s.current()["site"].by_source() for s in services] == [
        {"aggregator": 462, "reader": 1, "hub": 0}] * 2
    assert [s.upkeep() for s in services] == [True, False]
    # The built-in hub registers its count of verified subscriptions (a stand-in here:
    # the hub is not on main yet); the upkeep stores it, and every worker reports it.
    services[0].set_hub_source(lambda: {"site": 3, "topic/x": 1})
    assert services[0].upkeep()
    assert services[1].current()["site"].by_source() == {"aggregator": 462, "reader": 1,
                                                         "hub": 3}
    assert services[1].current()["topic/x"].total == 1
    for service in services:
        service.store.db.close()


def test_a_failed_flush_keeps_the_counts_for_the_next(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    service = AudienceService(AudienceStore(db), 5.0, lambda: NOW)
    service.counter.observe("site", "newsboat", "10.0.0.9")
    service.counter.observe("site", "newsboat", "10.0.0.9")
    real = service.store.record

    def broken(*args: object) -> None:
        raise OSError("disk full")

    service.store.record = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        service.flush()
    service.store.record = real  # type: ignore[method-assign]
    service.flush()
    assert service.current()["site"].readers == 1


def test_the_schema_is_its_own_component(db_url: str) -> None:
    db = open_database(db_url)
    assert SCHEMA.ensure(db) == 0
    assert SCHEMA.ensure(db) == SCHEMA.version
    with db.transaction() as tx:
        assert tx.one("SELECT version FROM component_schemas WHERE component = ?",
                      ("audience",)) == (SCHEMA.version,)
    db.close()


def test_a_flood_of_made_up_clients_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    from feedsvc.audiencestore import AudienceCounter

    counter = AudienceCounter(lambda: NOW, max_pending=10)
    for n in range(25):
        counter.observe("site", "newsboat", f"10.0.0.{n}")
    counter.observe("site", "newsboat", "10.0.0.3")  # one already held still counts
    reports, polls = counter.drain()
    assert len(polls) == 10 and sum(p.polls for p in polls) == 11
    assert "15 feed fetches not counted" in caplog.text
    counter.observe("site", "newsboat", "10.0.0.99")  # afresh after the flush
    assert len(counter.drain()[1]) == 1


def test_closing_the_ledger_keeps_the_counts_connections_locks(make_app, articles_dir: Path,
                                                                tmp_path: Path) -> None:
    """The ledger's flock descriptor is on the same file as SQLite's POSIX locks, and
    closing any descriptor of a file drops every POSIX lock the process holds on it. A
    connection that lost its shared lock lets another process believe it is the last one
    and delete the WAL under it (seen as "disk I/O error", then a malformed file). So the
    ledger must never close that descriptor while other connections may be open."""
    import subprocess
    import sys

    app = make_app(articles_dir)
    ledger = tmp_path / "ledger.sqlite3"
    db = open_database(f"sqlite:///{ledger}")
    AudienceStore(db)
    # Can another process take a write lock on SQLite's shared-lock bytes of the main file?
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\ntry:\n"
             " fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002); print('free')\n"
             "except OSError:\n print('held')")

    def shared_lock() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(ledger)], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()

    with db.transaction() as tx:
        tx.execute("INSERT INTO audience_hub (feed, subscribers) VALUES ('site', 1)")
    assert shared_lock() == "held"
    app.extensions["feedsvc"].close()  # the ledger lets its flock descriptor go
    with db.transaction() as tx:
        tx.one("SELECT COUNT(*) FROM audience_hub")
        assert shared_lock() == "held"
    db.close()


def test_a_forked_worker_starts_its_own_flusher_and_the_parent_keeps_its(
        tmp_path: Path) -> None:
    """The request path asks ensure_running() every time, without a getpid() call: a
    fork must still be noticed (gunicorn's workers are forked from a preloaded app)."""

    db = open_database(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    service = AudienceService(AudienceStore(db), 60.0, lambda: NOW)
    service.ensure_running()
    parent_thread = service._thread
    service.counter.observe("site", "newsboat", "10.0.0.1")

    def fresh() -> bool:
        service.ensure_running()
        thread = service._thread
        return (thread is not None and thread is not parent_thread and thread.is_alive()
                and service.counter.drain() == ([], []))  # the parent's counts stay there

    assert in_forked_child(fresh)
    service.ensure_running()
    assert service._thread is parent_thread and parent_thread.is_alive()
    assert len(service.counter.drain()[1]) == 1
    service.stop()
