"""The persistent article store: parsed once, ever; one writer; followers; upgrade in place."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import feedsvc.store
import feedsvc.sync
from feedsvc.config import load_settings
from feedsvc.errors import LedgerError
from feedsvc.model import Article
from feedsvc.parser import parse_article
from feedsvc.publisher import Publisher
from feedsvc.store import STORE_SCHEMA_VERSION, SqliteStore, decode_article, encode_article
from tests.conftest import BASE_URL, BUNDLED, ROOT, write_article


def _settings(articles: Path, **more: object):
    return load_settings({"articles_dir": str(articles), "base_url": BASE_URL,
                          "reload_interval": 0, **more})


def _shown(publisher: Publisher) -> list[tuple]:
    return [(e.article.path, e.id, e.slug, e.published, e.updated, e.title, e.summary,
             e.content_html, e.topics, e.authors) for e in publisher.collection.entries]


class Counting:
    """Counts calls of sync's read_article and parse_article (what a start costs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = self.parses = 0
        read, parse = feedsvc.sync.read_article, feedsvc.sync.parse_article

        def counting_read(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.reads += 1
            return read(*args, **kwargs)

        def counting_parse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.parses += 1
            return parse(*args, **kwargs)

        monkeypatch.setattr(feedsvc.sync, "read_article", counting_read)
        monkeypatch.setattr(feedsvc.sync, "parse_article", counting_parse)


def test_article_round_trips_through_the_store_format() -> None:
    for path in sorted(BUNDLED.rglob("*.txt"))[:10]:
        rel = path.relative_to(BUNDLED).as_posix()
        article = parse_article(path.read_bytes(), rel)
        packed = article.content_packed
        back = decode_article(rel, "v", encode_article(article), lambda v, p=packed: p)
        for name in ("path", "title", "authors", "topic_line", "topics", "summary",
                     "content_hash", "front_matter", "warnings", "content_html"):
            assert getattr(back, name) == getattr(article, name), name


def test_restart_reads_and_parses_no_article_file(articles_dir: Path, tmp_path: Path,
                                                  monkeypatch) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    counts = Counting(monkeypatch)
    first = Publisher(_settings(articles_dir), ledger)
    first.refresh()
    files = len(first.collection.entries) + len(first.rejections)
    assert counts.reads == counts.parses == files > 20
    before = _shown(first)
    first.close()

    counts.reads = counts.parses = 0
    again = Publisher(_settings(articles_dir), ledger)
    report = again.refresh()
    assert (counts.reads, counts.parses, report.read) == (0, 0, 0)
    assert again.loaded and _shown(again) == before
    # An unchanged file is never read again, and a touched one is read but not parsed.
    os.utime(next(articles_dir.rglob("*.txt")), (time.time() - 60, time.time() - 60))
    again.refresh()
    assert (counts.reads, counts.parses) == (1, 0)
    # A follower that never writes (a second process, a new worker) reads no file either.
    follower = Publisher(_settings(articles_dir), ledger, writer=False)
    follower.refresh()
    assert (counts.reads, counts.parses) == (1, 0) and _shown(follower) == before
    again.close()
    follower.close()


def test_content_stays_in_the_store_until_rendered(articles_dir: Path, tmp_path: Path) -> None:
    publisher = Publisher(_settings(articles_dir), tmp_path / "ledger.sqlite3")
    publisher.refresh()
    entry = publisher.collection.entries[0]
    # The article's own content slot is empty: its bytes live in the store only.
    with pytest.raises(AttributeError):
        Article.content_packed.__get__(entry.article)  # type: ignore[attr-defined]
    source = (articles_dir / entry.article.path).read_bytes()
    assert entry.content_html == parse_article(source, entry.article.path).content_html
    publisher.close()


def test_edit_rename_into_place_and_delete_reach_a_follower(articles_dir: Path,
                                                            tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    writer = Publisher(_settings(articles_dir), ledger, settle_seconds=0)
    writer.refresh()
    follower = Publisher(_settings(articles_dir), ledger, writer=False)
    follower.refresh()
    path = write_article(articles_dir, "new.txt", "A Brand New Story")
    writer.refresh(paths={"new.txt"})
    follower.follow()
    titles = {e.title for e in follower.collection.entries}
    assert "A Brand New Story" in titles
    stamp = next(e for e in follower.collection.entries if e.title == "A Brand New Story")
    tmp = articles_dir / "new.txt.tmp"  # an editor's atomic save: write aside, rename over
    tmp.write_text(path.read_text().replace("A lead paragraph.", "An edited lead."))
    tmp.rename(path)
    writer.refresh(paths={"new.txt"})
    follower.follow()
    edited = next(e for e in follower.collection.entries if e.title == "A Brand New Story")
    assert "An edited lead." in edited.content_html
    assert (edited.id, edited.slug, edited.published) == (stamp.id, stamp.slug, stamp.published)
    path.unlink()
    writer.refresh(paths={"new.txt"})
    follower.follow()
    assert "A Brand New Story" not in {e.title for e in follower.collection.entries}
    assert _shown(follower) == _shown(writer)
    writer.close()
    follower.close()


def test_feeds_answer_503_until_the_first_import_is_complete(make_app, articles_dir: Path,
                                                              tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    store = SqliteStore(ledger, "news.example.org")
    # Another live process of another host holds the writer lease and is importing.
    conn = sqlite3.connect(ledger)
    conn.execute("INSERT INTO leases VALUES ('folder-sync', 'elsewhere:1', ?)",
                 (time.time() + 60,))
    conn.commit()
    conn.close()
    store.close()
    app = make_app(articles_dir)
    client = app.test_client()
    for path in ("/feed.atom", "/topics/", "/articles/anything", "/feeds.opml"):
        reply = client.get(path)
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "5", path
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    # The lease expires (its holder died): this process takes over and imports.
    conn = sqlite3.connect(ledger)
    conn.execute("UPDATE leases SET expires = 0")
    conn.commit()
    conn.close()
    app.extensions["feedsvc"].refresh()
    assert client.get("/feed.atom").status_code == 200
    assert client.get("/readyz").status_code == 200


# -- several processes ----------------------------------------------------------------

WORKER = """
import sys, time
from pathlib import Path
import feedsvc.store
import feedsvc.sync
from feedsvc.config import load_settings
from feedsvc.model import Article
from feedsvc.publisher import Publisher
feedsvc.sync.BATCH = int(sys.argv[3])
settings = load_settings({"articles_dir": sys.argv[1], "base_url": "https://news.example.org",
                          "reload_interval": 0})
publisher = Publisher(settings, Path(sys.argv[2]))
print("ready", flush=True)
deadline = time.monotonic() + 60
while not publisher.loaded and time.monotonic() < deadline:
    publisher.refresh()
    time.sleep(0.02)
print(feedsvc.sync.COUNTS["parsed"], len(publisher.collection.entries), flush=True)
publisher.close()
"""


def _corpus(folder: Path, n: int) -> None:
    for i in range(n):
        write_article(folder, f"{i % 3}/story-{i:05}.txt", f"Generated Story Number {i}",
                      body=f"Paragraph {i} of the corpus, long enough to be a lead.")
        os.utime(folder / f"{i % 3}/story-{i:05}.txt", (1_700_000_000 + i, 1_700_000_000 + i))


@pytest.mark.slow
def test_two_workers_starting_together_parse_each_article_once(tmp_path: Path) -> None:
    articles = tmp_path / "articles"
    _corpus(articles, 600)  # over the pool threshold: the writer parses on every core
    ledger = tmp_path / "ledger.sqlite3"
    SqliteStore(ledger, "news.example.org").close()  # both find the file, neither owns it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(articles), str(ledger), "100"],
                              stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(2)]
    results = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    parsed = [int(r[1]) for r in results]
    assert sum(parsed) == 600 and sorted(parsed)[0] == 0, parsed
    assert [int(r[2]) for r in results] == [600, 600]


@pytest.mark.slow
def test_sigkill_mid_import_leaves_a_consistent_store_and_resumes(tmp_path: Path) -> None:
    articles = tmp_path / "articles"
    _corpus(articles, 300)
    ledger = tmp_path / "ledger.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    slow = WORKER.replace("feedsvc.sync.BATCH = int(sys.argv[3])",
                          "feedsvc.sync.BATCH = int(sys.argv[3])\n"
                          "feedsvc.sync.POOL_THRESHOLD = 10**9\n"
                          "import feedsvc.store as st\n"
                          "_w = st.SqliteStore.write\n"
                          "def _slow(self, b):\n    time.sleep(0.05)\n    return _w(self, b)\n"
                          "st.SqliteStore.write = _slow")
    proc = subprocess.Popen([sys.executable, "-c", slow, str(articles), str(ledger), "20"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    stored = 0
    while stored < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
        with sqlite3.connect(ledger) as conn:
            stored = conn.execute("SELECT count(*) FROM files").fetchone()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(ledger) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stamped = dict(conn.execute("SELECT path, id || first_seen FROM articles").fetchall())
        stored = conn.execute("SELECT count(*) FROM files").fetchone()[0]
        complete = conn.execute(
            "SELECT value FROM meta WHERE key = 'store_complete'").fetchone()
    assert 60 <= stored < 300 and complete is None
    # Every stored file is stamped (stamps are written before the batch is stored).
    with sqlite3.connect(ledger) as conn:
        unstamped = conn.execute(
            "SELECT count(*) FROM files f LEFT JOIN articles a ON a.path = f.path "
            "WHERE a.path IS NULL").fetchone()[0]
    assert unstamped == 0

    out = subprocess.run([sys.executable, "-c", WORKER, str(articles), str(ledger), "20"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    _, parsed, published = out.stdout.split()
    assert int(published) == 300
    assert int(parsed) <= 300 - stored + 20  # resumed: only what was not stored (and one batch)
    with sqlite3.connect(ledger) as conn:
        after = dict(conn.execute("SELECT path, id || first_seen FROM articles").fetchall())
    assert {p: after[p] for p in stamped} == stamped  # nothing re-stamped


# -- upgrade in place -------------------------------------------------------------------

#: The ledger's tables as release 0.1 (main before the store) created them.
OLD_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE articles (path TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE,
        slug TEXT NOT NULL UNIQUE, first_seen INTEGER NOT NULL, changed INTEGER,
        hash TEXT NOT NULL)""",
    "CREATE INDEX articles_hash ON articles(hash)",
    "INSERT INTO meta VALUES ('schema_version', '1')",
)


def test_a_ledger_of_the_previous_release_is_upgraded_in_place(articles_dir: Path,
                                                                tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(ledger)
    for statement in OLD_SCHEMA:
        conn.execute(statement)
    rows = []
    for n, path in enumerate(sorted(articles_dir.rglob("*.txt"))):
        rel = path.relative_to(articles_dir).as_posix()
        article = parse_article(path.read_bytes(), rel)
        rows.append((rel, f"tag:old.example.org,2020-01-01:/articles/old-{n}", f"old-{n}",
                     1_600_000_000 + n, 1_650_000_000 + n if n % 2 else None,
                     article.content_hash))
    conn.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()

    publisher = Publisher(_settings(articles_dir), ledger)
    publisher.refresh()
    shown = {e.article.path: e for e in publisher.collection.entries}
    for rel, id_, slug, first_seen, changed, _ in rows:
        if rel not in shown or shown[rel].article.front_matter.date is not None:
            continue
        entry = shown[rel]
        assert (entry.id, entry.slug, int(entry.published.timestamp())) == (id_, slug, first_seen)
        if changed is not None and entry.article.front_matter.updated is None:
            assert int(entry.updated.timestamp()) == changed
    assert len(shown) >= 20
    publisher.close()
    conn = sqlite3.connect(ledger)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM articles").fetchone()[0] == len(rows)
    conn.close()


def test_a_ledger_from_a_newer_release_is_refused(articles_dir: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    Publisher(_settings(articles_dir), ledger).close()
    conn = sqlite3.connect(ledger)
    conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="written by a newer feedsvc"):
        Publisher(_settings(articles_dir), ledger)


def test_check_uses_the_service_store_and_leaves_it_alone(articles_dir: Path, tmp_path: Path,
                                                          monkeypatch, capsys) -> None:
    from feedsvc.cli import main

    ledger = tmp_path / "ledger.sqlite3"
    service = Publisher(_settings(articles_dir), ledger)
    service.refresh()  # the service has seen the folder
    service.close()
    write_article(articles_dir, "fresh.txt", "A Fresh Story To Check")
    with sqlite3.connect(ledger) as conn:
        before = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(ledger))
    counts = Counting(monkeypatch)
    assert main(["check", str(articles_dir)]) == 0
    assert "published  fresh.txt: A Fresh Story To Check" in capsys.readouterr().out
    assert (counts.reads, counts.parses) == (1, 1)  # only the file the store lacks
    with sqlite3.connect(ledger) as conn:  # nothing stamped in the service's ledger
        assert conn.execute("SELECT count(*) FROM articles").fetchone()[0] == before


# -- the writer lease -------------------------------------------------------------------


def test_one_writer_at_a_time_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    store = SqliteStore(ledger, "news.example.org")
    assert store.acquire(60) and store.acquire(60)  # taken, then renewed

    def holder(name: str, expires: float) -> None:
        with sqlite3.connect(ledger) as conn:
            conn.execute("UPDATE leases SET holder = ?, expires = ?", (name, expires))

    holder("elsewhere:1", time.time() + 60)  # a live process of another host
    assert not store.acquire(60)
    holder("elsewhere:1", time.time() - 1)  # ... whose lease ran out: it died
    assert store.acquire(60)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    holder(f"{socket.gethostname()}:{dead}", time.time() + 60)  # a dead process of ours
    assert store.acquire(60)  # taken over at once, without waiting for the expiry
    store.release()
    with sqlite3.connect(ledger) as conn:
        assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
    store.close()


def test_a_parser_change_parses_every_stored_version_again(articles_dir: Path, tmp_path: Path,
                                                           monkeypatch) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    Publisher(_settings(articles_dir), ledger).refresh()
    monkeypatch.setattr(feedsvc.sync, "PARSER_VERSION", feedsvc.sync.PARSER_VERSION + 1)
    monkeypatch.setattr(feedsvc.store, "PARSER_VERSION", feedsvc.sync.PARSER_VERSION)
    counts = Counting(monkeypatch)
    publisher = Publisher(_settings(articles_dir), ledger)
    publisher.refresh()
    assert counts.parses == len(publisher.collection.entries) + len(publisher.rejections)
    counts.parses = 0
    Publisher(_settings(articles_dir), ledger).refresh()
    assert counts.parses == 0  # stored again under the new parser's version


def test_rm_rf_of_the_folder_is_taken_whole(tmp_path: Path) -> None:
    """``rm -rf`` reports every file it deletes before the folder itself goes. Handed on
    as they came, the first deletions were stored while the folder was still there (the
    feeds short of dozens of articles, and pings and purges for them); the watcher now
    waits for inotify to go quiet, so the publisher finds the folder missing and keeps
    every article. A single deletion is still taken within a second."""
    import shutil

    from feedsvc.watch import QUIET_SECONDS, FolderWatcher, available

    if not available():
        pytest.skip("no inotify here")
    articles = tmp_path / "articles"
    for number in range(600):
        write_article(articles, f"{number:03}.txt", f"A Story Numbered {number}",
                      topic=f"beat {number % 13}")
    publisher = Publisher(_settings(articles), tmp_path / "ledger.sqlite3", settle_seconds=0)
    publisher.refresh()
    assert len(publisher.collection.entries) == 600
    handed: list[int] = []
    watcher = FolderWatcher(articles, on_paths=lambda p: (handed.append(len(p)),
                                                          publisher.refresh(paths=p)),
                            on_overflow=publisher.refresh).start()
    publisher.sync.writing = watcher.writing
    waits = []
    until_quiet = watcher._until_quiet
    watcher._until_quiet = lambda: (waits.append(1), until_quiet())[1]
    try:
        # An editor's save by rename (a hidden temporary over the article) is an edit:
        # handed on at once, with no wait for quiet.
        temporary = articles / ".001.txt.tmp"
        temporary.write_text((articles / "001.txt").read_text().replace(
            "A Story Numbered 1", "A Story Renumbered"), encoding="utf-8")
        temporary.rename(articles / "001.txt")
        deadline = time.monotonic() + 5
        while "A Story Renumbered" not in {e.title for e in publisher.collection.entries}:
            assert time.monotonic() < deadline, "the saved edit was not taken"
            time.sleep(0.01)
        assert waits == []

        (articles / "000.txt").unlink()
        started = time.monotonic()
        while len(publisher.collection.entries) != 599:
            assert time.monotonic() - started < 5, "a single deletion was not taken"
            time.sleep(0.01)
        assert time.monotonic() - started >= QUIET_SECONDS and waits == [1]

        shutil.rmtree(articles)
        deadline = time.monotonic() + 15
        while not publisher.folder_missing:
            assert time.monotonic() < deadline, "the folder was never found missing"
            time.sleep(0.01)
        time.sleep(3 * QUIET_SECONDS)
        assert len(publisher.collection.entries) == 599, handed
    finally:
        watcher.stop(wait=5.0)
        publisher.close()


def test_a_folder_put_in_place_of_the_watched_one_is_watched(tmp_path: Path) -> None:
    """inotify watches a folder, not a path: after ``mv articles old; mv new articles``
    the watcher saw nothing more, and edits waited for every rescan as long as the
    service ran. The watcher marks itself lost; the next call of watch_while_writer
    (the reloader's, each rescan) watches the new folder, and none while there is none."""
    from feedsvc.watch import available, watch_while_writer

    if not available():
        pytest.skip("no inotify here")
    articles = tmp_path / "articles"
    write_article(articles, "first.txt", "A Story From The First Folder")
    publisher = Publisher(_settings(articles), tmp_path / "ledger.sqlite3", settle_seconds=0)
    publisher.refresh()
    assert publisher.is_writer
    handed: list[set[str]] = []

    def watching(current):
        return watch_while_writer(current, publisher, on_paths=handed.append,
                                  on_overflow=lambda: None, rescan_seconds=5)[0]

    first, second = watching(None), None
    assert first is not None and watching(first) is first
    try:
        articles.rename(tmp_path / "old")
        deadline = time.monotonic() + 5
        while not first.lost:
            assert time.monotonic() < deadline, "the watcher never saw its folder go"
            time.sleep(0.01)
        assert watching(first) is None  # nothing at the path: nothing watched
        assert first._stop.is_set()
        articles.mkdir()
        second = watching(None)
        assert second is not None and second is not first
        write_article(articles, "second.txt", "A Story From The Second Folder")
        deadline = time.monotonic() + 5
        while {"second.txt"} not in handed:
            assert time.monotonic() < deadline, f"the new folder is not watched: {handed}"
            time.sleep(0.01)
    finally:
        for watcher in (first, second):
            if watcher is not None:
                watcher.stop(wait=5.0)
        publisher.close()


def test_a_file_still_open_for_writing_is_not_read(articles_dir: Path, tmp_path: Path) -> None:
    from feedsvc.watch import FolderWatcher, available

    if not available():
        pytest.skip("no inotify here")
    publisher = Publisher(_settings(articles_dir), tmp_path / "ledger.sqlite3",
                          settle_seconds=0)
    publisher.refresh()
    seen: list[set[str]] = []
    watcher = FolderWatcher(articles_dir, on_paths=lambda p: (seen.append(p),
                                                              publisher.refresh(paths=p)),
                            on_overflow=publisher.refresh).start()
    publisher.sync.writing = watcher.writing
    try:
        with open(articles_dir / "slow.txt", "w", encoding="utf-8") as handle:
            handle.write("A Story Written Slowly\n\nTest Writer\ntest topic\n\n")
            handle.flush()
            deadline = time.monotonic() + 5
            while "slow.txt" not in watcher.writing:
                assert time.monotonic() < deadline, "inotify did not report the write"
                time.sleep(0.01)
            publisher.refresh()  # a rescan with no settle wait: still not read
            assert "A Story Written Slowly" not in {e.title for e in publisher.collection.entries}
            handle.write("The lead paragraph, written a little later.\n")
        deadline = time.monotonic() + 5  # closed: inotify hands it over at once
        while "A Story Written Slowly" not in {e.title for e in publisher.collection.entries}:
            assert time.monotonic() < deadline, "the closed file was not published"
            time.sleep(0.01)
        entry = next(e for e in publisher.collection.entries
                     if e.title == "A Story Written Slowly")
        assert "written a little later" in entry.content_html and {"slow.txt"} in seen
    finally:
        watcher.stop(wait=5.0)
        publisher.close()
