"""The store under the shipped gunicorn settings (preload_app): SIGHUP and a USR2 restart
without a gap, inotify changes reaching every worker, and the rescan fallback with
inotify off."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, write_article
from tests.deploy_harness import Gunicorn, alive, children, fetch
from tests.test_store import _corpus

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, workers: int = 2, extra: int = 0, **env: str
           ) -> tuple[Gunicorn, Path]:
    articles = tmp_path / "articles"
    if not articles.exists():
        shutil.copytree(BUNDLED, articles)
        _corpus(articles / "generated", extra)
    server = Gunicorn(tmp_path, {"FEEDSVC_ARTICLES_DIR": str(articles),
                                 "FEEDSVC_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
                                 "FEEDSVC_BASE_URL": "https://news.example.org",
                                 "FEEDSVC_LOG_LEVEL": "warning", **env}, workers=workers)
    _wait(lambda: all(_health(server)[pid]["published"] > 20 for pid in _health(server))
          and len(_health(server)) == workers, "every worker ready")
    return server, articles


def _health(server: Gunicorn, count: int = 24) -> dict[int, dict]:
    """Each worker's /healthz, from enough concurrent requests that every worker answers."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: fetch(server.port, "/healthz"), range(count)))
    return {body["worker"]: body for r in replies if r.status == 200
            for body in [json.loads(r.body)]}


def _wait(condition, what: str, timeout: float = 20.0) -> float:  # noqa: ANN001
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def _everyone_sees(server: Gunicorn, predicate, workers: int = 2) -> bool:  # noqa: ANN001
    health = _health(server)
    return len(health) >= workers and all(predicate(body) for body in health.values())


