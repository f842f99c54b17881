"""Static export: every feed, page and asset as files, for a CDN or object storage.

The bytes are the live service's: feeds and their gzip form come from
:meth:`Publisher.feed`, the call the feed routes answer with, and pages,
OPML and assets from the app itself through Flask's test client (the same
routes, templates, render cache and gzip). So an exported file equals what
``gunicorn wsgi:app`` serves for the same articles, ledger and base URL.

Layout: a URL is written at its own path, so a static host serves the same
URLs with the content type of the extension (nginx's stock ``mime.types``
maps ``.atom``, ``.rss``, ``.json``, ``.html``, ``.css``):

- ``/feed.atom`` -> ``feed.atom``; archives likewise under ``archive/<k>/``;
- ``/`` and ``/topics/<slug>/`` -> ``index.html`` in that folder;
- ``/articles/<slug>`` (no trailing slash) -> ``articles/<slug>/index.html``:
  every static host answers ``/articles/<slug>`` for a folder with a redirect
  to ``/articles/<slug>/``, so the URLs in the feeds keep working with no
  host configuration (nginx can serve it without the redirect:
  ``try_files $uri $uri/index.html =404``). A file named ``<slug>`` with no
  extension would get no HTML content type, and ``<slug>.html`` would need a
  rewrite on every host that does not add ``.html`` itself;
- every file has a ``.gz`` beside it (the app's own gzip bytes for feeds and
  pages), for nginx's ``gzip_static`` or an upload with
  ``Content-Encoding: gzip``;
- a feed URL's HTML preview (what the live service sends a browser there)
  goes beside the feed, at the feed's file name plus ``.html``
  (``feed.atom.html``). A static host cannot negotiate by itself, so the
  feed's own bytes stay at the feed's URL for every client; a host that can
  choose a file by ``Accept`` (deploy/nginx/feedsvc-static.conf) sends
  browsers the ``.html`` file there, as the live service does.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from flask import Flask
from flask.testing import FlaskClient

from . import urls
from .collection import FeedRef
from .documents import archive_count
from .errors import FeedsvcError
from .formats import formats
from .publisher import Publisher

#: Written at the top of every build; a folder without it is never replaced.
MARKER = ".feedsvc-build"
#: Hidden folders inside OUTDIR while a build is put in place: the new build, the old one.
STAGING_PREFIX = ".feedsvc-staging-"
OLD_PREFIX = ".feedsvc-old-"

Progress = Callable[[int, int, str], None]


class ExportError(FeedsvcError):
    """The site could not be exported to ``outdir``; ``reason`` says why."""

    def __init__(self, outdir: Path, reason: str) -> None:
        self.outdir = outdir
        self.reason = reason
        super().__init__(f"{outdir}: {reason}")


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """What one build wrote."""

    outdir: Path
    base_url: str
    version: str  # the collection version exported (Publisher.version)
    feeds: int  # feed documents (every format and archive), without .gz or previews
    pages: int  # HTML pages and the OPML list
    assets: int  # files under /static/
    files: int  # everything written, .gz included
    bytes: int
    seconds: float
    previews: int = 0  # HTML previews of feed documents (``feed.atom.html``)


@dataclass(frozen=True, slots=True)
class FeedDoc:
    """One feed document to export: a feed, a format, an archive number or None,
    and whether it is the document's HTML preview rather than the feed."""

    ref: FeedRef
    fmt: str
    archive: int | None = None
    preview: bool = False

    @property
    def url_path(self) -> str:
        return urls.feed(self.ref, self.fmt, self.archive)

    @property
    def file(self) -> PurePosixPath:
        """Where it goes: the URL's path; a preview beside it with ``.html`` added."""
        relative = self.url_path.lstrip("/")
        return PurePosixPath(relative + ".html" if self.preview else relative)


