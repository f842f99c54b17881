"""Settings from TOML and environment, and the operator's topics file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from feedsvc.cli import _is_loopback, main
from feedsvc.collection import FeedRef
from feedsvc.config import load_settings, require_host_policy
from feedsvc.errors import ConfigError
from tests.conftest import ROOT, write_article
from tests.feedcheck import check_atom


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.articles_dir == tmp_path / "articles"
    assert settings.feed_size == 50 and settings.base_url is None
    assert settings.cache_max_age == 300 and settings.max_limit == 1000


def test_environment_wins_over_toml(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "feedsvc.toml"
    config.parent.mkdir()
    config.write_text('articles_dir = "posts"\nfeed_size = 10\nsite_title = "From TOML"\n'
                      'websub_hubs = ["https://hub.example/"]\nbase_url = "https://a.example"\n')
    settings = load_settings(environ={"FEEDSVC_CONFIG": str(config), "FEEDSVC_FEED_SIZE": "20"},
                             cwd=tmp_path)
    assert settings.feed_size == 20
    assert settings.site_title == "From TOML"
    assert settings.articles_dir == config.parent / "posts"  # relative to the TOML file
    assert settings.websub_hubs == ("https://hub.example",)


def test_feedsvc_table_in_toml(tmp_path: Path) -> None:
    config = tmp_path / "f.toml"
    config.write_text('[feedsvc]\nlanguage = "pt-BR"\n')
    assert load_settings(environ={"FEEDSVC_CONFIG": str(config)}).language == "pt-BR"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FEEDSVC_FEED_SIZE", "abc", "whole number"),
    ("FEEDSVC_FEED_SIZE", "0", "between 1 and 1000"),
    ("FEEDSVC_BASE_URL", "example.org", "absolute http"),
    ("FEEDSVC_BASE_URL", "https://x.org/?q=1", "query"),
    ("FEEDSVC_CACHE_MAX_AGE", "-5", "between"),
    ("FEEDSVC_RELOAD_INTERVAL", "soon", "number"),
    ("FEEDSVC_LANGUAGE", "en gb", "language tag"),
    ("FEEDSVC_WEBSUB_HUBS", "ftp://hub", "absolute http"),
    ("FEEDSVC_CONFIG", "/nonexistent/feedsvc.toml", "no such file"),
    ("FEEDSVC_BASE_URL", "https://x.org:99999", "port must be a number from 1 to 65535"),
    ("FEEDSVC_BASE_URL", "https://x.org:https", "port must be a number from 1 to 65535"),
    ("FEEDSVC_BASE_URL", "https://x .org", "not a host name"),
    ("FEEDSVC_BASE_URL", "https://bücher.example", "not a host name"),
    ("FEEDSVC_BASE_URL", "https://editor:secret@x.org", "user name or password"),
    ("FEEDSVC_WEBSUB_HUBS", "https://hub.example:0", "port must be a number"),
    ("FEEDSVC_PURGE", "nginx:http://127.0.0.1:99999", "nginx: port must be a number"),
    ("FEEDSVC_PURGE", "varnish:http://cache .local:6081", "varnish: 'cache .local' is not a host"),
    ("FEEDSVC_DATABASE_URL", "postgresql://u:pw@db:99999/feeds", "port is a number from 1"),
    ("FEEDSVC_DATABASE_URL", "postgresql://u:pw@[db/feeds", "not a database URL"),
    ("FEEDSVC_FEED_SZE", "20", "unknown setting; did you mean FEEDSVC_FEED_SIZE?"),
    ("FEEDSVC_BASEURL", "https://x.org", "did you mean FEEDSVC_BASE_URL?"),
])
def test_invalid_values_name_the_setting(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={variable: value})
    assert info.value.setting == variable
    assert message in str(info.value)


def test_bad_toml(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("feed_size = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(environ={"FEEDSVC_CONFIG": str(config)})
    config.write_text("feed_sise = 3\n")
    with pytest.raises(ConfigError, match="unknown setting.*feed_sise"):
        load_settings(environ={"FEEDSVC_CONFIG": str(config)})


def test_variables_of_gunicorn_conf_are_not_unknown() -> None:
    """deploy/gunicorn.conf.py reads these; the app must not refuse them."""
    settings = load_settings(environ={"FEEDSVC_WORKERS": "3", "FEEDSVC_BIND": "0.0.0.0:80",
                                      "FEEDSVC_THREADS": "2", "FEEDSVC_MAX_WORKERS": "4",
                                      "FEEDSVC_TIMEOUT": "30", "FEEDSVC_ACCESS_LOG": "-",
                                      "FEEDSVC_LOG_LEVEL": "info", "FEEDSVC_PRELOAD": "1",
                                      "FEEDSVC_BASE_URL": "https://x.org:8443/news/"})
    assert settings.base_url == "https://x.org:8443/news"
    hosts = load_settings(environ={"FEEDSVC_WEBSUB_HUBS": "http://[::1]:8080/hub",
                                   "FEEDSVC_BASE_URL": "http://127.0.0.1:8000"})
    assert hosts.websub_hubs == ("http://[::1]:8080/hub",)
    purge = load_settings(environ={"FEEDSVC_PURGE": "webhook:https://u:token@hooks.example/p,"
                                                    "varnish:http://my_varnish:6081",
                                   "FEEDSVC_BASE_URL": "https://news.example.org"})
    assert purge.purge == (("webhook", "https://u:token@hooks.example/p"),
                           ("varnish", "http://my_varnish:6081"))


def test_purge_settings_that_would_do_nothing_or_send_relative_urls() -> None:
    """A secret with no webhook was ignored without a word; a webhook without a base URL
    sent '/feed.atom' where README promises absolute URLs."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FEEDSVC_PURGE": "varnish:http://127.0.0.1:6081",
                               "FEEDSVC_PURGE_SECRET": "s3cret"})
    assert str(info.value) == ("FEEDSVC_PURGE_SECRET: signs webhook purges, but FEEDSVC_PURGE "
                               "names no webhook:<url>: it would be used for nothing")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FEEDSVC_PURGE": "webhook:https://hooks.example/p"})
    assert info.value.setting == "FEEDSVC_PURGE" and "need FEEDSVC_BASE_URL" in str(info.value)
    ok = load_settings(environ={"FEEDSVC_PURGE": "webhook:https://hooks.example/p",
                                "FEEDSVC_PURGE_SECRET": "s3cret",
                                "FEEDSVC_BASE_URL": "https://news.example.org"})
    assert ok.purge_secret == "s3cret"


