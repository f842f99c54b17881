"""The publisher: keeps the collection in step with the folder and renders feeds.

This is the pure core the web layer sits on. It knows nothing of HTTP: it
reads files (incrementally: an unchanged file is neither read nor parsed
again), asks the ledger for ids and dates, swaps in a new immutable
:class:`Collection` in one assignment, and renders each feed document once
per version as a plain :class:`Rendered` (bytes, type, date, keys, kind);
validators, compression and cache lifetimes are the web side's (feedsvc.http).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from . import documents
from .collection import SITE_FEED, Collection, FeedRef
from .config import Settings, require_articles_folder
from .errors import ArticleError, ConfigError, LedgerError
from .formats import content_types, get_format
from .identity import id_authority
from .model import Article, Entry, FeedDocument, Site
from .preview import render_preview
from .render import FragmentCache, render_feed, render_opml
from .rendercache import RenderCache, RenderKey
from .source import list_articles
from .sql import DatabaseURL
from .store import open_store
from .surrogate import OPML as OPML_KEY
from .surrogate import feed_key, listing_keys
from .sync import FolderSync, LeaseLost, writer_lease_seconds
from .topics import TopicCatalog, load_topic_catalog
from .view import StoreView

log = logging.getLogger("feedsvc")

#: The content type of a feed's HTML preview.
PREVIEW_TYPE = "text/html; charset=utf-8"


#: What a document is, which is all a cache needs to know of how long it may keep it:
#: ``"feed"`` changes with its feed (a subscription document, an archive page still
#: filling, a preview), ``"archive"`` is a complete archive page (RFC 5005: its
#: entries stay), ``"page"`` shows the whole site (HTML pages, the OPML list, sitemaps).
DocumentKind = Literal["feed", "archive", "page"]


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class Rendered:
    """One rendered document: its bytes and what it is, nothing of HTTP.

    A new version is a new object. Compared and hashed by identity (and
    weakly referenceable), so that the web side can keep what it derives
    from a document (validators, a compressed form) once per document.
    """

    body: bytes
    content_type: str
    last_modified: datetime
    #: The surrogate keys of what it shows (feedsvc.surrogate), its own key first.
    keys: tuple[str, ...] = ()
    kind: DocumentKind = "feed"


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What one rescan did, for logs, metrics and tests."""

    listed: int
    read: int
    published: int
    rejected: int
    changed: bool
    seconds: float
    error: str | None = None
    #: Of ``seconds``, the time spent listing the folder: how changes are detected.
    list_seconds: float = 0.0
    #: Files parsed (read files whose bytes were new); at most ``read``.
    parsed: int = 0


#: The version key of every HTML page and the OPML list: they show the whole site.
PAGES = "pages"


def version_key(ref: FeedRef | None) -> str:
    """The ledger's name for a feed's documents (or, for None, the site's pages)."""
    return PAGES if ref is None else f"feed:{ref.kind}:{ref.slug}"


def _floor(newest: datetime | None) -> int:
    """The newest ``updated`` of a document's entries, in whole unix seconds (rounded up).

    The collection keeps each feed's newest date as entries change
    (:meth:`Collection.feed_updated`): a pass over the site's entries here
    was most of an edit's cost at 100,000 articles.
    """
    seconds = 0.0 if newest is None else newest.timestamp()
    return int(seconds) + (seconds % 1 > 0)


def _legacy_digests(collection: Collection) -> Callable[[str], str | None]:
    """The digest an earlier release gave each document's version, by version key."""
    return lambda key: (collection.legacy_version() if key == PAGES
                        else collection.legacy_feed_version(_ref_of(key)))


def _ref_of(key: str) -> FeedRef:
    _, kind, slug = key.split(":", 2)
    return FeedRef(kind, slug)
#: The share of ``cache_bytes`` kept for entry fragments; the rest is documents.
FRAGMENT_SHARE = 0.25


