"""A WSGI fast path for the requests that dominate a feed publisher's traffic.

Aggregators poll the same feed URLs again and again. Flask's request and
response machinery costs more than everything else such a request needs
(measured here: cached feed bytes through a Flask view reach only 0.63-0.73x
the requests/s of a Flask hello world), so a GET or HEAD of a subscription
or archive document with no query string is answered here, straight from the
publisher's cache, before Flask is entered. Anything else (query strings,
unknown feeds, other methods, pages) falls through to the Flask app, which
answers the same URLs with the same function, :func:`feedsvc.http.negotiate`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import SecurityError
from werkzeug.wsgi import get_current_url, get_host

from .collection import SITE_FEED, FeedRef
from .config import Settings
from .documents import archive_path, feed_path
from .http import negotiate
from .publisher import Publisher

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: The feed URLs of web.py's routes: ``[/topics/<slug>|/authors/<slug>][/archive/<k>]/feed.<fmt>``.
FEED_URL = re.compile(
    r"^(?:/(?P<kind>topics|authors)/(?P<slug>[^/]+))?"
    r"(?:/archive/(?P<archive>[0-9]{1,9}))?/feed\.(?P<fmt>atom|rss|json)$"
)
_KINDS = {"topics": "topic", "authors": "author"}
_REASONS = {200: "200 OK", 304: "304 Not Modified", 412: "412 Precondition Failed"}


def parse_feed_url(path: str) -> tuple[FeedRef, str, int | None] | None:
    """The feed, format and archive number a URL path names, or None."""
    match = FEED_URL.match(path)
    if match is None:
        return None
    kind = match["kind"]
    ref = FeedRef(_KINDS[kind], match["slug"]) if kind else SITE_FEED
    archive = int(match["archive"]) if match["archive"] is not None else None
    return ref, match["fmt"], archive


def host_is_trusted(environ: dict[str, Any], trusted_hosts: tuple[str, ...]) -> bool:
    """Whether the request's host (after ProxyFix) is one ``FEEDSVC_TRUSTED_HOSTS`` names.

    werkzeug's matching, as Flask's ``TRUSTED_HOSTS`` uses it: ports are not
    compared, a leading dot takes every subdomain. werkzeug compares a host
    only up to its first colon, which for an IPv6 literal is ``[``, so that
    ``[::1]`` would let in every IPv6 host: those are compared whole here.
    """
    if not trusted_hosts:
        return True
    try:
        host = get_host(environ, trusted_hosts)
    except SecurityError:
        return False
    if host.startswith("["):
        return host[: host.find("]") + 1] in trusted_hosts
    return bool(host)


def request_base_url(environ: dict[str, Any]) -> str | None:
    """The site's URL as this request names it, or None for a Host that names nothing.

    werkzeug raises ValueError for a Host it cannot make a URL of (a port
    above 65535, say): that is the client's error, never a 500. The host was
    checked against the trusted hosts before (:func:`host_is_trusted`).
    """
    try:
        return get_current_url(environ, root_only=True).rstrip("/")
    except ValueError:
        return None


def hub_links(
    settings: Settings, base_url: str, ref: FeedRef, fmt: str, archive: int | None
) -> list[tuple[str, str]]:
    """WebSub discovery for the HTTP ``Link`` header: every hub, then self."""
    if not settings.websub_hubs:
        return []
    path = feed_path(ref) if archive is None else archive_path(ref, archive)
    return [("hub", hub) for hub in settings.websub_hubs] + [("self", f"{base_url}{path}.{fmt}")]


class FeedFastPath:
    """WSGI middleware answering cached feed documents without entering Flask."""

    def __init__(self, app: WSGIApp, publisher: Publisher, settings: Settings,
                 on_request: Callable[[], None] | None = None) -> None:
        self.app = app
        self.publisher = publisher
        self.settings = settings
        self.on_request = on_request
        #: Called as ``observer(endpoint, status)`` for every request answered here.
        self.observers: list[Callable[[str, int], None]] = []

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if (method != "GET" and method != "HEAD") or environ.get("QUERY_STRING"):
            return self.app(environ, start_response)
        target = parse_feed_url(environ.get("PATH_INFO", ""))
        if target is None:
            return self.app(environ, start_response)
        ref, fmt, archive = target
        if not host_is_trusted(environ, self.settings.trusted_hosts):
            return self.app(environ, start_response)  # Flask answers its 400, before any render
        base_url = self.settings.base_url or request_base_url(environ)
        if base_url is None:  # a Host header no URL can be made of: Flask answers 400
            return self.app(environ, start_response)
        rendered = self.publisher.feed(ref, fmt, base_url, archive=archive)
        if rendered is None:  # unknown feed or archive: Flask says so
            return self.app(environ, start_response)
        if self.on_request is not None:
            self.on_request()
        status, headers, body = negotiate(
            environ, rendered, hub_links(self.settings, base_url, ref, fmt, archive)
        )
        start_response(_REASONS[status], headers)
        for observer in self.observers:
            observer("feed", status)
        return [] if method == "HEAD" else [body]
