"""Schema 2 of the ledger: migration from schema 1, feed-version moments, checkpoints,
and back-ups that restore. Real SQLite files throughout."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from feedsvc.errors import LedgerError
from feedsvc.ledger import SCHEMA_VERSION, VERSIONS_KEPT, Ledger, Sighting, backup, restore

AUTH = "news.example.org"
NOW = 1_800_000_000

#: The CREATE statements of the ledger as main wrote it (schema 1, no user_version).
MAIN_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS articles (
        path TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, slug TEXT NOT NULL UNIQUE,
        first_seen INTEGER NOT NULL, changed INTEGER, hash TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS articles_hash ON articles(hash)",
    "INSERT INTO meta (key, value) VALUES ('schema_version', '1')",
)


def _rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT path, id, slug, first_seen, changed, hash FROM articles "
                            "ORDER BY path").fetchall()
    finally:
        conn.close()


def _fill(ledger: Ledger, n: int, prefix: str = "a") -> None:
    ledger.record([Sighting(f"{prefix}{i}.txt", f"{prefix}h{i}", 1_700_000_000 + i,
                            f"{prefix} story {i}", None) for i in range(n)],
                  {f"{prefix}{i}.txt" for i in range(n)}, NOW)


def test_a_schema_1_ledger_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(db)
    for statement in MAIN_SCHEMA:
        conn.execute(statement)
    rows = [("a.txt", "tag:x,2023-11-14:/articles/a", "a", 1_700_000_000, None, "h1"),
            ("b.txt", "urn:custom", "b", 1_700_000_100, 1_700_000_500, "h2"),
            ("gone.txt", "tag:x,2023-11-14:/articles/gone", "gone", 1_700_000_200, None, "h3")]
    conn.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    with Ledger(db, AUTH) as ledger:
        assert ledger.moments({"site": ("v1", 0)}, NOW) == {"site": NOW}
        stamps = ledger.stamps()
    assert _rows(db) == sorted(rows)
    assert {p: (s.id, s.slug, int(s.first_seen.timestamp()),
                s.changed and int(s.changed.timestamp())) for p, s in stamps.items()} == {
        r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    conn.close()


def test_a_ledger_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    Ledger(db, AUTH).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match=r"newer feedsvc \(schema version 4; this one "
                       r"understands up to 3\)"):
        Ledger(db, AUTH)


def test_moments_are_shared_move_forward_and_never_go_back(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db, AUTH) as one, Ledger(db, AUTH) as two:
        a = one.moments({"site": ("A", NOW - 100)}, NOW)["site"]
        assert a == NOW
        # Another worker, its clock an hour ahead, sees the same version: the stored moment.
        assert two.moments({"site": ("A", NOW - 100)}, NOW + 3600) == {"site": a}
        # A new version in the same second is still later.
        b = two.moments({"site": ("B", 0)}, NOW)["site"]
        assert b == a + 1
        # An entry dated in the future sets the floor; what follows goes on from there.
        c = one.moments({"site": ("C", NOW + 10_000)}, NOW + 2)["site"]
        assert c == NOW + 10_000
        # Going back to an earlier version (an edit undone) moves forward, not back to a.
        again = one.moments({"site": ("A", NOW - 100)}, NOW + 3)["site"]
        assert again == c + 1
        assert two.moments({"site": ("A", NOW - 100)}, NOW + 50) == {"site": again}
        # A worker's clock far behind changes nothing.
        assert two.moments({"site": ("D", 0)}, NOW - 86_400)["site"] == again + 1
        # Old versions are pruned: at most VERSIONS_KEPT per document.
        for i in range(3 * VERSIONS_KEPT):
            one.moments({"topic:x": (f"v{i}", 0), "site": ("D", 0)}, NOW)
    conn = sqlite3.connect(db)
    counts = dict(conn.execute("SELECT doc, count(*) FROM feed_versions GROUP BY doc"))
    conn.close()
    assert counts["topic:x"] == VERSIONS_KEPT and counts["site"] <= VERSIONS_KEPT


def test_closing_checkpoints_so_the_main_file_alone_is_a_copy(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    other = Ledger(db, AUTH)  # another worker keeps it open: SQLite would keep the WAL
    ledger = Ledger(db, AUTH)
    _fill(ledger, 40)
    assert Path(f"{db}-wal").stat().st_size > 0
    plain = tmp_path / "plain-before.sqlite3"
    shutil.copyfile(db, plain)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _rows(plain)  # the repro: everything is still in the WAL
    ledger.close()
    assert Path(f"{db}-wal").stat().st_size == 0
    shutil.copyfile(db, tmp_path / "plain.sqlite3")
    assert len(_rows(tmp_path / "plain.sqlite3")) == 40
    # And periodically, while serving: due only after a write and the interval.
    _fill(other, 5, prefix="b")
    assert other.checkpoint_if_due(interval=3600) is False
    assert other.checkpoint_if_due(interval=0) is True
    assert Path(f"{db}-wal").stat().st_size == 0
    assert other.checkpoint_if_due(interval=0) is False, "nothing written since"
    other.close()


def test_backup_while_open_then_restore_over_a_stale_wal(tmp_path: Path) -> None:
    """The issue's repro: a .backup copied over the ledger with the old -wal beside it."""
    db = tmp_path / "ledger.sqlite3"
    ledger = Ledger(db, AUTH)
    _fill(ledger, 39)
    ledger.moments({"site": ("A", 0)}, NOW)
    copy = backup(db, tmp_path / "ledger.backup")  # while it is open
    assert (copy.articles, copy.versions, copy.schema) == (39, 1, SCHEMA_VERSION)
    assert not Path(f"{tmp_path / 'ledger.backup'}-wal").exists()
    expected = _rows(tmp_path / "ledger.backup")
    assert expected == _rows(db) and len(expected) == 39
    # Refused while the ledger is open here (a service, a build).
    with pytest.raises(LedgerError, match="in use by a running feedsvc"):
        restore(tmp_path / "ledger.backup", db)
    # Three more rows, left in a WAL that outlives the process (a crash, a plain copy).
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.executemany("INSERT INTO articles VALUES (?, ?, ?, 1, NULL, ?)",
                     [(f"x{i}.txt", f"urn:x{i}", f"x{i}", f"xh{i}") for i in range(3)])
    conn.commit()
    stale = Path(f"{db}-wal").read_bytes()
    conn.close()
    ledger.close()
    Path(f"{db}-wal").write_bytes(stale)
    assert len(_rows(db)) == 42, "SQLite replays the stale WAL"
    Path(f"{db}-wal").write_bytes(stale)
    restored = restore(tmp_path / "ledger.backup", db)
    assert (restored.articles, restored.versions) == (39, 1)
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    assert _rows(db) == expected
    with Ledger(db, AUTH) as reopened:
        assert len(reopened.stamps()) == 39
        assert reopened.moments({"site": ("A", 0)}, NOW + 99) == {"site": NOW}