def test_a_value_from_the_toml_file_is_named_as_it_is_written_there(tmp_path: Path) -> None:
    config = tmp_path / "feedsvc.toml"
    config.write_text('[feedsvc]\nfeed_size = "lots"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FEEDSVC_CONFIG": str(config)})
    assert info.value.setting == "FEEDSVC_FEED_SIZE"
    assert str(info.value) == (f"FEEDSVC_FEED_SIZE: expected a whole number, got 'lots' "
                               f"(feed_size in {config})")


def test_keys_beside_the_feedsvc_table_are_refused(tmp_path: Path) -> None:
    """With a [feedsvc] table, a key outside it was silently ignored."""
    config = tmp_path / "feedsvc.toml"
    config.write_text('feed_size = 10\n[feedsvc]\nsite_title = "News"\n[server]\nport = 1\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FEEDSVC_CONFIG": str(config)})
    assert info.value.setting == "FEEDSVC_CONFIG"
    assert f"{config}: feed_size, server outside the [feedsvc] table" in str(info.value)


@pytest.mark.parametrize("conf", [[], ["-c", "deploy/gunicorn.conf.py"]])
@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FEEDSVC_FEED_SIZE", "lots", "feedsvc: configuration error: FEEDSVC_FEED_SIZE: expected "
                                  "a whole number, got 'lots'"),
    ("FEEDSVC_LEDGER_PATH", "junk", "feedsvc: ledger {tmp}/junk: file is not a database"),
])
def test_gunicorn_refuses_to_start_on_an_invalid_setting(tmp_path: Path, conf: list[str],
                                                         variable: str, value: str,
                                                         message: str) -> None:
    """One line and a stop, with or without preload (then each worker loads the app, and
    only gunicorn's boot-error status stops the master instead of a restart loop)."""
    (tmp_path / "junk").write_bytes(b"not a ledger\n" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_BASE_URL="https://news.example.org", FEEDSVC_BIND="127.0.0.1:0",
               FEEDSVC_LEDGER_PATH=str(tmp_path / "l.db"))
    env[variable] = str(tmp_path / value) if variable == "FEEDSVC_LEDGER_PATH" else value
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", *conf, "--no-control-socket", "--bind",
         "127.0.0.1:0", "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60)
    assert result.returncode != 0
    assert message.format(tmp=tmp_path) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("feedsvc: ") == 1, result.stderr  # no restarted worker


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FEEDSVC_WORKERS", "four", "FEEDSVC_WORKERS: expected a whole number, got 'four'"),
    ("FEEDSVC_WORKERS", "0", "FEEDSVC_WORKERS: expected 1 or more, got 0"),
    ("FEEDSVC_THREADS", "-2", "FEEDSVC_THREADS: expected 1 or more, got -2"),
    ("FEEDSVC_TIMEOUT", "30s", "FEEDSVC_TIMEOUT: expected a whole number, got '30s'"),
    ("FEEDSVC_MAX_WORKERS", "0", "FEEDSVC_MAX_WORKERS: expected 1 or more, got 0"),
    ("FEEDSVC_BIND", "0.0.0.0:http", "FEEDSVC_BIND: expected host:port with a port from 1 to "
                                     "65535 ([::1]:8000 for IPv6) or unix:/path, got "
                                     "'0.0.0.0:http'"),
    ("FEEDSVC_BIND", "127.0.0.1:8000, ::1:8000", "FEEDSVC_BIND: expected host:port with a port "
                                                 "from 1 to 65535 ([::1]:8000 for IPv6) or "
                                                 "unix:/path, got '::1:8000'"),
])
def test_gunicorn_conf_refuses_a_bad_count(tmp_path: Path, variable: str, value: str,
                                           message: str) -> None:
    """deploy/gunicorn.conf.py's own variables: int() was a traceback that did not name
    the variable, and FEEDSVC_WORKERS=0 a master that listened with no worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update({"FEEDSVC_BIND": "127.0.0.1:0", "FEEDSVC_LEDGER_PATH": str(tmp_path / "l.db"),
                "FEEDSVC_BASE_URL": "https://news.example.org", variable: value})
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == message, result.stderr
    assert "Traceback" not in result.stderr and "Listening at" not in result.stderr


def test_gunicorn_refuses_to_start_without_base_url_or_trusted_hosts(tmp_path: Path) -> None:
    """Issue #15 part 2: links from any Host a client sends is no way to serve the public."""
    shutil.copytree(ROOT / "articles", tmp_path / "articles")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(FEEDSVC_ARTICLES_DIR=str(tmp_path / "articles"),
               FEEDSVC_LEDGER_PATH=str(tmp_path / "l.db"), FEEDSVC_TRUSTED_HOSTS=" ")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--no-control-socket", "--bind", "127.0.0.1:0",
         "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "FEEDSVC_TRUSTED_HOSTS: set FEEDSVC_BASE_URL" in result.stderr, result.stderr
    assert not (tmp_path / "l.db").exists()  # refused before reading or recording anything


