"""Running the shipped deploy/ files for real: gunicorn with deploy/gunicorn.conf.py
and nginx with the site files, everything in a test's temporary folder.

The site files under deploy/nginx/ mark the few lines a test must change
(listen address, upstream, cache folder, web root, log file) with
``# test: replaced``; :func:`site_from` replaces exactly those and refuses to
run if a marked line is left alone or a value is not found exactly once, so
the tests always run the configuration operators install.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "nginx"
MARKER = "# test: replaced"


def _find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


NGINX = _find_nginx()
NGINX_MISSING = "nginx is not installed here (.ci/run installs Debian's: apt-get install nginx)"
needs_nginx = pytest.mark.skipif(NGINX is None, reason=NGINX_MISSING)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mime_types() -> Path:
    """The stock mime.types of the installed nginx, as its nginx.conf includes it."""
    output = subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"--conf-path=(\S+)", output)
    conf_dir = Path(match.group(1)).parent if match else Path("/etc/nginx")
    return conf_dir / "mime.types"


def site_from(name: str, replacements: dict[str, str]) -> str:
    """The shipped site file ``deploy/nginx/<name>`` with its marked values replaced."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    marked = [line for line in text.splitlines()
              if MARKER in line and not line.lstrip().startswith("#")]
    for line in marked:
        hits = [old for old in replacements if old in line]
        assert len(hits) == 1, f"{name}: marked line {line.strip()!r} matches {hits}"
    for old, new in replacements.items():
        count = text.count(old)
        assert count == 1, f"{name}: expected {old!r} exactly once, found it {count} times"
        text = text.replace(old, new)
    return text


def nginx_modules() -> str:
    """The ``load_module`` lines of Debian's enabled modules (the cache-purge module
    among them), as its nginx.conf includes them; relative module paths are made
    absolute from nginx's own prefix, since our ``-p`` is a test folder."""
    enabled = Path("/etc/nginx/modules-enabled")
    if NGINX is None or not enabled.is_dir():
        return ""
    output = subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"--prefix=(\S+)", output)
    prefix = Path(match.group(1) if match else "/usr/share/nginx")
    lines = []
    for conf in sorted(enabled.glob("*.conf")):
        for module in re.findall(r"^\s*load_module\s+(\S+?);", conf.read_text(), re.M):
            lines.append(f"load_module {prefix / module};\n")
    return "".join(lines)


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a server started by a test: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Nginx:
    """nginx in the foreground (``daemon off``) with everything in one folder."""

    def __init__(self, folder: Path, site: str, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "site.conf").write_text(site.replace("@PORT@", str(self.port)),
                                          encoding="utf-8")
        # Workers run as root when we are root: the temporary folders are
        # private to root, and "nobody" (nginx's default) could not use them.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(f"    {kind}_temp_path {folder / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (folder / "nginx.conf").write_text(f"""{nginx_modules()}{user}daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    include {mime_types()};
    default_type application/octet-stream;
    access_log {folder / "access.log"};
{temp}
    include {folder / "site.conf"};
}}
""", encoding="utf-8")
        self.log = (folder / "nginx.out").open("wb")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"),
             "-e", str(folder / "error.log")],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nginx did not start listening:\n" + self.errors()) from None
                time.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def errors(self) -> str:
        parts = []
        for name in ("nginx.out", "error.log"):
            path = self.folder / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        terminate(self.proc, timeout=10)
        self.log.close()


@dataclass
class Reply:
    status: int
    headers: Message  # case-insensitive .get()
    body: bytes


def fetch(port: int, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> Reply:
    """One request on a fresh connection, nothing decoded or followed: what came back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.msg, response.read())
    finally:
        conn.close()


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc), none once it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was exec'd with (empty if gone or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2]
                for item in raw.split(b"\0") if item)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie no one has reaped yet counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


