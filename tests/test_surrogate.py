"""Surrogate keys: every response says what it shows, and a change announces exactly
the documents whose bytes changed (feedsvc.surrogate).

The rule is checked the only way that cannot be fooled: every document of the
site (every feed, archive and format, each feed URL's HTML preview, every
page, the OPML list) is fetched through the real app before and after a
change, and the bytes are compared with what the change announced.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from feedsvc.collection import Collection
from feedsvc.export import site_paths
from feedsvc.surrogate import Touched, touched
from tests.conftest import write_article

FEED_ACCEPT = "application/atom+xml, application/rss+xml, application/feed+json"
VARIANTS = {"reader": FEED_ACCEPT, "browser": "text/html"}

Snapshot = dict[tuple[str, str], tuple[int, bytes, tuple[str, ...]]]


def _corpus(folder: Path) -> None:
    folder.mkdir()
    people = ["Ann Lee", "Bo Chan", "Cy Dorn"]
    for i in range(7):
        write_article(folder, f"{i:02d}.txt", f"Story number {i}", author=people[i % 3],
                      topic="politics, science" if i % 2 else "science",
                      body=f"Lead paragraph {i}.\n\nMore text {i}.",
                      front=f"---\ndate: 2026-10-{i + 1:02d}T09:00:00Z\n---\n")


def _urls(app: Flask) -> set[str]:
    feeds, pages, _ = site_paths(app)
    return {doc.url_path for doc in feeds} | set(pages)


def _snapshot(app: Flask, paths: set[str]) -> Snapshot:
    client = app.test_client()
    out: Snapshot = {}
    for path in paths:
        for variant, accept in VARIANTS.items():
            response = client.get(path, headers={"Accept": accept})
            keys = tuple(response.headers.get("Surrogate-Key", "").split())
            out[(path, variant)] = (response.status_code, response.get_data(), keys)
    return out


def _bump(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def _edit_body(folder: Path, name: str) -> None:
    path = folder / name
    path.write_text(path.read_text().replace("More text", "Corrected text"))
    _bump(path)


def _edit_title(folder: Path, name: str) -> None:
    path = folder / name
    path.write_text(path.read_text().replace("Story number", "Headline"))
    _bump(path)


def _retopic(folder: Path, name: str) -> None:
    path = folder / name
    text = path.read_text()
    path.write_text(text.replace("\nscience\n", "\nhealth\n").replace(
        "\npolitics, science\n", "\nhealth\n"))
    _bump(path)


def _add(folder: Path, date: str) -> None:
    write_article(folder, f"new-{date}.txt", f"A new story of {date}", author="Dee Fox",
                  topic="science", body="Brand new lead.",
                  front=f"---\ndate: {date}T12:00:00Z\n---\n")


def _delete(folder: Path, name: str) -> None:
    (folder / name).unlink()


CHANGES: dict[str, Callable[[Path], None]] = {
    "edit newest body": lambda f: _edit_body(f, "06.txt"),
    "edit archived body": lambda f: _edit_body(f, "01.txt"),
    "edit title": lambda f: _edit_title(f, "03.txt"),
    "topic change": lambda f: _retopic(f, "02.txt"),
    "add newest": lambda f: _add(f, "2026-11-20"),
    "add old": lambda f: _add(f, "2026-09-01"),
    "delete newest": lambda f: _delete(f, "06.txt"),
    "delete oldest": lambda f: _delete(f, "00.txt"),
    "delete only article of an author": lambda f: (_delete(f, "02.txt"), _delete(f, "05.txt")),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_announces_exactly_what_changed(
    make_app: Callable[..., Flask], tmp_path: Path, change: str
) -> None:
    folder = tmp_path / "articles"
    _corpus(folder)
    app = make_app(folder, feed_size=2)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    seen: list[Touched] = []
    publisher.change_listeners.append(
        lambda old, new: seen.append(touched(old, new, publisher.site, 2)))
    before_paths = _urls(app)
    before = _snapshot(app, before_paths)
    CHANGES[change](folder)
    assert publisher.refresh().changed
    after_paths = _urls(app)
    after = _snapshot(app, before_paths | after_paths)
    assert len(seen) == 1
    announced = seen[0]
    keys, paths = announced.keys, announced.paths

    changed = {k for k in after if before.get(k, (404, b"", ()))[:2] != after[k][:2]}
    assert changed, "the change must change some document"
    for doc in sorted(changed):
        path = doc[0]
        assert path in paths, f"{doc} changed but its URL was not announced"
        old_keys = before.get(doc, (0, b"", ()))[2]
        if old_keys:  # a cached copy is tagged with these: one must be purged
            assert set(old_keys) & keys, f"{doc} changed; none of {old_keys} announced"
    for path in paths:
        assert any(d[0] == path for d in changed), f"{path} announced but unchanged"
    for key in keys:
        carriers = {d for d in changed
                    if key in before.get(d, (0, b"", ()))[2] or key in after[d][2]}
        assert carriers, f"key {key} announced but no document carrying it changed"
    # An edit announces its article, its feeds' keys and the site; never an unrelated article.
    if change.startswith("edit"):
        assert "site" in keys
        assert {k for k in keys if k.startswith("article/")} == {
            f"article/{e.slug}" for e in publisher.collection.entries
            if e.title.startswith("Headline") or "Corrected" in e.content_html}


def test_every_response_carries_its_keys(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    _corpus(folder)
    app = make_app(folder, feed_size=2, cache_tags=True)
    client = app.test_client()
    collection: Collection = app.extensions["feedsvc"].collection
    newest = collection.entries[0].slug
    feed = client.get("/feed.atom")
    assert feed.headers["Surrogate-Key"].split()[0] == "site"
    assert f"article/{newest}" in feed.headers["Surrogate-Key"].split()
    assert feed.headers["Cache-Tag"] == ",".join(feed.headers["Surrogate-Key"].split())
    for path, first in [("/topics/science/feed.rss", "topic/science"),
                        ("/authors/ann-lee/feed.json", "author/ann-lee"),
                        ("/archive/1/feed.atom", "site"), ("/", "site"),
                        ("/topics/", "topics"), ("/authors/", "authors"),
                        ("/topics/science/", "topic/science"), ("/feeds.opml", "opml"),
                        (f"/articles/{newest}", f"article/{newest}")]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Surrogate-Key"].split()[0] == first, path
    preview = client.get("/feed.atom", headers={"Accept": "text/html"})
    assert preview.content_type.startswith("text/html")
    assert preview.headers["Surrogate-Key"] == feed.headers["Surrogate-Key"]
    etag = feed.headers["ETag"]
    not_modified = client.get("/feed.atom", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.headers["Surrogate-Key"] == feed.headers["Surrogate-Key"]
    assert "Surrogate-Key" not in client.get("/topics/nope/").headers


def test_key_headers_follow_the_settings(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    _corpus(folder)
    app = make_app(folder, surrogate_keys=False, purge="webhook:http://127.0.0.1:9/x")
    response = app.test_client().get("/feed.atom")
    assert "Surrogate-Key" not in response.headers and "Cache-Tag" not in response.headers
    # purging on: shared caches keep documents a day, readers still revalidate sooner
    assert response.headers["Cache-Control"] == "public, max-age=300, s-maxage=86400"
