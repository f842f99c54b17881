"""`feedsvc build` into an earlier build: only changed files are written, files no
longer produced are removed, the rest keep their bytes and mtime, and
``.feedsvc-build.json`` says what happened (feedsvc.export)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from feedsvc.export import MANIFEST, MARKER, build_site
from tests.conftest import write_article


def _state(out: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file of the build (not the marker or manifest): bytes, mtime, inode."""
    found = {}
    for path in out.rglob("*"):
        name = path.relative_to(out).as_posix()
        if path.is_file() and name not in (MARKER, MANIFEST):
            st = path.stat()
            found[name] = (path.read_bytes(), st.st_mtime_ns, st.st_ino)
    return found


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def _age(out: Path) -> None:
    """Set every file's mtime an hour back, so a rewrite cannot keep it by chance."""
    for path in out.rglob("*"):
        if path.is_file():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 3_600_000_000_000))


def _reage_manifest(out: Path) -> None:
    """Keep the manifest's mtimes in step with :func:`_age` (as if built an hour ago)."""
    data = _manifest(out)
    for name, record in data["files"].items():
        record[2] = (out / name).stat().st_mtime_ns
    (out / MANIFEST).write_text(json.dumps(data))


def test_manifest_lists_every_file_with_its_sha256(make_app: Callable[..., Flask],
                                                   articles_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    summary = build_site(make_app(articles_dir), out)
    data = _manifest(out)
    files = _state(out)
    assert set(data["files"]) == set(files)
    for name, (body, _, _) in files.items():
        assert data["files"][name][0] == hashlib.sha256(body).hexdigest(), name
    assert sorted(data["changed"]) == sorted(files) and data["removed"] == []
    assert summary.changed == len(files) == summary.files


def test_a_rebuild_with_no_change_touches_nothing_and_renders_nothing(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build_site(make_app(articles_dir), out)
    _age(out)
    _reage_manifest(out)
    before = _state(out)
    manifest_before = (out / MANIFEST).read_bytes()
    app = make_app(articles_dir)  # a new process, as `feedsvc build` is each time
    publisher = app.extensions["feedsvc"]
    renders = publisher.renders
    summary = build_site(app, out)
    assert _state(out) == before  # same bytes, same mtime, same inode
    assert publisher.renders == renders, "an unchanged document was rendered"
    assert summary.changed == 0 and summary.removed == 0
    data = _manifest(out)
    assert data["changed"] == [] and data["removed"] == []
    assert data["files"] == json.loads(manifest_before)["files"]
    # Once it says so, another such rebuild leaves even the manifest alone.
    manifest_mtime = (out / MANIFEST).stat().st_mtime_ns
    build_site(make_app(articles_dir), out)
    assert (out / MANIFEST).stat().st_mtime_ns == manifest_mtime
    assert _state(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".feedsvc-")
                and p.name not in (MARKER, MANIFEST)]


def test_one_edit_writes_exactly_the_files_whose_bytes_changed(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    out, fresh = tmp_path / "site", tmp_path / "fresh"
    app = make_app(articles_dir)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    build_site(app, out)
    _age(out)
    _reage_manifest(out)
    before = _state(out)
    victim = sorted(articles_dir.glob("*.txt"))[3]
    text = victim.read_text(encoding="utf-8")
    victim.write_text(text.replace("\n\n", "\n\nAn added sentence.\n\n", 2), encoding="utf-8")
    gone = sorted(articles_dir.glob("*.txt"))[5]
    gone_slug = next(e.slug for e in publisher.collection.entries if e.article.path == gone.name)
    gone.unlink()
    write_article(articles_dir, "brand-new.txt", "A Brand New Story")
    assert publisher.refresh().changed
    renders = publisher.renders
    summary = build_site(app, out)
    rendered = publisher.renders - renders
    after = _state(out)
    build_site(app, fresh)  # the same collection built from scratch: what every file must hold
    expected = {name: body for name, (body, _, _) in _state(fresh).items()}
    assert {name: body for name, (body, _, _) in after.items()} == expected
    data = _manifest(out)
    written = {n for n in after if n not in before or after[n][1] != before[n][1]}
    differing = {n for n in after if n not in before or before[n][0] != after[n][0]}
    assert written == differing == set(data["changed"])
    assert {n for n in before if n not in after} == set(data["removed"])
    assert f"articles/{gone_slug}/index.html" in data["removed"]
    assert not (out / "articles" / gone_slug).exists(), "the emptied folder is removed"
    assert "articles/a-brand-new-story/index.html" in data["changed"]
    for name in set(after) - written:  # untouched: same bytes, same mtime, same inode
        assert after[name] == before[name], name
    assert summary.changed == len(written) and summary.removed == len(data["removed"])
    assert len(written) < len(after) // 2
    # Only what the change touched was rendered: never more documents than changed files.
    assert 0 < rendered <= len(written) // 2 + 4


def test_an_earlier_build_without_a_manifest_keeps_its_identical_files(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    app = make_app(articles_dir)
    build_site(app, out)
    (out / MANIFEST).unlink()  # made by a release before the manifest
    (out / "stale.html").write_bytes(b"no longer produced")
    _age(out)
    before = _state(out)
    summary = build_site(app, out)
    after = _state(out)
    assert "stale.html" not in after and _manifest(out)["removed"] == ["stale.html"]
    assert summary.changed == 0
    assert {n: v for n, v in before.items() if n != "stale.html"} == after


def test_with_the_store_a_rebuild_after_one_edit_reads_and_renders_only_that(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """As `feedsvc build` runs it: a new process each time, over the same store."""
    out = tmp_path / "site"
    first = make_app(articles_dir)
    build_site(first, out)
    first.extensions["feedsvc"].close()
    victim = sorted(articles_dir.glob("*.txt"))[2]
    victim.write_text(victim.read_text(encoding="utf-8") + "\nOne more paragraph.\n",
                      encoding="utf-8")
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns - 5_000_000_000))  # settled
    with caplog.at_level(logging.INFO, logger="feedsvc"):
        app = make_app(articles_dir)
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert loaded and loaded[-1].endswith("(1 files read)"), loaded
    publisher = app.extensions["feedsvc"]
    renders = publisher.renders
    summary = build_site(app, out)
    rendered = publisher.renders - renders
    assert 0 < summary.changed < summary.files // 10
    # Rendered: only documents that show the edited article (each of its feeds'
    # documents holding it, in every format and as a preview; its page; the pages
    # listing it; the OPML list, whose date moves with every change).
    entry = next(e for e in publisher.collection.entries if e.article.path == victim.name)
    feeds = 1 + len(entry.topics) + len(entry.authors)
    assert 0 < rendered <= feeds * 3 * 2 + 1 + feeds + 1, rendered


def test_a_build_renders_each_entry_fragment_once_whatever_the_cache_bound(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    """More fragments than the cache's byte bound holds: none is rendered twice.

    At 10,000 articles the bound evicted during the build, and 57,820
    fragments were rendered for 20,000. The bound is back afterwards.
    """
    folder = tmp_path / "many"
    body = "A lead paragraph that is long enough to make the fragment weigh something. " * 12
    for number in range(150):
        write_article(folder, f"story-{number:03d}.txt", f"Story number {number}",
                      author=f"Writer {number % 7}", topic=f"beat {number % 5}", body=body)
    app = make_app(folder, cache_bytes=1024 * 1024)  # the smallest bound allowed
    publisher = app.extensions["feedsvc"]
    fragments = publisher.fragments
    bounds = fragments.max_entries, fragments.max_bytes
    entries = len(publisher.collection.entries)
    assert entries == 150
    build_site(app, tmp_path / "site")
    # each entry once in Atom, RSS and JSON Feed, and once as the previews' list item
    assert fragments.misses == 4 * entries
    assert fragments.bytes > bounds[1], "the build's fragments did not outgrow the bound"
    assert (fragments.max_entries, fragments.max_bytes) == bounds


def test_feeds_whose_version_is_as_recorded_are_not_even_signed(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After one edit, only the edited article's feeds are signed (the rest keep the
    source their files record); the bytes equal a fresh build's, and a topic renamed
    in the topics file (its entries' versions move) is signed and rewritten."""
    import feedsvc.surrogate as surrogate

    out = tmp_path / "site"
    build_site(make_app(articles_dir), out)
    recorded = _manifest(out)["feeds"]
    assert recorded["site"] and len(recorded) > 3
    victim = sorted(articles_dir.glob("*.txt"))[1]
    victim.write_text(victim.read_text(encoding="utf-8") + "\nOne more paragraph.\n",
                      encoding="utf-8")
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns - 5_000_000_000))  # settled
    signed: list[str] = []
    for name in ("feed_signatures", "page_signature"):
        real = getattr(surrogate, name)

        def spy(ref, *args, real=real, **kwargs):  # noqa: ANN001, ANN202
            signed.append(surrogate.feed_key(ref))
            return real(ref, *args, **kwargs)

        monkeypatch.setattr(surrogate, name, spy)
    app = make_app(articles_dir)  # a new process, as `feedsvc build` is each time
    entry = next(e for e in app.extensions["feedsvc"].collection.entries
                 if e.article.path == victim.name)
    summary = build_site(app, out)
    expected = {"site", *(f"topic/{t.slug}" for t in entry.topics),
                *(f"author/{a.slug}" for a in entry.authors)}
    assert set(signed) == expected and summary.changed > 0
    assert _manifest(out)["feeds"] != recorded
    build_site(app, tmp_path / "fresh")
    fresh = {name: body for name, (body, _, _) in _state(tmp_path / "fresh").items()}
    assert {name: body for name, (body, _, _) in _state(out).items()} == fresh

    # The topics file renames the edited article's topic: its feeds are signed again.
    slug = entry.topics[0].slug
    topics = tmp_path / "topics.toml"
    topics.write_text(f'[topics.{slug}]\nname = "A Renamed Beat"\n')
    signed.clear()
    renamed = make_app(articles_dir, topics_file=str(topics))
    build_site(renamed, out)
    assert f"topic/{slug}" in signed
    assert "A Renamed Beat" in (out / "topics" / slug / "feed.atom").read_text()


def test_a_manifest_of_the_release_before_without_feed_versions_is_built_on(
        make_app: Callable[..., Flask], articles_dir: Path, tmp_path: Path) -> None:
    """A manifest with no ``feeds`` (the previous release wrote none): every feed is
    signed, unchanged files stay untouched, and the manifest gains the versions."""
    out = tmp_path / "site"
    build_site(make_app(articles_dir), out)
    data = _manifest(out)
    versions = data.pop("feeds")
    (out / MANIFEST).write_text(json.dumps(data))
    _age(out)
    _reage_manifest(out)
    before = _state(out)
    summary = build_site(make_app(articles_dir), out)
    assert summary.changed == 0 and _state(out) == before
    assert _manifest(out)["feeds"] == versions
