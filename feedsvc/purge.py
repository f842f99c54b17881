"""Purging caches of what changed: nginx by URL, Varnish by key, any CDN by webhook.

Every worker (and, on a shared database, every host) sees each change and
computes the same :class:`~feedsvc.surrogate.Touched` from it. Each enqueues
one row per purger and key or URL, under a dedupe key made of *what* changed
(the purger, the key or path, and the old and new digests of the documents),
with ``INSERT ... ON CONFLICT DO NOTHING``: however many processes saw the
change, there is one row. One process at a time (the holder of a
:class:`~feedsvc.sql.Lease`) works the queue, claiming rows with an UPDATE
that re-checks the claim in its WHERE clause (safe under PostgreSQL's READ
COMMITTED too), so each purge goes out once. A failed purge is retried with
exponential backoff, logged once per failure streak and counted; nothing
here runs on the request path or delays a reload (the reload thread only
puts the change on an in-process queue). :meth:`PurgeService.stop` joins the
thread before it returns; rows claimed and not sent by then go back to the
queue for the next lease holder.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from .background import ProcessThreads
from .sql import ComponentSchema, Lease, SqlDatabase, Tx
from .surrogate import Touched

log = logging.getLogger("feedsvc.purge")

SCHEMA = ComponentSchema("purge", (
    "CREATE TABLE IF NOT EXISTS purge_queue ("
    " dedupe TEXT PRIMARY KEY, purger TEXT NOT NULL, kind TEXT NOT NULL,"
    " value TEXT NOT NULL, version TEXT NOT NULL, enqueued DOUBLE PRECISION NOT NULL,"
    " attempts BIGINT NOT NULL, next_at DOUBLE PRECISION NOT NULL,"
    " claimed_by TEXT, claim_until DOUBLE PRECISION,"
    " done_at DOUBLE PRECISION, outcome TEXT)",
    "CREATE INDEX IF NOT EXISTS purge_queue_due ON purge_queue (done_at, next_at)",
    # Every serving process (view) and the collection versions it has applied: a
    # purge goes out once every live view serves the version that made it, so
    # that a cache refilled right after the purge gets the new bytes from any
    # worker on any host.
    "CREATE TABLE IF NOT EXISTS purge_views ("
    " holder TEXT PRIMARY KEY, updated DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS purge_applied ("
    " holder TEXT NOT NULL, version TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (holder, version))",
))
#: A view that has not said it is alive for this long is not waited for.
VIEW_LIVE_SECONDS = 5.0
VIEW_HEARTBEAT_SECONDS = 1.0
#: How often a process that does not hold the lease asks for it.
LEASE_RETRY_SECONDS = 1.0

LEASE_NAME = "purge-queue"
#: Done rows are kept this long so that a worker seeing a change late finds it
#: already queued (workers see a change within a reload interval of each other).
KEEP_DONE_SECONDS = 600.0
#: Rows claimed at once; a claim not finished within CLAIM_SECONDS is taken again.
CLAIM_BATCH = 2000
CLAIM_SECONDS = 60.0


class PurgeError(Exception):
    """A cache did not take a purge; the message says which and why."""


class Purger(Protocol):
    """One cache to purge: its name (``kind:url``) and what it is purged by."""

    name: str
    by_key: bool
    by_url: bool

    def send(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        """Purge these keys and URL paths; raise PurgeError (or OSError) on failure."""


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


@dataclass(frozen=True, slots=True)
class PublicOrigin:
    """Scheme, host and port readers use: what nginx's cache key holds."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> PublicOrigin:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname or "localhost", port)