def test_restore_refuses_what_is_not_a_whole_back_up(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db, AUTH) as ledger:
        _fill(ledger, 3)
    before = _rows(db)
    junk = tmp_path / "junk.backup"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a usable back-up"):
        restore(junk, db)
    foreign = tmp_path / "foreign.backup"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="not a feedsvc ledger"):
        restore(foreign, db)
    newer = tmp_path / "newer.backup"
    backup(db, newer)
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="newer feedsvc"):
        restore(newer, db)
    # A plain copy of a live ledger with its WAL beside it is not the whole copy.
    live = Ledger(db, AUTH)
    _fill(live, 2, prefix="w")
    shutil.copyfile(db, tmp_path / "plain.backup")
    shutil.copyfile(f"{db}-wal", tmp_path / "plain.backup-wal")
    live.close()
    with pytest.raises(LedgerError, match="non-empty plain.backup-wal"):
        restore(tmp_path / "plain.backup", db)
    assert len(_rows(db)) == len(before) + 2
    assert os.path.exists(db)


def test_restore_as_root_keeps_the_service_user_as_owner(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db, AUTH) as ledger:
        _fill(ledger, 2)
    backup(db, tmp_path / "copy.sqlite3")
    os.chown(db, 65534, 65534)
    os.chmod(db, 0o640)
    restore(tmp_path / "copy.sqlite3", db)
    st = os.stat(db)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o640)


def test_the_reload_thread_checkpoints_after_changes(make_app, articles_dir: Path,
                                                     monkeypatch) -> None:
    """While serving, the WAL is folded into the main file without any restart."""
    from feedsvc import ledger as ledger_module
    from tests.conftest import write_article

    monkeypatch.setattr(ledger_module, "CHECKPOINT_INTERVAL", 0.0)
    app = make_app(articles_dir, reload_interval=0.2)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    db = publisher.ledger.path
    keep_open = Ledger(db, AUTH)  # another worker: SQLite alone would keep the WAL
    try:
        write_article(articles_dir, "checkpointed.txt", "A Story Checkpointed")
        deadline = time.monotonic() + 10
        while True:
            shutil.copyfile(db, db.with_name("plain.sqlite3"))
            try:
                paths = [r[0] for r in _rows(db.with_name("plain.sqlite3"))]
            except sqlite3.OperationalError:
                paths = []
            if "checkpointed.txt" in paths:
                break
            assert time.monotonic() < deadline, "the main file never got the new row"
            time.sleep(0.1)
    finally:
        app.extensions["feedsvc.reloader"].stop()
        keep_open.close()
        publisher.close()
