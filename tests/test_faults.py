"""Faults: the ledger, the articles folder, a WebSub hub and SIGKILL.

Each fault is made for real: another process holds the ledger's write lock,
the file is made read-only (as an unprivileged user, since root ignores
permission bits), damaged on disk, deleted, or the service's process may not
grow files (RLIMIT_FSIZE, set on a running gunicorn worker with prlimit: the
writes fail as on a full disk). Through each one the service keeps serving
the last good feeds, logs one clear error, says so in /healthz and recovers
when the fault is cleared, and no id or date already given is lost or given
again.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import feedsvc.ledger
from feedsvc.config import load_settings
from feedsvc.errors import ConfigError, LedgerError
from feedsvc.ledger import Ledger
from feedsvc.publisher import Publisher
from feedsvc.web import create_app
from tests.conftest import BASE_URL, BUNDLED, ROOT, write_article
from tests.feedcheck import CHECKS
from tests.test_torture import run_unprivileged

PAST = 1_700_000_000
#: Budget for "visible within the reload interval": interval + 1 s settle + a busy machine.
SLACK = 10.0
NEW_TITLE = "Story Written During The Fault"


# --- helpers ---------------------------------------------------------------------------


def add_article(folder: Path, name: str, title: str, when: int = PAST) -> Path:
    """An article whose mtime is long past: settled, and evidence of its date."""
    path = write_article(folder, name, title, author="Sara Wazowski", topic="fault topic",
                         body=f"{title} has a body.")
    os.utime(path, (when, when))
    return path


def published(client: FlaskClient) -> dict[str, tuple[str, str, str]]:
    """{id: (title, published, updated)} of every entry of the site feed, which must be valid."""
    response = client.get("/feed.json?limit=1000")
    assert response.status_code == 200
    feed = CHECKS["json"](response.data)
    return {item["id"]: (item["title"], item["date_published"], item["date_modified"])
            for item in feed["items"]}


def ledger_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and r.name == "feedsvc"]


def rows(db: Path) -> dict[str, tuple]:
    """Every row of a ledger, read with plain sqlite3: {path: (id, slug, first_seen, ...)}."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT path, id, slug, first_seen, changed, hash FROM articles")}


def backup(db: Path, target: Path) -> None:
    """A consistent copy of a live ledger (SQLite's backup API, as an operator's cron does)."""
    with sqlite3.connect(db) as source, sqlite3.connect(target) as dest:
        source.backup(dest)
    sqlite3.connect(target).close()


