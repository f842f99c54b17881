"""The portable SQL layer, on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from feedsvc.sql import ComponentSchema, DatabaseURL, SchemaTooNew, open_database
from tests.pg_harness import PASSWORD


def _notes_v1(tx) -> None:
    tx.execute(f"CREATE TABLE notes (id {tx.serial_key}, name TEXT UNIQUE NOT NULL,"
               " hits BIGINT NOT NULL, blob BYTEA, score DOUBLE PRECISION)")


NOTES = ComponentSchema("notes", (_notes_v1,))
NOTES_V2 = ComponentSchema("notes", (_notes_v1, "ALTER TABLE notes ADD COLUMN extra TEXT"))


def test_schema_upserts_and_returning_work_alike(db_url: str) -> None:
    db = open_database(db_url)
    try:
        assert NOTES.ensure(db) == 0
        assert NOTES.ensure(db) == 1  # already there: nothing redone
        upsert = ("INSERT INTO notes (name, hits, blob, score) VALUES (?, 1, ?, ?) "
                  "ON CONFLICT (name) DO UPDATE SET hits = notes.hits + 1 RETURNING id, hits")
        with db.transaction() as tx:
            first = tx.one(upsert, ("a", b"\x00\xff", 0.5))
            again = tx.one(upsert, ("a", b"\x00\xff", 0.5))
            tx.executemany("INSERT INTO notes (name, hits) VALUES (?, ?)", [("b", 7), ("c", 9)])
        assert first[1] == 1 and again == (first[0], 2)
        with db.transaction() as tx:
            rows = tx.all("SELECT name, hits, blob, score FROM notes ORDER BY name")
        assert [(r[0], r[1], bytes(r[2]) if r[2] is not None else None, r[3]) for r in rows] == [
            ("a", 2, b"\x00\xff", 0.5), ("b", 7, None, None), ("c", 9, None, None)]
        # An upgrade keeps the rows; the version is recorded.
        assert NOTES_V2.ensure(db) == 1
        with db.transaction() as tx:
            assert tx.one("SELECT count(*), max(extra) FROM notes") == (3, None)
    finally:
        db.close()


def test_a_failed_transaction_leaves_nothing(db_url: str) -> None:
    db = open_database(db_url)
    try:
        NOTES.ensure(db)
        with pytest.raises(RuntimeError), db.transaction() as tx:
            tx.execute("INSERT INTO notes (name, hits) VALUES (?, ?)", ("x", 1))
            raise RuntimeError("boom")
        with db.transaction() as tx:
            assert tx.one("SELECT count(*) FROM notes") == (0,)
    finally:
        db.close()


def test_tables_from_a_newer_release_are_refused(db_url: str) -> None:
    db = open_database(db_url)
    try:
        NOTES_V2.ensure(db)
        with pytest.raises(SchemaTooNew, match="notes tables were written by a newer feedsvc"):
            NOTES.ensure(db)
    finally:
        db.close()


def _ensure_and_insert(url: str, name: str) -> None:
    db = open_database(url)
    NOTES.ensure(db)
    with db.transaction() as tx:
        tx.execute("INSERT INTO notes (name, hits) VALUES (?, 1) "
                   "ON CONFLICT (name) DO UPDATE SET hits = notes.hits + 1", (name,))
    db.close()


def test_processes_starting_together_share_one_schema(db_url: str) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ensure_and_insert, args=(db_url, "same")) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    db = open_database(db_url)
    with db.transaction() as tx:
        assert tx.all("SELECT name, hits FROM notes") == [("same", 4)]
        assert tx.one("SELECT version FROM component_schemas WHERE component = 'notes'") == (1,)
    db.close()


def test_a_forked_child_opens_its_own_connection(db_url: str) -> None:
    db = open_database(db_url)
    NOTES.ensure(db)
    with db.transaction() as tx:
        tx.execute("INSERT INTO notes (name, hits) VALUES ('parent', 1)")
    pid = os.fork()
    if pid == 0:  # the child must not use the parent's connection or pool
        code = 1
        try:
            with db.transaction() as tx:
                tx.execute("INSERT INTO notes (name, hits) VALUES ('child', 1)")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with db.transaction() as tx:  # and the parent's own still works
        assert [r[0] for r in tx.all("SELECT name FROM notes ORDER BY name")] == [
            "child", "parent"]
    db.close()


@pytest.mark.parametrize("url, message", [
    ("sqlite://relative/path", "three slashes"),
    ("sqlite:///", "three slashes"),
    ("mysql://x/y", "unknown database URL scheme 'mysql'"),
    ("postgresql://host", "names its database"),
])
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DatabaseURL.parse(url)


def test_urls_never_show_the_password() -> None:
    url = DatabaseURL.parse(f"postgresql://feedsvc:{PASSWORD}@db:5432/feeds?sslmode=require")
    assert url.dialect == "postgresql" and PASSWORD not in str(url)
    assert str(url) == "postgresql://feedsvc:***@db:5432/feeds?sslmode=require"
    query = DatabaseURL.parse(f"postgresql:///feeds?host=db&password={PASSWORD}&sslmode=require")
    assert PASSWORD not in query.redacted and "password=***" in query.redacted
    lite = DatabaseURL.parse("sqlite:////var/lib/feedsvc/ledger.sqlite3")
    assert lite.path == Path("/var/lib/feedsvc/ledger.sqlite3")
    assert str(lite) == "sqlite:////var/lib/feedsvc/ledger.sqlite3"


def test_postgres_errors_do_not_show_the_password(postgres_server) -> None:
    db = open_database(postgres_server.url(password="wrong-" + PASSWORD))
    with pytest.raises(Exception) as caught, db.transaction():
        pass
    db.close()
    assert PASSWORD not in str(caught.value)


def test_a_lease_has_one_holder_until_it_runs_out(db_url: str) -> None:
    from feedsvc.sql import Lease

    db = open_database(db_url)
    try:
        a, b = Lease(db, "hub", "host-a:1"), Lease(db, "hub", "host-b:2")
        other = Lease(db, "purge", "host-b:2")
        assert a.acquire(ttl=10, now=100.0)
        assert not b.acquire(ttl=10, now=105.0)  # a holds it
        assert other.acquire(ttl=10, now=105.0)  # another name is another lease
        assert a.acquire(ttl=10, now=108.0)  # renewal, until 118
        assert not b.acquire(ttl=10, now=117.0)
        assert a.current_holder(117.0) == "host-a:1"
        assert b.acquire(ttl=10, now=118.5)  # a died: it ran out
        assert not a.acquire(ttl=10, now=119.0)
        b.release()
        assert a.current_holder(119.0) is None and a.acquire(ttl=10, now=119.0)
    finally:
        db.close()
