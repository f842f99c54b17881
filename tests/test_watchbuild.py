"""`feedsvc build --watch`: one process keeps a static export in step with the folder
(feedsvc.watchbuild), and what makes its rebuilds cheap (feedsvc.export)."""

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from feedsvc import export
from feedsvc.export import MANIFEST, MARKER, build_site, files_checked_meanwhile
from feedsvc.watchbuild import Rebuilt, WatchedBuild
from tests.conftest import BASE_URL, ROOT, mounted_tmpfs, wait_until, write_article


def _tree(out: Path) -> dict[str, bytes]:
    """Every file of a build but its marker and manifest, with its bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and p.name not in (MARKER, MANIFEST)}


def _wait(what: Callable[[], object], seconds: float = 15.0) -> object:
    return wait_until(what, seconds)


@contextmanager
def _watching(app: Flask, out: Path, rescan: float = 60.0) -> Iterator[
        tuple[WatchedBuild, list[Rebuilt]]]:
    """A watch loop on a thread of its own, stopped and joined at the end."""
    builds: list[Rebuilt] = []
    watched = WatchedBuild(app, out, rescan_seconds=rescan, on_build=builds.append)
    thread = threading.Thread(target=watched.run, name="test-watch", daemon=True)
    thread.start()
    try:
        _wait(lambda: builds)
        yield watched, builds
    finally:
        watched.stop()
        thread.join(30)
        assert not thread.is_alive(), "the watch loop did not stop"


def _after(builds: list[Rebuilt], count: int, reason: str) -> Rebuilt:
    return _wait(lambda: len(builds) > count and builds[-1].reason == reason
                 and builds[-1])  # type: ignore[return-value]


def test_each_change_is_built_as_a_fresh_build_would_write_it(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        db_url: str) -> None:
    """An edit, a new article, a deletion and a topic change, each closed on disk:
    inotify hands them over, and after each the export equals a build from scratch,
    on either store."""
    out = tmp_path / "site"
    store = {"database_url": db_url, "ledger_path": None} if db_url.startswith("postgres") \
        else {}
    app = make_app(articles_dir, **store)
    publisher = app.extensions["feedsvc"]
    with _watching(app, out) as (_, builds):
        assert builds[0].reason == "start" and builds[0].summary.changed > 0
        victim = sorted(articles_dir.glob("*.txt"))[4]
        slug = next(e.slug for e in publisher.collection.entries
                    if e.article.path == victim.name)
        steps: list[Callable[[], None]] = [
            lambda: victim.write_text(victim.read_text(encoding="utf-8")
                                      + "\nA sentence added while watching.\n",
                                      encoding="utf-8"),
            lambda: write_article(articles_dir, "watched-new.txt", "A Story Written Later",
                                  topic="brand new beat"),
            lambda: write_article(articles_dir, "watched-new.txt", "A Story Written Later",
                                  topic="another beat entirely"),
            victim.unlink,
        ]
        for step in steps:
            count = len(builds)
            step()
            built = _after(builds, count, "change").summary
            assert 0 < built.changed < built.files // 2
            assert built.version == publisher.version
        manifest = json.loads((out / MANIFEST).read_text())
        assert f"articles/{slug}/index.html" in manifest["removed"]
        assert not (out / "topics" / "brand-new-beat").exists()
        assert (out / "topics" / "another-beat-entirely" / "feed.atom").is_file()
        assert "A sentence added" not in (out / "feed.atom").read_text()
    build_site(app, tmp_path / "fresh")
    assert _tree(out) == _tree(tmp_path / "fresh")


def test_the_manifest_and_marker_of_a_rebuild_list_every_file_as_it_is(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    """Rebuilds in one process join the unchanged records' lines as written before:
    the manifest still holds every file's SHA-256, size and mtime, and the marker's
    stat listing is what a no-change check reads."""
    import hashlib

    out = tmp_path / "site"
    app = make_app(articles_dir)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    victim = sorted(articles_dir.glob("*.txt"))[2]
    for number in range(3):
        victim.write_text(victim.read_text(encoding="utf-8") + f"\nEdit {number}.\n",
                          encoding="utf-8")
        publisher.refresh()
        build_site(app, out)
    manifest = json.loads((out / MANIFEST).read_text())
    on_disk = _tree(out)
    assert set(manifest["files"]) == set(on_disk)
    listing = []
    for name in sorted(on_disk):
        sha, size, mtime, _ = manifest["files"][name]
        st = (out / name).stat()
        assert (sha, size, mtime) == (hashlib.sha256(on_disk[name]).hexdigest(), st.st_size,
                                      st.st_mtime_ns), name
        listing.append(f"{name}\t{size}\t{mtime}\n")
    marker = json.loads((out / MARKER).read_text())
    assert marker["store"]["stat"] == "".join(listing)
    assert manifest["changed"] and all(name in on_disk for name in manifest["changed"])


def test_a_manifest_another_writer_replaced_is_read_again(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    app = make_app(articles_dir)
    build_site(app, out)
    kept = export._load_manifest(out)
    assert kept is not None and export._load_manifest(out) is kept  # from memory
    data = json.loads((out / MANIFEST).read_text())
    data["files"].pop("feed.atom")
    replacement = out / (MANIFEST + ".new")
    replacement.write_text(json.dumps(data))
    replacement.replace(out / MANIFEST)  # as another build would: a new file renamed in
    again = export._load_manifest(out)
    assert again is not kept and "feed.atom" not in again["files"]
    assert files_checked_meanwhile(out) is None  # not the build this process wrote


def test_files_changed_by_hand_are_found_and_rewritten(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The tree is checked at every rescan (a forked child stats every file): a file
    changed or removed by hand is rewritten by the build that follows."""
    out = tmp_path / "site"
    app = make_app(articles_dir)
    app.extensions["feedsvc"].settle_seconds = 0
    build_site(app, out)
    check = files_checked_meanwhile(out)
    assert check is not None and check() is True
    with caplog.at_level(logging.WARNING, logger="feedsvc"), \
            _watching(app, out, rescan=0.3) as (_, builds):
        original = (out / "feed.atom").read_bytes()
        (out / "feed.atom").write_bytes(b"vandalised")
        (out / "topics" / "index.html").unlink()
        _after(builds, len(builds), "repair")
        assert (out / "feed.atom").read_bytes() == original
        assert (out / "topics" / "index.html").is_file()
    assert any("changed or removed by hand" in r.getMessage() for r in caplog.records)