def checkpoint(db: Path) -> None:
    """Move everything into the main file, as any worker's checkpoint does."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        conn.close()


class Scenario:
    """An app over the bundled articles with a ledger we can hurt; reloads by hand."""

    def __init__(self, make_app: Callable[..., Flask], folder: Path, ledger: Path) -> None:
        self.folder = folder
        self.ledger = ledger
        self.app = make_app(folder, ledger_path=str(ledger))
        self.client = self.app.test_client()
        self.publisher: Publisher = self.app.extensions["feedsvc"]
        self.before = published(self.client)
        self.before_atom = self.client.get("/feed.atom").data

    def healthz(self) -> dict[str, Any]:
        return self.client.get("/healthz").get_json()

    def during_fault(self, caplog: pytest.LogCaptureFixture, expected: str) -> None:
        """A new article cannot be recorded: served as before, one error, /healthz says so."""
        add_article(self.folder, "during.txt", NEW_TITLE)
        caplog.clear()
        for _ in range(3):
            report = self.publisher.refresh()
            assert report.error is not None and expected in report.error, report.error
            started = time.perf_counter()
            assert published(self.client) == self.before  # the last good feeds, unchanged
            assert self.client.get("/feed.atom").data == self.before_atom
            assert time.perf_counter() - started < 1.0
        health = self.healthz()
        assert health["ledger"] == "error" and expected in health["error"], health
        errors = ledger_errors(caplog)
        assert len(errors) == 1, errors
        assert str(self.ledger) in errors[0] and expected in errors[0]

    def recovered(self) -> None:
        """The fault cleared: the new article is in, nothing else changed."""
        report = self.publisher.refresh()
        assert report.error is None, report.error
        assert self.healthz()["ledger"] == "ok"
        after = published(self.client)
        new = {i: v for i, v in after.items() if i not in self.before}
        assert [v[0] for v in new.values()] == [NEW_TITLE]
        assert {i: v for i, v in after.items() if i in self.before} == self.before


@pytest.fixture
def scenario(make_app, articles_dir: Path, tmp_path: Path) -> Scenario:
    return Scenario(make_app, articles_dir, tmp_path / "state" / "ledger.sqlite3")


# --- the ledger --------------------------------------------------------------------------

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_ledger_locked_by_another_process(make_app, articles_dir: Path, tmp_path: Path,
                                          monkeypatch, caplog) -> None:
    monkeypatch.setattr(feedsvc.ledger, "BUSY_TIMEOUT_MS", 300)  # not the real 10 s
    s = Scenario(make_app, articles_dir, tmp_path / "ledger.sqlite3")
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(s.ledger)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        s.during_fault(caplog, "database is locked")
    finally:
        locker.communicate("release\n", timeout=30)
    assert locker.returncode == 0
    s.recovered()


def test_ledger_damaged_on_disk(scenario: Scenario, tmp_path: Path, caplog) -> None:
    s = scenario
    backup(s.ledger, tmp_path / "backup.sqlite3")
    checkpoint(s.ledger)
    size = s.ledger.stat().st_size
    with s.ledger.open("r+b") as handle:  # keep the header page, ruin every other one
        handle.seek(4096)
        handle.write(random.Random(1).randbytes(size - 4096))
    s.during_fault(caplog, "malformed")
    shutil.copyfile(tmp_path / "backup.sqlite3", s.ledger)  # the operator restores it
    s.recovered()


def test_ledger_deleted_while_running(scenario: Scenario, tmp_path: Path, caplog) -> None:
    s = scenario
    backup(s.ledger, tmp_path / "backup.sqlite3")
    before = rows(tmp_path / "backup.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{s.ledger}{suffix}").unlink(missing_ok=True)
    s.during_fault(caplog, "ledger file is gone")
    assert not s.ledger.exists()  # no empty ledger was made in its place
    shutil.copyfile(tmp_path / "backup.sqlite3", s.ledger)
    s.recovered()
    after = rows(s.ledger)
    assert {p: r for p, r in after.items() if p in before} == before


def test_damaged_ledger_at_start_is_refused_and_left_alone(make_app, articles_dir: Path,
                                                           tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    make_app(articles_dir, ledger_path=str(db)).extensions["feedsvc"].close()
    checkpoint(db)
    data = bytearray(db.read_bytes())
    data[4096:] = random.Random(2).randbytes(len(data) - 4096)
    db.write_bytes(bytes(data))
    with pytest.raises(LedgerError) as info:
        make_app(articles_dir, ledger_path=str(db))
    assert info.value.path == str(db) and "restore it from a back-up" in info.value.reason
    assert db.read_bytes() == bytes(data)  # never replaced by a fresh, empty ledger


def _read_only_scenario(root: str) -> dict[str, Any]:
    """Run unprivileged: the service's own user makes its ledger read-only, then not."""
    folder, db = Path(root) / "articles", Path(root) / "state" / "ledger.sqlite3"
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                messages.append(record.getMessage())

    logging.getLogger("feedsvc").addHandler(Collect())
    config = load_settings({"articles_dir": str(folder), "ledger_path": str(db),
                            "base_url": BASE_URL, "reload_interval": 0}, environ={})
    app = create_app(config, instance_path=Path(root) / "state" / "instance")
    client = app.test_client()
    publisher = app.extensions["feedsvc"]
    out: dict[str, Any] = {"before": published(client)}
    db.chmod(0o444)
    add_article(folder, "during.txt", NEW_TITLE)
    out["errors"] = [publisher.refresh().error for _ in range(3)]
    out["during"] = published(client)
    out["healthz"] = client.get("/healthz").get_json()
    # /readyz's own probe opens the ledger with SQLite, which makes the -wal and
    # -shm files read-only like the ledger: they must not outlive the fault.
    out["readyz"] = client.get("/readyz").status_code
    out["logged"] = list(messages)
    db.chmod(0o644)
    out["recovered"] = publisher.refresh().error
    out["after"] = published(client)
    out["healthz_after"] = client.get("/healthz").get_json()
    out["readyz_after"] = client.get("/readyz").status_code
    return out


