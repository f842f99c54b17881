"""The feedsvc command as an operator uses it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from feedsvc.cli import main
from tests.conftest import ROOT, write_article
from tests.feedcheck import check_atom


def test_check_reports_every_file(articles_dir: Path, capsys) -> None:
    (articles_dir / "empty.txt").write_bytes(b"")
    write_article(articles_dir, "draft.txt", "Draft Story", front="---\ndraft: yes\n---\n")
    (articles_dir / "latin1.txt").write_bytes("Caf\xe9 Opens\n\nJos\xe9 Ruiz\n\nThe caf\xe9 "
                                              "opened today.\n".encode("latin-1"))
    code = main(["check", str(articles_dir)])
    out = capsys.readouterr().out
    assert code == 1
    assert "REJECTED   empty.txt: empty file" in out
    assert "draft      draft.txt: not published (draft: true)" in out
    assert "published  latin1.txt: Café Opens" in out
    assert "warning: not valid UTF-8" in out
    assert "published  000_116cfd26fe85501a.txt: Ukraine Drops NATO Bid" in out
    assert out.rstrip().endswith(f"22 published, 1 rejected in {articles_dir}")


def test_check_exits_zero_on_a_clean_folder(articles_dir: Path, capsys) -> None:
    assert main(["check", str(articles_dir)]) == 0
    assert "0 rejected" in capsys.readouterr().out


def test_check_on_a_missing_folder(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "FEEDSVC_ARTICLES_DIR" in capsys.readouterr().err


def _first_feed(url: str, proc: subprocess.Popen, seconds: float) -> bytes:
    """The body of ``url`` once the server ``proc`` started answers it with a 200;
    fails if ``proc`` ends first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, f"no answer from {url} in {seconds} s"
            time.sleep(0.2)


