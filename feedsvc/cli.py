"""The ``feedsvc`` command: ``serve`` the folder, ``check`` it, ``build`` a static copy,
``backup`` and ``restore`` the ledger (or the PostgreSQL store), show subscriber ``stats``.

``check`` uses the same reading and parsing as the service (the publisher
over a throw-away copy of the service's ledger and store, so only files
changed since the service last saw them are read), so what it reports is exactly what would be
rejected when serving. ``build`` exports what the service would serve, with
the service's own ledger, so ids and dates match the live feeds. ``backup``
copies the ledger while the service runs; ``restore`` puts a back-up in
place and refuses while anything has the ledger open. ``migrate`` copies a
whole store between SQLite and PostgreSQL (either way), verified.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .config import (
    LOOPBACK_HOSTS,
    Settings,
    load_settings,
    require_articles_folder,
    require_host_policy,
)
from .errors import ConfigError, FeedsvcError
from .progress import Progress, busy

if TYPE_CHECKING:
    from .audience import FeedCounts
    from .export import BuildSummary, UnchangedCheck
    from .sql import DatabaseURL


def _drop_lease(copy: Path) -> None:
    """The copy carries the service's writer lease: without it, check is the writer."""
    conn = sqlite3.connect(copy)
    try:
        with contextlib.suppress(sqlite3.OperationalError):  # a ledger from before the store
            conn.execute("DELETE FROM leases")
            conn.commit()
    finally:
        conn.close()


