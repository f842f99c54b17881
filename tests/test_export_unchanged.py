"""`feedsvc build` into an earlier build with nothing changed: the store's change
counter, after the folder sync, says so, and every file is checked by one stat
without loading the articles or rendering anything (feedsvc.export.rebuild_unchanged).
Every kind of change still takes the normal build, which writes what changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feedsvc.cli import main
from feedsvc.config import load_settings
from feedsvc.export import MANIFEST, MARKER, rebuild_unchanged
from tests.conftest import BASE_URL, write_article

SHORTCUT = "nothing changed since the last build"


@pytest.fixture
def build(tmp_path: Path, articles_dir: Path, monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str]):
    """Run `feedsvc build OUT` as the command does; returns what it printed."""
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    out = tmp_path / "public"

    def run() -> str:
        assert main(["build", str(out), "--folder", str(articles_dir),
                     "--base-url", BASE_URL]) == 0
        return capsys.readouterr().out

    run.out = out  # type: ignore[attr-defined]
    return run


def _state(out: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file of the build, the manifest and marker included: bytes, mtime, inode."""
    found = {}
    for path in out.rglob("*"):
        if path.is_file():
            st = path.stat()
            found[path.relative_to(out).as_posix()] = (path.read_bytes(), st.st_mtime_ns,
                                                       st.st_ino)
    return found


def _written(printed: str) -> int:
    return int(printed.split(" written")[0].rsplit(" ", 1)[1])


def test_a_rebuild_with_nothing_changed_takes_the_shortcut_and_touches_nothing(build) -> None:
    first = build()
    assert SHORTCUT not in first
    store = json.loads((build.out / MANIFEST).read_text())["store"]
    assert isinstance(store["seq"], int) and store["key"]
    before = _state(build.out)
    again = build()
    assert SHORTCUT in again and _written(again) == 0 and " 0 removed" in again
    assert _state(build.out) == before  # manifest and marker too: same bytes, mtime, inode
    # The summary counts what the normal build counted.
    assert again.split(" in ")[0] == first.split(" in ")[0]


def test_rebuild_unchanged_loads_no_article(build, articles_dir: Path, tmp_path: Path) -> None:
    """The function itself: a summary without an app, and the store only synced."""
    build()
    settings = load_settings({"articles_dir": str(articles_dir), "base_url": BASE_URL,
                              "reload_interval": 0, "hub": "off"})
    summary = rebuild_unchanged(settings, build.out, tmp_path / "ledger.sqlite3")
    assert summary is not None and summary.changed == 0 and summary.removed == 0
    manifest = json.loads((build.out / MANIFEST).read_text())
    assert summary.files == len(manifest["files"]) and summary.version == manifest["version"]
    # Another setting: not the same build, so no shortcut.
    other = load_settings({"articles_dir": str(articles_dir), "base_url": BASE_URL,
                           "reload_interval": 0, "hub": "off", "feed_size": 3})
    assert rebuild_unchanged(other, build.out, tmp_path / "ledger.sqlite3") is None