def test_serve_runs_the_bundled_articles(tmp_path: Path) -> None:
    """The quick start's first command: `feedsvc serve` over the bundled folder."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env["FEEDSVC_LEDGER_PATH"] = str(tmp_path / "ledger.sqlite3")
    proc = subprocess.Popen([sys.executable, "-m", "feedsvc.cli", "serve", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        parsed = check_atom(_first_feed(f"http://127.0.0.1:{port}/feed.atom", proc, 30))
        assert len(parsed.entries) == len(list((ROOT / "articles").rglob("*.txt")))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_serve_opens_a_postgresql_store_before_forking_and_still_serves(
        articles_dir: Path, postgres_url: str) -> None:
    """The check before the fork (_open_once) leaves nothing a worker inherits."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "feedsvc.cli", "serve", str(articles_dir),
                             "--port", str(port), "--workers", "2"], cwd=ROOT,
                            env=_clean_env(FEEDSVC_DATABASE_URL=postgres_url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        body = _first_feed(f"http://127.0.0.1:{port}/feed.atom", proc, 60)
        assert len(check_atom(body).entries) == len(list(articles_dir.rglob("*.txt")))
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_serve_on_an_ipv6_address_as_written(tmp_path: Path, articles_dir: Path) -> None:
    """--host ::1 gave gunicorn's "'' is not a valid port number" (it read "::1:8000")."""
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "feedsvc.cli", "serve", str(articles_dir),
                             "--host", "::1", "--port", str(port)], cwd=ROOT,
                            env=_clean_env(FEEDSVC_LEDGER_PATH=str(tmp_path / "l.db")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert check_atom(_first_feed(f"http://[::1]:{port}/feed.atom", proc, 30)).entries
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert err.startswith(f"serving {articles_dir} on http://[::1]:{port}/\n"), err


def test_check_reports_a_duplicate(articles_dir: Path, capsys) -> None:
    import shutil

    shutil.copyfile(articles_dir / "000_116cfd26fe85501a.txt", articles_dir / "zz-copy.txt")
    code = main(["check", str(articles_dir)])
    out = capsys.readouterr().out
    assert code == 1
    assert ("DUPLICATE  zz-copy.txt: duplicate of 000_116cfd26fe85501a.txt; not published"
            in out)
    assert out.rstrip().endswith(f"21 published, 0 rejected, 1 duplicate(s) in {articles_dir}")


def _identities(port: int) -> list[tuple[str, str, str, str]]:
    import json

    from tests.deploy_harness import fetch

    reply = fetch(port, "/feed.json?limit=1000")
    assert reply.status == 200
    return sorted((i["id"], i["url"], i["date_published"], i["date_modified"])
                  for i in json.loads(reply.body)["items"])


def _feedsvc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "feedsvc.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_backup_and_restore_as_the_readme_says(tmp_path: Path, articles_dir: Path) -> None:
    """Back up while gunicorn serves, stop it, wreck the ledger, restore, start: nothing moved."""
    import sqlite3

    from tests.conftest import BASE_URL
    from tests.deploy_harness import Gunicorn

    ledger = tmp_path / "state" / "ledger.sqlite3"
    settings = {"FEEDSVC_ARTICLES_DIR": str(articles_dir), "FEEDSVC_LEDGER_PATH": str(ledger),
                "FEEDSVC_BASE_URL": BASE_URL, "FEEDSVC_RELOAD_INTERVAL": "0.3"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(settings, PYTHONPATH=str(ROOT))
    copy = tmp_path / "backups" / "ledger-copy.sqlite3"
    copy.parent.mkdir()
    server = Gunicorn(tmp_path, settings, workers=2)
    try:
        write_article(articles_dir, "while-serving.txt", "Written While Serving")
        deadline = time.monotonic() + 20
        while not any("written-while-serving" in i[1] for i in _identities(server.port)):
            assert time.monotonic() < deadline, "the new article never appeared"
            time.sleep(0.2)
        before = _identities(server.port)
        # Both workers, each reloading on its own clock, give the one Last-Modified
        # the ledger holds for this version.
        from concurrent.futures import ThreadPoolExecutor

        from tests.deploy_harness import fetch

        while True:
            with ThreadPoolExecutor(max_workers=8) as pool:
                replies = list(pool.map(lambda _: fetch(server.port, "/feed.atom"), range(16)))
            if len({r.headers["ETag"] for r in replies}) == 1:
                break
            assert time.monotonic() < deadline, "the workers never agreed on the feed"
        assert len({r.headers["Last-Modified"] for r in replies}) == 1
        done = _feedsvc(env, "backup", str(copy))
        assert done.returncode == 0, done.stderr
        assert f"{len(before)} articles" in done.stdout and "integrity ok" in done.stdout
        refused = _feedsvc(env, "restore", str(copy))
        assert refused.returncode == 2
        assert "in use by a running feedsvc" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        server.stop()
    # A clean stop checkpointed: the main file alone holds every row.
    wal = Path(f"{ledger}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "WAL left after a clean SIGTERM"
    plain = tmp_path / "plain-copy.sqlite3"
    plain.write_bytes(ledger.read_bytes())
    with sqlite3.connect(plain) as conn:
        assert conn.execute("SELECT count(*) FROM articles").fetchone()[0] == len(before)
    conn.close()
    # Wreck it: garbage in the file, a stale WAL beside it.
    ledger.write_bytes(b"\x00wrecked" * 4096)
    wal.write_bytes(b"stale wal" * 1000)
    done = _feedsvc(env, "restore", str(copy))
    assert done.returncode == 0, done.stderr
    assert "verified row for row" in done.stdout
    assert not wal.exists()
    (tmp_path / "again").mkdir()
    server = Gunicorn(tmp_path / "again", settings, workers=2)
    try:
        assert _identities(server.port) == before
    finally:
        server.stop()


def test_check_judges_duplicates_by_the_service_ledger(tmp_path: Path, articles_dir: Path,
                                                       make_app, monkeypatch, capsys) -> None:
    """The file the service published stays "first", whatever the paths or mtimes say."""
    import shutil

    write_article(articles_dir, "zz-original.txt", "A Story Published First")
    app = make_app(articles_dir)  # the service stamps it: the ledger make_app's apps use
    app.extensions["feedsvc"].close()
    shutil.copyfile(articles_dir / "zz-original.txt", articles_dir / "aa-copy.txt")
    old = 1_600_000_000  # older than the original's mtime, and a lower path
    os.utime(articles_dir / "aa-copy.txt", (old, old))
    ledger = tmp_path / "ledger.sqlite3"
    before = ledger.read_bytes()
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(ledger))
    assert main(["check", str(articles_dir)]) == 1
    out = capsys.readouterr().out
    assert "DUPLICATE  aa-copy.txt: duplicate of zz-original.txt; not published" in out
    assert ledger.read_bytes() == before, "check never writes the service's ledger"


def _clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(settings, PYTHONPATH=str(ROOT))
    return env


@pytest.mark.parametrize(("option", "message"), [
    (["--port", "70000"], "argument --port: expected a port from 1 to 65535, got 70000"),
    (["--port", "-1"], "argument --port: expected a port from 1 to 65535, got -1"),
    (["--port", "0"], "argument --port: expected a port from 1 to 65535, got 0"),
    (["--port", "http"], "argument --port: expected a whole number, got 'http'"),
    (["--workers", "0"], "argument --workers: expected 1 or more, got 0"),
    (["--workers", "-3"], "argument --workers: expected 1 or more, got -3"),
])
def test_serve_refuses_a_bad_port_or_worker_count(tmp_path: Path, articles_dir: Path,
                                                  option: list[str], message: str) -> None:
    """Once a traceback from gunicorn's bind, or a master with no worker answering."""
    done = _feedsvc(_clean_env(FEEDSVC_LEDGER_PATH=str(tmp_path / "l.db")),
                    "serve", str(articles_dir), *option)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and "Starting gunicorn" not in done.stderr


@pytest.mark.parametrize(("setting", "message"), [
    ("ledger", "file is not a database"),
    ("folder", "cannot create its folder"),
    ("topics", "FEEDSVC_TOPICS_FILE"),
])
def test_serve_reports_a_bad_store_or_topics_file_before_starting(
        tmp_path: Path, articles_dir: Path, setting: str, message: str) -> None:
    """Faults every worker would meet at boot are one line and status 2, before any fork."""
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a ledger\n" * 100)
    env = _clean_env(FEEDSVC_LEDGER_PATH=str(tmp_path / "ok" / "l.db"))
    if setting == "ledger":
        env["FEEDSVC_LEDGER_PATH"] = str(junk)
    elif setting == "folder":
        env["FEEDSVC_LEDGER_PATH"] = str(junk / "ledger.sqlite3")
    else:
        topics = tmp_path / "topics.toml"
        topics.write_text("[topics.eu\n")
        env["FEEDSVC_TOPICS_FILE"] = str(topics)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = _feedsvc(env, "serve", str(articles_dir), "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and "Starting gunicorn" not in done.stderr
    assert junk.read_bytes() == b"not a ledger\n" * 100


def _stamped_ledger(tmp_path: Path, articles_dir: Path, make_app, monkeypatch) -> Path:
    """The ledger a service made over the folder, named by FEEDSVC_LEDGER_PATH."""
    for name in [n for n in os.environ if n.startswith("FEEDSVC_")]:
        monkeypatch.delenv(name)
    make_app(articles_dir).extensions["feedsvc"].close()
    ledger = tmp_path / "ledger.sqlite3"
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(ledger))
    return ledger


def _backup_into(dest: str) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["backup", dest])
    return code, err.getvalue()


def test_backup_names_the_back_up_file_when_it_cannot_be_written(
        tmp_path: Path, world_dir: Path, articles_dir: Path, make_app, monkeypatch) -> None:
    """It blamed the ledger ("cannot open the ledger file: its folder must exist")."""
    from tests.unprivileged import run_unprivileged

    ledger = _stamped_ledger(tmp_path, articles_dir, make_app, monkeypatch)
    before = ledger.read_bytes()
    assert _backup_into(str(tmp_path / "no-such-folder" / "copy.db")) == (
        2, f"feedsvc: {tmp_path / 'no-such-folder' / 'copy.db'}: no folder "
           f"{tmp_path / 'no-such-folder'} to write the back-up in\n")
    (tmp_path / "backups").mkdir()
    assert _backup_into(str(tmp_path / "backups")) == (
        2, f"feedsvc: {tmp_path / 'backups'} is a folder: name the back-up file to write\n")
    # The ledger itself: renamed over, a running service would write into a deleted file.
    assert _backup_into(str(ledger)) == (
        2, f"feedsvc: {ledger} is the ledger itself: name a back-up file elsewhere\n")
    assert ledger.read_bytes() == before
    # A folder the operator may not write in (as nobody when the tests run as root).
    readonly = world_dir / "readonly"
    readonly.mkdir(mode=0o755)
    code, err = run_unprivileged(_backup_into, str(readonly / "copy.db"))
    assert (code, err) == (2, f"feedsvc: {readonly / 'copy.db'}: cannot write in {readonly}: "
                              "permission denied\n")
    code, err = _backup_into(str(tmp_path / "backups" / "copy.db"))
    assert code == 0 and err == ""


def test_build_refuses_an_outdir_inside_the_articles_folder_or_around_it(
        tmp_path: Path, articles_dir: Path) -> None:
    """Built into the articles folder, the next scan read 327 built files as articles."""
    env = _clean_env(FEEDSVC_LEDGER_PATH=str(tmp_path / "l.db"),
                     FEEDSVC_BASE_URL="https://news.example.org")
    inside = articles_dir / "site"
    done = _feedsvc(env, "build", str(inside), "--folder", str(articles_dir))
    assert done.returncode == 2, done.stderr
    assert (f"feedsvc: {inside} is inside the articles folder {articles_dir}: the built files "
            "would be read as articles" in done.stderr)
    assert not inside.exists() and not (tmp_path / "l.db").exists()
    around = tmp_path / "site"
    (around / "posts").mkdir(parents=True)
    (around / "posts" / "a.txt").write_text("Title\n\nBy Ann\n\nText.\n")
    done = _feedsvc(env, "build", str(around), "--folder", str(around / "posts"))
    assert done.returncode == 2, done.stderr
    assert (f"feedsvc: the articles folder {around / 'posts'} is inside {around}: every "
            "article file, drafts too, would be published" in done.stderr)
    assert sorted(p.name for p in around.iterdir()) == ["posts"]


@pytest.mark.parametrize("fault", ["no folder", "no base URL"])
def test_build_stops_before_syncing_without_a_folder_or_a_base_url(
        tmp_path: Path, articles_dir: Path, fault: str) -> None:
    """Both used to come after 'syncing ...: done' and 'loading ...', the store written."""
    env = _clean_env(FEEDSVC_LEDGER_PATH=str(tmp_path / "l.db"),
                     FEEDSVC_BASE_URL="https://news.example.org")
    folder = articles_dir
    if fault == "no folder":
        folder = tmp_path / "typo"
        message = f"feedsvc: configuration error: FEEDSVC_ARTICLES_DIR: {folder} is not a folder"
    else:
        del env["FEEDSVC_BASE_URL"]
        message = (f"feedsvc: {tmp_path / 'out'}: a static site needs its public URL: "
                   "give --base-url or set FEEDSVC_BASE_URL")
    done = _feedsvc(env, "build", str(tmp_path / "out"), "--folder", str(folder))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "l.db").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["stats"], ["hub", "list"]])
