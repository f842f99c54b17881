"""Listing and reading the articles folder: the only module that touches it.

Listing runs every few seconds over 10,000+ files, so it is one ``os.scandir``
walk using the ``lstat`` data each entry already has (no ``open``, no
``realpath`` for ordinary files). A file is only *read* when its
:class:`FileSignature` changed since the last listing.

What counts as a candidate article: every regular file whose name is not
ignored (:func:`is_ignored`), whatever its extension. Articles are normally
``*.txt`` but operators also drop ``.md`` or extension-less files, and a file
that is silently skipped because of its extension is a mystery to debug,
whereas one that fails to parse is reported with a reason.

Safety: the folder is published to the world, so nothing outside it may leak
in through a symlink. A symlink to a regular file inside the folder is
accepted; anything else a symlink points at is reported, never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from feedsvc.errors import ArticleError

__all__ = [
    "DEFAULT_MAX_ARTICLE_BYTES",
    "FileSignature",
    "Listing",
    "is_ignored",
    "list_articles",
    "read_article",
    "settled",
]

#: Files larger than this are reported instead of read (FEEDSVC_MAX_ARTICLE_BYTES).
DEFAULT_MAX_ARTICLE_BYTES = 2 * 1024 * 1024

# Suffixes of editor back-ups, swap files and partial downloads/writes, compared
# case-insensitively (a Windows share may well produce "X.TMP").
_IGNORED_SUFFIXES = (
    "~",
    ".swp",
    ".swo",
    ".swx",
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".bak",
    ".orig",
)


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What a listing knows of a file without reading it.

    Equality of two signatures means "unchanged; do not read again": an edit
    changes the mtime (and usually the size), an atomic replace (write a
    temporary file, rename it over) changes the inode even within one mtime
    tick. For an accepted symlink the figures are the target's.
    """

    path: str  # POSIX path relative to the root, e.g. "science/003_ab.txt"
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True, slots=True)
class Listing:
    """Result of one walk: candidate files by path, plus what cannot be published.

    ``errors`` are entries that look like articles but cannot be one (a
    symlink out of the folder, a FIFO, an unlistable sub-folder ...), sorted
    by path so that reports are stable. Ignored names are not errors.
    """

    files: dict[str, FileSignature]
    errors: tuple[ArticleError, ...]


def is_ignored(name: str) -> bool:
    """Whether a file or folder name is never an article, silently.

    Hidden names (``.x``, which covers ``.#x`` Emacs locks, ``.x.swp`` Vim
    swap files, ``.git``), Emacs auto-saves ``#x#``, back-ups ``x~``,
    ``x.bak``, ``x.orig`` and partial writes ``x.tmp``, ``x.part`` ... are
    what editors and copy tools leave behind while a real article is being
    written: publishing them would publish half-written or stale text.
    """
    if not name or name.startswith("."):
        return True
    if len(name) >= 2 and name.startswith("#") and name.endswith("#"):
        return True
    return name.lower().endswith(_IGNORED_SUFFIXES)


def _display_name(name: str) -> str:
    """A printable form of a name that may hold undecodable bytes (surrogate escapes)."""
    return os.fsencode(name).decode("utf-8", "replace")


def _is_valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inside(real: str, root_real: str) -> bool:
    """Whether resolved path ``real`` is the resolved folder ``root_real`` or below it."""
    prefix = root_real if root_real.endswith(os.sep) else root_real + os.sep
    return real == root_real or real.startswith(prefix)


