"""Tests of feedsvc.ledger on real SQLite files, including several processes at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import tempfile
import threading
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedsvc import ledger as ledger_module
from feedsvc.errors import LedgerError
from feedsvc.ledger import SCHEMA_VERSION, Ledger, Sighting
from feedsvc.model import Stamp
from feedsvc.text import slugify
from tests.unprivileged import run_unprivileged

AUTH = "news.example.org"
PAST = 1_700_000_000  # 2023-11-14T22:13:20Z
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
LATER = NOW + 86_400


def sight(
    path: str,
    content_hash: str = "h1",
    mtime: float = PAST,
    slug: str = "ukraine-drops-nato-bid",
    id_hint: str | None = None,
) -> Sighting:
    return Sighting(path, content_hash, mtime, slug, id_hint)


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite"


@pytest.fixture
def ledger(db: Path) -> Iterator[Ledger]:
    with Ledger(db, AUTH) as opened:
        yield opened


# --- first sight ------------------------------------------------------------------


def test_first_sight_uses_past_mtime(ledger: Ledger) -> None:
    stamps = ledger.record([sight("a.txt", mtime=PAST + 0.9)], {"a.txt"}, NOW)
    assert stamps == {
        "a.txt": Stamp(
            id="tag:news.example.org,2023-11-14:/articles/ukraine-drops-nato-bid",
            slug="ukraine-drops-nato-bid",
            first_seen=utc(PAST),
            changed=None,
            content_hash="h1",
        )
    }
    assert stamps["a.txt"].first_seen.tzinfo is UTC


@pytest.mark.parametrize("mtime", [NOW + 3600, NOW, float("nan"), 0.0, 1.0, -5.0])
def test_first_sight_without_credible_mtime_uses_now(ledger: Ledger, mtime: float) -> None:
    stamp = ledger.record([sight("a.txt", mtime=mtime)], {"a.txt"}, NOW + 0.5)["a.txt"]
    assert stamp.first_seen == utc(NOW)
    assert stamp.id == "tag:news.example.org,2027-01-15:/articles/ukraine-drops-nato-bid"


def test_returned_stamps_are_what_is_stored(ledger: Ledger) -> None:
    returned = ledger.record(
        [sight("a.txt"), sight("b.txt", "h2", slug="other")], {"a.txt", "b.txt"}, NOW
    )
    assert ledger.stamps() == returned
    assert ledger.record([], {"a.txt"}, NOW) == {}


def test_parent_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "x" / "y" / "ledger.db"
    with Ledger(path, AUTH):
        pass
    assert path.is_file()


def test_wal_and_schema_version(db: Path) -> None:
    Ledger(db, AUTH).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
    conn.close()


# --- permanence ---------------------------------------------------------------------


def test_restart_returns_identical_stamps(db: Path) -> None:
    with Ledger(db, AUTH) as first:
        before = first.record(
            [sight("a.txt"), sight("b.txt", "h2", slug="b", mtime=NOW + 99)],
            {"a.txt", "b.txt"},
            NOW,
        )
    # A fresh checkout after a redeploy: new mtimes, a later clock, same content.
    with Ledger(db, AUTH) as second:
        assert second.stamps() == before
        again = second.record(
            [sight("a.txt", mtime=LATER - 5), sight("b.txt", "h2", slug="b", mtime=LATER - 5)],
            {"a.txt", "b.txt"},
            LATER,
        )
    assert again == before


def test_touch_changes_nothing(ledger: Ledger) -> None:
    before = ledger.record([sight("a.txt")], {"a.txt"}, NOW)["a.txt"]
    after = ledger.record([sight("a.txt", mtime=LATER - 1)], {"a.txt"}, LATER)["a.txt"]
    assert after == before
    assert after.changed is None


def test_edit_changes_only_changed_and_hash(ledger: Ledger) -> None:
    before = ledger.record([sight("a.txt")], {"a.txt"}, NOW)["a.txt"]
    edited = ledger.record([sight("a.txt", "h2", slug="new-title")], {"a.txt"}, LATER)["a.txt"]
    assert edited == Stamp(before.id, before.slug, before.first_seen, utc(LATER), "h2")
    # Seeing the edited version again (restart, another worker) is not a new change.
    again = ledger.record([sight("a.txt", "h2")], {"a.txt"}, LATER + 500)["a.txt"]
    assert again == edited
    # A second edit moves `changed` on.
    third = ledger.record([sight("a.txt", "h3")], {"a.txt"}, LATER + 900)["a.txt"]
    assert (third.changed, third.content_hash, third.id) == (utc(LATER + 900), "h3", before.id)


def test_changed_never_goes_backwards(ledger: Ledger) -> None:
    ledger.record([sight("a.txt")], {"a.txt"}, NOW)
    ledger.record([sight("a.txt", "h2")], {"a.txt"}, LATER)
    # Another worker whose clock is behind records a further edit.
    stamp = ledger.record([sight("a.txt", "h3")], {"a.txt"}, NOW + 10)["a.txt"]
    assert stamp.changed == utc(LATER)
    assert stamp.content_hash == "h3"


# --- slugs and ids --------------------------------------------------------------------


def test_slug_collision_gets_suffixes(ledger: Ledger) -> None:
    got = ledger.record(
        [sight("a.txt", "h1", slug="same"), sight("b.txt", "h2", slug="same")],
        {"a.txt", "b.txt", "c.txt"},
        NOW,
    )
    got |= ledger.record([sight("c.txt", "h3", slug="same")], {"a.txt", "b.txt", "c.txt"}, NOW)
    assert [got[p].slug for p in ("a.txt", "b.txt", "c.txt")] == ["same", "same-2", "same-3"]
    assert len({s.id for s in got.values()}) == 3
    assert got["b.txt"].id == "tag:news.example.org,2023-11-14:/articles/same-2"


def test_slug_suffix_skips_slugs_already_taken(ledger: Ledger) -> None:
    ledger.record([sight("x.txt", "h0", slug="same-2")], {"x.txt"}, NOW)
    ledger.record([sight("a.txt", "h1", slug="same")], {"a.txt"}, NOW)
    stamp = ledger.record([sight("b.txt", "h2", slug="same")], {"b.txt"}, NOW)["b.txt"]
    assert stamp.slug == "same-3"


def test_slug_suffix_is_the_first_free_number_past_many_taken(ledger: Ledger) -> None:
    """More numbered slugs taken than one probe covers, with a gap after them."""
    taken = ["same", *(f"same-{n}" for n in range(2, 41)), "same-42", "same-x", "samey"]
    ledger.record([sight(f"{i}.txt", f"h{i}", slug=slug) for i, slug in enumerate(taken)],
                  {f"{i}.txt" for i in range(len(taken))}, NOW)
    got = ledger.record([sight("new.txt", "hn", slug="same"), sight("more.txt", "hm", slug="same")],
                        {"new.txt", "more.txt"}, NOW)
    assert (got["new.txt"].slug, got["more.txt"].slug) == ("same-41", "same-43")


@pytest.mark.parametrize(
    ("hint", "expected"),
    [("", "article"), ("!!!", "article"), ("Hello World!", "hello-world"), ("Zürich", "zurich")],
)
def test_slug_hint_is_normalised(ledger: Ledger, hint: str, expected: str) -> None:
    assert ledger.record([sight("a.txt", slug=hint)], {"a.txt"}, NOW)["a.txt"].slug == expected


def test_empty_slug_hints_get_article_suffixes(ledger: Ledger) -> None:
    got = ledger.record(
        [sight("a.txt", "h1", slug=""), sight("b.txt", "h2", slug="")], {"a.txt", "b.txt"}, NOW
    )
    assert (got["a.txt"].slug, got["b.txt"].slug) == ("article", "article-2")


def test_id_hint_honoured_unless_taken(ledger: Ledger) -> None:
    hint = "tag:news.example.org,2026:ukraine-nato"
    got = ledger.record(
        [
            sight("a.txt", "h1", id_hint=hint),
            sight("b.txt", "h2", slug="b", id_hint=hint),  # duplicate: cannot have it
            sight("c.txt", "h3", slug="c", id_hint="   "),
        ],
        {"a.txt", "b.txt", "c.txt"},
        NOW,
    )
    assert got["a.txt"].id == hint
    assert got["b.txt"].id == "tag:news.example.org,2023-11-14:/articles/b"
    assert got["c.txt"].id == "tag:news.example.org,2023-11-14:/articles/c"


def test_id_hint_is_ignored_after_first_sight(ledger: Ledger) -> None:
    first = ledger.record([sight("a.txt")], {"a.txt"}, NOW)["a.txt"]
    later = ledger.record([sight("a.txt", "h2", id_hint="urn:x:new")], {"a.txt"}, LATER)
    assert later["a.txt"].id == first.id


def test_minted_tag_taken_by_a_hint_gets_a_suffix(ledger: Ledger) -> None:
    tag = "tag:news.example.org,2023-11-14:/articles/b"
    got = ledger.record(
        [sight("a.txt", "h1", slug="a", id_hint=tag), sight("b.txt", "h2", slug="b")],
        {"a.txt", "b.txt"},
        NOW,
    )
    assert got["a.txt"].id == tag
    assert got["b.txt"].id == tag + "/2"


def test_authority_only_applies_to_new_ids(db: Path) -> None:
    with Ledger(db, "localhost") as first:
        old = first.record([sight("a.txt")], {"a.txt"}, NOW)["a.txt"]
    assert old.id.startswith("tag:localhost,")
    with Ledger(db, "News.Example.org") as second:
        got = second.record([sight("a.txt"), sight("b.txt", "h2", slug="b")], {"a.txt"}, NOW)
    assert got["a.txt"].id == old.id
    assert got["b.txt"].id.startswith("tag:news.example.org,")


@pytest.mark.parametrize(
    "good", ["localhost", "127.0.0.1", "feed_svc", "news.example.org", "editor@example.org"]
)
def test_valid_authorities(db: Path, good: str) -> None:
    with Ledger(db, good) as led:
        stamp = led.record([sight("a.txt")], {"a.txt"}, NOW)["a.txt"]
    assert stamp.id == f"tag:{good},2023-11-14:/articles/ukraine-drops-nato-bid"


@pytest.mark.parametrize(
    "bad", ["localhost:8000", "https://x.org", "", "a b", "x.org/path", "::1", "a,b", "-x.org"]
)
def test_invalid_authority_is_refused(db: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        Ledger(db, bad)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=12))
def test_slugs_and_ids_always_unique(hints: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, Ledger(Path(tmp) / "l.db", AUTH) as led:
        paths = [f"{i}.txt" for i in range(len(hints))]
        got = led.record(
            [sight(p, f"h{i}", slug=h) for i, (p, h) in enumerate(zip(paths, hints, strict=True))],
            set(paths),
            NOW,
        )
        assert len({s.slug for s in got.values()}) == len(hints)
        assert len({s.id for s in got.values()}) == len(hints)
        for p, h in zip(paths, hints, strict=True):
            base = slugify(h) or "article"
            slug = got[p].slug
            assert slug == base or (slug.startswith(base + "-") and slug[len(base) + 1 :].isdigit())


# --- deletion and renames ----------------------------------------------------------------


def test_deleted_then_restored_keeps_id_and_dates(ledger: Ledger) -> None:
    first = ledger.record([sight("a.txt")], {"a.txt"}, NOW)["a.txt"]
    # a.txt deleted: later rounds do not see it
    ledger.record([sight("b.txt", "h2", slug="b")], {"b.txt"}, NOW + 10)
    assert ledger.stamps()["a.txt"] == first  # the row is kept
    # a new article wanting the same slug cannot take it
    other = ledger.record([sight("c.txt", "h3")], {"b.txt", "c.txt"}, NOW + 20)["c.txt"]
    assert other.slug == "ukraine-drops-nato-bid-2"
    # it comes back (fresh mtime)
    back = ledger.record([sight("a.txt", mtime=LATER - 1)], {"a.txt", "b.txt"}, LATER)["a.txt"]
    assert back == first


def test_rename_keeps_id_slug_and_dates(ledger: Ledger) -> None:
    ledger.record([sight("old/a.txt")], {"old/a.txt"}, NOW)
    edited = ledger.record([sight("old/a.txt", "h2")], {"old/a.txt"}, NOW + 100)["old/a.txt"]
    moved = ledger.record(
        [sight("new/b.txt", "h2", mtime=LATER - 1, slug="another-title", id_hint="urn:x")],
        {"new/b.txt"},
        LATER,
    )["new/b.txt"]
    assert moved == edited
    stored = ledger.stamps()
    assert set(stored) == {"new/b.txt"}
    assert stored["new/b.txt"] == edited


def test_copy_is_a_new_article_not_a_rename(ledger: Ledger) -> None:
    first = ledger.record([sight("a.txt")], {"a.txt"}, NOW)["a.txt"]
    copy = ledger.record([sight("copy.txt", mtime=LATER - 1)], {"a.txt", "copy.txt"}, LATER)
    assert copy["copy.txt"].id != first.id
    assert copy["copy.txt"].slug == "ukraine-drops-nato-bid-2"
    assert ledger.stamps()["a.txt"] == first


def test_present_paths_may_be_any_collection(ledger: Ledger) -> None:
    ledger.record([sight("a.txt")], ["a.txt"], NOW)
    got = ledger.record([sight("b.txt")], ["a.txt", "b.txt"], NOW)  # a list: a copy
    assert got["b.txt"].slug.endswith("-2")
    assert set(ledger.stamps()) == {"a.txt", "b.txt"}


# --- concurrency ---------------------------------------------------------------------------


def _race_sightings() -> list[Sighting]:
    out = []
    for i in range(60):
        mtime = NOW + 10**6 if i % 2 == 0 else PAST + i  # even: first_seen = the writer's now
        slug = "same" if i % 3 == 0 else f"s{i}"  # collisions: slug depends on insert order
        out.append(Sighting(f"f{i:03}.txt", f"h{i}", mtime, slug, None))
    return out


def _plain(stamp: Stamp) -> tuple[Any, ...]:
    return (stamp.id, stamp.slug, stamp.first_seen, stamp.changed, stamp.content_hash)


def _concurrent_worker(db: str, reverse: bool, now: float, barrier: Any, queue: Any) -> None:
    try:
        led = Ledger(Path(db), AUTH)
        sightings = _race_sightings()
        present = {s.path for s in sightings}
        edits = [
            Sighting(s.path, s.content_hash + "-edit", s.mtime, "x", None) for s in sightings[::3]
        ]
        if reverse:
            sightings.reverse()
            edits.reverse()
        phases: list[dict[str, tuple[Any, ...]]] = []
        for batch, at in ((sightings, now), (edits, now + 50)):
            barrier.wait(timeout=60)
            got: dict[str, Stamp] = {}
            for s in batch:  # one transaction each, so the two processes interleave
                got.update(led.record([s], present, at))
            phases.append({p: _plain(stamp) for p, stamp in got.items()})
        led.close()
        queue.put(("ok", phases))
    except BaseException:
        barrier.abort()  # release the other process instead of leaving it waiting
        queue.put(("error", traceback.format_exc()))


def test_two_processes_recording_concurrently_agree(db: Path) -> None:
    Ledger(db, AUTH).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_worker, args=(str(db), False, NOW, barrier, queue)),
        ctx.Process(target=_concurrent_worker, args=(str(db), True, NOW + 5000, barrier, queue)),
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    for kind, value in results:
        assert kind == "ok", value
    (_, (inserted_one, edited_one)), (_, (inserted_two, edited_two)) = results
    # Each phase: both processes returned exactly the same stamps ...
    assert inserted_one == inserted_two
    assert edited_one == edited_two
    assert len(inserted_one) == 60 and len(edited_one) == 20
    # ... and they are what the database holds.
    with Ledger(db, AUTH) as led:
        stored = {p: _plain(s) for p, s in led.stamps().items()}
    assert stored == inserted_one | edited_one
    assert len({v[1] for v in stored.values()}) == 60  # slugs unique
    for path, (id_, slug, first_seen, changed, content_hash) in edited_one.items():
        assert inserted_one[path][:3] == (id_, slug, first_seen)  # identity kept
        # whoever edited first; never before first_seen (the other clock may be ahead)
        assert changed in (utc(NOW + 50), utc(NOW + 5050), first_seen)
        assert changed >= first_seen
        assert content_hash.endswith("-edit")


def test_threads_sharing_one_ledger(ledger: Ledger) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                path = f"t{n}/{i}.txt"
                ledger.record([sight(path, f"{n}-{i}", slug="same")], {path}, NOW)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stamps = ledger.stamps()
    assert len(stamps) == 100
    assert len({s.slug for s in stamps.values()}) == 100


# --- failures ------------------------------------------------------------------------------


def test_corrupt_file_fails_at_construction(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a SQLite file at all\n" * 200)
    with pytest.raises(LedgerError) as info:
        Ledger(db, AUTH)
    assert info.value.path == str(db)
    assert info.value.reason.startswith("file is not a database")


def test_damaged_page_fails_at_construction(db: Path) -> None:
    # Damage only the leaf pages of the articles table, which opening the
    # ledger does not otherwise read: only the integrity check can notice.
    with Ledger(db, AUTH) as led:
        led.record(
            [sight(f"{i}.txt", f"h{i}" * 40, slug=f"slug-{i}" * 5) for i in range(400)],
            {f"{i}.txt" for i in range(400)},
            NOW,
        )
    conn = sqlite3.connect(db)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'articles' AND pagetype = 'leaf'"
            )
        ]
    except sqlite3.OperationalError as exc:
        pytest.skip(f"this SQLite has no dbstat table to find the pages: {exc}")
    finally:
        conn.close()
    assert len(leaves) > 5
    with db.open("r+b") as f:
        for pageno in leaves:
            f.seek((pageno - 1) * page_size)
            f.write(b"\xa5" * 16)
    with pytest.raises(LedgerError) as info:
        Ledger(db, AUTH)
    assert info.value.reason.startswith("database disk image is malformed")


def test_empty_file_is_a_fresh_ledger(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.touch()
    with Ledger(db, AUTH) as led:
        assert led.stamps() == {}
        led.record([sight("a.txt")], {"a.txt"}, NOW)
        assert set(led.stamps()) == {"a.txt"}


def test_foreign_sqlite_database_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE articles (title TEXT, body TEXT)")
    conn.close()
    with pytest.raises(LedgerError, match="not a feedsvc ledger.*first_seen"):
        Ledger(db, AUTH)


def test_newer_schema_is_refused(db: Path) -> None:
    Ledger(db, AUTH).close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,)
        )
    conn.close()
    with pytest.raises(LedgerError, match="newer feedsvc"):
        Ledger(db, AUTH)


@pytest.mark.parametrize("where", ["/proc/feedsvc-test/ledger.db", "/proc/feedsvc-ledger.db"])
def test_unwritable_location(where: str) -> None:
    with pytest.raises(LedgerError) as info:
        Ledger(Path(where), AUTH)
    assert info.value.path == where


def test_ledger_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot open"):
        Ledger(tmp_path, AUTH)


def test_locked_ledger_gives_ledger_error(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "BUSY_TIMEOUT_MS", 200)
    led = Ledger(db, AUTH)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process mid-transaction, forever
    try:
        with pytest.raises(LedgerError, match="database is locked"):
            led.record([sight("a.txt")], {"a.txt"}, NOW)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # once released, the ledger works and the failed round left nothing behind
    assert led.stamps() == {}
    assert set(led.record([sight("a.txt")], {"a.txt"}, NOW)) == {"a.txt"}
    led.close()


def test_full_disk_rolls_back_the_whole_round(ledger: Ledger) -> None:
    ledger.record([sight("keep.txt", "k", slug="keep")], {"keep.txt"}, NOW)
    before = ledger.stamps()
    assert ledger._conn is not None
    pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
    ledger._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # a nearly full disk
    many = [sight(f"{i}.txt", f"h{i}" * 50, slug=f"s{i}" * 10) for i in range(500)]
    with pytest.raises(LedgerError) as info:
        ledger.record(many, {s.path for s in many}, NOW)
    assert info.value.reason == "disk is full"
    assert ledger.stamps() == before


def test_closed_ledger(db: Path) -> None:
    led = Ledger(db, AUTH)
    led.close()
    led.close()  # twice is fine
    with pytest.raises(LedgerError, match="closed"):
        led.stamps()
    with pytest.raises(LedgerError, match="closed"):
        led.record([sight("a.txt")], {"a.txt"}, NOW)


# --- read-only: permission bits do not bite for root, so drop to nobody -------------------


def _open_ledger(path: str) -> tuple[str, str] | dict[str, tuple[str, str]]:
    try:
        with Ledger(Path(path), AUTH) as led:
            return {p: (s.id, s.slug) for p, s in led.stamps().items()}
    except LedgerError as exc:
        return (exc.path, exc.reason)


@pytest.mark.parametrize("folder_writable", [False, True])
def test_read_only_ledger_fails_at_construction(world_dir: Path, folder_writable: bool) -> None:
    db = world_dir / "ledger.db"
    with Ledger(db, AUTH) as led:
        led.record([sight("a.txt")], {"a.txt"}, NOW)
    db.chmod(0o444)
    world_dir.chmod(0o777 if folder_writable else 0o555)
    got = run_unprivileged(_open_ledger, str(db))
    assert isinstance(got, tuple), "a read-only ledger must not open"
    assert got[0] == str(db)
    assert got[1].startswith("ledger is read-only")


def test_unprivileged_user_can_use_a_writable_ledger(world_dir: Path) -> None:
    # The control for the test above: the same steps work when writable.
    db = world_dir / "ledger.db"
    with Ledger(db, AUTH) as led:
        led.record([sight("a.txt")], {"a.txt"}, NOW)
    db.chmod(0o666)
    world_dir.chmod(0o777)
    got = run_unprivileged(_open_ledger, str(db))
    assert got == {
        "a.txt": (
            "tag:news.example.org,2023-11-14:/articles/ukraine-drops-nato-bid",
            "ukraine-drops-nato-bid",
        )
    }


def test_batch_stamping_equals_one_at_a_time(tmp_path: Path) -> None:
    """record_all's up-front reads give exactly what record_one each gives, on hard batches:
    slugs and tags colliding inside the batch and with stored rows, ids hinted as tags,
    texts of gone files (moved twice over), renames, edits of stored files."""
    import random
    import shutil

    from feedsvc import stamping
    from feedsvc.sql import sqlite_tx

    rng = random.Random(9)
    for round_ in range(12):
        first = tmp_path / f"first-{round_}.sqlite"
        with Ledger(first, AUTH) as ledger:
            ledger.record([sight(f"old{i}.txt", f"h{rng.randrange(6)}", mtime=PAST + i * 86_400,
                                 slug=rng.choice(["same", "same-2", "other", ""]),
                                 id_hint=rng.choice([None, None, f"tag:{AUTH},2023-11-14:"
                                                     "/articles/same"]))
                           for i in range(rng.randrange(1, 12))],
                          {f"old{i}.txt" for i in range(12)}, NOW)
        present = {f"old{i}.txt" for i in range(12) if rng.random() < 0.4}
        batch = []
        for i in range(rng.randrange(1, 30)):
            path = rng.choice([f"new{i}.txt", f"old{i}.txt"])
            present.add(path)
            batch.append(Sighting(
                path, f"h{rng.randrange(8)}", rng.choice([PAST, PAST + 86_400, NOW + 5, 0.0]),
                rng.choice(["same", "same-2", "same-3", "other", "", "Same!"]),
                rng.choice([None, None, "", f"tag:{AUTH},2023-11-14:/articles/same", "x"]),
                rng.choice([None, None, f"old{rng.randrange(12)}.txt"])))
        results = []
        for one_at_a_time in (False, True):
            copy = tmp_path / f"copy-{round_}-{one_at_a_time}.sqlite"
            shutil.copy(first, copy)
            conn = sqlite3.connect(copy, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            tx = sqlite_tx(conn)
            if one_at_a_time:
                seen = {s.path for s in batch}
                got = {s.path: stamping.record_one(tx, s, present, seen, LATER, AUTH)
                       for s in batch}
            else:
                got = stamping.record_all(tx, batch, present, LATER, AUTH)
            conn.execute("COMMIT")
            rows = conn.execute("SELECT * FROM articles ORDER BY path").fetchall()
            conn.close()
            results.append((got, rows))
        assert results[0] == results[1], f"round {round_}"
