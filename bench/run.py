"""feedsvc benchmark: every figure a ratio to a baseline measured in the same run.

    python bench/run.py --sizes 1000,10000            # about 6 minutes on 2 cores
    python bench/run.py --sizes 1000 --quick          # a smoke run, under 2 minutes
    python bench/run.py --sizes 1000,10000,100000     # adds case d (takes ~10 more minutes)

Prints the machine and one table row per case: the baseline and the result
(median of the rounds, min..max), their ratio (median of per-round ratios,
min..max), the target and whether the median meets it. The table is also
written to bench/results/latest.md (git-ignored). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import corpus

from feedsvc.collection import SITE_FEED, FeedRef, changed_feeds
from feedsvc.config import load_settings
from feedsvc.http import forms_of, gzip_form
from feedsvc.publisher import Publisher

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BASE_URL = "http://bench.example"
PACKAGES = ("flask", "werkzeug", "feedgen", "gunicorn", "lxml", "python-dateutil")
NA_DEPLOY = "n/a (needs deploy issue)"


# -- results ----------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the table: per-round baselines, results and their ratios."""

    what: str
    unit: str
    baseline: list[float]
    result: list[float]
    target: str = ""
    meets: Callable[[float], bool] | None = None  # applied to the median ratio (or result)
    absolute: bool = False  # no baseline: the target applies to the result itself
    speedup: bool = False  # the ratio is baseline / result ("x faster")
    notes: list[str] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        pairs = zip(self.result, self.baseline, strict=True)
        return [b / r if self.speedup else r / b for r, b in pairs if b and r]

    def cells(self) -> list[str]:
        if not self.result:
            missing = NA_DEPLOY if self.target else ""
            return [self.what, "", missing, "", self.target, "", "; ".join(self.notes)]
        figure = self.result if self.absolute else self.ratios
        met = "" if self.meets is None else ("yes" if self.meets(median(figure)) else "**NO**")
        return [
            self.what,
            "—" if self.absolute else spread(self.baseline, self.unit),
            spread(self.result, self.unit),
            "—" if self.absolute else spread(self.ratios, "x"),
            self.target,
            met,
            "; ".join(self.notes),
        ]


def median(values: list[float]) -> float:
    return statistics.median(values)


def number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "MB":
        return f"{value / 1e6:,.0f} MB"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value * 1e3:.1f} ms"
    if unit == "ms/article":
        return f"{value * 1e3:.2f} ms/article"
    return f"{value:g} {unit}"


def spread(values: list[float], unit: str) -> str:
    """``median (min..max)`` in the unit."""
    if len(values) == 1:
        return number(values[0], unit)
    low, high = (number(v, unit).split()[0] for v in (min(values), max(values)))
    return f"{number(median(values), unit)} ({low}..{high})"


def table(rows: list[Row]) -> str:
    head = ["what", "baseline", "result", "ratio", "target", "met?", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def machine(load_generator: str) -> str:
    """Cores, Python, package versions and the load generator, one line each."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "feedsvc", "wsgi.py"],
                           capture_output=True, text=True).stdout.split("\n")
    edits = f", uncommitted changes in {len([d for d in dirty if d])} file(s)" if any(dirty) else ""
    return "\n".join(
        [
            f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"feedsvc: commit {head.stdout.strip()}{edits}",
            f"machine: {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}",
            f"python: {platform.python_version()} ({platform.python_implementation()})",
            f"packages: {', '.join(versions)}",
            f"load generator: {load_generator}",
            f"nginx: {nginx_version()}",
            f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        ]
    )


def nginx_version() -> str:
    if shutil.which("nginx") is None:
        return "not installed"
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return out.stderr.strip().removeprefix("nginx version: ")


# -- baselines: the floor the machine allows ---------------------------------------------


def walk(root: Path, visit: Callable[[os.DirEntry[str]], int]) -> int:
    """Visit every non-hidden file under ``root`` with one scandir walk; sum the results."""
    total = 0
    stack = [os.fspath(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += visit(entry)
    return total


def read_bytes(entry: os.DirEntry[str]) -> int:
    with open(entry.path, "rb") as handle:
        return len(handle.read())


def stat_size(entry: os.DirEntry[str]) -> int:
    return entry.stat(follow_symlinks=False).st_size


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# -- gunicorn and wrk ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(slots=True)
class Server:
    """A gunicorn started by :func:`gunicorn`; ``started`` is just before its exec."""

    proc: subprocess.Popen[bytes]
    port: int
    started: float
    log: Path
    master: int = 0  # the new master after a USR2 restart (not our child); 0: proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def master_pid(self) -> int:
        return self.master or self.proc.pid

    def running(self) -> bool:
        if not self.master:
            return self.proc.poll() is None
        return running(self.master)

    def workers(self) -> list[int]:
        return children(self.master_pid)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc); none once it is gone."""
    try:
        return [int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def environ(pid: int) -> list[str]:
    """The environment ``pid`` was exec'd with, as ``NAME=value`` items (none if gone)."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie not yet reaped counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


def filled_ledger(articles: Path, folder: str) -> Path:
    """A ledger that already knows every article, as after the service's first start.

    The HTTP cases measure serving, not the first start: two workers racing to
    fill one empty ledger with 10,000 rows is case c's business (and has failed
    a worker with "database is locked" under load, see bench/README.md).
    """
    ledger = Path(folder) / "ledger.sqlite3"
    load_publisher(articles, ledger).close()
    return ledger


def feedsvc_env(articles: Path, ledger: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(
        FEEDSVC_ARTICLES_DIR=str(articles),
        FEEDSVC_LEDGER_PATH=str(ledger),
        FEEDSVC_BASE_URL=f"http://127.0.0.1:{port}",
    )
    return env


@contextlib.contextmanager
def gunicorn(app: str, workers: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``gunicorn app`` on 127.0.0.1, sync workers, no control socket; stopped on exit.

    ``app`` is ``wsgi:app`` (feedsvc, from the repository root) or
    ``hello:app`` (bench/hello.py): the same settings for both.
    """
    port = free_port()
    env = dict(env or os.environ)
    if app.startswith("wsgi:"):
        env["FEEDSVC_BASE_URL"] = f"http://127.0.0.1:{port}"
    chdir = ROOT if app.startswith("wsgi:") else BENCH
    cmd = [
        sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--no-control-socket", "--log-level", "warning",
        "--chdir", str(chdir), app,
    ]  # fmt: skip
    with tempfile.NamedTemporaryFile("wb", suffix=".log", delete=False) as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, started, Path(log.name))
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        text = server.log.read_text(errors="replace")
        server.log.unlink()
        if "Traceback" in text:
            print(f"gunicorn {app} logged an error:\n{text[-3000:]}", file=sys.stderr)


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def get(
    server: Server, path: str, headers: dict[str, str] | None = None, wait: float = 900
) -> Reply:
    """One complete GET, retrying while the port refuses (gunicorn not yet bound)."""
    deadline = time.perf_counter() + wait
    while True:
        if not server.running():
            raise RuntimeError("gunicorn exited:\n" + server.log.read_text(errors="replace"))
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=wait)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        except ConnectionRefusedError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.002)
        finally:
            conn.close()


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0].split(" Copyright")[0]