def allowed_limits(feed_size: int, max_limit: int) -> tuple[int, ...]:
    """The ``?limit`` values documents are made for: 1, 2, 5, ... below the feed size, then decades.

    Every distinct limit is a document of its own (up to ``max_limit``
    entries); a client cycling through ?limit=1..1000 over 20 feeds took a
    worker to 630 MB. Below the feed size documents are small, so a 1-2-5
    series; above it powers of ten. Over 20 feeds of 10,000 articles these
    and the subscription documents take 167 MiB, within the documents' 192
    MiB share of the default bound; a 1-2-5 series all the way took 207 MiB,
    so a flood kept evicting and re-rendering them.
    """
    steps = {feed_size, max_limit}
    step = 1
    while step < max_limit:
        steps.update(n for n in (step, 2 * step, 5 * step) if n < feed_size)
        steps.add(step)
        step *= 10
    return tuple(sorted(n for n in steps if n <= max_limit))


def canonical_limit(requested: int, feed_size: int, max_limit: int) -> int | None:
    """The allowed limit serving ``?limit=requested``: the nearest, on a log scale.

    Ratios, not differences: 30 is nearer 50 than 10 (1.7x against 3x), 300
    nearer 100 than 1000; a tie goes to the larger. Anything above
    ``max_limit`` is ``max_limit``. None means the subscription document
    itself (the limit is the feed size).
    """
    requested = min(max(requested, 1), max_limit)
    chosen = min(allowed_limits(feed_size, max_limit),
                 key=lambda n: (max(n / requested, requested / n), -n))
    return None if chosen == feed_size else chosen