def _check(args: argparse.Namespace) -> int:
    from .publisher import Publisher

    overrides = {"articles_dir": args.folder} if args.folder else {}
    settings = load_settings(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "check.sqlite3"
        # A copy of the service's ledger and store, if there is one: which of two
        # identical files is "first" (and so a duplicate) is judged as the service
        # judges it, and only files the store lacks are read; the ledger itself
        # is never written.
        real = ledger_path(settings)
        url = settings.database_url
        if url is not None and url.dialect == "postgresql":
            from .errors import LedgerError
            from .migrate import MigrationError, migrate

            try:  # the shared store, copied into the scratch file (leases are not copied)
                migrate(url, f"sqlite:///{scratch}")
            except (LedgerError, MigrationError) as exc:
                print(f"feedsvc: {exc}; checking without it", file=sys.stderr)
                scratch.unlink(missing_ok=True)
            settings = replace(settings, database_url=None, ledger_path=scratch)
        elif real.is_file():
            from .errors import LedgerError
            from .ledger import backup

            try:
                backup(real, scratch)
                _drop_lease(scratch)
            except LedgerError as exc:
                print(f"feedsvc: {exc}; checking without it", file=sys.stderr)
                scratch.unlink(missing_ok=True)
        elif real.exists():  # a folder: the service could not open it, say so as for a bad file
            print(f"feedsvc: ledger {real}: is not a file; checking without it", file=sys.stderr)
        publisher = Publisher(settings, scratch)
        with Progress("check") as progress:
            publisher.refresh(progress=progress)
        rejections = publisher.rejections
        warnings = publisher.warnings
        duplicates = publisher.duplicates
        published = {e.article.path: e for e in publisher.collection.entries}
        articles = publisher.articles
        publisher.close()
    for path in sorted(set(articles) | set(rejections)):
        if path in rejections:
            print(f"REJECTED   {rejections[path]}")
        elif path in duplicates:
            print(f"DUPLICATE  {path}: duplicate of {duplicates[path]}; not published")
        elif path in published:
            print(f"published  {path}: {published[path].title}")
        elif articles[path].front_matter.draft:
            print(f"draft      {path}: not published (draft: true)")
        else:
            print(f"scheduled  {path}: published at its front-matter date")
        for warning in warnings.get(path, ()):
            print(f"  warning: {warning}")
    dup = f", {len(duplicates)} duplicate(s)" if duplicates else ""
    print(f"{len(published)} published, {len(rejections)} rejected{dup} in "
          f"{settings.articles_dir}")
    return 1 if rejections or duplicates else 0


def ledger_path(settings: Settings) -> Path:
    """The ledger the service uses: FEEDSVC_LEDGER_PATH, else the app's instance folder."""
    if settings.ledger_path:
        return Path(settings.ledger_path)
    from flask import Flask

    return Path(Flask("feedsvc", instance_relative_config=True).instance_path) / "ledger.sqlite3"


def _backup(args: argparse.Namespace) -> int:
    from .ledger import backup

    settings = load_settings({})
    dest = Path(args.file)
    _check_destination(dest)
    if settings.database_url is not None and settings.database_url.dialect == "postgresql":
        return _backup_postgres(settings.database_url, dest)
    source = ledger_path(settings)
    if dest.exists() and source.exists() and dest.samefile(source):
        # The copy would be renamed over the live file, under a running service's feet.
        raise FeedsvcError(f"{dest} is the ledger itself: name a back-up file elsewhere")
    copy = backup(source, dest)
    print(f"backed up {source} to {copy.path}: {copy.articles} articles, "
          f"{copy.versions} feed versions, schema {copy.schema}; integrity ok")
    return 0


def _check_destination(dest: Path) -> None:
    """The back-up FILE's folder must exist and take a new file: otherwise SQLite's "unable
    to open database file" came out as a fault of the ledger, not of FILE."""
    import os

    folder = dest.parent
    if dest.is_dir():
        raise FeedsvcError(f"{dest} is a folder: name the back-up file to write")
    if not folder.is_dir():
        raise FeedsvcError(f"{dest}: no folder {folder} to write the back-up in")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FeedsvcError(f"{dest}: cannot write in {folder}: permission denied")


def _backup_postgres(url: DatabaseURL, dest: Path) -> int:
    """The PostgreSQL store, as one consistent SQLite file (see feedsvc.migrate.backup)."""
    from .migrate import backup

    with Progress("backup") as progress:
        report = backup(url, dest, progress=progress)
    print(f"backed up {url.redacted} to {dest}: {report.counts.get('articles', 0)} articles, "
          f"{report.counts.get('feed_versions', 0)} feed versions, one consistent snapshot; "
          f"verified (counts and digest {report.digest[:16]}), integrity ok")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from .ledger import restore

    settings = load_settings({})
    if settings.database_url is not None and settings.database_url.dialect == "postgresql":
        return _restore_postgres(Path(args.file), settings.database_url)
    target = ledger_path(settings)
    folder = next(f for f in target.parents if f.exists())  # restore makes the missing ones
    if not folder.is_dir():  # mkdir said only "File exists (...)"
        raise ConfigError("FEEDSVC_LEDGER_PATH", f"{target}: {folder} is a file, not a folder")
    copy = restore(Path(args.file), target)
    print(f"restored {target} from {args.file}: {copy.articles} articles, "
          f"{copy.versions} feed versions, schema {copy.schema}; verified row for row")
    return 0


def _restore_postgres(source: Path, url: DatabaseURL) -> int:
    """A back-up file copied into the (empty) PostgreSQL store (feedsvc.migrate.restore)."""
    from .migrate import restore

    with Progress("restore") as progress:
        report = restore(source, url, progress=progress)
    print(f"restored {url.redacted} from {source}: {report.counts.get('articles', 0)} "
          f"articles, {report.counts.get('feed_versions', 0)} feed versions; verified "
          f"(counts and digest {report.digest[:16]})")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from .migrate import MigrationError, migrate
    from .sql import DatabaseURL

    urls = []
    for name, text in (("SOURCE_URL", args.source), ("TARGET_URL", args.target)):
        try:
            urls.append(DatabaseURL.parse(text))
        except ValueError as exc:  # which of the two, without echoing a password
            print(f"feedsvc: {name}: {exc}", file=sys.stderr)
            return 2
    source, target = urls
    try:
        with Progress("migrate") as progress:
            report = migrate(source, target, progress=progress)
    except MigrationError as exc:
        print(f"feedsvc: {exc}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{n} {t}" for t, n in sorted(report.counts.items()))
    extra = f"; components {', '.join(report.components)}" if report.components else ""
    print(f"migrated {source.redacted} to {target.redacted}: {rows}{extra}; "
          f"verified (counts and digest {report.digest[:16]})")
    return 0


@contextlib.contextmanager
def _reading(where: object) -> Iterator[None]:
    """A database error of ``stats`` or ``hub list`` as one line naming the store (they
    read its tables directly: a corrupt file or a PostgreSQL down was a traceback)."""
    import psycopg

    from .errors import LedgerError

    try:
        yield
    except (sqlite3.Error, psycopg.Error) as exc:
        raise LedgerError(str(where), f"cannot read it: {exc}") from exc


def _hub_list(args: argparse.Namespace) -> int:
    """The built-in hub's subscriptions: topic, callback host, lease end, last delivery."""
    import time
    from datetime import UTC, datetime

    from .hubstore import HubStore
    from .sql import open_database
    from .web import state_database_url

    settings = load_settings({})
    path = ledger_path(settings)
    if not getattr(settings, "database_url", None) and not path.is_file():
        print(f"feedsvc: no ledger at {path}: the hub has no subscriptions", file=sys.stderr)
        return 1
    db = open_database(state_database_url(settings, path))
    try:
        with _reading(settings.database_url or path):
            store = HubStore(db)
            subs = store.subscriptions()
            pending = store.pending_deliveries()
    finally:
        db.close()
    now = time.time()

    def when(t: float | None) -> str:
        return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    rows = [("TOPIC", "CALLBACK HOST", "LEASE ENDS", "LAST DELIVERY")] + [
        (s.topic, s.callback_host,
         when(s.expires) + (" (ended)" if s.expires <= now else ""),
         f"{s.last_status} at {when(s.last_delivery)}" if s.last_status else "none yet")
        for s in subs]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)),
              row[3], sep="  ")
    print(f"{len(subs)} subscription(s), {pending} delivery(ies) pending")
    return 0


