"""Issue #15 part 4 through nginx's cache: a reader sending only If-Modified-Since
sees an article added with an old modification time, and a deletion."""

from __future__ import annotations

import os
import time

import pytest
from werkzeug.http import parse_date

from tests.conftest import write_article
from tests.test_nginx import MAX_AGE, NGINX_CLOCK, RELOAD, SETTLE, SLACK, Stack, stack

pytestmark = pytest.mark.slow
__all__ = ["stack"]  # the module-scoped fixture: gunicorn behind nginx, as deployed

OLD = 1_600_000_000  # 2020-09-13, as rsync -a or cp -p keep it


def _until(stack: Stack, path: str, since: str, wanted, what: str) -> str:  # noqa: ANN001
    """Poll with only If-Modified-Since until a 200 satisfies ``wanted``; its Last-Modified."""
    budget = MAX_AGE + NGINX_CLOCK + RELOAD + SETTLE + SLACK
    started, seen = time.monotonic(), []
    while True:
        reply = stack.get(path, {"If-Modified-Since": since})
        seen.append(reply.status)
        if reply.status == 200 and wanted(reply.body):
            stamp = reply.headers["Last-Modified"]
            assert parse_date(stamp) > parse_date(since), what
            return stamp
        assert reply.status in (200, 304), reply.status
        assert time.monotonic() - started < budget, f"{what}: not seen in {budget} s: {seen}"
        time.sleep(0.2)


def test_if_modified_since_readers_see_old_dated_additions_and_deletions(stack: Stack) -> None:
    path = "/authors/old-dates-writer/feed.atom"
    site = "/feed.atom?limit=1000"  # an allowed limit: every entry
    first = stack.get(site)
    assert first.status == 200
    since = first.headers["Last-Modified"]
    assert stack.get(site, {"If-Modified-Since": since}).status == 304
    title = "An Old File Copied In Late"
    added = write_article(stack.articles, "old-dated.txt", title, author="Old Dates Writer")
    os.utime(added, (OLD, OLD))
    since = _until(stack, site, since, lambda body: title.encode() in body, "addition")
    assert stack.get(path).status == 200
    added.unlink()
    _until(stack, site, since, lambda body: title.encode() not in body, "deletion")
