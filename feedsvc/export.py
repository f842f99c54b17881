"""Static export: every feed, page and asset as files, for a CDN or object storage.

The bytes are the live service's: feeds and their gzip form come from
:meth:`Publisher.feed`, the call the feed routes answer with, and pages,
OPML and assets from the app itself through Flask's test client (the same
routes, templates, render cache and gzip). So an exported file equals what
``gunicorn wsgi:app`` serves for the same articles, ledger and base URL.

Into an earlier build the export is incremental (:func:`build_site`): only
files whose bytes changed are written, files no longer produced are removed,
the others keep their bytes and mtime, and ``.feedsvc-build.json`` records
every file's SHA-256 and what the run changed and removed.

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
import fcntl
import functools
import gzip
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

from . import urls
from .errors import FeedsvcError

# The rest of feedsvc is imported where it is used: a no-change rebuild
# (rebuild_unchanged) needs only the store and the folder sync, never the app.
if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

    from .collection import FeedRef
    from .config import Settings
    from .publisher import Publisher

#: Written at the top of every build; a folder without it is never replaced.
MARKER = ".feedsvc-build"
#: Every file of the build with its SHA-256, and what the last build changed and removed.
MANIFEST = ".feedsvc-build.json"
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

    def __reduce__(self) -> tuple[type[ExportError], tuple[Path, str]]:
        return type(self), (self.outdir, self.reason)  # raised in a build worker, re-raised here


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """What one build wrote."""

    outdir: Path
    base_url: str
    version: str  # the collection version exported (Publisher.version)
    feeds: int  # feed documents (every format and archive), without .gz or previews
    pages: int  # HTML pages and the OPML list
    assets: int  # files under /static/
    files: int  # every file of the build, .gz included
    bytes: int  # bytes written by this build
    seconds: float
    previews: int = 0  # HTML previews of feed documents (``feed.atom.html``)
    changed: int = 0  # files written by this build (new or with new bytes)
    removed: int = 0  # files of the previous build no longer produced
    rejected: int = 0  # article files left out (``feedsvc check`` says why)


@dataclass(frozen=True, slots=True)
class FeedDoc:
    """One feed document to export: a feed, a format, an archive number or None,
    and whether it is the document's HTML preview rather than the feed."""

    ref: FeedRef
    fmt: str
    archive: int | None = None
    preview: bool = False
    url_path: str = field(init=False)
    #: Where it goes: the URL's path; a preview beside it with ``.html`` added.
    name: str = field(init=False)

    def __post_init__(self) -> None:
        # Made once: a rebuild asks them of every document (31,612 at 10,000 articles).
        url_path = urls.feed(self.ref, self.fmt, self.archive)
        relative = url_path.lstrip("/")
        object.__setattr__(self, "url_path", url_path)
        object.__setattr__(self, "name", relative + ".html" if self.preview else relative)

    @property
    def file(self) -> PurePosixPath:
        return PurePosixPath(self.name)


def site_paths(app: Flask, base_url: str | None = None,
               ) -> tuple[list[FeedDoc], list[str], list[str]]:
    """Every document the site has: feeds, pages (with OPML, robots.txt and the
    sitemaps), static assets (URL paths)."""
    from .documents import archive_count
    from .formats import formats

    publisher: Publisher = app.extensions["feedsvc"]
    collection = publisher.collection
    size = app.config["FEEDSVC"].feed_size
    feeds: list[FeedDoc] = []
    kinds = tuple((fmt.name, fmt.preview) for fmt in formats())
    for ref in collection.feed_refs():
        archives = archive_count(len(collection.feed_entries(ref) or ()), size)
        feeds += _feed_docs(ref, archives, kinds)
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


@functools.lru_cache(maxsize=1 << 16)
def _feed_docs(ref: FeedRef, archives: int,
               kinds: tuple[tuple[str, bool], ...]) -> tuple[FeedDoc, ...]:
    """Every document of one feed: each format (and preview) of it and of its archives.

    Kept between builds of one process (``feedsvc build --watch``): a feed
    whose archive count did not move has the same documents, and making
    31,612 of them was a tenth of a rebuild after one edit at 10,000 articles.
    """
    docs: list[FeedDoc] = []
    for number in [None, *range(1, archives + 1)]:
        for fmt, preview in kinds:
            docs.append(FeedDoc(ref, fmt, number))
            if preview:
                docs.append(FeedDoc(ref, fmt, number, preview=True))
    return tuple(docs)


def file_for(url_path: str, content_type: str) -> PurePosixPath:
    """Where the document at ``url_path`` goes in the export (see the module's doc)."""
    relative = url_path.lstrip("/")
    if not relative or relative.endswith("/"):
        return PurePosixPath(relative + "index.html")
    if content_type.startswith("text/html"):
        return PurePosixPath(relative) / "index.html"
    return PurePosixPath(relative)


def build_site(app: Flask, outdir: str | os.PathLike[str], base_url: str | None = None,
               progress: Progress | None = None, processes: int | None = None,
               files_as_recorded: bool | Callable[[], bool] = False) -> BuildSummary:
    """Write the site of ``app`` into ``outdir``, touching only the files that changed.

    ``base_url`` is the public URL the files will be served at; it defaults
    to the app's FEEDSVC_BASE_URL, and may only differ from it when that is
    unset (then links are made from it, as they would be from a request's
    host). Into an earlier build, only files whose bytes changed are written
    and files no longer produced are removed; every other file keeps its
    bytes and its mtime, so ``rsync``, ``rclone`` and ``aws s3 sync`` upload
    only what changed. A document whose signature (what it shows, see
    :mod:`feedsvc.surrogate`) and file are as the manifest records is not
    even rendered. Changed files are first written whole to a hidden folder
    inside ``outdir`` (its own filesystem, even when it is a mount point) and
    renamed into place only once all are written (see :func:`_commit`), so a
    failure of any kind (a full disk, a size limit, permissions) leaves the
    previous build as it was. ``OUTDIR/.feedsvc-build.json`` lists every
    file with its SHA-256 and what the run changed and removed. Raises
    :class:`ExportError` if ``outdir`` holds anything but an earlier build,
    or if the articles changed while building (run it again; the CLI's app
    does not reload while it builds).

    Many documents to render are rendered by ``processes`` forked workers (by
    default one per core, see :func:`_render_processes`); ``processes=1``
    renders them all in this process. ``files_as_recorded`` says that every
    file of the earlier build was just found with the size and mtime its
    marker records (:func:`check_unchanged`): they are not statted again.
    It may be a callable (:func:`files_checked_meanwhile`), asked only once
    the documents are listed and signed, while a child stats the files.

    One build at a time writes a folder (:func:`build_lock`): another
    process's build there raises :class:`ExportError` at once.
    """
    outdir = Path(outdir)
    _public_url(app.config["FEEDSVC"], base_url, outdir)  # before the folder is made
    with build_lock(outdir):
        return _build_site(app, outdir, base_url, progress, processes, files_as_recorded)