def test_host_policy_and_trusted_hosts_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FEEDSVC_BASE_URL .* FEEDSVC_TRUSTED_HOSTS"):
        require_host_policy(load_settings(environ={}, cwd=tmp_path))
    require_host_policy(load_settings(environ={"FEEDSVC_BASE_URL": "https://a.example"}))
    settings = load_settings(environ={"FEEDSVC_TRUSTED_HOSTS": "News.Example.org, .example.net,"
                                                               " [::1],127.0.0.1"})
    require_host_policy(settings)
    assert settings.trusted_hosts == ("news.example.org", ".example.net", "[::1]", "127.0.0.1")
    toml = tmp_path / "f.toml"
    toml.write_text('trusted_hosts = ["a.example", "b.example"]\n')
    assert load_settings(environ={"FEEDSVC_CONFIG": str(toml)}).trusted_hosts == (
        "a.example", "b.example")
    for bad in ("https://a.example", "a.example:443", "a.example/feed", "*.example", "a b"):
        with pytest.raises(ConfigError, match="FEEDSVC_TRUSTED_HOSTS: expected host names"):
            load_settings(environ={"FEEDSVC_TRUSTED_HOSTS": bad})


def test_serve_defaults_to_loopback_hosts_only_on_loopback(tmp_path: Path,
                                                           monkeypatch, capsys) -> None:
    """``feedsvc serve`` on 0.0.0.0 with neither setting stops before starting gunicorn."""
    for name in [n for n in os.environ if n.startswith("FEEDSVC_")]:
        monkeypatch.delenv(name)
    (tmp_path / "articles").mkdir()
    assert main(["serve", str(tmp_path / "articles"), "--host", "0.0.0.0"]) == 2
    assert "FEEDSVC_TRUSTED_HOSTS: set FEEDSVC_BASE_URL" in capsys.readouterr().err
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.0.2.1")


def test_missing_base_url_warns_once_and_uses_the_request_host(make_app, articles_dir,
                                                             caplog) -> None:
    with caplog.at_level("WARNING", logger="feedsvc"):
        app = make_app(articles_dir, base_url=None)
    assert sum("FEEDSVC_BASE_URL is not set" in r.getMessage() for r in caplog.records) == 1
    client = app.test_client()
    parsed = check_atom(client.get("/feed.atom", base_url="http://reader.test:8080").data)
    assert parsed.feed.link == "http://reader.test:8080/"
    assert all(e.link.startswith("http://reader.test:8080/articles/") for e in parsed.entries)
    assert all(e.id.startswith("tag:localhost,") for e in parsed.entries)
    assert sum("FEEDSVC_BASE_URL is not set" in r.getMessage() for r in caplog.records) == 1