class _Polling:
    """Clients polling /feed.atom on fresh connections while a test signals the master.

    Each reply is kept as (status, seconds it took, monotonic time it ended,
    which of ``marks`` its body holds, or None); a refused or reset
    connection is status 0, a failed request.
    """

    def __init__(self, server: Gunicorn, clients: int = 3, marks: tuple[bytes, ...] = ()) -> None:
        self.server, self.marks = server, marks
        self.replies: list[tuple[int, float, float, bytes | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll) for _ in range(clients)]

    def _poll(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                reply = fetch(self.server.port, "/feed.atom")
                status, body = reply.status, reply.body
            except OSError:
                status, body = 0, b""
            mark = next((m for m in self.marks if m in body), None)
            self.replies.append((status, time.perf_counter() - started, time.monotonic(), mark))

    def __enter__(self) -> _Polling:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def usual(self) -> float:
        """The median time of a request so far: what "usual" is before the signals."""
        return sorted(t for _, t, _, _ in self.replies)[len(self.replies) // 2]

    def assert_no_gap(self, usual: float, signalled: float, output: str) -> None:
        """Every request answered 200, and none took 0.5 s longer than ``usual``."""
        assert len(self.replies) > 100, len(self.replies)
        statuses = [s for s, _, _, _ in self.replies]
        failed = [round(at - signalled, 3) for s, _, at, _ in self.replies if s != 200]
        assert set(statuses) == {200}, ({s: statuses.count(s) for s in set(statuses)}, failed,
                                        output[-3000:])
        slowest = max(t for _, t, _, _ in self.replies)
        slow = [(round(at - t - signalled, 3), round(t, 3))
                for _, t, at, _ in self.replies if t > usual + 0.2]
        assert slowest < usual + 0.5, (slowest, usual, slow)


def test_sighup_under_polling_leaves_no_gap(tmp_path: Path) -> None:
    # 3,000 articles: parsing them again in each new worker (as before the store) would
    # leave a gap of seconds; a worker forked from the master's view starts at once.
    server, _ = _start(tmp_path, extra=3000)
    try:
        with _Polling(server) as polling:
            time.sleep(1.0)
            before = set(_health(server))
            usual = polling.usual()
            hup = time.monotonic()
            for _ in range(2):
                os.kill(server.proc.pid, signal.SIGHUP)
                time.sleep(2.0)
            _wait(lambda: not (set(_health(server)) & before), "new workers only")
            time.sleep(0.5)
    finally:
        output = server.stop()
    polling.assert_no_gap(usual, hup, output)
    assert "Traceback" not in output, output


def _notifications(folder: Path) -> tuple[socket.socket, str]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET (Type=notify)."""
    path = tempfile.mkdtemp(prefix="sd-", dir="/tmp") + "/notify"  # AF_UNIX: 108 bytes at most
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return sock, path


def _received(sock: socket.socket) -> list[str]:
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(4096).decode())
    return messages


def test_usr2_under_polling_restarts_with_new_settings_and_no_gap(tmp_path: Path) -> None:
    # USR2 execs a new master (new code, the settings file read again) that loads the
    # store while the old one serves; the old master stops once the new workers are up.
    config = tmp_path / "feedsvc.toml"
    config.write_text('site_title = "Before The Restart"\n', encoding="utf-8")
    notify, notify_path = _notifications(tmp_path)
    server, _ = _start(tmp_path, extra=1500, FEEDSVC_CONFIG=str(config),
                       NOTIFY_SOCKET=notify_path)
    old_master = server.master
    old_workers = set(children(old_master))
    try:
        with _Polling(server, marks=(b"Before The Restart", b"After The Restart")) as polling:
            time.sleep(1.0)
            usual = polling.usual()
            config.write_text('site_title = "After The Restart"\n', encoding="utf-8")
            signalled = time.monotonic()
            new_master = server.restart()
            restarted = time.monotonic()
            time.sleep(1.0)
        new_workers, spawned = set(_health(server)), set(children(new_master))
        messages = _received(notify)
    finally:
        output = server.stop()
        notify.close()
    polling.assert_no_gap(usual, signalled, output)
    assert new_master != old_master and not alive(old_master)
    assert len(new_workers) == 2 and new_workers <= spawned and not old_workers & new_workers
    # Before the signal the old settings, after the old master's exit only the new.
    assert {m for _, _, at, m in polling.replies if at < signalled} == {b"Before The Restart"}
    assert {m for _, _, at, m in polling.replies if at > restarted + 0.1} \
        == {b"After The Restart"}
    # systemd is told the new main pid before the old one exits (NotifyAccess=all).
    assert f"MAINPID={new_master}" in "\n".join(messages), messages
    assert "Traceback" not in output, output


def test_usr2_with_broken_settings_leaves_the_old_master_serving(tmp_path: Path) -> None:
    config = tmp_path / "feedsvc.toml"
    config.write_text('site_title = "The Old Master"\n', encoding="utf-8")
    server, _ = _start(tmp_path, extra=300, FEEDSVC_CONFIG=str(config))
    old_master = server.master
    try:
        with _Polling(server, marks=(b"The Old Master",)) as polling:
            time.sleep(0.5)
            usual = polling.usual()
            config.write_text('site_title = "Never Served"\nfeed_size = "lots"\n',
                              encoding="utf-8")
            signalled = time.monotonic()
            new_master = server.usr2()
            _wait(lambda: not alive(new_master), "the broken new master to exit")
            time.sleep(1.0)
        assert alive(old_master) and server.master == old_master
        assert {m for _, _, _, m in polling.replies} == {b"The Old Master"}
        polling.assert_no_gap(usual, signalled, server.output())
        assert "FEEDSVC_FEED_SIZE" in server.output()  # the new master's error is logged
        # Fixed, a second USR2 goes through: the failed one left no state behind.
        config.write_text('site_title = "Fixed"\n', encoding="utf-8")
        server.restart()
        assert b"Fixed" in fetch(server.port, "/feed.atom").body
    finally:
        output = server.stop()
    assert not alive(old_master)
    assert output.count("Traceback") <= 1, output  # the broken master's, nothing else


def test_inotify_changes_reach_every_worker(tmp_path: Path) -> None:
    # A rescan every 60 s: only inotify can bring the changes in this quickly.
    server, articles = _start(tmp_path, FEEDSVC_RELOAD_INTERVAL="60")
    try:
        published = next(iter(_health(server).values()))["published"]
        tmp = articles / "incoming.txt.tmp"  # written aside, renamed into place
        write_article(articles, "incoming.txt.tmp", "Renamed Into Place Story")
        tmp.rename(articles / "incoming.txt")
        _wait(lambda: _everyone_sees(server, lambda b: b["published"] == published + 1),
              "the renamed-in article in every worker", timeout=5)
        seq = max(b["store_seq"] for b in _health(server).values())
        path = write_article(articles, "incoming.txt", "Renamed Into Place Story",
                             body="An edit written in place and closed.")
        _wait(lambda: _everyone_sees(server, lambda b: b["store_seq"] > seq),
              "the edit in every worker", timeout=5)
        bodies = {fetch(server.port, "/feed.atom").body for _ in range(12)}
        assert all(b"An edit written in place and closed." in body for body in bodies)
        path.unlink()
        _wait(lambda: _everyone_sees(server, lambda b: b["published"] == published),
              "the deletion in every worker", timeout=5)
    finally:
        output = server.stop()
    assert "Traceback" not in output, output


def test_without_inotify_the_rescan_still_finds_changes(tmp_path: Path) -> None:
    server, articles = _start(tmp_path, FEEDSVC_RELOAD_INTERVAL="0.3", FEEDSVC_INOTIFY="false")
    try:
        published = next(iter(_health(server).values()))["published"]
        write_article(articles, "rescanned.txt", "Found By The Rescan")
        _wait(lambda: _everyone_sees(server, lambda b: b["published"] == published + 1),
              "the new article in every worker", timeout=10)
    finally:
        output = server.stop()
    assert "Traceback" not in output, output
