"""The folder sync: the one writer that brings the store in step with the articles folder.

Only one process at a time runs it (it holds the store's writer lease). It
lists the folder, and reads and parses only files whose signature (size,
mtime, inode) differs from the store's record, or whose stored version came
from an older parser; identical bytes at the same path are never parsed
twice. A first import parses on every core with a process pool (the parser
is pure: bytes in, Article out). Each batch is stamped in the ledger, then
written to the store in one transaction, so a process killed at any point
leaves the store whole and the next start resumes where it stopped,
without re-stamping (the ledger returns the stamps it already holds).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ArticleError, LeaseLost
from .identity import match_renames
from .ledger import Sighting
from .parser import parse_article
from .source import UNREADABLE, FileSignature, Listing, list_articles, read_article, settled
from .store import PARSER_VERSION, Batch, FileRecord, Store, decode_article, encode_article
from .text import slugify

log = logging.getLogger("feedsvc")

#: Files handled per store transaction (and per ledger transaction).
BATCH = 500
#: Below this many files to parse, the pool costs more than it saves.
POOL_THRESHOLD = 400

#: Counts of reads and parses in this process, for tests and metrics: a
#: restart over an unchanged folder must leave both at zero.
COUNTS = {"read": 0, "parsed": 0}


@dataclass(frozen=True, slots=True)
class Parsed:
    """One file read and (if its bytes are new) parsed: what the writer stores.

    ``meta`` is None when the bytes were those of the stored version (nothing
    to parse); ``error`` is the rejection when the file is no article.
    """

    path: str
    version: str | None = None
    meta: str | None = None
    content: bytes | None = None
    sighting: Sighting | None = None  # None for a draft
    error: str | None = None
    line: int | None = None
    parsed: bool = False
    content_hash: str | None = None  # the parser's, when parsed
    draft: bool = False


def version_of(path: str, data: bytes) -> str:
    """A version's key: the parse depends on the bytes and on the path (its folder topics)."""
    return hashlib.blake2b(path.encode("utf-8") + b"\0" + data, digest_size=16).hexdigest()


def read_and_parse(
    root: Path, path: str, max_bytes: int, known: str | None, mtime: float
) -> Parsed:
    """Read one file and parse it unless its bytes are those of version ``known``.

    Pure apart from reading the file, so it runs in a pool's processes too.
    """
    try:
        data = read_article(root, path, max_bytes)
    except ArticleError as exc:
        return Parsed(path, error=exc.reason, line=exc.line)
    version = version_of(path, data)
    if version == known:
        return Parsed(path, version=version)
    try:
        article = parse_article(data, path)
    except ArticleError as exc:
        return Parsed(path, version=version, error=exc.reason, line=exc.line, parsed=True)
    fm = article.front_matter
    sighting = None if fm.draft else Sighting(
        path=path,
        content_hash=article.content_hash,
        mtime=mtime,
        slug_hint=fm.slug or slugify(article.title) or "article",
        id_hint=fm.id,
    )
    return Parsed(path, version, encode_article(article), article.content_packed, sighting,
                  parsed=True, content_hash=article.content_hash, draft=fm.draft)


def writer_lease_seconds(reload_interval: float) -> float:
    """How long the writer lease lasts without renewal: three reload intervals, at least
    10 s. Another process takes over after it (at once if the holder is a dead
    process of this host)."""
    return max(3 * reload_interval, 10.0)


def sync_once(store: Store, root: Path, max_bytes: int, lease_seconds: float,
              now: float) -> bool:
    """One pass of the writer for a process that needs the store current and nothing
    else (``feedsvc build``'s no-change check): whether it was the writer.

    False if another process holds the lease: that writer (a running service)
    keeps the store current itself. Holds the lease on return when True; the
    caller releases it. Raises what :meth:`FolderSync.run` raises.
    """
    if not store.acquire(lease_seconds):
        return False
    FolderSync(store, root, max_bytes, renew=lambda: store.acquire(lease_seconds)).run(now)
    return True


@dataclass(slots=True)
class SyncReport:
    """What one pass of the writer did."""

    listed: int = 0
    read: int = 0
    parsed: int = 0
    changed: set[str] = field(default_factory=set)
    listing: Listing | None = None
    complete: bool = False


