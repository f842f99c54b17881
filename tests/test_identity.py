"""Renames with edits, copies and deletions keep ids; deleted articles answer 410.

Through the publisher over a real folder and ledger, and through the real app.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from feedsvc.config import load_settings
from feedsvc.identity import match_renames, shingles, similarity
from feedsvc.parser import parse_article
from feedsvc.publisher import Publisher
from tests.conftest import write_article

BODY = ("The city council voted on Tuesday to close the old harbour bridge to cars for two "
        "years while engineers replace its rusted steel deck. Buses and bicycles may still "
        "cross. Shop owners on the north bank fear the detour will keep customers away, and "
        "the mayor promised a fund to help them through the works. Repairs start in March.")


@pytest.fixture
def publisher(articles_dir: Path, tmp_path: Path):
    settings = load_settings({"articles_dir": str(articles_dir),
                              "base_url": "https://news.example.org"}, environ={})
    pub = Publisher(settings, tmp_path / "ledger.sqlite3", settle_seconds=0)
    pub.refresh()
    yield pub
    pub.close()


def _by_path(publisher: Publisher) -> dict[str, object]:
    return {e.article.path: e for e in publisher.collection.entries}


def _age(path: Path, seconds: float = 86_400 * 30) -> None:
    then = os.stat(path).st_mtime - seconds
    os.utime(path, (then, then))


def test_a_rename_with_a_one_sentence_edit_keeps_id_slug_and_published(
        publisher, articles_dir, caplog) -> None:
    old = write_article(articles_dir, "a.txt", "Harbour Bridge Closes To Cars", body=BODY)
    _age(old)
    publisher.refresh()
    before = _by_path(publisher)["a.txt"]
    old.unlink()
    write_article(articles_dir, "b.txt", "Harbour Bridge Closes To Cars", author="Other Name",
                  body=BODY.replace("Repairs start in March.", "Repairs start in April."))
    with caplog.at_level(logging.INFO, logger="feedsvc"):
        publisher.refresh()
    after = _by_path(publisher)
    assert "a.txt" not in after
    entry = after["b.txt"]
    assert (entry.id, entry.slug, entry.published) == (before.id, before.slug, before.published)
    assert entry.updated > before.updated, "the text changed, so updated moves"
    assert not any(e.slug == before.slug + "-2" for e in after.values())
    assert "b.txt is a.txt renamed" in caplog.text


def test_a_rename_with_a_rewrite_matches_on_title_and_byline(publisher, articles_dir) -> None:
    old = write_article(articles_dir, "draft-1.txt", "Harbour Bridge Closes To Cars", body=BODY)
    publisher.refresh()
    before = _by_path(publisher)["draft-1.txt"]
    old.unlink()
    write_article(articles_dir, "final.txt", "Harbour Bridge Closes To Cars",
                  body="Entirely new words about the bridge, written again from scratch.")
    publisher.refresh()
    entry = _by_path(publisher)["final.txt"]
    assert (entry.id, entry.slug, entry.published) == (before.id, before.slug, before.published)


def test_a_rename_matches_on_the_front_matter_id(publisher, articles_dir) -> None:
    front = "---\nid: tag:news.example.org,2026:bridge\n---\n"
    old = write_article(articles_dir, "x.txt", "A First Headline", body=BODY, front=front)
    publisher.refresh()
    before = _by_path(publisher)["x.txt"]
    assert before.id == "tag:news.example.org,2026:bridge"
    old.unlink()
    write_article(articles_dir, "y.txt", "A Wholly Different Headline", author="Someone Else",
                  body="Nothing alike.", front=front)
    publisher.refresh()
    entry = _by_path(publisher)["y.txt"]
    assert (entry.id, entry.slug, entry.published) == (before.id, before.slug, before.published)


def test_a_pure_rename_moves_no_date(publisher, articles_dir) -> None:
    old = write_article(articles_dir, "p.txt", "Harbour Bridge Closes To Cars", body=BODY)
    publisher.refresh()
    before = _by_path(publisher)["p.txt"]
    old.rename(articles_dir / "q.txt")
    publisher.refresh()
    entry = _by_path(publisher)["q.txt"]
    assert (entry.id, entry.slug, entry.published, entry.updated) == (
        before.id, before.slug, before.published, before.updated)


def test_an_unrelated_article_replacing_a_deleted_one_is_new(publisher, articles_dir) -> None:
    old = write_article(articles_dir, "gone.txt", "Harbour Bridge Closes To Cars", body=BODY)
    publisher.refresh()
    before = _by_path(publisher)["gone.txt"]
    old.unlink()
    write_article(articles_dir, "new.txt", "Election Results Are In", author="Sara Wazowski",
                  body="The votes were counted overnight and the result surprised no one.")
    publisher.refresh()
    entry = _by_path(publisher)["new.txt"]
    assert entry.id != before.id and entry.slug != before.slug


def test_similarity_rule() -> None:
    a = parse_article(f"Title\n\nWriter\n\n{BODY}\n".encode(), "a.txt")
    edited = parse_article(f"Title\n\nWriter\n\n{BODY} One more short sentence.\n".encode(),
                           "b.txt")
    other = parse_article(b"Title\n\nWriter\n\nSomething else entirely, said briefly.\n",
                          "c.txt")
    assert similarity(shingles(a), shingles(edited)) >= 0.8
    assert similarity(shingles(a), shingles(other)) < 0.8
    # Most similar first, each file paired once.
    other_two = parse_article(b"Other\n\nSomeone\n\nUnrelated text here, nothing the same.\n",
                              "d.txt")
    assert match_renames({"a.txt": a, "z.txt": other_two}, {"b.txt": edited}) == {"b.txt": "a.txt"}


def test_a_duplicate_copy_is_reported_and_published_once(publisher, articles_dir,
                                                         caplog) -> None:
    original = write_article(articles_dir, "orig.txt", "Harbour Bridge Closes To Cars", body=BODY)
    publisher.refresh()
    first = _by_path(publisher)["orig.txt"]
    shutil.copyfile(original, articles_dir / "a-copy.txt")  # sorts before orig.txt
    with caplog.at_level(logging.WARNING, logger="feedsvc"):
        publisher.refresh()
    published = _by_path(publisher)
    assert "a-copy.txt" not in published and published["orig.txt"].id == first.id
    assert publisher.duplicates == {"a-copy.txt": "orig.txt"}
    assert "duplicate a-copy.txt: duplicate of orig.txt" in caplog.text
    assert sum(e.title == first.title for e in publisher.collection.entries) == 1
    # Stable: another rescan, and a restart over the same ledger, keep the same first.
    os.utime(articles_dir / "a-copy.txt")
    publisher.refresh()
    assert publisher.duplicates == {"a-copy.txt": "orig.txt"}
    again = Publisher(publisher.settings, publisher.ledger.path, settle_seconds=0)
    again.refresh()
    assert again.duplicates == {"a-copy.txt": "orig.txt"}
    again.close()


def test_copy_then_delete_keeps_the_id(publisher, articles_dir) -> None:
    original = write_article(articles_dir, "before.txt", "Harbour Bridge Closes To Cars",
                             body=BODY)
    _age(original)
    publisher.refresh()
    first = _by_path(publisher)["before.txt"]
    shutil.copyfile(original, articles_dir / "after.txt")  # not cp -p: a new mtime
    publisher.refresh()  # a scan between the copy and the delete
    assert "after.txt" in publisher.duplicates
    original.unlink()
    publisher.refresh()
    entry = _by_path(publisher)["after.txt"]
    assert (entry.id, entry.slug, entry.published, entry.updated) == (
        first.id, first.slug, first.published, first.updated)
    assert publisher.duplicates == {}


# -- through the app -----------------------------------------------------------------


def test_a_deleted_article_answers_410_and_comes_back_with_its_id(app, articles_dir) -> None:
    client = app.test_client()
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    path = write_article(articles_dir, "brief.txt", "A Brief Life Story")
    publisher.refresh()
    entry = next(e for e in publisher.collection.entries if e.article.path == "brief.txt")
    assert client.get(f"/articles/{entry.slug}").status_code == 200
    saved = path.read_bytes()
    path.unlink()
    publisher.refresh()
    gone = client.get(f"/articles/{entry.slug}")
    assert gone.status_code == 410
    assert gone.data.startswith(b"410 Gone")
    assert client.get("/articles/never-existed").status_code == 404
    path.write_bytes(saved)
    publisher.refresh()
    assert client.get(f"/articles/{entry.slug}").status_code == 200
    back = next(e for e in publisher.collection.entries if e.article.path == "brief.txt")
    assert (back.id, back.published) == (entry.id, entry.published)


def test_a_renamed_and_edited_article_keeps_its_url_and_id_in_the_feed(app, articles_dir) -> None:
    import feedparser

    client = app.test_client()
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    old = write_article(articles_dir, "m1.txt", "Harbour Bridge Closes To Cars", body=BODY)
    publisher.refresh()
    feed = feedparser.parse(client.get("/feed.atom").data)
    before = next(e for e in feed.entries if e.title == "Harbour Bridge Closes To Cars")
    old.unlink()
    write_article(articles_dir, "m2.txt", "Harbour Bridge Closes To Cars",
                  body=BODY + " A late addition.")
    publisher.refresh()
    feed = feedparser.parse(client.get("/feed.atom").data)
    after = [e for e in feed.entries if e.title == "Harbour Bridge Closes To Cars"]
    assert len(after) == 1
    assert (after[0].id, after[0].link, after[0].published) == (
        before.id, before.link, before.published)
    assert client.get(before.link.removeprefix("https://news.example.org")).status_code == 200


def test_duplicates_kept_incrementally_equal_a_full_recount(publisher, articles_dir) -> None:
    """Copies, edits, drafts and deletions in random order: the incremental index agrees."""
    import random

    from feedsvc.identity import find_duplicates

    rng = random.Random(15)
    names = [f"d{i}.txt" for i in range(8)]
    texts = [f"Story {k}\n\nTest Writer\n\nBody {k}.\n" for k in range(3)]
    for step in range(40):
        name = rng.choice(names)
        path = articles_dir / name
        action = rng.random()
        if action < 0.2 and path.exists():
            path.unlink()
        elif action < 0.3:
            path.write_text("---\ndraft: true\n---\n" + rng.choice(texts), encoding="utf-8")
        else:
            path.write_text(rng.choice(texts), encoding="utf-8")
        then = 1_700_000_000 + step
        if path.exists():
            os.utime(path, (then, then))
        publisher.refresh()
        state = publisher.view.state
        publishable = [p for p, a in state.articles.items() if not a.front_matter.draft]
        expected = find_duplicates(state.articles, state.stamps, publishable,
                                   publisher.ledger.stamps_of)
        assert publisher.duplicates == expected, step
        titles = [e.title for e in publisher.collection.entries if e.article.path in names]
        assert len(titles) == len(set(titles)), step
