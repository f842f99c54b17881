"""The web layer: the Flask app factory and its routes.

Thin on purpose: each route maps a URL to the publisher (the pure core) and
turns its :class:`Rendered` result into a response through
:mod:`feedsvc.http`. Nothing here parses articles or renders feeds.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, request
from markupsafe import Markup
from werkzeug.exceptions import BadRequest, Forbidden, Gone, HTTPException, NotFound
from werkzeug.middleware.proxy_fix import ProxyFix

from . import sitemaps, urls
from .audience import feed_key
from .audiencestore import AudienceService, AudienceStore, audience_database
from .collection import SITE_FEED, FeedRef
from .config import Settings, load_settings
from .documents import archive_count
from .fastpath import CONVERTERS, FeedFastPath, answer_feed, request_base_url
from .formats import formats
from .http import SECURITY_HEADERS, negotiate, wants_preview
from .preview import template_globals
from .publisher import Publisher, Rendered
from .websub import HubNotifier

log = logging.getLogger("feedsvc")

bp = Blueprint("feeds", __name__)

#: Pages, previews and errors: no script may run, nothing may be sniffed (feedsvc.http).
PAGE_SECURITY_HEADERS = dict(SECURITY_HEADERS)


def create_app(config: Mapping[str, Any] | Settings | None = None,
               instance_path: str | os.PathLike[str] | None = None) -> Flask:
    """Build the app: settings, then the core, then the routes over it.

    ``config`` takes setting names in lower case (``{"articles_dir": ...}``)
    and wins over the environment and the TOML file, which is how tests give
    each app its own folder and ledger.
    """
    settings = config if isinstance(config, Settings) else load_settings(config)
    app = Flask("feedsvc", instance_path=str(instance_path) if instance_path else None,
                instance_relative_config=True)
    app.config["FEEDSVC"] = settings
    ledger_path = settings.ledger_path or Path(app.instance_path) / "ledger.sqlite3"
    publisher = Publisher(settings, ledger_path)
    report = publisher.refresh()
    log.info("loaded %d articles (%d rejected) from %s in %.3f s", report.published,
             report.rejected, settings.articles_dir, report.seconds)
    if settings.base_url is None:
        log.warning("FEEDSVC_BASE_URL is not set: links and new ids are made from each "
                    "request's host; set it for links that do not depend on the client")
    app.extensions["feedsvc"] = publisher
    if settings.websub_hubs:
        notifier = HubNotifier(settings.websub_hubs)
        publisher.listeners.append(_ping_hubs(notifier, settings))
        app.extensions["feedsvc.websub"] = notifier
    reloader = Reloader(publisher, settings.reload_interval)
    app.extensions["feedsvc.reloader"] = reloader
    fast = FeedFastPath(app.wsgi_app, publisher, settings, on_request=reloader.ensure_running)
    app.extensions["feedsvc.fastpath"] = fast
    app.wsgi_app = fast  # type: ignore[method-assign]
    if settings.count_subscribers:
        audience = AudienceService(
            AudienceStore(audience_database(settings, ledger_path), settings.audience_window),
            settings.audience_flush_interval)
        app.extensions["feedsvc.audience"] = audience
        fast.feed_observers.append(_count_subscriber(audience))
        audience.ensure_running()
    app.extensions["feedsvc.robots_extra"] = (
        settings.robots_extra.read_text(encoding="utf-8", errors="replace")
        if settings.robots_extra else "")
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n,
                                x_prefix=n)  # type: ignore[method-assign]
    app.url_map.converters.update(CONVERTERS)
    app.jinja_env.globals.update(template_globals())
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _plain_error)
    app.register_error_handler(Exception, _internal_error)
    app.before_request(_ensure_reloader)
    # Start rescanning now, not at the first request: an idle service must
    # still notice changes (and ping WebSub hubs). The app is created in each
    # gunicorn worker (no --preload), and the request hook restarts the
    # thread in a process forked from one that had it.
    reloader.ensure_running()
    atexit.register(_shutdown_at_exit, weakref.ref(app))
    # extensions: optional parts register themselves here, one line each.
    from .observability import init_app as init_observability
    init_observability(app)
    return app


def _count_subscriber(audience: AudienceService):  # noqa: ANN202
    """A feed observer: one in-memory count per feed fetch (never a browser's preview)."""

    def observe(ref: FeedRef, environ: dict[str, Any]) -> None:
        if wants_preview(environ):
            return
        audience.ensure_running()
        audience.counter.observe(feed_key(ref), environ.get("HTTP_USER_AGENT", ""),
                                 environ.get("REMOTE_ADDR", ""))

    return observe


def _ping_hubs(notifier: HubNotifier, settings: Settings):  # noqa: ANN202
    """A publisher listener that pings hubs for every feed a change touched."""

    def listener(changed: list[FeedRef]) -> None:
        notifier.notify(
            f"{settings.base_url}{urls.feed(ref, fmt.name)}" for ref in changed for fmt in formats()
        )

    return listener


class Reloader:
    """Rescans the folder every ``interval`` seconds in a daemon thread.

    Started on the first request of each process, not at import, so it runs
    in every gunicorn worker even when the app was created before the fork.
    """

    def __init__(self, publisher: Publisher, interval: float) -> None:
        self.publisher = publisher
        self.interval = interval
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def ensure_running(self) -> None:
        if self.interval <= 0 or self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._run, name="feedsvc-reload", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                report = self.publisher.refresh()
            except Exception:  # never let the reloader die: log and try again
                log.exception("reload failed")
                continue
            if report.changed:
                log.info("reloaded: %d published, %d rejected, %d files read in %.3f s",
                         report.published, report.rejected, report.read, report.seconds)
            try:  # so that the ledger's main file alone stays a usable copy
                self.publisher.ledger.checkpoint_if_due()
            except Exception:
                log.exception("ledger checkpoint failed")


def shutdown(app: Flask) -> None:
    """Stop rescanning and close the ledger, checkpointing its WAL into the main file.

    The clean-exit path: gunicorn's ``worker_exit`` hook calls it, and so
    does interpreter exit for any app still open.
    """
    reloader = app.extensions.get("feedsvc.reloader")
    if reloader is not None:
        reloader.stop()
    audience = app.extensions.get("feedsvc.audience")
    if audience is not None:
        audience.stop()  # the last flush: a clean exit loses no counts
    publisher = app.extensions.get("feedsvc")
    if publisher is not None:
        try:
            publisher.close()
        except Exception:  # exiting anyway: say so, do not mask the exit
            log.exception("closing the ledger failed")


def _shutdown_at_exit(ref: weakref.ref[Flask]) -> None:
    app = ref()
    if app is not None:
        shutdown(app)


def _ensure_reloader() -> None:
    current_app.extensions["feedsvc.reloader"].ensure_running()


def _publisher() -> Publisher:
    return current_app.extensions["feedsvc"]



def _base_url() -> str:
    settings: Settings = current_app.config["FEEDSVC"]
    base = settings.base_url or request_base_url(request.environ)
    if base is None:
        raise BadRequest(description="the Host header does not name a usable address")
    return base


def _plain_error(exc: HTTPException) -> Response:
    """Every HTTP error, raised anywhere: short plain text with the safety headers.

    No HTML template, no traceback, no paths. Views raise werkzeug's
    ``NotFound`` / ``BadRequest`` with a description rather than building
    responses, so every error gets the same headers from here.
    """
    response = Response(f"{exc.code} {exc.name}: {exc.description}\n", status=exc.code,
                        content_type="text/plain; charset=utf-8")
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    response.headers.extend(SECURITY_HEADERS)
    return response


def _internal_error(exc: Exception) -> Response:
    log.exception("internal error on %s", request.path)
    response = Response("500 Internal Server Error\n", status=500,
                        content_type="text/plain; charset=utf-8")
    response.headers.extend(SECURITY_HEADERS)
    return response


# -- feeds ----------------------------------------------------------------------


def _limit() -> int | None:
    raw = request.args.get("limit")
    if raw is None:
        return None
    maximum = current_app.config["FEEDSVC"].max_limit
    # Length first: int() of thousands of digits raises (and costs) before a range check.
    if len(raw) > 12 or not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise BadRequest(description=f"limit must be a whole number from 1 to {maximum}")
    return min(int(raw), maximum)


def _feed_response(ref: FeedRef, fmt: str, archive: int | None = None) -> Response:
    """A feed URL through Flask (a query string, or not cached): as the fast path answers."""
    limit = _limit() if archive is None else None
    answer = answer_feed(request.environ, _publisher(), current_app.config["FEEDSVC"],
                         _base_url(), ref, fmt, archive, limit)
    if answer is None:
        raise NotFound(description="no such archive" if archive is not None
                       else f"no such {ref.kind}")
    status, headers, body = answer
    for observer in current_app.extensions["feedsvc.fastpath"].feed_observers:
        observer(ref, request.environ)
    return Response(body, status=status, headers=headers)


def _respond(rendered: Rendered) -> Response:
    status, headers, body = negotiate(request.environ, rendered)
    return Response(body, status=status, headers=headers)


def _feed_view(rule: urls.FeedRule):  # noqa: ANN202
    """The view of one feed rule of feedsvc.urls (site/topic/author, feed/archive)."""

    def view(fmt: str, slug: str = "", number: int | None = None) -> Response:
        ref = SITE_FEED if rule.kind == "site" else FeedRef(rule.kind, slug)
        return _feed_response(ref, fmt, number)

    view.__name__ = rule.endpoint
    return view


for _rule in urls.FEED_RULES:
    bp.add_url_rule(_rule.pattern, _rule.endpoint, _feed_view(_rule), methods=["GET"])


@bp.get(urls.OPML)
def opml() -> Response:
    return _respond(_publisher().opml(_base_url()))


# -- pages ------------------------------------------------------------------------


def _page(key: tuple, template: str, feed_ref: FeedRef = SITE_FEED,
          **context: Any) -> Response:
    publisher = _publisher()
    collection = publisher.collection
    base = _base_url()

    def build() -> tuple[bytes, str, Any]:
        html = render_template(template, site=publisher.site, collection=collection,
                               base_url=base, feed_ref=feed_ref, **context)
        from .documents import EPOCH
        updated = publisher.last_modified(None, collection.updated or EPOCH)
        return html.encode("utf-8"), "text/html; charset=utf-8", updated

    rendered: Rendered = publisher.cached(("page", *key, base), collection.version, build,
                                          current_app.config["FEEDSVC"].cache_max_age)
    return _respond(rendered)  # HTML: negotiate adds the security headers


@bp.get(urls.PAGE_RULES["home"])
def home() -> Response:
    collection = _publisher().collection
    return _page(("home",), "home.html", entries=collection.entries[:50],
                 archives=archive_count(len(collection.entries),
                                        current_app.config["FEEDSVC"].feed_size))


@bp.get(urls.PAGE_RULES["topics"])
def topics() -> Response:
    return _page(("topics",), "topics.html")


@bp.get(urls.PAGE_RULES["topic"])
def topic(slug: str) -> Response:
    collection = _publisher().collection
    found = collection.topic(slug)
    if found is None:
        raise NotFound(description="no such topic")
    ref = FeedRef("topic", slug)
    return _page(("topic", slug), "topic.html", ref, topic=found,
                 entries=collection.feed_entries(ref))


@bp.get(urls.PAGE_RULES["authors"])
def authors() -> Response:
    return _page(("authors",), "authors.html")


@bp.get(urls.PAGE_RULES["author"])
def author(slug: str) -> Response:
    collection = _publisher().collection
    info = collection.author(slug)
    if info is None:
        raise NotFound(description="no such author")
    ref = FeedRef("author", slug)
    return _page(("author", slug), "author.html", ref, info=info,
                 entries=collection.feed_entries(ref))


@bp.get(urls.PAGE_RULES["article"])
def article(slug: str) -> Response:
    entry = _publisher().collection.by_slug.get(slug)
    if entry is None:
        if _publisher().gone(slug):  # the ledger knows it: deleted, not mistyped
            raise Gone(description="this article was deleted")
        raise NotFound(description="no such article")
    return _page(("article", slug), "article.html", entry=entry)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness, with counts an operator can read at a glance."""
    publisher = _publisher()
    body = {
        "status": "ok",
        "published": len(publisher.collection.entries),
        "rejected": len(publisher.rejections),
        "articles_dir": "missing" if publisher.folder_missing else "ok",
        "ledger": "error" if publisher.last_error else "ok",
        "worker": os.getpid(),
    }
    if publisher.last_error:
        body["error"] = publisher.last_error
    response = current_app.json.response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- sitemaps and robots.txt ---------------------------------------------------------

#: As static hosts send .xml (nginx mime.types), so the live and exported sitemaps agree.
XML_TYPE = "text/xml; charset=utf-8"


def _document(key: tuple, version: str, make: Any, content_type: str) -> Response:
    """A whole-site document, rendered once per collection version and base URL and
    served like every page: ETag, 304, gzip, Cache-Control (feedsvc.http.negotiate)."""
    publisher = _publisher()
    collection = publisher.collection
    base = _base_url()

    def build() -> tuple[bytes, str, Any]:
        from .documents import EPOCH
        updated = publisher.last_modified(None, collection.updated or EPOCH)
        return make(collection, base), content_type, updated

    rendered = publisher.cached((*key, base), version, build,
                                current_app.config["FEEDSVC"].cache_max_age)
    return _respond(rendered)


def _article_plans(collection: Any, base: str) -> list[tuple[int, int]]:
    """How the articles split into sitemaps, worked out once per collection version."""
    memo: dict[tuple[str, str], list[tuple[int, int]]] = current_app.extensions.setdefault(
        "feedsvc.sitemap_plans", {})
    key = (collection.version, base)
    plans = memo.get(key)
    if plans is None:
        plans = sitemaps.plan_article_sitemaps(sitemaps.oldest_first(collection), base)
        memo.clear()  # only the newest version is asked for
        memo[key] = plans
    return plans


@bp.get(urls.PAGE_RULES["robots"])
def robots() -> Response:
    extra = current_app.extensions["feedsvc.robots_extra"]
    return _document(("robots",), "robots", lambda _c, base: sitemaps.render_robots(base, extra),
                     "text/plain; charset=utf-8")


@bp.get(urls.PAGE_RULES["sitemap_index"])
def sitemap_index() -> Response:
    def make(collection: Any, base: str) -> bytes:
        plans = _article_plans(collection, base)
        return sitemaps.render_index(sitemaps.index_items(collection, base, plans))

    return _document(("sitemap-index",), _publisher().version, make, XML_TYPE)


@bp.get(urls.PAGE_RULES["pages_sitemap"])
def pages_sitemap() -> Response:
    return _document(("sitemap-pages",), _publisher().version, sitemaps.render_pages, XML_TYPE)


@bp.get(urls.PAGE_RULES["articles_sitemap"])
def articles_sitemap(number: int) -> Response:
    collection = _publisher().collection
    plans = _article_plans(collection, _base_url())
    if number > len(plans):
        raise NotFound(description="no such sitemap")
    start, stop = plans[number - 1]

    def make(collection: Any, base: str) -> bytes:
        return sitemaps.render_articles(sitemaps.oldest_first(collection)[start:stop], base)

    return _document(("sitemap-articles", str(number)), collection.version, make, XML_TYPE)


@bp.get(urls.PAGE_RULES["news_sitemap"])
def news_sitemap() -> Response:
    from datetime import UTC, datetime

    publisher = _publisher()
    entries = sitemaps.news_entries(publisher.collection, datetime.now(UTC))
    # The articles of the last two days change with the clock too, not only with the
    # collection: the version says which articles are in it.
    version = publisher.version + "|" + ",".join(e.slug for e in entries)
    return _document(("sitemap-news",), version,
                     lambda _c, base: sitemaps.render_news(entries, publisher.site, base),
                     XML_TYPE)


# -- /stats: who reads it (operators only) ------------------------------------------

_LOCAL_NETWORKS = ("127.0.0.0/8", "::1/128")


def client_allowed(address: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``address`` is localhost or in one of the ``allowed`` CIDRs.

    ``address`` is REMOTE_ADDR: the proxy's forwarded client only when
    FEEDSVC_TRUSTED_PROXIES trusts it (ProxyFix), so a client cannot claim
    to be local by sending X-Forwarded-For.
    """
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(net) for net in (*_LOCAL_NETWORKS, *allowed))


