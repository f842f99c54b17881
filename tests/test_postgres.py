"""The store on a real PostgreSQL server: several hosts, one truth (tests/pg_harness.py).

Each "host" is an app (or a gunicorn) with its own copy of the articles
folder and one database URL; what they serve must be the same, byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from feedsvc.config import load_settings
from feedsvc.errors import ConfigError, LedgerError
from feedsvc.ledger import Sighting
from feedsvc.pgstore import PostgresStore
from feedsvc.publisher import Publisher
from feedsvc.sql import DatabaseURL
from feedsvc.web import create_app, shutdown
from tests.conftest import BASE_URL, BUNDLED, ROOT, write_article
from tests.pg_harness import PASSWORD

pytestmark = pytest.mark.usefixtures("postgres_server")


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(BUNDLED, target)
    return target


def _two_hosts(tmp_path: Path, url: str, interval: float, workers: int) -> list:
    """Two gunicorn "hosts" (not started) on one database, each with its own folder copy:
    [(Gunicorn, articles folder), ...]."""
    from tests.deploy_harness import Gunicorn

    hosts = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        articles = _copy(folder, "articles")
        hosts.append((Gunicorn(folder, {
            "FEEDSVC_ARTICLES_DIR": str(articles), "FEEDSVC_DATABASE_URL": url,
            "FEEDSVC_BASE_URL": BASE_URL, "FEEDSVC_RELOAD_INTERVAL": f"{interval:g}",
            "FEEDSVC_LOG_LEVEL": "info"}, workers=workers), articles))
    return hosts


def _sync_together(hosts: list[Publisher]) -> None:
    """Every host's folder sync at the same instant (as if each held the writer lock),
    then each host's refresh."""
    barrier = threading.Barrier(len(hosts))

    def run(h: Publisher) -> None:
        barrier.wait()
        h.sync.run(time.time())

    threads = [threading.Thread(target=run, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in hosts:
        h.refresh()


def _settings(articles: Path, url: str, **more: object):
    return load_settings({"articles_dir": str(articles), "base_url": BASE_URL,
                          "database_url": url, "reload_interval": 0, **more})


def _host(articles: Path, url: str, **more: object) -> Publisher:
    settings = _settings(articles, url, **more)
    publisher = Publisher(settings, settings.database_url, settle_seconds=0)
    _HOSTS.append(publisher)
    return publisher


def _shown(publisher: Publisher) -> list[tuple]:
    return [(e.article.path, e.id, e.slug, e.published, e.updated, e.title)
            for e in publisher.collection.entries]


_APPS: list = []
_HOSTS: list[Publisher] = []


@pytest.fixture(autouse=True)
def _stop_apps():  # noqa: ANN202
    """Every app and host a test made is shut down when the test ends: its threads
    joined (none follows a database of a finished test), its store closed."""
    yield
    while _APPS:
        shutdown(_APPS.pop())
    while _HOSTS:
        with contextlib.suppress(Exception):  # the server may be down in this test
            _HOSTS.pop().close()


def _app(articles: Path, url: str, tmp: Path, **more: object):
    app = create_app({"articles_dir": str(articles), "base_url": BASE_URL,
                      "database_url": url, "inotify": False, **more}, instance_path=tmp)
    _APPS.append(app)
    return app


def _wait(predicate, timeout: float = 10.0, step: float = 0.02) -> float:  # noqa: ANN001
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError("timed out")
        time.sleep(step)
    return time.monotonic() - started


def _wait_for(value, timeout: float = 10.0, step: float = 0.05):  # noqa: ANN001, ANN202
    """Poll ``value()`` until it is something other than None or False (0 counts)."""
    deadline = time.monotonic() + timeout
    while True:
        got = value()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(step)


def test_config_chooses_postgres_and_refuses_two_answers(postgres_url: str,
                                                         tmp_path: Path) -> None:
    settings = _settings(tmp_path, postgres_url)
    assert settings.database_url.dialect == "postgresql"
    assert PASSWORD not in str(settings.database_url)
    with pytest.raises(ConfigError) as err:
        _settings(tmp_path, postgres_url, ledger_path=str(tmp_path / "l.sqlite3"))
    assert "FEEDSVC_DATABASE_URL" in str(err.value) and PASSWORD not in str(err.value)
    same = load_settings({"database_url": f"sqlite:///{tmp_path}/l.sqlite3",
                          "ledger_path": str(tmp_path / "l.sqlite3")})
    assert same.ledger_path == tmp_path / "l.sqlite3"
    with pytest.raises(ConfigError, match="two different files"):
        load_settings({"database_url": f"sqlite:///{tmp_path}/a.sqlite3",
                       "ledger_path": str(tmp_path / "b.sqlite3")})


def test_two_hosts_on_folder_copies_serve_identical_bytes_and_etags(
        postgres_url: str, tmp_path: Path) -> None:
    a_dir, b_dir = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    # Host B's copy has other mtimes and inodes (as after rsync or git clone).
    for path in b_dir.rglob("*.txt"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    app_a = _app(a_dir, postgres_url, tmp_path / "ia")
    app_b = _app(b_dir, postgres_url, tmp_path / "ib")
    a, b = app_a.test_client(), app_b.test_client()
    pub_a, pub_b = app_a.extensions["feedsvc"], app_b.extensions["feedsvc"]
    assert pub_a.is_writer != pub_b.is_writer  # one writer across hosts
    assert _shown(pub_a) == _shown(pub_b) and len(pub_a.collection.entries) > 5
    for url in ("/feed.atom", "/feed.rss", "/feed.json", "/", "/topics/"):
        ra, rb = a.get(url), b.get(url)
        assert ra.status_code == rb.status_code == 200, url
        assert ra.data == rb.data, url
        assert ra.headers["ETag"] == rb.headers["ETag"], url
        assert ra.headers["Last-Modified"] == rb.headers["Last-Modified"], url
        # A CDN revalidating at B with A's validator gets a 304.
        again = b.get(url, headers={"If-None-Match": ra.headers["ETag"]})
        assert again.status_code == 304, url


def test_same_new_file_in_both_folders_at_once_gets_one_id(postgres_url: str,
                                                           tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        write_article(d, "old.txt", "Old one")
    hosts = [_host(d, postgres_url) for d in dirs]
    for h in hosts:
        h.refresh()
    for d in dirs:  # the same new file lands on both hosts in the same second
        write_article(d, "news/new.txt", "Breaking news")
    _sync_together(hosts)  # both stamp, as if each held the writer lock
    stamps = [h.store.stamps_of(["news/new.txt"])["news/new.txt"] for h in hosts]
    assert stamps[0] == stamps[1]
    assert _shown(hosts[0]) == _shown(hosts[1])
    with hosts[0].store._tx() as tx:  # noqa: SLF001
        assert tx.one("SELECT count(*) FROM articles WHERE slug LIKE ?",
                      ("breaking-news%",))[0] == 1
    for h in hosts:
        h.close()


def test_stampers_racing_on_one_new_file_agree(postgres_url: str) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, then the winner's row: one id for 8 racers."""
    stores = [PostgresStore(postgres_url, "news.example.org") for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    got: list = []

    def race(store: PostgresStore, n: int) -> None:
        barrier.wait()
        # Each racer's clock and mtime differ a little: the first insert wins all the same.
        got.append(store.stamp([Sighting("x.txt", "h1", 1_750_000_000 + n, "x", None)],
                               {"x.txt"}, time.time())["x.txt"])

    threads = [threading.Thread(target=race, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1
    for s in stores:
        s.close()


def test_a_new_file_in_the_writers_folder_reaches_every_host(postgres_url: str,
                                                              tmp_path: Path) -> None:
    a_dir, b_dir = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    app_a = _app(a_dir, postgres_url, tmp_path / "ia", reload_interval=0.5)
    app_b = _app(b_dir, postgres_url, tmp_path / "ib", reload_interval=0.5)
    pubs = [app_a.extensions["feedsvc"], app_b.extensions["feedsvc"]]
    writer_dir = a_dir if pubs[0].is_writer else b_dir
    clients = [app_a.test_client(), app_b.test_client()]
    before = [c.get("/feed.atom").data for c in clients]
    write_article(writer_dir, "fresh/only-here.txt", "Only on one host")
    written = time.monotonic()
    # The writer's folder only: the other host serves it from the store, before its
    # own copy has it.
    took = _wait(lambda: all(b"Only on one host" in c.get("/feed.atom").data
                             for c in clients), timeout=10)
    print(f"new article on every host's /feed.atom {took:.2f} s after the write")
    assert time.monotonic() - written < 5  # the target is 2 s; generous under load
    after = [c.get("/feed.atom") for c in clients]
    assert after[0].data == after[1].data != before[0]
    assert after[0].headers["ETag"] == after[1].headers["ETag"]
    for app in (app_a, app_b):
        app.extensions["feedsvc.reloader"].stop()
        app.extensions["feedsvc"].close()


def test_a_file_only_in_a_followers_folder_appears_when_it_takes_over(
        postgres_url: str, tmp_path: Path) -> None:
    """The writer's folder is the truth: a file only a follower's folder has is not
    published (nor stamped) until that follower becomes the writer, then it is, on
    every host, including one whose own folder still lacks it."""
    a_dir, b_dir = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    a = _host(a_dir, postgres_url)
    a.refresh()
    b = _host(b_dir, postgres_url)
    b.refresh()
    assert a.is_writer and not b.is_writer
    write_article(b_dir, "only/follower.txt", "Only in the follower's folder")
    for _ in range(2):
        b.refresh()
        a.refresh()
    for host in (a, b):
        assert all(e.title != "Only in the follower's folder" for e in host.collection.entries)
    assert "only/follower.txt" not in b.store.files()
    assert not b.store.stamps_of(["only/follower.txt"])
    a.close()  # the writer exits: the lock is free at once
    b.refresh()
    assert b.is_writer
    assert any(e.title == "Only in the follower's folder" for e in b.collection.entries)
    again = _host(a_dir, postgres_url)  # host A back, its folder not yet synced
    again.refresh()
    assert not again.is_writer
    assert any(e.title == "Only in the follower's folder" for e in again.collection.entries)
    assert _shown(again) == _shown(b)
    again.close()
    b.close()


def test_followers_hear_notify_and_fall_back_to_polling(postgres_url: str,
                                                         tmp_path: Path) -> None:
    d = tmp_path / "a"
    d.mkdir()
    write_article(d, "one.txt", "One")
    writer = _host(d, postgres_url)
    writer.refresh()
    follower = PostgresStore(postgres_url, "news.example.org")
    first = follower.seq()
    _wait(lambda: follower._listening)  # noqa: SLF001
    write_article(d, "two.txt", "Two")
    writer.refresh()
    took = _wait(lambda: follower.seq()[0] > first[0], timeout=3)
    assert took < 0.5  # a notification, not the one-second poll
    # Notifications lost (the listener is gone): polling still sees the change.
    follower._stop.set()  # noqa: SLF001
    _wait(lambda: not follower._listening)  # noqa: SLF001
    now = follower.seq()
    write_article(d, "three.txt", "Three")
    writer.refresh()
    _wait(lambda: follower.seq()[0] > now[0], timeout=5)
    follower.close()
    writer.close()


def test_writer_killed_another_host_takes_over(postgres_url: str, tmp_path: Path) -> None:
    """A writer process killed with SIGKILL: its advisory lock goes with its connection."""
    a_dir, b_dir = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    interval = 1.0
    script = (
        "import sys, time\n"
        "from feedsvc.config import load_settings\n"
        "from feedsvc.publisher import Publisher\n"
        f"s = load_settings({{'articles_dir': {str(a_dir)!r}, 'base_url': {BASE_URL!r},"
        f" 'database_url': {postgres_url!r}}})\n"
        "p = Publisher(s, s.database_url)\n"
        "p.refresh()\n"
        "print('writer' if p.is_writer else 'not', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "writer"
        b = _host(b_dir, postgres_url, reload_interval=interval)
        b.refresh()
        assert not b.is_writer and b.loaded
        assert b.store.lease_holder().endswith(f":{proc.pid}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while not b.is_writer:
            assert time.monotonic() - killed < 2 * interval, "no takeover in 2 x interval"
            time.sleep(interval / 4)
            b.refresh()
        took = time.monotonic() - killed
        print(f"takeover {took:.2f} s after the writer was killed")
        write_article(b_dir, "after.txt", "Written after the takeover")
        b.refresh()
        assert any(e.title == "Written after the takeover" for e in b.collection.entries)
        b.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_moments_are_one_per_version_for_every_host(postgres_url: str) -> None:
    """Feed versions' moments: stored once, read back in one query by any host; only a
    new version of a document gets a new (never earlier) moment."""
    a = PostgresStore(postgres_url, "news.example.org")
    b = PostgresStore(postgres_url, "news.example.org")
    try:
        docs = {f"doc{i}": (f"d{i}", 0) for i in range(50)}
        first = a.moments(docs, 1_700_000_000.0)
        assert first == dict.fromkeys(docs, 1_700_000_000)
        assert b.moments(docs, 1_800_000_000.0) == first  # another host, later: the same
        edited = {**docs, "doc7": ("d7-new", 0)}
        later = b.moments(edited, 1_700_000_000.0)  # a clock behind: still after the old one
        assert later["doc7"] == 1_700_000_001
        assert {d: m for d, m in later.items() if d != "doc7"} == {
            d: m for d, m in first.items() if d != "doc7"}
        assert a.moments({"doc7": ("d7-new", 0)}, 1_900_000_000.0) == {"doc7": 1_700_000_001}
    finally:
        a.close()
        b.close()


def test_a_writer_whose_session_ended_cannot_write(postgres_url: str) -> None:
    """The fence: the writer writes only on its lock's session. When the server ends
    that session (as idle_session_timeout does to a silent writer), the next write
    raises LeaseLost and changes nothing, while another process holds the lock."""
    from feedsvc.errors import LeaseLost
    from feedsvc.store import Batch, FileRecord

    a = PostgresStore(postgres_url, "news.example.org")
    b = PostgresStore(postgres_url, "news.example.org")
    try:
        assert a.acquire(10.0) and not b.acquire(10.0)
        session = a._writer_conn.info.backend_pid  # noqa: SLF001
        settings = dict(a._writer_conn.execute(  # noqa: SLF001
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('idle_session_timeout', 'idle_in_transaction_session_timeout')").fetchall())
        assert settings == {"idle_session_timeout": "1000",
                            "idle_in_transaction_session_timeout": "1000"}
        row = FileRecord("kept.txt", 1, 1, 1, None, "not an article", None)
        a.write(Batch(files=[row], changed={"kept.txt"}))
        with b._tx() as tx:  # noqa: SLF001
            tx.execute("SELECT pg_terminate_backend(?)", (session,))
        _wait(lambda: b.acquire(10.0), timeout=5)
        before = b.seq()[0]
        with pytest.raises(LeaseLost):
            a.write(Batch(files=[FileRecord("stale.txt", 1, 1, 1, None, "x", None)],
                          changed={"stale.txt"}))
        with pytest.raises(LeaseLost):
            a.stamp([Sighting("stale.txt", "h1", 1_700_000_000.0, "stale", None)], {"stale.txt"},
                    1_700_000_000.0)
        assert "stale.txt" not in b.files() and "kept.txt" in b.files()
        assert not b.stamps_of(["stale.txt"]) and b.seq()[0] == before
        assert not a.acquire(10.0)  # it follows now: B holds the lock
        assert b.lease_holder() == b.holder
    finally:
        a.close()
        b.close()


def test_a_silent_writer_session_is_ended_by_the_server(postgres_url: str) -> None:
    """Without its heartbeat (a stopped process), the writer's session is ended by the
    server after the silence and the lock is free; with it, the session lives on."""
    a = PostgresStore(postgres_url, "news.example.org")
    b = PostgresStore(postgres_url, "news.example.org")
    try:
        assert a.acquire(10.0)
        time.sleep(2.5)  # 2.5 x the silence: the heartbeat keeps it
        assert not b.acquire(10.0)
        with a._writer_lock:  # noqa: SLF001 - the heartbeat cannot speak: a stopped writer
            took = _wait(lambda: b.acquire(10.0), timeout=5, step=0.05)
        print(f"lock free {took:.2f} s after the writer fell silent")
        assert 0.6 < took < 2.0  # the last heartbeat was up to 1/3 s earlier
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_a_stopped_writer_host_is_replaced_and_follows_when_it_resumes(
        postgres_url: str, tmp_path: Path) -> None:
    """SIGSTOP the writer's gunicorn worker (the kernel still answers keepalives): the
    other host takes over within 2 x the reload interval and publishes; the stopped
    one, resumed, serves that, and neither writes nor publishes its own folder's file."""
    from tests.deploy_harness import fetch

    interval = 2.0
    hosts = _two_hosts(tmp_path, postgres_url, interval, workers=1)
    watcher = PostgresStore(postgres_url, "news.example.org")
    stopped_pid = None
    try:
        def health(index: int) -> dict:
            return json.loads(fetch(hosts[index][0].port, "/healthz").body)

        def writer_index() -> int | None:
            found = [i for i in (0, 1) if health(i)["writer"]]
            return found[0] if len(found) == 1 else None

        old = _wait_for(writer_index, timeout=15)
        new = 1 - old
        stopped_pid = health(old)["worker"]
        assert watcher.lease_holder().endswith(f":{stopped_pid}")
        os.kill(stopped_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        # Only in the stopped writer's folder: the new writer's folder is the truth.
        write_article(hosts[old][1], "stale/only-old.txt", "Only in the stopped folder")
        holder = _wait_for(lambda: (h := watcher.lease_holder()) and
                           not h.endswith(f":{stopped_pid}") and h, timeout=4 * interval)
        took = time.monotonic() - stopped
        print(f"takeover {took:.2f} s after SIGSTOP (reload interval {interval} s)")
        assert took < 2 * interval, f"no takeover within 2 x {interval} s ({took:.2f} s)"
        assert holder.endswith(f":{health(new)['worker']}")
        write_article(hosts[new][1], "fresh/after-stop.txt", "Published by the new writer")
        _wait(lambda: b"Published by the new writer" in fetch(hosts[new][0].port,
                                                             "/feed.atom").body, timeout=10)
        seq = watcher.seq()[0]
        os.kill(stopped_pid, signal.SIGCONT)
        stopped_pid = None
        _wait(lambda: b"Published by the new writer" in fetch(hosts[old][0].port,
                                                             "/feed.atom").body, timeout=10)
        _wait(lambda: not health(old)["writer"], timeout=2 * interval)
        time.sleep(2 * interval)  # a rescan's worth: a resumed writer would have written
        assert watcher.lease_holder() == holder
        assert watcher.seq()[0] == seq, "the store changed after the stopped writer resumed"
        assert "stale/only-old.txt" not in watcher.files()
        feeds = [fetch(g.port, "/feed.atom") for g, _ in hosts]
        assert b"Only in the stopped folder" not in feeds[0].body + feeds[1].body
        assert feeds[0].body == feeds[1].body
        assert feeds[0].headers["ETag"] == feeds[1].headers["ETag"]
        assert "lost the writer lock" in hosts[old][0].output()
        assert PASSWORD not in hosts[old][0].output() + hosts[new][0].output()
    finally:
        if stopped_pid is not None:
            os.kill(stopped_pid, signal.SIGCONT)
        watcher.close()
        for g, _ in hosts:
            g.stop()


@contextlib.contextmanager
def _network_namespace(n: int):  # noqa: ANN202
    """A network namespace joined to this one by a veth pair: (namespace, host-side
    interface, host address, namespace address). Needs root and iproute2."""
    ns, host_if, ns_if = f"fsv{n}", f"fsvh{n}", f"fsvn{n}"
    host_ip, ns_ip = f"10.231.{n}.1", f"10.231.{n}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    try:
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
    except (OSError, subprocess.CalledProcessError) as exc:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        pytest.skip(f"no network namespaces here ({exc}); iptables is not installed either")
    try:
        yield ns, host_if, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                    reason="a network partition needs root and iproute2 (no iptables here)")
def test_a_writer_cut_off_by_a_network_partition_is_replaced(tmp_path: Path) -> None:
    """The writer's host loses its network to the database (a veth link in a network
    namespace taken down): another host takes over within 2 x the reload interval and
    publishes; when the network is back the old writer follows and writes nothing."""
    from tests.pg_harness import destroy, start_postgres

    interval = 2.0
    with _network_namespace(os.getpid() % 200 + 20) as (ns, host_if, host_ip, ns_ip):
        server = start_postgres(listen=f"127.0.0.1,{host_ip}", clients=(f"{ns_ip}/32",))
        proc = None
        try:
            url = server.url()
            far = url.replace("@127.0.0.1:", f"@{host_ip}:")
            a_dir, b_dir = _copy(tmp_path, "a"), _copy(tmp_path, "b")
            script = (
                "import time\n"
                "from feedsvc.config import load_settings\n"
                "from feedsvc.publisher import Publisher\n"
                f"s = load_settings({{'articles_dir': {str(a_dir)!r}, "
                f"'base_url': {BASE_URL!r}, 'database_url': {far!r}, "
                f"'reload_interval': {interval}}})\n"
                "p = Publisher(s, s.database_url, settle_seconds=0)\n"
                "while True:\n"
                "    try:\n"
                "        p.refresh()\n"
                "    except Exception as exc:\n"
                "        print('error', type(exc).__name__, flush=True)\n"
                "    titles = sorted(e.title for e in p.collection.entries) if p.loaded else []\n"
                "    print('writer' if p.is_writer else 'follower', '|'.join(titles), "
                "flush=True)\n"
                f"    time.sleep({interval / 4})\n")
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", script], cwd=ROOT,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines: list[str] = []
            threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                             daemon=True).start()
            _wait(lambda: any(x.startswith("writer ") for x in lines), timeout=30)
            b = _host(b_dir, url, reload_interval=interval)
            b.refresh()
            assert not b.is_writer and b.loaded
            subprocess.run(["ip", "link", "set", host_if, "down"], check=True)
            cut = time.monotonic()
            write_article(a_dir, "cut/off.txt", "Only in the cut-off writer's folder")
            while not b.is_writer:
                assert time.monotonic() - cut < 2 * interval, "no takeover in 2 x interval"
                time.sleep(0.1)
                b.refresh()
            took = time.monotonic() - cut
            print(f"takeover {took:.2f} s after the partition (reload interval {interval} s)")
            write_article(b_dir, "fresh/after-cut.txt", "Published after the partition")
            b.refresh()
            assert any(e.title == "Published after the partition" for e in b.collection.entries)
            seq = b.store.seq()[0]
            subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
            healed = len(lines)
            _wait(lambda: any(x.startswith("follower ") and "Published after the partition" in x
                              for x in lines[healed:]), timeout=30)
            time.sleep(2 * interval)  # rescans' worth: a writer that woke up would write now
            assert not any(x.startswith("writer ") for x in lines[healed:]), lines[healed:]
            b.refresh()
            assert b.is_writer and b.store.seq()[0] == seq
            assert "cut/off.txt" not in b.store.files()
            assert all(e.title != "Only in the cut-off writer's folder"
                       for e in b.collection.entries)
            b.close()
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
            destroy(server)


def test_password_never_shown_and_errors_name_the_redacted_url(postgres_server,
                                                              tmp_path: Path) -> None:
    bad = postgres_server.url("nosuchdb")
    with pytest.raises(LedgerError) as err:
        PostgresStore(bad, "news.example.org")
    assert PASSWORD not in str(err.value) and "***" in str(err.value)
    wrong = postgres_server.url("postgres", password="wrong-pw-123")
    with pytest.raises(LedgerError) as err:
        PostgresStore(wrong, "news.example.org")
    assert "wrong-pw-123" not in str(err.value) and "password" in str(err.value)
    assert PASSWORD not in DatabaseURL.parse(postgres_server.url()).redacted


@pytest.mark.slow
def test_store_errors_are_ledger_errors_and_healthz_says_store(postgres_url: str,
                                                               tmp_path: Path,
                                                               postgres_server,
                                                               caplog) -> None:
    """PostgreSQL stopped: last good feeds, /readyz 503 with a reason, /healthz 200 with
    "store": "error", one log line, a file first seen meanwhile stamped on return."""
    d = _copy(tmp_path, "a")
    app = _app(d, postgres_url, tmp_path / "i", reload_interval=0.3)
    client = app.test_client()
    pub = app.extensions["feedsvc"]
    good = {u: client.get(u) for u in ("/feed.atom", "/feed.json")}
    assert all(r.status_code == 200 for r in good.values())
    stamps_before = pub.store.stamps_of([e.article.path for e in pub.collection.entries])
    caplog.set_level(logging.INFO, logger="feedsvc")
    # Readers keep polling throughout the outage: every answer the last good bytes.
    stop, answers = threading.Event(), []

    def reader() -> None:
        local = app.test_client()
        while not stop.is_set():
            answers.append(local.get("/feed.atom").data == good["/feed.atom"].data)
            time.sleep(0.01)

    load = [threading.Thread(target=reader) for _ in range(3)]
    for t in load:
        t.start()
    postgres_server.stop()
    try:
        _wait(lambda: pub.last_error is not None, timeout=20, step=0.1)
        write_article(d, "during/outage.txt", "Written during the outage")
        for _ in range(3):
            for u, r in good.items():
                again = client.get(u)
                assert again.status_code == 200 and again.data == r.data
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json["store"] == "error"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json["store"] == "error"
        assert any("PostgreSQL cannot be reached" in r for r in ready.json["reasons"])
        time.sleep(2.0)  # several rescans fail meanwhile
        outputs = [health.get_data(as_text=True), ready.get_data(as_text=True),
                   client.get("/metrics").get_data(as_text=True), caplog.text]
        assert not any(PASSWORD in o for o in outputs)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
    finally:
        postgres_server.start()
        stop.set()
        for t in load:
            t.join()
    assert answers and all(answers)
    _wait(lambda: pub.last_error is None and any(
        e.title == "Written during the outage" for e in pub.collection.entries),
        timeout=30, step=0.1)
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").json["store"] == "ok"
    assert b"Written during the outage" in client.get("/feed.atom").data
    # Nothing was re-stamped; the new file got its stamp from the database.
    after = pub.store.stamps_of(list(stamps_before) + ["during/outage.txt"])
    assert {p: after[p] for p in stamps_before} == stamps_before
    assert after["during/outage.txt"].id.startswith("tag:news.example.org,")
    app.extensions["feedsvc.reloader"].stop()
    pub.close()


@pytest.mark.slow
def test_stampede_of_500_new_files(postgres_url: str, tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    for d in (a_dir, b_dir):
        d.mkdir()
        write_article(d, "seed.txt", "Seed")
    hosts = [_host(d, postgres_url) for d in (a_dir, b_dir)]
    for h in hosts:
        h.refresh()
        # Split brain on purpose: both sync at once, neither yields the writer lock, so
        # only the stamping transaction keeps one id per file.
        h.sync.renew = None
    for d in (a_dir, b_dir):
        for n in range(500):
            write_article(d, f"burst/{n:03}.txt", f"Burst article {n}", body=f"Body {n}.")
    _sync_together(hosts)
    assert len(hosts[0].collection.entries) == 501
    assert _shown(hosts[0]) == _shown(hosts[1])
    ids = [e.id for e in hosts[0].collection.entries]
    slugs = [e.slug for e in hosts[0].collection.entries]
    assert len(set(ids)) == len(set(slugs)) == 501
    for h in hosts:
        h.close()


def test_healthz_json_never_carries_the_password(postgres_url: str, tmp_path: Path) -> None:
    app = _app(_copy(tmp_path, "a"), postgres_url, tmp_path / "i")
    client = app.test_client()
    for url in ("/healthz", "/readyz", "/metrics"):
        body = client.get(url).get_data(as_text=True)
        assert PASSWORD not in body, url
    assert json.loads(client.get("/healthz").data)["store"] == "ok"
    app.extensions["feedsvc"].close()


def _store_rows(url: str) -> dict[str, list]:
    from feedsvc.sql import open_database

    db = open_database(url)
    try:
        with db.transaction() as tx:
            return {
                "articles": sorted(tx.all("SELECT path, id, slug, first_seen, changed, hash "
                                          "FROM articles")),
                "versions": sorted((v, int(p), h, int(d), m, bytes(c)) for v, p, h, d, m, c in
                                   tx.all("SELECT version, parser, hash, draft, meta, content "
                                          "FROM versions")),
                "files": sorted(tx.all("SELECT path, size, mtime_ns, inode, version, error, "
                                       "line FROM files")),
                "feed_versions": sorted(tx.all("SELECT doc, digest, moment FROM feed_versions")),
                "meta": sorted(tx.all("SELECT key, value FROM meta WHERE key LIKE ?",
                                      ("store_%",))),
            }
    finally:
        db.close()


def test_migrate_sqlite_to_postgres_and_back_keeps_every_id_and_date(
        postgres_url: str, postgres_server, tmp_path: Path, capsys) -> None:
    from feedsvc.cli import main
    from feedsvc.sql import ComponentSchema, open_database

    articles = _copy(tmp_path, "a")
    ledger = tmp_path / "site.sqlite3"
    app = create_app({"articles_dir": str(articles), "base_url": BASE_URL,
                      "ledger_path": str(ledger), "reload_interval": 0}, instance_path=tmp_path)
    feed = app.test_client().get("/feed.atom")
    app.extensions["feedsvc"].close()
    # A component's table (as the hub or purge queue keep) comes along.
    extra = ComponentSchema("test_component", (
        "CREATE TABLE IF NOT EXISTS test_component_rows (k TEXT PRIMARY KEY, n BIGINT)",))
    sdb = open_database(f"sqlite:///{ledger}")
    extra.ensure(sdb)
    with sdb.transaction() as tx:
        tx.execute("INSERT INTO test_component_rows (k, n) VALUES (?, ?)", ("a", 1))
    sdb.close()
    source = f"sqlite:///{ledger}"
    assert main(["migrate", source, postgres_url]) == 0
    out = capsys.readouterr()
    assert "verified" in out.out and PASSWORD not in out.out + out.err
    assert _store_rows(source) == _store_rows(postgres_url)
    pdb = open_database(postgres_url)
    with pdb.transaction() as tx:
        assert tx.all("SELECT k, n FROM test_component_rows") == [("a", 1)]
    pdb.close()
    # Served from PostgreSQL on another host's folder copy: the same bytes and ETag.
    app_pg = _app(_copy(tmp_path, "b"), postgres_url, tmp_path / "ib")
    again = app_pg.test_client().get("/feed.atom")
    assert again.data == feed.data and again.headers["ETag"] == feed.headers["ETag"]
    app_pg.extensions["feedsvc.reloader"].stop()
    app_pg.extensions["feedsvc"].close()
    _APPS.remove(app_pg)
    # And back, to a new SQLite file: everything as it was.
    back = f"sqlite:///{tmp_path / 'back.sqlite3'}"
    assert main(["migrate", postgres_url, back]) == 0
    # (The PostgreSQL host synced its own folder copy: other inodes in files.)
    assert _store_rows(back) == _store_rows(postgres_url)
    assert _store_rows(back)["articles"] == _store_rows(source)["articles"]
    # SQLite to SQLite, and a rerun into the same target, are fine.
    copy = f"sqlite:///{tmp_path / 'copy.sqlite3'}"
    assert main(["migrate", back, copy]) == 0
    assert main(["migrate", back, copy]) == 0
    assert _store_rows(copy) == _store_rows(back)
    # A target that holds another site is refused, and left as it was.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    write_article(other_dir, "x.txt", "Another site's article")
    other = _host(other_dir, postgres_server.create_database("othersite"))
    other.refresh()
    other_url = other.store.url.conninfo
    other.close()
    before = _store_rows(other_url)
    assert main(["migrate", source, other_url]) == 1
    err = capsys.readouterr().err
    assert "another site" in err and PASSWORD not in err
    assert _store_rows(other_url) == before


def test_backup_and_restore_with_the_store_on_postgres(postgres_server, tmp_path: Path,
                                                       monkeypatch, capsys) -> None:
    """`feedsvc backup` while the service runs: one consistent SQLite file; the database
    dropped and made again, `feedsvc restore` puts every id, slug, date and hash back."""
    from feedsvc.cli import main
    from feedsvc.migrate import _feedsvc_sessions

    url = postgres_server.create_database("backup_site")
    articles = _copy(tmp_path, "a")
    app = _app(articles, url, tmp_path / "ia", reload_interval=0.5)
    feed = app.test_client().get("/feed.atom")
    before = _store_rows(url)
    assert len(before["articles"]) > 5 and before["feed_versions"]
    monkeypatch.setenv("FEEDSVC_DATABASE_URL", url)
    monkeypatch.delenv("FEEDSVC_LEDGER_PATH", raising=False)
    dest = tmp_path / "site-backup.sqlite3"
    assert main(["backup", str(dest)]) == 0  # the service runs on
    out = capsys.readouterr()
    assert "backed up" in out.out and "verified" in out.out
    assert PASSWORD not in out.out + out.err
    assert not Path(f"{dest}-wal").exists() and dest.stat().st_size > 0
    assert _store_rows(f"sqlite:///{dest}") == before
    # Refused while a feedsvc is connected to the target: it would write on from stale state.
    assert main(["restore", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "in use" in err and PASSWORD not in err
    app.extensions["feedsvc.reloader"].stop()
    app.extensions["feedsvc"].close()
    _APPS.remove(app)
    postgres_server.drop_database("backup_site")
    postgres_server.create_database("backup_site")
    assert main(["restore", str(dest)]) == 0
    out = capsys.readouterr()
    assert "restored" in out.out and "verified" in out.out and PASSWORD not in out.out
    assert _store_rows(url) == before
    # Served from the restored store: the same bytes and validators as before.
    again = _app(articles, url, tmp_path / "ib").test_client().get("/feed.atom")
    assert again.data == feed.data and again.headers["ETag"] == feed.headers["ETag"]
    # A database holding another site is refused, and left as it was.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    write_article(other_dir, "x.txt", "Another site's article")
    other = _host(other_dir, postgres_server.create_database("backup_other"))
    other.refresh()
    other_url = other.store.url.conninfo
    other.close()
    _wait(lambda: not _feedsvc_sessions(DatabaseURL.parse(other_url)))
    rows = _store_rows(other_url)
    monkeypatch.setenv("FEEDSVC_DATABASE_URL", other_url)
    assert main(["restore", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "another site" in err and PASSWORD not in err
    assert _store_rows(other_url) == rows


def test_migrate_shows_a_progress_bar_on_a_terminal(postgres_url: str, tmp_path: Path) -> None:
    import pty

    articles = _copy(tmp_path, "a")
    ledger = tmp_path / "site.sqlite3"
    app = create_app({"articles_dir": str(articles), "base_url": BASE_URL,
                      "ledger_path": str(ledger), "reload_interval": 0}, instance_path=tmp_path)
    app.extensions["feedsvc"].close()
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "feedsvc.cli", "migrate",
                             f"sqlite:///{ledger}", postgres_url], cwd=ROOT, stdin=follower,
                            stdout=follower, stderr=follower,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(leader)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "migrate" in text and "\r" in text and "verified" in text
    assert PASSWORD not in text


@pytest.mark.slow
def test_two_gunicorn_hosts_on_one_database(postgres_url: str, tmp_path: Path) -> None:
    """Real gunicorn, two workers each, two folder copies: the same bytes and ETags from
    every worker of both hosts, a new article on both, and a killed writer host replaced."""
    from tests.deploy_harness import fetch

    hosts = _two_hosts(tmp_path, postgres_url, 1, workers=2)
    try:
        def replies(path: str, gzip: bool = True) -> list:
            headers = {"Accept-Encoding": "gzip"} if gzip else {}
            return [fetch(g.port, path, headers) for g, _ in hosts for _ in range(4)]

        for path in ("/feed.atom", "/feed.json", "/"):
            got = replies(path)
            assert {r.status for r in got} == {200}
            assert len({r.body for r in got}) == 1, path
            assert len({r.headers.get("ETag") for r in got}) == 1, path
            etag = got[0].headers["ETag"]
            assert fetch(hosts[1][0].port, path, {"Accept-Encoding": "gzip",
                                                  "If-None-Match": etag}).status == 304
        healths = [json.loads(fetch(g.port, "/healthz").body) for g, _ in hosts
                   for _ in range(6)]
        writers = {(h["worker"]) for h in healths if h["writer"]}
        assert len(writers) <= 1
        # Into both folders (a synced copy): on every worker of both hosts, one id.
        for _, articles in hosts:
            write_article(articles, "new/one.txt", "Arrived everywhere")
        took = _wait(lambda: all(b"Arrived everywhere" in r.body
                                 for r in replies("/feed.json", gzip=False)),
                     timeout=15, step=0.05)
        print(f"new article on both hosts' feeds {took:.2f} s after the write")
        assert len({r.body for r in replies("/feed.json")}) == 1
        # The writer's host dies: the other host's workers take over and publish.
        writer_host = next(i for i, (g, _) in enumerate(hosts)
                           if any(json.loads(fetch(g.port, "/healthz").body)["writer"]
                                  for _ in range(6)))
        dead, _ = hosts[writer_host]
        workers = _children(dead.proc.pid)
        dead.proc.kill()  # SIGKILL: no clean exit, no lock released by hand
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        dead.proc.wait()
        alive, alive_articles = hosts[1 - writer_host]
        killed = time.monotonic()
        write_article(alive_articles, "after/death.txt", "After the writer died")
        _wait(lambda: b"After the writer died" in fetch(alive.port, "/feed.atom").body,
              timeout=15, step=0.1)
        print(f"survivor published {time.monotonic() - killed:.2f} s after the kill")
        assert PASSWORD not in alive.output()
    finally:
        for g, _ in hosts:
            g.stop()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_schema_is_versioned_migrated_in_place_and_newer_refused(postgres_url: str) -> None:
    from feedsvc.pgstore import STORE_SCHEMA
    from feedsvc.sql import open_database

    db = open_database(postgres_url)
    with db.transaction() as tx:  # a database left by a release that had version 1 only
        tx.execute("CREATE TABLE component_schemas (component TEXT PRIMARY KEY, "
                   "version BIGINT NOT NULL)")
        STORE_SCHEMA.steps[0](tx)
        tx.execute("INSERT INTO component_schemas VALUES (?, ?)", ("store", 1))
        tx.execute("INSERT INTO articles VALUES (?, ?, ?, ?, NULL, ?)",
                   ("old.txt", "tag:x,2020-01-01:/articles/old", "old", 1_577_836_800, "h"))
    store = PostgresStore(postgres_url, "news.example.org")
    assert store.stamps_of(["old.txt"])["old.txt"].slug == "old"
    assert store.snapshot().files == {}  # the version-3 tables exist now
    store.close()
    with db.transaction() as tx:
        assert tx.one("SELECT version FROM component_schemas WHERE component = ?",
                      ("store",)) == (3,)
        tx.execute("UPDATE component_schemas SET version = 99 WHERE component = ?", ("store",))
    db.close()
    with pytest.raises(LedgerError, match="newer feedsvc") as err:
        PostgresStore(postgres_url, "news.example.org")
    assert PASSWORD not in str(err.value)


def test_check_judges_with_a_copy_of_the_postgres_store(postgres_url: str, tmp_path: Path,
                                                        capsys, monkeypatch) -> None:
    from feedsvc.cli import main

    articles = _copy(tmp_path, "a")
    host = _host(articles, postgres_url)
    host.refresh()
    host.close()
    before = _store_rows(postgres_url)
    monkeypatch.setenv("FEEDSVC_DATABASE_URL", postgres_url)
    monkeypatch.delenv("FEEDSVC_LEDGER_PATH", raising=False)
    (articles / "zz-bad.txt").write_bytes(b"")  # an empty file: rejected
    assert main(["check", str(articles)]) == 1
    out = capsys.readouterr()
    assert "REJECTED   zz-bad.txt" in out.out and PASSWORD not in out.out + out.err
    assert _store_rows(postgres_url) == before  # the shared store is never written


def test_hub_and_store_share_the_postgres_database(postgres_url: str, tmp_path: Path) -> None:
    """FEEDSVC_DATABASE_URL alone puts the hub's state beside the store: every host's."""
    app = _app(_copy(tmp_path, "a"), postgres_url, tmp_path / "i", hub="builtin")
    hub_db = app.extensions["feedsvc.hub"].db
    assert hub_db.dialect == "postgresql"
    assert hub_db.url.redacted == DatabaseURL.parse(postgres_url).redacted
