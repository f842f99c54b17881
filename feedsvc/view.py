"""A worker's view of the store: the collection it serves, kept in step with the change log.

Every worker (and the gunicorn master, before it forks them) loads the
store once and then follows its change counter: each poll reads only the
paths changed since the last one and rebuilds only their entries
(:meth:`Collection.evolve`). Nothing here reads the articles folder or
parses a file: that is the writer's job (:mod:`feedsvc.sync`), done once
per version for every process.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .collection import Collection, FeedRef, changed_feeds, make_entry
from .errors import ArticleError
from .identity import find_duplicates
from .layered import Draft, Layered
from .model import Article, Entry, Stamp
from .store import FileRecord, Snapshot, Store, decode_article
from .topics import TopicCatalog

log = logging.getLogger("feedsvc")


@dataclass(slots=True)
class ViewState:
    """Everything a view holds; replaced whole, never edited in place.

    The per-path tables are plain dicts after a full load and
    :class:`~feedsvc.layered.Layered` mappings after a change: the new
    version shares the old one's dict rather than copying it.
    """

    articles: Mapping[str, Article] = field(default_factory=dict)
    parse_errors: dict[str, ArticleError] = field(default_factory=dict)
    listing_errors: dict[str, ArticleError] = field(default_factory=dict)
    stamps: Mapping[str, Stamp] = field(default_factory=dict)
    collection: Collection = field(default_factory=lambda: Collection(()))
    next_due: float | None = None
    entries: Mapping[str, Entry] = field(default_factory=dict)  # published ones, by path
    versions: Mapping[str, str] = field(default_factory=dict)  # path -> version held
    seq: int = -1
    generation: int = -1
    complete: bool = False
    #: Files not published because a first file has the same content: path -> first path.
    duplicates: dict[str, str] = field(default_factory=dict)
    #: Paths of the publishable (not draft) articles by content hash: duplicates are
    #: looked for only among the hashes a change touched.
    by_hash: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def present(self, path: str) -> bool:
        """Whether the folder has a file at ``path`` now (published, rejected or not)."""
        return path in self.versions or path in self.parse_errors or path in self.listing_errors


def _edit(table: Mapping[str, Any]) -> Draft[str, Any]:
    """A draft of the next version of a per-path table, sharing what it does not change."""
    return (table if isinstance(table, Layered) else Layered.over(table)).edit()  # type: ignore[arg-type]


def _done(table: Any) -> Any:
    return table.done() if isinstance(table, Draft) else table


def _without_gc(build: Callable[[], ViewState]) -> ViewState:
    """Build a whole view with the cyclic collector paused, then freeze what it made.

    A full load makes some 20 objects an article and no garbage cycles; the
    collector would scan them all again and again while they are made (a
    quarter of the load time at 10,000 articles), and later every full
    collection would walk them in each worker. Frozen, they are left alone.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return build()
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


