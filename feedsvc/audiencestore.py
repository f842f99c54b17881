"""Subscriber counts in the store, shared by every worker and host (through feedsvc.sql).

Each worker counts feed requests in memory (:class:`AudienceCounter`: no
database write per request) and a background thread flushes the counts every
few seconds (:class:`AudienceService`) in one transaction. One process at a
time (a :class:`~feedsvc.sql.Lease`) does the upkeep: deleting what left the
window, rotating the readers' hash key, and writing the day's totals into the
history the ``/stats`` chart draws. Every statement is portable, so the same
code runs on the embedded SQLite file and on PostgreSQL.

A raw client address never reaches the database: a flush hashes it with the
current period's key (:func:`feedsvc.audience.reader_hash`), and the key of a
period that ended is deleted, after which its hashes link to nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .audience import (
    DAY,
    SOURCES,
    AggregatorHit,
    AggregatorReport,
    FeedCounts,
    classify,
    combine,
    day_of,
    period_of,
    reader_hash,
    readers_in_window,
)
from .background import ProcessThreads
from .sql import ComponentSchema, Lease, SqlDatabase, Tx, open_database

log = logging.getLogger("feedsvc.audience")

def _create_tables(tx: Tx) -> None:
    """Version 1: one statement at a time (psycopg and sqlite3 both want that)."""
    for statement in (
        "CREATE TABLE audience_aggregators ("
        " feed TEXT NOT NULL, aggregator TEXT NOT NULL, feed_id TEXT NOT NULL,"
        " subscribers BIGINT NOT NULL, seen DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (feed, aggregator, feed_id))",
        "CREATE TABLE audience_polls ("
        " feed TEXT NOT NULL, reader TEXT NOT NULL, day BIGINT NOT NULL,"
        " period BIGINT NOT NULL, polls BIGINT NOT NULL,"
        " PRIMARY KEY (feed, reader, day))",
        "CREATE TABLE audience_keys (period BIGINT PRIMARY KEY, secret BYTEA NOT NULL)",
        "CREATE TABLE audience_history ("
        " feed TEXT NOT NULL, day BIGINT NOT NULL, source TEXT NOT NULL,"
        " subscribers BIGINT NOT NULL, PRIMARY KEY (feed, day, source))",
        "CREATE TABLE audience_hub (feed TEXT PRIMARY KEY, subscribers BIGINT NOT NULL)",
    ):
        tx.execute(statement)


SCHEMA = ComponentSchema("audience", (_create_tables,))

def audience_database(settings: object, ledger_path: os.PathLike[str] | str) -> SqlDatabase:
    """The store's database, where the counts live: the PostgreSQL of
    ``FEEDSVC_DATABASE_URL`` when the settings have one, else the ledger's SQLite file."""
    url = getattr(settings, "database_url", None)
    return open_database(url or f"sqlite:///{os.path.abspath(ledger_path)}")


#: How many days of daily totals are kept for the chart.
HISTORY_DAYS = 90


@dataclass(frozen=True, slots=True)
class Polls:
    """Polls of one feed by one (address, family) on one day, not yet hashed."""

    feed: str
    address: str
    family: str
    day: int
    polls: int


