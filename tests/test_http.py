"""The web side's HTTP policy (feedsvc.http) over the core's plain documents: ETags,
the gzip form and its accounting in the render cache, max-age by document kind."""

from __future__ import annotations

import gc
import gzip
import hashlib
from datetime import UTC, datetime

from feedsvc.collection import SITE_FEED
from feedsvc.http import CachePolicy, forms_of, negotiate
from feedsvc.publisher import Rendered
from feedsvc.rendercache import DOCUMENT_OVERHEAD, RenderCache, RenderKey

MOMENT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
BODY = b"<feed>" + b"an entry " * 400 + b"</feed>"


def _document(body: bytes = BODY, kind: str = "feed") -> Rendered:
    return Rendered(body, "application/atom+xml", MOMENT, ("site",), kind)  # type: ignore[arg-type]


def _get(rendered: Rendered, policy: CachePolicy, **headers: str) -> tuple[int, dict, bytes]:
    environ = {"REQUEST_METHOD": "GET", **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
    status, listed, body = negotiate(environ, rendered, policy=policy)
    return status, dict(listed), body


def test_etags_are_digests_of_the_bytes_sent_so_equal_across_processes() -> None:
    one, other = _document(), _document()  # as two workers (or hosts) render the same bytes
    assert forms_of(one) is forms_of(one) and forms_of(one) is not forms_of(other)
    assert forms_of(one).etag == forms_of(other).etag == hashlib.sha256(BODY).hexdigest()[:32]
    packed, etag = forms_of(one).gzip(one)
    assert forms_of(other).gzip(other) == (packed, etag)  # mtime 0: the same bytes anywhere
    assert gzip.decompress(packed) == BODY and etag.endswith("-gz") and etag[:-3] != forms_of(
        one).etag
    assert forms_of(_document(BODY + b" ")).etag != forms_of(one).etag


def test_negotiate_sends_gzip_with_its_own_etag_and_answers_304s() -> None:
    rendered, policy = _document(), CachePolicy()
    status, headers, body = _get(rendered, policy, accept_encoding="gzip")
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert gzip.decompress(body) == BODY
    assert headers["ETag"] == f'"{forms_of(rendered).gzip(rendered)[1]}"'
    status, plain, body = _get(rendered, policy)
    assert status == 200 and body == BODY and "Content-Encoding" not in plain
    assert plain["ETag"] == f'"{forms_of(rendered).etag}"' != headers["ETag"]
    assert _get(rendered, policy, if_none_match=plain["ETag"])[0] == 304
    assert _get(rendered, policy, if_none_match=headers["ETag"], accept_encoding="gzip")[0] == 304


def test_max_age_comes_from_the_settings_and_the_document_kind() -> None:
    policy = CachePolicy(cache_max_age=120, archive_max_age=7200, shared_max_age=3600)
    expected = {"feed": "public, max-age=120, s-maxage=3600",
                "page": "public, max-age=120, s-maxage=3600",
                "archive": "public, max-age=7200"}  # a shared cache is never told less
    for kind, control in expected.items():
        assert _get(_document(kind=kind), policy)[1]["Cache-Control"] == control, kind


def test_the_forms_go_with_their_document() -> None:
    rendered = _document(b"short-lived " * 100)
    forms_of(rendered).gzip(rendered)
    from feedsvc import http

    before = len(http._FORMS)
    del rendered
    gc.collect()
    assert len(http._FORMS) == before - 1  # nothing keeps an evicted document alive


def test_the_render_cache_counts_a_gzip_form_made_later_and_evicts_for_it() -> None:
    cache = RenderCache(max_bytes=3 * (len(BODY) + 1 + DOCUMENT_OVERHEAD))  # 3 fit
    documents = []
    for n in range(3):
        rendered = _document(BODY + b"%d" % n)
        cache.put(RenderKey.feed(SITE_FEED, "atom", f"https://h{n}.example"), "v1", rendered)
        documents.append(rendered)
    assert cache.bytes == sum(len(d.body) for d in documents) + 3 * DOCUMENT_OVERHEAD
    assert len(cache) == 3
    first = documents[0]
    packed, _ = forms_of(first).gzip(first)
    # Counted as made; over the bound, the least recently used document goes: the
    # first (whose form grew) is the oldest.
    assert len(cache) == 2
    assert cache.bytes == sum(len(d.body) for d in documents[1:]) + 2 * DOCUMENT_OVERHEAD
    # A form made for a document no cache holds any more is counted nowhere.
    forms_of(first).gzip(first)
    second = documents[1]
    made = len(forms_of(second).gzip(second)[0])
    assert len(cache) == 2 and made < len(second.body) and len(packed) < len(first.body)
    assert cache.bytes == (sum(len(d.body) for d in documents[1:]) + 2 * DOCUMENT_OVERHEAD
                           + made) <= cache.max_bytes
