"""The static export: built into a folder, served by plain static servers, and
compared byte for byte with the live app over the same articles and ledger."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree, html

from feedsvc.cli import main
from feedsvc.errors import FeedsvcError
from feedsvc.export import MANIFEST, MARKER, build_site
from feedsvc.progress import Progress
from feedsvc.web import create_app
from tests.conftest import BASE_URL, BUNDLED, mounted_tmpfs, write_article
from tests.deploy_harness import NGINX, NGINX_MISSING, Nginx, fetch, free_port, site_from
from tests.feedcheck import ATOM, CHECKS

FEED_SIZE = 5  # small, so that feeds have archive documents too
FORMATS = ("atom", "rss", "json")
#: Content types a feed reader takes for each format: the registered one, or
#: the generic type a stock static server may know instead.
ACCEPTABLE = {
    "atom": {"application/atom+xml", "application/xml", "text/xml"},
    "rss": {"application/rss+xml", "application/x-rss+xml", "application/xml", "text/xml"},
    "json": {"application/feed+json", "application/json"},
}


@dataclass
class Export:
    out: Path
    live: Flask  # a second app over the same articles and ledger: "the live service"
    client: FlaskClient
    feeds: set[str]  # every feed URL path, found by following the live app's links
    pages: set[str]  # every page URL path (and OPML, static assets), likewise

    def live_get(self, path: str, gzipped: bool = False) -> bytes:
        headers = {"Accept-Encoding": "gzip"} if gzipped else {}
        response = self.client.get(path, headers=headers)
        assert response.status_code == 200, path
        return response.data


def _config(tmp: Path, articles: Path) -> dict[str, object]:
    return {"articles_dir": str(articles), "ledger_path": str(tmp / "ledger.sqlite3"),
            "base_url": BASE_URL, "reload_interval": 0, "feed_size": FEED_SIZE}


SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def _local(url: str) -> str:
    assert url.startswith(BASE_URL), url
    return url.removeprefix(BASE_URL)


def _live_feeds(client: FlaskClient, app: Flask) -> set[str]:
    """Each feed's documents, by following prev-archive links from the live app."""
    paths: set[str] = set()
    for ref in app.extensions["feedsvc"].collection.feed_refs():
        document: str | None = f"{ref.prefix}/feed"
        while document:
            paths.update(f"{document}.{fmt}" for fmt in FORMATS)
            atom = etree.fromstring(client.get(document + ".atom").data)
            older = atom.find(f"{ATOM}link[@rel='prev-archive']")
            document = _local(older.get("href")).removesuffix(".atom") if older is not None \
                else None
    return paths


def _live_pages(client: FlaskClient) -> set[str]:
    """Pages reached from the home page and from every entry of the site feed."""
    pages = {"/", "/topics/", "/authors/", "/feeds.opml"}
    home = html.fromstring(client.get("/").data)
    pages |= {_local(h) for h in home.xpath("//a/@href | //link/@href")
              if h.startswith(BASE_URL) and (h.endswith("/") or "/static/" in h)}
    items = client.get("/feed.json?limit=1000").get_json()["items"]
    pages |= {_local(item["url"]) for item in items}
    pages.add("/static/feed.xsl")  # named only in the feeds' <?xml-stylesheet?>
    # What a crawler finds: robots.txt names both sitemaps, the index names the rest.
    pages.add("/robots.txt")
    for line in client.get("/robots.txt").get_data(as_text=True).splitlines():
        if line.startswith("Sitemap: "):
            sitemap = _local(line.removeprefix("Sitemap: "))
            pages.add(sitemap)
            root = etree.fromstring(client.get(sitemap).data)
            found = root.findall(f"{SITEMAP_NS}sitemap/{SITEMAP_NS}loc")
            pages |= {_local(loc.text) for loc in found}
    return pages


def _file(out: Path, url_path: str) -> Path:
    """Where the export should have put ``url_path`` (the layout in feedsvc/export.py)."""
    relative = url_path.lstrip("/")
    if not relative or relative.endswith("/"):
        return out / relative / "index.html"
    if relative.startswith("articles/"):
        return out / relative / "index.html"
    return out / relative


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    tmp = tmp_path_factory.mktemp("export")
    articles = tmp / "articles"
    shutil.copytree(BUNDLED, articles)
    builder = create_app(_config(tmp, articles), instance_path=tmp / "builder")
    summary = build_site(builder, tmp / "site")
    builder.extensions["feedsvc"].close()
    live = create_app(_config(tmp, articles), instance_path=tmp / "live")
    client = live.test_client()
    feeds, pages = _live_feeds(client, live), _live_pages(client)
    assert summary.feeds == len(feeds)
    assert summary.previews == len(feeds)  # every format has a browser preview
    return Export(tmp / "site", live, client, feeds, pages)