def stats_rows(audience: AudienceService) -> tuple[list[tuple[str, Any]], list[tuple[str, int]]]:
    """Feeds by subscribers (most first), and aggregators by subscribers over all feeds."""
    counts = audience.current()
    feeds = sorted(counts.items(), key=lambda item: (-item[1].total, item[0]))
    totals: dict[str, int] = {}
    for c in counts.values():
        for name, number in c.aggregators.items():
            totals[name] = totals.get(name, 0) + number
    return feeds, sorted(totals.items(), key=lambda item: (-item[1], item[0]))


@bp.get(urls.PAGE_RULES["stats"])
def stats() -> Response:
    settings: Settings = current_app.config["FEEDSVC"]
    if not client_allowed(request.remote_addr or "", settings.stats_allow):
        raise Forbidden(description="/stats is for operators: localhost, or the networks "
                        "in FEEDSVC_STATS_ALLOW")
    audience: AudienceService | None = current_app.extensions.get("feedsvc.audience")
    if audience is None:
        raise NotFound(description="subscriber counting is off (FEEDSVC_COUNT_SUBSCRIBERS)")
    from .chart import subscribers_chart

    publisher = _publisher()
    feeds, aggregators = stats_rows(audience)
    history = audience.history()
    html = render_template(
        "stats.html", site=publisher.site, collection=publisher.collection,
        base_url=_base_url(), feed_ref=SITE_FEED, feeds=feeds, aggregators=aggregators,
        chart=Markup(subscribers_chart(history)), days=len(history),
        window=settings.audience_window)
    response = Response(html, content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})
    response.headers.extend(SECURITY_HEADERS)
    return response