def wrk(url: str, seconds: float, connections: int, headers: dict[str, str]) -> float:
    """Requests/s from wrk (2 threads); raises if any response was not 2xx/3xx."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"wrk {url}: {bad.group(1)} bad responses\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"wrk {url}: no rate in output\n{out}")
    return float(found.group(1))


def _python_load(url: str, seconds: float, threads: int, headers: dict[str, str]) -> int:
    """One process of the fallback load generator: ``threads`` blocking clients."""
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.perf_counter() + seconds

    def client(_: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            conn.request("GET", parts.path or "/", headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status >= 400:
                raise RuntimeError(f"{url}: status {response.status}")
            done += 1
        return done

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(client, range(threads)))


def python_load(url: str, seconds: float, connections: int, headers: dict[str, str]) -> float:
    """Fallback when wrk is missing: 2 processes of connections/2 threads each."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        futures = [
            pool.submit(_python_load, url, seconds, connections // 2, headers) for _ in range(2)
        ]
        return sum(f.result() for f in futures) / seconds


# -- cases a and b: requests/s of an unchanged feed ----------------------------------------


def http_cases(articles: Path, args: argparse.Namespace, load: Callable[..., float]) -> list[Row]:
    """a. 200 gzip of /feed.atom and b. its 304, each against hello world."""
    gz = {"Accept-Encoding": "gzip"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        gunicorn("hello:app", 2) as hello,
        gunicorn("wsgi:app", 2, feedsvc_env(articles, filled_ledger(articles, tmp), 0)) as app,
    ):
        get(hello, "/")
        first = get(app, "/feed.atom", gz)
        entries = gzip.decompress(first.body).count(b"<entry>")
        etag = first.headers["ETag"]
        if first.status != 200 or first.headers.get("Content-Encoding") != "gzip" or entries != 50:
            raise RuntimeError(f"/feed.atom: {first.status} {first.headers}, {entries} entries")
        conditional = {**gz, "If-None-Match": etag}
        if get(app, "/feed.atom", conditional).status != 304:
            raise RuntimeError("/feed.atom with If-None-Match: the ETag did not answer 304")
        seconds, conns = args.seconds, args.connections
        for url, headers in ((hello.url, gz), (app.url + "/feed.atom", gz)):
            load(url + ("/" if url == hello.url else ""), 1, conns, headers)  # warm both workers
        a = Row(f"a. GET unchanged 50-entry feed, gzip, 200 ({articles.name})", "req/s", [], [],
                ">= 0.9x", lambda r: r >= 0.9,
                notes=[f"{len(first.body):,} B gzip body, 2 sync workers, {conns} conns"])
        b = Row("b. conditional GET answered 304", "req/s", [], [], ">= 0.95x",
                lambda r: r >= 0.95)
        for _ in range(args.rounds):
            before = load(hello.url + "/", seconds, conns, gz)
            full = load(app.url + "/feed.atom", seconds, conns, gz)
            not_modified = load(app.url + "/feed.atom", seconds, conns, conditional)
            after = load(hello.url + "/", seconds, conns, gz)
            base = (before + after) / 2  # bracketing runs cancel a linear drift of the noise
            a.baseline.append(base)
            a.result.append(full)
            b.baseline.append(base)
            b.result.append(not_modified)
        return [a, b]


# -- case i: the cost of counting subscribers on the fast path ----------------------------


def cpu_seconds(server: Server) -> float:
    """User + system CPU time its workers have used so far (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in server.workers():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


def counting_in_process(articles: Path, ledger: Path, rounds: int = 20,
                        calls: int = 2000) -> tuple[float, float]:
    """Thread CPU seconds per fast-path WSGI call of /feed.atom: (counting off, on).

    One app, its counting observer detached and attached in alternating blocks
    of ``calls``: no sockets, no other process, no reloader thread, so the
    difference is the counting's own cost, which wrk's figures on this shared
    machine are too noisy to show.
    """
    from feedsvc.web import create_app, shutdown

    settings = load_settings({"articles_dir": str(articles), "ledger_path": str(ledger),
                              "base_url": BASE_URL, "reload_interval": 0}, environ={})
    app = create_app(settings)
    fast = app.extensions["feedsvc.fastpath"]
    counting = list(fast.feed_observers)
    if not counting:
        raise RuntimeError("no counting observer on the fast path")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/feed.atom", "QUERY_STRING": "",
               "SERVER_NAME": "bench.example", "SERVER_PORT": "80", "HTTP_HOST": "bench.example",
               "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
               "HTTP_ACCEPT_ENCODING": "gzip", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_USER_AGENT": "newsboat/2.36.0 (Linux x86_64)"}
    statuses: list[str] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        statuses.append(status)

    def block() -> float:
        started = time.thread_time()
        for _ in range(calls):
            fast(dict(environ), start_response)
        return (time.thread_time() - started) / calls

    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for on in (False, True) * 2:  # warm both
            fast.feed_observers[:] = counting if on else []
            block()
        for _ in range(rounds):
            for on in (False, True):
                fast.feed_observers[:] = counting if on else []
                times[on].append(block())
    finally:
        shutdown(app)
    if set(statuses) != {"200 OK"}:
        raise RuntimeError(f"/feed.atom in process: {set(statuses)}")
    return median(times[False]), median(times[True])


def counting_case(articles: Path, args: argparse.Namespace, load: Callable[..., float]) -> Row:
    """i. fast-path requests/s of /feed.atom with subscriber counting on, against off.

    On a shared machine requests/s move by tens of per cent from one run to the
    next with what else runs; the workers' CPU time per request moves much less,
    so it is reported too: the counting's cost is the difference between the two.
    """
    headers = {"Accept-Encoding": "gzip", "User-Agent": "newsboat/2.36.0 (Linux x86_64)"}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = filled_ledger(articles, tmp)
        off_env = {**feedsvc_env(articles, ledger, 0), "FEEDSVC_COUNT_SUBSCRIBERS": "0"}
        with (
            gunicorn("wsgi:app", 2, off_env) as off,
            gunicorn("wsgi:app", 2, feedsvc_env(articles, ledger, 0)) as on,
        ):
            for server in (off, on):
                if get(server, "/feed.atom", headers).status != 200:
                    raise RuntimeError("/feed.atom did not answer 200")
                load(server.url + "/feed.atom", 1, args.connections, headers)  # warm up
            row = Row("i. fast path with subscriber counting on vs off", "req/s", [], [],
                      ">= 0.95x", lambda r: r >= 0.95)
            cpu: dict[str, list[float]] = {"off": [], "on": []}

            def run(name: str, server: Server) -> float:
                used = cpu_seconds(server)
                rate = load(server.url + "/feed.atom", args.seconds, args.connections, headers)
                cpu[name].append((cpu_seconds(server) - used) / (rate * args.seconds))
                return rate

            for _ in range(args.rounds):
                before = run("off", off)
                row.result.append(run("on", on))
                after = run("off", off)
                row.baseline.append((before + after) / 2)
            per_request = {k: median(v) * 1e6 for k, v in cpu.items()}
        # After the servers stopped: the in-process figure has the machine to itself.
        wsgi_off, wsgi_on = counting_in_process(articles, ledger)
    row.notes = [
        "GET /feed.atom gzip, a reader's User-Agent, 2 sync workers, "
        f"{args.connections} conns; counts flushed every 5 s; workers' CPU per request "
        f"(median): off {per_request['off']:.0f} µs, on {per_request['on']:.0f} µs "
        f"({per_request['on'] / per_request['off']:.3f}x); in process, thread CPU per "
        f"fast-path WSGI call (median of 20 alternating blocks of 2,000): off "
        f"{wsgi_off * 1e6:.1f} µs, on {wsgi_on * 1e6:.1f} µs "
        f"(+{(wsgi_on - wsgi_off) * 1e6:.1f} µs)"]
    return row


# -- cases c and d: cold start ------------------------------------------------------------


def boot(app: str, env: dict[str, str] | None, path: str) -> tuple[float, dict[str, int]]:
    """Seconds from exec of a 1-worker gunicorn to the first complete 200 of ``path``.

    For feedsvc also its /healthz counts and the worker's peak RSS (VmHWM).
    """
    with gunicorn(app, 1, env) as server:
        reply = get(server, path, {"Accept-Encoding": "gzip"})
        elapsed = time.perf_counter() - server.started
        if reply.status != 200:
            raise RuntimeError(f"{app} {path}: status {reply.status}")
        facts: dict[str, int] = {}
        if app.startswith("wsgi:"):
            health = json.loads(get(server, "/healthz").body)
            status = Path(f"/proc/{health['worker']}/status").read_text()
            peak = re.search(r"VmHWM:\s+(\d+) kB", status)
            facts = {
                "peak_rss": int(peak.group(1)) * 1024 if peak else 0,
                "published": health["published"],
                "rejected": health["rejected"],
            }
        return elapsed, facts


def cold_start(articles: Path, n: int, rounds: int) -> list[Row]:
    """c/d. gunicorn boot to the first site feed, minus hello world's boot, vs a cat loop."""
    label = "d" if n >= 100_000 else "c"
    target = n in (10_000, 100_000)
    row = Row(f"{label}. cold start, {n:,} articles, empty ledger", "s", [], [],
              "<= 4x" if target else "(info)", (lambda r: r <= 4) if target else None)
    files = walk(articles, lambda e: 1)
    disk = walk(articles, stat_size)
    rss = Row(f"{label}. peak worker RSS, {n:,} articles", "MB", [], [],
              "<= 2x" if n >= 100_000 else "(info)", (lambda r: r <= 2) if n >= 100_000 else None)
    walk(articles, read_bytes)  # warm the page cache: every figure here is warm-cache
    hello_boots, feed_boots = [], []
    for _ in range(rounds):
        cat = timed(lambda: walk(articles, read_bytes))
        hello_boot, _ = boot("hello:app", None, "/")
        with tempfile.TemporaryDirectory() as tmp:
            env = feedsvc_env(articles, Path(tmp) / "ledger.sqlite3", 0)
            env["FEEDSVC_RELOAD_INTERVAL"] = "0"
            feed_boot, facts = boot("wsgi:app", env, "/feed.atom")
        if facts["rejected"] or facts["published"] != files:
            raise RuntimeError(f"cold start published {facts['published']} of {files} files")
        hello_boots.append(hello_boot)
        feed_boots.append(feed_boot)
        row.baseline.append(cat)
        row.result.append(feed_boot - hello_boot)
        rss.baseline.append(disk)
        rss.result.append(facts["peak_rss"])
    row.notes.append(
        f"0 rejected; gunicorn to first feed {spread(feed_boots, 's')}, hello world boot "
        f"{spread(hello_boots, 's')}; baseline: scandir + read() of {files:,} files, warm cache"
    )
    rss.notes.append(f"baseline: corpus bytes on disk ({files:,} files)")
    return [row, rss]


