"""The publisher: keeps the collection in step with the folder and renders feeds.

This is the pure core the web layer sits on. It knows nothing of HTTP: it
reads files (incrementally: an unchanged file is neither read nor parsed
again), asks the ledger for ids and dates, swaps in a new immutable
:class:`Collection` in one assignment, and renders each feed document once
per version, keeping the bytes, their gzip form and their validators.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from . import documents
from .collection import SITE_FEED, Collection, FeedRef, changed_feeds, make_entry
from .config import Settings
from .errors import ArticleError, ConfigError, LedgerError
from .formats import content_types, get_format
from .identity import find_duplicates, match_renames
from .ledger import Ledger, Sighting
from .model import Article, Entry, FeedDocument, Site, Stamp
from .parser import parse_article
from .preview import render_preview
from .render import FragmentCache, render_feed, render_opml
from .source import FileSignature, list_articles, read_article, settled
from .text import slugify
from .topics import TopicCatalog, load_topic_catalog

log = logging.getLogger("feedsvc")

#: The content type of a feed's HTML preview.
PREVIEW_TYPE = "text/html; charset=utf-8"

#: Sightings recorded in one ledger transaction.
LEDGER_BATCH = 500


class Rendered:
    """One representation's bytes with everything HTTP needs to validate it.

    The gzip form is made on first demand and then kept for the life of this
    version (made eagerly it was two thirds of the time to bring every
    affected feed up to date after an edit), with a zero mtime so that every
    worker and every instance produces the same bytes and so the same ETag.
    """

    __slots__ = ("body", "content_type", "etag", "last_modified", "max_age", "_gzip", "_lock")

    def __init__(
        self, body: bytes, content_type: str, last_modified: datetime, max_age: int
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = hashlib.sha256(body).hexdigest()[:32]
        self.last_modified = last_modified
        self.max_age = max_age
        self._gzip: tuple[bytes, str] | None = None
        self._lock = threading.Lock()

    def _compressed(self) -> tuple[bytes, str]:
        packed = self._gzip
        if packed is None:
            with self._lock:
                packed = self._gzip
                if packed is None:
                    data = gzip.compress(self.body, compresslevel=6, mtime=0)
                    packed = self._gzip = (data, hashlib.sha256(data).hexdigest()[:32] + "-gz")
        return packed

    @property
    def gzip_body(self) -> bytes:
        return self._compressed()[0]

    @property
    def gzip_etag(self) -> str:
        return self._compressed()[1]


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


@dataclass(slots=True)
class _State:
    """Everything a rescan produces; replaced whole, never edited in place."""

    files: dict[str, FileSignature] = field(default_factory=dict)
    articles: dict[str, Article] = field(default_factory=dict)
    parse_errors: dict[str, ArticleError] = field(default_factory=dict)
    listing_errors: dict[str, ArticleError] = field(default_factory=dict)
    stamps: dict[str, Stamp] = field(default_factory=dict)
    collection: Collection = field(default_factory=lambda: Collection(()))
    next_due: float | None = None
    entries: dict[str, Entry] = field(default_factory=dict)  # published ones, by path
    #: Files not published because a first file has the same content: path -> first path.
    duplicates: dict[str, str] = field(default_factory=dict)
    #: When each feed document's current version first existed (the ledger's
    #: :meth:`~feedsvc.ledger.Ledger.moments`), by :func:`version_key`.
    moments: dict[str, datetime] = field(default_factory=dict)
    #: Paths of the publishable (not draft) articles by content hash: duplicates are
    #: looked for only among the hashes a rescan touched.
    by_hash: dict[str, tuple[str, ...]] = field(default_factory=dict)


#: The version key of every HTML page and the OPML list: they show the whole site.
PAGES = "pages"


def version_key(ref: FeedRef | None) -> str:
    """The ledger's name for a feed's documents (or, for None, the site's pages)."""
    return PAGES if ref is None else f"feed:{ref.kind}:{ref.slug}"


def _sightings(
    touched: Iterable[str],
    articles: dict[str, Article],
    files: dict[str, FileSignature],
    stamps: dict[str, Stamp],
    duplicates: dict[str, str] | None = None,
    renames: dict[str, str] | None = None,
) -> list[Sighting]:
    """What the ledger must hear of: touched articles that are new or whose text changed.

    Drafts are left out, so an article's first publication is when its draft
    flag goes, not when the draft was first saved; so are duplicates, which
    are never published. ``renames`` (new path -> gone path) tell the ledger
    which gone row a new file is.
    """
    duplicates = duplicates or {}
    renames = renames or {}
    return [
        Sighting(
            path=path,
            content_hash=article.content_hash,
            mtime=files[path].mtime_ns / 1e9,
            slug_hint=article.front_matter.slug or slugify(article.title) or "article",
            id_hint=article.front_matter.id,
            renamed_from=renames.get(path),
        )
        for path in sorted(touched)
        if (article := articles.get(path)) is not None
        and not article.front_matter.draft
        and path not in duplicates
        and (path not in stamps or stamps[path].content_hash != article.content_hash)
    ]


def _floor(entries: Iterable[Entry]) -> int:
    """The newest ``updated`` among ``entries``, in whole unix seconds (rounded up)."""
    newest = max((e.updated.timestamp() for e in entries), default=0.0)
    return int(newest) + (newest % 1 > 0)


def _ref_of(key: str) -> FeedRef:
    _, kind, slug = key.split(":", 2)
    return FeedRef(kind, slug)


def _cost(rendered: Rendered) -> int:
    """Bytes a cached representation holds, counting its gzip form (about a fifth)."""
    return len(rendered.body) + len(rendered.body) // 5


def id_authority(base_url: str | None) -> str:
    """The tag-URI authority of new ids: the site's host, else ``localhost``."""
    host = urlsplit(base_url).hostname if base_url else None
    if not host or ":" in host:  # an IPv6 literal is no valid tag authority
        return "localhost"
    return host


class Publisher:
    """Owns the articles folder, the ledger and the render cache of one app."""

    def __init__(
        self,
        settings: Settings,
        ledger_path: Path,
        *,
        clock: Callable[[], float] = time.time,
        settle_seconds: float = 1.0,
        max_cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.settings = settings
        self.site = Site(
            title=settings.site_title, subtitle=settings.site_subtitle, language=settings.language
        )
        self.catalog: TopicCatalog = load_topic_catalog(settings.topics_file)
        if not settings.articles_dir.is_dir():  # before the ledger: make nothing for nothing
            raise ConfigError(
                "FEEDSVC_ARTICLES_DIR", f"{settings.articles_dir} is not a folder that exists"
            )
        self.ledger = Ledger(ledger_path, id_authority(settings.base_url))
        self.clock = clock
        self.settle_seconds = settle_seconds
        self._state = _State()
        self._lock = threading.Lock()
        # Least recently used first; bounded so that a crawler walking every
        # archive of every feed cannot grow a worker without limit.
        self._cache: OrderedDict[tuple, tuple[str, Rendered]] = OrderedDict()
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()
        self.max_cache_bytes = max_cache_bytes
        self._keys_by_ref: dict[FeedRef, set[tuple]] = {}  # to prune only changed feeds
        self.fragments = FragmentCache()
        self.renders = 0  # documents rendered since start: tests and metrics count it
        self.render_seconds = 0.0  # time spent rendering them
        self.folder_missing = False
        self.last_error: str | None = None
        self.loaded = False
        #: Called as ``listener(changed_feeds)`` after each swap of the collection
        #: (not on the first load), e.g. to ping WebSub hubs.
        self.listeners: list[Callable[[list[FeedRef]], None]] = []
        #: Called with every :class:`ReloadReport`, e.g. for metrics.
        self.report_observers: list[Callable[[ReloadReport], None]] = []

    # -- reading the folder -------------------------------------------------

    def refresh(self, progress: Callable[[int, int, str], None] | None = None) -> ReloadReport:
        """Rescan the folder and swap in a new collection if anything changed.

        Only files whose signature (size, mtime, inode) changed are read; a
        file caught mid-write (modified within ``settle_seconds``) waits for
        the next rescan, except on the first load; a file that turns bad keeps
        its last good version published and is reported.
        """
        with self._lock:
            report = self._refresh(progress)
        for observer in self.report_observers:
            try:
                observer(report)
            except Exception:  # observability must never break a reload
                log.exception("reload observer failed")
        return report

    def _refresh(self, progress: Callable[[int, int, str], None] | None) -> ReloadReport:
        started = time.perf_counter()
        now = self.clock()
        old = self._state
        first = not self.loaded
        root = self.settings.articles_dir
        try:
            listing = list_articles(root)
            listed_at = time.perf_counter()
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            if first:
                reason = exc.strerror or str(exc)
                raise ConfigError(
                    "FEEDSVC_ARTICLES_DIR", f"{root} cannot be read: {reason}"
                ) from None
            if not self.folder_missing:
                log.error("articles folder %s is missing; serving the last good feeds", root)
            self.folder_missing = True
            return self._report(old, 0, 0, False, started, "articles folder missing")
        if self.folder_missing:
            log.info("articles folder %s is back", root)
        self.folder_missing = False

        # Only what differs from the last scan is looked at: new, changed and
        # gone files. A rescan with nothing changed costs the listing and this.
        current = listing.files
        candidates = [p for p, sig in current.items() if old.files.get(p) != sig]
        gone = old.files.keys() - current.keys()
        listing_errors = {e.path: e for e in listing.errors}
        due = old.next_due is not None and now >= old.next_due
        if not (first or candidates or gone or due):
            if listing_errors != old.listing_errors:
                self._log_rejections(old.listing_errors, listing_errors)
                self._state = replace(old, listing_errors=listing_errors)
            report = self._report(self._state, len(current), 0, False, started, None)
            return replace(report, list_seconds=listed_at - started)

        files, articles = dict(old.files), dict(old.articles)
        parse_errors, stamps = dict(old.parse_errors), dict(old.stamps)
        for path in gone:
            for table in (files, articles, parse_errors, stamps):
                table.pop(path, None)
        touched = set(gone)
        read = 0
        quiet_ns = int(self.settle_seconds * 1e9)
        for path in candidates:
            sig = current[path]
            if not first and not settled(sig, int(now * 1e9), quiet_ns):
                continue  # caught mid-write: the old version (if any) stays until it settles
            read += 1
            if progress is not None:
                progress(read, len(candidates), path)
            files[path] = sig
            touched.add(path)
            try:
                articles[path] = parse_article(
                    read_article(root, path, self.settings.max_article_bytes), path
                )
                parse_errors.pop(path, None)
            except ArticleError as exc:
                parse_errors[path] = exc  # the last good version, if any, stays published

        # Which file is which (feedsvc.identity): a gone article that came
        # back under another name, perhaps edited, and copies of one text.
        gone_published = {p: old.articles[p] for p in gone if p in old.stamps
                          and p in old.articles}
        appeared = {p: a for p in touched - gone if p not in old.files and p not in stamps
                    and (a := articles.get(p)) is not None and not a.front_matter.draft}
        renames = match_renames(gone_published, appeared) if gone_published and appeared else {}
        for new_path, old_path in sorted(renames.items()):
            log.info("%s is %s renamed: it keeps its id, slug and date", new_path, old_path)
        by_hash, duplicates = self._duplicates(old, articles, stamps, touched)
        for path in sorted(duplicates.keys() - old.duplicates.keys()):
            log.warning("duplicate %s: duplicate of %s; not published", path, duplicates[path])
        # A file that stops or starts being a duplicate is published or withdrawn.
        touched |= (duplicates.keys() ^ old.duplicates.keys()) & articles.keys()

        sightings = _sightings(touched, articles, files, stamps, duplicates, renames)
        if sightings:
            try:
                stamps.update(self._record(sightings, set(current), now))
            except LedgerError as exc:
                if first:
                    raise
                if self.last_error != str(exc):
                    log.error("%s; serving the last good feeds until it recovers", exc)
                self.last_error = str(exc)
                return self._report(old, len(current), read, False, started, str(exc))
        self.last_error = None

        changed = first or due or any(
            articles.get(p) is not old.articles.get(p) or stamps.get(p) is not old.stamps.get(p)
            for p in touched
        )
        collection, next_due, entries = old.collection, old.next_due, old.entries
        if changed:
            collection, next_due, entries = self._build_collection(
                articles, stamps, old, now, None if first or due else touched, duplicates
            )
        self._log_rejections(old.parse_errors, parse_errors)
        self._log_rejections(old.listing_errors, listing_errors)
        moved = changed_feeds(old.collection, collection) if collection is not old.collection \
            else []
        moments = self._moments(old, collection, moved, now) if moved or first else old.moments
        self._state = _State(
            files, articles, parse_errors, listing_errors, stamps, collection, next_due, entries,
            duplicates, moments, by_hash,
        )
        if changed and collection is not old.collection:
            self._announce(moved, tell_listeners=not first)
        self.loaded = True
        report = self._report(self._state, len(current), read, changed, started, None)
        return replace(report, list_seconds=listed_at - started)

    def _record(
        self, sightings: list[Sighting], present: set[str], now: float
    ) -> dict[str, Stamp]:
        """Stamp sightings in the ledger, in batches.

        Several workers starting on one empty ledger take its write lock in
        turn, so no transaction may hold it for long (one 10,000-article
        transaction made another worker time out).
        """
        stamps: dict[str, Stamp] = {}
        for start in range(0, len(sightings), LEDGER_BATCH):
            stamps.update(self.ledger.record(sightings[start : start + LEDGER_BATCH], present, now))
        return stamps

    def _duplicates(
        self, old: _State, articles: dict[str, Article], stamps: dict[str, Stamp],
        touched: set[str],
    ) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
        """The hash index and the duplicates after this scan, looking only at touched hashes.

        One edit among 100,000 articles costs a dict copy, not a pass over
        every article.
        """
        by_hash = dict(old.by_hash)
        affected: set[str] = set()
        for path in touched:
            for article, add in ((old.articles.get(path), False), (articles.get(path), True)):
                if article is None or article.front_matter.draft:
                    continue
                h = article.content_hash
                group = by_hash.get(h, ())
                group = (*group, path) if add and path not in group else tuple(
                    p for p in group if p != path or add)
                if group:
                    by_hash[h] = group
                else:
                    by_hash.pop(h, None)
                affected.add(h)
        candidates = [p for h in affected for p in by_hash.get(h, ())]
        try:
            found = find_duplicates(articles, stamps, candidates, self.ledger.stamps_of)
        except LedgerError as exc:  # reported below, where recording fails the same way
            log.error("%s; duplicates judged by this scan alone", exc)
            found = find_duplicates(articles, stamps, candidates)
        duplicates = {p: first for p, first in old.duplicates.items()
                      if p not in touched and articles[p].content_hash not in affected}
        duplicates.update(found)
        return by_hash, duplicates

    def _moments(
        self, old: _State, collection: Collection, moved: list[FeedRef], now: float
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
            digest, items = collection.feed_version(ref), collection.feed_entries(ref)
            if digest is not None and items:
                versions[version_key(ref)] = (digest, _floor(items))
        if collection.version != old.collection.version or not old.moments:
            versions[PAGES] = (collection.version, _floor(collection.entries))
        moments = {k: v for k, v in old.moments.items()
                   if k == PAGES or collection.feed_version(_ref_of(k)) is not None}
        try:
            stored = self.ledger.moments(versions, now)
        except LedgerError as exc:
            log.error("%s; Last-Modified comes from this worker's clock until it recovers", exc)
            stored = {k: max(int(now), floor) for k, (_, floor) in versions.items()}
        moments.update((k, datetime.fromtimestamp(v, tz=UTC)) for k, v in stored.items())
        return moments

    def last_modified(self, ref: FeedRef | None, updated: datetime) -> datetime:
        """``Last-Modified`` of a feed's documents (None: of the pages) that show ``updated``."""
        moment = self._state.moments.get(version_key(ref))
        return updated if moment is None else max(updated, moment)

    def gone(self, slug: str) -> bool:
        """Whether an article with this slug was published once and its file is gone."""
        try:
            path = self.ledger.path_of_slug(slug)
        except LedgerError:
            return False
        return path is not None and path not in self._state.files

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

    def _build_collection(
        self,
        articles: dict[str, Article],
        stamps: dict[str, Stamp],
        old: _State,
        now: float,
        touched: set[str] | None,
        duplicates: dict[str, str] | None = None,
    ) -> tuple[Collection, float | None, dict[str, Entry]]:
        """A new collection, rebuilding only the entries of ``touched`` paths.

        ``touched=None`` looks at every article (first load, or a scheduled
        article fell due). Reusing unchanged Entry objects keeps rebuilding
        cheap after one edit among thousands, and keeps their rendered
        fragments cached (:class:`~feedsvc.render.FragmentCache`).
        """
        if touched is None:
            entries: dict[str, Entry] = {}
            next_due: float | None = None
            paths: Iterable[str] = articles
        else:
            entries, next_due, paths = dict(old.entries), old.next_due, touched
        for path in paths:
            entries.pop(path, None)
            article, stamp = articles.get(path), stamps.get(path)
            if article is None or stamp is None or article.front_matter.draft:
                continue
            if duplicates and path in duplicates:
                continue
            entry = old.entries.get(path)
            if entry is None or entry.article is not article or old.stamps.get(path) is not stamp:
                entry = make_entry(article, stamp, self.catalog)
            due = entry.published.timestamp()
            if due > now:  # scheduled: published when its time comes, without a restart
                next_due = due if next_due is None else min(next_due, due)
                continue
            entries[path] = entry
        scope = old.entries.keys() | entries.keys() if touched is None else touched
        removed = [e for p in scope if (e := old.entries.get(p)) and entries.get(p) is not e]
        added = [e for p in scope if (e := entries.get(p)) and old.entries.get(p) is not e]
        if len(removed) + len(added) <= max(64, len(entries) // 10):
            return old.collection.evolve(removed, added), next_due, entries
        return Collection(entries.values()), next_due, entries

    def _log_rejections(
        self, before: dict[str, ArticleError], after: dict[str, ArticleError]
    ) -> None:
        for path, error in sorted(after.items()):
            known = before.get(path)
            if known is None or known.reason != error.reason:
                log.warning("rejected %s", error)

    def _report(
        self, state: _State, listed: int, read: int, changed: bool, started: float, err: str | None
    ) -> ReloadReport:
        return ReloadReport(
            listed=listed,
            read=read,
            published=len(state.collection.entries),
            rejected=len(state.parse_errors) + len(state.listing_errors),
            changed=changed,
            seconds=time.perf_counter() - started,
            error=err,
        )

    # -- what the web layer reads --------------------------------------------

    @property
    def collection(self) -> Collection:
        return self._state.collection

    @property
    def rejections(self) -> dict[str, ArticleError]:
        """Every file not published (or published in an older version), and why."""
        return {**self._state.parse_errors, **self._state.listing_errors}

    @property
    def articles(self) -> dict[str, Article]:
        """Every file read successfully (drafts and scheduled ones too), by path."""
        return dict(self._state.articles)

    @property
    def warnings(self) -> dict[str, tuple[str, ...]]:
        return {p: a.warnings for p, a in self._state.articles.items() if a.warnings}

    @property
    def duplicates(self) -> dict[str, str]:
        """Files not published because they repeat a first file's content: path -> first."""
        return dict(self._state.duplicates)

    @property
    def next_due(self) -> float | None:
        return self._state.next_due

    # -- rendering, once per version ------------------------------------------

    def cached(
        self,
        key: tuple,
        version: str,
        build: Callable[[], tuple[bytes, str, datetime]],
        max_age: int,
    ) -> Rendered:
        """The cached representation for ``key`` at ``version``, built if missing.

        Two threads may race to build the same key; both produce the same
        bytes, so the duplicate work is harmless and no lock is held while
        rendering.
        """
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == version:
                self._cache.move_to_end(key)
                return hit[1]
        started = time.perf_counter()
        body, content_type, last_modified = build()
        rendered = Rendered(body, content_type, last_modified, max_age)
        self.renders += 1
        self.render_seconds += time.perf_counter() - started
        with self._cache_lock:
            self._forget(key)
            self._cache[key] = (version, rendered)
            self._cache_bytes += _cost(rendered)
            while self._cache_bytes > self.max_cache_bytes and len(self._cache) > 1:
                self._forget(next(iter(self._cache)))
        if len(key) > 1 and isinstance(key[1], FeedRef):
            self._keys_by_ref.setdefault(key[1], set()).add(key)
        return rendered

    def _forget(self, key: tuple) -> None:
        """Drop one cached representation (the cache lock is held)."""
        old = self._cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= _cost(old[1])

    def clear_cache(self) -> None:
        """Forget every rendered document (the next request renders again)."""
        with self._cache_lock:
            self._cache.clear()
            self._cache_bytes = 0

    def _prune_cache(self, refs: Iterable[FeedRef]) -> None:
        """Drop the rendered documents of feeds that changed or went away."""
        with self._cache_lock:
            for ref in refs:
                for key in self._keys_by_ref.pop(ref, ()):
                    self._forget(key)

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
        """
        collection = self._state.collection
        version = collection.feed_version(ref)
        record = get_format(fmt)
        if version is None or record is None:
            return None
        size = self.settings.feed_size
        hubs = self.settings.advertised_hubs
        if archive is not None:
            doc = documents.archive_document(ref, collection, self.site, size, archive, hubs)
            complete = doc is not None and documents.archive_is_complete(
                ref, collection, size, archive
            )
            max_age = self.settings.archive_max_age if complete else self.settings.cache_max_age
        else:
            if limit is not None and limit == size:
                limit = None
            doc = documents.subscription_document(ref, collection, self.site, size, hubs, limit)
            max_age = self.settings.cache_max_age
        if doc is None:
            return None
        return self.cached(
            ("feed", ref, fmt, archive, limit, base_url, *(("preview",) if preview else ())),
            version,
            lambda: self._render(doc, fmt, base_url, ref, preview),
            max_age,
        )

    def _render(self, doc: FeedDocument, fmt: str, base_url: str, ref: FeedRef,
                preview: bool = False) -> tuple[bytes, str, datetime]:
        updated = self.last_modified(ref, doc.updated)
        if preview:
            return render_preview(doc, fmt, self.site, base_url), PREVIEW_TYPE, updated
        body = render_feed(doc, fmt, self.site, base_url, self.fragments)
        return body, content_types()[fmt], updated

    def opml(self, base_url: str) -> Rendered:
        """An OPML 2.0 list of every feed, for importing into a reader."""
        collection = self._state.collection
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
            ("opml", base_url),
            collection.version,
            build,
            self.settings.cache_max_age,
        )

    @property
    def version(self) -> str:
        """A digest of the whole collection, for pages that show all of it."""
        return self._state.collection.version

    def close(self) -> None:
        self.ledger.close()

