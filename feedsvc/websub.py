"""WebSub publisher side: tell hubs which feeds changed, off the request path.

W3C WebSub, section 7 leaves the publish ping to the hub implementation; the
common form (Google's and Superfeedr's hubs, WordPress's PuSHPress, the
websub.rocks tests) is a form POST of ``hub.mode=publish`` and
``hub.url=<feed URL>``, which is what we send, one request per feed URL.
Pings go through a bounded queue to one daemon thread per process, with a
few retries and exponential backoff, so a hub that is slow or down never
touches serving; it is only logged. :meth:`HubNotifier.stop` ends and joins
the thread (pings still queued are dropped with the process).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .background import ProcessThreads

log = logging.getLogger("feedsvc.websub")


@dataclass(frozen=True, slots=True)
class Ping:
    hub: str
    url: str


def post_publish(hub: str, url: str, timeout: float) -> int:
    """Send one publish ping; return the HTTP status (raises on network errors)."""
    data = urllib.parse.urlencode({"hub.mode": "publish", "hub.url": url}).encode()
    request = urllib.request.Request(
        hub, data=data, method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "User-Agent": "feedsvc-websub"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class HubNotifier:
    """Queues publish pings and sends them from a background thread."""

    def __init__(
        self,
        hubs: Iterable[str],
        *,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 1.0,
        max_queued: int = 10_000,
        send: Callable[[str, str, float], int] = post_publish,
    ) -> None:
        self.hubs = tuple(hubs)
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.send = send
        self._queue: queue.Queue[Ping | None] = queue.Queue(maxsize=max_queued)
        self._background = ProcessThreads("websub")
        self._stop = self._background.stopping
        self.sent = 0
        self.failed = 0

    def notify(self, feed_urls: Iterable[str]) -> None:
        """Queue a ping to every hub for every URL; never blocks, never raises."""
        if not self.hubs:
            return
        self._ensure_thread()
        for url in feed_urls:
            for hub in self.hubs:
                try:
                    self._queue.put_nowait(Ping(hub, url))
                except queue.Full:
                    self.failed += 1
                    log.error("WebSub queue full; dropped ping of %s to %s", url, hub)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued ping was handled (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        self._background.ensure(self._start)

    def _start(self, stopping: threading.Event) -> list[threading.Thread]:
        self._stop = stopping
        return [threading.Thread(target=self._run, name="feedsvc-websub", daemon=True)]

    def stop(self) -> None:
        """End the thread for good and join it (a ping under way has its time-out)."""

        def wake() -> None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)

        self._background.stop(self.timeout + 2.0, wake=wake)

    def _run(self) -> None:
        while not self._stop.is_set():
            ping = self._queue.get()
            try:
                if ping is not None and not self._stop.is_set():
                    self._deliver(ping)
            finally:
                self._queue.task_done()

    def _deliver(self, ping: Ping) -> None:
        problem = ""
        for attempt in range(self.attempts):
            if attempt and self._stop.wait(self.backoff * 2 ** (attempt - 1)):
                return  # stopping: not the hub's failure
            try:
                status = self.send(ping.hub, ping.url, self.timeout)
            except OSError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= status < 300:
                self.sent += 1
                return
            problem = f"HTTP {status}"
            if 400 <= status < 500 and status != 429:
                break  # the hub refuses this ping: retrying will not help
        self.failed += 1
        log.error("WebSub hub %s did not take the ping for %s (%s)", ping.hub, ping.url, problem)
