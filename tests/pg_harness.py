"""A real PostgreSQL server for the tests: Debian's initdb and pg_ctl, on a free loopback port.

PostgreSQL refuses to run as root, so under root (CI) the cluster belongs to
the ``postgres`` user that Debian's package creates and is run through
``runuser``; otherwise it runs as the current user. Each server has its own
data folder under /tmp, password authentication over TCP (so URLs carry a
password, as production ones do) and is stopped and removed at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "s3cret-pw"
USER = "feedsvc"


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    """One running cluster; :meth:`url` names a database on it."""

    bin: Path
    datadir: Path
    port: int
    user: str | None  # the OS user it runs as (None: this process's)
    listen: str = "127.0.0.1"  # listen_addresses

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)

    def url(self, dbname: str = "feedsvc", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "30", "-l",
                  str(self.datadir / "server.log"), "-o",
                  f"-p {self.port} -k {self.datadir} -c listen_addresses={self.listen} "
                  "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-m", mode, "stop", check=False)

    def create_database(self, name: str) -> str:
        """A new empty database on this server; returns its URL."""
        self._run("psql", "-h", str(self.datadir), "-p", str(self.port), "-U", USER,
                  "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still on it (PostgreSQL 13+)."""
        self._run("psql", "-h", str(self.datadir), "-p", str(self.port), "-U", USER,
                  "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c",
                  f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        path = self.datadir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_postgres(listen: str = "127.0.0.1", clients: tuple[str, ...] = ()) -> PgServer:
    """initdb a new cluster and start it; the caller stops it with :func:`destroy`.

    ``listen`` is its listen_addresses; ``clients`` are more networks (CIDR) that
    may log in with the password (a test's network namespace).
    """
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="feedsvc-pg-"))
    datadir = root / "data"
    datadir.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if user:
        entry = pwd.getpwnam(user)
        for path in (root, datadir, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(root, 0o755)
    os.chmod(datadir, 0o700)
    server = PgServer(bindir, datadir, _free_port(), user, listen)
    server._run("initdb", "-D", str(datadir), "-U", USER, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
                "-E", "UTF8", "--locale=C.UTF-8")
    pwfile.unlink()
    with (datadir / "pg_hba.conf").open("a") as hba:
        for network in clients:
            hba.write(f"host all all {network} scram-sha-256\n")
    for attempt in range(3):
        try:
            server.start()
            break
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise RuntimeError("PostgreSQL did not start:\n" + server.log()) from None
            server.port = _free_port()
            time.sleep(0.2)
    server.create_database("feedsvc")
    return server


def destroy(server: PgServer) -> None:
    server.stop("immediate")
    shutil.rmtree(server.datadir.parent, ignore_errors=True)
