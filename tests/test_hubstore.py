"""The hub's storage (feedsvc.hubstore) on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import threading

import pytest

from feedsvc.hub import HubRequest
from feedsvc.hubstore import HUB_SCHEMA, HubStore
from feedsvc.sql import Lease, open_database

TOPIC = "https://news.example.org/feed.atom"


@pytest.fixture
def store(db_url: str):
    db = open_database(db_url)
    try:
        yield HubStore(db)
    finally:
        db.close()


def _request(callback: str = "http://sub.example/cb", secret: str | None = "s",
             lease: int = 3600, mode: str = "subscribe", topic: str = TOPIC) -> HubRequest:
    return HubRequest(mode, topic, callback, "sub.example", lease, secret)


def test_schema_is_versioned_on_its_own(db_url: str) -> None:
    db = open_database(db_url)
    try:
        assert HUB_SCHEMA.ensure(db) == 0
        assert HUB_SCHEMA.ensure(db) == HUB_SCHEMA.version  # already there
        HubStore(db)  # and opening again changes nothing
    finally:
        db.close()


def test_subscribe_replaces_never_duplicates(store: HubStore) -> None:
    first = store.subscribe(_request(secret="a", lease=3600), 1000.0, ("d0", 1))
    again = store.subscribe(_request(secret="b", lease=7200), 2000.0, ("d0", 1))
    assert first == again
    (sub,) = store.subscriptions()
    assert (sub.secret, sub.lease_seconds, sub.expires) == ("b", 7200, 9200.0)
    assert store.exists(TOPIC, "http://sub.example/cb", 2000.0)
    assert store.counts("sub.example", 2000.0) == (1, 1)
    assert store.unsubscribe(TOPIC, "http://sub.example/cb")
    assert store.subscriptions() == [] and not store.unsubscribe(TOPIC, "http://sub.example/cb")


def test_a_change_is_recorded_once_and_delivered_once(store: HubStore) -> None:
    store.subscribe(_request(), 0.0, ("d0", 1))
    store.subscribe(_request(callback="http://sub.example/other"), 0.0, ("d0", 1))
    assert not store.record_change(TOPIC, "d0", 1, "application/atom+xml", b"v0", 1.0)
    assert store.record_change(TOPIC, "d1", 2, "application/atom+xml", b"v1", 1.0)
    # Every worker and host records what it saw: the same version is one row.
    assert not store.record_change(TOPIC, "d1", 2, "application/atom+xml", b"v1", 1.1)
    # The same bytes with a later moment (an archive whose feed moved): nothing to send.
    assert not store.record_change(TOPIC, "d1", 3, "application/atom+xml", b"v1", 1.2)
    assert store.fan_out(2.0) == 2
    assert store.fan_out(2.0) == 0  # fanned once
    taken = store.claim_deliveries(3.0, 60.0, 10)
    assert sorted(d.subscription.callback for d in taken) == [
        "http://sub.example/cb", "http://sub.example/other"]
    assert {d.body for d in taken} == {b"v1"}
    assert store.claim_deliveries(3.0, 60.0, 10) == []  # claimed: nobody else takes them
    store.delivered(taken[0], "200", 4.0)
    store.failed(taken[1], "HTTP 500", 4.0, 10.0)
    assert store.claim_deliveries(5.0, 60.0, 10) == []  # not due yet
    (retry,) = store.claim_deliveries(10.0, 60.0, 10)
    assert retry.attempts == 1 and retry.id == taken[1].id
    store.failed(retry, "HTTP 500", 11.0, None)  # given up
    assert store.pending_deliveries() == 0
    # An undone edit: the first bytes again, at a new moment, are a new change.
    assert store.record_change(TOPIC, "d0", 4, "application/atom+xml", b"v0", 12.0)
    store.prune()
    assert store.fan_out(13.0) == 2


def test_claims_expire_so_a_dead_holder_s_work_is_redone(store: HubStore) -> None:
    store.subscribe(_request(), 0.0, ("d0", 1))
    store.record_change(TOPIC, "d1", 2, "t", b"v1", 1.0)
    store.fan_out(1.0)
    (taken,) = store.claim_deliveries(2.0, 60.0, 10)
    assert store.claim_deliveries(61.0, 60.0, 10) == []
    (again,) = store.claim_deliveries(62.1, 60.0, 10)
    assert again.id == taken.id


def test_unclaim_gives_back_only_the_rows_this_holder_still_holds(store: HubStore) -> None:
    for name in "abcd":
        store.subscribe(_request(callback=f"http://sub.example/{name}"), 0.0, ("d0", 1))
    store.record_change(TOPIC, "d1", 2, "t", b"v1", 1.0)
    assert store.fan_out(1.0) == 4
    store.add_request(_request(callback="http://sub.example/r1"), 1.0)
    store.add_request(_request(callback="http://sub.example/r2"), 1.0)
    mine = store.claim_deliveries(2.0, 60.0, 10)
    asked = store.claim_requests(2.0, 60.0, 10)
    assert len(mine) == 4 and len(asked) == 2
    assert {x.claimed_until for x in [*mine, *asked]} == {62.0}
    store.delivered(mine[0], "200", 3.0)  # finished: gone
    store.failed(mine[1], "HTTP 500", 3.0, 50.0)  # finished this attempt: waits for 50.0
    store.finish_request(asked[0].id)
    # The process stops: what it still holds is free at once, well within its claim.
    assert store.unclaim(mine, asked) == 3
    taken = store.claim_deliveries(3.0, 60.0, 10)
    again = store.claim_requests(3.0, 60.0, 10)
    assert sorted(d.id for d in taken) == sorted(d.id for d in mine[2:])  # not the retry
    assert [p.id for p in again] == [asked[1].id]
    # Another process holds them now: the first one's old claims give nothing back.
    assert store.unclaim(mine, asked) == 0
    assert store.claim_deliveries(4.0, 60.0, 10) == []
    assert store.claim_requests(4.0, 60.0, 10) == []
    (retry,) = store.claim_deliveries(50.0, 60.0, 10)  # the retry kept its time
    assert retry.id == mine[1].id
    assert store.unclaim(taken, again) == 3  # the new holder's own give back
    assert len(store.claim_deliveries(5.0, 60.0, 10)) == 2


def test_a_claim_that_ran_out_and_was_taken_again_is_not_given_back(store: HubStore) -> None:
    store.subscribe(_request(), 0.0, ("d0", 1))
    store.record_change(TOPIC, "d1", 2, "t", b"v1", 1.0)
    store.fan_out(1.0)
    store.add_request(_request(callback="http://sub.example/r"), 1.0)
    (stale,) = store.claim_deliveries(2.0, 60.0, 10)
    (stale_request,) = store.claim_requests(2.0, 60.0, 10)
    (taken,) = store.claim_deliveries(62.5, 60.0, 10)  # the first claim ran out
    (taken_request,) = store.claim_requests(62.5, 60.0, 10)
    assert (taken.id, taken_request.id) == (stale.id, stale_request.id)
    assert store.unclaim([stale], [stale_request]) == 0
    assert store.claim_deliveries(63.0, 60.0, 10) == []
    assert store.claim_requests(63.0, 60.0, 10) == []


def test_a_subscriber_gets_its_versions_in_order_one_at_a_time(store: HubStore) -> None:
    store.subscribe(_request(), 0.0, ("d0", 1))
    store.record_change(TOPIC, "d1", 2, "t", b"v1", 1.0)
    store.record_change(TOPIC, "d2", 3, "t", b"v2", 1.0)
    assert store.fan_out(1.0) == 2
    (first,) = store.claim_deliveries(2.0, 60.0, 10)
    assert first.body == b"v1"
    assert store.claim_deliveries(2.0, 60.0, 10) == []  # v2 waits while v1 is being sent
    store.failed(first, "HTTP 500", 3.0, 10.0)
    assert store.claim_deliveries(5.0, 60.0, 10) == []  # and while v1 waits for its retry
    (retry,) = store.claim_deliveries(10.0, 60.0, 10)
    assert retry.body == b"v1"
    store.delivered(retry, "200", 10.5)
    (second,) = store.claim_deliveries(11.0, 60.0, 10)
    assert second.body == b"v2"


def test_requests_wait_for_verification_and_are_claimed_once(store: HubStore) -> None:
    store.add_request(_request(secret="x"), 1.0)
    store.add_request(_request(mode="unsubscribe", secret=None), 2.0)
    assert store.pending_requests() == 2
    claimed = store.claim_requests(3.0, 60.0, 10)
    assert [p.request.mode for p in claimed] == ["subscribe", "unsubscribe"]
    assert claimed[0].request.secret == "x"
    assert store.claim_requests(3.0, 60.0, 10) == []
    for pending in claimed:
        store.finish_request(pending.id)
    assert store.pending_requests() == 0


def test_expiry_and_410_remove_subscriptions_and_their_deliveries(store: HubStore) -> None:
    store.subscribe(_request(lease=10), 0.0, ("d0", 1))
    keep = store.subscribe(_request(callback="http://sub.example/keep", lease=100), 0.0, None)
    store.record_change(TOPIC, "d1", 2, "t", b"v1", 1.0)
    assert store.fan_out(1.0) == 2
    assert store.topics(5.0) == [TOPIC]
    assert store.expire(20.0) == 1
    assert [s.id for s in store.subscriptions()] == [keep]
    assert store.pending_deliveries() == 1
    store.end_subscription(keep)
    assert store.subscriptions() == [] and store.pending_deliveries() == 0


def test_concurrent_recorders_make_one_change(db_url: str) -> None:
    """Several workers (threads, each with a database of its own) seeing one version."""
    db = open_database(db_url)
    HubStore(db).subscribe(_request(), 0.0, ("d0", 1))
    results: list[bool] = []
    lock = threading.Lock()

    def record() -> None:
        own = open_database(db_url)
        try:
            made = HubStore(own).record_change(TOPIC, "d1", 2, "t", b"v1", 1.0)
        finally:
            own.close()
        with lock:
            results.append(made)

    threads = [threading.Thread(target=record) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    assert HubStore(db).fan_out(2.0) == 1
    db.close()


def test_one_delivery_lease_holder(db_url: str) -> None:
    db = open_database(db_url)
    a, b = Lease(db, "hub-delivery", "a"), Lease(db, "hub-delivery", "b")
    assert a.acquire(5.0, 100.0) and not b.acquire(5.0, 101.0)
    assert b.acquire(5.0, 106.0)  # a stopped renewing: b takes over
    db.close()
