"""`feedsvc build --watch`: keep a static export in step with the articles folder.

What ``hugo --watch`` and ``pelican --autoreload`` do for their sites. A
one-shot ``feedsvc build`` after an edit must start an interpreter, sync
the folder and load the whole view from the store before it renders the
few documents the edit touched (about 2.5 s at 10,000 articles). Here one
process keeps all of that loaded: inotify hands it each file closed after
writing, the store takes the change, the view applies it (milliseconds),
and :func:`feedsvc.export.build_site` writes only the files whose bytes
changed, signing only the feeds the change touched and rendering only the
entries that changed (the build's fragments stay cached between builds).

The loop is single-threaded on purpose: the view changes only between two
builds, never during one, and the forked renderers of a large build
(:func:`feedsvc.export.build_site`) fork a process with no reload thread
running. The inotify thread only collects paths. A build that fails (a full
disk, a permission) leaves the previous build in place, as a one-shot build
does; it is logged once per distinct reason and tried again with backoff.
Only the first build's failure ends the command (exit status 2, as a
one-shot build): it is mostly one no retry mends (a folder that is not an
earlier build, no base URL).

Faults of the folders around it: OUTDIR removed is rebuilt at the next
rescan, and the lock follows the folder a build made again; an articles
folder gone, renamed away or unreadable leaves the last build (inotify's
deletions wait for it to go quiet, so ``rm -rf`` is not taken half done),
and one put in its place is listed and watched at once. Signals only set
flags (:meth:`WatchedBuild.on_signal`); SIGHUP asks for a rescan now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import watch
from .errors import FeedsvcError
from .export import (
    MANIFEST,
    BuildSummary,
    ExportError,
    build_lock,
    build_site,
    files_checked_meanwhile,
    keep_every_fragment,
    valid_until,
)

if TYPE_CHECKING:
    from flask import Flask

    from .publisher import Publisher

log = logging.getLogger("feedsvc")

#: How often the loop asks the store whether another process (a running
#: service that holds the writer lease) stored a change: one cheap query.
FOLLOW_SECONDS = 0.2
#: Longest wait before a failed build is tried again (it doubles from 1 s).
MAX_BACKOFF = 60.0


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """One build of the watch loop: its summary, and what set it off."""

    summary: BuildSummary
    #: "start"; "change"; "time" (a scheduled article fell due, or the news sitemap
    #: dropped one); "repair" (files of the build were changed by hand)
    reason: str


class WatchedBuild:
    """Rebuild ``outdir`` from ``app`` after every change, until :meth:`stop`.

    ``rescan_seconds`` is how often the folder is listed again (the fallback
    where inotify reports nothing, as when serving); each build's summary
    goes to ``on_build``.
    """

    def __init__(self, app: Flask, outdir: str | Path, *, rescan_seconds: float,
                 on_build: Callable[[Rebuilt], None], base_url: str | None = None,
                 inotify: bool = True, follow_seconds: float = FOLLOW_SECONDS,
                 progress: Callable[[int, int, str], None] | None = None) -> None:
        self.app = app
        #: Told the first build's progress (a first build of 10,000 articles takes a
        #: minute); the rebuilds after a change take a second or less.
        self.progress = progress
        self.publisher: Publisher = app.extensions["feedsvc"]
        self.outdir = Path(outdir)
        self.base_url = base_url
        self.rescan_seconds = max(rescan_seconds, 0.1)
        self.follow_seconds = follow_seconds
        self.on_build = on_build
        self.inotify = inotify and watch.available()
        self.watcher: watch.FolderWatcher | None = None
        self._stop = threading.Event()
        self._woken = threading.Event()
        #: Set by :meth:`on_signal` (no lock there), read by the loop at each turn.
        self._stop_asked = False
        self._rescan_asked = False
        self._paths: set[str] = set()
        self._rescan_all = False
        self._lock = threading.Lock()  # the inotify thread adds paths; the loop takes them
        self._failure: str | None = None  # the reason of the last failed build, logged once
        #: Whether the last check of the output tree found every file as recorded.
        self._trusted = False
        #: The articles folder inotify watches, as (st_dev, st_ino); None while it is
        #: missing. Another folder in its place is one the watcher never saw.
        self._root: tuple[int, int] | None = None
        #: OUTDIR's build lock, held while the loop runs, and the folder it is held
        #: on (st_dev, st_ino): a folder removed and made again is another one.
        self._held: contextlib.AbstractContextManager[None] | None = None
        self._locked: tuple[int, int] | None = None

    def stop(self) -> None:
        """Ask the loop to end: a build under way finishes first (it is all or nothing)."""
        self._stop.set()
        self._woken.set()

    def on_signal(self, signum: int) -> None:
        """What a signal handler calls: SIGHUP asks for a rescan now (the folder listed
        again, every file of the export checked), any other signal for :meth:`stop`.

        Only flags are set, read by the loop within ``follow_seconds``: Python runs
        a handler on the main thread between two bytecodes, maybe inside the
        Event the loop waits on, and setting that Event there would wait for its
        lock, held by the same thread, for ever.
        """
        if signum == signal.SIGHUP:
            self._rescan_asked = True
        else:
            self._stop_asked = True

    def run(self, files_as_recorded: bool = False) -> None:
        """Build now, then after every change, until :meth:`stop`."""
        try:
            self._relock()  # no other build writes the folder meanwhile
            self._loop(files_as_recorded)
        finally:
            if self._held is not None:
                self._held.__exit__(None, None, None)
                self._held = self._locked = None
            if self.watcher is not None:
                self.watcher.stop(wait=5.0)
                self.watcher = None

    def _loop(self, files_as_recorded: bool) -> None:
        publisher = self.publisher
        self._trusted = files_as_recorded
        if not publisher.is_writer:
            publisher.refresh()  # takes the writer lease if free (then inotify is on)
        self._watch()  # before the first build: an edit during it is taken right after
        # The first build's failure is the command's: a folder that is not an earlier
        # build, a missing base URL, a full disk are said at once, not retried forever.
        built = self._build("start", raising=True)
        until = valid_until(publisher)
        next_rescan = time.monotonic() + self.rescan_seconds
        backoff = 1.0
        retry_at: float | None = None
        #: Why a build is owed (a change, a moment, a repair), until one succeeds.
        owed: str | None = None
        while not self._stopping():
            self._watch()
            now = time.monotonic()
            waits = [next_rescan - now, self.follow_seconds]
            if retry_at is not None:
                waits.append(retry_at - now)
            self._woken.wait(max(0.0, min(waits)))
            self._woken.clear()
            if self._stopping():
                break
            with self._lock:
                paths, self._paths = self._paths, set()
                rescan, self._rescan_all = self._rescan_all, False
            if self._rescan_asked:
                self._rescan_asked, rescan = False, True
            now = time.monotonic()
            try:
                if rescan or now >= next_rescan:
                    # The output tree is checked here, off the path of an edit: one stat
                    # a file, in a forked child while this process lists the folder.
                    checked = files_checked_meanwhile(self.outdir) if self._trusted else None
                    if self._trusted and checked is None:
                        # Not the manifest this build wrote: the files cannot be taken
                        # as recorded; with none at all (OUTDIR removed) rebuild them.
                        self._trusted = False
                        if not (self.outdir / MANIFEST).is_file():
                            log.warning("the build in %s was removed; building it again",
                                        self.outdir)
                            owed = owed or "repair"
                    try:
                        publisher.refresh()
                        publisher.store.checkpoint_if_due()
                    finally:
                        if checked is not None and not checked():
                            log.warning("files of %s were changed or removed by hand; "
                                        "rebuilding them", self.outdir)
                            self._trusted, owed = False, owed or "repair"
                    next_rescan = time.monotonic() + self.rescan_seconds
                elif paths:
                    publisher.refresh(paths=paths)
                else:
                    publisher.follow()
            except Exception:  # never let the loop die: the last good build stands
                log.exception("reload failed")
                continue
            if not publisher.loaded:
                continue  # a restore mid-import, or a first import elsewhere: wait
            if until is not None and time.time() >= until:
                owed = "time"
            elif built is None or publisher.version != built.version:
                owed = owed or "change"
            if owed is None or (retry_at is not None and now < retry_at):
                continue
            until = valid_until(publisher)  # taken before rendering, as build_site does
            built = self._build(owed) or built
            if self._failure is None:
                owed, backoff, retry_at = None, 1.0, None
            else:  # still owed: tried again after the backoff, whatever changes meanwhile
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _stopping(self) -> bool:
        if self._stop_asked:
            self._stop.set()
        return self._stop.is_set()

    def _build(self, reason: str, raising: bool = False) -> BuildSummary | None:
        """One build; None if it failed (logged once per reason; the old build stands),
        or with ``raising`` the failure raised.

        The files of the last build are taken as recorded (not statted) while the
        last check of the tree found them so: an edit's rebuild then costs no
        stat of every file. A file changed by hand is found by the next check
        (every rescan) and rewritten by the build that follows it.
        """
        # Keep every entry's fragments between builds, not only during one (build_site
        # puts back the bounds it found): the next edit re-renders only what it changed.
        keep_every_fragment(self.publisher)
        try:
            summary = build_site(self.app, self.outdir, self.base_url,
                                 progress=self.progress if reason == "start" else None,
                                 files_as_recorded=self._trusted)
        except (FeedsvcError, OSError) as exc:
            if raising:
                raise
            if str(exc) != self._failure:
                log.error("build failed, the previous build stands: %s", exc)
            self._failure = str(exc)
            self._trusted = False  # a failure may leave anything: stat every file next time
            return None
        self._trusted = True  # every kept file was found as recorded, or statted
        self._relock()
        if self._failure is not None:
            log.info("build succeeded again after: %s", self._failure)
        self._failure = None
        self.on_build(Rebuilt(summary, reason))
        return summary

    def _relock(self) -> None:
        """Hold the build lock of OUTDIR as it is now (made if missing).

        The lock is on the folder itself: once OUTDIR is removed and a build
        makes it again, the old lock guards nothing and a build by hand could
        write the new folder between two of ours. A folder another build holds
        is left to it; the next build says so.
        """
        try:
            st = os.stat(self.outdir)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._locked:
            return
        lock = build_lock(self.outdir)
        if self._held is None:
            lock.__enter__()  # the first: its refusal is the command's
        else:
            try:
                lock.__enter__()
            except ExportError:
                return
            self._held.__exit__(None, None, None)
        try:
            st = os.stat(self.outdir)
        except OSError:  # removed again meanwhile: the next build's turn
            st = None
        self._held, self._locked = lock, (st.st_dev, st.st_ino) if st is not None else None

    def _watch(self) -> None:
        """Watch the folder while this process is the writer (as the serving reloader).

        inotify watches a folder, not a path: once the articles folder is removed,
        or renamed and another put in its place (a deploy's ``mv``), the watcher
        sees nothing more of it. One stat a turn finds that; the folder is then
        listed at once (the missing folder said, or the new one's files taken)
        and the new one watched.
        """
        if not self.inotify:
            return
        try:
            st = os.stat(self.publisher.settings.articles_dir)
            root = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
        except OSError:
            root = None
        if root != self._root and self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
            self.publisher.sync.writing = set()
            self._overflow()
        self._root = root
        if root is not None:
            self.watcher, self.inotify = watch.watch_while_writer(
                self.watcher, self.publisher, on_paths=self._changed,
                on_overflow=self._overflow, rescan_seconds=self.rescan_seconds)

    def _changed(self, paths: set[str]) -> None:
        with self._lock:
            self._paths |= paths
        self._woken.set()

    def _overflow(self) -> None:
        if self.watcher is not None:
            self.watcher.writing.clear()
        with self._lock:
            self._rescan_all = True
        self._woken.set()