class Gunicorn:
    """``gunicorn -c deploy/gunicorn.conf.py wsgi:app``, as the systemd unit runs it."""

    def __init__(self, folder: Path, env: dict[str, str], workers: int = 2,
                 port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.workers = workers
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith("FEEDSVC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        clean.update(FEEDSVC_BIND=f"127.0.0.1:{self.port}", FEEDSVC_WORKERS=str(workers),
                     PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"))
        # What an operator of a service reached as 127.0.0.1 sets (wsgi.py
        # refuses to start with neither this nor FEEDSVC_BASE_URL); a test
        # passing its own value, even "", wins.
        clean["FEEDSVC_TRUSTED_HOSTS"] = "127.0.0.1,localhost"
        clean.update(env)
        self.log_path = folder / "gunicorn.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=clean, stdout=self.log, stderr=subprocess.STDOUT)
        #: The serving master: ``proc`` until a USR2 restart hands over to its new master.
        self.master = self.proc.pid
        self.wait_for_workers()

    def wait_for_workers(self) -> None:
        """Until every worker has answered; a gunicorn that exits instead raises."""
        workers = self.workers
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while len(seen) < workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gunicorn did not start all workers:\n" + self.output())
            try:
                seen |= self.worker_pids()
            except OSError:
                time.sleep(0.1)

    def worker_pids(self, count: int = 16) -> set[int]:
        """Pids of the workers that answered ``count`` concurrent /healthz requests, loaded.

        A worker answers /healthz before the first import is in (feeds answer
        503 until then): only one that has loaded the articles counts.
        """
        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(pool.map(lambda _: fetch(self.port, "/healthz"), range(count)))
        return {body["worker"] for r in replies if r.status == 200
                for body in [json.loads(r.body)] if body.get("loaded", True)}

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def usr2(self) -> int:
        """USR2 to the serving master; the pid of the new master it execs (not yet serving)."""
        old = self.master
        os.kill(old, signal.SIGUSR2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for child in children(old):
                # Workers are forks of the old master; only the new master was
                # exec'd with GUNICORN_PID (gunicorn's mark of a USR2 child).
                if environ_of(child).get("GUNICORN_PID") == str(old):
                    return child
            time.sleep(0.02)
        raise RuntimeError("USR2: no new master appeared:\n" + self.output())

    def restart(self, timeout: float = 60) -> int:
        """A complete USR2 restart: until the old master has exited and every worker that
        answers is a loaded worker of the new master, now ``self.master``."""
        old, new = self.master, self.usr2()
        deadline = time.monotonic() + timeout
        while alive(old):
            if not alive(new) or time.monotonic() > deadline:
                raise RuntimeError(f"USR2: the old master {old} did not stop (new master {new} "
                                   f"alive: {alive(new)}):\n" + self.output())
            time.sleep(0.02)
        self.master = new
        while True:
            serving, spawned = self.worker_pids(), set(children(new))
            if serving and serving <= spawned and len(spawned) >= self.workers:
                break
            if not alive(new) or time.monotonic() > deadline:
                raise RuntimeError("USR2: the new master's workers did not serve:\n"
                                   + self.output())
            time.sleep(0.05)
        return new

    def stop(self) -> str:
        if self.master != self.proc.pid:  # a USR2 master: not our child, so no wait()
            self.proc.poll()
            if alive(self.master):
                os.kill(self.master, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while alive(self.master) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if alive(self.master):
                    os.kill(self.master, signal.SIGKILL)
        terminate(self.proc, timeout=30)
        self.log.close()
        return self.log_path.read_text(errors="replace")


VARNISHD = shutil.which("varnishd") or ("/usr/sbin/varnishd"
                                        if os.access("/usr/sbin/varnishd", os.X_OK) else None)
VARNISH_MISSING = ("varnish is not installed here (.ci/run installs Debian's: "
                   "apt-get install varnish varnish-modules)")


class Varnish:
    """varnishd in the foreground on loopback with a VCL file, its state in one folder.

    ``-j none``: no privilege separation, so that as root (CI) the folder
    private to root stays usable; as any other user varnishd runs as that user.
    """

    def __init__(self, folder: Path, vcl: str, port: int | None = None) -> None:
        assert VARNISHD is not None, VARNISH_MISSING
        self.folder = folder
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "feedsvc.vcl").write_text(vcl, encoding="utf-8")
        self.log = (folder / "varnishd.out").open("wb")
        self.proc = subprocess.Popen(
            [VARNISHD, "-F", "-j", "none", "-a", f"127.0.0.1:{self.port}",
             "-T", "none", "-f", str(folder / "feedsvc.vcl"), "-n", str(folder / "state"),
             "-s", "malloc,64m", "-p", "vcc_allow_inline_c=off"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"varnishd exited with {self.proc.returncode}:\n"
                                   + self.output())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("varnishd did not start listening:\n"
                                       + self.output()) from None
                time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        return (self.folder / "varnishd.out").read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc, timeout=15)
        self.log.close()


def vcl_from(replacements: dict[str, str]) -> str:
    """The shipped deploy/varnish/feedsvc.vcl with its marked values replaced."""
    text = (ROOT / "deploy" / "varnish" / "feedsvc.vcl").read_text(encoding="utf-8")
    for old, new in replacements.items():
        count = text.count(old)
        assert count == 1, f"feedsvc.vcl: expected {old!r} exactly once, found it {count} times"
        text = text.replace(old, new)
    return text