def _build(args: argparse.Namespace) -> int:
    from .export import UnchangedCheck, build_site, check_unchanged

    # No reloading while building: every file must come from one version.
    overrides: dict[str, object] = {"reload_interval": 0}
    # A static host answers no POST /hub: its feeds must not advertise the built-in hub.
    overrides["hub"] = "off"
    if args.folder:
        overrides["articles_dir"] = args.folder
    if args.base_url:
        overrides["base_url"] = args.base_url  # also the authority of new ids, as when serving
    settings = load_settings(overrides)
    _check_build_folders(settings, Path(args.outdir))
    check = UnchangedCheck(None)
    shortcut = ""
    url = settings.database_url
    if url is None or url.dialect != "postgresql":
        # Nothing changed since the last build (the store's counter says so after the
        # folder sync): a stat of every file, and neither the app nor the articles loaded.
        with busy(f"syncing {settings.articles_dir}"):
            check = check_unchanged(settings, args.outdir, ledger_path(settings))
    summary: BuildSummary | None = check.summary
    if args.watch:
        return _build_watching(args, overrides, check)
    if summary is not None:
        shortcut = " (nothing changed since the last build: every file checked by a stat)"
    else:
        from .web import create_app

        with busy(f"loading {settings.articles_dir}"):
            app = create_app(overrides, sync=not check.synced)
        publisher = app.extensions["feedsvc"]
        try:
            with Progress("build") as progress:
                summary = build_site(app, args.outdir, progress=progress,
                                     files_as_recorded=check.files_as_recorded)
        finally:
            publisher.close()
    _print_built(summary, shortcut)
    return 0


def _check_build_folders(settings: Settings, outdir: Path) -> None:
    """What stops a build, found before the folder is synced and the articles loaded."""
    articles = settings.articles_dir
    require_articles_folder(articles)
    if settings.base_url is None:
        raise FeedsvcError(f"{outdir}: a static site needs its public URL: give --base-url "
                           "or set FEEDSVC_BASE_URL")
    out, articles = outdir.resolve(), articles.resolve()
    if out.is_relative_to(articles):
        # The next scan would read every built page and feed as an article.
        raise FeedsvcError(f"{outdir} is inside the articles folder {articles}: the built "
                           "files would be read as articles; build into a folder outside it")
    if articles.is_relative_to(out):
        raise FeedsvcError(f"the articles folder {articles} is inside {outdir}: every article "
                           "file, drafts too, would be published with the build; build into "
                           "a folder outside it")


def _print_built(summary: BuildSummary, shortcut: str = "") -> None:
    print(f"built {summary.files} files ({summary.feeds} feeds, {summary.pages} pages, "
          f"{summary.assets} assets; each with a .gz) for {summary.base_url} "
          f"in {summary.outdir} in {summary.seconds:.1f} s: {summary.changed} written, "
          f"{summary.removed} removed, the rest untouched{shortcut}", flush=True)
    if summary.rejected:
        print(f"{summary.rejected} article file(s) rejected and left out; "
              "`feedsvc check` says why", flush=True)