def site_paths(app: Flask, base_url: str | None = None,
               ) -> tuple[list[FeedDoc], list[str], list[str]]:
    """Every document the site has: feeds, pages (with OPML, robots.txt and the
    sitemaps), static assets (URL paths)."""
    publisher: Publisher = app.extensions["feedsvc"]
    collection = publisher.collection
    size = app.config["FEEDSVC"].feed_size
    feeds: list[FeedDoc] = []
    for ref in collection.feed_refs():
        archives = archive_count(len(collection.feed_entries(ref) or ()), size)
        for number in [None, *range(1, archives + 1)]:
            for fmt in formats():
                feeds.append(FeedDoc(ref, fmt.name, number))
                if fmt.preview:
                    feeds.append(FeedDoc(ref, fmt.name, number, preview=True))
    pages = [urls.HOME, urls.TOPICS, urls.AUTHORS, urls.OPML]
    pages += [urls.topic(slug) for slug in collection.topics]
    pages += [urls.author(slug) for slug in collection.authors]
    pages += [urls.article(entry.slug) for entry in collection.entries]
    # robots.txt and the sitemaps, as the routes serve them (the news sitemap as of now).
    from .sitemaps import oldest_first, plan_article_sitemaps

    base = base_url or app.config["FEEDSVC"].base_url or ""
    plans = plan_article_sitemaps(oldest_first(collection), base.rstrip("/"))
    pages += [urls.ROBOTS, urls.SITEMAP_INDEX, urls.PAGES_SITEMAP, urls.NEWS_SITEMAP]
    pages += [urls.articles_sitemap(number) for number in range(1, len(plans) + 1)]
    assets: list[str] = []
    static = Path(app.static_folder) if app.static_folder else None
    if static is not None and static.is_dir():
        url = (app.static_url_path or "/static").rstrip("/")
        assets = sorted(f"{url}/{p.relative_to(static).as_posix()}"
                        for p in static.rglob("*") if p.is_file())
    return feeds, pages, assets


def file_for(url_path: str, content_type: str) -> PurePosixPath:
    """Where the document at ``url_path`` goes in the export (see the module's doc)."""
    relative = url_path.lstrip("/")
    if not relative or relative.endswith("/"):
        return PurePosixPath(relative + "index.html")
    if content_type.startswith("text/html"):
        return PurePosixPath(relative) / "index.html"
    return PurePosixPath(relative)


def build_site(app: Flask, outdir: str | os.PathLike[str], base_url: str | None = None,
               progress: Progress | None = None) -> BuildSummary:
    """Write the whole site of ``app`` into ``outdir``, replacing an earlier build.

    ``base_url`` is the public URL the files will be served at; it defaults
    to the app's FEEDSVC_BASE_URL, and may only differ from it when that is
    unset (then links are made from it, as they would be from a request's
    host). The files are written to a hidden folder inside ``outdir`` (its
    own filesystem, even when it is a mount point) and swapped in only once
    complete (see :func:`_swap_in`), so a failure of any kind (a full disk,
    a size limit, permissions) leaves the previous build as it was. Raises
    :class:`ExportError` if ``outdir`` holds anything but an earlier build,
    or if the articles changed while building (run it again; the CLI's app
    does not reload while it builds).
    """
    started = time.perf_counter()
    outdir = Path(outdir)
    settings = app.config["FEEDSVC"]
    if settings.base_url and base_url and base_url.rstrip("/") != settings.base_url:
        raise ExportError(outdir, f"base URL {base_url} differs from FEEDSVC_BASE_URL "
                          f"{settings.base_url}, which the app's links use")
    base = (base_url or settings.base_url or "").rstrip("/")
    if not base:
        raise ExportError(outdir, "a static site needs its public URL: give a base URL "
                          "or set FEEDSVC_BASE_URL")
    _check_replaceable(outdir)
    publisher: Publisher = app.extensions["feedsvc"]
    # Every entry appears in several feeds (site, topics, author; archives):
    # keep every rendered entry for the build instead of re-rendering it
    # each time a bounded cache dropped it (two formats an entry).
    fragments = publisher.fragments
    fragments.max_entries = max(fragments.max_entries, 2 * len(publisher.collection.entries) + 64)
    version = publisher.version
    feeds, pages, assets = site_paths(app, base)
    todo: list[FeedDoc | str] = [*feeds, *pages, *assets]
    staging = _make_staging(outdir)
    files = written = 0
    made: set[Path] = set()
    try:
        client = app.test_client()
        for done, item in enumerate(todo, 1):
            if isinstance(item, FeedDoc):
                url_path = item.url_path
                relative, body, packed = _feed(publisher, item, base, outdir)
            else:
                url_path = item
                relative, body, packed = _fetch(client, url_path, base, outdir)
            target = staging / relative
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            target.write_bytes(body)
            target.with_name(target.name + ".gz").write_bytes(packed)
            files += 2
            written += len(body) + len(packed)
            if progress is not None:
                progress(done, len(todo), url_path)
        if publisher.version != version:
            raise ExportError(outdir, "the articles changed during the build; run it again")
        previews = sum(doc.preview for doc in feeds)
        summary = BuildSummary(outdir=outdir, base_url=base, version=version,
                               feeds=len(feeds) - previews, previews=previews,
                               pages=len(pages), assets=len(assets),
                               files=files, bytes=written,
                               seconds=round(time.perf_counter() - started, 3))
        record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()}
        (staging / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(outdir, f"cannot write the new build: {_os_reason(exc)}; "
                          "the previous build is unchanged") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, outdir)
    return summary