class AudienceStore:
    """The counts' tables: what every worker flushes into and every report reads."""

    def __init__(self, db: SqlDatabase, window_days: int = 7) -> None:
        self.db = db
        self.window_days = window_days
        SCHEMA.ensure(db)

    # -- writing -------------------------------------------------------------------

    def record(self, reports: list[AggregatorReport], polls: list[Polls], now: float) -> None:
        """Add one flush's counts: latest aggregator reports, and reader polls hashed."""
        if not reports and not polls:
            return
        with self.db.transaction() as tx:
            if reports:
                tx.executemany(
                    "INSERT INTO audience_aggregators (feed, aggregator, feed_id, subscribers,"
                    " seen) VALUES (?, ?, ?, ?, ?) ON CONFLICT (feed, aggregator, feed_id)"
                    " DO UPDATE SET subscribers = excluded.subscribers, seen = excluded.seen"
                    " WHERE excluded.seen >= audience_aggregators.seen",
                    [(r.feed, r.aggregator, r.feed_id, r.subscribers, r.seen) for r in reports])
            if polls:
                current = period_of(now, self.window_days)
                key = self._key(tx, current)
                rows = []
                for poll in polls:
                    # A poll counted just before a period ended is hashed with
                    # the new key: the old one may be gone, and must not come back.
                    rows.append((poll.feed, reader_hash(key, poll.address, poll.family),
                                 poll.day, current, poll.polls))
                tx.executemany(
                    "INSERT INTO audience_polls (feed, reader, day, period, polls)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (feed, reader, day)"
                    " DO UPDATE SET polls = audience_polls.polls + excluded.polls", rows)

    def _key(self, tx: Tx, period: int) -> bytes:
        """The period's hash key, made by whichever process needs it first."""
        tx.execute("INSERT INTO audience_keys (period, secret) VALUES (?, ?)"
                   " ON CONFLICT (period) DO NOTHING", (period, secrets.token_bytes(32)))
        row = tx.one("SELECT secret FROM audience_keys WHERE period = ?", (period,))
        assert row is not None
        return bytes(row[0])

    def record_history(self, rows: list[tuple[str, int, str, int]]) -> None:
        """Set ``(feed, day, source, subscribers)`` totals of the history (upkeep, seeding)."""
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO audience_history (feed, day, source, subscribers)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (feed, day, source)"
                " DO UPDATE SET subscribers = excluded.subscribers", rows)

    def maintain(self, now: float, hub: Mapping[str, int] | None = None) -> None:
        """Upkeep (one process at a time): forget what left the window, rotate the key,
        store the hub's verified subscriptions (``hub``; None when the hub is off),
        and write today's totals into the history."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM audience_hub")
            rows_hub = [(feed, int(n)) for feed, n in (hub or {}).items() if n]
            if rows_hub:
                tx.executemany("INSERT INTO audience_hub (feed, subscribers) VALUES (?, ?)",
                               rows_hub)
        counts = self.current(now)
        today = day_of(now)
        rows = [(feed, today, source, number) for feed, c in counts.items()
                for source, number in c.by_source().items() if number]
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM audience_aggregators WHERE seen < ?",
                       (now - self.window_days * DAY,))
            tx.execute("DELETE FROM audience_polls WHERE day <= ?", (today - self.window_days,))
            tx.execute("DELETE FROM audience_keys WHERE period < ?",
                       (period_of(now, self.window_days),))
            tx.execute("DELETE FROM audience_history WHERE day <= ?", (today - HISTORY_DAYS,))
            # Today's row for a feed nobody reads any more goes to zero, not stale.
            tx.execute("UPDATE audience_history SET subscribers = 0 WHERE day = ?", (today,))
            if rows:
                tx.executemany(
                    "INSERT INTO audience_history (feed, day, source, subscribers)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (feed, day, source)"
                    " DO UPDATE SET subscribers = excluded.subscribers", rows)

    # -- reading -------------------------------------------------------------------

    def current(self, now: float) -> dict[str, FeedCounts]:
        """Every feed's subscribers now, by source (the hub's as the last upkeep stored)."""
        with self.db.transaction() as tx:
            hub = {f: int(n) for f, n in tx.all("SELECT feed, subscribers FROM audience_hub")}
            aggregators = tx.all(
                "SELECT feed, aggregator, feed_id, subscribers, seen FROM audience_aggregators"
                " WHERE seen >= ?", (now - self.window_days * DAY,))
            polls = tx.all(
                "SELECT feed, period, reader, polls FROM audience_polls WHERE day > ?",
                (day_of(now) - self.window_days,))
        reports = [AggregatorReport(f, a, i, int(s), float(t)) for f, a, i, s, t in aggregators]
        readers = readers_in_window((f, int(p), r, int(n)) for f, p, r, n in polls)
        return combine(reports, readers, hub, now, self.window_days)

    def history(self, now: float, days: int = HISTORY_DAYS) -> list[tuple[int, dict[str, int]]]:
        """Subscribers per day over every feed, by source, for the last ``days`` days
        (oldest first; a day without a row is all zeros)."""
        today = day_of(now)
        first = today - days + 1
        with self.db.transaction() as tx:
            rows = tx.all("SELECT day, source, SUM(subscribers) FROM audience_history"
                          " WHERE day >= ? GROUP BY day, source", (first,))
        by_day: dict[int, dict[str, int]] = {}
        for day, source, number in rows:
            by_day.setdefault(int(day), dict.fromkeys(SOURCES, 0))[source] = int(number)
        return [(day, by_day.get(day, dict.fromkeys(SOURCES, 0)))
                for day in range(first, today + 1)]


#: Distinct (feed, client) keys one worker holds between two flushes; a flood
#: of made-up User-Agents or addresses beyond it is dropped (and logged), so
#: neither memory nor the store grows with an attacker's imagination.
MAX_PENDING = 50_000


class AudienceCounter:
    """One worker's counts since the last flush, in memory: the request path's only cost.

    :meth:`observe` is a memoized classification and a dict update under a
    lock; :meth:`drain` hands everything over and starts afresh.
    """

    def __init__(self, clock: Callable[[], float] = time.time,
                 max_pending: int = MAX_PENDING) -> None:
        self._clock = clock
        self._max = max_pending
        self._lock = threading.Lock()
        self._reports: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._polls: dict[tuple[str, str, str, int], int] = {}
        #: Fetches not counted since the last flush because the bound was reached.
        self.dropped = 0

    def observe(self, feed: str, user_agent: str, address: str) -> None:
        """One fetch of ``feed`` (a :func:`~feedsvc.audience.feed_key`)."""
        kind = classify(user_agent)
        now = self._clock()
        if isinstance(kind, AggregatorHit):
            report = (feed, kind.aggregator, kind.feed_id)
            with self._lock:
                if report in self._reports or len(self._reports) < self._max:
                    self._reports[report] = (kind.subscribers, now)
                else:
                    self.dropped += 1
            return
        key = (feed, address, kind, int(now // DAY))
        with self._lock:
            number = self._polls.get(key)
            if number is not None:
                self._polls[key] = number + 1
            elif len(self._polls) < self._max:
                self._polls[key] = 1
            else:
                self.dropped += 1

    def drain(self) -> tuple[list[AggregatorReport], list[Polls]]:
        with self._lock:
            reports, self._reports = self._reports, {}
            polls, self._polls = self._polls, {}
            dropped, self.dropped = self.dropped, 0
        if dropped:
            log.warning("%d feed fetches not counted: more than %d distinct clients "
                        "between two flushes", dropped, self._max)
        return (
            [AggregatorReport(f, a, i, n, t) for (f, a, i), (n, t) in reports.items()],
            [Polls(f, addr, fam, day, n) for (f, addr, fam, day), n in polls.items()],
        )

    def put_back(self, reports: list[AggregatorReport], polls: list[Polls]) -> None:
        """Return a failed flush's counts, so the next flush carries them."""
        with self._lock:
            for r in reports:
                old = self._reports.get((r.feed, r.aggregator, r.feed_id))
                if old is None or old[1] < r.seen:
                    self._reports[(r.feed, r.aggregator, r.feed_id)] = (r.subscribers, r.seen)
            for p in polls:
                key = (p.feed, p.address, p.family, p.day)
                self._polls[key] = self._polls.get(key, 0) + p.polls