class StoreView:
    """The collection one process serves, following the store."""

    def __init__(self, store: Store, catalog: TopicCatalog) -> None:
        self.store = store
        self.catalog = catalog
        self.state = ViewState()
        self._shared: dict = {}  # one object for equal authors and topics (decode_article)
        #: Wall-clock time the view last applied a change of the store (/healthz shows it).
        self.applied_at: float | None = None

    def present(self, path: str) -> bool:
        return self.state.present(path)

    @property
    def loaded(self) -> bool:
        """Whether the first complete collection is in: before it, nothing is served."""
        return self.state.complete

    def poll(self, now: float) -> list[FeedRef] | None:
        """Apply what changed in the store; the feeds that changed, or None if nothing did.

        Raises LedgerError if the store cannot be read (the old view stays).
        """
        old = self.state
        due = old.next_due is not None and now >= old.next_due
        seq, generation, complete = self.store.seq()
        if not complete:
            # The first import is still running: serve nothing rather than part.
            if old.complete or old.seq >= 0:
                self.state = ViewState()
            return None
        if seq == old.seq and generation == old.generation and not due and old.complete:
            return None
        if old.seq < 0 or generation != old.generation:
            snapshot = self.store.snapshot()
        elif seq != old.seq:
            snapshot = self.store.changes(old.seq, old.generation)
        else:
            snapshot = None
        if snapshot is not None and not snapshot.complete:
            return None  # a restore of a back-up made mid-import: wait for the writer
        if snapshot is not None and snapshot.full:
            new = _without_gc(lambda: self._apply(old, snapshot, now, due))
        else:
            new = self._apply(old, snapshot, now, due)
        self.state = new
        self.applied_at = time.time()
        if new.collection is old.collection:
            return [] if snapshot is not None else None
        return changed_feeds(old.collection, new.collection)

    def _apply(
        self, old: ViewState, snapshot: Snapshot | None, now: float, due: bool
    ) -> ViewState:
        if snapshot is None:  # only a scheduled article fell due
            collection, next_due, entries = self._build(
                old.articles, old.stamps, old, now, None, old.duplicates)
            return ViewState(old.articles, old.parse_errors, old.listing_errors, old.stamps,
                             collection, next_due, entries, old.versions, old.seq,
                             old.generation, old.complete, old.duplicates, old.by_hash)
        articles: Any
        stamps: Any
        versions: Any
        reuse: Mapping[str, Article]
        if snapshot.full:
            articles = {}
            parse_errors: dict[str, ArticleError] = {}
            listing_errors: dict[str, ArticleError] = {}
            stamps = dict(snapshot.stamps)
            versions = {}
            touched: set[str] | None = None
            records: Iterable[FileRecord] = snapshot.files.values()
            reuse = old.articles if old.generation == snapshot.generation else {}
        else:
            # Drafts over the old tables: one edit among 100,000 copies none of them.
            articles, stamps, versions = _edit(old.articles), _edit(old.stamps), _edit(old.versions)
            parse_errors, listing_errors = dict(old.parse_errors), dict(old.listing_errors)
            touched = set(snapshot.changed)
            for path in touched:
                for table in (articles, parse_errors, listing_errors, stamps, versions):
                    table.pop(path, None)
            stamps.update(snapshot.stamps)
            records = snapshot.files.values()
            reuse = old.articles
        for record in records:
            path = record.path
            if record.error is not None:
                target = listing_errors if record.listing_error else parse_errors
                target[path] = ArticleError(path, record.error, record.line)
            if record.version is None:
                continue
            held = reuse.get(path)
            if held is not None and old.versions.get(path) == record.version:
                article: Article = held
            else:
                meta = snapshot.metas.get(record.version)
                if meta is None:
                    continue
                try:
                    article = decode_article(path, record.version, meta, self.store.content,
                                             self._shared)
                except (ValueError, TypeError, json.JSONDecodeError):
                    log.error("stored version of %s cannot be read; the writer parses it again",
                              path)
                    continue
            articles[path] = article
            versions[path] = record.version
        articles, stamps, versions = _done(articles), _done(stamps), _done(versions)
        base = old if not snapshot.full or old.generation == snapshot.generation else ViewState()
        if snapshot.full:
            touched = None
            by_hash, duplicates = _all_duplicates(articles, stamps)
        else:
            assert touched is not None
            by_hash, duplicates = _duplicates(old, articles, stamps, touched)
            # A file that stops or starts being a duplicate is published or withdrawn.
            touched |= (duplicates.keys() ^ old.duplicates.keys()) & articles.keys()
        collection, next_due, entries = self._build(articles, stamps, base, now, touched,
                                                    duplicates)
        return ViewState(articles, parse_errors, listing_errors, stamps, collection, next_due,
                         entries, versions, snapshot.seq, snapshot.generation, True,
                         duplicates, by_hash)

    def _build(
        self,
        articles: Mapping[str, Article],
        stamps: Mapping[str, Stamp],
        old: ViewState,
        now: float,
        touched: set[str] | None,
        duplicates: dict[str, str] | None = None,
    ) -> tuple[Collection, float | None, Mapping[str, Entry]]:
        """A new collection, rebuilding only the entries of ``touched`` paths.

        ``touched=None`` looks at every article (first load, or a scheduled
        article fell due). Reusing unchanged Entry objects keeps rebuilding
        cheap after one edit among thousands, and keeps their rendered
        fragments cached (:class:`~feedsvc.render.FragmentCache`).
        """
        entries: Any
        if touched is None:
            entries = {}
            next_due: float | None = None
            paths: Iterable[str] = articles
        else:
            entries, next_due, paths = _edit(old.entries), old.next_due, touched
        for path in paths:
            entries.pop(path, None)
            article, stamp = articles.get(path), stamps.get(path)
            if article is None or stamp is None or article.front_matter.draft:
                continue
            if duplicates and path in duplicates:
                continue
            if stamp.content_hash != article.content_hash:
                continue  # stored before its stamp (a writer killed between): next batch
            entry = old.entries.get(path)
            if entry is None or entry.article is not article or old.stamps.get(path) is not stamp:
                entry = make_entry(article, stamp, self.catalog)
            due = entry.published.timestamp()
            if due > now:  # scheduled: published when its time comes, without a restart
                next_due = due if next_due is None else min(next_due, due)
                continue
            entries[path] = entry
        entries = _done(entries)
        scope = set(old.entries).union(entries) if touched is None else touched
        removed = [e for p in scope if (e := old.entries.get(p)) and entries.get(p) is not e]
        added = [e for p in scope if (e := entries.get(p)) and old.entries.get(p) is not e]
        if len(removed) + len(added) <= max(64, len(entries) // 10):
            return old.collection.evolve(removed, added), next_due, entries
        return Collection(entries.values()), next_due, entries


def _publishable(article: Article | None) -> bool:
    return article is not None and not article.front_matter.draft


def _all_duplicates(
    articles: Mapping[str, Article], stamps: Mapping[str, Stamp]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """The hash index of every publishable article, and the duplicates among them."""
    groups: dict[str, list[str]] = {}
    for path in sorted(articles):
        if _publishable(article := articles[path]):
            groups.setdefault(article.content_hash, []).append(path)
    by_hash = {h: tuple(paths) for h, paths in groups.items()}
    candidates = [p for paths in by_hash.values() if len(paths) > 1 for p in paths]
    return by_hash, find_duplicates(articles, stamps, candidates)


def _duplicates(
    old: ViewState, articles: Mapping[str, Article], stamps: Mapping[str, Stamp],
    touched: set[str]
) -> tuple[Mapping[str, tuple[str, ...]], dict[str, str]]:
    """The hash index and the duplicates after a change, looking only at touched hashes.

    One edit among 100,000 articles costs neither a copy of the index nor a
    pass over every article (feedsvc.identity decides which copy is first).
    """
    by_hash = _edit(old.by_hash)
    affected: set[str] = set()
    for path in touched:
        for article, add in ((old.articles.get(path), False), (articles.get(path), True)):
            if article is None or not _publishable(article):
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
    found = find_duplicates(articles, stamps, candidates)
    duplicates = {p: first for p, first in old.duplicates.items()
                  if p not in touched and p in articles
                  and articles[p].content_hash not in affected}
    duplicates.update(found)
    return by_hash.done(), duplicates