class FolderSync:
    """Lists the folder and writes what changed into the store (the one writer)."""

    def __init__(
        self,
        store: Store,
        root: Path,
        max_bytes: int,
        *,
        settle_seconds: float = 1.0,
        workers: int | None = None,
        renew: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.root = root
        self.max_bytes = max_bytes
        self.settle_seconds = settle_seconds
        self.workers = workers or len(os.sched_getaffinity(0)) or 1
        self._known: dict[str, FileRecord] | None = None  # the store's records, as we wrote them
        self._by_hash: dict[str, set[str]] = {}  # content hash -> publishable paths
        self._removed_hashes: set[str] = set()  # hashes a path left in this pass
        self._gone_records: dict[str, FileRecord] = {}  # files gone in this pass
        self._pending: dict[str, tuple[Sighting, Parsed]] = {}  # new files' sightings
        self._generation: int | None = None
        #: Paths known complete (closed after writing, or renamed into place): no settle wait.
        self.complete_paths: set[str] = set()
        #: Paths inotify saw modified and not yet closed: still being written, not read.
        self.writing: set[str] = set()
        #: Renews the writer lease between batches; False means another process took it.
        self.renew = renew

    def forget(self) -> None:
        """Reload the store's records at the next pass (another writer may have run)."""
        self._known = None

    def run(
        self,
        now: float,
        *,
        listing: Listing | None = None,
        progress: Callable[[int, int, str], None] | None = None,
        scope: set[str] | None = None,
    ) -> SyncReport:
        """One pass: list (unless given), read and parse what changed, stamp, store.

        ``scope`` limits the pass to those paths (``listing`` then lists only
        them). Raises FileNotFoundError/NotADirectoryError/PermissionError if
        the folder cannot be listed, LedgerError if the store fails.
        """
        if listing is None:
            listing = list_articles(self.root)
        first = self._known is None
        if self._known is None:
            self._known = self.store.files()
            self._by_hash = {}
            for record in self._known.values():
                self._index(record, add=True)
        known = self._known
        report = SyncReport(listed=len(listing.files), listing=listing)
        quiet_ns = int(self.settle_seconds * 1e9)
        now_ns = int(now * 1e9)
        todo: list[tuple[FileSignature, FileRecord | None]] = []
        for path, sig in listing.files.items():
            record = known.get(path)
            if (
                record is not None
                and not record.listing_error
                and record.error != UNREADABLE  # made readable again by a chmod, maybe
                and (record.size, record.mtime_ns, record.inode) == (sig.size, sig.mtime_ns,
                                                                     sig.inode)
                and (record.version is None or record.parser == PARSER_VERSION)
            ):
                continue
            # A file caught mid-write waits until it settles, unless inotify said it
            # was closed after writing or renamed into place, or nothing was ever stored.
            if path in self.writing or (
                not first
                and path not in self.complete_paths
                and not settled(sig, now_ns, quiet_ns)
            ):
                continue
            todo.append((sig, record))
        self.complete_paths.clear()
        errors = {e.path: e for e in listing.errors}
        in_scope = known.keys() if scope is None else scope & known.keys()
        gone = [p for p in in_scope
                if p not in listing.files and p not in errors and not known[p].listing_error]
        listing_rows = [
            FileRecord(p, None, None, None, known[p].version if p in known else None, e.reason,
                       e.line)
            for p, e in errors.items()
            if p not in known or (known[p].error, known[p].line) != (e.reason, e.line)
            or not known[p].listing_error
        ]
        gone += [p for p in in_scope if known[p].listing_error and p not in errors
                 and p not in listing.files]

        present = set(listing.files)
        # Renames are judged over the whole pass: new files' first sightings wait
        # for the last batch when a file went (feedsvc.identity).
        self._gone_records = {p: known[p] for p in gone if known[p].version is not None}
        self._pending = {}
        self._removed_hashes = set()
        for path in gone:
            self._unindex(path)
        jobs = [(self.root, sig.path, self.max_bytes,
                 rec.version if rec is not None and rec.parser == PARSER_VERSION else None,
                 sig.mtime_ns / 1e9) for sig, rec in todo]
        results = self._parse_all(jobs)
        batch = Batch(gone=gone, changed=set(gone))
        for row in listing_rows:
            batch.files.append(row)
            batch.changed.add(row.path)
        sigs = {sig.path: sig for sig, _ in todo}
        for done, parsed in enumerate(results, 1):
            report.read += 1
            report.parsed += parsed.parsed
            if progress is not None:
                progress(done, len(jobs), parsed.path)
            self._add(batch, parsed, sigs[parsed.path], known.get(parsed.path))
            if len(batch.files) >= BATCH:
                self._commit(batch, present, now, report)
                batch = Batch()
                if self.renew is not None and not self.renew():
                    raise LeaseLost("another process took the writer lease")
        batch.complete = True  # every listed file is now stored
        batch.sightings += self._renamed_sightings()
        batch.sightings += self._no_longer_duplicates(batch)
        self._commit(batch, present, now, report)
        report.complete = True
        return report

    # -- which file is which: renames and duplicates (rules in feedsvc.identity) ---------

    def _index(self, record: FileRecord, *, add: bool) -> None:
        """Keep the content-hash index of publishable files (drafts left out)."""
        if record.version is None or record.draft or not record.content_hash:
            return
        group = self._by_hash.setdefault(record.content_hash, set())
        if add:
            group.add(record.path)
        else:
            group.discard(record.path)
            self._removed_hashes.add(record.content_hash)
            if not group:
                del self._by_hash[record.content_hash]

    def _unindex(self, path: str) -> None:
        assert self._known is not None
        record = self._known.get(path)
        if record is not None:
            self._index(record, add=False)

    def _first_of(self, paths: set[str]) -> str:
        """Of files with one text, the one published: stamped first, then the lowest path."""
        stamps = self.store.stamps_of(sorted(paths))
        return min(paths, key=lambda p: (0, stamps[p].first_seen.timestamp(), p)
                   if p in stamps else (1, 0.0, p))

    def _not_duplicates(self, sightings: list[Sighting]) -> list[Sighting]:
        """The sightings to stamp: a copy of a published file's text is not published."""
        kept = []
        for sighting in sightings:
            group = self._by_hash.get(sighting.content_hash, set())
            if len(group) > 1 and self._first_of(group) != sighting.path:
                continue  # a duplicate: never stamped, so it gets no id of its own
            kept.append(sighting)
        return kept

    def _renamed_sightings(self) -> list[Sighting]:
        """New files' sightings, each told which gone file it is, if it is one."""
        pending, self._pending = self._pending, {}
        if not pending:
            return []
        gone = self._gone_records
        stamped = self.store.stamps_of(sorted(gone)) if gone else {}
        metas = self.store.metas(sorted({gone[p].version for p in stamped}))  # type: ignore[misc]
        gone_articles = {p: decode_article(p, gone[p].version, metas[gone[p].version],
                                           self.store.content)
                         for p in stamped if gone[p].version in metas}
        new_articles = {p: decode_article(p, parsed.version, parsed.meta,
                                          lambda v, c=parsed.content: c)
                        for p, (_, parsed) in pending.items()}
        renames = match_renames(gone_articles, new_articles) if gone_articles else {}
        for new_path, old_path in sorted(renames.items()):
            log.info("%s is %s renamed: it keeps its id, slug and date", new_path, old_path)
        return [replace(sighting, renamed_from=renames.get(path))
                for path, (sighting, _) in sorted(pending.items())]

    def _no_longer_duplicates(self, batch: Batch) -> list[Sighting]:
        """Sightings of files that were copies of one that went or changed: one is first now."""
        removed, self._removed_hashes = self._removed_hashes, set()
        assert self._known is not None
        sighted = {s.path for s in batch.sightings}
        wanted: dict[str, FileRecord] = {}
        for content_hash in removed:
            group = self._by_hash.get(content_hash, set())
            if not group:
                continue
            first = self._first_of(group)
            if first not in sighted and first in self._known and first not in {
                    r.path for r in batch.files}:
                wanted[first] = self._known[first]
        if not wanted:
            return []
        stamped = self.store.stamps_of(sorted(wanted))
        wanted = {p: r for p, r in wanted.items()
                  if p not in stamped or stamped[p].content_hash != r.content_hash}
        metas = self.store.metas(sorted({r.version for r in wanted.values() if r.version}))
        out = []
        for path, record in sorted(wanted.items()):
            if record.version not in metas:
                continue
            article = decode_article(path, record.version, metas[record.version],
                                     self.store.content)
            fm = article.front_matter
            out.append(Sighting(path=path, content_hash=article.content_hash,
                                mtime=(record.mtime_ns or 0) / 1e9,
                                slug_hint=fm.slug or slugify(article.title) or "article",
                                id_hint=fm.id))
        return out

    def run_paths(self, paths: set[str], now: float) -> SyncReport:
        """A pass over ``paths`` only: what inotify reported closed, renamed or deleted.

        These files are complete (closed after writing, or renamed into
        place), so they need no settle wait. Anything but a plain file or a
        gone one (a folder, a symlink) is left to a full pass, which judges it.
        """
        if self._known is None:
            return self.run(now)
        files: dict[str, FileSignature] = {}
        for path in paths:
            try:
                st = os.lstat(self.root / path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone
            if not stat.S_ISREG(st.st_mode):
                return self.run(now)
            files[path] = FileSignature(path, st.st_size, st.st_mtime_ns, st.st_ino)
        self.complete_paths = set(paths)
        return self.run(now, listing=Listing(files, ()), scope=set(paths))

    def _add(self, batch: Batch, parsed: Parsed, sig: FileSignature,
             record: FileRecord | None) -> None:
        COUNTS["read"] += 1
        COUNTS["parsed"] += parsed.parsed
        old_version = record.version if record is not None else None
        if parsed.error is not None and parsed.meta is None:
            # Rejected: the last good version (if any) stays published, and is reported.
            keep = record if record is not None and parsed.version != old_version else None
            row = FileRecord(sig.path, sig.size, sig.mtime_ns, sig.inode,
                             keep.version if keep else None, parsed.error, parsed.line,
                             PARSER_VERSION, keep.content_hash if keep else None,
                             keep.draft if keep else False)
        elif parsed.meta is not None:
            assert parsed.version is not None and parsed.content is not None
            assert parsed.content_hash is not None
            batch.versions.append((parsed.version, parsed.meta, parsed.content,
                                   parsed.content_hash, parsed.draft))
            row = FileRecord(sig.path, sig.size, sig.mtime_ns, sig.inode, parsed.version,
                             None, None, PARSER_VERSION, parsed.content_hash, parsed.draft)
        else:  # the bytes of the stored version: a touch, or the same text again
            assert record is not None
            row = FileRecord(sig.path, sig.size, sig.mtime_ns, sig.inode, parsed.version,
                             None, None, PARSER_VERSION, record.content_hash, record.draft)
        self._unindex(sig.path)
        self._known[sig.path] = row  # type: ignore[index]
        self._index(row, add=True)
        batch.files.append(row)
        if record is None or (record.version, record.error, record.line) != (
            row.version, row.error, row.line
        ) or parsed.meta is not None:
            batch.changed.add(sig.path)
        if parsed.sighting is not None:
            if record is None and self._gone_records:
                self._pending[sig.path] = (parsed.sighting, parsed)
            else:
                batch.sightings.append(parsed.sighting)

    def _commit(self, batch: Batch, present: set[str], now: float, report: SyncReport) -> None:
        """Stamp the batch's first sightings, then store it: stamps exist before followers look."""
        sightings = self._not_duplicates(batch.sightings)
        if sightings:
            self.store.stamp(sightings, present, now)
            # A stamp may change without the file (a copy inherits a gone file's id).
            batch.changed |= {s.path for s in sightings}
        if not (batch.files or batch.gone or batch.versions or batch.complete):
            return
        self.store.write(batch)
        assert self._known is not None
        for path in batch.gone:
            self._known.pop(path, None)
        for row in batch.files:
            if row.listing_error:
                self._known[row.path] = row
        report.changed |= batch.changed

    def _parse_all(self, jobs: list[tuple[Path, str, int, str | None, float]]) -> Iterable[Parsed]:
        if len(jobs) < POOL_THRESHOLD or self.workers < 2:
            return (read_and_parse(*job) for job in jobs)
        return _pooled(jobs, self.workers)


def _pooled(jobs: list[tuple[Path, str, int, str | None, float]], workers: int
            ) -> Iterable[Parsed]:
    """Parse on every core; results in order, so batches commit as they come.

    At most a few chunks are in flight: when storing is slower than parsing,
    parsed articles would otherwise pile up in this process's memory.
    """
    # forkserver: the pool's processes are forked from a clean server process,
    # never from this one, whose threads (gunicorn's, the reloader's) and
    # SQLite connections must not be duplicated.
    context = multiprocessing.get_context("forkserver")
    started = time.perf_counter()
    chunk = 64
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        pending: deque[Future[list[Parsed]]] = deque()
        for part in chunks:
            pending.append(pool.submit(_parse_chunk, part))
            if len(pending) > 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    log.info("parsed %d files on %d processes in %.1f s", len(jobs), workers,
             time.perf_counter() - started)


def _parse_chunk(jobs: list[tuple[Path, str, int, str | None, float]]) -> list[Parsed]:
    return [read_and_parse(*job) for job in jobs]