def test_ledger_made_read_only_while_running(world_dir: Path, make_app) -> None:
    # Every module the child needs is imported now (nobody cannot read site-packages).
    shutil.copytree(BUNDLED, world_dir / "articles")
    warm = make_app(world_dir / "articles", ledger_path=str(world_dir / "warm.db"))
    published(warm.test_client())
    warm.extensions["feedsvc"].close()
    (world_dir / "state").mkdir()
    for path in (world_dir / "articles", world_dir / "state"):
        path.chmod(0o777)
    got = run_unprivileged(_read_only_scenario, str(world_dir))
    assert all(e is not None and e.startswith(f"ledger {world_dir}/state/ledger.sqlite3: "
                                              "ledger is read-only") for e in got["errors"])
    assert got["during"] == got["before"]
    assert got["healthz"]["ledger"] == "error"
    assert len(got["logged"]) == 1 and "read-only" in got["logged"][0], got["logged"]
    assert got["recovered"] is None
    assert got["healthz_after"]["ledger"] == "ok"
    assert (got["readyz"], got["readyz_after"]) == (503, 200)
    new = {i: v for i, v in got["after"].items() if i not in got["before"]}
    assert [v[0] for v in new.values()] == [NEW_TITLE]
    assert {i: v for i, v in got["after"].items() if i in got["before"]} == got["before"]


# --- a real gunicorn whose worker may not grow files: a full disk -------------------------------