class NginxPurger:
    """``PURGE <nginx>/purge<path>`` for every variant of nginx's cache key.

    deploy/nginx/feedsvc.conf keys its cache on the public URL and two folded
    request headers (gzip or not, browser or reader): each URL is purged in
    all four variants, with ``Host``, ``X-Purge-Scheme`` and ``X-Purge-Port``
    naming the public origin, over one kept-alive connection.
    """

    by_key, by_url = False, True
    VARIANTS = ((None, None), ("gzip", None), (None, "text/html"), ("gzip", "text/html"))

    def __init__(self, url: str, public: PublicOrigin, timeout: float = 5.0) -> None:
        self.name, self.url, self.public, self.timeout = f"nginx:{url}", url, public, timeout
        self.prefix = urlsplit(url).path.rstrip("/")

    def send(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        conn = _connection(self.url, self.timeout)
        try:
            for path in paths:
                for encoding, accept in self.VARIANTS:
                    headers = {"Host": self.public.host, "X-Purge-Scheme": self.public.scheme,
                               "X-Purge-Port": str(self.public.port),
                               "Accept-Encoding": encoding or "identity",
                               "User-Agent": "feedsvc-purge"}
                    if accept:
                        headers["Accept"] = accept
                    conn.request("PURGE", f"{self.prefix}/purge{path}", headers=headers)
                    response = conn.getresponse()
                    response.read()
                    # 200: purged; 404: nothing cached under that key, also fine.
                    if response.status not in (200, 404):
                        raise PurgeError(f"{self.name} answered {response.status} to a purge "
                                         f"of {path}")
        finally:
            conn.close()


class VarnishPurger:
    """A ``PURGE`` with an ``xkey-purge`` header: varnish-modules' xkey drops every
    object tagged with one of the keys (deploy/varnish/feedsvc.vcl)."""

    by_key, by_url = True, False
    KEYS_PER_REQUEST = 200

    def __init__(self, url: str, public: PublicOrigin, timeout: float = 5.0) -> None:
        self.name, self.url, self.public, self.timeout = f"varnish:{url}", url, public, timeout

    def send(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        conn = _connection(self.url, self.timeout)
        try:
            for start in range(0, len(keys), self.KEYS_PER_REQUEST):
                chunk = " ".join(keys[start:start + self.KEYS_PER_REQUEST])
                conn.request("PURGE", urlsplit(self.url).path or "/",
                             headers={"Host": self.public.host, "xkey-purge": chunk,
                                      "User-Agent": "feedsvc-purge"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise PurgeError(f"{self.name} answered {response.status} to an xkey purge")
        finally:
            conn.close()


class WebhookPurger:
    """POST ``{"keys": [...], "urls": [...]}`` (absolute URLs) for a CDN or custom tooling.

    With a secret, ``X-Feedsvc-Signature: sha256=<hex HMAC-SHA256 of the body>``
    lets the receiver check the sender, as GitHub's webhooks do.
    """

    by_key, by_url = True, True

    def __init__(self, url: str, base_url: str, secret: str | None = None,
                 timeout: float = 5.0) -> None:
        self.name, self.url, self.base_url = f"webhook:{url}", url, base_url
        self.secret, self.timeout = secret, timeout

    def body(self, keys: Sequence[str], paths: Sequence[str]) -> bytes:
        return json.dumps({"keys": sorted(keys), "urls": sorted(self.base_url + p for p in paths)},
                          separators=(",", ":")).encode()

    def send(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        body = self.body(keys, paths)
        headers = {"Content-Type": "application/json", "User-Agent": "feedsvc-purge"}
        if self.secret:
            mac = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Feedsvc-Signature"] = f"sha256={mac}"
        parts = urlsplit(self.url)
        conn = _connection(self.url, self.timeout)
        try:
            conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise PurgeError(f"{self.name} answered {response.status}")


def make_purgers(specs: Iterable[tuple[str, str]], base_url: str | None,
                 secret: str | None = None) -> list[Purger]:
    """The purgers FEEDSVC_PURGE names; the public origin is FEEDSVC_BASE_URL's.

    Without a base URL, nginx's cache is keyed on whatever host readers
    used, which feedsvc cannot know: the nginx URL's own stands in.
    """
    out: list[Purger] = []
    for kind, url in specs:
        public = PublicOrigin.of(base_url or url)
        if kind == "nginx":
            out.append(NginxPurger(url, public))
        elif kind == "varnish":
            out.append(VarnishPurger(url, public))
        elif kind == "webhook":
            out.append(WebhookPurger(url, base_url or "", secret))
        else:
            raise ValueError(f"unknown purger {kind!r}")
    return out


def _dedupe(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=20).hexdigest()


@dataclass(frozen=True, slots=True)
class Claimed:
    dedupe: str
    purger: str
    kind: str
    value: str
    attempts: int


class PurgeQueue:
    """The queue in the store, through feedsvc.sql (SQLite or PostgreSQL alike)."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db
        SCHEMA.ensure(db)

    def enqueue(self, touched: Touched, purgers: Sequence[Purger], now: float,
                version: str = "") -> int:
        """One row per purger and key or URL; a row seen before is skipped. Returns rows new.

        ``version`` is the collection version the change made: the rows wait
        until every live view has applied it (:meth:`applied`).
        """
        rows: list[tuple[str, str, str, str, str, float, int, float]] = []
        digests = touched.key_digests()
        for purger in purgers:
            if purger.by_key:
                rows += [(_dedupe(purger.name, "key", key, digest), purger.name, "key", key,
                          version, now, 0, now) for key, digest in sorted(digests.items())]
            if purger.by_url:
                seen: dict[str, str] = {}
                for doc in touched.documents:
                    seen[doc.path] = doc.transition
                rows += [(_dedupe(purger.name, "url", path, transition), purger.name, "url",
                          path, version, now, 0, now) for path, transition in sorted(seen.items())]
        if not rows:
            return 0
        with self.db.transaction() as tx:
            before = _pending_count(tx)
            tx.executemany(
                "INSERT INTO purge_queue (dedupe, purger, kind, value, version, enqueued,"
                " attempts, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (dedupe) DO NOTHING", rows)
            return _pending_count(tx) - before

    def applied(self, view: str, versions: Sequence[str], now: float) -> None:
        """``view`` is alive and serves (or has served) these collection versions."""
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO purge_views (holder, updated) VALUES (?, ?)"
                       " ON CONFLICT (holder) DO UPDATE SET updated = excluded.updated",
                       (view, now))
            if versions:
                tx.executemany("INSERT INTO purge_applied (holder, version, at) VALUES (?, ?, ?)"
                               " ON CONFLICT (holder, version) DO NOTHING",
                               [(view, v, now) for v in versions])

    def leave(self, view: str) -> None:
        """A view that stops serving is waited for no more."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM purge_views WHERE holder = ?", (view,))
            tx.execute("DELETE FROM purge_applied WHERE holder = ?", (view,))

    def claim(self, holder: str, now: float, limit: int = CLAIM_BATCH,
              max_wait: float = 10.0) -> list[Claimed]:
        """Rows due now, claimed for ``holder``; the WHERE re-checks the claim on each row.

        A row is due once every live view has applied its version (or after
        ``max_wait``: a view that skipped that version, taking two changes in
        one rescan, never will; its own rows cover what it changed).
        """
        with self.db.transaction() as tx:
            rows = tx.all(
                "UPDATE purge_queue SET claimed_by = ?, claim_until = ? WHERE dedupe IN ("
                " SELECT q.dedupe FROM purge_queue q WHERE q.done_at IS NULL AND q.next_at <= ?"
                " AND (q.claimed_by IS NULL OR q.claim_until < ?)"
                " AND (q.enqueued < ? OR NOT EXISTS (SELECT 1 FROM purge_views v"
                "  WHERE v.updated >= ? AND NOT EXISTS (SELECT 1 FROM purge_applied a"
                "  WHERE a.holder = v.holder AND a.version = q.version)))"
                " ORDER BY q.enqueued, q.dedupe LIMIT ?)"
                " AND done_at IS NULL AND (claimed_by IS NULL OR claim_until < ?)"
                " RETURNING dedupe, purger, kind, value, attempts",
                (holder, now + CLAIM_SECONDS, now, now, now - max_wait, now - VIEW_LIVE_SECONDS,
                 limit, now))
        return [Claimed(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    def finish(self, holder: str, rows: Sequence[Claimed], now: float, outcome: str) -> None:
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE purge_queue SET done_at = ?, outcome = ?, claimed_by = NULL"
                " WHERE dedupe = ? AND claimed_by = ?",
                [(now, outcome, r.dedupe, holder) for r in rows])

    def unclaim(self, holder: str, rows: Sequence[Claimed]) -> None:
        """Give claimed rows back unsent (a stopping process): the next holder sends them."""
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE purge_queue SET claimed_by = NULL, claim_until = NULL"
                " WHERE dedupe = ? AND claimed_by = ?", [(r.dedupe, holder) for r in rows])

    def retry(self, holder: str, rows: Sequence[Claimed], next_at: float) -> None:
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE purge_queue SET attempts = attempts + 1, next_at = ?, claimed_by = NULL"
                " WHERE dedupe = ? AND claimed_by = ?",
                [(next_at, r.dedupe, holder) for r in rows])

    def prune(self, now: float, keep: float = KEEP_DONE_SECONDS) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM purge_queue WHERE done_at IS NOT NULL AND done_at < ?",
                       (now - keep,))
            tx.execute("DELETE FROM purge_applied WHERE at < ?", (now - keep,))
            tx.execute("DELETE FROM purge_views WHERE updated < ?", (now - keep,))

    def pending(self) -> int:
        with self.db.transaction() as tx:
            return _pending_count(tx)


def _pending_count(tx: Tx) -> int:
    row = tx.one("SELECT COUNT(*) FROM purge_queue")
    return int(row[0]) if row else 0


class PurgeService:
    """One daemon thread per process: puts changes in the queue, and works it while
    this process holds the lease."""

    def __init__(
        self, db: SqlDatabase, purgers: Sequence[Purger], *,
        clock: Callable[[], float] = time.time, poll: float = 0.1, lease_ttl: float = 10.0,
        attempts: int = 8, backoff: float = 0.5, max_backoff: float = 300.0,
        version: Callable[[], str] | None = None, max_wait: float = 10.0,
    ) -> None:
        self.db, self.purgers = db, list(purgers)
        self.by_name = {p.name: p for p in self.purgers}
        self.queue = PurgeQueue(db)
        db.close()  # made before a fork, maybe: each process connects on first use
        self.clock, self.poll, self.lease_ttl = clock, poll, lease_ttl
        self.attempts, self.backoff, self.max_backoff = attempts, backoff, max_backoff
        #: The collection version this process serves now (reported as a view).
        self.version = version
        self.max_wait = max_wait
        self._changes: queue.Queue[tuple[Touched | Callable[[], Touched], str]] = queue.Queue(
            maxsize=10_000)
        self._wake = threading.Event()
        self._background = ProcessThreads("purge")
        self._stop = self._background.stopping
        self._lease: Lease | None = None
        self._failing: set[str] = set()
        self._held: list[tuple[Touched | Callable[[], Touched], str]] = []
        self._holding = False
        self._last_try = float("-inf")
        self._view: str | None = None
        self._reported: list[str] = []
        self._beat = 0.0
        self._last_prune = 0.0
        #: Called as ``observer(purger_name, outcome, count)``: outcome is
        #: ``sent``, ``retried`` or ``failed`` (given up); for metrics.
        self.observers: list[Callable[[str, str, int], None]] = []

    # -- from the reload thread: never blocks ----------------------------------------

    def announce(self, touched: Touched | Callable[[], Touched], version: str = "") -> None:
        """A change this process has applied (it serves ``version`` from now on).

        ``touched`` may be a function computing it, called in the purge thread,
        so that the reload thread only hands the change over.
        """
        self.ensure_running()
        try:
            self._changes.put_nowait((touched, version))
        except queue.Full:
            log.error("purge queue full in this process; dropped a change")
        self._wake.set()

    # -- the thread ---------------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start this process's thread (again in a forked child); not after :meth:`stop`."""
        self._background.ensure(self._start)

    def _start(self, stopping: threading.Event) -> list[threading.Thread]:
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = Lease(self.db, LEASE_NAME, holder)
        self._view = holder
        self._reported = [self.version()] if self.version is not None else []
        self._beat = 0.0
        self._holding, self._last_try = False, float("-inf")
        self._stop = stopping
        return [threading.Thread(target=self._run, name="feedsvc-purge", daemon=True)]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop for good: join the thread, give the lease up, leave the views, disconnect.

        Changes announced and not yet queued are dropped with the process; every
        other worker saw them too and queues the same rows.
        """
        ran = self._background.running
        self._background.stop(timeout, wake=self._wake.set)
        lease = self._lease
        if ran and lease is not None:
            try:
                lease.release()
                if self._view is not None:
                    self.queue.leave(self._view)
            except Exception:  # shutting down: the lease runs out by itself
                log.debug("purge lease release failed", exc_info=True)
        self.db.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the store is down, say: try again, never die
                log.exception("purge queue step failed")
                self._stop.wait(1.0)
            self._wake.wait(self.poll)
            self._wake.clear()

    def step(self) -> int:
        """Queue what this process saw, then work the queue if we hold the lease."""
        now = self.clock()
        while True:
            try:
                self._held.append(self._changes.get_nowait())
            except queue.Empty:
                break
        while self._held:  # a store that is down keeps them here until it is back
            touched, version = self._held[0]
            if callable(touched):
                touched = touched()
                self._held[0] = (touched, version)  # computed once, even if enqueue fails
            if touched.documents:
                self.queue.enqueue(touched, self.purgers, now, version)
            if version:
                self._reported.append(version)
            self._held.pop(0)
        beat_due = now - self._beat >= VIEW_HEARTBEAT_SECONDS
        if self._view is not None and (self._reported or beat_due):
            self.queue.applied(self._view, self._reported, now)
            self._reported, self._beat = [], now
        lease = self._lease
        if lease is None:
            return 0
        if not self._holding and now - self._last_try < LEASE_RETRY_SECONDS:
            return 0  # another process works the queue: ask again now and then, not each poll
        self._last_try = now
        self._holding = lease.acquire(self.lease_ttl, now)
        if not self._holding:
            return 0
        if now - self._last_prune > 60:
            self.queue.prune(now)
            self._last_prune = now
        return self.work(lease.holder, now)

    def work(self, holder: str, now: float) -> int:
        """Send every due row, one request (or one batch) per purger. Returns rows sent."""
        claimed = self.queue.claim(holder, now, max_wait=self.max_wait)
        sent = 0
        grouped: dict[str, list[Claimed]] = {}
        for row in claimed:
            grouped.setdefault(row.purger, []).append(row)
        for name, rows in grouped.items():
            purger = self.by_name.get(name)
            if purger is None:  # configured no more: nothing to send it to
                self.queue.finish(holder, rows, now, "dropped")
                continue
            if self._stop.is_set():  # stopping: the next lease holder sends the rest
                self.queue.unclaim(holder, rows)
                continue
            keys = [r.value for r in rows if r.kind == "key"]
            paths = [r.value for r in rows if r.kind == "url"]
            try:
                purger.send(keys, paths)
            except (OSError, PurgeError, http.client.HTTPException) as exc:
                if self._stop.is_set():  # the process stops: retried elsewhere, not reported
                    self.queue.unclaim(holder, rows)
                else:
                    self._failed(holder, purger, rows, exc, now)
                continue
            self.queue.finish(holder, rows, self.clock(), "sent")
            sent += len(rows)
            self._tell(name, "sent", len(rows))
            if name in self._failing:
                self._failing.discard(name)
                log.info("%s takes purges again", name)
        return sent

    def _failed(self, holder: str, purger: Purger, rows: list[Claimed], exc: Exception,
                now: float) -> None:
        if purger.name not in self._failing:  # once per streak, not once per retry
            self._failing.add(purger.name)
            log.error("%s failed: %s; retrying with backoff", purger.name, exc)
        give_up = [r for r in rows if r.attempts + 1 >= self.attempts]
        again = [r for r in rows if r.attempts + 1 < self.attempts]
        if give_up:
            self.queue.finish(holder, give_up, now, "failed")
            self._tell(purger.name, "failed", len(give_up))
        by_delay: dict[float, list[Claimed]] = {}
        for row in again:
            delay = min(self.max_backoff, self.backoff * 2 ** row.attempts)
            by_delay.setdefault(delay, []).append(row)
        for delay, batch in by_delay.items():
            self.queue.retry(holder, batch, now + delay)
        if again:
            self._tell(purger.name, "retried", len(again))

    def _tell(self, name: str, outcome: str, count: int) -> None:
        for observer in self.observers:
            try:
                observer(name, outcome, count)
            except Exception:
                log.exception("purge observer failed")

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until nothing queued here or in the store is left to send (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._changes.empty():
                with self.db.transaction() as tx:
                    row = tx.one("SELECT COUNT(*) FROM purge_queue WHERE done_at IS NULL")
                if row is not None and int(row[0]) == 0:
                    return True
            time.sleep(0.05)
        return False
