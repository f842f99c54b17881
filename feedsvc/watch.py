"""Change detection in milliseconds: inotify on the articles folder, in the writer.

Why ``inotify_simple`` and not ``watchfiles``: watchfiles (Rust ``notify``)
reports only added / modified / deleted, so it cannot tell a file closed
after writing (``IN_CLOSE_WRITE``: complete, read it now) from one still
being written (``IN_MODIFY``: not finished, do not read it). inotify_simple is
a maintained, dependency-free ~100-line ctypes wrapper of the kernel call
that gives exactly those flags. Where inotify is missing (macOS, network
filesystems, which report nothing) the periodic rescan still finds every
change: it stays as the fallback and the safety net.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .source import is_ignored

if TYPE_CHECKING:
    from .publisher import Publisher

log = logging.getLogger("feedsvc")

try:
    from inotify_simple import INotify, flags
except ImportError:  # not Linux, or not installed: the rescan does the work
    INotify = None  # type: ignore[assignment,misc]
    flags = None  # type: ignore[assignment]


def available() -> bool:
    return INotify is not None


#: After inotify reports a file gone (or a folder come or gone), how long it must say
#: nothing more before the batch is handed on, and the longest it waits for that.
QUIET_SECONDS = 0.2
QUIET_LIMIT = 10.0


class FolderWatcher:
    """Watches the folder tree and hands complete files to ``on_paths`` at once.

    A file closed after writing or renamed into place is complete: it is
    passed on (relative POSIX paths) within a few milliseconds. A deleted or
    renamed-away one is gone, and is passed on once inotify has been quiet for
    :data:`QUIET_SECONDS`: ``rm -rf`` of the folder (or ``rsync --delete``, a
    ``git checkout``) reports each file deleted before the folder itself, and
    taken as they came those deletions were published, a site short of
    dozens of articles before the folder was found missing. A file modified
    and not yet closed is :attr:`writing` and is not read, even by the
    rescan, until it is closed.
    """

    def __init__(self, root: Path, on_paths: Callable[[set[str]], None],
                 on_overflow: Callable[[], None]) -> None:
        assert INotify is not None
        self.root = Path(root)
        self.on_paths = on_paths
        self.on_overflow = on_overflow
        self.writing: set[str] = set()  # modified, not closed yet
        #: The folder watched is no longer at ``root`` (removed, or renamed away and
        #: perhaps another put in its place): inotify sees nothing more of that path.
        self.lost = False
        self._inotify = INotify()
        self._dirs: dict[int, str] = {}  # watch descriptor -> relative folder ("" = root)
        self._stop = threading.Event()
        self._mask = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE
                      | flags.CREATE | flags.MODIFY | flags.DELETE_SELF | flags.MOVE_SELF)
        self._watch_tree("")
        self._thread = threading.Thread(target=self._run, name="feedsvc-inotify", daemon=True)

    def start(self) -> FolderWatcher:
        self._thread.start()
        return self

    def stop(self, wait: float | None = None) -> None:
        """Stop within half a second (the thread closes the inotify descriptor itself);
        with ``wait``, join the thread for up to that long (a refresh it runs finishes)."""
        self._stop.set()
        if wait is not None and self._thread.ident is not None \
                and self._thread is not threading.current_thread():
            self._thread.join(wait)

    def _watch_tree(self, rel: str) -> None:
        """Watch ``rel`` and every folder below it (not symlinked ones, as the listing)."""
        base = self.root / rel if rel else self.root
        try:
            wd = self._inotify.add_watch(str(base), self._mask)
        except OSError as exc:
            log.warning("inotify cannot watch %s (%s); the rescan covers it", base, exc)
            return
        self._dirs[wd] = rel
        try:
            with os.scandir(base) as entries:
                for entry in entries:
                    if not is_ignored(entry.name) and entry.is_dir(follow_symlinks=False):
                        self._watch_tree(f"{rel}{entry.name}/" if rel else f"{entry.name}/")
        except OSError:
            pass

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                events = self._inotify.read(timeout=500, read_delay=1)
                if any(self._going(event) for event in events):
                    events += self._until_quiet()
                self._handle(events)
        finally:
            self._inotify.close()

    @staticmethod
    def _going(event: object) -> bool:
        """Whether the batch waits for quiet after ``event``: the folder itself gone, an
        article gone, or a folder come or gone. Not an editor's or a copy tool's own
        file (a swap file deleted, a temporary renamed over the article): an edit
        saved so is still handed on at once."""
        mask = event.mask  # type: ignore[attr-defined]
        if mask & (flags.DELETE_SELF | flags.MOVE_SELF):
            return True
        if not mask & (flags.DELETE | flags.MOVED_FROM | flags.ISDIR):
            return False
        return not is_ignored(event.name)  # type: ignore[attr-defined]

    def _until_quiet(self) -> list:
        """The events that follow until none comes for QUIET_SECONDS (QUIET_LIMIT at most).

        Files being written meanwhile are noted at once, so that a rescan in
        the wait does not read them half-written.
        """
        more: list = []
        deadline = time.monotonic() + QUIET_LIMIT
        while not self._stop.is_set() and time.monotonic() < deadline:
            batch = self._inotify.read(timeout=int(QUIET_SECONDS * 1000), read_delay=1)
            if not batch:
                break
            for event in batch:
                folder = self._dirs.get(event.wd)
                if event.mask & flags.MODIFY and folder is not None and event.name:
                    self.writing.add(folder + event.name)
            more += batch
        return more

    def _handle(self, events: list) -> None:
        """Pass complete files on; note files being written; rescan on overflow."""
        paths: set[str] = set()
        overflow = False
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                overflow = True
                continue
            folder = self._dirs.get(event.wd)
            if folder is None:
                continue
            if folder == "" and event.mask & (flags.DELETE_SELF | flags.MOVE_SELF
                                              | flags.IGNORED):
                self.lost = True
                overflow = True  # the folder itself came or went: the rescan judges it
            if event.mask & flags.IGNORED:
                self._dirs.pop(event.wd, None)
                continue
            if not event.name or is_ignored(event.name):
                continue
            path = folder + event.name
            if event.mask & flags.ISDIR:
                if event.mask & (flags.CREATE | flags.MOVED_TO):
                    self._watch_tree(path + "/")
                overflow = True  # a folder came or went: let the full rescan judge it
                continue
            if event.mask & flags.MODIFY:
                self.writing.add(path)
                continue
            if event.mask & flags.CREATE:
                continue  # created, not yet written or closed
            self.writing.discard(path)
            paths.add(path)
        try:
            if overflow:
                self.on_overflow()
            elif paths:
                self.on_paths(paths)
        except Exception:  # never let the watcher die: the rescan still runs
            log.exception("handling inotify events failed")


def watch_while_writer(current: FolderWatcher | None, publisher: Publisher, *,
                       on_paths: Callable[[set[str]], None], on_overflow: Callable[[], None],
                       rescan_seconds: float) -> tuple[FolderWatcher | None, bool]:
    """The watcher a process should have now: one while it is the writer (started here,
    its ``writing`` set shared with the folder sync), none once it is not (stopped
    here). A watcher whose folder is gone is replaced by one of the folder now at
    the path (none while there is none: asked again at the next call). Also
    whether inotify is still to be tried: False once it failed here (logged;
    the rescan every ``rescan_seconds`` does the work). Used by the serving
    reloader and by ``feedsvc build --watch``.
    """
    if current is not None and current.lost:
        # Watching a folder no longer at the path (a deploy's ``mv``, or rm -rf and
        # a copy put back): watch whatever is there now, once it is there.
        current.stop()
        current = None
        publisher.sync.writing = set()
    if publisher.is_writer and current is None and available() \
            and os.path.isdir(publisher.settings.articles_dir):
        try:
            current = FolderWatcher(publisher.settings.articles_dir, on_paths=on_paths,
                                    on_overflow=on_overflow).start()
        except OSError as exc:
            log.warning("inotify unavailable (%s); rescanning every %s s", exc, rescan_seconds)
            return None, False
        publisher.sync.writing = current.writing
    elif not publisher.is_writer and current is not None:
        current.stop()
        current = None
        publisher.sync.writing = set()
    return current, True
