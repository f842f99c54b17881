"""The built-in hub at work: noticing changes, verifying intent, delivering content.

Two daemon threads per process, started after any fork:

- the *announcer* hears which feeds a reload changed (a publisher listener
  that only queues), renders each subscribed topic of those feeds through
  the same publisher the web layer serves from, and records the new
  versions in the store (:meth:`HubStore.record_change`; every worker does,
  the store keeps one). At start it compares every subscribed topic with
  its newest recorded version, so a change made while the service was down
  is delivered after the restart;
- the *deliverer* tries for the ``hub-delivery`` lease; in the one process
  that holds it, it verifies pending requests, fans changes out into one
  delivery per subscription and sends them from a small pool of threads,
  so one slow callback does not hold up the others.

Nothing here runs on the request path or inside a reload. :meth:`Hub.stop`
joins both threads and waits for the sends under way, so nothing of the hub
touches the store once it returns. What the stopping process claimed and did
not finish it gives back at once (:meth:`HubStore.unclaim`), so the next
lease holder sends it without waiting for the claim (CLAIM_HOLD) to run
out: the claims of sends still queued, and of sends that ended while it
stopped with anything but a final answer (a 2xx or 410 delivery, a confirmed
verification, which are recorded). A send still under way when stop gives up
waiting keeps its claim, so that no two sends of one delivery overlap.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.client
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from .background import ProcessThreads
from .collection import FeedRef
from .config import Settings
from .fastpath import feed_map, parse_feed_url
from .hub import (
    DELIVERY_TIMEOUT,
    MAX_ATTEMPTS,
    MAX_PER_CALLBACK_HOST,
    HubRequest,
    LeasePolicy,
    denial_url,
    retry_delay,
    signature,
    verification_url,
)
from .hubclient import CallbackRefused, send
from .hubstore import Delivery, HubStore, PendingRequest
from .publisher import Publisher, Rendered
from .sql import Lease, SqlDatabase

log = logging.getLogger("feedsvc.hub")

#: How long the delivery lease lasts unless renewed; the holder renews it every loop.
LEASE_TTL = 5.0
#: How long a claimed verification or delivery is kept from others (beyond any time-out).
CLAIM_HOLD = 60.0
#: Threads sending verifications and deliveries in the lease holder.
SENDERS = 8
#: How long stop() waits for the sends under way: one callback's time-out and a margin.
STOP_WAIT = DELIVERY_TIMEOUT + 5.0


class _Stopped(Exception):
    """Raised in a sender that finds the hub stopping: it leaves the store alone, and
    what it was sending stays claimed by this process, for :meth:`Hub.stop` to give back."""


_Claim = TypeVar("_Claim", Delivery, PendingRequest)


def _key(item: Delivery | PendingRequest) -> tuple[str, int]:
    return ("delivery" if isinstance(item, Delivery) else "request", item.id)


@dataclass(frozen=True, slots=True)
class Topic:
    """What a topic URL names: a feed, a format and perhaps an archive."""

    ref: FeedRef
    fmt: str
    archive: int | None


class Hub:
    """The built-in hub of one app: its policy, its store and its two threads."""

    def __init__(self, settings: Settings, publisher: Publisher, db: SqlDatabase, *,
                 clock: Callable[[], float] = time.time, poll: float = 0.25) -> None:
        assert settings.base_url is not None and settings.hub_url is not None
        self.settings = settings
        self.base_url = settings.base_url
        self.url = settings.hub_url
        self.publisher = publisher
        self.db = db
        self.store = HubStore(db)
        self.leases = LeasePolicy(settings.hub_lease_seconds, settings.hub_lease_min_seconds,
                                  settings.hub_lease_max_seconds)
        self.clock = clock
        self.poll = poll
        self._adapter = feed_map().bind("localhost")
        self._changes: queue.Queue[list[FeedRef]] = queue.Queue(maxsize=1000)
        self._wake = threading.Event()
        self._background = ProcessThreads("hub")
        self._stop = self._background.stopping
        self._jobs: set[Future[None]] = set()  # the sends under way (or queued)
        self._jobs_lock = threading.Lock()  # also guards _held and _busy
        #: What this process claimed and has not finished (given back by stop()).
        self._held: dict[tuple[str, int], Delivery | PendingRequest] = {}
        self._busy: set[tuple[str, int]] = set()  # of those, the ones a sender works on
        self._store_use = threading.Condition()  # senders in the store, and stop() ending it
        self._storers = 0
        self._store_closed = False
        self._lease: Lease | None = None
        self._pool: ThreadPoolExecutor | None = None
        #: Called as ``observer(outcome, seconds)`` after each delivery attempt (metrics).
        self.delivery_observers: list[Callable[[str, float], None]] = []
        self.holding = False

    # -- topics ---------------------------------------------------------------

    def parse_topic(self, url: str) -> Topic | None:
        """The feed a topic URL names, if it is one of this service's feed URLs."""
        if not url.startswith(self.base_url + "/"):
            return None
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            return None
        found = parse_feed_url(self._adapter, unquote(url[len(self.base_url):]))
        return None if found is None else Topic(*found)

    def topic_problem(self, url: str) -> str | None:
        """Why ``url`` is not a topic of this hub, or None if it is one."""
        if not url.startswith(self.base_url + "/"):
            return f"topics are this service's feed URLs, under {self.base_url}/"
        if "?" in url or "#" in url:
            return "a topic URL has no query string or fragment"
        topic = self.parse_topic(url)
        if topic is None:
            return "not a feed URL (site, topic, author or archive, in a served format)"
        if self.render(topic) is None:
            return f"no such {topic.ref.kind} or archive"
        return None

    def render(self, topic: Topic) -> Rendered | None:
        """The document ``GET topic`` answers (no Accept-Encoding): the same cache, bytes."""
        return self.publisher.feed(topic.ref, topic.fmt, self.base_url, archive=topic.archive)

    # -- requests (the web layer) ----------------------------------------------

    def limit_problem(self, request: HubRequest) -> str | None:
        """Why a subscription may not be added now (the limits), or None."""
        if request.mode != "subscribe":
            return None
        now = self.clock()
        if self.store.exists(request.topic, request.callback, now):
            return None  # a renewal replaces, it does not add
        total, on_host = self.store.counts(request.callback_host, now)
        if total >= self.settings.hub_max_subscriptions:
            return (f"this hub holds its most subscriptions "
                    f"({self.settings.hub_max_subscriptions})")
        if on_host >= MAX_PER_CALLBACK_HOST:
            return (f"the callback host {request.callback_host} has "
                    f"{MAX_PER_CALLBACK_HOST} subscriptions, the most one host may have")
        return None

    def accept(self, request: HubRequest) -> None:
        """Keep a valid request for verification (answered 202 by the caller)."""
        self.store.add_request(request, self.clock())
        self._wake.set()

    # -- threads -----------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start this process's threads (again, in a process forked from one that had them)."""
        self._background.ensure(self._start)

    def _start(self, stopping: threading.Event) -> list[threading.Thread]:
        self._stop = stopping
        self.holding = False
        self._changes = queue.Queue(maxsize=1000)
        self._jobs = set()
        self._held, self._busy = {}, set()  # a forked child gives back none of its parent's
        self._storers, self._store_closed = 0, False
        holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lease = Lease(self.db, "hub-delivery", holder)
        self._pool = ThreadPoolExecutor(max_workers=SENDERS,
                                        thread_name_prefix="feedsvc-hub-send")
        return [
            threading.Thread(target=self._announce_loop, name="feedsvc-hub-announce",
                             daemon=True),
            threading.Thread(target=self._deliver_loop, name="feedsvc-hub-deliver",
                             daemon=True),
        ]

    def before_fork(self) -> None:
        """Hold no database connection across a fork (a preloading gunicorn master)."""
        self.db.close()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Stop for good: join the threads, wait for the sends under way, give back what
        was claimed and not finished, give the lease up (another process takes over at
        once) and close the connection.

        A send that ends while the hub stops records only a final answer; any other
        end (a time-out, an error, another status) records nothing (:class:`_Stopped`)
        and is given back with the sends still queued: the next lease holder sends
        them at once, no attempt counted. One still under way when ``timeout`` runs
        out keeps its claim (CLAIM_HOLD), so that no two sends of it overlap.
        """
        deadline = time.monotonic() + timeout
        ran = self._background.running
        self._background.stop(timeout, wake=self._wake_all)
        pool, self._pool = self._pool, None
        if ran and pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            with self._jobs_lock:
                jobs = list(self._jobs)
            _, left = concurrent.futures.wait(jobs, max(0.0, deadline - time.monotonic()))
            if left:
                log.warning("hub: %d send(s) still under way %.0f s after stop; they record "
                            "nothing and are sent again by the next lease holder once their "
                            "claim runs out (%g s)", len(left), timeout, CLAIM_HOLD)
            else:
                pool.shutdown(wait=True)  # every sender idle: their threads end at once
        if ran:
            self._end_store_use(deadline)
            self._give_back()
        if ran and self._lease is not None and self.holding:
            try:
                self._lease.release()
            except Exception as exc:  # the store is down, say: the lease runs out by itself
                log.warning("hub: could not give the delivery lease up (%s); it runs out "
                            "within %g s", exc, LEASE_TTL)
        self.holding = False
        self.db.close()

    def _end_store_use(self, deadline: float) -> None:
        """From now on no sender uses the store; wait for one in a transaction to leave it."""
        with self._store_use:
            self._store_closed = True
            self._store_use.wait_for(lambda: self._storers == 0,
                                     max(1.0, deadline - time.monotonic()))

    def _give_back(self) -> None:
        """Unclaim what this process claimed and did not finish, but for the sends still
        under way: the next lease holder takes it at once, not after CLAIM_HOLD."""
        with self._jobs_lock:
            left = [item for key, item in self._held.items() if key not in self._busy]
            self._held = {}
        if not left:
            return
        deliveries = [item for item in left if isinstance(item, Delivery)]
        requests = [item for item in left if isinstance(item, PendingRequest)]
        try:
            given = self.store.unclaim(deliveries, requests)
        except Exception as exc:  # the store is down, say: the claims run out by themselves
            log.warning("hub: could not give back %d unsent claim(s) (%s); they run out "
                        "within %g s", len(left), exc, CLAIM_HOLD)
            return
        log.info("hub: stopping; %d unfinished claim(s) given back for the next lease holder "
                 "(of %d delivery(ies) and %d verification(s) held)", given, len(deliveries),
                 len(requests))

    def _wake_all(self) -> None:
        self._wake.set()
        with contextlib.suppress(queue.Full):
            self._changes.put_nowait([])  # wakes the announcer

    @contextlib.contextmanager
    def _storing(self, *, final: bool = False) -> Iterator[None]:
        """Around a sender's use of the store (or the publisher). Once the hub stops, only
        a ``final`` outcome is stored (a send that stop() is waiting for, answered: it
        would be sent twice otherwise), and nothing once stop() ends the store's use."""
        with self._store_use:
            if self._store_closed or (self._stop.is_set() and not final):
                raise _Stopped
            self._storers += 1
        try:
            yield
        finally:
            with self._store_use:
                self._storers -= 1
                self._store_use.notify_all()

    def changed(self, refs: list[FeedRef]) -> None:
        """A publisher listener: queue the changed feeds; never blocks a reload."""
        try:
            self._changes.put_nowait(list(refs))
        except queue.Full:  # then look at every subscribed topic instead
            log.error("hub: change queue full; comparing every topic on the next turn")

    # -- the announcer ------------------------------------------------------------

    def _announce_loop(self) -> None:
        pending: set[FeedRef] | None = None  # None: every subscribed topic
        while not self._stop.is_set():
            try:
                self.record_changes(pending)
            except Exception:
                log.exception("hub: recording changes failed; trying again")
                if self._stop.wait(1.0):
                    return
                continue
            refs = self._changes.get()
            if self._stop.is_set():
                return
            pending = set(refs)
            while True:  # several reloads at once: one pass over their union
                try:
                    pending |= set(self._changes.get_nowait())
                except queue.Empty:
                    break

    def record_changes(self, refs: Iterable[FeedRef] | None) -> int:
        """Record the current version of each subscribed topic of ``refs`` (None: all)."""
        if refs is not None:
            refs = set(refs)
            if not refs:
                return 0
        now = self.clock()
        recorded = 0
        for url in self.store.topics(now):
            topic = self.parse_topic(url)
            if topic is None or (refs is not None and topic.ref not in refs):
                continue
            rendered = self.render(topic)
            if rendered is None:  # the feed is gone: GET answers 404, nothing to send
                continue
            if self.store.record_change(url, *_version(rendered), rendered.content_type,
                                        rendered.body, now):
                recorded += 1
        if recorded:
            self._wake.set()
        return recorded

    # -- the deliverer -------------------------------------------------------------

    def _deliver_loop(self) -> None:
        last_tidy = renewed = 0.0
        while not self._stop.is_set():
            try:
                now = self.clock()
                assert self._lease is not None
                if not self.holding or now - renewed >= LEASE_TTL / 5:
                    self.holding = self._lease.acquire(LEASE_TTL, now)
                    renewed = now
                if not self.holding:
                    self._stop.wait(1.0)
                    continue
                if now - last_tidy > 30:
                    last_tidy = now
                    gone = self.store.expire(now)
                    if gone:
                        log.info("hub: %d subscription(s) reached the end of their lease", gone)
                    self.store.prune()
                self.work_once(now)
            except Exception:
                log.exception("hub: delivery loop failed; trying again")
                self._stop.wait(1.0)
                continue
            self._wake.wait(self.poll)
            self._wake.clear()

    def work_once(self, now: float) -> None:
        """One turn of the lease holder: verifications, fan-out, then due deliveries."""
        assert self._pool is not None
        for pending in self._claimed(self.store.claim_requests(now, CLAIM_HOLD, self._free())):
            self._submit(self._verify, pending)
        self.store.fan_out(now)
        if self._stop.is_set():
            return
        for delivery in self._claimed(self.store.claim_deliveries(now, CLAIM_HOLD,
                                                                  self._free())):
            self._submit(self._deliver, delivery)

    def _claimed(self, items: list[_Claim]) -> list[_Claim]:
        """Note claims as held (until finished), so that stop() can give them back."""
        with self._jobs_lock:
            self._held.update((_key(item), item) for item in items)
        return items

    def _free(self) -> int:
        with self._jobs_lock:
            return max(0, SENDERS - len(self._jobs))

    def _submit(self, job: Callable, item: Delivery | PendingRequest) -> None:
        assert self._pool is not None

        key = _key(item)

        def run() -> None:
            with self._jobs_lock:
                self._busy.add(key)
            finished = True
            try:
                job(item)
            except _Stopped:  # unfinished: still held, stop() gives it back
                finished = False
            except Exception:  # its claim runs out: sent again later
                log.exception("hub: %s failed", job.__name__)
            finally:
                with self._jobs_lock:
                    self._busy.discard(key)
                    if finished:
                        self._held.pop(key, None)

        future = self._pool.submit(run)
        with self._jobs_lock:
            self._jobs.add(future)
        future.add_done_callback(self._done)  # a cancelled job too: stop() cancels the queued

    def _done(self, future: Future[None]) -> None:
        with self._jobs_lock:
            self._jobs.discard(future)
        self._wake.set()

    def _verify(self, pending: PendingRequest) -> None:
        """Verification of intent (§5.3): only a 2xx echoing the challenge confirms."""
        request = pending.request
        with self._storing():
            refusal = self.limit_problem(request)
        if refusal is not None:  # a limit reached since the request was accepted
            self._deny(request, refusal)
            with self._storing():
                self.store.finish_request(pending.id)
            return
        challenge = secrets.token_urlsafe(32)
        lease = request.lease_seconds if request.mode == "subscribe" else None
        url = verification_url(request.callback, request.mode, request.topic, challenge, lease)
        asked = self.clock()  # §5.3: the lease runs from the verification request
        try:
            reply = self._get(url)
            confirmed = 200 <= reply.status < 300 and reply.body == challenge.encode("ascii")
            problem = "" if confirmed else (
                f"HTTP {reply.status}" if not 200 <= reply.status < 300
                else "the answer is not the challenge")
        except CallbackRefused as exc:
            confirmed, problem = False, str(exc)
        except (OSError, http.client.HTTPException) as exc:
            confirmed, problem = False, _network_problem(exc)
        full: str | None = None
        with self._storing(final=confirmed):  # stopping: an unconfirmed one is asked again
            if confirmed and request.mode == "subscribe":
                topic = self.parse_topic(request.topic)
                rendered = self.render(topic) if topic is not None else None
                made = self.store.subscribe(
                    request, asked, _version(rendered) if rendered is not None else None,
                    (self.settings.hub_max_subscriptions, MAX_PER_CALLBACK_HOST))
                if made is None:  # others were verified first and took the last places
                    full = self.limit_problem(request) or "the hub is full"
            elif confirmed:
                self.store.unsubscribe(request.topic, request.callback)
            if full is None:
                self.store.finish_request(pending.id)
        if full is not None:
            self._deny(request, full)
            with self._storing():
                self.store.finish_request(pending.id)
            return
        if confirmed:
            log.info("hub: verified %s of %s for %s (lease %s s)", request.mode, request.topic,
                     request.callback_host, lease if lease is not None else "-")
        else:
            log.warning("hub: %s of %s for %s not verified (%s): no change made", request.mode,
                        request.topic, request.callback_host, problem)

    def _get(self, url: str):  # noqa: ANN202 - a hubclient.Reply
        return send("GET", url, allow_private=self.settings.hub_allow_private_callbacks,
                    timeout=DELIVERY_TIMEOUT)

    def _deny(self, request: HubRequest, reason: str) -> None:
        """Tell the subscriber a subscription is denied (§5.2: ``hub.mode=denied``)."""
        url = denial_url(request.callback, request.topic, reason)
        try:
            self._get(url)
        except (CallbackRefused, OSError, http.client.HTTPException) as exc:
            reason += f"; telling the callback failed: {_network_problem(exc)}"
        log.warning("hub: %s of %s for %s denied: %s", request.mode, request.topic,
                    request.callback_host, reason)

    def _deliver(self, delivery: Delivery) -> None:
        """Content distribution (§7): the document's bytes, its type, the links, a signature."""
        if self._stop.is_set():  # queued before stop(), started after: not sent, given back
            raise _Stopped
        sub = delivery.subscription
        headers = {"Content-Type": delivery.content_type,
                   "Link": f'<{self.url}>; rel="hub", <{delivery.topic}>; rel="self"'}
        if sub.secret:
            headers["X-Hub-Signature"] = signature(sub.secret, delivery.body)
        started = time.perf_counter()
        status: int | None = None
        try:
            reply = send("POST", sub.callback,
                         allow_private=self.settings.hub_allow_private_callbacks,
                         timeout=DELIVERY_TIMEOUT, body=delivery.body, headers=headers)
            status, problem = reply.status, f"HTTP {reply.status}"
        except CallbackRefused as exc:
            problem = str(exc)
        except (OSError, http.client.HTTPException) as exc:
            problem = _network_problem(exc)
        seconds = time.perf_counter() - started
        # While the hub stops, only the subscriber's final answer is kept; a failure
        # then may be the stop's doing (a deploy cutting it short): given back, not counted.
        final = status is not None and (200 <= status < 300 or status == 410)
        with self._storing(final=final):
            outcome = self._record(delivery, status, problem)
        for observer in self.delivery_observers:
            try:
                observer(outcome, seconds)
            except Exception:  # metrics must never break delivery
                log.exception("hub: delivery observer failed")

    def _record(self, delivery: Delivery, status: int | None, problem: str) -> str:
        """Store what one delivery attempt came to; returns the outcome (for metrics)."""
        sub = delivery.subscription
        now = self.clock()
        if status is not None and 200 <= status < 300:
            self.store.delivered(delivery, str(status), now)
            return "delivered"
        if status == 410:
            self.store.end_subscription(sub.id)
            log.warning("hub: %s answered 410 Gone for %s: subscription ended",
                        sub.callback_host, delivery.topic)
            return "gone"
        attempt = delivery.attempts + 1
        if attempt >= MAX_ATTEMPTS:
            self.store.failed(delivery, problem, now, None)
            log.error("hub: delivery of %s to %s failed (%s), attempt %d of %d: given up",
                      delivery.topic, sub.callback_host, problem, attempt, MAX_ATTEMPTS)
            return "dropped"
        wait = retry_delay(attempt, self.settings.hub_retry_seconds)
        self.store.failed(delivery, problem, now, now + wait)
        log.warning("hub: delivery of %s to %s failed (%s), attempt %d of %d; "
                    "next in %.0f s", delivery.topic, sub.callback_host, problem,
                    attempt, MAX_ATTEMPTS, wait)
        return "failed"


def _version(rendered: Rendered) -> tuple[str, int]:
    """A document version's key: its bytes' digest and its Last-Modified moment.

    The moment comes from the ledger every worker shares, so both are the
    same on every worker and host; the moment tells an undone edit (old
    bytes again) from the version it undoes.
    """
    return (hashlib.sha256(rendered.body).hexdigest(),
            int(rendered.last_modified.timestamp()))


def _network_problem(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {DELIVERY_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}"