def test_rebuild_unchanged_imports_neither_the_app_nor_the_renderers(
        build, articles_dir: Path, tmp_path: Path) -> None:
    """In a fresh interpreter (what `feedsvc build` is), the shortcut syncs the folder
    with the store and sync modules alone: Flask, feedgen, Jinja and the publisher
    stay unimported (they were a fifth of a no-change rebuild at 10,000 articles)."""
    build()
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from feedsvc.config import load_settings\n"
        "from feedsvc.export import rebuild_unchanged\n"
        f"s = load_settings({{'articles_dir': {str(articles_dir)!r}, 'base_url': {BASE_URL!r},"
        " 'reload_interval': 0, 'hub': 'off'})\n"
        f"summary = rebuild_unchanged(s, Path({str(build.out)!r}),"
        f" Path({str(tmp_path / 'ledger.sqlite3')!r}))\n"
        "assert summary is not None and summary.changed == 0, summary\n"
        "heavy = ['flask', 'feedgen', 'jinja2', 'lxml', 'feedsvc.publisher', 'feedsvc.web',"
        " 'feedsvc.render', 'feedsvc.view']\n"
        "print(' '.join(m for m in heavy if m in sys.modules) or 'none')\n"
    )
    env = dict(os.environ)  # the same settings as the build's (the key covers them all)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_a_missing_folder_takes_the_normal_build_and_its_error(
        build, articles_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shortcut never reports a failure itself: the normal build meets it and says
    what it always says."""
    build()
    settings = load_settings({"articles_dir": str(tmp_path / "gone"), "base_url": BASE_URL,
                              "reload_interval": 0, "hub": "off"})
    assert rebuild_unchanged(settings, build.out, tmp_path / "ledger.sqlite3") is None
    assert main(["build", str(build.out), "--folder", str(tmp_path / "gone"),
                 "--base-url", BASE_URL]) != 0
    assert "is not a folder that exists" in capsys.readouterr().err


def test_an_edited_article_is_noticed_by_the_sync(build, articles_dir: Path) -> None:
    build()
    write_article(articles_dir, "fresh.txt", "A Freshly Written Story")
    printed = build()
    assert SHORTCUT not in printed and _written(printed) > 0
    page = build.out / "articles" / "a-freshly-written-story" / "index.html"
    assert b"A Freshly Written Story" in page.read_bytes()
    assert b"A Freshly Written Story" in (build.out / "feed.atom").read_bytes()
    assert SHORTCUT in build()  # and then nothing changed again


def test_an_edit_with_every_file_as_recorded_stats_nothing_twice(build, articles_dir,
                                                                 monkeypatch) -> None:
    """After one edit the shortcut has statted every file and found it as recorded: the
    normal build that follows trusts that (no second stat of each file) and still
    writes exactly the files whose bytes changed. (Without the check's answer it
    statted every file itself: 580 here.)"""
    from feedsvc import export as export_module

    first = build()
    stats = {"n": 0}
    real = export_module.os.stat

    def counted(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(path).startswith(str(build.out)):
            stats["n"] += 1
        return real(path, *args, **kwargs)

    files = int(first.split("built ")[1].split(" ")[0])
    write_article(articles_dir, "fresh.txt", "A Story Among Files As Recorded")
    monkeypatch.setattr(export_module.os, "stat", counted)
    printed = build()
    monkeypatch.setattr(export_module.os, "stat", real)
    assert SHORTCUT not in printed and 0 < _written(printed) < files
    # A few stats for the files the edit rewrote; the check's one stat a file ran in
    # its forked child (export._as_recorded_meanwhile), not here, and none is repeated.
    assert stats["n"] < 3 * _written(printed) < files, (stats, files)
    assert b"A Story Among Files As Recorded" in (build.out / "feed.atom").read_bytes()


def test_a_rebuild_after_an_edit_lists_the_folder_once(build, articles_dir,
                                                      monkeypatch) -> None:
    """The no-change check syncs the folder and finds the edit; the build that follows
    loads the store it synced rather than listing the folder again."""
    from feedsvc import publisher as publisher_module
    from feedsvc import source, sync

    build()
    listed: list[Path] = []

    def counted(root, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        listed.append(root)
        return source.list_articles(root, *args, **kwargs)

    monkeypatch.setattr(sync, "list_articles", counted)
    monkeypatch.setattr(publisher_module, "list_articles", counted)
    write_article(articles_dir, "fresh.txt", "A Story Listed Once")
    printed = build()
    assert SHORTCUT not in printed and _written(printed) > 0
    assert b"A Story Listed Once" in (build.out / "feed.atom").read_bytes()
    assert listed == [articles_dir]


def test_an_edit_and_a_damaged_file_rewrite_both(build, articles_dir) -> None:
    """A file changed by hand makes the shortcut's stats differ: the normal build then
    stats every file itself, so it writes the damaged file again along with the edit."""
    build()
    damaged = build.out / "topics" / "index.html"
    good = damaged.read_bytes()
    damaged.write_bytes(b"<p>vandalised</p>")
    write_article(articles_dir, "fresh.txt", "A Story Beside A Damaged File")
    printed = build()
    assert SHORTCUT not in printed
    assert b"A Story Beside A Damaged File" in (build.out / "feed.atom").read_bytes()
    assert damaged.read_bytes() != b"<p>vandalised</p>"
    assert b"Topics" in damaged.read_bytes() and len(damaged.read_bytes()) >= len(good) // 2


def test_a_changed_setting_takes_the_normal_build(build, monkeypatch) -> None:
    build()
    monkeypatch.setenv("FEEDSVC_SITE_TITLE", "A Retitled Site")
    printed = build()
    assert SHORTCUT not in printed and _written(printed) > 0
    assert b"A Retitled Site" in (build.out / "feed.atom").read_bytes()
    assert SHORTCUT in build()


def test_changed_robots_lines_take_the_normal_build(build, monkeypatch, tmp_path) -> None:
    extra = tmp_path / "robots-extra.txt"
    extra.write_text("Disallow: /one\n")
    monkeypatch.setenv("FEEDSVC_ROBOTS_EXTRA", str(extra))
    build()
    assert b"Disallow: /one" in (build.out / "robots.txt").read_bytes()
    extra.write_text("Disallow: /two\n")  # the setting is the same path: its bytes changed
    printed = build()
    assert SHORTCUT not in printed and _written(printed) == 2  # robots.txt and its .gz
    assert b"Disallow: /two" in (build.out / "robots.txt").read_bytes()


def test_a_deleted_or_modified_output_file_is_written_again(build) -> None:
    build()
    feed = build.out / "feed.atom"
    page = build.out / "feeds.opml"
    right_feed, right_page = feed.read_bytes(), page.read_bytes()
    feed.unlink()
    page.write_bytes(b"x" * len(right_page))  # same size, new mtime
    printed = build()
    assert SHORTCUT not in printed and _written(printed) == 2
    assert feed.read_bytes() == right_feed and page.read_bytes() == right_page
    assert SHORTCUT in build()


def test_a_touched_file_takes_the_normal_build(build) -> None:
    """Same bytes, other mtime: not as recorded, so the normal build writes it again."""
    build()
    feed = build.out / "feed.atom"
    right = feed.read_bytes()
    st = feed.stat()
    os.utime(feed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    printed = build()
    assert SHORTCUT not in printed and _written(printed) == 1 and feed.read_bytes() == right
    assert SHORTCUT in build()
    # A file that is no part of the build is left alone, by either way.
    (build.out / "topics" / "stranger.txt").write_text("not ours")
    assert SHORTCUT in build() and (build.out / "topics" / "stranger.txt").exists()


def test_a_manifest_of_a_previous_release_takes_the_normal_build(build) -> None:
    """A build made before the store was recorded in the manifest: no shortcut, once."""
    build()
    for name in (MANIFEST, MARKER):  # as that release wrote them: without the record
        data = json.loads((build.out / name).read_text())
        del data["store"]
        (build.out / name).write_text(json.dumps(data))
    before = {k: v for k, v in _state(build.out).items() if k not in (MANIFEST, MARKER)}
    printed = build()
    assert SHORTCUT not in printed and _written(printed) == 0
    after = {k: v for k, v in _state(build.out).items() if k not in (MANIFEST, MARKER)}
    assert after == before
    assert "store" in json.loads((build.out / MANIFEST).read_text())
    assert "store" in json.loads((build.out / MARKER).read_text())
    assert SHORTCUT in build()


def test_a_scheduled_article_coming_due_takes_the_normal_build(build, articles_dir) -> None:
    due = int(time.time()) + 3
    stamp = time.strftime("%Y-%m-%d %H:%M:%S +00:00", time.gmtime(due))
    write_article(articles_dir, "later.txt", "Embargoed Story Goes Live",
                  front=f"---\ndate: {stamp}\n---\n")
    build()
    assert b"Embargoed Story Goes Live" not in (build.out / "feed.atom").read_bytes()
    assert json.loads((build.out / MANIFEST).read_text())["store"]["valid_until"] <= due
    time.sleep(max(0.0, due + 0.5 - time.time()))
    printed = build()
    assert SHORTCUT not in printed
    assert b"Embargoed Story Goes Live" in (build.out / "feed.atom").read_bytes()


def test_a_folder_that_is_not_a_build_is_still_refused(build, tmp_path, articles_dir,
                                                       capsys) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    # Even one holding a copied manifest: the marker is what makes a build.
    build()
    (precious / MANIFEST).write_bytes((build.out / MANIFEST).read_bytes())
    code = main(["build", str(precious), "--folder", str(articles_dir), "--base-url", BASE_URL])
    assert code == 2 and "holds no earlier build" in capsys.readouterr().err
    assert sorted(p.name for p in precious.iterdir()) == [MANIFEST, "notes.txt"]
    assert os.path.getsize(precious / "notes.txt") == len("keep me")