# -- cases e and f: in-process rescan and edit ----------------------------------------------


def load_publisher(articles: Path, ledger: Path) -> Publisher:
    settings = load_settings(
        {"articles_dir": str(articles), "base_url": BASE_URL, "reload_interval": 0}, environ={}
    )
    publisher = Publisher(settings, ledger, settle_seconds=0.0)
    publisher.refresh()
    return publisher


def rescan(publisher: Publisher, articles: Path, n: int, rounds: int) -> Row:
    """e. refresh() with nothing changed vs a scandir + stat walk of the same folder."""
    target = n == 10_000
    row = Row(f"e. rescan, nothing changed, {n:,} articles", "ms", [], [],
              "<= 2x" if target else "(info)", (lambda r: r <= 2) if target else None)
    reads = 0
    for _ in range(rounds):
        row.baseline.append(timed(lambda: walk(articles, stat_size)))
        started = time.perf_counter()
        report = publisher.refresh()
        row.result.append(time.perf_counter() - started)
        reads += report.read
        if report.changed:
            raise RuntimeError("rescan of an unchanged folder reported a change")
    row.notes.append(f"files read: {reads}; baseline: os.scandir + stat walk")
    return row


def editable(publisher: Publisher, articles: Path) -> tuple[Path, bytes]:
    """The newest entry whose file is plain LF text without front matter, and its bytes."""
    for entry in publisher.collection.entries:
        path = articles / entry.article.path
        data = path.read_bytes()
        if not data.startswith((b"---", b"\xef")) and b"\r" not in data:
            return path, data
    raise RuntimeError("no editable article")


def edit(publisher: Publisher, articles: Path, n: int, rounds: int) -> Row:
    """f. one edit: refresh() then feed() of every affected feed in 3 formats, in ms.

    The edited file is the newest article, so it is in the first page of every
    feed it belongs to; each round inserts a different sentence at the start of
    its body, and the file is restored (bytes and mtime) at the end.
    """
    path, original = editable(publisher, articles)
    entry = next(e for e in publisher.collection.entries if articles / e.article.path == path)
    affected = {SITE_FEED}
    affected |= {FeedRef("topic", t.slug) for t in entry.topics}
    affected |= {FeedRef("author", a.slug) for a in entry.authors}
    keys = [(ref, fmt) for ref in sorted(affected) for fmt in ("atom", "rss", "json")]
    stat = path.stat()
    target = n == 10_000
    row = Row(f"f. one edit among {n:,}: from detection to new ETags", "ms", [], [],
              "<= 50 ms" if target else "(info)", (lambda r: r <= 0.05) if target else None,
              absolute=True)
    reads, renders, changed = set(), set(), set()
    with_listing: list[float] = []
    headline, _, rest = original.partition(b"\n\n")
    header, _, body = rest.partition(b"\n\n")
    try:
        for k in range(rounds):
            etags = {key: forms_of(publisher.feed(*key, BASE_URL)).etag for key in keys}
            sentence = f"Editors revised this story ({k + 1}). ".encode()
            path.write_bytes(b"\n\n".join([headline, header, sentence + body]))
            old = publisher.collection
            before = publisher.renders
            gc.collect()
            started = time.perf_counter()
            report = publisher.refresh()
            fresh = {key: forms_of(publisher.feed(*key, BASE_URL)).etag for key in keys}
            total = time.perf_counter() - started
            # Detection is the rescan's listing finding the new signature (its cost
            # is case e); the target is from then on. Both are reported.
            row.result.append(total - report.list_seconds)
            with_listing.append(total)
            row.baseline.append(0.0)
            if any(fresh[key] == etags[key] for key in keys):
                raise RuntimeError("an affected feed kept its ETag after the edit")
            reads.add(report.read)
            renders.add(publisher.renders - before)
            changed.add(len(changed_feeds(old, publisher.collection)))
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        publisher.refresh()
    row.notes.append(
        f"files read: {'/'.join(map(str, sorted(reads)))}; documents rendered: "
        f"{'/'.join(map(str, sorted(renders)))} ({len(affected)} affected feeds: site, "
        f"{len(entry.topics)} topics, {len(entry.authors)} author; x 3 formats); "
        f"feeds whose version changed: {'/'.join(map(str, sorted(changed)))}; "
        f"including the rescan that detects it: {1000 * statistics.median(with_listing):.1f} ms "
        f"({1000 * min(with_listing):.1f}..{1000 * max(with_listing):.1f})"
    )
    return row


