"""The torture folder: every kind of file that cannot be an article, side by side.

``feedsvc check`` (its real CLI, ``feedsvc.cli.main``) must name each with its
reason, and the service over the same folder must publish everything else and
nothing of the rest: no symlink may turn the articles folder into a way to
publish ``/etc/passwd``.

Permission bits do not bind root, so when the tests run as root the check and
the app run in a forked child that drops to user ``nobody``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import feedsvc.publisher
from feedsvc import cli
from feedsvc.config import load_settings
from feedsvc.text import slugify
from feedsvc.web import create_app
from tests.conftest import BASE_URL, write_article
from tests.feedcheck import CHECKS
from tests.unprivileged import run_unprivileged as _run_unprivileged

LIMIT = 2 * 1024 * 1024  # FEEDSVC_MAX_ARTICLE_BYTES' documented default
SECRET = "TOP-SECRET-OUTSIDE-THE-FOLDER"
JUNK_TITLE = "Editor Junk Must Never Be Published"

#: file -> the reason ``feedsvc check`` must give for it.
REJECTED = {
    "empty.txt": "empty file",
    "blank.txt": "file has only white space",
    "image.png": "binary file (PNG image signature)",
    "noise.bin": "binary file (not UTF-8, and N% of its bytes are control characters)",
    "utf16.txt": "binary file (contains NUL bytes; it looks like UTF-16, save it as UTF-8)",
    "headline.txt": "only a headline, no body",
    "huge.txt": f"file is {LIMIT + 1} bytes, over the limit of {LIMIT} bytes "
                "(FEEDSVC_MAX_ARTICLE_BYTES)",
    "passwd.txt": "symlink points outside the articles folder; not followed",
    "outside.txt": "symlink points outside the articles folder; not followed",
    "loop-a.txt": "symlink loop",
    "loop-b.txt": "symlink loop",
    "dangling.txt": "broken symlink",
    "locked.txt": "permission denied",
    "vanishing.txt": "file disappeared before it could be read",
    "fifo.txt": "not a regular file",
    "caf\ufffd.txt": "name is not valid UTF-8; rename it",
    "front-only.txt": "only front matter, no headline or body",
    "bad-date.txt": "front matter line 2: date 'the day after tomorrow' is not a date we can read",
}
#: file -> title, for what must be published.
PUBLISHED = {
    "good.txt": "Harbour Plan Passes Council Vote",
    "latin1.txt": "Café Owners Welcome Harbour Plan",
    "x.txt/inner.txt": "Folder Named Like An Article Is Descended",
}
JUNK = (".#draft.txt", "draft.txt~", ".draft.txt.swp", "draft.txt.tmp", ".hidden.txt",
        "#draft.txt#", "draft.txt.bak")


# --- running unprivileged ----------------------------------------------------------------


def run_unprivileged(fn: Callable[..., Any], *args: Any) -> Any:
    """As tests.unprivileged's, having loaded anyascii's tables first: it reads them
    one Unicode block at a time, and nobody cannot read site-packages under /root."""
    return _run_unprivileged(
        fn, *args, before_fork=lambda: slugify("".join(map(chr, range(0x20, 0x3000))))
    )


def build_torture_folder(root: Path) -> tuple[Path, Path]:
    """The articles folder and, beside it, a folder outside it holding a secret."""
    articles = root / "articles"
    outside = root / "outside"
    articles.mkdir()
    articles.chmod(0o777)  # the service's user may delete (vanishing.txt) and write here
    outside.mkdir()
    (outside / "secret.txt").write_text(
        f"Secret Headline\n\nSome One\n\n{SECRET} must never be published.\n")

    write_article(articles, "good.txt", PUBLISHED["good.txt"], author="Sara Wazowski",
                  topic="harbour plan", body="The council approved the harbour plan.")
    latin1 = ("Café Owners Welcome Harbour Plan\n\nJosé Müller\nharbour plan\n\n"
              "Café owners in Oslo said the plan was “good news”.\n")
    (articles / "latin1.txt").write_bytes(latin1.encode("cp1252"))
    write_article(articles, "x.txt/inner.txt", PUBLISHED["x.txt/inner.txt"])

    (articles / "empty.txt").write_bytes(b"")
    (articles / "blank.txt").write_text("  \n\t\n\r\n   \n")
    (articles / "image.png").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
        b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01"
        b"\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
    noise = random.Random(5).randbytes(4000).replace(b"\x00", b"\x01")
    (articles / "noise.bin").write_bytes(noise)  # binary without a single NUL byte
    (articles / "utf16.txt").write_bytes("Headline\n\nBody text.\n".encode("utf-16"))
    (articles / "headline.txt").write_text("Council Backs New Harbour Plan\n")
    with (articles / "huge.txt").open("wb") as handle:  # sparse: no 2 MiB written
        handle.truncate(LIMIT + 1)
    (articles / "passwd.txt").symlink_to("/etc/passwd")
    (articles / "outside.txt").symlink_to(outside / "secret.txt")
    (articles / "loop-a.txt").symlink_to("loop-b.txt")
    (articles / "loop-b.txt").symlink_to("loop-a.txt")
    (articles / "dangling.txt").symlink_to("no-such-file.txt")
    write_article(articles, "locked.txt", "Locked Story Cannot Be Read").chmod(0)
    write_article(articles, "vanishing.txt", "Vanishing Story Is Deleted Mid-Scan")
    os.mkfifo(articles / "fifo.txt")
    (articles / os.fsdecode(b"caf\xe9.txt")).write_text("Latin-1 Name\n\nA B\n\nBody.\n")
    (articles / "front-only.txt").write_text("---\nsummary: nothing else\n---\n\n")
    write_article(articles, "bad-date.txt", "Story With A Bad Date",
                  front="---\ndate: the day after tomorrow\n---\n")
    for name in JUNK:
        write_article(articles, name, JUNK_TITLE)
    return articles, outside


def _delete_after_listing(monkeypatch: pytest.MonkeyPatch, victim: Path) -> None:
    """Delete ``victim`` between the publisher's listing and its reading of the files.

    Wraps the real listing function, so the race is real: the file is listed,
    then gone when it is opened.
    """
    real = feedsvc.publisher.list_articles

    def listing_then_delete(root: Path):  # noqa: ANN202 - same as the real one
        listing = real(root)
        victim.unlink(missing_ok=True)
        return listing

    monkeypatch.setattr(feedsvc.publisher, "list_articles", listing_then_delete)


_LINE = re.compile(r"^(REJECTED|published|draft|scheduled)\s+(.+?)(?::\d+)?: (.*)$")


def parse_check_output(out: str) -> tuple[dict[str, tuple[str, str]], dict[str, list[str]]]:
    """``feedsvc check`` output to {path: (status, reason or title)} and {path: warnings}."""
    results: dict[str, tuple[str, str]] = {}
    warnings: dict[str, list[str]] = {}
    last = ""
    for line in out.splitlines():
        if line.startswith("  warning: "):
            warnings.setdefault(last, []).append(line.removeprefix("  warning: "))
            continue
        match = _LINE.match(line)
        if match:
            last = match[2]
            assert last not in results, f"{last} reported twice"
            results[last] = (match[1], match[3])
    return results, warnings


def _check_and_serve(articles: str, ledger: str) -> dict[str, Any]:
    """``feedsvc check``, then the app over the same folder (run unprivileged)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["check", articles])
    # The check's scan deleted vanishing.txt; put it back for the service to race again.
    write_article(Path(articles), "vanishing.txt", "Vanishing Story Is Deleted Mid-Scan")
    config = load_settings({"articles_dir": articles, "ledger_path": ledger,
                            "base_url": BASE_URL, "reload_interval": 0}, environ={})
    app = create_app(config, instance_path=Path(ledger).parent / "instance")
    client = app.test_client()
    bodies = {}
    collection = app.extensions["feedsvc"].collection
    urls = [f"{ref.prefix}/feed.{fmt}" for ref in collection.feed_refs()
            for fmt in ("atom", "rss", "json")]
    urls += ["/", "/topics/", "/authors/", "/feeds.opml"]
    urls += [f"/articles/{entry.slug}" for entry in collection.entries]
    for url in urls:
        response = client.get(url)
        bodies[url] = (response.status_code, response.data)
    return {"code": code, "out": out.getvalue(), "bodies": bodies,
            "healthz": client.get("/healthz").get_json()}


