"""Readiness and Prometheus metrics: ``/readyz`` and ``/metrics``.

``/healthz`` (web.py) says the process is alive; ``/readyz`` says it should
get traffic: the articles are loaded and the ledger takes a write. A load
balancer or Kubernetes takes a host out of rotation on a 503 and puts it back
when it answers 200 again.

Metrics under several gunicorn workers: each worker is its own process with
its own publisher, so per-process counters would make ``/metrics`` report
whichever worker answered the scrape. When ``PROMETHEUS_MULTIPROC_DIR`` is
set (deploy/gunicorn.conf.py sets it) prometheus-client's multiprocess mode
is used: every worker writes its values to files in that folder and any
worker's ``/metrics`` reports the sum over all of them (counters and
histograms summed; the article gauges are those of the worker that reloaded
last). Without it (one process: ``feedsvc serve``, tests) the values are the
process's own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily

from .audiencestore import AudienceService
from .publisher import Publisher, ReloadReport

#: How long /readyz waits for the ledger's write lock before calling it busy.
LEDGER_PROBE_TIMEOUT = 1.0

#: web.py's feed endpoints; one route label, "feed", as the WSGI fast path uses.
_FEED_ENDPOINTS = frozenset({"site_feed", "site_archive", "topic_feed", "topic_archive",
                             "author_feed", "author_archive"})
_RELOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def multiprocess_mode() -> bool:
    """Whether prometheus-client shares values between processes (read at its import)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The app's metrics, in a registry of its own (tests build many apps)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        if not self.multiprocess:  # process metrics do not exist in multiprocess mode
            ProcessCollector(registry=self.registry)
        reg = self.registry
        self.requests = Counter(
            "feedsvc_http_requests", "HTTP requests answered, by route and status "
            "(304s over all requests of a route: how much polling costs nothing)",
            ["route", "status"], registry=reg)
        self.renders = Counter(
            "feedsvc_renders", "Documents rendered (render-cache misses): feeds, pages, OPML",
            registry=reg)
        self.render_seconds = Counter(
            "feedsvc_render_seconds", "Time spent rendering those documents", registry=reg)
        self.reloads = Counter(
            "feedsvc_reloads", "Rescans of the articles folder, by outcome "
            "(changed, unchanged, error)", ["outcome"], registry=reg)
        self.reload_seconds = Histogram(
            "feedsvc_reload_duration_seconds", "How long a rescan of the articles folder took",
            buckets=_RELOAD_BUCKETS, registry=reg)
        self.files_read = Counter(
            "feedsvc_reload_files_read", "Article files read and parsed by rescans", registry=reg)
        self.published = Gauge(
            "feedsvc_articles_published", "Articles published in the feeds",
            registry=reg, multiprocess_mode="livemostrecent")
        self.rejected = Gauge(
            "feedsvc_articles_rejected", "Article files not published because of an error",
            registry=reg, multiprocess_mode="livemostrecent")
        #: Collectors that read shared state at scrape time (subscriber counts):
        #: registered here and, in multiprocess mode, in each scrape's registry.
        self.collectors: list[object] = []
        self.purges = Counter(
            "feedsvc_purges", "Cache purges (keys or URLs) by purger and outcome: sent, "
            "retried (will be tried again), failed (given up)", ["purger", "outcome"],
            registry=reg)
        self._lock = threading.Lock()
        self._renders_seen = 0
        self._render_seconds_seen = 0.0
        # The first load ran in create_app, before this existed: start from its result.
        self.published.set(len(publisher.collection.entries))
        self.rejected.set(len(publisher.rejections))
        self.sync_renders()

    def observe_reload(self, report: ReloadReport) -> None:
        """A :attr:`Publisher.report_observers` callback: one call per rescan."""
        outcome = "error" if report.error else "changed" if report.changed else "unchanged"
        self.reloads.labels(outcome).inc()
        self.reload_seconds.observe(report.seconds)
        self.files_read.inc(report.read)
        self.published.set(report.published)
        self.rejected.set(report.rejected)

    def count_purge(self, purger: str, outcome: str, count: int) -> None:
        """A :attr:`PurgeService.observers` callback."""
        self.purges.labels(purger, outcome).inc(count)

    def sync_renders(self) -> None:
        """Carry the publisher's render totals, which only grow, into the counters."""
        with self._lock:
            renders = self.publisher.renders
            seconds = self.publisher.render_seconds
            if renders > self._renders_seen:
                self.renders.inc(renders - self._renders_seen)
                self._renders_seen = renders
            if seconds > self._render_seconds_seen:
                self.render_seconds.inc(seconds - self._render_seconds_seen)
                self._render_seconds_seen = seconds

    def count(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()
        self.sync_renders()

    def observe_hub(self, hub: Any) -> None:
        """Count the built-in hub's deliveries and report its subscriptions per feed."""
        self.hub_deliveries = Counter(
            "feedsvc_hub_deliveries", "Content deliveries of the built-in WebSub hub, by "
            "outcome (delivered, failed: tried again, gone: 410 ended it, dropped: gave up)",
            ["outcome"], registry=self.registry)
        self.hub_delivery_seconds = Histogram(
            "feedsvc_hub_delivery_seconds", "How long a delivery to a callback took",
            buckets=_RELOAD_BUCKETS, registry=self.registry)
        hub.delivery_observers.append(self._hub_delivery)
        self.add_collector(HubSubscriptions(hub))

    def _hub_delivery(self, outcome: str, seconds: float) -> None:
        self.hub_deliveries.labels(outcome).inc()
        self.hub_delivery_seconds.observe(seconds)

    def add_collector(self, collector: object) -> None:
        self.collectors.append(collector)
        if not self.multiprocess:
            self.registry.register(collector)  # type: ignore[arg-type]

    def exposition(self) -> bytes:
        self.sync_renders()
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        for collector in self.collectors:
            registry.register(collector)  # type: ignore[arg-type]
        return generate_latest(registry)


class HubSubscriptions:
    """``feedsvc_hub_subscriptions{feed}``: live subscriptions per topic, read at scrape time.

    Read from the store rather than counted, so every worker (and host)
    reports the same numbers; the label is the topic's path, which only
    names feeds this service serves.
    """

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def describe(self) -> list:
        return []

    def collect(self) -> Any:
        from urllib.parse import urlsplit

        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("feedsvc_hub_subscriptions",
                                   "Live subscriptions of the built-in hub, per feed URL",
                                   labels=["feed"])
        counts: dict[str, int] = {}
        try:
            for sub in self.hub.store.subscriptions(self.hub.clock()):
                path = urlsplit(sub.topic).path
                counts[path] = counts.get(path, 0) + 1
        except Exception:  # a store that cannot be read: no sample, never a failed scrape
            return [family]
        for path, count in sorted(counts.items()):
            family.add_metric([path], count)
        return [family]


class SubscriberCollector:
    """``feedsvc_feed_subscribers{feed, source}`` and the aggregators broken out.

    Read from the store at each scrape, so every worker (and every host)
    reports the same numbers, whichever answers; never summed across
    workers as the multiprocess counters are.
    """

    def __init__(self, audience: AudienceService) -> None:
        self.audience = audience

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("feedsvc_feed_subscribers", "Subscribers of each feed "
                              "(site, topic/<slug>, author/<slug>; all formats) over the "
                              "counting window, by source: aggregator, reader or hub",
                              labels=["feed", "source"]),
            GaugeMetricFamily("feedsvc_feed_aggregator_subscribers", "Subscribers each "
                              "aggregator reports for each feed (summed over its feed-ids)",
                              labels=["feed", "aggregator"]),
        ]

    def collect(self) -> list[GaugeMetricFamily]:
        by_source, by_aggregator = self._families()
        try:
            current = self.audience.current()
        except Exception:  # a store that cannot be read: no sample, never a failed scrape
            return [by_source, by_aggregator]
        for feed, counts in sorted(current.items()):
            for source, number in counts.by_source().items():
                by_source.add_metric([feed, source], number)
            for name, number in sorted(counts.aggregators.items()):
                by_aggregator.add_metric([feed, name], number)
        return [by_source, by_aggregator]