def in_process(articles: Path, n: int, rounds: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        publisher = load_publisher(articles, Path(tmp) / "ledger.sqlite3")
        try:
            return [rescan(publisher, articles, n, rounds), edit(publisher, articles, n, rounds)]
        finally:
            publisher.close()


# -- case h: the store (restart, first import, memory, reload gap, edit) -------------------


def pss(pid: int) -> int:
    """Proportional set size of one process in bytes: shared pages count once overall."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else 0


@contextlib.contextmanager
def shipped_gunicorn(app: str, workers: int, env: dict[str, str]) -> Iterator[Server]:
    """``gunicorn -c deploy/gunicorn.conf.py app``: the shipped settings (gthread, preload)."""
    port = free_port()
    env = {**env, "FEEDSVC_BIND": f"127.0.0.1:{port}", "FEEDSVC_WORKERS": str(workers),
           "FEEDSVC_LOG_LEVEL": "warning", "FEEDSVC_ACCESS_LOG": "/dev/null"}
    if app.startswith("wsgi:"):
        env["FEEDSVC_BASE_URL"] = f"http://127.0.0.1:{port}"
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
           "--chdir", str(ROOT if app.startswith("wsgi:") else BENCH), app]
    with tempfile.NamedTemporaryFile("wb", suffix=".log", delete=False) as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    server = Server(proc, port, started, Path(log.name))
    try:
        yield server
    finally:
        if server.master and running(server.master):  # restarted by USR2: the new master
            os.kill(server.master, signal.SIGTERM)
            deadline = time.perf_counter() + 60
            while running(server.master) and time.perf_counter() < deadline:
                time.sleep(0.05)
            if running(server.master):
                os.kill(server.master, signal.SIGKILL)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        text = server.log.read_text(errors="replace")
        server.log.unlink()
        if "Traceback" in text:
            print(f"gunicorn {app} logged an error:\n{text[-3000:]}", file=sys.stderr)


def first_feed(server: Server) -> float:
    """Seconds from exec to the first complete 200 of /feed.atom (503s while importing)."""
    while True:
        reply = get(server, "/feed.atom", {"Accept-Encoding": "gzip"})
        if reply.status == 200:
            return time.perf_counter() - server.started
        if reply.status != 503:
            raise RuntimeError(f"/feed.atom: status {reply.status}")
        time.sleep(0.01)


def healths(server: Server, count: int = 40) -> dict[int, dict]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda _: get(server, "/healthz"), range(count)))
    return {body["worker"]: body for r in replies if r.status == 200
            for body in [json.loads(r.body)]}


def store_cases(articles: Path, n: int, rounds: int) -> list[Row]:
    """h. The store under the shipped gunicorn settings (5 workers, preload_app)."""
    targeted = n in (10_000, 100_000)
    workers = 5
    restart = Row(f"h. restart, filled store, {workers} workers, {n:,} articles", "s", [], [],
                  "<= 4x" if targeted else "(info)", (lambda r: r <= 4) if targeted else None)
    first = Row(f"h. first import, {workers} workers, {n:,} articles", "s", [], [],
                "<= 10x" if targeted else "(info)", (lambda r: r <= 10) if targeted else None)
    memory = Row(f"h. summed worker PSS, {workers} workers, {n:,} articles", "MB", [], [],
                 "<= 1.5x" if targeted else "(info)",
                 (lambda r: r <= 1.5) if targeted else None)
    gap = Row(f"h. longest gap during SIGHUP under polling, {n:,} articles", "s", [], [],
              "<= 0.5 s, 0 failed" if targeted else "(info)",
              (lambda r: r <= 0.5) if targeted else None, absolute=True)
    restart_gap_row = Row(f"h. longest gap during a restart (USR2) under polling, {n:,} articles",
                          "s", [], [], "<= 0.5 s, 0 failed" if targeted else "(info)",
                          (lambda r: r <= 0.5) if targeted else None, absolute=True)
    edit_row = Row(f"h. one edit among {n:,}: file closed to new ETags in every worker", "ms",
                   [], [], "<= 50 ms" if targeted else "(info)",
                   (lambda r: r <= 0.05) if targeted else None, absolute=True)
    files = walk(articles, lambda e: 1)
    disk = walk(articles, stat_size)
    walk(articles, read_bytes)
    hellos, imports, restarts = [], [], []
    for k in range(rounds):
        cat = timed(lambda: walk(articles, read_bytes))
        with shipped_gunicorn("hello:app", workers, dict(os.environ)) as hello:
            reply = get(hello, "/")
            hello_boot = time.perf_counter() - hello.started
            if reply.status != 200:
                raise RuntimeError("hello world did not answer")
        hellos.append(hello_boot)
        with tempfile.TemporaryDirectory() as tmp:
            env = feedsvc_env(articles, Path(tmp) / "ledger.sqlite3", 0)
            with shipped_gunicorn("wsgi:app", workers, env) as server:
                imported = first_feed(server)
                deadline = time.perf_counter() + 120  # the other workers load the view too
                while True:
                    health = healths(server)
                    if (len(health) == workers and all(h["loaded"] for h in health.values())) \
                            or time.perf_counter() > deadline:
                        break
                    time.sleep(0.1)
                if any(h["published"] != files or h["rejected"] for h in health.values()):
                    raise RuntimeError(f"first import published {health}")
            imports.append(imported)
            first.baseline.append(cat)
            first.result.append(imported - hello_boot)
            with shipped_gunicorn("wsgi:app", workers, env) as server:
                restarted = first_feed(server)
                restarts.append(restarted)
                restart.baseline.append(cat)
                restart.result.append(restarted - hello_boot)
                time.sleep(1.0)  # every worker up, the writer's first rescan done
                pids = server.workers()
                for path in ("/feed.atom", "/feed.rss", "/feed.json", "/", "/topics/"):
                    for _ in range(workers * 2):
                        get(server, path, {"Accept-Encoding": "gzip"})
                memory.baseline.append(disk)
                memory.result.append(sum(pss(pid) for pid in pids))
                if k == 0:
                    gap.result.append(reload_gap(server, gap))
                    # After the reloads a new worker takes the writer lease and
                    # starts watching the folder: edits are measured from then on.
                    deadline = time.perf_counter() + 60
                    while not any(h.get("watching") for h in healths(server).values()) \
                            and time.perf_counter() < deadline:
                        time.sleep(0.1)
                    gap.baseline.append(0.0)
                    ledger = Path(tmp) / "ledger.sqlite3"
                    edit_row.result.extend(edit_over_http(server, articles, ledger, workers, 5))
                    edit_row.baseline.extend([0.0] * (len(edit_row.result)))
                    restart_gap_row.result.append(restart_gap(server, restart_gap_row))
                    restart_gap_row.baseline.append(0.0)
    first.notes.append(f"gunicorn to first feed {spread(imports, 's')}, hello world boot "
                       f"{spread(hellos, 's')} (same settings); baseline: scandir + read()")
    restart.notes.append(f"gunicorn to first feed {spread(restarts, 's')}; files read 0")
    memory.notes.append(f"baseline: corpus bytes on disk ({files:,} files); PSS from "
                        "/proc/<pid>/smaps_rollup after serving 5 documents")
    return [restart, first, memory, gap, restart_gap_row, edit_row]


def polled(server: Server, action: Callable[[], object]) -> list[tuple[float, int]]:
    """(end time, status) of every /feed.atom request 4 polling clients made while
    ``action`` ran, from 1 s before it; status 0 for a refused or reset connection."""
    import threading

    done: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                status = get(server, "/feed.atom", wait=10).status
            except OSError:
                status = 0
            done.append((time.perf_counter(), status))

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        action()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return done


def longest_gap(done: list[tuple[float, int]], row: Row, what: str) -> float:
    """The longest time between two 200s; any other answer fails the row."""
    oks = sorted(t for t, s in done if s == 200)
    failed = sum(1 for _, s in done if s != 200)
    row.notes.append(f"{len(done)} requests, {failed} failed (not 200), 4 polling clients, {what}")
    if failed:
        row.meets = lambda r: False
    return max(b - a for a, b in zip(oks, oks[1:], strict=False))


def reload_gap(server: Server, row: Row) -> float:
    """The longest time with no 200 on /feed.atom while the master gets two SIGHUPs."""

    def hups() -> None:
        for _ in range(2):
            os.kill(server.master_pid, signal.SIGHUP)
            time.sleep(3.0)

    return longest_gap(polled(server, hups), row, "2 SIGHUPs 3 s apart")


def restart_gap(server: Server, row: Row) -> float:
    """The longest time with no 200 on /feed.atom across a restart with USR2: from the
    signal through the old master's exit to every answering worker being the new
    master's, and 1 s more. ``server.master`` is the new master afterwards."""
    took: list[float] = []

    def usr2() -> None:
        old = server.master_pid
        signalled = time.perf_counter()
        os.kill(old, signal.SIGUSR2)
        deadline = signalled + 300
        new = 0
        while not new:  # the one child exec'd with GUNICORN_PID, gunicorn's mark of USR2
            new = next((c for c in children(old) if f"GUNICORN_PID={old}" in environ(c)), 0)
            if time.perf_counter() > deadline:
                raise RuntimeError("USR2: no new master")
            time.sleep(0.01)
        server.master = new  # get() now checks that one is running
        while running(old):
            if not running(new) or time.perf_counter() > deadline:
                raise RuntimeError("USR2: the new master failed:\n" + server.log.read_text())
            time.sleep(0.01)
        took.append(time.perf_counter() - signalled)
        while not set(healths(server)) <= set(children(new)):
            if time.perf_counter() > deadline:
                raise RuntimeError("USR2: the new master's workers do not answer")
            time.sleep(0.05)
        time.sleep(1.0)

    gap = longest_gap(polled(server, usr2), row, "1 USR2")
    row.notes.append(f"USR2 to the old master's exit {took[0]:.2f} s")
    return gap


def edit_over_http(server: Server, articles: Path, ledger: Path, workers: int,
                   rounds: int) -> list[float]:
    """Seconds from closing an edited file to every worker applying it, with new ETags.

    The edited file is the one first seen last (so on the first page of the site
    feed); each round prepends a different sentence to its body.
    """
    import sqlite3

    with sqlite3.connect(ledger) as conn:
        (rel,) = conn.execute("SELECT path FROM articles ORDER BY first_seen DESC LIMIT 1"
                              ).fetchone()
    path = articles / rel
    original, stat = path.read_bytes(), path.stat()
    urls = ["/feed.atom", "/feed.rss", "/feed.json"]
    results: list[float] = []
    seen: list[float] = []
    try:
        for k in range(rounds):
            before = {u: get(server, u).headers.get("ETag") for u in urls}
            seq = max(h["store_seq"] for h in healths(server).values())
            headline, _, rest = original.partition(b"\n\n")
            header, _, body = rest.partition(b"\n\n")
            sentence = f"Editors revised this story ({k + 1}). ".encode()
            with open(path, "wb") as handle:
                handle.write(b"\n\n".join([headline, header, sentence + body]))
            closed, started = time.time(), time.perf_counter()
            while True:
                health = healths(server, 3 * workers)
                if len(health) == workers and all(h["store_seq"] > seq for h in health.values()):
                    break
                if time.perf_counter() - started > 10:
                    raise RuntimeError("the edit did not reach every worker in 10 s")
            after = {u: get(server, u).headers.get("ETag") for u in urls}
            # When the last worker applied it (its own clock, the same host), not when
            # this loop, polling 15 requests at a time, happened to see it.
            results.append(max(h["applied_at"] for h in health.values()) - closed)
            seen.append(time.perf_counter() - started)
            if any(after[u] == before[u] for u in urls):
                raise RuntimeError("a feed kept its ETag after the edit")
            time.sleep(0.3)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    print(f"edit: seen by the polling loop after {spread(seen, 's')}", flush=True)
    return results


# -- case p: the store on PostgreSQL, as a ratio to the same run on SQLite -----------------


def newest_path(url: str) -> str:
    """The file first seen last (on the site feed's first page), from either backend."""
    from feedsvc.sql import open_database

    db = open_database(url)
    try:
        with db.transaction() as tx:
            row = tx.one("SELECT path FROM articles ORDER BY first_seen DESC, path LIMIT 1")
    finally:
        db.close()
    assert row is not None
    return row[0]


def edit_every_host(servers: list[Server], path: Path, workers: int, rounds: int
                    ) -> list[float]:
    """Seconds from closing an edited file to new ETags from every worker of every host."""
    original, stat = path.read_bytes(), path.stat()
    results = []
    try:
        for k in range(rounds):
            before = {(s.port, u): get(s, u).headers.get("ETag")
                      for s in servers for u in ("/feed.atom", "/feed.json")}
            seqs = {s.port: max(h["store_seq"] for h in healths(s).values()) for s in servers}
            headline, _, rest = original.partition(b"\n\n")
            header, _, body = rest.partition(b"\n\n")
            sentence = f"Editors revised this story again ({k + 1}). ".encode()
            with open(path, "wb") as handle:
                handle.write(b"\n\n".join([headline, header, sentence + body]))
            closed = time.perf_counter()
            while True:
                done = True
                for s in servers:
                    health = healths(s, 3 * workers)
                    done &= len(health) == workers and all(
                        h["store_seq"] > seqs[s.port] for h in health.values())
                if done:
                    break
                if time.perf_counter() - closed > 10:
                    raise RuntimeError("the edit did not reach every host in 10 s")
            results.append(time.perf_counter() - closed)
            after = {(s.port, u): get(s, u).headers.get("ETag")
                     for s in servers for u in ("/feed.atom", "/feed.json")}
            if any(after[key] == before[key] for key in after):
                raise RuntimeError("a feed kept its ETag after the edit")
            time.sleep(0.3)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return results


def postgres_cases(articles: Path, n: int, rounds: int, args: argparse.Namespace,
                   load: Callable[..., float]) -> list[Row]:
    """p. PostgreSQL (tests/pg_harness.py's server) against SQLite, same corpus, same run."""
    sys.path.insert(0, str(ROOT))
    from tests.pg_harness import destroy, pg_bin, start_postgres

    targeted = n in (10_000, 100_000)
    workers = 3
    restart = Row(f"p. restart on PostgreSQL vs SQLite, {n:,} articles", "s", [], [], "(info)")
    first = Row(f"p. first import on PostgreSQL vs SQLite, {n:,} articles", "s", [], [],
                "(info)")
    warm = Row(f"p. /feed.atom req/s, warm, PostgreSQL vs SQLite, {n:,} articles", "req/s",
               [], [], "~1x" if targeted else "(info)",
               (lambda r: r >= 0.9) if targeted else None)
    edit_row = Row(f"p. one edit to new ETags on every host: 2 PostgreSQL hosts vs 1 SQLite "
                   f"host, {n:,} articles", "ms", [], [], "(info)")
    if pg_bin() is None:
        return [not_available(restart.what, "(info)", "PostgreSQL (apt-get install postgresql)")]
    server = start_postgres()
    try:
        for k in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                ledger = Path(tmp) / "ledger.sqlite3"
                url = server.create_database(f"bench_{n}_{k}")
                sqlite_env = feedsvc_env(articles, ledger, 0)
                pg_env = {**sqlite_env, "FEEDSVC_DATABASE_URL": url}
                pg_env.pop("FEEDSVC_LEDGER_PATH")
                timings = {}
                for name, env in (("sqlite", sqlite_env), ("pg", pg_env)):
                    with shipped_gunicorn("wsgi:app", workers, env) as one:
                        imported = first_feed(one)
                    with shipped_gunicorn("wsgi:app", workers, env) as one:
                        restarted = first_feed(one)
                        time.sleep(1.0)
                        rate = load(f"http://127.0.0.1:{one.port}/feed.atom", args.seconds,
                                    args.connections, {"Accept-Encoding": "gzip"})
                    timings[name] = (imported, restarted, rate)
                first.baseline.append(timings["sqlite"][0])
                first.result.append(timings["pg"][0])
                restart.baseline.append(timings["sqlite"][1])
                restart.result.append(timings["pg"][1])
                warm.baseline.append(timings["sqlite"][2])
                warm.result.append(timings["pg"][2])
                if k == 0:
                    rel = newest_path(f"sqlite:///{ledger}")
                    with shipped_gunicorn("wsgi:app", workers, sqlite_env) as one:
                        first_feed(one)
                        time.sleep(1.0)
                        edit_row.baseline.extend(edit_every_host([one], articles / rel,
                                                                 workers, 5))
                    copy = Path(tmp) / "copy"
                    shutil.copytree(articles, copy)
                    copy_env = {**pg_env, "FEEDSVC_ARTICLES_DIR": str(copy)}
                    # Host A first, so that its worker is the writer: the store was
                    # filled from A's folder, and a writer on B's copy (other inodes)
                    # would first re-read every file, which is not the edit measured.
                    with shipped_gunicorn("wsgi:app", workers, pg_env) as a:
                        first_feed(a)
                        time.sleep(1.0)
                        with shipped_gunicorn("wsgi:app", workers, copy_env) as b:
                            first_feed(b)
                            time.sleep(1.0)
                            writer_dir = articles if any(
                                h["writer"] for h in healths(a).values()) else copy
                            edit_row.result.extend(edit_every_host(
                                [a, b], writer_dir / newest_path(url), workers, 5))
    finally:
        destroy(server)
    warm.speedup = False
    warm.notes.append("ratio = PostgreSQL / SQLite requests/s; serving reads no database")
    first.notes.append(f"{workers} workers, shipped gunicorn settings")
    return [restart, first, warm, edit_row]


# -- case g: nginx and static builds (the deploy issue's files) --------------------------

NGINX_MAIN = """{modules}daemon off;
user root;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/feedsvc.conf;
    server {{
        listen 127.0.0.1:{static_port};
        access_log {tmp}/static.access.log;
        gzip off;
        gzip_static on;
        root {tmp}/static;
    }}
}}
"""
NGINX_SITE = ROOT / "deploy" / "nginx" / "feedsvc.conf"


def nginx_modules() -> str:
    """Debian's enabled modules (the shipped config's proxy_cache_purge), as the tests load them."""
    sys.path.insert(0, str(ROOT))
    from tests.deploy_harness import nginx_modules as modules

    return modules()


def site_conf(text: str, upstream: int, port: int, tmp: Path) -> str:
    """The shipped site file with its host-specific lines pointed at ``tmp`` and our ports."""
    rules = [
        (r"server 127\.0\.0\.1:\d+;", f"server 127.0.0.1:{upstream};"),
        (r"proxy_cache_path \S+", f"proxy_cache_path {tmp}/cache"),
        (r"listen 80;", f"listen 127.0.0.1:{port};"),
        (r"listen \[::\]:80;", ""),
        (r"access_log /\S+;", f"access_log {tmp}/feedsvc.access.log;"),
        # The catch-all server (444 to unknown hosts) on a socket nobody asks: the
        # benchmark's requests name 127.0.0.1, which only our port's server must take.
        (r"listen 80 default_server;", f"listen unix:{tmp}/default.sock default_server;"),
        (r"listen \[::\]:80 default_server;", ""),
    ]
    for pattern, replacement in rules:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise RuntimeError(f"{NGINX_SITE}: {pattern!r} found {count} times, expected once")
    return text


def nginx_case(articles: Path, args: argparse.Namespace, load: Callable[..., float]) -> Row:
    """g. /feed.atom (gzip) from nginx's proxy_cache vs the same bytes as a static file."""
    gz = {"Accept-Encoding": "gzip"}
    row = Row(f"g. feed via shipped nginx proxy_cache vs nginx static file ({articles.name})",
              "req/s", [], [], ">= 0.8x", lambda r: r >= 0.8)
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        gunicorn("wsgi:app", 2, feedsvc_env(articles, filled_ledger(articles, tmp_name), 0)) as app,
    ):
        tmp = Path(tmp_name)
        plain, packed = get(app, "/feed.atom"), get(app, "/feed.atom", gz)
        (tmp / "static").mkdir()
        (tmp / "static" / "feed.atom").write_bytes(plain.body)
        (tmp / "static" / "feed.atom.gz").write_bytes(packed.body)
        proxy, static = free_port(), free_port()
        (tmp / "feedsvc.conf").write_text(site_conf(NGINX_SITE.read_text(), app.port, proxy, tmp))
        (tmp / "nginx.conf").write_text(NGINX_MAIN.format(tmp=tmp, static_port=static,
                                                          modules=nginx_modules()))
        log = (tmp / "nginx.out").open("wb")
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            cached = Server(nginx, proxy, 0.0, tmp / "nginx.out")
            files = Server(nginx, static, 0.0, tmp / "nginx.out")
            get(cached, "/feed.atom", gz)  # MISS: now cached
            hit, same = get(cached, "/feed.atom", gz), get(files, "/feed.atom", gz)
            if hit.headers.get("X-Cache-Status") != "HIT" or hit.body != same.body:
                raise RuntimeError(f"nginx: not a cache HIT or other bytes: {hit.headers}")
            for server in (cached, files):
                load(server.url + "/feed.atom", 1, args.connections, gz)
            for _ in range(args.rounds):
                before = load(files.url + "/feed.atom", args.seconds, args.connections, gz)
                row.result.append(load(cached.url + "/feed.atom", args.seconds,
                                       args.connections, gz))
                after = load(files.url + "/feed.atom", args.seconds, args.connections, gz)
                row.baseline.append((before + after) / 2)
        finally:
            nginx.terminate()
            nginx.wait(timeout=30)
            log.close()
    row.notes.append(f"{len(packed.body):,} B gzip body, cache HIT, nginx 2 workers, keep-alive")
    return row