def test_every_feed_is_exported_byte_for_byte(export: Export) -> None:
    exported = {"/" + p.relative_to(export.out).as_posix() for p in export.out.rglob("feed.*")
                if p.suffix in (".atom", ".rss", ".json")}
    assert exported == export.feeds
    assert any("/archive/" in path for path in exported), "FEED_SIZE should make archives"
    for path in sorted(export.feeds):
        body = _file(export.out, path).read_bytes()
        assert body == export.live_get(path), path
        packed = _file(export.out, path).with_name(Path(path).name + ".gz").read_bytes()
        assert packed == export.live_get(path, gzipped=True), path
        CHECKS[path.rsplit(".", 1)[1]](body)


def test_every_page_opml_and_asset_is_exported(export: Export) -> None:
    assert any(p.startswith("/articles/") for p in export.pages)
    assert "/static/style.css" in export.pages
    for path in sorted(export.pages):
        target = _file(export.out, path)
        assert target.read_bytes() == export.live_get(path), path
        assert gzip.decompress(target.with_name(target.name + ".gz").read_bytes()) == \
            target.read_bytes()
    expected = {_file(export.out, p) for p in export.feeds | export.pages}
    expected |= {_file(export.out, p + ".html") for p in export.feeds}  # the previews
    expected |= {p.with_name(p.name + ".gz") for p in expected}
    expected.add(export.out / MARKER)
    expected.add(export.out / MANIFEST)
    assert {p for p in export.out.rglob("*") if p.is_file()} == expected


