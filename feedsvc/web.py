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
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from markupsafe import Markup
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    Gone,
    HTTPException,
    NotFound,
    RequestEntityTooLarge,
    SecurityError,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedMediaType,
)
from werkzeug.middleware.proxy_fix import ProxyFix

from . import sitemaps, urls, watch
from .audience import feed_key
from .audiencestore import AudienceService, AudienceStore, audience_database
from .background import ProcessThreads
from .collection import SITE_FEED, Collection, FeedRef
from .config import Settings, load_settings
from .documents import archive_count
from .fastpath import (
    CONVERTERS,
    FeedFastPath,
    answer_feed,
    feed_map,
    host_is_trusted,
    parse_feed_url,
    request_base_url,
)
from .formats import formats
from .http import SECURITY_HEADERS, CachePolicy, negotiate, prepare, wants_preview
from .hub import HubRequestError, RateLimiter, parse_hub_request
from .hubclient import CallbackRefused, resolve_callback
from .preview import template_globals
from .publisher import Publisher, ReloadReport, Rendered, canonical_limit
from .rendercache import RenderKey
from .surrogate import SITEMAPS, page_keys, touched
from .watch import FolderWatcher
from .websub import HubNotifier

if TYPE_CHECKING:
    from .purge import PurgeService

log = logging.getLogger("feedsvc")

bp = Blueprint("feeds", __name__)

#: Pages, previews and errors: no script may run, nothing may be sniffed (feedsvc.http).
PAGE_SECURITY_HEADERS = dict(SECURITY_HEADERS)
#: How often a process looks at the store's change counter, in seconds.
FOLLOW_INTERVAL = 0.01
#: Set (by deploy/gunicorn.conf.py) when the gunicorn master loads the app
#: before forking its workers (``preload_app``).
PRELOAD_ENV = "FEEDSVC_PRELOAD"


