"""The pure core: Publisher over a real folder and ledger, no HTTP."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from feedsvc.collection import SITE_FEED, FeedRef
from feedsvc.config import load_settings
from feedsvc.publisher import Publisher
from tests.conftest import write_article


@pytest.fixture
def publisher(articles_dir: Path, tmp_path: Path):
    settings = load_settings({"articles_dir": str(articles_dir),
                              "base_url": "https://news.example.org"}, environ={})
    pub = Publisher(settings, tmp_path / "ledger.sqlite3")
    pub.refresh()
    yield pub
    pub.close()


def _titles(publisher: Publisher, ref: FeedRef = SITE_FEED) -> list[str]:
    return [e.title for e in publisher.collection.feed_entries(ref)]


def test_a_file_caught_mid_write_waits_until_it_settles(publisher, articles_dir) -> None:
    path = write_article(articles_dir, "half.txt", "Half Written Story")
    now = time.time()
    os.utime(path, (now, now))
    publisher.settle_seconds = 30
    report = publisher.refresh()
    assert report.read == 0 and "Half Written Story" not in _titles(publisher)
    os.utime(path, (now - 60, now - 60))
    assert publisher.refresh().read == 1
    assert "Half Written Story" in _titles(publisher)


def test_a_file_that_turns_bad_keeps_its_last_good_version(publisher, articles_dir) -> None:
    publisher.settle_seconds = 0
    path = write_article(articles_dir, "fragile.txt", "Fragile Story Published")
    publisher.refresh()
    assert "Fragile Story Published" in _titles(publisher)
    path.write_bytes(b"\x00\x01binary now")
    publisher.refresh()
    assert "Fragile Story Published" in _titles(publisher)
    assert publisher.rejections["fragile.txt"].reason.startswith("binary file")
    path.write_text("Fragile Story Mended\n\nTest Writer\n\nBody again.\n")
    publisher.refresh()
    assert "Fragile Story Mended" in _titles(publisher)
    assert "fragile.txt" not in publisher.rejections


def test_a_renamed_file_keeps_its_id_and_dates(publisher, articles_dir) -> None:
    publisher.settle_seconds = 0
    before = {e.title: e for e in publisher.collection.entries}
    seed = articles_dir / "000_116cfd26fe85501a.txt"
    seed.rename(articles_dir / "renamed-seed.txt")
    publisher.refresh()
    after = {e.title: e for e in publisher.collection.entries}
    title = "Ukraine Drops NATO Bid For Security Guarantees"
    assert after[title].article.path == "renamed-seed.txt"
    assert (after[title].id, after[title].slug, after[title].published, after[title].updated) == (
        before[title].id, before[title].slug, before[title].published, before[title].updated)


def test_front_matter_id_and_slug_are_honoured(publisher, articles_dir) -> None:
    publisher.settle_seconds = 0
    write_article(articles_dir, "fm.txt", "Front Matter Story",
                  front="---\nid: tag:news.example.org,2026:custom\nslug: my-own-slug\n---\n")
    publisher.refresh()
    entry = publisher.collection.by_slug["my-own-slug"]
    assert entry.id == "tag:news.example.org,2026:custom"


def test_two_authors_and_folder_topics(publisher) -> None:
    collection = publisher.collection
    co_written = next(e for e in collection.entries if len(e.authors) == 2)
    for author in co_written.authors:
        assert co_written in collection.feed_entries(FeedRef("author", author.slug))
    science = collection.feed_entries(FeedRef("topic", "science"))
    assert science and all(e.article.path.startswith("science/") for e in science)


def test_equal_dates_are_ordered_by_id(tmp_path: Path) -> None:
    folder = tmp_path / "same-second"
    for name in ("b.txt", "a.txt", "c.txt"):
        write_article(folder, name, f"Story {name}")
        os.utime(folder / name, (1_700_000_000, 1_700_000_000))
    settings = load_settings({"articles_dir": str(folder)}, environ={})
    one = Publisher(settings, tmp_path / "l.sqlite3")
    one.refresh()
    ids = [e.id for e in one.collection.entries]
    assert ids == sorted(ids)
    assert len({e.published for e in one.collection.entries}) == 1
    one.close()


def test_rescan_with_nothing_changed_reads_nothing(publisher) -> None:
    report = publisher.refresh()
    assert report.read == 0 and report.changed is False
    assert report.listed == report.published


def test_spliced_entries_are_byte_identical_to_feedgen(publisher) -> None:
    """The fragment cache is an optimisation only: same bytes as a plain render (feedgen's
    Atom and RSS, JSON Feed's one serialisation), empty documents and archives included."""
    from feedsvc import documents
    from feedsvc.render import FragmentCache, render_feed

    fragments = FragmentCache(max_entries=8)  # small, so eviction happens too
    collection, site = publisher.collection, publisher.site
    compared = 0
    for ref in collection.feed_refs():
        docs = [documents.subscription_document(ref, collection, site, 4, ("https://hub.test/",)),
                documents.subscription_document(ref, collection, site, 4, (), limit=2)]
        docs += [documents.archive_document(ref, collection, site, 4, k) for k in range(1, 7)]
        for doc in filter(None, docs):
            for fmt in ("atom", "rss", "json"):
                base = "https://news.example.org/prefix"
                assert render_feed(doc, fmt, site, base, fragments) == render_feed(
                    doc, fmt, site, base), (ref, doc.path, fmt)
                compared += 1
    assert compared > 100 and fragments.hits > 0 and len(fragments) <= 8


def test_only_entries_without_a_cached_fragment_are_fetched_from_the_store(
        publisher, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed whose entries' fragments another document rendered already asks the store
    for no content; a format without fragments, or a cold cache, fetches them all."""
    fetched: list[int] = []
    real = publisher.store.prefetched

    def spy(articles):  # noqa: ANN001, ANN202
        articles = list(articles)
        fetched.append(len(articles))
        return real(articles)

    monkeypatch.setattr(publisher.store, "prefetched", spy)
    base = "https://news.example.org"
    site = publisher.feed(SITE_FEED, "atom", base)
    topic = next(r for r in publisher.collection.feed_refs() if r.kind == "topic")
    shown = len(publisher.collection.feed_entries(topic)[:publisher.settings.feed_size])
    assert fetched == [len(publisher.collection.entries[:publisher.settings.feed_size])]
    topical = publisher.feed(topic, "atom", base)
    assert fetched[-1] == 0 < shown  # all its entries are in the site feed's fragments
    publisher.feed(topic, "rss", base)
    assert fetched[-1] == shown  # no RSS fragment yet: each entry's content is needed
    assert site is not None and topical is not None and b"<content" in topical.body


def _snapshot(collection):
    return (
        collection.entries,
        list(collection.feed_refs()),
        {ref: collection.feed_entries(ref) for ref in collection.feed_refs()},
        {ref: collection.feed_version(ref) for ref in collection.feed_refs()},
        {ref: collection.feed_updated(ref) for ref in collection.feed_refs()},
        collection.updated,
        collection.topics,
        collection.authors,
        collection.by_slug,
        collection.version,
    )


def test_evolving_a_collection_equals_building_it_afresh(publisher) -> None:
    """The incremental path after an edit must agree with a full rebuild, exactly."""
    import random
    from dataclasses import replace

    from feedsvc.collection import Collection
    from feedsvc.model import TopicRef

    rng = random.Random(7)
    collection = publisher.collection
    pool = list(collection.entries)
    for step in range(40):
        current = list(collection.entries)
        removed = rng.sample(current, k=rng.randint(0, min(3, len(current))))
        added = []
        for victim in rng.sample(pool, k=rng.randint(0, 3)):
            added.append(replace(
                victim,
                slug=f"{victim.slug}-v{step}-{len(added)}",
                id=f"{victim.id}/v{step}/{len(added)}",
                topics=victim.topics[: rng.randint(0, len(victim.topics))]
                + (TopicRef(f"new-topic-{step % 4}", f"New {step % 4}", "front-matter"),),
            ))
        evolved = collection.evolve(removed, added)
        kept = [e for e in current if all(e is not r for r in removed)]
        assert _snapshot(evolved) == _snapshot(Collection(kept + added))
        collection = evolved


def test_evolved_newest_dates_and_versions_follow_removals_of_the_newest(publisher) -> None:
    """The incremental newest ``updated`` (Last-Modified's floor) and versions, when the
    entry holding the newest date goes, comes back older, or is outdated by another."""
    import random
    from dataclasses import replace
    from datetime import timedelta

    from feedsvc.collection import Collection, entry_version

    def dated(entry, days: int):
        moved = replace(entry, updated=entry.updated + timedelta(days=days, seconds=0.5))
        object.__setattr__(moved, "version", entry_version(moved))
        return moved

    rng = random.Random(11)
    collection = publisher.collection
    for step in range(30):
        current = list(collection.entries)
        newest = max(current, key=lambda e: e.updated)
        if step % 3 == 0:  # the newest goes, maybe coming back older
            removed = [newest]
            added = [dated(newest, -rng.randint(1, 900))] if step % 2 else []
        else:
            removed = rng.sample(current, k=rng.randint(0, 2))
            added = [dated(e, rng.randint(-30, 30)) for e in removed]
        evolved = collection.evolve(removed, added)
        fresh = Collection([e for e in current if all(e is not r for r in removed)] + added)
        assert _snapshot(evolved) == _snapshot(fresh), step
        assert evolved.updated == max(e.updated for e in fresh.entries)
        for ref in fresh.feed_refs():
            items = fresh.feed_entries(ref)
            assert evolved.feed_updated(ref) == (max(e.updated for e in items) if items else None)
        if removed or added:
            assert evolved.version != collection.version
        collection = evolved


def test_one_edit_rebuilds_only_what_it_touches(publisher, articles_dir) -> None:
    publisher.settle_seconds = 0
    before = publisher.collection
    seed = articles_dir / "000_116cfd26fe85501a.txt"
    seed.write_text(seed.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")
    time.sleep(0.01)
    report = publisher.refresh()
    after = publisher.collection
    assert report.read == 1
    untouched = FeedRef("topic", "china")
    assert after.feed_entries(untouched) is before.feed_entries(untouched)
    assert after.feed_version(FeedRef("topic", "nato")) != before.feed_version(
        FeedRef("topic", "nato"))
    assert sum(a is not b for a, b in zip(after.entries, before.entries, strict=True)) == 1


def test_first_load_records_in_short_transactions(tmp_path: Path, monkeypatch) -> None:
    """Workers starting together on an empty ledger take its write lock in turns:
    no transaction may cover the whole folder."""
    from feedsvc import sync as sync_module
    from feedsvc.ledger import Ledger

    folder = tmp_path / "many"
    for n in range(23):
        write_article(folder, f"{n:03}.txt", f"Story Number {n}")
    monkeypatch.setattr(sync_module, "BATCH", 5)
    sizes: list[int] = []
    original = Ledger.record

    def counting(self, sightings, present, now):  # noqa: ANN001, ANN202
        batch = list(sightings)
        sizes.append(len(batch))
        return original(self, batch, present, now)

    monkeypatch.setattr(Ledger, "record", counting)
    settings = load_settings({"articles_dir": str(folder)}, environ={})
    pub = Publisher(settings, tmp_path / "l.sqlite3")
    pub.refresh()
    assert sizes == [5, 5, 5, 5, 3]
    assert len(pub.collection.entries) == 23
    pub.close()


def test_render_cache_is_bounded_least_recently_used_first(publisher) -> None:
    base = "https://news.example.org"
    site = publisher.feed(SITE_FEED, "atom", base)
    size = len(site.body) + len(site.body) // 5
    publisher.clear_cache()
    publisher.cache.max_bytes = 3 * size  # room for about three such documents
    publisher.feed(SITE_FEED, "atom", base)
    renders = publisher.renders
    for fmt in ("rss", "json", "atom"):
        publisher.feed(SITE_FEED, fmt, base)  # atom is a hit and becomes most recent
    assert publisher.renders == renders + 2
    for slug in ("nato", "ukraine", "china", "eu"):
        publisher.feed(FeedRef("topic", slug), "atom", base)
    assert publisher.cache.bytes <= publisher.max_cache_bytes
    renders = publisher.renders
    publisher.feed(SITE_FEED, "rss", base)  # evicted long ago: rendered again
    assert publisher.renders == renders + 1


def test_an_author_is_named_as_the_newest_entry_with_a_bio_names_them(publisher) -> None:
    """Name and bio from the newest entry that gives a bio, else the newest entry's."""
    from dataclasses import replace
    from types import SimpleNamespace

    from feedsvc.collection import Collection
    from feedsvc.model import Author

    base = list(publisher.collection.entries[:4])  # newest first

    def by(entry, name: str, bio: str | None):  # only the byline matters here
        return replace(entry, article=SimpleNamespace(authors=(Author(name, "pat", bio),)))

    cases = [
        ([("Pat N", None), ("Pat B", "bio b"), ("Pat C", "bio c"), ("Pat D", None)], "Pat B"),
        ([("Pat N", "bio n"), ("Pat B", "bio b"), ("Pat C", None), ("Pat D", None)], "Pat N"),
        ([("Pat N", None), ("Pat B", None), ("Pat C", None), ("Pat D", "bio d")], "Pat D"),
        ([("Pat N", None), ("Pat B", None), ("Pat C", None), ("Pat D", None)], "Pat N"),
    ]
    for names, expected in cases:
        entries = [by(e, name, bio) for e, (name, bio) in zip(base, names, strict=True)]
        info = Collection(entries).author("pat")
        assert info is not None and info.author.name == expected and info.count == 4
        assert info.author.bio == dict(names)[expected]