HubSource = Callable[[], Mapping[str, int]]
#: Flushes between two upkeeps (the first flush does one).
UPKEEP_EVERY = 12


class AudienceService:
    """A worker's counter, its flusher thread, and the reports over the shared store.

    The flusher writes this worker's counts every ``flush_interval`` seconds;
    the process holding the ``audience-upkeep`` lease also does the upkeep.
    Started lazily per process (after gunicorn's fork), like the reloader.
    """

    LEASE = "audience-upkeep"

    def __init__(self, store: AudienceStore, flush_interval: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.clock = clock
        self.counter = AudienceCounter(clock)
        #: Verified hub subscriptions per feed key, when the built-in hub is on
        #: (:meth:`set_hub_source`); None otherwise.
        self.hub_source: HubSource | None = None
        self._background = ProcessThreads("audience")
        self._stop = self._background.stopping
        self._thread: threading.Thread | None = None
        self._lease: Lease | None = None

    def set_hub_source(self, source: HubSource | None) -> None:
        """Register the hub's count of verified subscriptions per feed (or none)."""
        self.hub_source = source

    def hub_counts(self) -> dict[str, int]:
        if self.hub_source is None:
            return {}
        try:
            return {feed: int(n) for feed, n in self.hub_source().items()}
        except Exception:  # a broken hub must not take the counts down with it
            log.exception("the hub's subscription count failed")
            return {}

    def ensure_running(self) -> None:
        """Start this process's flusher unless it runs: called on every counted request
        (a fork is noticed without a ``getpid()`` call: feedsvc.background)."""
        if self.flush_interval > 0:
            self._background.ensure(self._start)

    def _start(self, stopping: threading.Event) -> list[threading.Thread]:
        self.counter = AudienceCounter(self.clock)  # a forked parent's counts are not ours
        self._lease = None
        self._stop = stopping
        self._thread = threading.Thread(target=self._run, name="feedsvc-audience", daemon=True)
        return [self._thread]

    def stop(self) -> None:
        """Stop the flusher for good, flush a last time (a clean shutdown loses no counts)
        and close the connection, before the ledger closes (web.shutdown's order)."""
        if self._background.closed:
            return  # stopped before: the last flush is done, the connection closed
        # Joined first: not mid-transaction while the process winds down.
        self._background.stop(timeout=10)
        try:
            self.flush()
        except Exception:
            log.exception("the last flush of subscriber counts failed")
        finally:
            self.store.db.close()

    def _run(self) -> None:
        flushes = 0
        failing = False
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
                # The upkeep touches every counted feed's history row: once every
                # UPKEEP_EVERY flushes (a minute by default) is plenty for daily totals.
                if flushes % UPKEEP_EVERY == 0:
                    self.upkeep()
            except Exception as exc:  # never let the flusher die: keep the counts, try again
                # One line per outage, not one per flush: the store's own error is
                # the one the operator acts on; the counts are kept meanwhile.
                if not failing:
                    log.warning("flushing subscriber counts failed (%s); keeping them in "
                                "memory until the store answers", exc)
                failing = True
            else:
                if failing:
                    log.info("subscriber counts flushed again")
                failing = False
            flushes += 1

    def flush(self) -> None:
        """Write this worker's counts since the last flush to the store."""
        reports, polls = self.counter.drain()
        try:
            self.store.record(reports, polls, self.clock())
        except BaseException:
            self.counter.put_back(reports, polls)
            raise

    def upkeep(self) -> bool:
        """Do the upkeep if this process holds the lease; whether it did."""
        if self._lease is None:
            holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
            self._lease = Lease(self.store.db, self.LEASE, holder)
        now = self.clock()
        # Held across three upkeeps: one process keeps it while it lives.
        if not self._lease.acquire(3 * UPKEEP_EVERY * self.flush_interval, now):
            return False
        self.store.maintain(now, self.hub_counts())
        return True

    def current(self) -> dict[str, FeedCounts]:
        """Every feed's counts now, from the store (what every worker reports alike)."""
        return self.store.current(self.clock())

    def history(self, days: int = HISTORY_DAYS) -> list[tuple[int, dict[str, int]]]:
        return self.store.history(self.clock(), days)