def create_app(config: Mapping[str, Any] | Settings | None = None,
               instance_path: str | os.PathLike[str] | None = None, *,
               sync: bool = True) -> Flask:
    """Build the app: settings, then the core, then the routes over it.

    ``config`` takes setting names in lower case (``{"articles_dir": ...}``)
    and wins over the environment and the TOML file, which is how tests give
    each app its own folder and ledger. ``sync=False`` loads the store as it
    is, without syncing the folder first (``feedsvc build`` has just done it).
    """
    settings = config if isinstance(config, Settings) else load_settings(config)
    app = Flask("feedsvc", instance_path=str(instance_path) if instance_path else None,
                instance_relative_config=True)
    app.config["FEEDSVC"] = settings
    # Flask's own check, and _check_host for what it misses (IPv6) and for
    # a 400 before any view; the fast path falls through to Flask for these.
    app.config["TRUSTED_HOSTS"] = list(settings.trusted_hosts) or None
    ledger_path = settings.ledger_path or Path(app.instance_path) / "ledger.sqlite3"
    publisher = Publisher(settings, settings.database_url if settings.database_url is not None
                          and settings.database_url.dialect == "postgresql" else ledger_path)
    preload = os.environ.get(PRELOAD_ENV) == "1"
    # A preloading master only loads the store (its workers sync the folder), so
    # that forking a worker, and so a SIGHUP, costs milliseconds.
    report = publisher.refresh(sync=sync and not preload)
    if publisher.loaded:
        log.info("loaded %d articles (%d rejected) from %s in %.3f s (%d files read)",
                 report.published, report.rejected, settings.articles_dir, report.seconds,
                 report.read)
    else:
        log.info("the store is not complete yet (first import running elsewhere): "
                 "feeds and pages answer 503 until it is")
    if settings.base_url is None:
        log.warning("FEEDSVC_BASE_URL is not set: links and new ids are made from each "
                    "request's host; set it for links that do not depend on the client")
    app.extensions["feedsvc"] = publisher
    if settings.websub_hubs:
        notifier = HubNotifier(settings.websub_hubs)
        publisher.listeners.append(_ping_hubs(notifier, settings))
        app.extensions["feedsvc.websub"] = notifier
    if settings.purge:
        # A preloading master serves nothing: its workers start purging in post_fork.
        app.extensions["feedsvc.purge"] = _start_purging(publisher, settings, ledger_path,
                                                         start=not preload)
    reloader = Reloader(publisher, settings.reload_interval, inotify=settings.inotify)
    app.extensions["feedsvc.reloader"] = reloader
    if settings.hub == "builtin":
        _init_hub(app, settings, publisher, ledger_path)
    fast = FeedFastPath(app.wsgi_app, publisher, settings,
                        on_request=lambda: _ensure_threads(app))
    app.extensions["feedsvc.fastpath"] = fast
    app.wsgi_app = fast  # type: ignore[method-assign]
    if settings.count_subscribers:
        audience = AudienceService(
            AudienceStore(audience_database(settings, ledger_path), settings.audience_window),
            settings.audience_flush_interval)
        app.extensions["feedsvc.audience"] = audience
        fast.feed_observers.append(_count_subscriber(audience))
        hub = app.extensions.get("feedsvc.hub")
        if hub is not None:  # the built-in hub's verified subscriptions are a source too
            audience.set_hub_source(_hub_subscribers(hub))
        if preload:  # no connection or thread across the fork: post_fork starts it
            audience.store.db.close()
        else:
            audience.ensure_running()
    app.extensions["feedsvc.robots_extra"] = (
        settings.robots_extra.read_text(encoding="utf-8", errors="replace")
        if settings.robots_extra else "")
    if settings.trusted_proxies:
        # Only what the shipped nginx sets (and clears when a client sends it).
        # Never X-Forwarded-Prefix: nginx does not key its cache on it, so a
        # forged one poisoned the cached links of every later reader.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n,
                                x_prefix=0)  # type: ignore[method-assign]
    app.url_map.converters.update(CONVERTERS)
    app.jinja_env.globals.update(template_globals())
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _plain_error)
    app.register_error_handler(Exception, _internal_error)
    app.before_request(_check_host)
    app.before_request(_ensure_reloader)
    app.before_request(_until_ready)
    # Start rescanning now, not at the first request: an idle service must
    # still notice changes (and ping WebSub hubs). A preloading gunicorn
    # master starts no thread and holds no connection across the fork: each
    # worker starts its own in post_fork (deploy/gunicorn.conf.py), and the
    # request hook restarts it in any process forked from one that had it.
    hub = app.extensions.get("feedsvc.hub")
    if preload:
        prepare(publisher.warm())
        publisher.before_fork()
        if hub is not None:
            hub.before_fork()
    else:
        reloader.ensure_running(until_loaded=True)
        if hub is not None:
            hub.ensure_running()
    publisher.closing.append(lambda: _stop_threads(app))
    _OPEN[id(app)] = app
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


def _hub_subscribers(hub: Any) -> Callable[[], dict[str, int]]:
    """The hub source of the counts: live verified subscriptions per counted feed.

    A topic is any format or archive of a feed; each counts for its feed, as
    fetches do.
    """
    adapter = feed_map().bind("localhost")

    def count() -> dict[str, int]:
        counts: dict[str, int] = {}
        for subscription in hub.store.subscriptions(time.time()):
            target = parse_feed_url(adapter, urlsplit(subscription.topic).path)
            if target is not None:
                key = feed_key(target[0])
                counts[key] = counts.get(key, 0) + 1
        return counts

    return count


def _ping_hubs(notifier: HubNotifier, settings: Settings):  # noqa: ANN202
    """A publisher listener that pings hubs for every feed a change touched."""

    def listener(changed: list[FeedRef]) -> None:
        notifier.notify(
            f"{settings.base_url}{urls.feed(ref, fmt.name)}" for ref in changed for fmt in formats()
        )

    return listener


def _start_purging(publisher: Publisher, settings: Settings, ledger_path: Path, *,
                   start: bool = True) -> PurgeService:
    """Purge the caches FEEDSVC_PURGE names of every change, through the store's queue."""
    from .purge import PurgeService, make_purgers
    from .sql import open_database

    service = PurgeService(
        open_database(state_database_url(settings, ledger_path)),
        make_purgers(settings.purge, settings.base_url, settings.purge_secret),
        version=lambda: publisher.version,
        # Workers rescan on their own: wait that long at most for a slow one.
        max_wait=2 * settings.reload_interval + 5.0)

    def listener(old: Collection, new: Collection) -> None:
        # Compared in the purge thread: the reload only hands the two collections over.
        service.announce(lambda: touched(old, new, publisher.site, settings.feed_size),
                         new.version)

    publisher.change_listeners.append(listener)
    if start:
        service.ensure_running()
    return service
