"""HTTP caching for rendered representations: validators, 304s, gzip.

Everything here reads a WSGI environ and answers from a
:class:`~feedsvc.publisher.Rendered`; nothing renders. werkzeug already knows
how to parse ETags, HTTP dates and Accept-Encoding and which validator wins
(RFC 9110: ``If-None-Match`` over ``If-Modified-Since``), so we use it; each
of those calls costs 2-4 µs here, far below Flask's own per-request work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from werkzeug.http import http_date, is_resource_modified, parse_accept_header

from .publisher import Rendered

Headers = list[tuple[str, str]]


#: Atom and RSS, which a browser shows as a page through their XSL stylesheet.
_BROWSER_VIEWABLE = ("application/atom+xml", "application/rss+xml")
#: Browsers apply ``<?xml-stylesheet?>`` only to XML served as generic XML;
#: given application/atom+xml, Chromium shows the source as plain text.
XML_FOR_BROWSERS = "application/xml; charset=utf-8"


def _is_browser_navigation(environ: dict[str, Any]) -> bool:
    """A browser opening the URL: it asks for HTML and names no feed type.

    Feed readers ask for application/atom+xml, application/rss+xml or ``*/*``
    and get the feed's own type; the bytes (and so the ETag) are the same.
    """
    accept = environ.get("HTTP_ACCEPT", "")
    return "text/html" in accept and "+xml" not in accept.replace("application/xhtml+xml", "")


def accepts_gzip(environ: dict[str, Any]) -> bool:
    """Whether the client takes gzip (``q=0`` means it refuses it)."""
    header = environ.get("HTTP_ACCEPT_ENCODING")
    return bool(header) and parse_accept_header(header)["gzip"] > 0


def negotiate(
    environ: dict[str, Any], rendered: Rendered, links: Iterable[tuple[str, str]] = ()
) -> tuple[int, Headers, bytes]:
    """Status, headers and body answering a GET or HEAD for ``rendered``.

    A 200 carries the cached bytes (gzip when accepted), a 304 no body. The
    plain and gzip representations are different bytes and so carry
    different strong ETags; ``Vary: Accept-Encoding`` tells caches so.
    Shared by the Flask routes and the WSGI fast path, so both answer alike.
    """
    use_gzip = accepts_gzip(environ)
    etag = rendered.gzip_etag if use_gzip else rendered.etag
    content_type, vary = rendered.content_type, "Accept-Encoding"
    if content_type.startswith(_BROWSER_VIEWABLE):
        vary = "Accept-Encoding, Accept"
        if _is_browser_navigation(environ):
            # Same bytes, other metadata: its own validator, as RFC 9110 8.8.1 allows.
            content_type, etag = XML_FOR_BROWSERS, etag + "-xml"
    headers: Headers = [
        ("ETag", f'"{etag}"'),
        ("Last-Modified", http_date(rendered.last_modified)),
        ("Cache-Control", f"public, max-age={rendered.max_age}"),
        ("Vary", vary),
    ]
    link_values = [f'<{url}>; rel="{rel}"' for rel, url in links]
    if link_values:
        headers.append(("Link", ", ".join(link_values)))
    conditional = "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ
    if conditional and not is_resource_modified(
        environ, etag=etag, last_modified=rendered.last_modified
    ):
        return 304, headers, b""
    body = rendered.gzip_body if use_gzip else rendered.body
    if use_gzip:
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Type", content_type))
    headers.append(("Content-Length", str(len(body))))
    return 200, headers, body