def _check_root(root: Path) -> None:
    """Raise a clear FileNotFoundError / NotADirectoryError naming the folder."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"articles folder {str(root)!r} does not exist", str(root)
        ) from None
    except NotADirectoryError:
        raise NotADirectoryError(
            errno.ENOTDIR, f"articles folder {str(root)!r} is not a folder", str(root)
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(
            errno.ENOTDIR, f"articles folder {str(root)!r} is not a folder", str(root)
        )


def _symlink_entry(
    abs_path: str, rel: str, root_real: str
) -> tuple[FileSignature | None, ArticleError | None]:
    """Judge a symlink: a signature for a link to a regular file inside root, else an error.

    Only symlinks pay for the extra ``stat`` and ``realpath``; they are rare.
    """
    try:
        st = os.stat(abs_path)  # follows the link
    except (FileNotFoundError, NotADirectoryError):
        return None, ArticleError(rel, "broken symlink")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, ArticleError(rel, "symlink loop")
        if isinstance(exc, PermissionError):
            return None, ArticleError(rel, "permission denied following symlink")
        return None, ArticleError(rel, f"symlink cannot be followed: {exc.strerror}")
    if not _inside(os.path.realpath(abs_path), root_real):
        return None, ArticleError(rel, "symlink points outside the articles folder; not followed")
    if stat.S_ISDIR(st.st_mode):
        return None, ArticleError(rel, "symlinked folder not followed")
    if not stat.S_ISREG(st.st_mode):
        return None, ArticleError(rel, "not a regular file")
    return FileSignature(rel, st.st_size, st.st_mtime_ns, st.st_ino), None


def list_articles(root: Path) -> Listing:
    """Walk ``root`` recursively and return every candidate article file.

    Ignored names (:func:`is_ignored`), files and folders alike, are skipped
    silently; folders are descended, including one named ``x.txt``. Symlinks
    are judged by :func:`_symlink_entry` and symlinked folders never descended
    (a loop or a link to ``/`` would otherwise walk forever or publish the
    host). A sub-folder that cannot be listed becomes an error and the walk
    goes on; entries that vanish mid-walk are simply absent (a race with a
    writer, not a defect). Names that are not valid UTF-8 are reported: they
    cannot become URLs or ledger keys.

    Raises FileNotFoundError / NotADirectoryError naming ``root`` if it is
    missing or not a folder, and PermissionError if it cannot be listed at
    all: those are configuration errors, not article errors.
    """
    root = Path(root)
    _check_root(root)
    root_real = os.path.realpath(root)
    files: dict[str, FileSignature] = {}
    errors: list[ArticleError] = []
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        dir_path, prefix = stack.pop()
        try:
            with os.scandir(dir_path) as entries:
                for entry in entries:
                    name = entry.name
                    if is_ignored(name):
                        continue
                    rel = prefix + name
                    if not _is_valid_utf8(name):
                        errors.append(
                            ArticleError(
                                prefix + _display_name(name),
                                "name is not valid UTF-8; rename it",
                            )
                        )
                        continue
                    try:
                        if entry.is_symlink():
                            sig, err = _symlink_entry(entry.path, rel, root_real)
                            if sig is not None:
                                files[rel] = sig
                            if err is not None:
                                errors.append(err)
                        elif entry.is_dir(follow_symlinks=False):
                            stack.append((entry.path, rel + "/"))
                        elif entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            files[rel] = FileSignature(rel, st.st_size, st.st_mtime_ns, st.st_ino)
                        else:
                            errors.append(ArticleError(rel, "not a regular file"))
                    except FileNotFoundError:
                        continue  # removed between readdir and stat: it is gone
        except FileNotFoundError:
            if not prefix:
                raise FileNotFoundError(
                    errno.ENOENT, f"articles folder {str(root)!r} does not exist", str(root)
                ) from None
            continue  # a sub-folder removed mid-walk: nothing in it to publish
        except PermissionError:
            if not prefix:
                raise PermissionError(
                    errno.EACCES,
                    f"articles folder {str(root)!r} cannot be listed: permission denied",
                    str(root),
                ) from None
            errors.append(ArticleError(prefix.rstrip("/"), "permission denied listing folder"))
        except OSError as exc:
            if not prefix:
                raise
            reason = exc.strerror or str(exc)
            errors.append(ArticleError(prefix.rstrip("/"), f"folder cannot be listed: {reason}"))
    errors.sort(key=lambda e: e.path)
    return Listing(files=files, errors=tuple(errors))


def _resolve_inside(root: Path, path: str) -> str:
    """The resolved absolute path of ``path``, checked to lie inside ``root``.

    Re-checked at read time because the folder may have changed since the
    listing (a file replaced by a symlink to ``/etc/shadow`` must not leak).
    """
    parts = path.split("/")
    if (
        not path
        or "\x00" in path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ArticleError(path, "not a path inside the articles folder")
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, *parts))
    if not _inside(real, root_real):
        raise ArticleError(path, "symlink points outside the articles folder; not followed")
    return real


#: Why a file this process may not read is rejected. A chmod changes neither its size
#: nor its mtime, so such a file is read again at every full pass (feedsvc.sync).
UNREADABLE = "permission denied"


def read_article(root: Path, path: str, max_bytes: int) -> bytes:
    """Read one listed file's bytes, at most ``max_bytes``; raise ArticleError otherwise.

    The path is resolved and re-checked to lie inside ``root``, then opened
    with ``O_NOFOLLOW`` (a symlink swapped in after the check fails instead of
    being followed) and ``O_NONBLOCK`` (a FIFO swapped in cannot hang the
    reader). At most ``max_bytes + 1`` bytes are read, so a file that grows
    while being read cannot exhaust memory.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
    real = _resolve_inside(root, path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ArticleError(path, "is a folder")
            if not stat.S_ISREG(st.st_mode):
                raise ArticleError(path, "not a regular file")
            if st.st_size > max_bytes:
                raise _too_large(path, st.st_size, max_bytes)
            chunks: list[bytes] = []
            remaining = max_bytes + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            if len(data) > max_bytes:  # grew while being read
                raise _too_large(path, max(os.fstat(fd).st_size, len(data)), max_bytes)
            return data
        finally:
            os.close(fd)
    except ArticleError:
        raise
    except FileNotFoundError:
        raise ArticleError(path, "file disappeared before it could be read") from None
    except PermissionError:
        raise ArticleError(path, UNREADABLE) from None
    except IsADirectoryError:
        raise ArticleError(path, "is a folder") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArticleError(path, "symlink loop or symlink swapped in; not followed") from None
        raise ArticleError(path, exc.strerror or str(exc)) from None


def _too_large(path: str, size: int, max_bytes: int) -> ArticleError:
    return ArticleError(
        path,
        f"file is {size} bytes, over the limit of {max_bytes} bytes (FEEDSVC_MAX_ARTICLE_BYTES)",
    )


def settled(sig: FileSignature, now_ns: int, quiet_ns: int) -> bool:
    """Whether the file has been left alone long enough to be read as finished.

    An editor or ``cp`` writing a file in place updates its mtime as it goes,
    so a file modified within the last ``quiet_ns`` may be caught half-written;
    publishing that would publish a truncated article under a permanent id.
    Waiting until the mtime is ``quiet_ns`` old avoids it (writers that rename
    a finished ``x.tmp`` into place never need the wait).

    An mtime more than ``quiet_ns`` in the *future* also counts as settled: it
    is a clock-skewed copy (an archive from another machine), not a write in
    progress, and waiting for the clock to catch up could hold it back for
    days. ``quiet_ns <= 0`` disables the wait.
    """
    if quiet_ns <= 0:
        return True
    return abs(now_ns - sig.mtime_ns) >= quiet_ns
