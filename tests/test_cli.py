"""The feedsvc command as an operator uses it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/feed.atom",
                                            timeout=5) as response:
                    body = response.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        parsed = check_atom(body)
        assert len(parsed.entries) == len(list((ROOT / "articles").rglob("*.txt")))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