def _feed(publisher: Publisher, doc: FeedDoc, base_url: str,
          outdir: Path) -> tuple[PurePosixPath, bytes, bytes]:
    """A feed document (or its preview) straight from the publisher: what the
    service's feed routes send a reader (or a browser)."""
    rendered = publisher.feed(doc.ref, doc.fmt, base_url, archive=doc.archive,
                              preview=doc.preview)
    if rendered is None:
        raise ExportError(outdir, f"{doc.url_path}: no such feed any more; did the articles "
                          "change during the build?")
    return doc.file, rendered.body, rendered.gzip_body


def _fetch(client: FlaskClient, url_path: str, base_url: str,
           outdir: Path) -> tuple[PurePosixPath, bytes, bytes]:
    """A page or asset through the app's routes: the file and its gzip form.

    One request, taking gzip: the plain bytes are its decompression, so both
    files are exactly what the service sends (ETags and all).
    """
    response = client.get(url_path, base_url=base_url, headers={"Accept-Encoding": "gzip"})
    if response.status_code != 200:
        raise ExportError(outdir, f"{url_path}: the app answered {response.status_code} "
                          f"{response.get_data()[:200]!r}")
    data = response.get_data()
    if response.headers.get("Content-Encoding") == "gzip":
        packed, body = data, gzip.decompress(data)
    else:  # static assets: the app sends them as they are
        packed, body = gzip.compress(data, compresslevel=9, mtime=0), data
    return file_for(url_path, response.headers.get("Content-Type", "")), body, packed


def _ours(name: str) -> bool:
    """A hidden folder of a build in progress (or of one that died): never part of a build."""
    return name.startswith((STAGING_PREFIX, OLD_PREFIX))


def _check_replaceable(outdir: Path) -> None:
    try:
        if outdir.is_symlink() or (outdir.exists() and not outdir.is_dir()):
            raise ExportError(outdir, "exists and is not a folder")
        if not outdir.is_dir():
            return
        names = [p.name for p in outdir.iterdir() if not _ours(p.name)]
        marked = (outdir / MARKER).is_file()
    except OSError as exc:
        raise ExportError(outdir, f"cannot read it: {_os_reason(exc)}") from None
    if names and not marked:
        raise ExportError(outdir, f"is not empty and holds no earlier build ({MARKER}); "
                          "choose an empty or new folder")


def _os_reason(exc: OSError) -> str:
    """``strerror`` and the file, without a traceback: what an operator acts on."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        reason += f" ({exc.filename})"
    return reason


def _make_staging(outdir: Path) -> Path:
    """A hidden folder inside ``outdir``: on its own filesystem, so every move is a rename.

    ``outdir`` may be a mount point (a tmpfs, a Docker volume), which can be
    neither renamed nor replaced; a folder beside it may be on another
    filesystem, from which nothing can be renamed into it. Left-overs of a
    build that died are removed first.
    """
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        for child in outdir.iterdir():
            if _ours(child.name) and child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=outdir))
    except OSError as exc:
        raise ExportError(outdir, f"cannot write the new build: {_os_reason(exc)}; "
                          "the previous build is unchanged") from None


def _swap_in(staging: Path, outdir: Path) -> None:
    """Put the complete build in ``staging`` in place of the previous one, entry by entry.

    Every step is a rename inside ``outdir``'s filesystem: each top-level
    entry of the previous build is moved aside into a hidden folder and the
    new one renamed into its place, so a host serving ``outdir`` sees each
    entry old or new, never missing for longer than two renames. The
    marker goes last, with one atomic replace, so ``outdir`` holds a marker
    throughout and a later build may replace it. If any rename fails, what
    was moved is moved back and the previous build stands. Only then is the
    previous build deleted.
    """
    aside = Path(tempfile.mkdtemp(prefix=OLD_PREFIX, dir=outdir))
    moved: list[tuple[Path, Path]] = []  # (from, to), in order, to undo
    try:
        new_names = sorted(p.name for p in staging.iterdir() if p.name != MARKER)
        old_names = sorted(p.name for p in outdir.iterdir()
                           if not _ours(p.name) and p.name != MARKER)
        for name in sorted(set(new_names) | set(old_names)):
            if name in old_names:
                (outdir / name).rename(aside / name)
                moved.append((outdir / name, aside / name))
            if name in new_names:
                (staging / name).rename(outdir / name)
                moved.append((staging / name, outdir / name))
        os.replace(staging / MARKER, outdir / MARKER)
    except OSError as exc:
        for source, target in reversed(moved):
            with contextlib.suppress(OSError):
                target.rename(source)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        raise ExportError(outdir, f"cannot put the new build in place: {_os_reason(exc)}; "
                          "the previous build is unchanged") from None
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)