class Service:
    """``gunicorn wsgi:app`` with one worker, its log read from a pipe as it comes.

    The log goes to a pipe, not a file: RLIMIT_FSIZE limits regular files only.
    """

    def __init__(self, tmp: Path, articles: Path, reload_interval: float = 0.3,
                 extra_env: dict[str, str] | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
        env.update(FEEDSVC_ARTICLES_DIR=str(articles), FEEDSVC_LEDGER_PATH=str(tmp / "l.db"),
                   FEEDSVC_BASE_URL=self.base, FEEDSVC_RELOAD_INTERVAL=str(reload_interval),
                   **(extra_env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind",
             f"127.0.0.1:{self.port}", "--no-control-socket", "wsgi:app"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def get(self, path: str) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                         .encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def healthz(self) -> dict[str, Any]:
        return json.loads(self.get("/healthz")[1])

    def wait(self, check: Callable[[], bool], what: str, timeout: float = SLACK) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if check():
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"{what}: not within {timeout} s\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _titles(service: Service) -> dict[str, tuple[str, str, str]]:
    status, body = service.get("/feed.json?limit=1000")
    assert status == 200
    return {i["id"]: (i["title"], i["date_published"], i["date_modified"])
            for i in CHECKS["json"](body)["items"]}


def test_disk_full_on_ledger_write(tmp_path: Path) -> None:
    articles = tmp_path / "articles"
    shutil.copytree(BUNDLED, articles)
    service = Service(tmp_path, articles)
    try:
        service.wait(lambda: service.get("/healthz")[0] == 200, "start")
        worker = service.healthz()["worker"]
        before = _titles(service)
        soft, hard = resource.prlimit(worker, resource.RLIMIT_FSIZE)
        resource.prlimit(worker, resource.RLIMIT_FSIZE, (0, hard))  # not one byte more
        try:
            add_article(articles, "during.txt", NEW_TITLE)
            service.wait(lambda: service.healthz()["ledger"] == "error", "ledger error")
            assert "disk" in service.healthz()["error"]
            for _ in range(5):  # several reloads fail while the requests go on
                started = time.perf_counter()
                assert _titles(service) == before
                assert time.perf_counter() - started < 1.0
                time.sleep(0.3)
            errors = [line for line in service.lines
                      if " ERROR feedsvc: " in line and "serving the last good feeds" in line]
            assert len(errors) == 1, errors
            assert "disk" in errors[0] and str(tmp_path / "l.db") in errors[0], errors
        finally:
            resource.prlimit(worker, resource.RLIMIT_FSIZE, (soft, hard))
        service.wait(lambda: service.healthz()["ledger"] == "ok", "recovery")
        after = _titles(service)
        assert [v[0] for i, v in after.items() if i not in before] == [NEW_TITLE]
        assert {i: v for i, v in after.items() if i in before} == before
        assert service.healthz()["worker"] == worker  # the worker never died
    finally:
        service.stop()
    assert not any("Traceback" in line for line in service.lines), "\n".join(service.lines)
    assert sqlite3.connect(tmp_path / "l.db").execute("PRAGMA integrity_check").fetchone() == (
        "ok",)


# --- SIGKILL in the middle of a reload or a ledger write ---------------------------------------

CHILD = """
import sys, time
from pathlib import Path
from feedsvc import ledger
from feedsvc.config import load_settings
from feedsvc.publisher import Publisher

real_record = ledger.Ledger.record
def record(self, *args, **kwargs):
    print("record", flush=True)  # the parent may kill us right inside the transaction
    return real_record(self, *args, **kwargs)
ledger.Ledger.record = record

settings = load_settings({"articles_dir": sys.argv[1], "base_url": "https://news.example.org"},
                         environ={})
publisher = Publisher(settings, Path(sys.argv[2]), settle_seconds=0)
publisher.refresh()
print("loaded", flush=True)
while True:
    publisher.refresh()
    time.sleep(0.01)
"""
TOPICS = ["nato", "ukraine", "harbour", "energy", "china", "science"]


def _generate(folder: Path, start: int, count: int) -> list[str]:
    names = []
    for n in range(start, start + count):
        topic = TOPICS[n % len(TOPICS)]
        name = f"{topic}/gen-{n:05d}.txt"
        path = write_article(
            folder, name, f"Generated Story Number {n} On {topic.title()}",
            author=f"Writer {n % 37}", topic=f"{topic} story {n % 11}",
            body=f"{topic.upper()} said story {n} matters. " * 20
            + f"\n\nSecond paragraph {n}.\n\nWriter {n % 37} writes.")
        os.utime(path, (PAST + n, PAST + n))
        names.append(name)
    return names


def _edit(folder: Path, names: list[str], round_: int) -> None:
    for name in names:
        path = folder / name
        path.write_text(path.read_text() + f"\nEdited in round {round_}.\n")
        os.utime(path, (PAST + 10_000_000 + round_, PAST + 10_000_000 + round_))


def _run_child(folder: Path, db: Path, kill: str | None, rng: random.Random,
               load_seconds: float) -> float:
    """Run the child; kill -9 it at a random point (``kill``), or let it load fully."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(db)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        assert proc.stdout is not None
        if kill is None:
            for line in proc.stdout:
                if line.strip() == "loaded":
                    return time.monotonic() - started
            pytest.fail("the child died before it loaded")
        if kill == "in-write":
            for line in proc.stdout:
                if line.strip() == "record":
                    break
            time.sleep(rng.uniform(0, 0.03))
        else:
            time.sleep(rng.uniform(0.05, 1.3 * load_seconds))
        return time.monotonic() - started
    finally:
        proc.kill()  # SIGKILL
        proc.wait()


def test_sigkill_mid_reload_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    rng = random.Random(42)
    folder, db = tmp_path / "articles", tmp_path / "ledger.sqlite3"
    names = _generate(folder, 0, 2000)
    load_seconds = _run_child(folder, db, None, rng, 0)  # the first start, to the end
    committed = rows(db)
    assert len(committed) == 2000
    kills = ["random", "in-write"] * 4
    added_total = 0
    edited: set[str] = set()  # edited in some round; recorded then or in a later one
    outcomes: list[str] = []
    for round_, kill in enumerate(kills, start=1):
        added = _generate(folder, 2000 + added_total, 150)
        added_total += 150
        edits = rng.sample(names, 40)
        _edit(folder, edits, round_)
        edited.update(edits)
        names += added
        after = _run_child(folder, db, kill, rng, load_seconds)
        with sqlite3.connect(db) as conn:  # recovers the WAL, as the next start does
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        Ledger(db, "news.example.org").close()  # the service's own checks pass
        now_rows = rows(db)
        for path, row in committed.items():  # nothing committed is lost or reassigned
            assert path in now_rows, path
            if path in edited:
                assert now_rows[path][:3] == row[:3], path  # id, slug, first_seen
            else:
                assert now_rows[path] == row, path
        for path in added:  # a row is there whole, with the file's date, or not at all
            if path in now_rows:
                id_, slug, first_seen, changed, _ = now_rows[path]
                assert first_seen == int((folder / path).stat().st_mtime)
                assert changed is None and slug in id_
        outcomes.append(f"{kill} kill after {after:.2f} s: "
                        f"{sum(p in now_rows for p in added)}/{len(added)} new files recorded")
        committed = now_rows
    # The next start, to the end, then another: the same ids and dates each time.
    _run_child(folder, db, None, rng, load_seconds)
    final = rows(db)
    assert len(final) == len(names)
    for path, row in committed.items():
        assert final[path][:3] == row[:3]
    entries = []
    for _ in range(2):
        settings = load_settings({"articles_dir": str(folder), "base_url": BASE_URL},
                                 environ={})
        publisher = Publisher(settings, db)
        publisher.refresh()
        entries.append({e.article.path: (e.id, e.published, e.updated)
                        for e in publisher.collection.entries})
        publisher.close()
    assert entries[0] == entries[1]
    assert len(entries[0]) == len(names)
    print(f"SIGKILL: {len(kills)} kills over {len(names)} files (load {load_seconds:.2f} s):",
          *outcomes, sep="\n  ")
    for path, (id_, published_at, _) in entries[0].items():
        assert id_ == final[path][0]
        assert published_at == datetime.fromtimestamp(final[path][2], UTC)


# --- the articles folder ------------------------------------------------------------------------


def test_articles_folder_missing_at_start(make_app, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ConfigError) as info:
        make_app(missing)
    assert info.value.setting == "FEEDSVC_ARTICLES_DIR"
    assert str(missing) in str(info.value)


def test_gunicorn_exits_when_the_articles_folder_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_ARTICLES_DIR=str(missing), FEEDSVC_LEDGER_PATH=str(tmp_path / "l.db"),
               FEEDSVC_BASE_URL="https://news.example.org")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--no-control-socket", "wsgi:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert re.search(rf"FEEDSVC_ARTICLES_DIR: .*{re.escape(str(missing))}", output), output


def test_articles_folder_missing_later(scenario: Scenario, caplog) -> None:
    s = scenario
    away = s.folder.with_name("unmounted")
    s.folder.rename(away)
    caplog.clear()
    for _ in range(3):
        assert s.publisher.refresh().error == "articles folder missing"
        assert published(s.client) == s.before
    assert s.healthz()["articles_dir"] == "missing"
    errors = ledger_errors(caplog)
    assert len(errors) == 1 and str(s.folder) in errors[0], errors
    add_article(away, "during.txt", NEW_TITLE)
    away.rename(s.folder)  # mounted again
    s.recovered()
    assert s.healthz()["articles_dir"] == "ok"


# --- WebSub hubs that hang or fail ----------------------------------------------------------------


class HangingHub:
    """Accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hub"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class FailingHub:
    """Answers every ping with a 500 at once."""

    def __init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                hub.accepted.append(self.path)
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.accepted: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["hangs", "fails"])
def bad_hub(request) -> Iterator[HangingHub | FailingHub]:
    hub = HangingHub() if request.param == "hangs" else FailingHub()
    yield hub
    hub.close()


def test_a_bad_hub_never_delays_a_response(make_app, articles_dir: Path, bad_hub) -> None:
    app = make_app(articles_dir, websub_hubs=bad_hub.url)
    client = app.test_client()
    publisher = app.extensions["feedsvc"]
    notifier = app.extensions["feedsvc.websub"]
    # Short waits, so that the pings are over when the test is (the defaults are 5 s x 4).
    notifier.timeout, notifier.backoff, notifier.attempts = 0.5, 0.05, 1
    paths = ["/feed.atom", "/", "/healthz", "/topics/fault-topic/feed.rss",
             "/feed.json?limit=2"]
    for n in range(3):
        add_article(articles_dir, f"hub-{n}.txt", f"Hub Story Number {n}")
        started = time.perf_counter()
        publisher.refresh()  # queues pings for every changed feed
        assert time.perf_counter() - started < 1.0
        deadline = time.monotonic() + SLACK
        while not bad_hub.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bad_hub.accepted, "the hub was never pinged"  # it is hanging/failing now
        for path in paths:
            started = time.perf_counter()
            response = client.get(path)
            assert time.perf_counter() - started < 1.0, path
            assert response.status_code == 200, path
        assert f"Hub Story Number {n}".encode() in client.get("/feed.atom").data
    bad_hub.close()
    assert notifier.wait_idle(timeout=60)
    assert notifier.failed > 0 and notifier.sent == 0