def test_a_failed_build_leaves_the_last_one_and_is_tried_again(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A new article whose page folder cannot be made (a file stands in its way):
    the failure is logged once, the previous build stands, and once the obstacle
    is gone the next try puts the article in."""
    out = tmp_path / "site"
    app = make_app(articles_dir)
    with caplog.at_level(logging.INFO, logger="feedsvc"), \
            _watching(app, out) as (watched, builds):
        before = _tree(out)
        (out / "articles" / "a-blocked-story").write_bytes(b"in the way")
        count = len(builds)
        write_article(articles_dir, "blocked.txt", "A Blocked Story")
        _wait(lambda: any("build failed" in r.getMessage() for r in caplog.records))
        time.sleep(2.5)  # retried after 1 s and 2 s: the same reason is not logged again
        failures = [r for r in caplog.records if "build failed" in r.getMessage()]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        assert "the previous build stands" in failures[0].getMessage()
        assert len(builds) == count
        now = _tree(out)
        now.pop("articles/a-blocked-story")
        assert now == before
        (out / "articles" / "a-blocked-story").unlink()
        built = _after(builds, count, "change")
        assert (out / "articles" / "a-blocked-story" / "index.html").is_file()
        assert built.summary.version == app.extensions["feedsvc"].version
    assert any("build succeeded again" in r.getMessage() for r in caplog.records)


def test_a_scheduled_article_is_built_when_it_falls_due(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    due = datetime.now(UTC) + timedelta(seconds=3)
    write_article(articles_dir, "later.txt", "A Story Scheduled Ahead",
                  front=f"---\ndate: {due.isoformat()}\n---\n")
    out = tmp_path / "site"
    app = make_app(articles_dir)
    with _watching(app, out) as (_, builds):
        assert "A Story Scheduled Ahead" not in (out / "feed.atom").read_text()
        _after(builds, len(builds), "time")
        assert "A Story Scheduled Ahead" in (out / "feed.atom").read_text()
        assert datetime.now(UTC) >= due


def test_the_command_rebuilds_after_an_edit_and_stops_on_sigterm(
        articles_dir: Path, tmp_path: Path) -> None:
    """`feedsvc build OUTDIR --watch` as an operator runs it, into an earlier build.
    The folder is synced by the command's no-change check, and the rescan is a
    minute away: inotify must be on from the first build."""
    out = tmp_path / "public"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_LEDGER_PATH=str(tmp_path / "ledger.sqlite3"),
               FEEDSVC_BASE_URL=BASE_URL, FEEDSVC_RELOAD_INTERVAL="60")  # inotify only
    command = [sys.executable, "-m", "feedsvc.cli", "build", str(out),
               "--folder", str(articles_dir)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen(command + ["--watch"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        _wait(lambda: any(line.startswith("watching ") for line in lines), 60)
        first = next(i for i, line in enumerate(lines) if line.startswith("watching "))
        assert any(line.startswith("built ") for line in lines[:first]), lines
        victim = sorted(articles_dir.glob("*.txt"))[0]
        victim.write_text(victim.read_text(encoding="utf-8").replace(
            "\n\n", "\n\nA paragraph the watcher must publish.\n\n", 2), encoding="utf-8")
        _wait(lambda: any("(after a change)" in line for line in lines))
        assert any("A paragraph the watcher must publish" in p.read_text()
                   for p in (out / "articles").glob("*/index.html"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert not any("Traceback" in line for line in lines), "".join(lines)
    assert json.loads((out / MANIFEST).read_text())["files"]


def test_postgresql_down_leaves_the_last_build_and_the_change_comes_after(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        postgres_url: str, postgres_server, caplog: pytest.LogCaptureFixture) -> None:
    """The store stopped while watching: the loop keeps going, the export stays as it
    was, and an article written during the outage is built once the store is back."""
    out = tmp_path / "site"
    app = make_app(articles_dir, database_url=postgres_url, ledger_path=None)
    app.extensions["feedsvc"].settle_seconds = 0
    with caplog.at_level(logging.INFO, logger="feedsvc"), \
            _watching(app, out, rescan=0.3) as (watched, builds):
        before = _tree(out)
        count = len(builds)
        postgres_server.stop()
        try:
            _wait(lambda: app.extensions["feedsvc"].last_error is not None, 20)
            write_article(articles_dir, "outage.txt", "Written While The Store Was Down")
            time.sleep(1.5)  # rescans fail meanwhile
            assert len(builds) == count and _tree(out) == before
        finally:
            postgres_server.start()
        built = _after(builds, count, "change")
        assert "Written While The Store Was Down" in (out / "feed.atom").read_text()
        assert built.summary.changed > 0
    assert not any(r.getMessage().startswith("reload failed") for r in caplog.records)


def test_a_first_build_that_fails_ends_the_command_with_its_error(
        articles_dir: Path, tmp_path: Path) -> None:
    """Into a folder that is not an earlier build: the one-line refusal of a one-shot
    build and exit status 2, not a loop retrying a refusal forever."""
    out = tmp_path / "not-a-build"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's file")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_LEDGER_PATH=str(tmp_path / "ledger.sqlite3"), FEEDSVC_BASE_URL=BASE_URL)
    done = subprocess.run([sys.executable, "-m", "feedsvc.cli", "build", str(out), "--folder",
                           str(articles_dir), "--watch"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("feedsvc: ")]
    assert len(said) == 1 and "holds no earlier build" in said[0], done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_one_build_at_a_time_writes_a_folder(make_app: Callable[..., Flask],
                                             articles_dir: Path, tmp_path: Path) -> None:
    """While a watch holds the folder, a one-shot build by hand (with another feed size:
    every feed to write again) is refused with the reason and writes nothing; once
    the watch stops, the same command builds."""
    out = tmp_path / "site"
    app = make_app(articles_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_LEDGER_PATH=str(tmp_path / "ledger.sqlite3"), FEEDSVC_BASE_URL=BASE_URL,
               FEEDSVC_FEED_SIZE="5")
    command = [sys.executable, "-m", "feedsvc.cli", "build", str(out), "--folder",
               str(articles_dir)]
    with _watching(app, out):
        before = _tree(out)
        # The watch's own builds take the lock again inside it (re-entrant).
        assert build_site(app, out).changed == 0
        refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "another `feedsvc build` is writing it" in refused.stderr
        assert _tree(out) == before and not list(out.glob(".feedsvc-staging-*"))
    app.extensions["feedsvc"].close()  # the writer lease too: the command syncs now
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "feed.atom").read_text().count("<entry>") == 5


def test_an_articles_folder_moved_away_leaves_the_last_build(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """inotify follows a folder renamed away: an edit there names a path that no longer
    exists under the articles folder. That is the folder missing (logged once, the last
    build stands), not the article deleted; once the folder is back the edit is built."""
    out = tmp_path / "site"
    app = make_app(articles_dir)
    away = tmp_path / "away"
    with caplog.at_level(logging.INFO, logger="feedsvc"), \
            _watching(app, out, rescan=0.3) as (_, builds):
        before = _tree(out)
        count = len(builds)
        articles_dir.rename(away)
        victim = sorted(away.glob("*.txt"))[1]
        victim.write_text(victim.read_text(encoding="utf-8") + "\nEdited while away.\n",
                          encoding="utf-8")
        time.sleep(1.5)  # inotify's event, then rescans
        assert len(builds) == count and _tree(out) == before
        missing = [r for r in caplog.records if "is missing" in r.getMessage()]
        assert len(missing) == 1, [r.getMessage() for r in missing]
        away.rename(articles_dir)
        _after(builds, count, "change")
        assert any("Edited while away" in p.read_text() for p in (out / "articles").glob(
            "*/index.html"))
        assert _tree(out).keys() == before.keys()


def test_an_articles_folder_put_in_place_of_another_is_watched(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    """A folder swapped in (a deploy: ``mv articles old; mv new articles``): inotify
    watched the old folder. The new one is listed at once and watched from then on,
    with the rescan a minute away."""
    out = tmp_path / "site"
    app = make_app(articles_dir)
    app.extensions["feedsvc"].settle_seconds = 0  # the swapped-in file is not being written
    new = tmp_path / "new"
    shutil.copytree(articles_dir, new)
    write_article(new, "swapped-in.txt", "A Story The New Folder Brought")
    with _watching(app, out) as (_, builds):
        count = len(builds)
        articles_dir.rename(tmp_path / "old")
        new.rename(articles_dir)
        _after(builds, count, "change")
        assert "A Story The New Folder Brought" in (out / "feed.atom").read_text()
        count = len(builds)
        write_article(articles_dir, "later.txt", "A Story Written In The New Folder")
        _after(builds, count, "change")
        assert "A Story Written In The New Folder" in (out / "feed.atom").read_text()


def test_an_export_folder_removed_or_replaced_is_built_again(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """OUTDIR removed whole (its manifest with it) is rebuilt by the next rescan, as a
    file removed by hand is, and the watch holds the new folder's lock: a one-shot
    build is refused there. A file in its place fails the build once (one line, the
    retries say nothing), and the folder is built once the file is gone."""
    out = tmp_path / "site"
    app = make_app(articles_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_LEDGER_PATH=str(tmp_path / "other.sqlite3"), FEEDSVC_BASE_URL=BASE_URL)
    with caplog.at_level(logging.WARNING, logger="feedsvc"), \
            _watching(app, out, rescan=0.3) as (_, builds):
        before = _tree(out)
        out.rename(tmp_path / "renamed")  # whole at once (rm -rf races the next rescan)
        shutil.rmtree(tmp_path / "renamed")
        _after(builds, len(builds), "repair")
        assert _tree(out) == before
        refused = subprocess.run([sys.executable, "-m", "feedsvc.cli", "build", str(out),
                                  "--folder", str(articles_dir)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "another `feedsvc build` is writing it" in refused.stderr
        out.rename(tmp_path / "renamed")
        out.write_text("not a folder")
        count = len(builds)
        time.sleep(2.5)  # tried at once, then after 1 s and 2 s
        failed = [r.getMessage() for r in caplog.records if "build failed" in r.getMessage()]
        assert len(failed) == 1 and "exists and is not a folder" in failed[0], failed
        assert len(builds) == count
        out.unlink()
        _after(builds, count, "repair")
        assert _tree(out) == before


def test_a_signal_handler_takes_no_lock_the_loop_may_hold(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    """Python runs a signal handler on the main thread between two bytecodes, which may
    be inside the Event the loop waits on (holding its lock): a handler that sets that
    Event waits for itself for ever, and SIGTERM then never stops the watch. The
    handler only sets flags; the loop reads them at its next turn."""
    app = make_app(articles_dir)
    builds: list[Rebuilt] = []
    watched = WatchedBuild(app, tmp_path / "site", rescan_seconds=60, on_build=builds.append)
    handled = threading.Event()

    def signalled_inside_the_wait() -> None:
        with watched._woken._cond:  # where the loop's thread is for most of a wait
            watched.on_signal(signal.SIGTERM)
        handled.set()

    thread = threading.Thread(target=watched.run, daemon=True)
    thread.start()
    _wait(lambda: builds)
    threading.Thread(target=signalled_inside_the_wait, daemon=True).start()
    assert handled.wait(5), "the handler hung on the loop's lock"
    thread.join(5)
    assert not thread.is_alive()


def _whole(out: Path) -> dict[str, bytes]:
    """The build in ``out``, checked whole: every file as its manifest records it (SHA-256),
    none missing or extra, no staging or set-aside folder left."""
    import hashlib

    files = json.loads((out / MANIFEST).read_text())["files"]
    tree = _tree(out)
    assert tree.keys() == files.keys()
    assert all(hashlib.sha256(body).hexdigest() == files[name][0]
               for name, body in tree.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".feedsvc-") and p.is_dir()]
    return tree


class _Command:
    """`feedsvc build OUTDIR --watch` as a process, its output read as it comes."""

    def __init__(self, out: Path, articles: Path, tmp_path: Path, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
        environ.update(FEEDSVC_LEDGER_PATH=str(tmp_path / "ledger.sqlite3"),
                       FEEDSVC_BASE_URL=BASE_URL, **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "feedsvc.cli", "build", str(out), "--folder", str(articles),
             "--watch"], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True)
        self._reader.start()

    def said(self, text: str, after: int = 0, seconds: float = 15.0) -> int:
        """Wait for a line holding ``text`` (after the first ``after``); the lines then."""
        _wait(lambda: any(text in line for line in self.lines[after:]), seconds)
        return len(self.lines)

    def end(self, seconds: float = 30.0) -> int:
        """The exit status, once the process ends by itself within ``seconds``."""
        try:
            return self.proc.wait(seconds)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)


def test_sighup_rescans_at_once_and_sigterm_lets_the_rebuild_finish(
        articles_dir: Path, tmp_path: Path) -> None:
    """Without inotify and with the rescan a minute away, SIGHUP (a service's reload) has
    the folder listed and the export checked at once: an edit is built, a file changed
    by hand rewritten, and the watch runs on. SIGTERM during a rebuild lets it finish:
    the export is whole, and the status is 0."""
    out = tmp_path / "site"
    command = _Command(out, articles_dir, tmp_path, FEEDSVC_INOTIFY="false",
                       FEEDSVC_RELOAD_INTERVAL="60")
    try:
        seen = command.said("watching ", seconds=60)
        victim = sorted(articles_dir.glob("*.txt"))[0]
        victim.write_text(victim.read_text(encoding="utf-8") + "\nSeen after a SIGHUP.\n",
                          encoding="utf-8")
        os.utime(victim, (time.time() - 5, time.time() - 5))  # settled: not being written
        command.proc.send_signal(signal.SIGHUP)
        seen = command.said("(after a change)", seen, 10)
        assert any("Seen after a SIGHUP" in p.read_text()
                   for p in (out / "articles").glob("*/index.html"))
        original = (out / "feed.atom").read_bytes()
        (out / "feed.atom").write_bytes(b"vandalised")
        command.proc.send_signal(signal.SIGHUP)
        seen = command.said("(files changed by hand were rewritten)", seen, 10)
        assert (out / "feed.atom").read_bytes() == original
        # The watch's warnings and recoveries are logged, not only its errors.
        assert sum("changed or removed by hand" in line for line in command.lines) == 1
        assert command.proc.poll() is None
        write_article(articles_dir, "last.txt", "The Story Of The Last Rebuild")
        os.utime(articles_dir / "last.txt", (time.time() - 5, time.time() - 5))
        command.proc.send_signal(signal.SIGHUP)
        time.sleep(0.25)  # the rescan under way
        command.proc.send_signal(signal.SIGTERM)
        assert command.end() == 0, "".join(command.lines)
    finally:
        command.kill()
    assert not any("Traceback" in line for line in command.lines), "".join(command.lines)
    _whole(out)


def test_sigint_during_the_first_build_lets_it_finish(articles_dir: Path,
                                                      tmp_path: Path) -> None:
    """Ctrl-C while the first build renders: it is completed (all or nothing), then the
    command ends with status 0."""
    for number in range(300):
        write_article(articles_dir, f"many/{number:03}.txt", f"Story Number {number} Of Many",
                      topic=f"beat {number % 11}")
    out = tmp_path / "site"
    command = _Command(out, articles_dir, tmp_path)
    try:
        command.said("build: ", seconds=60)
        command.proc.send_signal(signal.SIGINT)
        assert command.end() == 0, "".join(command.lines)
    finally:
        command.kill()
    assert not any("Traceback" in line for line in command.lines), "".join(command.lines)
    assert any(line.startswith("built ") for line in command.lines)
    assert len(_whole(out)) > 600


def _unreadable_scenario(root: str) -> dict[str, object]:
    """As nobody: an edit the watch cannot read (chmod 000), then the file readable again."""
    from feedsvc.web import create_app

    folder = Path(root)
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("feedsvc").addHandler(handler)
    app = create_app({"articles_dir": str(folder / "articles"), "hub": "off",
                      "ledger_path": str(folder / "ledger.sqlite3"), "base_url": BASE_URL,
                      "reload_interval": 0}, instance_path=folder / "instance")
    app.extensions["feedsvc"].settle_seconds = 0
    out = folder / "site"
    got: dict[str, object] = {}
    try:
        with _watching(app, out, rescan=0.3) as (_, builds):
            before = _tree(out)
            victim = sorted((folder / "articles").glob("*.txt"))[3]
            victim.chmod(0o200)  # writable, not readable: the watch's read fails
            with victim.open("a", encoding="utf-8") as f:
                f.write("\nWritten while unreadable.\n")
            victim.chmod(0)
            _wait(lambda: any("permission denied" in m for m in said))
            time.sleep(1)  # rescans meanwhile
            got["kept"] = _tree(out) == before
            count = len(builds)
            victim.chmod(0o644)  # a chmod changes no size or mtime: the rescan must look
            _after(builds, count, "change")
            got["published"] = any("Written while unreadable" in p.read_text()
                                   for p in (out / "articles").glob("*/index.html"))
            before = _tree(out)
            (folder / "articles").chmod(0)  # the folder itself: said as what it is
            _wait(lambda: any("cannot be read" in m for m in said))
            time.sleep(1)
            got["kept_folder"] = _tree(out) == before
            (folder / "articles").chmod(0o755)
    finally:
        logging.getLogger("feedsvc").removeHandler(handler)
        app.extensions["feedsvc"].close()
    got["said"] = [m for m in said if "permission denied" in m]
    return got


def test_an_article_made_unreadable_keeps_its_last_version_until_readable(
        world_dir: Path, make_app: Callable[..., Flask]) -> None:
    """chmod 000 on an article the watch must read again: the last good version stays
    published and the rejection is said once; once the file is readable again, with no
    other change, the next rescan reads it and the edit is built. chmod 000 on the folder:
    said as unreadable (not "missing"), once, and the build stands."""
    from tests.unprivileged import run_unprivileged

    shutil.copytree(ROOT / "articles", world_dir / "articles")
    warm = make_app(world_dir / "articles", ledger_path=str(world_dir / "warm.sqlite3"))
    build_site(warm, world_dir / "warm")  # every module the child needs, imported now
    for path in (world_dir, *world_dir.rglob("*")):
        os.chown(path, 65534, 65534)
    got = run_unprivileged(_unreadable_scenario, str(world_dir))
    assert got["kept"] is True and got["published"] is True
    article, folder = got["said"]  # one line for each fault, retries say nothing
    assert article.startswith("rejected ") and article.endswith(": permission denied")
    assert "cannot be read (permission denied); serving the last good feeds" in folder
    assert got["kept_folder"] is True


def test_ctrl_c_while_a_build_is_put_in_place_leaves_the_previous_one(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-shot `feedsvc build` gets SIGINT as KeyboardInterrupt wherever it is, also
    amid the renames that put the new build in place: every step is undone, as for a
    full disk, and the interrupt goes on."""
    app = make_app(articles_dir)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    out = tmp_path / "site"
    build_site(app, out)
    before = _whole(out)
    victim = sorted(articles_dir.glob("*.txt"))[5]
    victim.write_text(victim.read_text(encoding="utf-8") + "\nNever lands.\n",
                      encoding="utf-8")
    write_article(articles_dir, "never.txt", "A Story That Never Lands")
    assert publisher.refresh().changed
    real_rename = export.os.rename
    calls = {"n": 0}

    def interrupted(source: str, target: str) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(export.os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_site(app, out)
    monkeypatch.setattr(export.os, "rename", real_rename)
    assert calls["n"] >= 5
    assert _whole(out) == before


def test_an_articles_folder_removed_whole_leaves_the_whole_last_build(
        make_app: Callable[..., Flask], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """``rm -rf`` of the articles folder: inotify reports every file deleted before the
    folder itself goes. Taken as they came, the first deletions were stored and built
    (a site short of dozens of articles); the watch waits for the deletions to stop,
    finds the folder missing, and the last good build stands whole."""
    articles = tmp_path / "articles"
    for number in range(600):
        write_article(articles, f"{number:03}.txt", f"A Story Numbered {number}",
                      topic=f"beat {number % 13}")
    out = tmp_path / "site"
    app = make_app(articles)
    with caplog.at_level(logging.INFO, logger="feedsvc"), \
            _watching(app, out) as (_, builds):
        before = _tree(out)
        count = len(builds)
        shutil.rmtree(articles)
        _wait(lambda: any("is missing" in r.getMessage() for r in caplog.records))
        time.sleep(0.5)
        assert len(builds) == count and _tree(out) == before
        assert len(app.extensions["feedsvc"].collection.entries) == 600


def test_a_watch_beside_a_running_service_follows_it_then_takes_over(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A real gunicorn on the same ledger and folder holds the writer lease: the watch
    only follows the store, and builds what the service stored within a second. Once
    the service stops, the watch takes the lease and the folder over by itself. No
    error is logged on either side."""
    from tests.deploy_harness import Gunicorn

    ledger = tmp_path / "shared.sqlite3"
    (tmp_path / "metrics").mkdir()
    service = Gunicorn(tmp_path, {"FEEDSVC_ARTICLES_DIR": str(articles_dir),
                                  "FEEDSVC_LEDGER_PATH": str(ledger),
                                  "FEEDSVC_BASE_URL": BASE_URL,
                                  "FEEDSVC_RELOAD_INTERVAL": "1"}, workers=1)
    said = ""
    try:
        app = make_app(articles_dir, ledger_path=str(ledger), reload_interval=1)
        publisher = app.extensions["feedsvc"]
        out = tmp_path / "site"
        with caplog.at_level(logging.WARNING, logger="feedsvc"), \
                _watching(app, out, rescan=1.0) as (watched, builds):
            assert not publisher.is_writer and watched.watcher is None
            count = len(builds)
            write_article(articles_dir, "served.txt", "A Story The Service Stored")
            started = time.monotonic()
            _after(builds, count, "change")
            assert time.monotonic() - started < 2.0
            assert "A Story The Service Stored" in (out / "feed.atom").read_text()
            said = service.stop()
            _wait(lambda: publisher.is_writer, 20)
            count = len(builds)
            write_article(articles_dir, "watched.txt", "A Story The Watch Stored")
            _after(builds, count, "change")
            assert "A Story The Watch Stored" in (out / "feed.atom").read_text()
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        said = said or service.stop()
    assert "Traceback" not in said and " ERROR " not in said, said


def test_an_edit_storm_takes_a_few_builds_and_ends_as_a_fresh_build(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    """200 files rewritten at once (a `git checkout` of another branch): a few builds, not
    200, and the last equals a fresh build's bytes."""
    articles = tmp_path / "articles"
    for number in range(220):
        write_article(articles, f"{number:03}.txt", f"A Story Numbered {number}",
                      topic=f"beat {number % 7}", body=f"Body {number}.")
    out = tmp_path / "site"
    app = make_app(articles)
    publisher = app.extensions["feedsvc"]
    with _watching(app, out) as (_, builds):
        count = len(builds)
        for number in range(200):
            write_article(articles, f"{number:03}.txt", f"A Story Numbered {number}",
                          topic=f"beat {number % 7}", body=f"Body {number}, checked out.")
        _wait(lambda: sum("checked out" in e.article.summary for e in
                          publisher.collection.entries) == 200
              and builds[-1].summary.version == publisher.version)
        time.sleep(0.5)
        assert builds[-1].summary.version == publisher.version
        assert 1 <= len(builds) - count <= 4, [b.summary.changed for b in builds[count:]]
    build_site(app, tmp_path / "fresh")
    assert _tree(out) == _tree(tmp_path / "fresh")


def test_ctrl_c_while_the_watch_loads_ends_it_in_one_line(articles_dir: Path,
                                                         tmp_path: Path) -> None:
    """Ctrl-C before the watch's handlers are set (it loads the view: seconds at 10,000
    articles) ends the command as Ctrl-C does, status 130, with one line, not a
    traceback, and writes nothing."""
    for number in range(600):
        write_article(articles_dir, f"many/{number:03}.txt", f"Story Number {number} Of Many",
                      topic=f"beat {number % 11}")
    out = tmp_path / "site"
    command = _Command(out, articles_dir, tmp_path)
    try:
        command.said("loading ", seconds=60)
        command.proc.send_signal(signal.SIGINT)
        assert command.end() == 130, "".join(command.lines)
    finally:
        command.kill()
    assert not any("Traceback" in line for line in command.lines), "".join(command.lines)
    assert [line for line in command.lines if line.startswith("feedsvc: ")] == [
        "feedsvc: interrupted\n"]
    assert not out.exists() or not list(out.iterdir())


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs: OUTDIR on a filesystem that fills up."""
    with mounted_tmpfs(tmp_path / "mnt", "8m") as mount:
        yield mount


def test_a_full_disk_during_rebuilds_leaves_the_last_build_until_space_is_freed(
        make_app: Callable[..., Flask], articles_dir: Path, small_tmpfs: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """OUTDIR's filesystem filled by something else (a real ENOSPC): every rebuild fails,
    said once, and the last build stands whole; once the space is freed the retries
    put the edits in by themselves."""
    out = small_tmpfs / "site"
    app = make_app(articles_dir)
    victim = sorted(articles_dir.glob("*.txt"))[0]
    with caplog.at_level(logging.INFO, logger="feedsvc"), \
            _watching(app, out) as (_, builds):
        before = _whole(out)
        count = len(builds)
        filler = small_tmpfs / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"x" * 65536)
        for number in range(2):
            victim.write_text(victim.read_text(encoding="utf-8") + f"\nFull disk {number}.\n",
                              encoding="utf-8")
            time.sleep(1.2)
        failed = [r.getMessage() for r in caplog.records if "build failed" in r.getMessage()]
        assert len(failed) == 1 and "No space left on device" in failed[0], failed
        assert len(builds) == count and _whole(out) == before
        filler.unlink()
        _after(builds, count, "change")
        assert any("Full disk 1." in p.read_text() for p in (out / "articles").glob(
            "*/index.html"))
        _whole(out)
    assert any("build succeeded again" in r.getMessage() for r in caplog.records)