class StaticServer:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("python -m http.server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def http_server(export: Export) -> Iterator[StaticServer]:
    server = StaticServer(export.out)
    yield server
    server.stop()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip()


def test_plain_static_server_serves_the_same_feeds(export: Export,
                                                   http_server: StaticServer) -> None:
    """``python -m http.server`` over the folder: same URLs, same bytes, usable types."""
    for path in sorted(export.feeds):
        reply = fetch(http_server.port, path)
        assert reply.status == 200, path
        assert reply.body == export.live_get(path), path
        fmt = path.rsplit(".", 1)[1]
        assert _media_type(reply.headers["Content-Type"]) in ACCEPTABLE[fmt], (
            path, reply.headers["Content-Type"])
    home = fetch(http_server.port, "/")
    assert home.status == 200 and home.body == export.live_get("/")


def test_plain_static_server_keeps_article_urls(export: Export,
                                                http_server: StaticServer) -> None:
    """The feeds link /articles/<slug>: a stock server redirects it to the folder's page."""
    articles = sorted(p for p in export.pages if p.startswith("/articles/"))
    for path in articles[:5]:
        first = fetch(http_server.port, path)
        assert first.status in (301, 302, 308), path
        assert first.headers["Location"] == path + "/"
        page = fetch(http_server.port, path + "/")
        assert page.status == 200 and page.body == export.live_get(path)
        assert _media_type(page.headers["Content-Type"]) == "text/html"


@pytest.fixture(scope="module")
def nginx_static(export: Export, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip(NGINX_MISSING)
    site = site_from("feedsvc-static.conf", {
        "listen 80;": "listen 127.0.0.1:@PORT@;",
        "listen [::]:80;": "",
        "root /srv/feedsvc/site;": f"root {export.out};",
    })
    server = Nginx(tmp_path_factory.mktemp("nginx-static"), site)
    yield server
    server.stop()


def test_nginx_serves_the_export_as_the_live_service(export: Export, nginx_static: Nginx) -> None:
    """deploy/nginx/feedsvc-static.conf: same URLs, bytes, content types and gzip as live."""
    for path in sorted(export.feeds | export.pages):
        live = export.client.get(path)
        reply = fetch(nginx_static.port, path)
        assert reply.status == 200, path
        assert reply.body == live.data, path
        if not path.startswith("/static/"):  # Flask's own guess for assets differs slightly
            assert reply.headers["Content-Type"] == live.headers["Content-Type"], path
        zipped = fetch(nginx_static.port, path, {"Accept-Encoding": "gzip"})
        assert zipped.headers["Content-Encoding"] == "gzip", path
        assert gzip.decompress(zipped.body) == live.data, path
        if not path.startswith("/static/"):
            assert zipped.body == export.live_get(path, gzipped=True), path
    assert fetch(nginx_static.port, "/" + MARKER).status == 404
    # Nor is a build in progress, staged inside the folder nginx serves.
    staging = export.out / ".feedsvc-staging-test"
    (staging / "topics").mkdir(parents=True)
    (staging / "feed.atom").write_bytes(b"half a build")
    try:
        for path in ("/.feedsvc-staging-test/feed.atom", "/.feedsvc-staging-test/"):
            assert fetch(nginx_static.port, path).status == 404, path
    finally:
        shutil.rmtree(staging)


CHROME_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_export_writes_each_preview_beside_its_feed(export: Export) -> None:
    """``feed.atom.html``: the bytes the live service sends a browser at ``/feed.atom``."""
    for path in sorted(export.feeds):
        live = export.client.get(path, headers={"Accept": CHROME_ACCEPT})
        assert live.headers["Content-Type"] == "text/html; charset=utf-8", path
        target = _file(export.out, path + ".html")
        assert target.read_bytes() == live.data, path
        zipped = export.client.get(path, headers={"Accept": CHROME_ACCEPT,
                                                  "Accept-Encoding": "gzip"})
        assert target.with_name(target.name + ".gz").read_bytes() == zipped.data, path


def test_nginx_negotiates_the_export_like_the_live_service(export: Export,
                                                           nginx_static: Nginx) -> None:
    """feedsvc-static.conf: browsers get the preview at a feed URL, readers the feed."""
    paths = sorted(export.feeds)
    for path in paths[:: max(1, len(paths) // 12)] + ["/archive/1/feed.rss"]:
        for accept in (CHROME_ACCEPT, "application/atom+xml, */*;q=0.1", "*/*", None,
                       "text/html;q=0, */*"):
            headers = {"Accept": accept} if accept else {}
            live = export.client.get(path, headers=headers)
            reply = fetch(nginx_static.port, path, headers)
            assert reply.status == 200, (path, accept)
            assert reply.body == live.data, (path, accept)
            assert reply.headers["Content-Type"] == live.headers["Content-Type"], (path, accept)
            assert reply.headers["Vary"] == live.headers["Vary"] == "Accept, Accept-Encoding"
            assert reply.headers["Cache-Control"] == "public, max-age=300"
        zipped = fetch(nginx_static.port, path, {"Accept": CHROME_ACCEPT,
                                                 "Accept-Encoding": "gzip"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped.body) == export.client.get(
            path, headers={"Accept": CHROME_ACCEPT}).data


# -- the command ------------------------------------------------------------------------


def test_build_command_matches_the_live_app(tmp_path: Path, articles_dir: Path,
                                            make_app, monkeypatch, capsys) -> None:
    ledger = tmp_path / "ledger.sqlite3"  # the ledger make_app's apps use
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(ledger))
    out = tmp_path / "public"
    argv = ["build", str(out), "--folder", str(articles_dir), "--base-url", BASE_URL]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("built ") and str(out) in captured.out
    # Not a terminal here: plain progress lines, ending at 100%.
    lines = [line for line in captured.err.splitlines() if line.startswith("build: ")]
    assert 2 <= len(lines) <= 11 and lines[-1].endswith("(100%)")
    assert "\r" not in captured.err
    client = make_app(articles_dir).test_client()
    for path in ("/feed.atom", "/topics/nato/feed.rss", "/authors/sara-wazowski/feed.json",
                 "/feeds.opml"):
        assert (out / path.lstrip("/")).read_bytes() == client.get(path).data, path

    # A rebuild replaces the folder whole: a deleted article's page goes too.
    gone = write_article(articles_dir, "short-lived.txt", "A Short Lived Story")
    assert main(argv) == 0
    assert (out / "articles" / "a-short-lived-story" / "index.html").is_file()
    gone.unlink()
    assert main(argv) == 0
    assert not (out / "articles" / "a-short-lived-story").exists()
    assert (out / MARKER).is_file() and (out / "feed.atom").is_file()
    assert not list(tmp_path.glob(".public.*")), "nothing staged beside OUTDIR"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MARKER,
                                                                                 MANIFEST]


def test_build_refuses_a_folder_that_is_not_a_build(tmp_path: Path, articles_dir: Path,
                                                    make_app, capsys) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code = main(["build", str(precious), "--folder", str(articles_dir), "--base-url", BASE_URL])
    assert code == 2
    assert "holds no earlier build" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    # And a site needs a public URL: without one nothing is written.
    app = make_app(articles_dir, base_url=None)
    with pytest.raises(FeedsvcError, match="public URL"):
        build_site(app, tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_build_without_base_url_setting_uses_the_given_one(tmp_path: Path, articles_dir: Path,
                                                           make_app) -> None:
    """Links come from the base URL given, as a live app makes them from the request host."""
    app = make_app(articles_dir, base_url=None)
    build_site(app, tmp_path / "site", "https://static.example.net")
    live = app.test_client().get("/topics/nato/feed.atom", base_url="https://static.example.net")
    body = (tmp_path / "site" / "topics" / "nato" / "feed.atom").read_bytes()
    assert body == live.data
    assert b'href="https://static.example.net/static/feed.xsl"' in body


def test_progress_draws_a_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress("build", stream, tty=True, interval=0)
    for done in range(0, 101, 25):
        progress(done, 100, f"/item/{done}")
    progress.close("finished")
    text = stream.getvalue()
    assert text.count("\r") >= 5
    assert "build [" in text and " 50% 50/100" in text and "100% 100/100" in text
    assert "#" * 10 in text and text.endswith("finished\n")


def test_progress_ends_its_bar_when_the_step_fails() -> None:
    """As a context manager (the CLI's commands), the bar's line is cleared however the
    step ends, so the error printed next starts on a clean line."""
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Progress("migrate", stream, tty=True, interval=0) as bar:
        bar(3, 10, "/item")
        raise RuntimeError("the step failed")
    assert "migrate [" in stream.getvalue()
    assert stream.getvalue().endswith("\r")  # the bar overwritten: the line is free


def test_progress_prints_a_line_per_tenth_elsewhere() -> None:
    stream = io.StringIO()
    progress = Progress("check", stream, tty=False)
    for done in range(1, 1001):
        progress(done, 1000)
    lines = stream.getvalue().splitlines()
    # The first item tells the total; then one line per tenth.
    assert len(lines) == 11 and lines[:2] == ["check: 1/1000 (0%)", "check: 100/1000 (10%)"]
    assert lines[-1] == "check: 1000/1000 (100%)"


# -- a build never loses the previous one ------------------------------------------------


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs mounted at a fresh folder: OUTDIR as a mount point (a Docker volume)."""
    with mounted_tmpfs(tmp_path / "mnt", "64m") as mount:
        yield mount


def _build_argv(out: Path, articles: Path) -> list[str]:
    return ["build", str(out), "--folder", str(articles), "--base-url", BASE_URL]


def test_build_into_a_mount_point_replaces_the_previous_build(
        tmpfs: Path, tmp_path: Path, articles_dir: Path, monkeypatch, capsys) -> None:
    """The cross-device case: OUTDIR is a tmpfs; staging is inside it, so all moves rename."""
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    assert main(_build_argv(tmpfs, articles_dir)) == 0
    first = _tree(tmpfs)
    assert "feed.atom" in first and MARKER in first
    write_article(articles_dir, "mounted.txt", "A Story Built Onto A Mount")
    (articles_dir / "ukraine-drops-nato-bid.txt").unlink(missing_ok=True)
    assert main(_build_argv(tmpfs, articles_dir)) == 0, capsys.readouterr().err
    second = _tree(tmpfs)
    assert "articles/a-story-built-onto-a-mount/index.html" in second
    assert second["feed.atom"] != first["feed.atom"]
    assert b"A Story Built Onto A Mount" in second["feed.atom"]
    assert not [p for p in tmpfs.iterdir() if p.name.startswith(".feedsvc-")
                and p.name not in (MARKER, MANIFEST)], "no hidden staging or old folder left"
    assert not list(tmp_path.glob(".mnt*")), "nothing staged beside the mount"


def test_a_read_only_mount_keeps_the_previous_build(
        tmpfs: Path, tmp_path: Path, articles_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    assert main(_build_argv(tmpfs, articles_dir)) == 0
    before = _tree(tmpfs)
    capsys.readouterr()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    write_article(articles_dir, "late.txt", "Too Late For The Read Only Mount")
    assert main(_build_argv(tmpfs, articles_dir)) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("feedsvc: ")]
    assert len(said) == 1 and err.rstrip().endswith(said[0]), err
    assert "Read-only file system" in said[0] and "previous build is unchanged" in said[0]
    assert "Traceback" not in err
    assert _tree(tmpfs) == before


def test_a_file_size_limit_keeps_the_previous_build(tmp_path: Path, articles_dir: Path) -> None:
    """ENOSPC's cousin EFBIG, for real: the build runs under ``prlimit --fsize``."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    import os

    out = tmp_path / "public"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env["FEEDSVC_LEDGER_PATH"] = str(tmp_path / "ledger.sqlite3")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    command = [sys.executable, "-m", "feedsvc.cli", *_build_argv(out, articles_dir)]
    first = subprocess.run(command, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = _tree(out)
    # Room for the ledger and its -wal and -shm, not for a feed holding this article.
    write_article(articles_dir, "huge.txt", "A Very Long Story", body="Words and words. " * 30000)
    limited = ["prlimit", "--fsize=262144", "--", *command]
    done = subprocess.run(limited, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("feedsvc: ") and "File too large" in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert "previous build is unchanged" in lines[-1]
    assert _tree(out) == before
    assert sorted(p.name for p in out.iterdir()
                  if p.name.startswith(".feedsvc-")) == [MARKER, MANIFEST]


def test_a_build_that_fails_midway_leaves_no_trace(tmp_path: Path, articles_dir: Path,
                                                   make_app, monkeypatch) -> None:
    """A failure while moving the new build in puts every moved entry back."""
    from feedsvc import export as export_module

    app = make_app(articles_dir)
    out = tmp_path / "site"
    build_site(app, out)
    before = _tree(out)
    write_article(articles_dir, "moved.txt", "A Story That Never Lands")
    app.extensions["feedsvc"].settle_seconds = 0
    assert app.extensions["feedsvc"].refresh().changed
    real_rename = export_module.os.rename
    calls = {"n": 0}

    def flaky(source, target):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 5:  # well into the swap: some old and new entries have moved
            raise OSError(28, "No space left on device", str(source))
        return real_rename(source, target)

    monkeypatch.setattr(export_module.os, "rename", flaky)  # Path.rename calls it too
    with pytest.raises(FeedsvcError, match="No space left on device.*previous build is unchanged"):
        build_site(app, out)
    monkeypatch.setattr(export_module.os, "rename", real_rename)
    assert calls["n"] >= 5
    assert _tree(out) == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MARKER,
                                                                                 MANIFEST]


def test_a_folder_the_builder_may_not_write_keeps_the_previous_build(
        world_dir: Path, articles_dir: Path, make_app) -> None:
    """Permissions: the build runs as a user who may read OUTDIR but not write it."""
    from tests.unprivileged import run_unprivileged

    app = make_app(articles_dir)
    out = world_dir / "site"
    build_site(app, out)
    before = _tree(out)
    out.chmod(0o755)

    def attempt() -> str:
        try:
            build_site(app, out)
        except FeedsvcError as exc:
            return str(exc)
        return "built"

    said = run_unprivileged(attempt)
    assert "Permission denied" in said and "previous build is unchanged" in said, said
    assert _tree(out) == before


def test_a_full_disk_keeps_the_previous_build(tmpfs: Path, tmp_path: Path, articles_dir: Path,
                                              monkeypatch, capsys) -> None:
    """A real ENOSPC: the mount has a little room, less than the files the change rewrites."""
    import os

    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    assert main(_build_argv(tmpfs, articles_dir)) == 0
    before = _tree(tmpfs)
    fs = os.statvfs(tmpfs)
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    subprocess.run(["mount", "-o", f"remount,size={used + 32768}", str(tmpfs)], check=True)
    capsys.readouterr()
    write_article(articles_dir, "no-room.txt", "A Story With No Room Left")
    assert main(_build_argv(tmpfs, articles_dir)) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("feedsvc: ")]
    assert len(said) == 1 and "No space left on device" in said[0], err
    assert "previous build is unchanged" in said[0] and "Traceback" not in err
    assert _tree(tmpfs) == before
    assert sorted(p.name for p in tmpfs.iterdir()
                  if p.name.startswith(".feedsvc-")) == [MARKER, MANIFEST]


def test_forked_workers_build_the_files_one_process_builds(tmp_path: Path, articles_dir: Path,
                                                           make_app, db_url: str) -> None:
    """Two forked renderers (what a large build uses, see export._render_processes) write
    every file with the bytes, digests and sources that rendering in one process gives,
    on either store (each worker opens its own connections)."""
    for number in range(12):  # more feeds and archives than the bundled ones alone
        write_article(articles_dir, f"forked-{number}.txt", f"Forked Story Number {number}")
    store = {"database_url": db_url, "ledger_path": None} if db_url.startswith("postgres") \
        else {}
    app = make_app(articles_dir, feed_size=FEED_SIZE, **store)
    alone = build_site(app, tmp_path / "alone", processes=1)
    forked = build_site(app, tmp_path / "forked", processes=2)
    assert forked.files == alone.files > 100 and forked.changed == forked.files
    one, two = _tree(tmp_path / "alone"), _tree(tmp_path / "forked")
    assert {k: v for k, v in two.items() if not k.startswith(".")} == \
        {k: v for k, v in one.items() if not k.startswith(".")}
    records = [json.loads(one[MANIFEST])["files"], json.loads(two[MANIFEST])["files"]]
    assert [{k: (r[0], r[1], r[3]) for k, r in files.items()} for files in records][0] == \
        {k: (r[0], r[1], r[3]) for k, r in records[1].items()}
    # No staged file is left, and the app in this process still reads its store.
    assert sorted(p.name for p in (tmp_path / "forked").iterdir()
                  if p.name.startswith(".")) == [MARKER, MANIFEST]
    assert app.test_client().get("/feed.atom").status_code == 200
    # Into the forked build again: nothing changed, nothing written, by workers or not
    # (the manifest alone is rewritten: it says what this run changed).
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "forked").rglob("*.atom")}
    again = build_site(app, tmp_path / "forked", processes=2)
    assert again.changed == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "forked").rglob("*.atom")} == mtimes


