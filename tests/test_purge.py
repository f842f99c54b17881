"""The purge queue (feedsvc.purge) on SQLite and PostgreSQL: deduplicated across
processes, worked by one lease holder, retried with backoff, logged once per
failure streak, waiting for every live view; and a cache that is down never
delays a reload.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask

from feedsvc.purge import PurgeError, PurgeService, WebhookPurger
from feedsvc.sql import open_database
from feedsvc.surrogate import Document, Touched
from tests.conftest import write_article


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")


class Recorder:
    """A purger that records what it was sent, and can be told to fail."""

    by_key = by_url = True

    def __init__(self, name: str = "webhook:test") -> None:
        self.name = name
        self.calls: list[tuple[list[str], list[str]]] = []
        self.failing = False

    def send(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        if self.failing:
            raise PurgeError(f"{self.name} answered 503")
        self.calls.append((list(keys), list(paths)))

    @property
    def keys(self) -> list[str]:
        return [k for keys, _ in self.calls for k in keys]

    @property
    def paths(self) -> list[str]:
        return [p for _, paths in self.calls for p in paths]


def _change(digest: str = "v2", before: str = "v1") -> Touched:
    return Touched((Document("site", "/feed.atom", digest, before),
                    Document("site", "/", digest, before),
                    Document("article/a", "/articles/a", digest, before)))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


_SERVICES: list[PurgeService] = []


@pytest.fixture(autouse=True)
def _stop_services() -> Iterator[None]:
    """Every service a test made lets its connections go (a PostgreSQL pool's threads)."""
    yield
    while _SERVICES:
        _SERVICES.pop().stop()


def _service(url: str, purger: Recorder, clock: Clock, version: str = "c1",
             **kw: object) -> PurgeService:
    service = PurgeService(open_database(url), [purger], clock=clock,
                           version=lambda: version, **kw)
    service.ensure_running = lambda: None  # no thread: the test drives step() itself
    _SERVICES.append(service)
    return service


def _start(service: PurgeService, holder: str, version: str) -> None:
    """What ensure_running does, without the thread."""
    from feedsvc.sql import Lease

    service._lease = Lease(service.db, "purge-queue", holder)
    service._view = holder
    service._reported = [version]


def test_two_processes_one_change_one_purge(db_url: str) -> None:
    clock, purger = Clock(), Recorder()
    a, b = _service(db_url, purger, clock), _service(db_url, purger, clock)
    _start(a, "host:1", "c1")
    _start(b, "host:2", "c1")
    a.step()
    b.step()  # both are live views of c1; a holds the lease
    for service in (a, b):  # both workers see the same edit
        service.announce(_change(), "c2")
    a.step()  # a: queued, but b does not serve c2 yet: nothing goes out
    assert purger.calls == []
    b.step()  # b queues the same rows (no-ops) and reports c2; it has no lease
    assert purger.calls == []
    clock.now += 0.1
    a.step()
    assert sorted(purger.keys) == ["article/a", "site"]
    assert sorted(purger.paths) == ["/", "/articles/a", "/feed.atom"]
    for _ in range(3):
        clock.now += 1
        a.step()
        b.step()
    assert len(purger.calls) == 1  # exactly once
    # The same transition seen again later (a late worker) is still not sent twice...
    b.announce(_change(), "c2")
    b.step()
    clock.now += 11  # a's lease ran out: b takes over
    b.step()
    a.step()
    assert len(purger.calls) == 1
    # ...but undoing the edit is a new transition, and goes out.
    a.announce(_change("v1", "v2"), "c1")
    b.announce(_change("v1", "v2"), "c1")
    a.step()
    b.step()
    clock.now += 0.1
    a.step()
    b.step()
    assert len(purger.calls) == 2


def test_a_view_that_never_applies_the_version_is_waited_for_a_while(db_url: str) -> None:
    clock, purger = Clock(), Recorder()
    a, b = _service(db_url, purger, clock, max_wait=3.0), _service(db_url, purger, clock)
    _start(a, "h:1", "c1")
    _start(b, "h:2", "c1")
    a.step()
    b.step()
    a.announce(_change(), "c2")
    a.step()
    clock.now += 2
    b.step()  # alive, still on c1 (it took this change together with a later one, say)
    a.step()
    assert purger.calls == []
    clock.now += 2  # max_wait passed
    a.step()
    assert len(purger.calls) == 1


def test_a_dead_view_is_not_waited_for(db_url: str) -> None:
    clock, purger = Clock(), Recorder()
    a, b = _service(db_url, purger, clock), _service(db_url, purger, clock)
    _start(a, "h:1", "c1")
    _start(b, "h:2", "c1")
    a.step()
    b.step()
    clock.now += 6  # b stopped heartbeating: it died
    a.announce(_change(), "c2")
    a.step()
    assert len(purger.calls) == 1


def test_failures_back_off_log_once_and_are_counted(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock, purger = Clock(), Recorder()
    service = _service(db_url, purger, clock, attempts=4, backoff=1.0)
    outcomes: list[tuple[str, str, int]] = []
    service.observers.append(lambda *a: outcomes.append(a))
    _start(service, "h:1", "c1")
    purger.failing = True
    service.announce(_change(), "c2")
    with caplog.at_level(logging.INFO, logger="feedsvc.purge"):
        service.step()  # attempt 1 fails; next in 1 s
        clock.now += 0.5
        service.step()  # not due yet: no attempt
        clock.now += 0.6
        service.step()  # attempt 2 fails; next in 2 s
        clock.now += 2.1
        purger.failing = False
        service.step()  # attempt 3 succeeds
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "503" in errors[0].getMessage()
    assert any("takes purges again" in r.getMessage() for r in caplog.records)
    assert outcomes == [("webhook:test", "retried", 5), ("webhook:test", "retried", 5),
                        ("webhook:test", "sent", 5)]
    assert len(purger.calls) == 1
    # A cache that stays down is given up on after `attempts`, and counted as failed.
    purger.failing = True
    service.announce(_change("v3", "v2"), "c3")
    for _ in range(6):
        service.step()
        clock.now += 10
    assert outcomes[-1] == ("webhook:test", "failed", 5)
    assert service.queue.claim("h:1", clock.now + 100) == []


class Hook(BaseHTTPRequestHandler):
    bodies: list[tuple[bytes, str]] = []
    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802
        time.sleep(self.delay)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.bodies.append((body, self.headers.get("X-Feedsvc-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_body_and_signature() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        Hook.bodies = []
        hook = WebhookPurger(f"http://127.0.0.1:{server.server_address[1]}/purge",
                             "https://news.example.org", "k")
        hook.send(["site", "article/a"], ["/feed.atom"])
        body, signature = Hook.bodies[0]
        assert json.loads(body) == {"keys": ["article/a", "site"],
                                    "urls": ["https://news.example.org/feed.atom"]}
        import hashlib
        import hmac
        assert signature == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(OSError):  # nobody listening: the caller retries
        WebhookPurger(f"http://127.0.0.1:{server.server_address[1]}/x", "").send(["a"], [])


def test_an_unreachable_cache_never_delays_a_reload(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    """A cache that accepts the connection and never answers: rescans go on as usual."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    folder = tmp_path / "articles"
    write_article(folder, "a.txt", "First story")
    app = make_app(folder, purge=f"webhook:http://127.0.0.1:{silent.getsockname()[1]}/h,"
                   f"nginx:http://127.0.0.1:{silent.getsockname()[1]}")
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    try:
        for i in range(3):
            write_article(folder, f"n{i}.txt", f"Story {i}")
            started = time.perf_counter()
            report = publisher.refresh()
            assert report.changed
            assert time.perf_counter() - started < 1.0
            assert app.test_client().get("/feed.atom").status_code == 200
    finally:
        app.extensions["feedsvc.purge"].stop()
        silent.close()


def test_purge_settings_are_checked() -> None:
    from feedsvc.config import load_settings
    from feedsvc.errors import ConfigError

    settings = load_settings({"purge": "nginx:http://127.0.0.1, varnish:http://127.0.0.1:6081/"},
                             environ={})
    assert settings.purge == (("nginx", "http://127.0.0.1"), ("varnish", "http://127.0.0.1:6081"))
    assert settings.shared_max_age == 86400
    assert load_settings({}, environ={}).shared_max_age is None
    assert load_settings({}, environ={"FEEDSVC_PURGE": ""}).purge == ()
    for bad, said in [("squid:http://x", "kind one of nginx, varnish, webhook"),
                      ("nginx:ftp://x", "absolute http(s) URL"), ("http://x", "<kind>:<url>")]:
        with pytest.raises(ConfigError, match="FEEDSVC_PURGE") as caught:
            load_settings({"purge": bad}, environ={})
        assert said in str(caught.value)
    with pytest.raises(ConfigError, match="FEEDSVC_CACHE_TAGS.*true or false"):
        load_settings({"cache_tags": "maybe"}, environ={})