def _build_watching(args: argparse.Namespace, overrides: dict[str, object],
                    check: UnchangedCheck) -> int:
    """`feedsvc build --watch`: build, then rebuild after every change until SIGINT or
    SIGTERM (a build under way finishes first); SIGHUP rescans at once."""
    import signal

    from .watchbuild import Rebuilt, WatchedBuild
    from .web import create_app

    configured = load_settings({k: v for k, v in overrides.items() if k != "reload_interval"})
    with busy(f"loading {configured.articles_dir}"):
        app = create_app(overrides, sync=not check.synced)
    publisher = app.extensions["feedsvc"]

    bar = Progress("build")
    after = {"start": "", "change": " (after a change)", "time": " (an article fell due)",
             "repair": " (files changed by hand were rewritten)"}

    def report(built: Rebuilt) -> None:
        bar.close()  # the first build's bar ends before its line
        _print_built(built.summary, after.get(built.reason, ""))
        if built.reason == "start":
            print(f"watching {configured.articles_dir}; rebuilding {args.outdir} after every "
                  "change (Ctrl-C stops)", flush=True)

    watched = WatchedBuild(app, args.outdir, rescan_seconds=configured.reload_interval or 5.0,
                           inotify=configured.inotify, on_build=report, progress=bar)
    # SIGHUP, a service's reload: list the folder and check the export now.
    previous = {sig: signal.signal(sig, lambda signum, _: watched.on_signal(signum))
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        watched.run(files_as_recorded=check.files_as_recorded)
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        publisher.close()
    return 0


def stats_table(counts: Mapping[str, FeedCounts]) -> str:
    """Feeds by subscribers (most first), each with its aggregators broken out below it."""
    rows = sorted(counts.items(), key=lambda item: (-item[1].total, item[0]))
    width = max([len("FEED")] + [len(key) for key, _ in rows]
                + [len(name) + 2 for _, c in rows for name in c.aggregators])
    lines = [f"{'FEED':<{width}}  {'TOTAL':>8}  {'AGGREGATOR':>10}  {'READER':>8}  {'HUB':>6}"]
    for key, c in rows:
        lines.append(f"{key:<{width}}  {c.total:>8}  {c.aggregator:>10}  {c.readers:>8}  "
                     f"{c.hub:>6}")
        for name, number in sorted(c.aggregators.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"{'  ' + name:<{width}}  {'':>8}  {number:>10}")
    if not rows:
        lines.append("(no subscribers counted yet)")
    return "\n".join(lines)


def _stats(args: argparse.Namespace) -> int:
    import time

    from .audiencestore import AudienceStore, audience_database

    settings = load_settings({})
    path = ledger_path(settings)
    if not getattr(settings, "database_url", None) and not path.is_file():
        print(f"feedsvc: no ledger at {path}: nothing has been counted there", file=sys.stderr)
        return 2
    db = audience_database(settings, path)
    try:
        with _reading(settings.database_url or path):
            counts = AudienceStore(db, settings.audience_window).current(time.time())
    finally:
        db.close()
    print(stats_table(counts))
    return 0
def _is_loopback(host: str) -> bool:
    """Whether ``--host`` is reachable from this machine only."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from .web import create_app

    overrides: dict[str, object] = {"articles_dir": args.folder} if args.folder else {}
    settings = load_settings(overrides)  # a bad setting stops us here, before any fork
    if settings.base_url is None and not settings.trusted_hosts and _is_loopback(args.host):
        overrides["trusted_hosts"] = list(LOOPBACK_HOSTS)  # only this machine can reach it
        settings = load_settings(overrides)
    require_host_policy(settings)
    require_articles_folder(settings.articles_dir)
    _open_once(settings)
    # An IPv6 address in brackets: gunicorn read "::1:8000" as host "::1:8000", port "".
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host

    class _Server(BaseApplication):  # gunicorn's documented way to embed it
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", 4)
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("accesslog", "-")
            self.cfg.set("worker_exit", gunicorn_worker_exit)

        def load(self):  # noqa: ANN202 - gunicorn's signature
            # In each worker, after the fork: a SQLite connection or a reload
            # thread must not be carried across it.
            return create_app(overrides)

    print(f"serving {settings.articles_dir} on http://{host}:{args.port}/", file=sys.stderr)
    _Server().run()
    return 0


def _open_once(settings: Settings) -> None:
    """What each worker opens first (the topics file, the store), opened and closed here.

    A worker that fails to boot gives a traceback and gunicorn's "Worker failed
    to boot"; checked before the fork, the same fault is one line and status 2,
    and nothing was bound. Nothing stays open across the fork.
    """
    from .identity import id_authority
    from .store import open_store
    from .topics import load_topic_catalog

    load_topic_catalog(settings.topics_file)
    url = settings.database_url
    where = url if url is not None and url.dialect == "postgresql" else ledger_path(settings)
    open_store(where, id_authority(settings.base_url)).close()


def gunicorn_worker_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """A worker stops cleanly: close its ledger, so the WAL is checkpointed into the file."""
    from .web import shutdown

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        shutdown(app)


def _port(text: str) -> int:
    """``--port``: a TCP port gunicorn can bind (0 would bind a random one, never shown)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {port}")
    return port


def _workers(text: str) -> int:
    """``--workers``: at least one (gunicorn with none listens and answers nothing)."""
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if workers < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {workers}")
    return workers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feedsvc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the articles folder over HTTP (gunicorn)")
    serve.add_argument("folder", nargs="?", help="articles folder (default: FEEDSVC_ARTICLES_DIR "
                       "or ./articles)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                       "127.0.0.1; any other needs FEEDSVC_BASE_URL or FEEDSVC_TRUSTED_HOSTS)")
    serve.add_argument("--port", type=_port, default=8000, help="1-65535 (default: 8000)")
    serve.add_argument("--workers", type=_workers, default=1,
                       help="gunicorn worker processes, 1 or more (default: 1)")
    serve.set_defaults(run=_serve)
    check = sub.add_parser("check", help="report, per file, whether it is published and why not")
    check.add_argument("folder", nargs="?", help="articles folder (default as for serve)")
    check.set_defaults(run=_check)
    build = sub.add_parser("build", help="write every feed, page and asset into OUTDIR, with "
                           ".gz copies, for a static host, CDN or object storage")
    build.add_argument("outdir", help="folder to write (replaced whole if it holds an earlier "
                       "build; refused if it holds anything else)")
    build.add_argument("--folder", help="articles folder (default as for serve)")
    build.add_argument("--base-url", help="public URL the files will be served at "
                       "(default: FEEDSVC_BASE_URL)")
    build.add_argument("--watch", action="store_true", help="stay running and rebuild after "
                       "every change of the articles (only what it touched), until Ctrl-C")
    build.set_defaults(run=_build)
    backup = sub.add_parser("backup", help="copy the ledger (ids, slugs, dates) to FILE, "
                            "consistently, while the service runs")
    backup.add_argument("file", help="the back-up file to write (replaced if it exists)")
    backup.set_defaults(run=_backup)
    restore = sub.add_parser("restore", help="put the back-up FILE in place of the ledger "
                             "(refused while a service has it open)")
    restore.add_argument("file", help="a back-up made by `feedsvc backup`")
    restore.set_defaults(run=_restore)
    migrate = sub.add_parser("migrate", help="copy the store (ids, slugs, dates, parsed "
                             "articles) from SOURCE_URL to TARGET_URL, verified")
    migrate.add_argument("source", metavar="SOURCE_URL", help="sqlite:////path or "
                         "postgresql://user:password@host/dbname")
    migrate.add_argument("target", metavar="TARGET_URL", help="as SOURCE_URL; refused if it "
                         "holds another site")
    migrate.set_defaults(run=_migrate)
    hub = sub.add_parser("hub", help="the built-in WebSub hub (FEEDSVC_HUB=builtin)")
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="{list}", required=True)
    hub_list = hub_sub.add_parser("list", help="show subscriptions: topic, callback host, "
                                  "lease end, last delivery status")
    hub_list.set_defaults(run=_hub_list)
    stats = sub.add_parser("stats", help="subscribers per feed, from the store: aggregators "
                           "broken out, readers and hub subscriptions (what /stats shows)")
    stats.set_defaults(run=_stats)
    args = parser.parse_args(argv)
    # A long-running command logs what it gets over (a watch's rewrites and recoveries).
    running = args.command == "serve" or getattr(args, "watch", False)
    logging.basicConfig(level=logging.INFO if running else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"feedsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    except FeedsvcError as exc:
        print(f"feedsvc: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # whatever was not foreseen: one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"feedsvc: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a command's own handler (a build undoes itself)
        print("feedsvc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