def test_a_full_disk_in_a_forked_worker_keeps_the_previous_build(
        tmpfs: Path, articles_dir: Path, make_app) -> None:
    """A real ENOSPC met by a worker process: the build fails with the one clear error,
    and the previous build stands, its staging folder gone."""
    import os

    app = make_app(articles_dir)
    build_site(app, tmpfs, processes=2)
    before = _tree(tmpfs)
    fs = os.statvfs(tmpfs)
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    subprocess.run(["mount", "-o", f"remount,size={used + 32768}", str(tmpfs)], check=True)
    write_article(articles_dir, "no-room.txt", "A Story With No Room Left",
                  body="Words that need room. " * 4000)
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    assert publisher.refresh().changed
    with pytest.raises(FeedsvcError, match="No space left on device.*previous build is unchanged"):
        build_site(app, tmpfs, processes=2)
    assert _tree(tmpfs) == before
    assert sorted(p.name for p in tmpfs.iterdir()
                  if p.name.startswith(".feedsvc-")) == [MARKER, MANIFEST]


def test_an_export_error_in_a_forked_worker_is_raised_as_it_is(
        tmp_path: Path, articles_dir: Path, make_app, monkeypatch) -> None:
    """What a worker raises comes back whole (type, folder and reason), not as a pickling
    error; here a feed that vanished mid-build, as _feed reports it."""
    from feedsvc import export as export_module

    app = make_app(articles_dir)
    real = export_module._feed

    def vanished(publisher, doc, base_url, outdir):  # noqa: ANN001, ANN202
        if doc.url_path.startswith("/topics/"):
            raise export_module.ExportError(outdir, f"{doc.url_path}: no such feed any more")
        return real(publisher, doc, base_url, outdir)

    monkeypatch.setattr(export_module, "_feed", vanished)  # inherited by the fork
    with pytest.raises(export_module.ExportError, match="no such feed any more") as raised:
        build_site(app, tmp_path / "site", processes=2)
    assert raised.value.outdir == tmp_path / "site"
    assert not [p for p in (tmp_path / "site").iterdir() if p.name.startswith(".feedsvc-")]