PELICAN_VENV = BENCH / "corpus-pelican-venv"
FEEDSVC_BUILD = [sys.executable, "-m", "feedsvc.cli", "build"]
PELICAN_CONF = """SITENAME = "bench"
SITEURL = "http://bench.example"
FEED_DOMAIN = SITEURL
TIMEZONE = "UTC"
DEFAULT_LANG = "en"
DEFAULT_PAGINATION = 50
LOAD_CONTENT_CACHE = False
CACHE_CONTENT = False
FEED_ALL_ATOM = "feeds/all.atom.xml"
FEED_ALL_RSS = "feeds/all.rss.xml"
CATEGORY_FEED_ATOM = "feeds/category/{slug}.atom.xml"
CATEGORY_FEED_RSS = "feeds/category/{slug}.rss.xml"
AUTHOR_FEED_ATOM = "feeds/author/{slug}.atom.xml"
AUTHOR_FEED_RSS = "feeds/author/{slug}.rss.xml"
TAG_FEED_ATOM = "feeds/tag/{slug}.atom.xml"
TAG_FEED_RSS = "feeds/tag/{slug}.rss.xml"
"""


def pelican() -> Path:
    """The pelican command of bench/corpus-pelican-venv, made (pip) on first use."""
    command = PELICAN_VENV / "bin" / "pelican"
    if not command.exists():
        print(f"installing Pelican into {PELICAN_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PELICAN_VENV)], check=True)
        subprocess.run([str(PELICAN_VENV / "bin" / "pip"), "install", "-q", "pelican",
                        "markdown"], check=True)
    return command


def to_markdown(text: str, mtime: float, slug: str) -> str:
    """One generated article as Pelican Markdown: metadata block, ## headings, - lists."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").strip()
    if text.startswith("---\n"):
        text = text[text.index("\n---\n", 4) + 5 :]
    headline, header, *body = text.split("\n\n")
    byline, topic_line = header.split("\n")
    words = topic_line.split()
    prose = "\n\n".join(body)
    broad = [w for w in words if f" {w.capitalize()}" in prose or f" {w.upper()}" in prose]
    out = []
    for paragraph in body:
        lines = paragraph.split("\n")
        if len(lines) == 1 and not paragraph.endswith((".", "”", "’")):
            out.append("## " + paragraph)
        else:
            items = [f"- {line.strip()[2:]}" for line in lines if line.startswith("  • ")]
            prose = [line for line in lines if not line.startswith("  • ")]
            out.append("\n".join(prose) + ("\n\n" + "\n".join(items) if items else ""))
    meta = [
        f"Title: {headline}",
        f"Date: {datetime.fromtimestamp(mtime, UTC):%Y-%m-%d %H:%M}",
        f"Category: {(broad or words)[0]}",
        f"Authors: {byline.removeprefix('By ').replace(' and ', ', ')}",
        f"Tags: {', '.join([topic_line, *broad])}",
        f"Slug: {slug}",
    ]
    return "\n".join(meta) + "\n\n" + "\n\n".join(out) + "\n"


def markdown_corpus(articles: Path, n: int) -> Path:
    """bench/corpus-md-N: the same articles as Markdown, made once."""
    out = BENCH / f"corpus-md-{n}"
    source = (articles / corpus.MARKER).read_text()  # the generator's seed and version
    if (out / corpus.MARKER).exists() and (out / corpus.MARKER).read_text() == source:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for path in corpus.files_of(articles):
        text = path.read_text(encoding="utf-8")
        (out / f"{path.stem}.md").write_text(to_markdown(text, path.stat().st_mtime, path.stem))
    (out / corpus.MARKER).write_text(source)
    return out


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime_ns) of every file under ``root``, hidden ones included."""
    state = {}
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            state[os.path.join(folder, name)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return state


def build_case(articles: Path, n: int, rounds: int) -> list[Row]:
    """g. `feedsvc build` of every feed, archive and page vs Pelican, per article; then
    into that build again: with nothing changed (vs a stat of the output tree) and
    after one edit (absolute)."""
    content = markdown_corpus(articles, n)
    command = pelican()
    row = Row(f"g. `feedsvc build` of {n:,} articles vs Pelican", "ms/article", [], [],
              ">= 10x faster", lambda r: r >= 10, speedup=True)
    again = Row(f"g. `feedsvc build` again, nothing changed, {n:,} articles", "s", [], [],
                "<= 2x, 0 files touched", lambda r: r <= 2)
    edited = Row(f"g. `feedsvc build` again after one edit, {n:,} articles", "s", [], [],
                 "<= 1 s", lambda r: r <= 1.0, absolute=True)
    floor = Row(f"g. the bytes alone: gzip, SHA-256 and write of `feedsvc build`'s "
                f"output for {n:,} articles (nothing parsed or rendered) vs Pelican",
                "ms/article", [], [], ">= 10x faster (the build's target; this row "
                "bounds it)", lambda r: r >= 10, speedup=True)
    watched = Row(f"g. `feedsvc build --watch`, one edit: file closed to the manifest "
                  f"rewritten, {n:,} articles", "s", [], [], "<= 1 s", lambda r: r <= 1.0,
                  absolute=True)
    first_edits: list[float] = []
    counts = ""
    touched: list[str] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "conf.py").write_text(PELICAN_CONF)
            started = time.perf_counter()
            subprocess.run([str(command), str(content), "-o", f"{tmp}/pelican", "-s",
                            f"{tmp}/conf.py", "-q"], check=True, stdout=subprocess.DEVNULL)
            slow = time.perf_counter() - started
            mine = Path(tmp) / "articles"  # a copy: the edit below must not touch the corpus
            shutil.copytree(articles, mine)
            env = feedsvc_env(mine, Path(tmp) / "ledger.sqlite3", 0)
            env["FEEDSVC_BASE_URL"] = BASE_URL
            out = Path(tmp, "feedsvc")

            def build(out: Path = out, env: dict[str, str] = env) -> float:
                started = time.perf_counter()
                subprocess.run(FEEDSVC_BUILD + [str(out)], check=True, env=env, cwd=ROOT,
                               capture_output=True)
                return time.perf_counter() - started

            fast = build()
            floor.baseline.append(slow / n)
            floor.result.append(bytes_floor(out, Path(tmp, "floor")) / n)
            ours = [p for p in out.rglob("*") if p.is_file()]
            feeds = sum(p.suffix in (".atom", ".rss", ".json") for p in ours)
            theirs = [p for p in Path(tmp, "pelican").rglob("*") if p.is_file()]
            pelican_feeds = sum(p.suffix == ".xml" for p in theirs)
            counts = (f"feedsvc wrote {feeds:,} feed documents, {len(ours):,} files with .gz; "
                      f"Pelican {pelican_feeds:,} feeds, {len(theirs):,} files")
            stat_tree = min(timed(lambda out=out: walk(out, stat_size)) for _ in range(3))
            again.baseline.append(stat_tree)
            before = tree_state(out)
            again.result.append(build())
            after = tree_state(out)
            # Counted on disk, not from the manifest: a no-change rebuild leaves even that.
            touched.append(f"no change: {sum(after.get(k) != v for k, v in before.items())} "
                           f"files touched, {len(after.keys() - before.keys())} added, "
                           f"{len(before.keys() - after.keys())} removed")
            victim = next(p for p in sorted(mine.rglob("*.txt"))
                          if not p.read_bytes().startswith(b"---"))
            victim.write_bytes(victim.read_bytes() + b"\nOne more sentence, edited.\n")
            edited.baseline.append(0.0)
            edited.result.append(build())
            manifest = json.loads((out / ".feedsvc-build.json").read_text())
            touched.append(f"one edit: {len(manifest['changed'])} written, "
                           f"{len(manifest['removed'])} removed")
            seconds = watched_edits(out, victim, env, WATCH_EDITS)
            first_edits.append(seconds[0])
            watched.result.extend(seconds[1:])
            watched.baseline.extend([0.0] * (len(seconds) - 1))
        row.baseline.append(slow / n)
        row.result.append(fast / n)
    row.notes.append(
        f"baseline: Pelican {metadata_version(PELICAN_VENV, 'pelican')} (default theme, "
        "category, author and tag feeds in Atom and RSS); feedsvc: `feedsvc build`, empty "
        f"ledger, every feed, archive and page; {counts}"
    )
    again.notes.append("baseline: one scandir + stat walk of the output tree; the whole "
                       f"`feedsvc build` command (start-up included); {touched[0]}")
    edited.notes.append("the whole `feedsvc build` command (start-up included), one article "
                        f"edited; {touched[-1]}")
    watched.notes.append(
        f"one `feedsvc build --watch` process; {WATCH_EDITS - 1} edits of one article, "
        "1.5 s apart, each timed from the edited file's close to the manifest's rename; "
        f"the first edit after start (fragments and manifest lines not cached yet), not in "
        f"the figure: {spread(first_edits, 's')}")
    floor.notes.append(
        "the build's files (not .gz) read into memory first, then per file: its gzip form "
        "(feedsvc.http.gzip_form), SHA-256 of both, each written to a staged name and "
        "renamed into a new tree, on one forked process per core; the best ratio any "
        "renderer of this output could reach against this Pelican run")
    return [row, floor, again, edited, watched]


def _write_share(bodies: list[tuple[str, bytes]], tree: str, share: int, of: int) -> None:
    """One forked process's part of :func:`bytes_floor`: every ``of``-th file from ``share``."""
    for number in range(share, len(bodies), of):
        name, body = bodies[number]
        for suffix, data in (("", body), (".gz", gzip_form(body))):
            hashlib.sha256(data).hexdigest()
            staged = f"{tree}/.stage/{number}{suffix}"
            with open(staged, "wb") as file:
                file.write(data)
            os.rename(staged, f"{tree}/{name}{suffix}")


def bytes_floor(out: Path, tree: Path) -> float:
    """Seconds to write the bytes of the build in ``out`` again into ``tree``, with
    nothing parsed or rendered: per file what a build does to every file it makes
    (gzip form, SHA-256 of both, a write to a staged name and a rename into place),
    on one forked process per core, as the build renders.

    No renderer, however fast, builds this output in less: so this bounds the
    ratio that any build of this output can reach against the same baseline.
    """
    bodies = [(str(path.relative_to(out)), path.read_bytes())
              for path in sorted(out.rglob("*")) if path.is_file() and path.suffix != ".gz"
              and not path.name.startswith(".")]
    folders = sorted({str(Path(name).parent) for name, _ in bodies})
    cores = max(1, min(8, len(os.sched_getaffinity(0))))
    started = time.perf_counter()
    (tree / ".stage").mkdir(parents=True)
    for folder in folders:
        (tree / folder).mkdir(parents=True, exist_ok=True)
    children = []
    for share in range(cores):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                _write_share(bodies, str(tree), share, cores)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        children.append(pid)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    if failed:
        raise RuntimeError(f"bytes_floor: {len(failed)} writer processes failed")
    return time.perf_counter() - started


#: Edits timed by :func:`watched_edits` (the first is reported apart).
WATCH_EDITS = 6


def watched_edits(out: Path, victim: Path, env: dict[str, str], edits: int) -> list[float]:
    """Seconds from closing an edited file to the manifest's replacement, per edit, with
    one `feedsvc build --watch` process running over the build in ``out``."""
    manifest = out / ".feedsvc-build.json"
    proc = subprocess.Popen(FEEDSVC_BUILD + [str(out), "--watch"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds: list[float] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # its first build (of the one-edit build: nothing to do)
            if line.startswith("built "):
                break
        else:
            raise RuntimeError("`feedsvc build --watch` ended before its first build")
        for number in range(edits):
            time.sleep(1.5)
            before = manifest.stat().st_ino
            with open(victim, "ab") as file:
                file.write(f"\nAnother sentence, watched edit {number}.\n".encode())
            closed = time.perf_counter()
            while manifest.stat().st_ino == before:
                if time.perf_counter() - closed > 30:
                    raise RuntimeError("the watched build did not take the edit in 30 s")
                time.sleep(0.002)
            seconds.append(time.perf_counter() - closed)
    finally:
        proc.terminate()
        proc.wait(30)
    return seconds


def metadata_version(venv: Path, package: str) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          f"import importlib.metadata as m; print(m.version({package!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def not_available(what: str, target: str, missing: str) -> Row:
    return Row(what, "", [], [], target, notes=[f"not in this tree: {missing}"])


# -- main ---------------------------------------------------------------------------------


def compile_bytecode() -> None:
    """Write feedsvc's bytecode before anything is timed, as ``pip install`` of the
    package does (and had done for Flask, feedgen and Pelican's venv).

    An editable checkout under PYTHONDONTWRITEBYTECODE (set on this machine
    and in the Dockerfile) never caches it: every start compiled all of
    feedsvc's modules again, about 0.1 s of every restart and rebuild that
    the baselines, installed by pip, never paid. Python reads cached bytecode
    even under that variable; ``__pycache__`` is git-ignored.
    """
    import compileall

    compileall.compile_dir(str(ROOT / "feedsvc"), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="corpus sizes, comma-separated")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds of HTTP and cold start (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--http-size", type=int, help="corpus of cases a/b (default: 10000 "
                        "if among --sizes, else the smallest)")
    parser.add_argument("--build-size", type=int, help="corpus of the build case (default: "
                        "10000 if among --sizes, else the smallest)")
    parser.add_argument("--skip", default="",
                        help="cases to skip: a (a and b), c (c and d), e (e and f), g, "
                        "h (the store: restart, first import, PSS, SIGHUP and USR2 gaps, edit), "
                        "i (subscriber counting), "
                        "p (PostgreSQL vs SQLite: restart, import, req/s, edit on 2 hosts)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.seconds = args.seconds or (2 if args.quick else 5)
    inproc_rounds = 5 if args.quick else 10
    http_size = args.http_size or (10_000 if 10_000 in sizes else min(sizes))
    build_size = args.build_size or (10_000 if 10_000 in sizes else min(sizes))

    version = wrk_version()
    load = wrk if version else python_load
    generator = version or "wrk NOT FOUND: Python load generator (2 processes x threads)"
    header = machine(generator)  # taken once: feedsvc may be edited while the suite runs
    print(header, flush=True)
    compile_bytecode()

    corpora = {}
    for n in sorted(set(sizes) | {http_size, build_size}):
        started = time.perf_counter()
        corpora[n] = corpus.generate(n, BENCH / f"corpus-{n}")
        print(f"corpus {n:,}: {corpora[n]} ({time.perf_counter() - started:.1f} s)", flush=True)

    rows: list[Row] = []
    steps: list[tuple[str, Callable[[], list[Row]]]] = []
    if "a" not in args.skip:
        steps.append(("a/b", lambda: http_cases(corpora[http_size], args, load)))
    for n in sizes:
        if "c" not in args.skip:
            steps.append((f"c/d {n}", lambda n=n: cold_start(corpora[n], n, args.rounds)))
        if "e" not in args.skip:
            steps.append((f"e/f {n}", lambda n=n: in_process(corpora[n], n, inproc_rounds)))
        if "h" not in args.skip:
            steps.append((f"h {n}", lambda n=n: store_cases(corpora[n], n, args.rounds)))
        if "p" not in args.skip:
            steps.append((f"p {n}", lambda n=n: postgres_cases(corpora[n], n, args.rounds,
                                                                args, load)))
    if "g" not in args.skip:
        if NGINX_SITE.exists() and shutil.which("nginx"):
            steps.append(("g nginx", lambda: [nginx_case(corpora[http_size], args, load)]))
        else:
            steps.append(("g nginx", lambda: [not_available(
                "g. feed via nginx proxy_cache vs static file", ">= 0.8x",
                "deploy/nginx/feedsvc.conf or nginx")]))
        has_build = subprocess.run(FEEDSVC_BUILD + ["--help"], capture_output=True, cwd=ROOT)
        if has_build.returncode == 0:
            build_rounds = 1 if build_size >= 10_000 else args.rounds
            steps.append(("g build", lambda: build_case(corpora[build_size], build_size,
                                                         build_rounds)))
        else:
            steps.append(("g build", lambda: [not_available(
                "g. `feedsvc build` vs Pelican, per article", ">= 10x faster",
                "the `feedsvc build` command")]))
    if "i" not in args.skip:
        steps.append(("i", lambda: [counting_case(corpora[http_size], args, load)]))
    RESULTS.mkdir(exist_ok=True)
    for name, step in steps:
        started = time.perf_counter()
        try:
            new = step()
        except Exception as exc:  # one broken case must not lose the others' figures
            traceback.print_exc()
            new = [Row(f"{name}: FAILED", "", [], [], notes=[f"{type(exc).__name__}: {exc}"])]
        rows += new
        print(f"[{name} done in {time.perf_counter() - started:.0f} s]", flush=True)
        for row in new:
            print("| " + " | ".join(row.cells()) + " |", flush=True)
        rows.sort(key=lambda row: row.what[0])  # a, b, c/d by size, e, f, g
        (RESULTS / "latest.md").write_text(header + "\n\n" + table(rows) + "\n")
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