def test_stats_and_hub_list_report_a_corrupt_ledger_in_one_line(
        tmp_path: Path, monkeypatch, capsys, command: list[str]) -> None:
    """They read the store's tables directly: a corrupt file was a sqlite3 traceback."""
    for name in [n for n in os.environ if n.startswith("FEEDSVC_")]:
        monkeypatch.delenv(name)
    junk = tmp_path / "ledger.sqlite3"
    junk.write_bytes(b"not a ledger\n" * 100)
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(junk))
    assert main(command) == 2
    assert capsys.readouterr().err == (f"feedsvc: ledger {junk}: cannot read it: file is not "
                                       "a database\n")
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path))  # a folder: no ledger there
    assert main(command) in (1, 2)
    assert capsys.readouterr().err.startswith(f"feedsvc: no ledger at {tmp_path}: ")


@pytest.mark.parametrize(("source", "target", "message"), [
    ("ledger.db", "sqlite:////tmp/x.db", "feedsvc: SOURCE_URL: unknown database URL scheme ''"),
    ("sqlite:////tmp/x.db", "postgresql://u:secret@db:99999/feeds",
     "feedsvc: TARGET_URL: a PostgreSQL URL's port is a number from 1 to 65535, got '99999'"),
    ("sqlite:////tmp/x.db", "postgresql://u:secret@[db/feeds",
     "feedsvc: TARGET_URL: not a database URL: Invalid IPv6 URL"),
])
def test_migrate_names_the_bad_url(capsys, source: str, target: str, message: str) -> None:
    """Which of the two URLs is wrong, never with its password; a port of 99999 was
    'PostgreSQL cannot be reached'."""
    assert main(["migrate", source, target]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert "secret" not in err


def test_check_names_a_file_or_an_unreachable_folder_as_the_articles_folder(
        tmp_path: Path, world_dir: Path, capsys) -> None:
    """A file was 'not a folder that exists'; a folder under one the user may not enter
    was 'Permission denied (...)' from the CLI and a traceback under gunicorn."""
    from tests.unprivileged import run_unprivileged

    afile = tmp_path / "articles.txt"
    afile.write_text("not a folder\n")
    assert main(["check", str(afile)]) == 2
    assert capsys.readouterr().err == ("feedsvc: configuration error: FEEDSVC_ARTICLES_DIR: "
                                       f"{afile} is a file, not a folder\n")
    locked = world_dir / "locked"
    (locked / "articles").mkdir(parents=True)
    locked.chmod(0o700)

    def check() -> tuple[int, str]:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["check", str(locked / "articles")])
        return code, err.getvalue()

    assert run_unprivileged(check) == (2, "feedsvc: configuration error: FEEDSVC_ARTICLES_DIR: "
                                          f"{locked / 'articles'} cannot be reached: "
                                          "Permission denied\n")


