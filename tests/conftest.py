"""Shared fixtures: a real articles folder per test and a real app over it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from feedsvc.web import create_app, open_apps, shutdown

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "articles"
DATA = Path(__file__).parent / "data"
BASE_URL = "https://news.example.org"


@pytest.fixture
def articles_dir(tmp_path: Path) -> Path:
    """A copy of the bundled articles, free to edit."""
    target = tmp_path / "articles"
    shutil.copytree(BUNDLED, target)
    return target


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build an app over a folder, with its own ledger and no reload thread; every app
    made is shut down (threads joined, store closed) when the test ends."""
    made: list[Flask] = []

    def factory(articles: Path, **settings: object) -> Flask:
        config = {
            "articles_dir": str(articles),
            "ledger_path": str(tmp_path / "ledger.sqlite3"),
            "base_url": BASE_URL,
            "reload_interval": 0,
        }
        config.update(settings)
        app = create_app(config, instance_path=tmp_path / "instance")
        made.append(app)
        return app

    yield factory
    for app in reversed(made):
        shutdown(app)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN201
    """Once a module's last test is torn down, shut down every app still open (a module
    fixture's, a test's own ``create_app``): no thread of its runs on into the next
    module, using a store whose folder is gone or logging into other tests."""
    yield
    if nextitem is None or nextitem.module is not getattr(item, "module", None):
        for app in reversed(open_apps()):
            shutdown(app)


@pytest.fixture
def app(make_app: Callable[..., Flask], articles_dir: Path) -> Flask:
    return make_app(articles_dir)


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (``8m``) mounted at the new folder ``mount``: a
    filesystem a test can fill or make read-only. Skips where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def write_article(folder: Path, name: str, title: str, author: str = "Test Writer",
                  topic: str | None = "test topic", body: str = "A lead paragraph.",
                  front: str = "") -> Path:
    """Write one article in the bundled format; returns its path."""
    lines = [front + title, "", author] + ([topic] if topic else []) + ["", body]
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own FEEDSVC_* variables must not leak into tests."""
    import os

    for name in list(os.environ):
        if name.startswith("FEEDSVC_"):
            monkeypatch.delenv(name)


@pytest.fixture
def world_dir():
    """A temporary folder user nobody can use (pytest's tmp_path is 0700 for root)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="feedsvc-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in folder.rglob("*"):  # a chmod 0 file or folder must not stop the clean-up
            if not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(folder)


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (tests/pg_harness.py)."""
    from tests.pg_harness import destroy, pg_bin, start_postgres

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = start_postgres()
    try:
        yield server
    finally:
        destroy(server)


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """The URL of a new, empty database of its own for this test."""
    import re
    import uuid

    name = re.sub(r"\W", "_", request.node.name)[:40] + "_" + uuid.uuid4().hex[:8]
    return postgres_server.create_database(name.lower())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    """A store's database URL on each backend in turn: a SQLite file, a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def subscriber():  # noqa: ANN201 - a tests.hub_subscriber.Subscriber
    """A real WebSub subscriber on 127.0.0.1 (tests/hub_subscriber.py)."""
    from tests.hub_subscriber import Subscriber

    sub = Subscriber(hang_seconds=2.5)
    try:
        yield sub
    finally:
        sub.close()


def in_forked_child(check: Callable[[], object]) -> bool:
    """Run ``check`` in a forked child; whether it returned something true there.

    The child reports through a pipe and exits at once: it never returns into pytest.
    """
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        os.waitpid(pid, 0)
        return os.read(read, 1) == b"1"
    finally:
        os.close(read)


def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``check`` until it returns something true (which is returned), or fail."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s{': ' + what if what else ''}")
