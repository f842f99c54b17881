"""The daemon threads one service runs in this process: started after any fork, joined on close.

Every background part (the hub, the purge queue, the audience flusher, the
reloader) starts its threads lazily in the process that serves, so that a
gunicorn worker forked from a preloading master runs its own, and must stop
*and join* them before the store they use is closed: a thread that outlives
its app reopens the store, or logs its failures into whatever runs next (the
next test, a reloaded app). :class:`ProcessThreads` is that idiom, once.

A fork is noticed by a token that :func:`os.register_at_fork` renews in the
child, not by ``getpid()``: :meth:`ProcessThreads.ensure` is asked on every
counted request, and a comparison costs less than the system call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("feedsvc")


class _ThisProcess:
    """A token that changes in every forked child (:func:`os.register_at_fork`)."""

    token: object = object()


def _forked() -> None:
    _ThisProcess.token = object()


os.register_at_fork(after_in_child=_forked)


class ProcessThreads:
    """One service's threads in this process, with the event that tells them to stop.

    ``ensure(start)`` runs ``start(stopping)`` once per process, under a lock:
    it resets the service's per-process state and returns the threads, which
    are then started. ``stop()`` is for good: it sets the event, joins this
    process's threads, and no later ``ensure`` starts any again (a request
    that comes after the app closed must not bring a thread back).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: Set when the threads are to stop; a new one per start.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._token: object | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether this process started its threads and has not stopped them."""
        return self._token is _ThisProcess.token

    @property
    def closed(self) -> bool:
        return self._closed

    def ensure(self, start: Callable[[threading.Event], Iterable[threading.Thread]]) -> bool:
        """Start this process's threads unless they run (or were stopped); whether it did."""
        if self._token is _ThisProcess.token or self._closed:
            return False
        with self._lock:
            if self._token is _ThisProcess.token or self._closed:
                return False
            stopping = threading.Event()
            threads = list(start(stopping))
            self.stopping, self._threads, self._token = stopping, threads, _ThisProcess.token
            for thread in threads:
                thread.start()
            return True

    def stop(self, timeout: float = 10.0, wake: Callable[[], None] | None = None) -> bool:
        """Stop for good and wait up to ``timeout`` seconds; whether every thread ended.

        ``wake`` rouses threads blocked on something other than the event (a
        queue, another event). In a process that did not start them (a forked
        child) there is nothing to join: the parent's threads are not its own.
        """
        with self._lock:
            self._closed = True
            mine = self._token is _ThisProcess.token
            threads, self._threads, self._token = self._threads, [], None
            self.stopping.set()
        if not mine:
            return True
        if wake is not None:
            wake()
        return join_all(threads, timeout, self.name)


def join_all(threads: Iterable[threading.Thread], timeout: float, what: str) -> bool:
    """Join every thread within one ``timeout`` overall; say which did not end."""
    deadline = time.monotonic() + timeout
    left: list[str] = []
    for thread in threads:
        if thread is threading.current_thread() or thread.ident is None:
            continue  # a thread stopping its own service; or one never started
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread.name)
    if left:
        log.warning("%s: %s still running %.0f s after stop", what, ", ".join(left), timeout)
    return not left
