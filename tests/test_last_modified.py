"""Last-Modified moves whenever a document's bytes change, the same on every worker.

Through the real app (its WSGI fast path and Flask routes) over a real folder
and ledger; a reader that sends only If-Modified-Since must see every change.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from werkzeug.http import http_date, parse_date

from tests.conftest import write_article

OLD = 1_600_000_000  # 2020-09-13: an mtime kept by rsync -a or cp -p


def _poll(client, path: str, since: str | None) -> tuple[int, str]:
    headers = {"If-Modified-Since": since} if since else {}
    response = client.get(path, headers=headers)
    if response.status_code == 304:  # werkzeug drops Last-Modified from a Flask route's 304
        return 304, response.headers.get("Last-Modified", since or "")
    return response.status_code, response.headers["Last-Modified"]


def _settled(app):  # noqa: ANN001, ANN202
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    return publisher


PATHS = ("/feed.atom", "/feed.json", "/archive/1/feed.rss", "/", "/feeds.opml")


def test_every_change_reaches_an_if_modified_since_reader(make_app, articles_dir: Path) -> None:
    app = make_app(articles_dir, feed_size=5)
    publisher = _settled(app)
    client = app.test_client()
    seen = {p: _poll(client, p, None) for p in PATHS}
    assert all(status == 200 for status, _ in seen.values())
    for path, (_, stamp) in seen.items():  # nothing changed: 304, same Last-Modified
        assert _poll(client, path, stamp) == (304, stamp), path

    def change_then_check(what: str) -> None:
        publisher.refresh()
        for path in PATHS:
            previous = seen[path][1]
            status, stamp = _poll(client, path, previous)
            assert status == 200, f"{what}: {path} answered {status} to If-Modified-Since"
            assert parse_date(stamp) > parse_date(previous), f"{what}: {path}"
            seen[path] = (status, stamp)
            assert _poll(client, path, stamp)[0] == 304, f"{what}: {path}"

    # An article whose file keeps an old modification time.
    added = write_article(articles_dir, "old-news.txt", "Old News Arrives Late")
    os.utime(added, (OLD, OLD))
    count = len(client.get("/feed.json?limit=1000").get_json()["items"])
    change_then_check("add with an old mtime")
    assert len(client.get("/feed.json?limit=1000").get_json()["items"]) == count + 1
    # A deletion: the newest entry's date does not move at all.
    (articles_dir / "old-news.txt").unlink()
    change_then_check("delete")
    # An edit that carries an old front-matter date.
    target = next(articles_dir.glob("*.txt"))
    target.write_text("---\nupdated: 2020-01-01\n---\n" + target.read_text(encoding="utf-8"),
                      encoding="utf-8")
    change_then_check("edit with an old updated date")
    # A future updated date, then a deletion: never backwards.
    write_article(articles_dir, "future.txt", "Dated In The Future",
                  front="---\nupdated: 2030-01-01 00:00 +00:00\n---\n")
    change_then_check("add with a future updated date")
    assert parse_date(seen["/feed.atom"][1]).year == 2030
    (articles_dir / "future.txt").unlink()
    change_then_check("delete the future one")
    # Two changes within one second still give two Last-Modified values.
    write_article(articles_dir, "quick-1.txt", "Quick One")
    change_then_check("first of two quick changes")
    write_article(articles_dir, "quick-2.txt", "Quick Two")
    change_then_check("second of two quick changes")


def test_workers_agree_on_last_modified(make_app, articles_dir: Path) -> None:
    """Two apps over one ledger (two workers, or two hosts sharing it), and one started later."""
    one = make_app(articles_dir)
    two = make_app(articles_dir)
    for app in (one, two):
        _settled(app)
    assert _poll(one.test_client(), "/feed.atom", None) == _poll(two.test_client(),
                                                                  "/feed.atom", None)
    write_article(articles_dir, "shared.txt", "Shared Story")
    one.extensions["feedsvc"].refresh()
    time.sleep(1.1)  # the second worker reloads a second later: its clock must not matter
    two.extensions["feedsvc"].refresh()
    first = _poll(one.test_client(), "/feed.atom", None)
    assert first == _poll(two.test_client(), "/feed.atom", None)
    assert _poll(one.test_client(), "/", None) == _poll(two.test_client(), "/", None)
    late = make_app(articles_dir)
    assert _poll(late.test_client(), "/feed.atom", None) == first


def test_last_modified_survives_a_restart(make_app, articles_dir: Path) -> None:
    app = make_app(articles_dir)
    stamp = _poll(app.test_client(), "/topics/nato/feed.atom", None)[1]
    app.extensions["feedsvc"].close()
    time.sleep(1.1)
    again = make_app(articles_dir)
    assert _poll(again.test_client(), "/topics/nato/feed.atom", stamp) == (304, stamp)
    assert stamp != http_date(0)


def _ordered_digests(publisher) -> dict[str, str]:  # noqa: ANN001
    """Every document's version digest as the release before this one computed it:
    blake2b over the feed's entry versions in order, and over every feed's for pages.
    Written out here, not taken from feedsvc, so that the test pins the old formula."""
    import hashlib

    from feedsvc.collection import FEED_KINDS
    from feedsvc.publisher import PAGES, version_key

    collection = publisher.collection
    refs = sorted(collection.feed_refs(), key=lambda r: (FEED_KINDS.index(r.kind), r.slug))
    feeds = {ref: hashlib.blake2b(b"".join(e.version for e in collection.feed_entries(ref)),
                                  digest_size=16).hexdigest() for ref in refs}
    pages = hashlib.blake2b("".join(f"{r.kind}/{r.slug}={feeds[r]};" for r in refs).encode(),
                            digest_size=16).hexdigest()
    return {PAGES: pages, **{version_key(ref): digest for ref, digest in feeds.items()}}


def test_an_upgrade_from_ordered_digests_keeps_every_last_modified(
    articles_dir: Path, tmp_path: Path
) -> None:
    """Moments the previous release stored under its ordered digests carry over to the
    summed ones: restarting on the new code moves no document's Last-Modified."""
    import sqlite3

    from feedsvc.config import load_settings
    from feedsvc.publisher import PAGES, Publisher, version_key

    settings = load_settings({"articles_dir": str(articles_dir),
                              "base_url": "https://news.example.org"}, environ={})
    ledger = tmp_path / "ledger.sqlite3"
    start = 1_900_000_000.0  # later than any article date: the moments are the clock's
    first = Publisher(settings, ledger, clock=lambda: start)
    first.refresh()
    refs = list(first.collection.feed_refs())
    before = {version_key(ref): first.last_modified(ref, first.collection.updated)
              for ref in refs}
    before[PAGES] = first.last_modified(None, first.collection.updated)
    old = _ordered_digests(first)
    first.close()
    # What the previous release left: the same moments under its own digests; one
    # document's digest is unknown to either release, and moves as a new version must.
    stranger = version_key(refs[-1])
    conn = sqlite3.connect(ledger)
    with conn:
        for doc, digest in old.items():
            conn.execute("UPDATE feed_versions SET digest = ? WHERE doc = ?",
                         ("f" * 32 if doc == stranger else digest, doc))
    conn.close()
    later = start + 5000
    second = Publisher(settings, ledger, clock=lambda: later)
    second.refresh()
    after = {version_key(ref): second.last_modified(ref, second.collection.updated)
             for ref in refs}
    after[PAGES] = second.last_modified(None, second.collection.updated)
    assert before[stranger].timestamp() == start and after[stranger].timestamp() == later
    del before[stranger], after[stranger]
    assert after == before and len(after) > 10
    second.close()
    conn = sqlite3.connect(ledger)
    renamed = dict(conn.execute("SELECT doc, digest FROM feed_versions"))
    conn.close()
    assert not set(renamed.values()) & set(old.values())  # renamed, not kept beside