def keep_every_fragment(publisher: Publisher) -> tuple[int, int]:
    """Raise the fragment cache's bounds to hold every entry's four fragments (Atom, RSS,
    JSON Feed, the previews' list item); the bounds as they were."""
    fragments = publisher.fragments
    bounds = fragments.max_entries, fragments.max_bytes
    fragments.max_entries = max(fragments.max_entries, 4 * len(publisher.collection.entries) + 64)
    fragments.max_bytes = max(fragments.max_bytes, 1 << 40)
    return bounds


def _public_url(settings: Settings, base_url: str | None, outdir: Path) -> str:
    """The base URL the build's links use, or the ExportError saying why there is none."""
    if settings.base_url and base_url and base_url.rstrip("/") != settings.base_url:
        raise ExportError(outdir, f"base URL {base_url} differs from FEEDSVC_BASE_URL "
                          f"{settings.base_url}, which the app's links use")
    base = (base_url or settings.base_url or "").rstrip("/")
    if not base:
        raise ExportError(outdir, "a static site needs its public URL: give a base URL "
                          "or set FEEDSVC_BASE_URL")
    return base


#: Folders this process holds the build lock of: (st_dev, st_ino) -> [fd, depth].
_locks: dict[tuple[int, int], list[int]] = {}


@contextlib.contextmanager
def build_lock(outdir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``outdir``'s build lock for the block (made if missing; re-entrant in a process).

    Two builds into one folder would remove each other's staging folder (a
    build takes left-overs for a dead build's) and fail in turn; ``feedsvc
    build --watch`` holds the lock while it runs, so a one-shot build by hand
    is refused with a clear reason. The lock is ``flock`` on the folder
    itself: no file is added to the export, and the kernel releases it when
    the process ends, however it ends. Where the filesystem has no such
    locks (some network mounts), builds run unguarded, as before. Raises
    :class:`ExportError` for a folder that is not an earlier build (nothing
    is made then).
    """
    outdir = Path(outdir)
    _check_replaceable(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(outdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ExportError(outdir, f"cannot write the new build: {_os_reason(exc)}; "
                          "the previous build is unchanged") from None
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    held = _locks.get(key)
    if held is not None:
        os.close(fd)
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ExportError(outdir, "another `feedsvc build` is writing it (a `--watch` runs "
                          "until stopped); the previous build is unchanged") from None
    except OSError:
        pass  # no locks on this filesystem: unguarded, as builds always were
    _locks[key] = [fd, 1]
    try:
        yield
    finally:
        held = _locks[key]
        held[1] -= 1
        if held[1] == 0:
            del _locks[key]
            os.close(fd)


def _build_site(app: Flask, outdir: Path, base_url: str | None, progress: Progress | None,
                processes: int | None, files_as_recorded: bool | Callable[[], bool],
                ) -> BuildSummary:
    started = time.perf_counter()
    settings = app.config["FEEDSVC"]
    base = _public_url(settings, base_url, outdir)
    _check_replaceable(outdir)
    publisher: Publisher = app.extensions["feedsvc"]
    # Every entry appears in several feeds (site, topics, author; archives):
    # keep every rendered entry for the build instead of re-rendering it each
    # time a bounded cache dropped it (Atom, RSS, JSON Feed and the previews'
    # list item: four fragments an entry). The byte bound
    # too: at 10,000 articles its share of the cache held a third of them, and
    # 57,820 fragments were rendered for 20,000 (a fifth of the build's time).
    # Both bounds come back afterwards; the next fragment made evicts down to them.
    fragments = publisher.fragments
    bounds = keep_every_fragment(publisher)
    version = publisher.version
    seq = publisher.view.state.seq
    until = valid_until(publisher)
    feeds, pages, assets = site_paths(app, base)
    todo: list[FeedDoc | str] = [*feeds, *pages, *assets]
    context = _context(settings, base)
    previous = _load_manifest(outdir)
    recorded: dict[str, list] = previous.get("files", {}) if previous else {}
    trusted = recorded if previous and previous.get("context") == context else {}
    on_disk = None if previous is not None else _disk_files(outdir)
    sources = _Sources(publisher, settings.feed_size,
                       app.extensions.get("feedsvc.robots_extra", ""), trusted,
                       previous.get("feeds") if trusted and previous else None)
    staging = _make_staging(outdir)
    if callable(files_as_recorded):
        files_as_recorded = files_as_recorded()
    files: dict[str, list] = {}
    staged: dict[str, str] = {}  # changed file -> its name in the (flat) staging folder
    written = 0
    # First what is kept as it is (no rendering), then the documents to render.
    plan: list[_Planned] = []
    for done, item in enumerate(todo, 1):
        if isinstance(item, FeedDoc):
            url_path, name = item.url_path, item.name
            if files_as_recorded and sources.same(item.ref):
                # The feed shows what it showed and its files are as recorded: both
                # records stand (two lookups; this loop visits 31,612 documents).
                whole, packed = trusted.get(name), trusted.get(name + ".gz")
                if whole is not None and packed is not None and len(whole) == len(packed) == 4:
                    files[name], files[name + ".gz"] = whole, packed
                    if progress is not None:
                        progress(done, len(todo), url_path)
                    continue
        else:
            url_path, name = item, _page_name(item)
        source = sources.of(item, name)
        packed = name + ".gz"
        kept = _unchanged_on_disk(outdir, name, trusted.get(name), source, files_as_recorded)
        kept_packed = kept and _unchanged_on_disk(outdir, packed, trusted.get(packed), source,
                                                  files_as_recorded)
        if kept_packed:
            files[name], files[packed] = kept, kept_packed  # type: ignore[assignment]
            if progress is not None:
                progress(done, len(todo), url_path)
        else:
            plan.append(_Planned(item, url_path, (name, packed), source))
    job = _Job(app, publisher, base, outdir, staging, recorded, on_disk, plan)
    try:
        workers = _render_processes(len(plan)) if processes is None else processes
        finished = len(todo) - len(plan)
        # closing(): whatever stops this loop stops the renderers (threads, workers)
        # before the staging folder is removed below.
        with contextlib.closing(_render_all(job, workers)) as rendered:
            for url_path, results in rendered:
                for name, record, staged_as in results:
                    files[name] = record
                    if staged_as is not None:
                        staged[name] = staged_as
                        written += record[1]
                finished += 1
                if progress is not None:
                    progress(finished, len(todo), url_path)
        if publisher.version != version:
            raise ExportError(outdir, "the articles changed during the build; run it again")
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(outdir, f"cannot write the new build: {_os_reason(exc)}; "
                          "the previous build is unchanged") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        fragments.max_entries, fragments.max_bytes = bounds
    changed = sorted(staged)
    gone = set(recorded) if previous is not None else set(on_disk or ())
    removed = sorted(gone - files.keys())
    previews = sum(doc.preview for doc in feeds)
    summary = BuildSummary(outdir=outdir, base_url=base, version=version,
                           feeds=len(feeds) - previews, previews=previews,
                           pages=len(pages), assets=len(assets),
                           files=len(files), bytes=written,
                           seconds=0.0, changed=len(changed), removed=len(removed),
                           rejected=len(publisher.rejections))
    manifest = {"format": 1, "generator": "feedsvc", "base_url": base, "version": version,
                "context": context, "changed": changed, "removed": removed,
                "feeds": sources.feed_versions(), "files": files}
    from .store import SqliteStore

    if isinstance(publisher.store, SqliteStore):
        robots_extra = app.extensions.get("feedsvc.robots_extra", "")
        manifest["store"] = {
            "key": _store_key(settings, context, publisher.store.path, robots_extra),
            "seq": seq, "valid_until": until, "rejected": summary.rejected,
}
    if changed or removed or previous is None or _manifest_differs(previous, manifest):
        _commit(staging, outdir, staged, removed, files, manifest, summary)
    else:
        shutil.rmtree(staging, ignore_errors=True)  # nothing changed: nothing is touched
    return replace(summary, seconds=round(time.perf_counter() - started, 3))


@dataclass(frozen=True, slots=True)
class _Planned:
    """A document to render: what it is, its URL, its two files, its source."""

    item: FeedDoc | str
    url_path: str
    names: tuple[str, str]  # the document's file and its .gz
    source: str


@dataclass(frozen=True, slots=True)
class _Job:
    """What every renderer of one build shares (forked workers inherit it)."""

    app: Flask
    publisher: Publisher
    base: str
    outdir: Path
    staging: Path
    recorded: dict[str, list]
    on_disk: set[str] | None
    plan: list[_Planned]


#: Fewer documents to render than this are rendered in the building process: a
#: rebuild after one edit renders about 20, and forking workers would cost more.
PARALLEL_MIN = 400
#: Documents a forked worker renders per task: enough to keep the hand-over small,
#: few enough that the workers finish together (documents of one feed stay together,
#: so its entries' fragments are rendered once per worker).
CHUNK = 64

_Record = tuple[str, list, "str | None"]
#: The job of this build, for forked workers (set before the fork, never pickled).
_forked: _Job | None = None
#: A forked worker's own stager, made at its first task.
_worker_stager: _Stager | None = None


def _render_processes(documents: int) -> int:
    """How many processes render ``documents`` documents: one per core, past a threshold.

    Rendering is pure Python under one GIL; the gzip, SHA-256 and writes it
    hands to threads took a third of a 10,000-article build, and forked
    workers take the rest of the machine (each its own GIL).
    """
    if documents < PARALLEL_MIN:
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0))))


def _render_all(job: _Job, processes: int) -> Iterator[tuple[str, list[_Record]]]:
    """Render and stage every planned document: (URL path, its files' records), each
    once, in any order."""
    if processes <= 1 or len(job.plan) < 2:
        stager = _Stager(job.outdir, job.staging, job.recorded, job.on_disk)
        try:
            yield from _render_here(job, range(len(job.plan)), stager)
        finally:
            stager.close()
        return
    yield from _render_forked(job, processes)


def _render_here(job: _Job, indices: Iterable[int],
                 stager: _Stager) -> Iterator[tuple[str, list[_Record]]]:
    """Render ``job.plan[i]`` for each index in this process, staging the files on
    ``stager``'s threads while the next documents render."""
    client = job.app.test_client()
    pending: deque[str] = deque()
    for index in indices:
        doc = job.plan[index]
        if isinstance(doc.item, FeedDoc):
            got, body, packed = _feed(job.publisher, doc.item, job.base, job.outdir)
        else:
            got, body, packed = _fetch(job.app, client, doc.url_path, job.base, job.outdir)
        if got.as_posix() != doc.names[0]:
            raise ExportError(job.outdir, f"{doc.url_path}: expected {doc.names[0]}, got {got}")
        stager.submit(doc.names, body, packed, doc.source)
        pending.append(doc.url_path)
        for results in stager.finished():
            yield pending.popleft(), results
    for results in stager.finished(wait=True):
        yield pending.popleft(), results


def _render_forked(job: _Job, processes: int) -> Iterator[tuple[str, list[_Record]]]:
    """Render the plan in ``processes`` forked workers, chunk by chunk.

    The workers inherit the loaded view, the app and the raised fragment
    bounds through the fork (nothing of it is pickled); the store's
    connections are closed first, so that each worker opens its own. Each
    worker stages its files under names of its own (its pid), and hands
    back only the manifest records. A worker's failure (an ExportError, a
    full disk) is raised here; the caller removes the staging folder.
    """
    import multiprocessing

    global _forked
    job.publisher.before_fork()
    _forked = job
    chunks = [range(start, min(start + CHUNK, len(job.plan)))
              for start in range(0, len(job.plan), CHUNK)]
    pool = multiprocessing.get_context("fork").Pool(processes)
    try:
        for chunk_results in pool.imap_unordered(_render_chunk, chunks):
            yield from chunk_results
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
        _forked = None


def _render_chunk(indices: range) -> list[tuple[str, list[_Record]]]:
    """In a forked worker: render and stage one chunk of the plan."""
    global _worker_stager
    job = _forked
    assert job is not None, "a build worker runs only in a process forked by a build"
    if _worker_stager is None:
        _worker_stager = _Stager(job.outdir, job.staging, job.recorded, job.on_disk,
                                 prefix=f"w{os.getpid()}-")
    return list(_render_here(job, indices, _worker_stager))


class _Stager:
    """Digests each document's two files and writes the new ones to the staging folder,
    on threads, while the caller renders the next documents.

    gzip (zlib), SHA-256 (over 2 KiB) and file writes release the GIL, and at
    10,000 articles they were a third of a build; two threads (the machine's
    cores) take them off the rendering thread. Staged files get flat names
    (``<n>``): no folder tree to make and remove in the staging folder, where
    it cost 26,000 mkdir and rmdir calls. No fsync: a build is made durable by
    nothing less than a sync of the whole tree, and each file is either old
    or new for a reader because it is renamed into place whole (see _commit).
    """

    def __init__(self, outdir: Path, staging: Path, recorded: dict[str, list],
                 on_disk: set[str] | None, prefix: str = "") -> None:
        self.outdir = outdir
        self.prefix = prefix  # of staged names: each forked worker has its own
        self.staging = staging
        self.recorded = recorded
        self.on_disk = on_disk
        self.count = 0
        self.pending: deque[Future[list[tuple[str, list, str | None]]]] = deque()
        workers = max(1, min(4, len(os.sched_getaffinity(0))))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feedsvc-build")
        self.limit = 16 * workers  # documents in flight: their bytes wait in memory

    def submit(self, names: tuple[str, str], body: bytes,
               packed: bytes | Callable[[], bytes], source: str) -> None:
        first = self.count
        self.count += len(names)
        self.pending.append(self.pool.submit(self._stage, names, body, packed, source, first))

    def finished(self, wait: bool = False) -> Iterator[list[tuple[str, list, str | None]]]:
        """Per document, in order: its files' (file, manifest record, staged name or None
        if the file on disk is kept); with ``wait`` every one, else those done (and
        enough to bound memory)."""
        while self.pending and (wait or self.pending[0].done()
                                or len(self.pending) > self.limit):
            yield self.pending.popleft().result()

    def close(self) -> None:
        """Stop: nothing more is written (call before removing the staging folder)."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _stage(self, names: tuple[str, str], body: bytes, packed: bytes | Callable[[], bytes],
               source: str, first: int) -> list[tuple[str, list, str | None]]:
        data = (body, packed if isinstance(packed, bytes) else packed())
        out: list[tuple[str, list, str | None]] = []
        for number, (name, content) in enumerate(zip(names, data, strict=True), first):
            digest = hashlib.sha256(content).hexdigest()
            same = _same_file(self.outdir, name, self.recorded.get(name), digest, content,
                              self.on_disk)
            if same is not None:
                out.append((name, [digest, len(content), same, source], None))
                continue
            staged = f"{self.prefix}{number}"
            target = self.staging / staged
            target.write_bytes(content)
            # The mtime it will have in place: a rename keeps it.
            out.append((name, [digest, len(content), target.stat().st_mtime_ns, source], staged))
        return out


class _Sources:
    """A digest per exported document of what it shows (feedsvc.surrogate), computed
    once per feed: when it and the file are as recorded, the file is not rendered.

    A feed whose version is the one the earlier build recorded (``versions``,
    by feed key, trusted only in the same context) shows what it showed then:
    every document and the page of that feed take the source its file's
    record holds, and no signature is computed. A feed's signatures are a
    function of its entries' versions alone (titles come from its entries,
    the site's settings are in the context), and its version is their sum;
    computing them for all 2,534 feeds was half a second of every rebuild
    after one edit at 10,000 articles, which touches four feeds.
    """

    def __init__(self, publisher: Publisher, size: int, robots_extra: str = "",
                 files: Mapping[str, list] | None = None,
                 versions: Mapping[str, str] | None = None) -> None:
        from .collection import FeedRef
        from .surrogate import feed_key, feed_signatures, page_signature, site_signatures

        self._ref, self._feed_sigs, self._page_sig = FeedRef, feed_signatures, page_signature
        self._key = feed_key
        self.collection = publisher.collection
        self.site = publisher.site
        self.size = size
        self._files = files or {}
        self._versions = versions or {}
        self._same: dict[FeedRef, bool] = {}
        self._feeds: dict[FeedRef, dict[int | None, str]] = {}
        self._listed: dict[bytes, str] = {}  # what pages list of each entry, by version
        self._site = site_signatures(self.collection, self.site)
        # robots.txt shows only the base URL (in the manifest's context) and the extra lines.
        self._site[urls.ROBOTS] = ("robots", hashlib.sha256(robots_extra.encode()).hexdigest())

    def feed_versions(self) -> dict[str, str]:
        """Every feed's version by key: what the manifest records for the next build."""
        collection = self.collection
        return {self._key(ref): collection.feed_version(ref) or ""
                for ref in collection.feed_refs()}

    def same(self, ref: FeedRef) -> bool:
        """Whether the feed is at the version the earlier build recorded."""
        same = self._same.get(ref)
        if same is None:
            version = self.collection.feed_version(ref)
            same = self._same[ref] = (version is not None
                                      and self._versions.get(self._key(ref)) == version)
        return same

    def _as_recorded(self, ref: FeedRef, name: str) -> str | None:
        """The recorded source of ``name`` if its feed is the version recorded."""
        record = self._files.get(name) if self.same(ref) else None
        return record[3] if record is not None and len(record) == 4 else None

    def of(self, item: FeedDoc | str, name: str) -> str:
        if isinstance(item, FeedDoc):
            recorded = self._as_recorded(item.ref, name)
            if recorded is not None:
                return recorded
            sigs = self._feeds.get(item.ref)
            if sigs is None:
                sigs = self._feeds[item.ref] = self._feed_sigs(item.ref, self.collection,
                                                               self.site, self.size)
            return f"feed:{sigs.get(item.archive, '')}"
        if item in self._site:
            return f"page:{self._site[item][1]}"
        for kind, prefix in (("topic", urls.TOPICS), ("author", urls.AUTHORS)):
            if item.startswith(prefix) and item.endswith("/") and item != prefix:
                ref = self._ref(kind, item[len(prefix):-1])
                recorded = self._as_recorded(ref, name)
                if recorded is not None:
                    return recorded
                return f"page:{self._page_sig(ref, self.collection, self.site, self._listed)}"
        article = urls.article("")
        if item.startswith(article):
            entry = self.collection.by_slug.get(item[len(article):])
            return f"page:{(entry.version or b'').hex() if entry else ''}"
        return "asset"  # static files: compared by their bytes


def _page_name(url_path: str) -> str:
    """Where a page, the OPML list or an asset goes (as :func:`file_for` puts it).

    A string, not a path object: the build asks it of every page, and
    pathlib's parsing was a tenth of a rebuild after one edit.
    """
    relative = url_path.lstrip("/")
    if url_path == urls.OPML or url_path.startswith(urls.STATIC + "/"):
        return relative
    if url_path.endswith((".xml", ".txt")):  # robots.txt and the sitemaps (re-rendered each
        return relative  # build, kept when their bytes are equal)
    if not relative or relative.endswith("/"):
        return relative + "index.html"
    return relative + "/index.html"


def _code_digest() -> str:
    """A digest of this feedsvc's code, templates and assets: another release re-renders."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".html", ".css", ".xsl"):
            h.update(path.relative_to(package).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def _context(settings: Settings, base: str) -> str:
    """Everything besides the articles that the bytes of every file depend on."""
    from .model import Site

    parts = [base, repr(Site.of(settings)), str(settings.feed_size), repr(settings.websub_hubs),
             _code_digest()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _store_key(settings: Settings, context: str, ledger: Path, robots_extra: str) -> str:
    """What, besides the store's change counter, a no-change rebuild must find as recorded.

    Conservative: every setting (any change takes the normal path), the topic
    file's and the robots.txt lines' bytes, and which ledger file it is (a
    restore renames another file into place: a new inode, so a counter equal
    by chance is not taken for the same articles).
    """
    st = os.stat(ledger)
    try:
        topics = settings.topics_file.read_bytes() if settings.topics_file else b""
    except OSError:
        topics = b"\0unreadable"
    parts = [context, repr(settings), f"{os.path.realpath(ledger)}:{st.st_dev}:{st.st_ino}",
             hashlib.sha256(topics).hexdigest(), hashlib.sha256(robots_extra.encode()).hexdigest()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def valid_until(publisher: Publisher) -> float | None:
    """Until when the documents stay as they are with no change in the store, if not forever.

    Two things change with time alone: a scheduled article falls due (the
    view's ``next_due``), and the news sitemap drops an article once it is
    :data:`~feedsvc.sitemaps.NEWS_DAYS` old. Taken before rendering: earlier,
    never later, than what the rendered documents show.
    """
    from .sitemaps import NEWS_DAYS, news_entries

    moments = [e.published + timedelta(days=NEWS_DAYS)
               for e in news_entries(publisher.collection, datetime.now(UTC))]
    times = [m.timestamp() for m in moments]
    due = publisher.view.state.next_due
    if due is not None:
        times.append(due)
    return min(times) if times else None


@dataclass(frozen=True, slots=True)
class UnchangedCheck:
    """What :func:`check_unchanged` found: the no-change rebuild's summary, if nothing
    changed, and whether every file of the earlier build has the size and mtime
    its marker records (then a normal build need not stat them again)."""

    summary: BuildSummary | None
    files_as_recorded: bool = False
    #: This process has just synced the folder into the store: the build that
    #: follows need not list it again (10,000 files: a listing and a store read).
    synced: bool = False


def rebuild_unchanged(settings: Settings, outdir: str | os.PathLike[str],
                      ledger: Path) -> BuildSummary | None:
    """A rebuild with nothing changed, without loading the articles: its summary, else None
    (see :func:`check_unchanged`)."""
    return check_unchanged(settings, outdir, ledger).summary


def check_unchanged(settings: Settings, outdir: str | os.PathLike[str],
                    ledger: Path) -> UnchangedCheck:
    """A rebuild with nothing changed, without loading the articles, if nothing changed.

    Syncs the folder into the store (the store's change counter then says
    whether any article changed), then compares with what the last build
    recorded in its marker (``store``): the counter, the settings, code and
    ledger (:func:`_store_key`), and that no scheduled article or news
    sitemap entry has come due since. If all match, and one stat of every
    file of the build finds the size and mtime recorded (:func:`_stat_list`),
    nothing is rendered or written, not even the manifest, which is not
    even read (10 MB at 10,000 articles). Any difference (or a build of a
    release without the record, or a PostgreSQL store) gives no summary:
    :func:`build_site` then builds as usual, rendering only what changed,
    and without statting the files again if they were all found as recorded
    (a rebuild after one edit at 10,000 articles: 63,226 stats). Raises
    :class:`ExportError` for a folder that is not an earlier build, as
    :func:`build_site` does.
    """
    started = time.perf_counter()
    outdir = Path(outdir)
    nothing = UnchangedCheck(None)
    base = (settings.base_url or "").rstrip("/")
    if not base or (settings.database_url is not None
                    and settings.database_url.dialect == "postgresql"):
        return nothing
    _check_replaceable(outdir)
    try:
        marker = json.loads((outdir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return nothing
    record = marker.get("store") if isinstance(marker, dict) else None
    if not isinstance(record, dict) or marker.get("base_url") != base:
        return nothing
    counts = {k: marker.get(k) for k in ("feeds", "previews", "pages", "assets", "files")}
    if not all(isinstance(v, int) for v in counts.values()):
        return nothing
    listing = record.get("stat")
    if not isinstance(listing, str) or listing.count("\n") != counts["files"]:
        return nothing
    # One stat a file, in a forked child while this process syncs the folder.
    as_recorded = _as_recorded_meanwhile(outdir, listing)
    counter, synced = _synced_counter(settings, ledger)
    nothing = UnchangedCheck(None, files_as_recorded=as_recorded(), synced=synced)
    if not nothing.files_as_recorded or counter is None or counter != record.get("seq"):
        return nothing
    until = record.get("valid_until")
    if until is not None and time.time() >= until:
        return nothing
    robots_extra = (settings.robots_extra.read_text(encoding="utf-8", errors="replace")
                    if settings.robots_extra else "")
    context = _context(settings, base)
    if record.get("key") != _store_key(settings, context, ledger, robots_extra):
        return nothing
    summary = BuildSummary(outdir=outdir, base_url=base, version=str(marker.get("version")),
                           bytes=0, changed=0, removed=0,
                           rejected=int(record.get("rejected") or 0),
                           seconds=round(time.perf_counter() - started, 3), **counts)
    return UnchangedCheck(summary, files_as_recorded=True, synced=synced)


def _synced_counter(settings: Settings, ledger: Path) -> tuple[int | None, bool]:
    """The store's change counter once the folder is synced into it (None if the
    store is not complete: a first import still running elsewhere), and whether
    this process synced it (else a running service holds the writer lease).

    The writer's pass alone (:func:`feedsvc.sync.sync_once`): neither the view
    nor the renderers are loaded or imported, which a no-change rebuild never
    needs. Any failure (a missing folder, a broken ledger, a lost lease) also
    gives None: the normal build then meets it and reports it as it always does.
    """
    from .identity import id_authority
    from .store import open_store
    from .sync import sync_once, writer_lease_seconds

    if not settings.articles_dir.is_dir():
        return None, False
    try:
        store = open_store(ledger, id_authority(settings.base_url))
    except (OSError, FeedsvcError):
        return None, False
    wrote = False
    try:
        wrote = sync_once(store, settings.articles_dir, settings.max_article_bytes,
                          writer_lease_seconds(settings.reload_interval), time.time())
        seq, _generation, complete = store.seq()
    except (OSError, FeedsvcError):  # LeaseLost is one
        return None, False
    finally:
        try:
            if wrote:
                store.release()
        finally:
            store.close()
    return (seq if complete else None), wrote


def _stat_list(files: dict[str, list]) -> str:
    """Every file with its size and mtime_ns, one ``name<TAB>size<TAB>mtime`` line each:
    what a no-change rebuild stats, read from the small marker instead of the
    manifest (whose JSON, with a SHA-256 a file, took 0.2 s to load at 10,000)."""
    return "".join(f"{name}\t{r[1]}\t{r[2]}\n" for name, r in sorted(files.items()))


def _as_recorded_meanwhile(outdir: Path, listing: str) -> Callable[[], bool]:
    """Start :func:`_as_recorded` in a forked child; call the result for its answer.

    A child process, not a thread: both this stat loop and the folder sync
    run a little Python between many short system calls, and as two threads
    they took longer together (0.73-0.89 s at 10,000 articles) than one after
    the other (0.27 s and 0.23 s): each system call handed the GIL over. The
    child only stats and exits; without fork it runs here.
    """
    try:
        pid = os.fork()
    except OSError:
        answer = _as_recorded(outdir, listing)
        return lambda: answer
    if pid == 0:  # the child: no lock taken, no buffer flushed, no exit handler run
        try:
            code = 0 if _as_recorded(outdir, listing) else 1
        except BaseException:
            code = 2
        os._exit(code)

    answers: list[bool] = []

    def wait() -> bool:
        if not answers:  # waited for once; later calls repeat the answer
            _, status = os.waitpid(pid, 0)
            answers.append(os.waitstatus_to_exitcode(status) == 0)
        return answers[0]

    return wait


def _as_recorded(outdir: Path, listing: str) -> bool:
    """Whether every file of ``listing`` (:func:`_stat_list`) has its size and mtime."""
    fields = listing.split("\n")
    if fields.pop() != "":
        return False
    prefix = f"{outdir}/"
    for line in fields:
        name, _, rest = line.partition("\t")
        size, _, mtime = rest.partition("\t")
        try:
            st = os.stat(prefix + name)
        except OSError:
            return False
        if str(st.st_size) != size or str(st.st_mtime_ns) != mtime:
            return False
    return True


class _Lines:
    """The manifest's and the stat listing's line for each file, kept between builds.

    A process that builds into the same folder again (``feedsvc build --watch``)
    writes both anew after each edit, while all but a few dozen records are the
    very objects of the build before: their lines are joined as they were
    (0.02 s at 10,000 articles) rather than the whole 12 MB encoded again
    (0.18 s for the manifest, 0.07 s for the listing). A first build encodes
    the manifest in one ``json.dumps``, and makes no lines.
    """

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self._entries: dict[str, tuple[list, str]] = {}  # name -> (record, its JSON member)
        self._stats: dict[str, tuple[list, str]] = {}  # name -> (record, its listing line)

    @staticmethod
    def of(outdir: Path) -> _Lines:
        """The lines of the build this process last wrote into ``outdir``, if it did."""
        remembered = _remembered(outdir)
        return remembered.lines if remembered is not None else _Lines(keep=False)

    def manifest(self, manifest: dict) -> str:
        if not self.keep:
            return json.dumps(manifest, separators=(",", ":")) + "\n"
        head = json.dumps({k: v for k, v in manifest.items() if k != "files"},
                          separators=(",", ":"))
        self._entries, members = _reused(
            self._entries, manifest["files"],
            lambda name, record: f"{json.dumps(name)}:{json.dumps(record, separators=(',', ':'))}")
        return f'{head[:-1]},"files":{{{",".join(members)}}}}}\n'

    def listing(self, files: dict[str, list]) -> str:
        """:func:`_stat_list` of ``files`` (sorted by name already)."""
        if not self.keep:
            return _stat_list(files)
        self._stats, lines = _reused(self._stats, files,
                                     lambda name, record: f"{name}\t{record[1]}\t{record[2]}\n")
        return "".join(lines)


def _reused(cache: dict[str, tuple[list, str]], files: dict[str, list],
            line: Callable[[str, list], str]) -> tuple[dict[str, tuple[list, str]], list[str]]:
    """Each file's line, from ``cache`` where its record is the very one cached: the
    new cache and the lines in ``files``' order."""
    fresh: dict[str, tuple[list, str]] = {}
    for name, record in files.items():
        held = cache.get(name)
        if held is None or held[0] is not record:
            held = (record, line(name, record))
        fresh[name] = held
    return fresh, [held[1] for held in fresh.values()]


#: The manifest this process last wrote, by the manifest file's path, with the
#: file's identity then, the listing of its files' sizes and mtimes
#: (:func:`_stat_list`, if made) and its lines: a process that builds again
#: (``feedsvc build --watch``) need not read and parse 10 MB of JSON that it
#: wrote itself (0.1 s at 10,000 articles).
_written: dict[str, _Written] = {}


class _Written(NamedTuple):
    identity: tuple[int, int, int]  # the manifest file's inode, size and mtime_ns
    manifest: dict
    listing: str | None
    lines: _Lines


def _remembered(outdir: Path) -> _Written | None:
    """What this process remembers of the manifest in ``outdir``, if it is still the file
    it wrote (another writer replaces the file: a new inode)."""
    path = os.fspath(outdir / MANIFEST)
    remembered = _written.get(path)
    if remembered is None or remembered.identity != _file_identity(path):
        return None
    return remembered


def _file_identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _load_manifest(outdir: Path) -> dict | None:
    """The previous build's manifest, or None (no earlier build, or one without it).

    The one this process wrote is taken from memory while the file is still
    that one (same inode, size and mtime); any other writer replaces the file,
    and then it is read.
    """
    remembered = _remembered(outdir)
    if remembered is not None:
        return remembered.manifest
    try:
        data = json.loads((outdir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return data


def _remember_manifest(outdir: Path, manifest: dict, listing: str | None,
                       lines: _Lines) -> None:
    """Keep the manifest just written (one, the last: a build holds only its own)."""
    path = os.fspath(outdir / MANIFEST)
    identity = _file_identity(path)
    _written.clear()
    if identity is not None:
        lines.keep = True  # a second build here: keep the lines from then on
        _written[path] = _Written(identity, manifest, listing, lines)


def files_checked_meanwhile(outdir: str | os.PathLike[str]) -> Callable[[], bool] | None:
    """Start statting every file of the build this process last wrote into ``outdir``
    (in a forked child, see :func:`_as_recorded_meanwhile`); call the result to
    learn whether each has the size and mtime recorded. None if this process
    did not write the build there last.

    For a process that builds again and again (``feedsvc build --watch``): a
    file changed by hand is still found and rewritten, and the 63,226 stats at
    10,000 articles run on another core while the build lists and signs its
    documents.
    """
    remembered = _remembered(Path(outdir))
    if remembered is None:
        return None
    if remembered.listing is None:  # no marker listing (a PostgreSQL store): made once, here
        remembered = remembered._replace(listing=_stat_list(remembered.manifest["files"]))
        _written[os.fspath(Path(outdir) / MANIFEST)] = remembered
    assert remembered.listing is not None
    return _as_recorded_meanwhile(Path(outdir), remembered.listing)


def _disk_files(outdir: Path) -> set[str]:
    """Files of an earlier build that has no manifest (made before it existed)."""
    if not outdir.is_dir():
        return set()
    out: set[str] = set()
    for path in outdir.rglob("*"):
        relative = path.relative_to(outdir)
        if _ours(relative.parts[0]) or relative.parts[0] in (MARKER, MANIFEST):
            continue
        if path.is_file():
            out.add(relative.as_posix())
    return out


def _unchanged_on_disk(outdir: Path, name: str, record: list | None,
                       source: str, as_recorded: bool = False) -> list | None:
    """The manifest's record of ``name`` if the document and the file are as it says
    (``as_recorded``: the file was just statted and found so).

    A string path for os.stat, not ``outdir / name``: pathlib's parsing was a
    third of a no-change rebuild's time in this loop (2,000 articles, cProfile).
    """
    if record is None or len(record) != 4 or record[3] != source or source == "asset":
        return None
    if as_recorded:
        return record
    try:
        st = os.stat(f"{outdir}/{name}")
    except OSError:
        return None
    return record if st.st_size == record[1] and st.st_mtime_ns == record[2] else None


def _same_file(outdir: Path, name: str, record: list | None, digest: str, data: bytes,
               on_disk: set[str] | None) -> int | None:
    """The mtime of the file already there with exactly these bytes, else None."""
    listed = record is not None and len(record) == 4
    if not listed and (on_disk is None or name not in on_disk):
        return None  # neither recorded nor found by the walk: a new file (no stat)
    try:
        st = (outdir / name).stat()
    except OSError:
        return None
    if listed:
        if record[0] == digest and record[1] == st.st_size and record[2] == st.st_mtime_ns:
            return st.st_mtime_ns
        return None
    if on_disk is not None and name in on_disk and st.st_size == len(data):
        try:  # an earlier build without a manifest: compare the bytes themselves
            if (outdir / name).read_bytes() == data:
                return st.st_mtime_ns
        except OSError:
            return None
    return None


def _manifest_differs(previous: dict, manifest: dict) -> bool:
    keys = ("format", "base_url", "version", "context", "changed", "removed", "feeds", "files",
            "store")
    return any(previous.get(k) != manifest.get(k) for k in keys)


def _commit(staging: Path, outdir: Path, staged: dict[str, str], removed: list[str],
            files: dict[str, list], manifest: dict, summary: BuildSummary) -> None:
    """Rename every changed file into place, remove the files gone, then the manifest.

    ``staged`` maps each changed file to its name in ``staging``. Each step
    is a rename inside ``outdir``'s filesystem, so a host serving it sees
    each file old or new, never half-written. A replaced or removed file is
    first linked (or moved) aside, so that if any step fails every step is
    undone and the previous build stands, its files' bytes and mtimes as they
    were. The manifest and the marker go last, each with one atomic replace.
    A rename keeps the mtime the staged file was recorded with.
    """
    aside = Path(tempfile.mkdtemp(prefix=OLD_PREFIX, dir=outdir))
    done: list[tuple[str, str, str | None]] = []  # (action, name, its name aside), to undo
    created: list[Path] = []
    # Strings, not path objects, in this loop of one step a changed file: pathlib's
    # joins and parents were more than the renames themselves (63,226 files).
    out, stage, side = os.fspath(outdir), os.fspath(staging), os.fspath(aside)
    folders: set[str] = {out}  # known to exist
    try:
        for number, name in enumerate(sorted(staged)):
            target = f"{out}/{name}"
            parent = target.rpartition("/")[0]
            if parent not in folders:
                made = _make_parents(Path(parent), outdir)
                created += made
                folders.add(parent)
                folders.update(os.fspath(folder) for folder in made)
            kept = None
            try:
                had = stat.S_ISREG(os.lstat(target).st_mode)
            except FileNotFoundError:
                had = False
            if had:
                kept = str(number)
                os.link(target, f"{side}/{kept}")
            os.rename(f"{stage}/{staged[name]}", target)
            done.append(("write", name, kept))
        for number, name in enumerate(removed, len(staged)):
            source = outdir / name
            if not source.exists() and not source.is_symlink():
                continue
            source.rename(aside / str(number))
            done.append(("remove", name, str(number)))
        earlier = _remembered(outdir)
        if earlier is not None and earlier.manifest["files"].keys() == files.keys():
            # The same files as the build before (an edit): in its order, not sorted again.
            manifest["files"] = {name: files[name] for name in earlier.manifest["files"]}
        else:
            manifest["files"] = dict(sorted(files.items()))
        if (outdir / MANIFEST).is_file():
            os.link(outdir / MANIFEST, aside / MANIFEST)
            done.append(("manifest", MANIFEST, MANIFEST))
        lines = _Lines.of(outdir)
        _write_atomically(outdir / MANIFEST, lines.manifest(manifest))
        record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()}
        listing = None
        if "store" in manifest:  # what a no-change rebuild reads (rebuild_unchanged)
            listing = lines.listing(manifest["files"])
            record["store"] = {**manifest["store"], "stat": listing}
        _write_atomically(outdir / MARKER, json.dumps(record, indent=1) + "\n")
        _remember_manifest(outdir, manifest, listing, lines)
    except BaseException as exc:  # a Ctrl-C too: never half a build left in place
        for _action, name, kept in reversed(done):
            with contextlib.suppress(OSError):
                if kept is None:  # a new file: there was none before
                    (outdir / name).unlink()
                else:
                    (aside / kept).rename(outdir / name)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        raise ExportError(outdir, f"cannot put the new build in place: {_os_reason(exc)}; "
                          "the previous build is unchanged") from None
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)
    for name in removed:  # folders the removals left empty (a deleted article's)
        folder = (outdir / name).parent
        while folder != outdir:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent


def _make_parents(folder: Path, outdir: Path) -> list[Path]:
    """mkdir -p inside ``outdir``; returns the folders it made, outermost first."""
    missing: list[Path] = []
    while folder != outdir and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def _feed(publisher: Publisher, doc: FeedDoc, base_url: str,
          outdir: Path) -> tuple[PurePosixPath, bytes, Callable[[], bytes]]:
    """A feed document (or its preview) straight from the publisher: what the
    service's feed routes send a reader (or a browser); its gzip form (the
    document's own, kept with it as when served) is made on demand."""
    rendered = publisher.feed(doc.ref, doc.fmt, base_url, archive=doc.archive,
                              preview=doc.preview)
    if rendered is None:
        raise ExportError(outdir, f"{doc.url_path}: no such feed any more; did the articles "
                          "change during the build?")
    from .http import forms_of

    # the gzip form is made by a stager thread
    return doc.file, rendered.body, lambda: forms_of(rendered).gzip(rendered)[0]


def _fetch(app: Flask, client: FlaskClient, url_path: str, base_url: str,
           outdir: Path) -> tuple[PurePosixPath, bytes, bytes | Callable[[], bytes]]:
    """A page or asset through the app's routes: the file and its gzip form.

    Pages are dispatched in a request context of their own rather than
    through the test client: the same view, hooks and response, without the
    WSGI round trip, which cost 1.5 ms a page against 0.4 ms (10,000 article
    pages: 11 s of CPU). Their gzip form is :func:`feedsvc.http.gzip_form`
    of the body, what the service sends with ``Accept-Encoding: gzip``,
    made by a stager thread (asking the app for it, then unpacking it,
    cost the rendering thread 0.1 ms a page). Assets (streamed files) go
    through the test client, and are sent as they are.
    """
    if url_path.startswith(urls.STATIC + "/"):
        response = client.get(url_path, base_url=base_url)
    else:
        with app.test_request_context(url_path, base_url=base_url):
            response = app.full_dispatch_request()
    if response.status_code != 200:
        raise ExportError(outdir, f"{url_path}: the app answered {response.status_code} "
                          f"{response.get_data()[:200]!r}")
    body = response.get_data()
    if url_path.startswith(urls.STATIC + "/"):  # the app sends them as they are
        packed: bytes | Callable[[], bytes] = gzip.compress(body, compresslevel=9, mtime=0)
    else:
        from .http import gzip_form

        packed = lambda: gzip_form(body)  # noqa: E731 - made on a stager thread
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