def test_topics_file_names_and_aliases(make_app, articles_dir, tmp_path) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text('[topics.eu]\nname = "European Union"\naliases = ["brussels"]\n'
                      '[topics.nato]\nname = "The Alliance"\n')
    write_article(articles_dir, "brussels.txt", "Brussels Weighs New Rules",
                  topic="brussels weighs rules", body="Officials in Brussels met today. "
                  "The meeting in Brussels ended late.")
    app = make_app(articles_dir, topics_file=str(topics))
    collection = app.extensions["feedsvc"].collection
    assert "brussels" not in collection.topics
    assert collection.topics["eu"].name == "European Union"
    assert collection.topics["nato"].name == "The Alliance"
    eu_titles = [e.title for e in collection.feed_entries(FeedRef("topic", "eu"))]
    assert "Brussels Weighs New Rules" in eu_titles
    client = app.test_client()
    assert client.get("/topics/brussels/feed.atom").status_code == 404
    entry = next(e for e in check_atom(client.get("/topics/eu/feed.atom").data).entries
                 if e.title == "Brussels Weighs New Rules")
    assert [t.label for t in entry.tags if t.term == "eu"] == ["European Union"]


@pytest.mark.parametrize(("content", "message"), [
    ("[topics.eu]\nname = 3\n", "name must be non-empty text"),
    ("[topics.eu]\ncolour = 'blue'\n", "unknown key"),
    ("[topics.eu]\naliases = ['x']\n[topics.nato]\naliases = ['x']\n", "given to both"),
    ("[other]\n", "expected only [topics.<slug>]"),
    ("[topics.eu\n", "not valid TOML"),
])
def test_bad_topics_file(make_app, articles_dir, tmp_path, content, message) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text(content)
    with pytest.raises(ConfigError) as info:
        make_app(articles_dir, topics_file=str(topics))
    assert info.value.setting == "FEEDSVC_TOPICS_FILE"
    assert message in str(info.value)


def test_articles_folder_missing_at_start(make_app, tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        make_app(tmp_path / "nowhere")
    assert info.value.setting == "FEEDSVC_ARTICLES_DIR"
    assert str(tmp_path / "nowhere") in str(info.value)


def test_a_database_url_without_host_is_shown_as_written() -> None:
    """libpq's postgresql:///db (a local socket) was shown as postgresql:/db in messages."""
    url = load_settings(environ={"FEEDSVC_DATABASE_URL": "postgresql:///feeds?host=/run/pg"})
    assert url.database_url.redacted == "postgresql:///feeds?host=/run/pg"
    multi = load_settings(environ={"FEEDSVC_DATABASE_URL": "postgresql://a:5432,b:5433/feeds"})
    assert multi.database_url.redacted == "postgresql://a:5432,b:5433/feeds"


@pytest.mark.parametrize("setting", ["FEEDSVC_CONFIG", "FEEDSVC_TOPICS_FILE"])
@pytest.mark.parametrize(("content", "message"), [
    ('# settings\nsite_title = "Caf\xe9"\n'.encode("latin-1"),
     "is not UTF-8: byte 0xe9 on line 2; TOML files are UTF-8, save it as such"),
    (b'\xef\xbb\xbfsite_title = "News"\n',
     "starts with a byte-order mark, which TOML does not allow: save it as UTF-8 without BOM"),
])
def test_a_toml_file_that_is_not_utf8(tmp_path: Path, make_app, articles_dir: Path,
                                      setting: str, content: bytes, message: str) -> None:
    """A Latin-1 file was a UnicodeDecodeError traceback; a BOM 'Invalid statement'."""
    path = tmp_path / "file.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        if setting == "FEEDSVC_CONFIG":
            load_settings(environ={"FEEDSVC_CONFIG": str(path)})
        else:
            make_app(articles_dir, topics_file=str(path))
    assert info.value.setting == setting
    assert str(info.value) == f"{setting}: {path} {message}"


def test_an_unreadable_robots_extra_file_is_named(world_dir: Path) -> None:
    """Read while the app starts: a PermissionError traceback under gunicorn."""
    from tests.unprivileged import run_unprivileged

    extra = world_dir / "robots-extra.txt"
    extra.write_text("User-agent: GPTBot\nDisallow: /\n")
    extra.chmod(0o600)

    def load() -> str:
        try:
            load_settings(environ={"FEEDSVC_ROBOTS_EXTRA": str(extra)}, cwd=world_dir)
        except ConfigError as exc:
            return str(exc)
        return "loaded"

    assert run_unprivileged(load) == (f"FEEDSVC_ROBOTS_EXTRA: cannot read {extra}: "
                                      "Permission denied")