class Publisher:
    """The feed service the web layer calls: the store, its writer, this process's view,
    and the render cache, wired together.

    ``writer=False`` makes a process that only follows the store (never lists
    the folder), as a second host's replica would.
    """

    def __init__(
        self,
        settings: Settings,
        ledger_path: Path | DatabaseURL,
        *,
        clock: Callable[[], float] = time.time,
        settle_seconds: float = 1.0,
        max_cache_bytes: int | None = None,
        writer: bool = True,
    ) -> None:
        self.settings = settings
        self.site = Site.of(settings)
        self.catalog: TopicCatalog = load_topic_catalog(settings.topics_file)
        require_articles_folder(settings.articles_dir)  # before the ledger: nothing for nothing
        self.store = open_store(ledger_path, id_authority(settings.base_url))
        self.ledger = getattr(self.store, "ledger", None)  # the SQLite backend's
        self.clock = clock
        self.writer = writer
        #: Seconds the writer lease lasts without renewal: another process takes over
        #: after it (at once if the holder is a dead process of this host).
        self.lease_seconds = writer_lease_seconds(settings.reload_interval)
        self.sync = FolderSync(self.store, settings.articles_dir, settings.max_article_bytes,
                               settle_seconds=settle_seconds,
                               renew=lambda: self.store.acquire(self.lease_seconds))
        self.view = StoreView(self.store, self.catalog)
        self.is_writer = False
        self._lock = threading.Lock()
        # Least recently used first; bounded so that a crawler walking every
        # archive of every feed cannot grow a worker without limit. The bound
        # (settings.cache_bytes) is on what is really held: every document's
        # body, gzip form and overhead here, and the entry fragments, which
        # get their own share of it.
        total = settings.cache_bytes if max_cache_bytes is None else max_cache_bytes
        self.cache = RenderCache(total - int(total * FRAGMENT_SHARE))
        self.fragments = FragmentCache(max_bytes=int(total * FRAGMENT_SHARE))
        self.renders = 0  # documents rendered since start: tests and metrics count it
        self.render_seconds = 0.0  # time spent rendering them
        self.folder_missing = False
        self._errors: dict[str, str] = {}  # "sync" / "follow" -> the failure now
        #: When each feed document's current version first existed (the ledger's
        #: :meth:`~feedsvc.ledger.Ledger.moments`), by :func:`version_key`.
        self._moments: dict[str, datetime] = {}
        self.loaded = False
        #: Called as ``listener(changed_feeds)`` after each swap of the collection
        #: (not on the first load), e.g. to ping WebSub hubs.
        self.listeners: list[Callable[[list[FeedRef]], None]] = []
        #: Called as ``listener(old, new)`` with the collections of each change this
        #: process applies (not the first load), e.g. to purge caches (feedsvc.purge).
        self.change_listeners: list[Callable[[Collection, Collection], None]] = []
        #: Called with every :class:`ReloadReport`, e.g. for metrics.
        self.report_observers: list[Callable[[ReloadReport], None]] = []
        #: Called first by :meth:`close`, in order: what runs threads over this
        #: publisher (the web layer's reloader, hub, purges...) stops and joins them.
        self.closing: list[Callable[[], None]] = []

    @property
    def settle_seconds(self) -> float:
        """How long a file must be left alone before it is read (without inotify's word)."""
        return self.sync.settle_seconds

    @settle_seconds.setter
    def settle_seconds(self, value: float) -> None:
        self.sync.settle_seconds = value

    # -- reading the folder (writer) and following the store (everyone) ----------

    def refresh(
        self,
        progress: Callable[[int, int, str], None] | None = None,
        *,
        sync: bool = True,
        paths: set[str] | None = None,
        follow: bool = True,
    ) -> ReloadReport:
        """Sync the folder into the store (if this process is the writer), then follow it.

        Only files whose signature (size, mtime, inode) changed are read; a
        file caught mid-write waits for the next rescan, except on the first
        load or when ``paths`` (from inotify: closed after writing, or renamed
        into place) name it; a file that turns bad keeps its last good
        version published and is reported. ``sync=False`` only follows;
        ``follow=False`` only syncs (the view is not loaded: ``feedsvc build``
        asks the store's counter first, see :func:`feedsvc.export.rebuild_unchanged`).
        """
        with self._lock:
            report = self._refresh(progress, sync, paths, follow)
        for observer in self.report_observers:
            try:
                observer(report)
            except Exception:  # observability must never break a reload
                log.exception("reload observer failed")
        return report

    def follow(self) -> ReloadReport:
        """Apply the store's changes to this process's view; reads no file."""
        return self.refresh(sync=False)

    def _refresh(
        self,
        progress: Callable[[int, int, str], None] | None,
        sync: bool,
        paths: set[str] | None,
        follow: bool = True,
    ) -> ReloadReport:
        started = time.perf_counter()
        now = self.clock()
        first = not self.loaded
        listed = read = parsed = 0
        list_seconds = 0.0
        if sync and self.writer:
            try:
                self.is_writer = self.store.acquire(self.lease_seconds)
            except LedgerError as exc:
                if first:
                    raise
                return self._failed(exc, started, "sync")
            if not self.is_writer:
                self.sync.forget()  # another process writes: our records may go stale
        if sync and self.is_writer:
            root = self.settings.articles_dir
            try:
                listing = list_articles(root) if paths is None else None
                if paths is not None and not root.is_dir():
                    # inotify follows a folder renamed away: its paths would all look
                    # deleted here. The folder is missing, not the articles.
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root))
                list_seconds = time.perf_counter() - started
            except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
                if first:
                    reason = exc.strerror or str(exc)
                    raise ConfigError(
                        "FEEDSVC_ARTICLES_DIR", f"{root} cannot be read: {reason}"
                    ) from None
                if not self.folder_missing:
                    what = ("cannot be read (permission denied)" if isinstance(exc, PermissionError)
                            else "is not a folder" if isinstance(exc, NotADirectoryError)
                            else "is missing")
                    log.error("articles folder %s %s; serving the last good feeds", root, what)
                self.folder_missing = True
                return self._report(0, 0, False, started, "articles folder missing")
            if self.folder_missing:
                log.info("articles folder %s is back", root)
            self.folder_missing = False
            try:
                done = (self.sync.run(now, listing=listing, progress=progress) if paths is None
                        else self.sync.run_paths(paths, now))
            except LedgerError as exc:
                self.sync.forget()  # what was written is unknown: ask the store next time
                if first:
                    raise
                return self._failed(exc, started, "sync")
            except LeaseLost:
                self.sync.forget()
                self.is_writer = False
                log.warning("writer lease lost mid-sync; another process writes now")
                done = None
            if done is not None:
                listed, read, parsed = done.listed, done.read, done.parsed
                self._errors.pop("sync", None)
        if not follow:
            return self._report(listed, read, False, started, None, list_seconds, parsed)
        old = self.view.state
        try:
            changed = self.view.poll(now)
        except LedgerError as exc:
            if first and self.is_writer:
                raise
            return self._failed(exc, started, "follow")
        self._errors.pop("follow", None)
        new = self.view.state
        self._log_rejections(old.parse_errors, new.parse_errors)
        self._log_rejections(old.listing_errors, new.listing_errors)
        for path in sorted(new.duplicates.keys() - old.duplicates.keys()):
            log.warning("duplicate %s: duplicate of %s; not published", path,
                        new.duplicates[path])
        if self.view.loaded and (changed or (first and changed is not None)):
            self._moments = self._moments_of(old.collection, new.collection, changed or [], now)
        if changed:
            delta = new.collection.delta_from(old.collection)
            if delta is None:
                self._forget_fragments(old.entries, new.entries)
            else:
                self._forget_delta(*delta)
            self._announce(changed, tell_listeners=not first)
            if not first:
                self._tell_change(old.collection, new.collection)
        self.loaded = self.view.loaded
        return self._report(listed, read, changed is not None and (bool(changed) or first),
                            started, None, list_seconds, parsed)

    def _forget_fragments(self, before: dict[str, Entry], after: dict[str, Entry]) -> None:
        """Drop the rendered fragments of entry versions no longer published.

        Left to the LRU bound, the fragments of every superseded version stayed
        until the cache was full: about +1 MB per 2,000-file change, for as
        many changes as it took to fill it.
        """
        gone = {e.version for path, e in before.items() if after.get(path) is not e and e.version}
        if gone:
            self.fragments.forget(gone - {e.version for e in after.values()})

    def _forget_delta(self, removed: Iterable[Entry], added: Iterable[Entry]) -> None:
        """:meth:`_forget_fragments` from what an evolved collection took out and put in.

        Versions cover an entry's id, so a removed version still published is
        one put back in: no pass over every entry is needed to find it.
        """
        gone = {e.version for e in removed if e.version}
        if gone:
            self.fragments.forget(gone - {e.version for e in added})

    def _failed(self, exc: LedgerError, started: float, kind: str) -> ReloadReport:
        """Log a store failure once (not at every poll until it recovers), keep serving."""
        if self.last_error != str(exc):
            log.error("%s; serving the last good feeds until it recovers", exc)
        self._errors[kind] = str(exc)
        return self._report(0, 0, False, started, str(exc))

    @property
    def last_error(self) -> str | None:
        """The store's failure now (writing the folder's changes, or following), if any."""
        return self._errors.get("sync") or self._errors.get("follow")

    def _moments_of(
        self, old_collection: Collection, collection: Collection, moved: list[FeedRef],
        now: float,
    ) -> dict[str, datetime]:
        """The moments of every document whose version changed, from the ledger.

        ``Last-Modified`` is the later of the newest entry's ``updated`` and
        the moment this version of the document first existed, as the ledger
        (shared by every worker and host) recorded it; so it moves forward on
        every change, also when an article with an old date is added or any
        article is deleted, and is the same everywhere. If the ledger cannot
        be written, this worker's clock stands in until it can.
        """
        versions: dict[str, tuple[str, int]] = {}
        for ref in moved:
            digest, newest = collection.feed_version(ref), collection.feed_updated(ref)
            if digest is not None and newest is not None:
                versions[version_key(ref)] = (digest, _floor(newest))
        if collection.version != old_collection.version or not self._moments:
            versions[PAGES] = (collection.version, _floor(collection.updated))
        if collection.delta_from(old_collection) is not None:
            # Evolved: only the moved feeds can have gone (a dict copy, not a pass).
            moments = dict(self._moments)
            for ref in moved:
                if collection.feed_version(ref) is None:
                    moments.pop(version_key(ref), None)
        else:
            moments = {k: v for k, v in self._moments.items()
                       if k == PAGES or collection.feed_version(_ref_of(k)) is not None}
        try:
            # A process's first moments may find versions an earlier release stored
            # under its ordered digests: they keep their moments (an upgrade moves
            # no Last-Modified). Later changes are new versions, never aliased.
            stored = self.store.moments(versions, now,
                                        None if self._moments else _legacy_digests(collection))
        except LedgerError as exc:
            log.error("%s; Last-Modified comes from this worker's clock until it recovers", exc)
            stored = {k: max(int(now), floor) for k, (_, floor) in versions.items()}
        moments.update((k, datetime.fromtimestamp(v, tz=UTC)) for k, v in stored.items())
        return moments

    def last_modified(self, ref: FeedRef | None, updated: datetime) -> datetime:
        """``Last-Modified`` of a feed's documents (None: of the pages) that show ``updated``."""
        moment = self._moments.get(version_key(ref))
        return updated if moment is None else max(updated, moment)

    def gone(self, slug: str) -> bool:
        """Whether an article with this slug was published once and its file is gone."""
        try:
            path = self.store.path_of_slug(slug)
        except LedgerError:
            return False
        return path is not None and not self.view.present(path)

    def _tell_change(self, old: Collection, new: Collection) -> None:
        for listener in self.change_listeners:
            try:
                listener(old, new)
            except Exception:  # a listener must never break a reload
                log.exception("change listener failed")

    def _announce(self, changed: list[FeedRef], *, tell_listeners: bool) -> None:
        """Drop the changed feeds' rendered documents and tell the listeners."""
        self._prune_cache(changed)
        if not tell_listeners:
            return
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:  # a listener must never break a reload
                log.exception("collection listener failed")

    def _log_rejections(
        self, before: dict[str, ArticleError], after: dict[str, ArticleError]
    ) -> None:
        for path, error in sorted(after.items()):
            known = before.get(path)
            if known is None or known.reason != error.reason:
                log.warning("rejected %s", error)

    def _report(
        self, listed: int, read: int, changed: bool, started: float, err: str | None,
        list_seconds: float = 0.0, parsed: int = 0,
    ) -> ReloadReport:
        state = self.view.state
        return ReloadReport(
            listed=listed,
            read=read,
            published=len(state.collection.entries),
            rejected=len(state.parse_errors) + len(state.listing_errors),
            changed=changed,
            seconds=time.perf_counter() - started,
            error=err,
            list_seconds=list_seconds,
            parsed=parsed,
        )

    def warm(self) -> list[Rendered]:
        """Render the site feed in every format now; returns the documents.

        A gunicorn master calls it before forking, so that new workers (after
        a SIGHUP, say) start with the documents most polled already rendered
        and their first requests cost no more than the old workers' did (the
        web side makes their validators and gzip forms: feedsvc.http.prepare).
        Needs FEEDSVC_BASE_URL: without it each request's host makes the URLs.
        """
        base = self.settings.base_url
        if base is None or not self.loaded:
            return []
        made = (self.feed(SITE_FEED, fmt, base) for fmt in content_types())
        return [rendered for rendered in made if rendered is not None]

    def before_fork(self) -> None:
        """Close the store's connections: a master about to fork must not hand them on."""
        self.store.before_fork()

    # -- what the web layer reads --------------------------------------------

    @property
    def collection(self) -> Collection:
        return self.view.state.collection

    @property
    def rejections(self) -> dict[str, ArticleError]:
        """Every file not published (or published in an older version), and why."""
        state = self.view.state
        return {**state.parse_errors, **state.listing_errors}

    @property
    def articles(self) -> dict[str, Article]:
        """Every file read successfully (drafts and scheduled ones too), by path."""
        return dict(self.view.state.articles)

    @property
    def warnings(self) -> dict[str, tuple[str, ...]]:
        return {p: a.warnings for p, a in self.view.state.articles.items() if a.warnings}

    @property
    def duplicates(self) -> dict[str, str]:
        """Files not published because they repeat a first file's content: path -> first."""
        return dict(self.view.state.duplicates)

    @property
    def next_due(self) -> float | None:
        return self.view.state.next_due


    # -- rendering, once per version ------------------------------------------

    def cached(
        self,
        key: RenderKey,
        version: str,
        build: Callable[[], tuple[bytes, str, datetime]],
        kind: DocumentKind,
        keys: tuple[str, ...] = (),
    ) -> Rendered:
        """The cached representation for ``key`` at ``version``, built if missing.

        Two threads may race to build the same key; both produce the same
        bytes, so the duplicate work is harmless and no lock is held while
        rendering.
        """
        hit = self.cache.get(key, version)
        if hit is not None:
            return hit
        started = time.perf_counter()
        body, content_type, last_modified = build()
        rendered = Rendered(body, content_type, last_modified, keys, kind)
        self.renders += 1
        self.render_seconds += time.perf_counter() - started
        self.cache.put(key, version, rendered)
        return rendered

    @property
    def max_cache_bytes(self) -> int:
        """The documents' share of the bound (the fragments have the rest)."""
        return self.cache.max_bytes

    @property
    def cache_bytes(self) -> int:
        """What the documents and fragments held now are counted at."""
        return self.cache.bytes + self.fragments.bytes

    def clear_cache(self) -> None:
        """Forget every rendered document (the next request renders again)."""
        self.cache.clear()

    def _prune_cache(self, refs: Iterable[FeedRef]) -> None:
        """Drop the rendered documents of feeds that changed or went away."""
        self.cache.prune(refs)

    def feed(
        self,
        ref: FeedRef,
        fmt: str,
        base_url: str,
        *,
        archive: int | None = None,
        limit: int | None = None,
        preview: bool = False,
    ) -> Rendered | None:
        """One feed document in one format; None if the feed or archive does not exist.

        With ``preview``, the document's HTML preview at that format's URL
        (feedsvc.preview) instead of the feed: cached alike, per feed version.
        ``limit`` is served as :func:`canonical_limit` rounds it (the web
        layer redirects other values there), so its documents are bounded;
        limits past the feed's length share one document.
        """
        collection = self.view.state.collection
        version = collection.feed_version(ref)
        record = get_format(fmt)
        if version is None or record is None:
            return None
        size = self.settings.feed_size
        if archive is None and limit is not None:  # one of a few documents, whatever the
            limit = canonical_limit(limit, size, self.settings.max_limit)  # query said
            if limit is not None:  # and limits past the feed's length are one document
                limit = min(limit, max(1, len(collection.feed_entries(ref) or ())))
        key = RenderKey.feed(ref, fmt, base_url, archive=archive, limit=limit, preview=preview)
        # A hit is the whole answer: selecting the entries and listing their surrogate
        # keys again, 50 of each, was a fifth of a fast-path request's time.
        hit = self.cache.get(key, version)
        if hit is not None:
            return hit
        hubs = self.settings.advertised_hubs
        if archive is not None:
            doc = documents.archive_document(ref, collection, self.site, size, archive, hubs)
            complete = doc is not None and documents.archive_is_complete(
                ref, collection, size, archive
            )
            kind: DocumentKind = "archive" if complete else "feed"
        else:
            doc = documents.subscription_document(ref, collection, self.site, size, hubs, limit)
            kind = "feed"
        if doc is None:
            return None
        return self.cached(
            key,
            version,
            lambda: self._render(doc, fmt, base_url, ref, preview),
            kind,
            listing_keys((feed_key(ref),), doc.entries),
        )

    def _render(self, doc: FeedDocument, fmt: str, base_url: str, ref: FeedRef,
                preview: bool = False) -> tuple[bytes, str, datetime]:
        updated = self.last_modified(ref, doc.updated)
        if preview:  # shows no entry's content: nothing to fetch from the store
            return (render_preview(doc, fmt, self.site, base_url, self.fragments),
                    PREVIEW_TYPE, updated)
        # The entries' content comes from the store: one query for the document,
        # not one per entry (a 1,000-entry ?limit document made 1,000), and only
        # for entries whose fragment is not cached (a build rendered 9,534 feed
        # documents, most from cached fragments: its queries were 4% of the build).
        needed = self.fragments.uncached(doc.entries, fmt, base_url)
        with self.store.prefetched(e.article for e in needed):
            body = render_feed(doc, fmt, self.site, base_url, self.fragments)
        return body, content_types()[fmt], updated

    def opml(self, base_url: str) -> Rendered:
        """An OPML 2.0 list of every feed, for importing into a reader."""
        collection = self.view.state.collection
        updated = self.last_modified(None, collection.updated or documents.EPOCH)

        def build() -> tuple[bytes, str, datetime]:
            feeds = [
                (
                    self.site.title
                    if ref == SITE_FEED
                    else f"{collection.title_of(ref)} — {self.site.title}",
                    documents.feed_path(ref),
                    ref.html_path,
                )
                for ref in collection.feed_refs()
            ]
            body = render_opml(feeds, self.site, base_url, updated)
            return body, "text/x-opml; charset=utf-8", updated

        return self.cached(
            RenderKey.opml(base_url),
            collection.version,
            build,
            "page",
            (OPML_KEY,),
        )

    @property
    def version(self) -> str:
        """A digest of the whole collection, for pages that show all of it."""
        return self.view.state.collection.version

    def close(self) -> None:
        """Stop what runs over this publisher (:attr:`closing`: their threads joined, so
        none uses the store after this), give the writer lease up (another process takes
        over at once) and close the store. Safe to call twice."""
        hooks, self.closing = self.closing, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # closing anyway: say so, stop the others, close the store
                log.exception("stopping %s failed", getattr(hook, "__qualname__", hook))
        if self.is_writer:
            self.store.release()
            self.is_writer = False
        self.store.close()

