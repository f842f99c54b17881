"""Tests of feedsvc.source against real folders: symlinks, FIFOs, permissions, races."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedsvc import source
from feedsvc.errors import ArticleError
from feedsvc.source import (
    DEFAULT_MAX_ARTICLE_BYTES,
    FileSignature,
    is_ignored,
    list_articles,
    read_article,
    settled,
)
from tests.unprivileged import run_unprivileged


def write(root: Path, rel: str, data: str | bytes = "Headline\n\nBy Sara\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def errors_of(root: Path) -> dict[str, str]:
    return {e.path: e.reason for e in list_articles(root).errors}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "articles"
    folder.mkdir()
    return folder


# --- is_ignored ---------------------------------------------------------------

IGNORED = [
    ".hidden",
    ".#draft.txt",
    "draft.txt~",
    ".draft.txt.swp",
    ".draft.txt.swo",
    "draft.tmp",
    "draft.txt.tmp",
    "draft.txt.part",
    "#draft.txt#",
    "draft.txt.bak",
    "draft.txt.orig",
    "DRAFT.TXT.TMP",
    ".DS_Store",
]
ACCEPTED = [
    "000_116cfd26fe85501a.txt",
    "notes.md",
    "README",
    "#hashtag.txt",
    "draft#",
    "tmp",
    "part.txt",
    "backup.txt",
    "file.txt.orig.txt",
]


@pytest.mark.parametrize("name", IGNORED)
def test_ignored_names(name: str) -> None:
    assert is_ignored(name)


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_names(name: str) -> None:
    assert not is_ignored(name)


@given(st.text(min_size=1).filter(lambda s: "/" not in s and "\x00" not in s))
def test_hidden_and_backup_names_always_ignored(name: str) -> None:
    assert is_ignored("." + name)
    assert is_ignored(name + "~")
    assert is_ignored(name + ".tmp")


@given(st.from_regex(r"[a-z0-9_]{1,20}\.(txt|md)", fullmatch=True))
def test_plain_article_names_never_ignored(name: str) -> None:
    assert not is_ignored(name)


def test_listing_skips_ignored_names_silently(root: Path) -> None:
    write(root, "real.txt")
    for name in IGNORED:
        write(root, name)
    listing = list_articles(root)
    assert set(listing.files) == {"real.txt"}
    assert listing.errors == ()


def test_every_non_ignored_regular_file_is_a_candidate(root: Path) -> None:
    for name in ACCEPTED:
        write(root, name)
    assert set(list_articles(root).files) == set(ACCEPTED)


# --- walking ------------------------------------------------------------------


def test_nested_folders_give_posix_relative_paths(root: Path) -> None:
    write(root, "top.txt")
    write(root, "science/003_ab.txt")
    write(root, "science/space/deep/004_cd.md")
    write(root, ".git/config")  # hidden folder: skipped
    write(root, "science/.cache/x.txt")  # hidden folder below: skipped
    write(root, "old.bak/x.txt")  # ignored folder name: skipped
    listing = list_articles(root)
    assert set(listing.files) == {"top.txt", "science/003_ab.txt", "science/space/deep/004_cd.md"}
    assert listing.errors == ()
    for rel, sig in listing.files.items():
        assert sig.path == rel


def test_signature_figures_come_from_lstat(root: Path) -> None:
    path = write(root, "a/b.txt", "x" * 123)
    sig = list_articles(root).files["a/b.txt"]
    st_ = os.lstat(path)
    assert sig == FileSignature("a/b.txt", 123, st_.st_mtime_ns, st_.st_ino)


def test_folder_named_like_an_article_is_descended(root: Path) -> None:
    write(root, "folder.txt/inner.txt", "inside")
    listing = list_articles(root)
    assert set(listing.files) == {"folder.txt/inner.txt"}
    assert listing.errors == ()
    with pytest.raises(ArticleError) as info:
        read_article(root, "folder.txt", 1000)
    assert info.value.reason == "is a folder"
    assert read_article(root, "folder.txt/inner.txt", 1000) == b"inside"


def test_empty_root(root: Path) -> None:
    listing = list_articles(root)
    assert listing.files == {} and listing.errors == ()


def test_missing_root_raises_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        list_articles(missing)


def test_root_that_is_a_file_raises_naming_it(tmp_path: Path) -> None:
    f = write(tmp_path, "file.txt")
    with pytest.raises(NotADirectoryError, match="file.txt.*not a folder"):
        list_articles(f)


def test_root_may_itself_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write(real, "a.txt")
    write(real, "link.txt").unlink()
    os.symlink("a.txt", real / "link.txt")
    (tmp_path / "alias").symlink_to(real)
    listing = list_articles(tmp_path / "alias")
    assert set(listing.files) == {"a.txt", "link.txt"}
    assert listing.errors == ()


def test_non_utf8_name_is_reported(root: Path) -> None:
    write(root, "ok.txt")
    fd = os.open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    listing = list_articles(root)
    assert set(listing.files) == {"ok.txt"}
    assert [(e.path, e.reason) for e in listing.errors] == [
        ("caf\ufffd.txt", "name is not valid UTF-8; rename it")
    ]


def test_listing_makes_no_extra_calls_per_plain_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(50):
        write(root, f"d{i % 5}/{i:03}.txt")
    calls: list[str] = []
    real_stat, real_realpath = os.stat, os.path.realpath

    def counting_stat(*a: Any, **k: Any) -> Any:
        calls.append("stat")
        return real_stat(*a, **k)

    def counting_realpath(*a: Any, **k: Any) -> Any:
        calls.append("realpath")
        return real_realpath(*a, **k)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os.path, "realpath", counting_realpath)
    listing = list_articles(root)
    assert len(listing.files) == 50
    assert calls.count("stat") <= 1  # the root check only
    assert calls.count("realpath") <= 1


# --- symlinks -----------------------------------------------------------------


def test_symlink_to_file_inside_is_a_candidate(root: Path) -> None:
    target = write(root, "science/real.txt", "the real text")
    os.symlink("science/real.txt", root / "alias.txt")  # relative
    os.symlink(target, root / "abs-alias.txt")  # absolute, still inside
    listing = list_articles(root)
    assert listing.errors == ()
    st_ = os.stat(target)
    for rel in ("alias.txt", "abs-alias.txt"):
        sig = listing.files[rel]
        assert (sig.size, sig.mtime_ns, sig.inode) == (13, st_.st_mtime_ns, st_.st_ino)
        assert read_article(root, rel, 1000) == b"the real text"


def test_symlink_outside_is_rejected_and_not_read(root: Path, tmp_path: Path) -> None:
    secret = write(tmp_path, "secret.txt", "do not publish")
    os.symlink(secret, root / "leak.txt")
    os.symlink("../secret.txt", root / "leak2.txt")
    listing = list_articles(root)
    assert listing.files == {}
    reason = "symlink points outside the articles folder; not followed"
    assert errors_of(root) == {"leak.txt": reason, "leak2.txt": reason}
    with pytest.raises(ArticleError) as info:
        read_article(root, "leak.txt", 1000)
    assert info.value.reason == reason


def test_file_swapped_for_outside_symlink_after_listing_is_not_read(
    root: Path, tmp_path: Path
) -> None:
    secret = write(tmp_path, "secret.txt", "do not publish")
    path = write(root, "a.txt", "fine")
    assert "a.txt" in list_articles(root).files
    path.unlink()
    os.symlink(secret, path)
    with pytest.raises(ArticleError, match="outside the articles folder"):
        read_article(root, "a.txt", 1000)


def test_dangling_symlink(root: Path) -> None:
    os.symlink("missing.txt", root / "dangling.txt")
    listing = list_articles(root)
    assert listing.files == {}
    assert errors_of(root) == {"dangling.txt": "broken symlink"}


def test_symlink_loop(root: Path) -> None:
    os.symlink("b.txt", root / "a.txt")
    os.symlink("a.txt", root / "b.txt")
    os.symlink("self.txt", root / "self.txt")
    listing = list_articles(root)
    assert listing.files == {}
    assert errors_of(root) == {
        "a.txt": "symlink loop",
        "b.txt": "symlink loop",
        "self.txt": "symlink loop",
    }
    with pytest.raises(ArticleError):
        read_article(root, "a.txt", 1000)


def test_symlinked_folder_is_not_descended(root: Path, tmp_path: Path) -> None:
    write(root, "science/a.txt")
    os.symlink("science", root / "linked")
    os.symlink(".", root / "loop")  # would recurse forever if followed
    outside = tmp_path / "elsewhere"
    write(outside, "b.txt")
    os.symlink(outside, root / "out")
    listing = list_articles(root)
    assert set(listing.files) == {"science/a.txt"}
    assert errors_of(root) == {
        "linked": "symlinked folder not followed",
        "loop": "symlinked folder not followed",
        "out": "symlink points outside the articles folder; not followed",
    }


# --- not regular files ---------------------------------------------------------


def _in_thread(fn: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Call fn in a daemon thread; fail (instead of hanging the suite) if it blocks."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "call blocked"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_fifo_is_reported_and_never_blocks(root: Path) -> None:
    write(root, "a.txt")
    os.mkfifo(root / "pipe.txt")
    listing = _in_thread(lambda: list_articles(root))
    assert set(listing.files) == {"a.txt"}
    assert {e.path: e.reason for e in listing.errors} == {"pipe.txt": "not a regular file"}
    with pytest.raises(ArticleError) as info:
        _in_thread(lambda: read_article(root, "pipe.txt", 1000))
    assert info.value.reason == "not a regular file"


def test_symlink_to_fifo_inside_is_reported(root: Path) -> None:
    os.mkfifo(root / "pipe")
    os.symlink("pipe", root / "pipe-link.txt")
    assert errors_of(root) == {"pipe": "not a regular file", "pipe-link.txt": "not a regular file"}


# --- permissions ----------------------------------------------------------------


def _unprivileged_read(root: str, rel: str) -> tuple[str, str] | bytes:
    try:
        return read_article(Path(root), rel, 1000)
    except ArticleError as exc:
        return (exc.path, exc.reason)


def _unprivileged_listing(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    listing = list_articles(Path(root))
    return sorted(listing.files), [(e.path, e.reason) for e in listing.errors]


def test_unreadable_file_gives_permission_denied(world_dir: Path) -> None:
    path = write(world_dir, "locked.txt", "secret")
    path.chmod(0)
    write(world_dir, "open.txt", "fine")
    assert run_unprivileged(_unprivileged_read, str(world_dir), "locked.txt") == (
        "locked.txt",
        "permission denied",
    )
    assert run_unprivileged(_unprivileged_read, str(world_dir), "open.txt") == b"fine"


def test_unlistable_subfolder_is_an_error_and_others_continue(world_dir: Path) -> None:
    write(world_dir, "open/a.txt")
    write(world_dir, "top.txt")
    write(world_dir, "closed/b.txt")
    (world_dir / "closed").chmod(0)
    files, errors = run_unprivileged(_unprivileged_listing, str(world_dir))
    assert files == ["open/a.txt", "top.txt"]
    assert errors == [("closed", "permission denied listing folder")]


# --- read_article ---------------------------------------------------------------


def test_read_returns_exact_bytes(root: Path) -> None:
    data = "Ünïcödé\r\n\ufeffbytes".encode() + b"\xff\x00"
    write(root, "a.txt", data)
    assert read_article(root, "a.txt", DEFAULT_MAX_ARTICLE_BYTES) == data


def test_too_large_is_rejected_at_the_limit_plus_one(root: Path) -> None:
    write(root, "exact.txt", b"x" * 100)
    write(root, "big.txt", b"x" * 101)
    assert read_article(root, "exact.txt", 100) == b"x" * 100
    with pytest.raises(ArticleError) as info:
        read_article(root, "big.txt", 100)
    assert info.value.path == "big.txt"
    assert info.value.reason == (
        "file is 101 bytes, over the limit of 100 bytes (FEEDSVC_MAX_ARTICLE_BYTES)"
    )


def test_file_growing_while_read_is_cut_at_limit_plus_one(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fstat says 10 bytes (as when listed), but 5000 are there by the time we read.
    write(root, "growing.txt", b"y" * 5000)
    real_fstat, real_read = os.fstat, os.read
    sizes: list[int] = []
    read_sizes: list[int] = []

    def stale_fstat(fd: int) -> os.stat_result:
        st_ = real_fstat(fd)
        if not sizes:
            sizes.append(st_.st_size)
            fields = list(st_[:10])
            fields[stat.ST_SIZE] = 10
            return os.stat_result(fields)
        return st_

    def spy_read(fd: int, n: int) -> bytes:
        read_sizes.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "fstat", stale_fstat)
    monkeypatch.setattr(os, "read", spy_read)
    with pytest.raises(ArticleError) as info:
        read_article(root, "growing.txt", 100)
    assert info.value.reason.startswith("file is 5000 bytes, over the limit of 100 bytes")
    assert sum(read_sizes) <= 101  # never more than the limit plus one


def test_disappeared_file(root: Path) -> None:
    path = write(root, "gone.txt")
    assert "gone.txt" in list_articles(root).files
    path.unlink()
    with pytest.raises(ArticleError) as info:
        read_article(root, "gone.txt", 1000)
    assert (info.value.path, info.value.reason) == (
        "gone.txt",
        "file disappeared before it could be read",
    )


@pytest.mark.parametrize("bad", ["../outside.txt", "/etc/passwd", "a/../../x", "", "a//b", "a\0b"])
def test_paths_outside_the_folder_are_refused(root: Path, tmp_path: Path, bad: str) -> None:
    write(tmp_path, "outside.txt", "secret")
    with pytest.raises(ArticleError):
        read_article(root, bad, 1000)


def test_negative_limit_is_a_programming_error(root: Path) -> None:
    write(root, "a.txt")
    with pytest.raises(ValueError):
        read_article(root, "a.txt", -1)


# --- signatures and settling ------------------------------------------------------


def test_signature_stable_when_nothing_happens(root: Path) -> None:
    write(root, "a.txt", "one")
    first = list_articles(root).files["a.txt"]
    read_article(root, "a.txt", 1000)  # reading is not a change
    time.sleep(0.01)
    assert list_articles(root).files["a.txt"] == first


def test_signature_changes_when_content_written(root: Path) -> None:
    path = write(root, "a.txt", "one")
    first = list_articles(root).files["a.txt"]
    path.write_text("one, and more")
    second = list_articles(root).files["a.txt"]
    assert second != first
    assert second.size == 13


def test_signature_changes_on_atomic_replace_with_same_size_and_mtime(root: Path) -> None:
    path = write(root, "a.txt", "aaaa")
    first = list_articles(root).files["a.txt"]
    tmp = write(root, "a.txt.tmp", "bbbb")
    os.utime(tmp, ns=(first.mtime_ns, first.mtime_ns))
    os.replace(tmp, path)
    second = list_articles(root).files["a.txt"]
    assert (second.size, second.mtime_ns) == (first.size, first.mtime_ns)
    assert second != first  # the inode tells


def test_settled_threshold() -> None:
    sig = FileSignature("a.txt", 1, 1_000_000_000, 1)
    quiet = 2_000_000_000
    assert not settled(sig, 1_000_000_000, quiet)  # just written
    assert not settled(sig, 1_000_000_000 + quiet - 1, quiet)
    assert settled(sig, 1_000_000_000 + quiet, quiet)
    assert settled(sig, 1_000_000_000 + 10 * quiet, quiet)
    assert settled(sig, 0, 0)  # no quiet period configured
    # mtime slightly ahead of the clock: could be a write in progress
    assert not settled(sig, 1_000_000_000 - 1, quiet)
    # mtime far in the future: a clock-skewed copy, not a write in progress
    assert settled(sig, 1_000_000_000 - quiet, quiet)


def test_settled_on_a_freshly_written_file(root: Path) -> None:
    write(root, "new.txt")
    sig = list_articles(root).files["new.txt"]
    now = time.time_ns()
    assert not settled(sig, now, 10 * 10**9)
    assert settled(sig, now + 11 * 10**9, 10 * 10**9)


def test_module_exports() -> None:
    assert DEFAULT_MAX_ARTICLE_BYTES == 2 * 1024 * 1024
    assert set(source.__all__) >= {"FileSignature", "Listing", "list_articles", "read_article"}
