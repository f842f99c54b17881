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
import fcntl
import gc
import glob
import os
import shutil
import signal
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


def _count(name: str, default: int) -> int:
    """A variable's whole number, 1 or more (unset or empty: ``default``).

    A bad one stops gunicorn with one line naming it: ``int()`` gave a
    traceback that did not, and FEEDSVC_WORKERS=0 a master with no worker
    that listened and answered nothing.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"{name}: expected a whole number, got {text!r}") from None
    if value < 1:
        raise SystemExit(f"{name}: expected 1 or more, got {value}")
    return value


def _addresses(name: str, default: str) -> list[str]:
    """Comma-separated ``host:port`` (``[::1]:8000``) or ``unix:/path`` addresses; a bad
    port stops gunicorn naming the variable (gunicorn's own message did not)."""
    addresses = [a.strip() for a in (os.environ.get(name) or default).split(",") if a.strip()]
    for address in addresses:
        if address.startswith(("unix:", "fd://")) or ":" not in address:
            continue  # no port: gunicorn's 8000
        host, _, port = address.rpartition(":")
        bare_ipv6 = ":" in host and not host.startswith("[")
        if bare_ipv6 or not port.isdigit() or int(port) > 65535:
            raise SystemExit(f"{name}: expected host:port with a port from 1 to 65535 "
                             f"([::1]:8000 for IPv6) or unix:/path, got {address!r}")
    return addresses


bind = _addresses("FEEDSVC_BIND", "127.0.0.1:8000")
workers = _count("FEEDSVC_WORKERS", 0) or default_workers(
    _cores(), _count("FEEDSVC_MAX_WORKERS", 8))
worker_class = "gthread"
threads = _count("FEEDSVC_THREADS", 4)

# A render takes milliseconds; a worker silent for this long is stuck.
timeout = _count("FEEDSVC_TIMEOUT", 30)
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
# bringing the master's view up to date from the store (on_reload). New code
# comes with USR2 (see "Restart with new code" below), without a gap too.
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
    """Before any worker forks: re-exec as ``-m gunicorn`` on USR2, empty the metrics folder.

    prometheus-client's documentation asks for the folder to be emptied
    between runs, or counters of a previous run's processes would be summed in;
    a master started by USR2 leaves it alone, as the old workers still count in it.
    """
    _reexec_as_module(server)
    if _OLD_MASTER in os.environ:
        return
    for stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(stale)


# -- restart with new code: USR2 --------------------------------------------------
#
# USR2 makes the master fork and exec a new master (new code, this file and
# the FEEDSVC_CONFIG file read again; the environment is the one the first
# master started with) that inherits the listening sockets. It loads the app
# while the old master and workers keep serving on the same sockets; when the
# last worker of its first batch is ready, that worker tells systemd the new
# master's pid and sends TERM to the old master, whose workers finish their
# requests and exit. A new master that fails to load exits with its error in
# the log, and the old one goes on serving as if nothing happened.

#: Set by gunicorn in a master started by USR2: the pid of the master that started it.
_OLD_MASTER = "GUNICORN_PID"


def _reexec_as_module(server) -> None:  # noqa: ANN001
    """Make USR2 run ``python -m gunicorn`` when this master was started that way.

    gunicorn re-execs ``sys.executable + sys.argv``; under ``-m gunicorn``
    argv[0] is ``.../gunicorn/__main__.py``, and a script's folder comes first
    on sys.path, so the new master's ``import http`` would find gunicorn's own
    ``http`` package and crash before it loads anything.
    """
    args = list(server.START_CTX.get("args") or [])
    if len(args) > 1 and os.path.basename(args[1]) == "__main__.py" \
            and os.path.basename(os.path.dirname(args[1])) == "gunicorn":
        server.START_CTX["args"] = [args[0], "-m", "gunicorn", *args[2:]]


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` from /proc (None when it is gone or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def when_ready(server) -> None:  # noqa: ANN001
    """In a master started by USR2: a tally its first workers append to when ready.

    An unlinked file inherited by every worker: appends of one short line are
    atomic, so exactly one worker finds its line to be the last one of the
    batch, however the workers' starts interleave. Kept on the arbiter, which
    outlives a HUP's new reading of this file.
    """
    old = os.environ.get(_OLD_MASTER)
    if old and not hasattr(server, "feedsvc_takeover"):
        tally, path = tempfile.mkstemp(prefix="feedsvc-usr2-")
        os.unlink(path)
        fcntl.fcntl(tally, fcntl.F_SETFL, fcntl.fcntl(tally, fcntl.F_GETFL) | os.O_APPEND)
        server.feedsvc_takeover = (int(old), tally, server.num_workers)
        server.log.info("Started by USR2 from master %s: it stops when %d workers are ready",
                        old, server.num_workers)


def post_worker_init(worker) -> None:  # noqa: ANN001
    """A worker is about to accept requests: the last of a USR2 batch stops the old master."""
    takeover = getattr(worker, "feedsvc_takeover", None)
    if takeover is None:
        return
    old, tally, batch = takeover
    os.write(tally, b"%d\n" % os.getpid())
    lines = os.pread(tally, 1 << 16, 0).split()
    if len(lines) != batch or lines[-1] != b"%d" % os.getpid():
        return  # not the last of the first batch (or a later replacement)
    if _parent_of(worker.ppid) != old:
        return  # the old master is gone already (stopped, or killed by hand)
    from gunicorn import systemd

    # Type=notify: systemd follows the new master, instead of stopping the
    # service when its main process, the old master, exits (NotifyAccess=all).
    systemd.sd_notify(f"MAINPID={worker.ppid}\nREADY=1\n"
                      f"STATUS=restarted (USR2): master {worker.ppid}", worker.log)
    worker.log.info("All %d workers of master %s are ready: stopping the old master %s",
                    batch, worker.ppid, old)
    with contextlib.suppress(ProcessLookupError):
        os.kill(old, signal.SIGTERM)  # graceful: its workers finish their requests


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
    from feedsvc.http import prepare

    try:
        publisher.follow()
        prepare(publisher.warm())  # new workers start with the site feeds rendered, gzipped
    finally:
        publisher.before_fork()


def pre_fork(server, worker) -> None:  # noqa: ANN001
    """Objects loaded so far are never collected: forked workers then share their pages
    instead of copying each page the collector would touch."""
    gc.freeze()


def post_fork(server, worker) -> None:  # noqa: ANN001
    """In the new worker: two malloc arenas, its own connections and follow / sync thread."""
    _two_arenas()
    worker.feedsvc_takeover = getattr(server, "feedsvc_takeover", None)
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