# --- the test ----------------------------------------------------------------------------


def warm_up(folder: Path) -> dict[str, Any]:
    """Check and serve a clean folder here, so that every lazy import is done."""
    write_article(folder / "articles", "good.txt", PUBLISHED["good.txt"])
    write_article(folder / "articles", "vanishing.txt", "Warm-up Story")
    return _check_and_serve(str(folder / "articles"), str(folder / "ledger.sqlite3"))


def test_torture_folder(world_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    articles, _ = build_torture_folder(world_dir)
    state = world_dir / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    warm = warm_up(world_dir / "warm")
    assert warm["code"] == 0, warm["out"]  # the control: a clean folder checks clean
    _delete_after_listing(monkeypatch, articles / "vanishing.txt")

    got = run_unprivileged(_check_and_serve, str(articles), str(state / "ledger.sqlite3"))

    results, warnings = parse_check_output(got["out"])
    reasons = {path: detail for path, (status, detail) in results.items()
               if status == "REJECTED"}
    reasons = {path: re.sub(r"\b\d+%", "N%", r) for path, r in reasons.items()}
    assert reasons == REJECTED
    assert {path: detail for path, (status, detail) in results.items()
            if status == "published"} == PUBLISHED
    assert warnings == {"latin1.txt": [
        "not valid UTF-8 (first bad byte at offset 3); decoded as Windows-1252"]}
    for name in JUNK:  # ignored silently: neither published nor rejected
        assert name not in results
    assert got["code"] == 1  # some file is rejected
    assert got["out"].splitlines()[-1] == (
        f"{len(PUBLISHED)} published, {len(REJECTED)} rejected in {articles}")

    # The service over the same folder publishes exactly the good files.
    bodies = got["bodies"]
    feed = CHECKS["json"](bodies["/feed.json"][1])
    assert sorted(item["title"] for item in feed["items"]) == sorted(PUBLISHED.values())
    for url, (status, body) in bodies.items():
        assert status == 200, url
        if url.endswith((".atom", ".rss", ".json")):
            CHECKS[url.rsplit(".", 1)[1]](body)
        text = body.decode("utf-8")
        assert SECRET not in text, url
        assert "root:x:0:0" not in text, url  # /etc/passwd never leaks
        assert JUNK_TITLE not in text, url
        assert "Locked Story" not in text and "Vanishing Story" not in text, url
    assert got["healthz"]["published"] == len(PUBLISHED)
    assert got["healthz"]["rejected"] == len(REJECTED)


def test_size_limit_is_the_setting(world_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """FEEDSVC_MAX_ARTICLE_BYTES moves the limit; a file at the limit is fine."""
    articles = world_dir / "articles"
    body = "The harbour plan was approved. " * 40
    fits = write_article(articles, "fits.txt", "Story That Fits", body=body)
    size = fits.stat().st_size
    (articles / "over.txt").write_bytes(fits.read_bytes() + b"!")
    monkeypatch.setenv("FEEDSVC_MAX_ARTICLE_BYTES", str(size))
    assert cli.main(["check", str(articles)]) == 1
    results, _ = parse_check_output(capsys.readouterr().out)
    assert results == {
        "fits.txt": ("published", "Story That Fits"),
        "over.txt": ("REJECTED", f"file is {size + 1} bytes, over the limit of {size} bytes "
                                 "(FEEDSVC_MAX_ARTICLE_BYTES)"),
    }


def test_clean_folder_checks_clean(world_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The control: without the torture files, check passes and says so."""
    articles = world_dir / "articles"
    write_article(articles, "good.txt", PUBLISHED["good.txt"])
    for name in JUNK:
        write_article(articles, name, JUNK_TITLE)
    assert cli.main(["check", str(articles)]) == 0
    out = capsys.readouterr().out
    assert JUNK_TITLE not in out
    assert out.splitlines()[-1] == f"1 published, 0 rejected in {articles}"
    assert json.dumps(parse_check_output(out)[0]) == json.dumps(
        {"good.txt": ["published", PUBLISHED["good.txt"]]})
