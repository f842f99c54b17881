"""HTTP for rendered documents: feed or preview, validators, 304s, gzip, max-age.

Everything here reads a WSGI environ and answers from a
:class:`~feedsvc.publisher.Rendered`; nothing renders. The core hands over
plain documents; the HTTP policy is all here: the strong ETags (a digest of
the bytes sent, so the same on every worker and host), the gzip form (made
on first demand, kept as long as the document, counted by the render cache
that holds it) and ``Cache-Control`` from the settings and the document's
kind. werkzeug already knows
how to parse ETags, HTTP dates and Accept-Encoding and which validator wins
(RFC 9110: ``If-None-Match`` over ``If-Modified-Since``), so we use it; each
of those calls costs 2-4 µs here, far below Flask's own per-request work.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import Accept, MIMEAccept
from werkzeug.http import http_date, parse_accept_header, parse_date, parse_etags, quote_etag

from .formats import feed_media_types
from .publisher import Rendered
from .rendercache import attached

if TYPE_CHECKING:
    from .config import Settings

Headers = list[tuple[str, str]]

#: HTML shows article text: no script may run, nothing may be sniffed, no
#: page may frame it. Sent on every page, preview and error.
SECURITY_HEADERS: Headers = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
     "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
]

#: ``Vary`` of a URL that has an HTML preview beside the feed, and of one that has not.
VARY_PREVIEW = "Accept, Accept-Encoding"
VARY_PLAIN = "Accept-Encoding"


def wants_preview(environ: dict[str, Any]) -> bool:
    """A browser opening the URL: ``Accept`` names text/html and no feed type.

    Feed readers name a feed type, ``*/*`` or ``application/xml``, or send no
    Accept at all, and get the feed. Only explicit media ranges count, never
    wildcards: ``*/*`` alone matches text/html too, and a reader sending it
    must get the feed. ``q=0`` means "not this" (RFC 9110 12.4.2).
    """
    header = environ.get("HTTP_ACCEPT")
    if not header:
        return False
    if len(header) > _MEMO_HEADER_MAX:
        return _names_html_only(header, feed_media_types())
    return _names_html_only_memo(header, feed_media_types())


def _names_html_only(header: str, feed_types: frozenset[str]) -> bool:
    named = {value.lower() for value, quality in parse_accept_header(header, MIMEAccept)
             if quality > 0}
    return "text/html" in named and named.isdisjoint(feed_types)


#: Parsing a reader's Accept with MIMEAccept costs 25-40 µs (timeit, this
#: machine), a large part of a fast-path answer; clients send few distinct
#: values, so decisions are kept per value (short values only, bounded).
_MEMO_HEADER_MAX = 512
_names_html_only_memo = functools.lru_cache(maxsize=1024)(_names_html_only)


#: Fastly and Cloudflare take at most 16 KB of keys: a long archive lists the
#: rest of its keys nowhere, which is safe because a document's own key (first)
#: is announced whenever the document changes.
MAX_KEY_HEADER = 16_000


def gzip_form(body: bytes) -> bytes:
    """The gzip bytes every response (and the static export's ``.gz`` file) carries for
    ``body``: level 6, no timestamp, so the same body always packs the same."""
    return gzip.compress(body, compresslevel=6, mtime=0)


class Forms:
    """What HTTP makes of one document, once: its ETag, its gzip form and that form's ETag.

    The gzip form is made on first demand and then kept as long as the
    document (made eagerly it was two thirds of the time to bring every
    affected feed up to date after an edit), with a zero mtime so that every
    worker and every instance produces the same bytes and so the same ETag.
    It holds no reference to its document, which is the weak key it is kept
    under (:func:`forms_of`).
    """

    __slots__ = ("etag", "_gzip", "_lock", "_fixed")

    def __init__(self, body: bytes) -> None:
        self.etag = hashlib.sha256(body).hexdigest()[:32]
        self._gzip: tuple[bytes, str] | None = None
        self._lock = threading.Lock()
        self._fixed: tuple[CachePolicy, str, str, Headers] | None = None

    def fixed(self, rendered: Rendered, policy: CachePolicy) -> tuple[str, str, Headers]:
        """``Last-Modified``, ``Cache-Control`` and the key headers of ``rendered`` under
        ``policy``: the same on every request, so made once (formatting the date and
        joining 50 surrogate keys was a sixth of a fast-path answer)."""
        made = self._fixed
        if made is None or made[0] is not policy:
            max_age = policy.max_age(rendered)
            control = f"public, max-age={max_age}" + (
                f", s-maxage={policy.shared_max_age}" if policy.shared_max_age is not None
                and policy.shared_max_age > max_age else "")
            made = self._fixed = (policy, http_date(rendered.last_modified), control,
                                  policy.headers(rendered.keys))
        return made[1], made[2], made[3]

    def gzip(self, rendered: Rendered) -> tuple[bytes, str]:
        """The gzip bytes of ``rendered`` (this object's document) and their ETag."""
        packed = self._gzip
        if packed is None:
            made = False
            with self._lock:
                packed = self._gzip
                if packed is None:
                    data = gzip_form(rendered.body)
                    packed = self._gzip = (data, hashlib.sha256(data).hexdigest()[:32] + "-gz")
                    made = True
            if made:
                attached(rendered, len(packed[0]))  # the render cache counts it
        return packed

    @property
    def gzip_made(self) -> bytes | None:
        """The gzip bytes if made already, else None (nothing is made)."""
        packed = self._gzip
        return None if packed is None else packed[0]


_FORMS: weakref.WeakKeyDictionary[Rendered, Forms] = weakref.WeakKeyDictionary()


def forms_of(rendered: Rendered) -> Forms:
    """The :class:`Forms` of a document, made on its first request and kept while it lives.

    Two threads may make them at once; both digests are the same and one is
    kept. A lookup costs well under a microsecond (a weak reference and a
    dict probe) against the ~140 µs of a fast-path answer.
    """
    found = _FORMS.get(rendered)
    if found is None:
        found = _FORMS.setdefault(rendered, Forms(rendered.body))
    return found


def prepare(documents: Iterable[Rendered]) -> int:
    """Make the ETags and gzip forms of ``documents`` now (a master before it forks, so
    that its workers share them); returns how many."""
    count = 0
    for rendered in documents:
        forms_of(rendered).gzip(rendered)
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How long caches may keep a document (``max-age`` by its kind), and what shared
    caches are told besides: keys, and their own lifetime."""

    surrogate_keys: bool = False
    cache_tags: bool = False
    shared_max_age: int | None = None
    #: max-age of what changes (feeds, pages) and of a complete archive page.
    cache_max_age: int = 300
    archive_max_age: int = 86400

    @classmethod
    def of(cls, settings: Settings) -> CachePolicy:
        return cls(settings.surrogate_keys, settings.cache_tags, settings.shared_max_age,
                   settings.cache_max_age, settings.archive_max_age)

    def max_age(self, rendered: Rendered) -> int:
        """Seconds any cache may keep ``rendered``: a complete archive page stays."""
        return self.archive_max_age if rendered.kind == "archive" else self.cache_max_age

    def headers(self, keys: tuple[str, ...]) -> Headers:
        """``Surrogate-Key`` (space-separated) and ``Cache-Tag`` (comma-separated)."""
        if not keys or not (self.surrogate_keys or self.cache_tags):
            return []
        kept: list[str] = []
        length = 0
        for key in keys:
            length += len(key) + 1
            if length > MAX_KEY_HEADER:
                break
            kept.append(key)
        out: Headers = []
        if self.surrogate_keys:
            out.append(("Surrogate-Key", " ".join(kept)))
        if self.cache_tags:
            out.append(("Cache-Tag", ",".join(kept)))
        return out


NO_POLICY = CachePolicy()


def accepts_gzip(environ: dict[str, Any]) -> bool:
    """Whether the client takes gzip (``q=0`` means it refuses it)."""
    header = environ.get("HTTP_ACCEPT_ENCODING")
    return bool(header) and parse_accept_header(header, Accept)["gzip"] > 0


def _single_date(value: str | None) -> datetime | None:
    """An HTTP-date header's value, or None when RFC 9110 says to ignore it.

    A date has one comma (``Sun, 06 Nov 1994 ...``) or none (asctime); more
    means a list, and "a recipient MUST ignore If-Modified-Since [when] the
    field value has more than one member" (13.1.3). werkzeug's parse_date
    would take the first of them.
    """
    if value is None or value.count(",") > 1:
        return None
    date = parse_date(value)
    return None if date is None else date.astimezone(UTC)


def precondition(environ: dict[str, Any], etag: str, last_modified: datetime) -> int | None:
    """412, 304 or None (send the representation), evaluated as RFC 9110 13.2.2 orders it.

    Written out because werkzeug's ``is_resource_modified`` answers 304 for a
    failed If-Match and reads the first date of an If-Modified-Since list.
    Only GET and HEAD come here, so a false If-None-Match is always a 304.
    """
    modified = last_modified.replace(microsecond=0)
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if not parse_etags(if_match).contains(etag):  # strong comparison; "*" matches
            return 412
    else:
        since = _single_date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
        if since is not None and modified > since:
            return 412
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        return 304 if parse_etags(if_none_match).contains_weak(etag) else None
    since = _single_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
    if since is not None and modified <= since:
        return 304
    return None


def negotiate(
    environ: dict[str, Any], rendered: Rendered, links: Iterable[tuple[str, str]] = (),
    vary: str = VARY_PLAIN, policy: CachePolicy = NO_POLICY,
) -> tuple[int, Headers, bytes]:
    """Status, headers and body answering a GET or HEAD for ``rendered``.

    A 200 carries the cached bytes (gzip when accepted), a 304 no body. The
    plain and gzip representations are different bytes and so carry
    different strong ETags; ``Vary`` tells caches so (``Accept`` too where
    the URL also has a preview: the caller chose ``rendered`` by it). HTML
    gets :data:`SECURITY_HEADERS`; ``policy`` adds the surrogate keys (on 304s
    too, so a cache refreshing an entry keeps its keys). Shared by the Flask routes and the WSGI
    fast path, so both answer alike.
    """
    use_gzip = accepts_gzip(environ)
    forms = forms_of(rendered)
    if use_gzip:
        gzip_body, etag = forms.gzip(rendered)
    else:
        etag = forms.etag
    last_modified, control, key_headers = forms.fixed(rendered, policy)
    headers: Headers = [
        ("ETag", quote_etag(etag)),
        ("Last-Modified", last_modified),
        ("Cache-Control", control),
        ("Vary", vary),
        *key_headers,
    ]
    if rendered.content_type.startswith("text/html"):
        headers += SECURITY_HEADERS
    link_values = [f'<{url}>; rel="{rel}"' for rel, url in links]
    if link_values:
        headers.append(("Link", ", ".join(link_values)))
    conditional = "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ or (
        "HTTP_IF_MATCH" in environ or "HTTP_IF_UNMODIFIED_SINCE" in environ)
    if conditional:
        status = precondition(environ, etag, rendered.last_modified)
        if status == 304:
            return 304, headers, b""
        if status == 412:
            failed = b"412 Precondition Failed\n"
            return 412, [("Content-Type", "text/plain; charset=utf-8"),
                         ("Content-Length", str(len(failed))), *SECURITY_HEADERS], failed
    body = gzip_body if use_gzip else rendered.body
    if use_gzip:
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Type", rendered.content_type))
    headers.append(("Content-Length", str(len(body))))
    return 200, headers, body