def state_database_url(settings: Settings, ledger_path: Path) -> Any:
    """Where the hub and the purge queue keep their state: the store's database.

    The ledger's SQLite file, or the store's ``FEEDSVC_DATABASE_URL`` (a
    PostgreSQL shared by every host) once the settings have one.
    """
    configured = getattr(settings, "database_url", None)
    return configured if configured else f"sqlite:///{Path(ledger_path).resolve()}"


def _init_hub(app: Flask, settings: Settings, publisher: Publisher, ledger_path: Path) -> None:
    """The built-in WebSub hub (feedsvc.hubworker): ``POST /hub`` and its threads."""
    from .hubworker import Hub
    from .sql import open_database

    hub = Hub(settings, publisher, open_database(state_database_url(settings, ledger_path)))
    publisher.listeners.append(hub.changed)
    app.extensions["feedsvc.hub"] = hub
    app.extensions["feedsvc.hub_limiter"] = RateLimiter(settings.hub_rate_limit, 60.0)
    app.add_url_rule("/hub", "hub", _hub_view, methods=["POST"])


def _ensure_threads(app: Flask) -> None:
    """Start this process's background threads: the rescans and, if on, the hub's and purges."""
    app.extensions["feedsvc.reloader"].ensure_running()
    for name in ("feedsvc.hub", "feedsvc.purge"):
        service = app.extensions.get(name)
        if service is not None:
            service.ensure_running()


