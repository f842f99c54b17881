"""gunicorn settings for feedsvc in production: ``gunicorn -c deploy/gunicorn.conf.py wsgi:app``.

Every value can be changed without editing this file, through the variables
below (the ``FEEDSVC_*`` settings of the app itself are read by the app):

- ``FEEDSVC_BIND``: address to listen on, default ``127.0.0.1:8000`` (nginx in
  front); several addresses separated by commas.
- ``FEEDSVC_WORKERS``: worker processes, default ``2 * cores + 1`` capped at
  ``FEEDSVC_MAX_WORKERS`` (default 8): each worker keeps its own copy of the
  articles and render cache, so more workers cost memory, not correctness.
- ``FEEDSVC_THREADS``: threads per worker (default 4); requests wait on the
  network far more than they compute, and a thread shares its worker's cache.
- ``FEEDSVC_TIMEOUT``: seconds a silent worker is given before it is restarted.
- ``FEEDSVC_ACCESS_LOG``: access log file, default ``-`` (standard output).
- ``PROMETHEUS_MULTIPROC_DIR``: where the workers keep their metrics so that
  ``/metrics`` from any worker reports the sum over all of them; made in a
  fresh temporary folder if not given, and emptied at start.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import glob
import os
import shutil
import tempfile


def _cores() -> int:
    """Cores this process may run on: the CPU set of a container, not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity on macOS
        return os.cpu_count() or 1


def default_workers(cores: int, cap: int) -> int:
    """gunicorn's rule of thumb, ``2 * cores + 1``, never more than ``cap``."""
    return max(1, min(2 * cores + 1, cap))


bind = [address.strip() for address in os.environ.get("FEEDSVC_BIND", "127.0.0.1:8000").split(",")
        if address.strip()]
workers = int(os.environ.get("FEEDSVC_WORKERS") or default_workers(
    _cores(), int(os.environ.get("FEEDSVC_MAX_WORKERS") or 8)))
worker_class = "gthread"
threads = int(os.environ.get("FEEDSVC_THREADS") or 4)

# A render takes milliseconds; a worker silent for this long is stuck.
timeout = int(os.environ.get("FEEDSVC_TIMEOUT") or 30)
graceful_timeout = 30  # in-flight requests finish on restart or SIGTERM
# nginx keeps idle upstream connections for 4 s (keepalive_timeout in the site
# file): shorter than this, so nginx never reuses a connection we just closed.
keepalive = 5

# The master loads the app, and with it the store's index of every article,
# once; workers are forked from it with the view in place (copy-on-write
# pages, shared), so a worker starts in milliseconds and a SIGHUP leaves no
# gap. feedsvc opens no SQLite connection and starts no thread in the master
# (FEEDSVC_PRELOAD tells it); each worker starts its own in post_fork. A HUP
# re-reads this file and forks new workers from the same master image, after
# bringing the master's view up to date from the store (on_reload); new code
# needs `systemctl restart`.
preload_app = True  # and FEEDSVC_PRELOAD=1 in raw_env below

# gunicorn 27 opens a control socket by default; nothing here uses it.
control_socket_disable = True

accesslog = os.environ.get("FEEDSVC_ACCESS_LOG", "-")
# Combined log format plus the response time in milliseconds and the client
# address nginx saw (REMOTE_ADDR is nginx's unless FEEDSVC_TRUSTED_PROXIES is set).
access_log_format = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
                     '%(M)sms xff="%({x-forwarded-for}i)s"')
errorlog = "-"
loglevel = os.environ.get("FEEDSVC_LOG_LEVEL", "info")

# -- metrics across workers (prometheus-client multiprocess mode) -------------

#: Given, or one of this master's own (the same path when a HUP reads this file again).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
    tempfile.gettempdir(), f"feedsvc-metrics-{os.getpid()}")
_made_metrics_dir = None if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else _metrics_dir
# gunicorn sets raw_env in the master before it preloads the app, and with it
# prometheus-client, which reads the variable when it is imported.
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={_metrics_dir}", "FEEDSVC_PRELOAD=1"]
os.makedirs(_metrics_dir, exist_ok=True)  # the preloaded app opens its files in it


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """Before any worker forks: empty the metrics folder.

    prometheus-client's documentation asks for the folder to be emptied
    between runs, or counters of a previous run's processes would be summed in.
    """
    for stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(stale)


#: glibc's mallopt parameter for the most malloc arenas a process makes.
_M_ARENA_MAX = -8


def _two_arenas() -> None:
    """In each worker: at most two glibc malloc arenas.

    By default each gthread thread gets an arena of its own, and memory freed
    in one (a large render's temporaries) is not reused by the others nor
    given back: under a ?limit flood a worker's RSS grew by 1.9x what its
    caches counted, 1.3x with two arenas. Not glibc (musl, macOS): nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 2)


def _publisher(server):  # noqa: ANN001, ANN202
    """The preloaded feedsvc app's publisher and reloader (None, None for another app)."""
    extensions = getattr(server.app.wsgi(), "extensions", {})
    return extensions.get("feedsvc"), extensions.get("feedsvc.reloader")


def on_reload(server) -> None:  # noqa: ANN001
    """SIGHUP: catch the master's view up with the store before new workers fork from it."""
    publisher, _ = _publisher(server)
    if publisher is None:
        return
    try:
        publisher.follow()
        publisher.warm()  # new workers start with the site feeds rendered
    finally:
        publisher.before_fork()


def pre_fork(server, worker) -> None:  # noqa: ANN001
    """Objects loaded so far are never collected: forked workers then share their pages
    instead of copying each page the collector would touch."""
    gc.freeze()


def post_fork(server, worker) -> None:  # noqa: ANN001
    """In the new worker: two malloc arenas, its own connections and follow / sync thread."""
    _two_arenas()
    _, reloader = _publisher(server)
    if reloader is not None:
        reloader.ensure_running(until_loaded=True)
    purging = getattr(server.app.wsgi(), "extensions", {}).get("feedsvc.purge")
    if purging is not None:  # FEEDSVC_PURGE: this worker queues and may send purges
        purging.ensure_running()
    hub = getattr(server.app.wsgi(), "extensions", {}).get("feedsvc.hub")
    if hub is not None:  # the built-in WebSub hub's threads (FEEDSVC_HUB=builtin)
        hub.ensure_running()
    audience = getattr(server.app.wsgi(), "extensions", {}).get("feedsvc.audience")
    if audience is not None:  # the worker's flusher of subscriber counts
        audience.ensure_running()


def child_exit(server, worker) -> None:  # noqa: ANN001
    """A worker is gone: drop its live gauges (its counters stay in the sums)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker) -> None:  # noqa: ANN001
    """A worker stops cleanly: close its ledger, so the WAL is checkpointed into the file,
    and give the writer lease up, so that another worker takes over the folder at once."""
    from feedsvc.cli import gunicorn_worker_exit

    gunicorn_worker_exit(server, worker)


def on_exit(server) -> None:  # noqa: ANN001
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)