def route_label(endpoint: str | None) -> str:
    """A short, bounded name for the route that answered (never the raw path)."""
    if endpoint is None:
        return "unmatched"
    name = endpoint.rpartition(".")[2]
    return "feed" if name in _FEED_ENDPOINTS else name


def ledger_problem(path: Path, timeout: float = LEDGER_PROBE_TIMEOUT) -> str | None:
    """Why the ledger cannot take a write now, or None if it can.

    A cheap transaction on a connection of its own: ``mode=rw`` never creates
    a missing file, ``BEGIN IMMEDIATE`` takes the write lock (waiting at most
    ``timeout``), and a ``CREATE TABLE`` that is rolled back proves the file
    and its folder are writable without changing anything on disk.
    """
    # Check permissions first: opening a read-only ledger makes SQLite create
    # its -wal/-shm side files read-only too, which would outlive the fault.
    for candidate in (Path(path), Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            return f"ledger {path}: {candidate.name} is not writable"
    if not Path(path).exists():
        return f"ledger {path} is missing; restore it from a back-up"
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True,
                               timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        return f"ledger {path} cannot be opened for writing: {exc}"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE feedsvc_readyz_probe (x)")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return f"ledger {path} does not take a write: {exc}"
    finally:
        conn.close()
    return None


def readiness(publisher: Publisher) -> tuple[bool, dict[str, object]]:
    """Whether this process should get traffic, with what an operator needs to see why."""
    body: dict[str, object] = {
        "published": len(publisher.collection.entries),
        "rejected": len(publisher.rejections),
        # A vanished folder is reported, not failed: the last good feeds are
        # still served, and failing every host sharing that folder at once
        # would turn stale feeds into no feeds.
        "articles_dir": "missing" if publisher.folder_missing else "ok",
    }
    reasons: list[str] = []
    if not publisher.loaded:
        reasons.append("articles not loaded yet")
    store = publisher.store
    problem = (ledger_problem(publisher.ledger.path) if publisher.ledger is not None
               else store.problem())  # type: ignore[attr-defined]
    if problem:
        reasons.append(problem)
    body["ledger"] = body["store"] = "error" if problem else "ok"
    body["status"] = "not ready" if reasons else "ready"
    if reasons:
        body["reasons"] = reasons
    return not reasons, body


def init_app(app: Flask) -> Metrics:
    """Register /readyz and /metrics and start counting; returns the metrics."""
    publisher: Publisher = app.extensions["feedsvc"]
    metrics = Metrics(publisher)
    app.extensions["feedsvc.metrics"] = metrics
    publisher.report_observers.append(metrics.observe_reload)
    audience = app.extensions.get("feedsvc.audience")
    if audience is not None:
        metrics.add_collector(SubscriberCollector(audience))
    purging = app.extensions.get("feedsvc.purge")
    if purging is not None:
        purging.observers.append(metrics.count_purge)
    hub = app.extensions.get("feedsvc.hub")
    if hub is not None:
        metrics.observe_hub(hub)
    fast = app.extensions.get("feedsvc.fastpath")
    if fast is not None:  # feed requests answered before Flask is entered
        fast.observers.append(metrics.count)

    @app.after_request
    def _count(response: Response) -> Response:
        metrics.count(route_label(request.endpoint), response.status_code)
        return response

    def readyz() -> Response:
        ready, body = readiness(current_app.extensions["feedsvc"])
        response = current_app.json.response(body)
        response.status_code = 200 if ready else 503
        response.headers["Cache-Control"] = "no-store"
        return response

    def metrics_view() -> Response:
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    app.add_url_rule("/readyz", "readyz", readyz, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    return metrics