def test_hub_without_its_sub_command_names_the_choices(capsys) -> None:
    """It said 'the following arguments are required: hub_command', an internal name."""
    with pytest.raises(SystemExit) as info:
        main(["hub"])
    assert info.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(
        "feedsvc hub: error: the following arguments are required: {list}")


def test_restore_under_a_file_names_the_ledger_setting(tmp_path: Path, articles_dir: Path,
                                                       make_app, monkeypatch, capsys) -> None:
    """FEEDSVC_LEDGER_PATH under a file: mkdir's bare 'File exists (...)' before."""
    ledger = _stamped_ledger(tmp_path, articles_dir, make_app, monkeypatch)
    copy = tmp_path / "copy.db"
    assert main(["backup", str(copy)]) == 0
    blocker = tmp_path / "state"
    blocker.write_text("a file\n")
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(blocker / "sub" / "ledger.sqlite3"))
    capsys.readouterr()
    assert main(["restore", str(copy)]) == 2
    assert capsys.readouterr().err == (
        f"feedsvc: configuration error: FEEDSVC_LEDGER_PATH: {blocker}/sub/ledger.sqlite3: "
        f"{blocker} is a file, not a folder\n")
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "new" / "ledger.sqlite3"))
    assert main(["restore", str(copy)]) == 0
    assert (tmp_path / "new" / "ledger.sqlite3").read_bytes() != b""
    assert ledger.exists()


def test_check_says_when_the_ledger_setting_names_a_folder(tmp_path: Path, articles_dir: Path,
                                                           monkeypatch, capsys) -> None:
    """A folder as FEEDSVC_LEDGER_PATH was passed over in silence; serve cannot open it."""
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path))
    assert main(["check", str(articles_dir)]) == 0
    assert (f"feedsvc: ledger {tmp_path}: is not a file; checking without it\n"
            in capsys.readouterr().err)
