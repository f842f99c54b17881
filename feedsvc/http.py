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
    headers: Headers = [
        ("ETag", f'"{etag}"'),
        ("Last-Modified", http_date(rendered.last_modified)),
        ("Cache-Control", f"public, max-age={rendered.max_age}"),
        ("Vary", "Accept-Encoding"),
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
    headers.append(("Content-Type", rendered.content_type))
    headers.append(("Content-Length", str(len(body))))
    return 200, headers, body