class Reloader:
    """Keeps one process's view current: follows the store, and syncs the folder if writer.

    A daemon thread follows the store's change counter every
    ``follow_interval`` (a cheap query), so an edit another process stored
    reaches this one within milliseconds; every ``interval`` it also tries
    the writer lease and, holding it, rescans the folder (the fallback and
    safety net). The writer also watches the folder with inotify, which
    hands it each complete file at once. Started per process, not at import,
    so that it runs in every gunicorn worker even when the app was created
    before the fork (``preload_app``).
    """

    def __init__(self, publisher: Publisher, interval: float, *, inotify: bool = True,
                 follow_interval: float = FOLLOW_INTERVAL) -> None:
        self.publisher = publisher
        self.interval = interval
        self.follow_interval = min(follow_interval, interval) if interval > 0 else 0
        self.inotify = inotify
        self.watcher: FolderWatcher | None = None
        self._background = ProcessThreads("reload")
        self._stop = self._background.stopping

    def ensure_running(self, *, until_loaded: bool = False) -> None:
        """Start the thread in this process if it has none (not after :meth:`stop`).

        With live reload off (interval 0) only ``until_loaded`` starts one, which
        ends once the first complete collection is in (a worker forked before it,
        or one following another process's first import).
        """
        if self._background.running:
            return
        if self.interval <= 0 and (self.publisher.loaded or not until_loaded):
            return
        self._background.ensure(self._start)

    def _start(self, stopping: threading.Event) -> list[threading.Thread]:
        self._stop = stopping
        self.watcher = None  # a forked child has no watcher thread of its own
        return [threading.Thread(target=self._run, name="feedsvc-reload", daemon=True)]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop for good and join the thread, then the folder watcher's: a rescan under
        way finishes first, so that neither touches the store once this returns."""
        self._background.stop(timeout)
        if self.watcher is not None:
            self.watcher.stop(wait=timeout)

    def _run(self) -> None:
        next_sync = 0.0  # at once: a worker forked from the master may be the writer
        until_loaded = self.interval <= 0
        interval = self.interval if not until_loaded else 1.0
        follow = self.follow_interval if not until_loaded else FOLLOW_INTERVAL
        while not self._stop.is_set():
            if until_loaded and self.publisher.loaded:
                return
            now = time.monotonic()
            try:
                if now >= next_sync:
                    # A process that is not the writer tries the lease every second,
                    # so that one takes over soon after the writer exits (a SIGHUP).
                    next_sync = now + (interval if self.publisher.is_writer
                                       else min(interval, 1.0))
                    report = self.publisher.refresh()
                    self._watch()
                    # So that the ledger's main file alone stays a usable copy.
                    self.publisher.store.checkpoint_if_due()
                else:
                    report = self.publisher.follow()
            except Exception:  # never let the reloader die: log and try again
                log.exception("reload failed")
                self._stop.wait(follow)
                continue
            _log_reload(report)
            self._stop.wait(max(0.0, min(follow, next_sync - time.monotonic())))

    def _watch(self) -> None:
        """Watch the folder while this process is the writer; stop when it is not."""
        if not (self.inotify and self.interval > 0):
            return
        publisher = self.publisher
        self.watcher, self.inotify = watch.watch_while_writer(
            self.watcher, publisher,
            on_paths=lambda paths: _log_reload(publisher.refresh(paths=paths)),
            on_overflow=self._overflow, rescan_seconds=self.interval)

    def _overflow(self) -> None:
        if self.watcher is not None:
            self.watcher.writing.clear()
        _log_reload(self.publisher.refresh())


def _log_reload(report: ReloadReport) -> None:
    if report.changed:
        log.info("reloaded: %d published, %d rejected, %d files read in %.3f s",
                 report.published, report.rejected, report.read, report.seconds)


#: Every app of this process not shut down yet, in the order made: interpreter exit
#: shuts them down (their threads keep each alive until then anyway).
_OPEN: dict[int, Flask] = {}


def open_apps() -> list[Flask]:
    """The apps made in this process and not shut down yet, oldest first."""
    return list(_OPEN.values())


def shutdown(app: Flask) -> None:
    """Stop every background thread, then close the ledger, checkpointing its WAL.

    The clean-exit path: gunicorn's ``worker_exit`` hook calls it, and so
    does interpreter exit for any app still open; closing the publisher
    alone does the same. Every thread is stopped and joined before the store
    closes (none may use a closed store, nor outlive its app); a second call
    does nothing.
    """
    _OPEN.pop(id(app), None)
    publisher = app.extensions.get("feedsvc")
    if publisher is None:
        _stop_threads(app)
        return
    try:
        publisher.close()
    except Exception:  # exiting anyway: say so, do not mask the exit
        log.exception("closing the ledger failed")


def _stop_threads(app: Flask) -> None:
    """Stop and join the app's threads, the ones that make changes first (the first of
    :attr:`Publisher.closing`). A part that is closed already stops at once."""
    _OPEN.pop(id(app), None)
    reloader = app.extensions.get("feedsvc.reloader")
    if reloader is not None:
        reloader.stop()
    audience = app.extensions.get("feedsvc.audience")
    if audience is not None:
        audience.stop()  # the last flush: a clean exit loses no counts
    purging = app.extensions.get("feedsvc.purge")
    if purging is not None:
        purging.stop()
    hub = app.extensions.get("feedsvc.hub")
    if hub is not None:
        try:
            hub.stop()
        except Exception:
            log.exception("stopping the hub failed")
    notifier = app.extensions.get("feedsvc.websub")
    if notifier is not None:
        notifier.stop()


@atexit.register
def _shutdown_at_exit() -> None:
    for app in reversed(open_apps()):
        shutdown(app)


def _check_host() -> None:
    """A 400 for a host FEEDSVC_TRUSTED_HOSTS does not name, before anything renders."""
    settings: Settings = current_app.config["FEEDSVC"]
    if not host_is_trusted(request.environ, settings.trusted_hosts):
        raise SecurityError(f"Host {request.environ.get('HTTP_HOST', '')!r} is not trusted.")


def _ensure_reloader() -> None:
    _ensure_threads(current_app)  # type: ignore[arg-type]


#: Endpoints that answer before the first complete collection is loaded.
_ALWAYS = frozenset({"feeds.healthz", "readyz", "metrics", "static"})


def _until_ready() -> Response | None:
    """503 with Retry-After for feeds and pages until the first complete collection is in.

    A feed with only some of the articles would tell readers the others
    were deleted; a 503 tells them to come back.
    """
    if _publisher().loaded or request.endpoint in _ALWAYS:
        return None
    response = Response("503 Service Unavailable: the articles are being imported; retry soon\n",
                        status=503, headers={"Retry-After": str(RETRY_AFTER),
                                             "Cache-Control": "no-store"},
                        content_type="text/plain; charset=utf-8")
    response.headers.extend(SECURITY_HEADERS)
    return response


#: Seconds a client is asked to wait during the first import.
RETRY_AFTER = 5


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
    if limit is not None:
        settings: Settings = current_app.config["FEEDSVC"]
        served = canonical_limit(limit, settings.feed_size, settings.max_limit)
        if (served or settings.feed_size) != limit:
            # Only a few limits have documents (memory stays bounded): send the
            # client to the nearest one.
            response = redirect(f"{request.path}?limit={served or settings.feed_size}", 301)
            response.headers["Cache-Control"] = f"public, max-age={settings.archive_max_age}"
            return response
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
    status, headers, body = negotiate(request.environ, rendered,
                                      policy=CachePolicy.of(current_app.config["FEEDSVC"]))
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
    """A page, cached per collection version; ``key`` is (endpoint, slug...)."""
    publisher = _publisher()
    collection = publisher.collection
    base = _base_url()

    def build() -> tuple[bytes, str, Any]:
        html = render_template(template, site=publisher.site, collection=collection,
                               base_url=base, feed_ref=feed_ref, **context)
        from .documents import EPOCH
        updated = publisher.last_modified(None, collection.updated or EPOCH)
        return html.encode("utf-8"), "text/html; charset=utf-8", updated

    keys = page_keys(key[0], collection, *key[1:])
    rendered: Rendered = publisher.cached(RenderKey.of_page(key, base), collection.version,
                                          build, "page", keys)
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


# -- the built-in WebSub hub ---------------------------------------------------------

#: The largest subscription request body taken.
HUB_MAX_REQUEST_BYTES = 16 * 1024


def _hub_view() -> Response:
    """``POST /hub``: a subscription request (WebSub §5.1), 202 and verified later."""
    hub = current_app.extensions["feedsvc.hub"]
    settings: Settings = current_app.config["FEEDSVC"]
    if not current_app.extensions["feedsvc.hub_limiter"].allow(request.remote_addr or "-"):
        raise TooManyRequests(description="too many subscription requests; try again in a "
                              "minute")
    if request.mimetype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(description="a subscription request is a form: "
                                   "application/x-www-form-urlencoded")
    if (request.content_length or 0) > HUB_MAX_REQUEST_BYTES:
        raise RequestEntityTooLarge(description="a subscription request is at most "
                                    f"{HUB_MAX_REQUEST_BYTES} bytes")
    request.max_form_memory_size = HUB_MAX_REQUEST_BYTES
    try:
        hub_request = parse_hub_request(request.form, hub.leases, hub.topic_problem)
        if hub_request.mode == "subscribe":
            resolve_callback(hub_request.callback, settings.hub_allow_private_callbacks)
    except HubRequestError as exc:
        raise BadRequest(description=str(exc)) from None
    except CallbackRefused as exc:
        raise BadRequest(description=f"hub.callback is refused: {exc}") from None
    problem = hub.limit_problem(hub_request)
    if problem is not None:
        raise (ServiceUnavailable if "this hub" in problem else BadRequest)(description=problem)
    if hub.store.pending_requests() >= settings.hub_max_subscriptions:
        raise ServiceUnavailable(description="too many requests wait for verification")
    hub.accept(hub_request)
    response = Response("202 Accepted: the callback will be asked to confirm\n", status=202,
                        content_type="text/plain; charset=utf-8")
    response.headers.extend(SECURITY_HEADERS)
    return response


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
        "store": "error" if publisher.last_error else "ok",
        "worker": os.getpid(),
        "store_seq": publisher.view.state.seq,  # the store change this process has applied
        "loaded": publisher.loaded,  # False until the first complete collection is in
        "applied_at": publisher.view.applied_at,  # unix time it applied store_seq
        "writer": publisher.is_writer,
        "watching": current_app.extensions["feedsvc.reloader"].watcher is not None,
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

    rendered = publisher.cached(RenderKey.of_page(key, base), version, build, "page",
                                (SITEMAPS,))
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
