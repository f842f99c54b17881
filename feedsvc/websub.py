"""WebSub publisher side: tell hubs which feeds changed, off the request path.

W3C WebSub, section 7 leaves the publish ping to the hub implementation; the
common form (Google's and Superfeedr's hubs, WordPress's PuSHPress, the
websub.rocks tests) is a form POST of ``hub.mode=publish`` and
``hub.url=<feed URL>``, which is what we send, one request per feed URL.
Pings go through a bounded queue to one daemon thread per process, with a
few retries and exponential backoff, so a hub that is slow or down never
touches serving; it is only logged.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
        self._queue: queue.Queue[Ping] = queue.Queue(maxsize=max_queued)
        self._pid: int | None = None
        self._lock = threading.Lock()
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
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="feedsvc-websub", daemon=True).start()

    def _run(self) -> None:
        while True:
            ping = self._queue.get()
            try:
                self._deliver(ping)
            finally:
                self._queue.task_done()

    def _deliver(self, ping: Ping) -> None:
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
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
