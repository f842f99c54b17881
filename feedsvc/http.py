"""HTTP caching for rendered representations: validators, 304s, gzip.

Everything here reads the request and builds a response from a
:class:`~feedsvc.publisher.Rendered`; nothing renders. werkzeug already knows
how to parse ETags and HTTP dates and which validator wins (RFC 9110:
``If-None-Match`` over ``If-Modified-Since``), so we use it.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Request, Response
from werkzeug.http import http_date, is_resource_modified

from .publisher import Rendered


def accepts_gzip(request: Request) -> bool:
    """Whether the client takes gzip (``q=0`` means it refuses it)."""
    return request.accept_encodings["gzip"] > 0


def representation_response(
    rendered: Rendered, request: Request, links: Iterable[tuple[str, str]] = ()
) -> Response:
    """A 200 with the cached bytes (gzip when accepted), or a bodiless 304.

    The plain and gzip representations are different bytes and so carry
    different strong ETags; ``Vary: Accept-Encoding`` tells caches so.
    """
    use_gzip = accepts_gzip(request)
    etag = rendered.gzip_etag if use_gzip else rendered.etag
    headers = {
        "ETag": f'"{etag}"',
        "Last-Modified": http_date(rendered.last_modified),
        "Cache-Control": f"public, max-age={rendered.max_age}",
        "Vary": "Accept-Encoding",
    }
    link_values = [f'<{url}>; rel="{rel}"' for rel, url in links]
    if link_values:
        headers["Link"] = ", ".join(link_values)
    if not is_resource_modified(
        request.environ, etag=etag, last_modified=rendered.last_modified
    ):
        return Response(status=304, headers=headers)
    body = rendered.gzip_body if use_gzip else rendered.body
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    response = Response(body, status=200, headers=headers, content_type=rendered.content_type)
    return response
