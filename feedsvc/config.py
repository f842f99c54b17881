"""Settings: a TOML file and environment variables, the variables winning.

Every setting has one name in three places: the environment variable
(``FEEDSVC_FEED_SIZE``), the TOML key (``feed_size``) and the attribute of
:class:`Settings`. An invalid value raises :class:`ConfigError` naming the
environment variable, so the operator knows exactly what to fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .sql import DatabaseURL

ENV_PREFIX = "FEEDSVC_"


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _to_path(name: str, value: Any, base: Path) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ConfigError(_env_name(name), f"expected a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _to_number(kind: type, low: float, high: float) -> Callable[[str, Any, Path], Any]:
    """A converter to ``kind`` (int or float) within ``[low, high]``."""
    word = "a whole number" if kind is int else "a number"

    def convert(name: str, value: Any, base: Path) -> Any:
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            number = kind(str(value).strip())
        except ValueError:
            raise ConfigError(_env_name(name), f"expected {word}, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(_env_name(name), f"must be between {low} and {high}, got {number}")
        return number

    return convert


def _to_int(low: int, high: int) -> Callable[[str, Any, Path], int]:
    return _to_number(int, low, high)


def _to_float(low: float, high: float) -> Callable[[str, Any, Path], float]:
    return _to_number(float, low, high)


def _to_text(name: str, value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(_env_name(name), f"expected non-empty text, got {value!r}")
    return value.strip()


#: A host name as a URL may hold it (ASCII; an IDN in its xn-- form), or an IP address.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_URL_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _url_fault(url: str) -> str | None:
    """What is wrong with ``url`` as an absolute http(s) URL, or None.

    urlsplit accepts a port of 99999 or "https" and a host with a space; they
    failed later, as a traceback where the port or the id authority was used.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range", "Invalid IPv6 URL", ...
        if "port" in str(exc).lower():
            return f"port must be a number from 1 to 65535, got {url!r}"
        return f"expected an absolute http(s) URL such as https://example.org, got {url!r}"
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return f"expected an absolute http(s) URL such as https://example.org, got {url!r}"
    if port == 0:
        return f"port must be a number from 1 to 65535, got {url!r}"
    if ":" not in host and not _URL_HOST.fullmatch(host):  # ":" only in an IPv6 literal
        return (f"{host!r} is not a host name (ASCII letters, digits, '-' and '.'; an "
                f"international name in its xn-- form) in {url!r}")
    return None


def _to_url(name: str, value: Any, base: Path) -> str:
    text = _to_text(name, value, base)
    fault = _url_fault(text)
    if fault:
        raise ConfigError(_env_name(name), fault)
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise ConfigError(_env_name(name), f"must not have a query or fragment: {text!r}")
    if parts.username is not None or parts.password is not None:
        # Feeds and pages show this URL to every reader.
        raise ConfigError(_env_name(name), "must not hold a user name or password: it is "
                          "shown in every feed")
    return text.rstrip("/")


def _to_url_list(name: str, value: Any, base: Path) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(_to_url(name, item, base) for item in items if str(item).strip())


def _to_bool(name: str, value: Any, base: Path) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(_env_name(name), f"{value!r} is not true or false")


#: A host name (``news.example.org``, ``.example.org`` for every subdomain), an
#: IPv4 address or a bracketed IPv6 one; no scheme, port or path.
_HOST_PATTERN = re.compile(r"\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
                           r"|\[[0-9a-f:.]+\]")


def _to_host_list(name: str, value: Any, base: Path) -> tuple[str, ...]:
    """Host names as werkzeug's ``trusted_hosts`` takes them (ports are not compared)."""
    items = value if isinstance(value, list) else str(value).split(",")
    hosts = []
    for item in items:
        host = str(item).strip().lower().rstrip(".")
        if not host:
            continue
        if _HOST_PATTERN.fullmatch(host) is None:
            raise ConfigError(
                _env_name(name),
                f"expected host names such as news.example.org or .example.org (no scheme, "
                f"port or path), got {str(item).strip()!r}",
            )
        hosts.append(host)
    return tuple(hosts)


def _to_database_url(name: str, value: Any, base: Path) -> DatabaseURL:
    if isinstance(value, DatabaseURL):
        return value
    try:
        return DatabaseURL.parse(str(value))
    except ValueError as exc:
        raise ConfigError(_env_name(name), str(exc)) from None


def _to_hub_mode(name: str, value: Any, base: Path) -> str:
    text = _to_text(name, value, base).lower()
    if text not in ("off", "builtin"):
        raise ConfigError(_env_name(name), f"expected off or builtin, got {value!r}")
    return text


def _to_language(name: str, value: Any, base: Path) -> str:
    text = _to_text(name, value, base)
    if not all(part.isalnum() and part.isascii() for part in text.split("-")):
        raise ConfigError(
            _env_name(name), f"expected a language tag such as en or pt-BR, got {text!r}"
        )
    return text


def _to_networks(name: str, value: Any, base: Path) -> tuple[str, ...]:
    """A comma-separated list of CIDRs (``10.0.0.0/8, ::1``), normalised."""
    import ipaddress

    items = value if isinstance(value, list) else str(value).split(",")
    networks = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ConfigError(_env_name(name), f"expected CIDRs such as 10.0.0.0/8 or "
                              f"2001:db8::/32, got {text!r}") from None
    return tuple(networks)


def _to_file(name: str, value: Any, base: Path) -> Path:
    path = _to_path(name, value, base)
    try:
        if not path.is_file():
            raise ConfigError(_env_name(name), f"no such file: {path}")
        path.open("rb").close()  # read at start-up: a PermissionError there was a traceback
    except OSError as exc:
        raise ConfigError(_env_name(name), f"cannot read {path}: {exc.strerror}") from None
    return path
#: The purgers FEEDSVC_PURGE may name (feedsvc.purge).
PURGER_KINDS = ("nginx", "varnish", "webhook")


def _to_purgers(name: str, value: Any, base: Path) -> tuple[tuple[str, str], ...]:
    """``nginx:http://127.0.0.1:80, varnish:http://127.0.0.1:6081`` -> ((kind, url), ...)."""
    items = value if isinstance(value, list) else str(value).split(",")
    out: list[tuple[str, str]] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        kind, sep, url = item.partition(":")
        if not sep or kind not in PURGER_KINDS:
            raise ConfigError(_env_name(name), f"expected <kind>:<url> with kind one of "
                              f"{', '.join(PURGER_KINDS)}, got {item!r}")
        fault = _url_fault(url)
        if fault:
            raise ConfigError(_env_name(name), f"{kind}: {fault}")
        out.append((kind, url.rstrip("/")))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting with its default; relative paths are resolved at load time."""

    articles_dir: Path = field(default_factory=lambda: Path.cwd() / "articles")
    base_url: str | None = None
    ledger_path: Path | None = None  # default: <instance folder>/ledger.sqlite3
    #: Where the store lives: sqlite:////abs/path (ledger_path is its shorthand) or a
    #: postgresql:// URL, for several hosts. None: the SQLite file at ledger_path.
    database_url: DatabaseURL | None = None
    feed_size: int = 50
    topics_file: Path | None = None
    site_title: str = "feedsvc"
    site_subtitle: str = "Articles published by feedsvc"
    language: str = "en"
    max_article_bytes: int = 2 * 1024 * 1024
    cache_max_age: int = 300
    archive_max_age: int = 86400
    reload_interval: float = 5.0
    max_limit: int = 1000
    websub_hubs: tuple[str, ...] = ()
    trusted_proxies: int = 0
    count_subscribers: bool = True
    audience_window: int = 7  # days
    audience_flush_interval: float = 5.0
    stats_allow: tuple[str, ...] = ()  # CIDRs besides localhost allowed to see /stats
    robots_extra: Path | None = None
    #: Hosts the service answers for; other ``Host`` headers get a 400 before
    #: any rendering. Empty means any host (only safe with ``base_url`` set).
    trusted_hosts: tuple[str, ...] = ()
    #: What a worker's caches of rendered documents and entry fragments may hold.
    cache_bytes: int = 256 * 1024 * 1024
    inotify: bool = True  # watch the folder with inotify (the rescan stays as a fallback)
    #: Send ``Surrogate-Key`` (Fastly, Varnish xkey) / ``Cache-Tag`` (Cloudflare).
    surrogate_keys: bool = True
    cache_tags: bool = False
    #: Caches to purge on every change (feedsvc.purge): (kind, url) pairs.
    purge: tuple[tuple[str, str], ...] = ()
    #: HMAC-SHA256 secret of webhook purges (``X-Feedsvc-Signature``).
    purge_secret: str | None = None
    #: ``s-maxage`` for shared caches; None: a day when purging is on, else not sent.
    shared_max_age: int | None = None
    #: The built-in WebSub hub (feedsvc.hub): ``off`` or ``builtin`` (at ``<base>/hub``).
    hub: str = "off"
    hub_lease_seconds: int = 10 * 86400
    hub_lease_min_seconds: int = 3600
    hub_lease_max_seconds: int = 30 * 86400
    hub_allow_private_callbacks: bool = False
    hub_max_subscriptions: int = 10_000
    #: Subscription requests one client may make per minute, per process.
    hub_rate_limit: int = 60
    #: The wait before a failed delivery's first retry; it doubles for each next one.
    hub_retry_seconds: float = 60.0

    @property
    def hub_url(self) -> str | None:
        """The built-in hub's URL, when it is on."""
        return f"{self.base_url}/hub" if self.hub == "builtin" and self.base_url else None

    @property
    def advertised_hubs(self) -> tuple[str, ...]:
        """Every hub a feed names: the external ones, then the built-in one."""
        return self.websub_hubs + ((self.hub_url,) if self.hub_url else ())


_CONVERTERS: dict[str, Callable[[str, Any, Path], Any]] = {
    "articles_dir": _to_path,
    "base_url": _to_url,
    "ledger_path": _to_path,
    "database_url": _to_database_url,
    "feed_size": _to_int(1, 1000),
    "topics_file": _to_path,
    "site_title": _to_text,
    "site_subtitle": _to_text,
    "language": _to_language,
    "max_article_bytes": _to_int(1024, 1024**3),
    "cache_max_age": _to_int(0, 31_536_000),
    "archive_max_age": _to_int(0, 31_536_000),
    "reload_interval": _to_float(0.0, 86400.0),
    "max_limit": _to_int(1, 100_000),
    "websub_hubs": _to_url_list,
    "trusted_proxies": _to_int(0, 10),
    "count_subscribers": _to_bool,
    "audience_window": _to_int(1, 90),
    "audience_flush_interval": _to_float(0.05, 3600.0),
    "stats_allow": _to_networks,
    "robots_extra": _to_file,
    "trusted_hosts": _to_host_list,
    "cache_bytes": _to_int(1024 * 1024, 64 * 1024**3),
    "inotify": _to_bool,
    "surrogate_keys": _to_bool,
    "cache_tags": _to_bool,
    "purge": _to_purgers,
    "purge_secret": _to_text,
    "shared_max_age": _to_int(0, 31_536_000),
    "hub": _to_hub_mode,
    "hub_lease_seconds": _to_int(1, 365 * 86400),
    "hub_lease_min_seconds": _to_int(1, 365 * 86400),
    "hub_lease_max_seconds": _to_int(1, 365 * 86400),
    "hub_allow_private_callbacks": _to_bool,
    "hub_max_subscriptions": _to_int(1, 10_000_000),
    "hub_rate_limit": _to_int(1, 100_000),
    "hub_retry_seconds": _to_float(0.01, 86400.0),
}
assert set(_CONVERTERS) == {f.name for f in fields(Settings)}


def read_toml_file(path: Path, setting: str) -> dict[str, Any]:
    """A TOML file the setting names, or the ConfigError saying why it cannot be read.

    TOML is UTF-8: a Latin-1 file was a UnicodeDecodeError traceback, and a
    byte-order mark (Windows editors write one) "Invalid statement (at line 1,
    column 1)".
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(setting, f"no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(setting, f"{path} starts with a byte-order mark, which TOML does "
                          "not allow: save it as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(setting, f"{path} is not UTF-8: byte {raw[exc.start]:#04x} on line "
                          f"{line}; TOML files are UTF-8, save it as such") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(setting, f"{path} is not valid TOML: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    data = read_toml_file(path, "FEEDSVC_CONFIG")
    if isinstance(data.get("feedsvc"), dict):
        outside = sorted(set(data) - {"feedsvc"})
        if outside:  # read from the table alone, they would be silently ignored
            raise ConfigError("FEEDSVC_CONFIG", f"{path}: {', '.join(outside)} outside the "
                              "[feedsvc] table; put every setting in it, or drop the table")
        data = data["feedsvc"]
    unknown = sorted(set(data) - set(_CONVERTERS))
    if unknown:
        raise ConfigError(
            "FEEDSVC_CONFIG", f"{path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_CONVERTERS))}"
        )
    return data


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build settings from the TOML file, then the environment, then ``overrides``.

    ``overrides`` (used by tests and ``create_app(config)``) take lower-case
    names. Relative paths in the TOML file are relative to that file, as
    operators expect from nginx and gunicorn configs; others to ``cwd``.
    """
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    overrides = dict(overrides or {})
    raw: dict[str, tuple[Any, Path]] = {}

    _refuse_unknown_variables(environ)
    # name -> (value, folder relative paths start from, the TOML file it came from)
    raw: dict[str, tuple[Any, Path, Path | None]] = {}
    config_file = overrides.pop("config", None) or environ.get("FEEDSVC_CONFIG")
    if config_file:
        config_path = _to_path("config", config_file, cwd)
        for key, value in _read_toml(config_path).items():
            raw[key] = (value, config_path.parent, config_path)
    for name in _CONVERTERS:
        if _env_name(name) in environ:
            raw[name] = (environ[_env_name(name)], cwd, None)
    for name, value in overrides.items():
        if name not in _CONVERTERS:
            raise ConfigError(name, f"unknown setting; known: {', '.join(sorted(_CONVERTERS))}")
        raw[name] = (value, cwd, None)

    values: dict[str, Any] = {}
    for name, (value, base, origin) in raw.items():
        if value is None:
            continue
        if isinstance(value, str) and not value.strip() and name in (
            "base_url", "websub_hubs", "trusted_hosts", "purge", "stats_allow"
        ):
            continue  # an empty variable means "not set", as shells and compose files use it
        try:
            values[name] = _CONVERTERS[name](name, value, base)
        except ConfigError as exc:
            if origin is None:
                raise
            # The operator wrote ``feed_size`` in the file, not FEEDSVC_FEED_SIZE.
            raise ConfigError(exc.setting, f"{exc.reason} ({name} in {origin})") from None
    defaults = Settings(articles_dir=cwd / "articles")
    settings = replace(defaults, **values)
    settings = _one_database(settings)
    if settings.websub_hubs and not settings.base_url:
        raise ConfigError(
            "FEEDSVC_WEBSUB_HUBS",
            "hubs need FEEDSVC_BASE_URL: a ping names the feed's public URL, "
            "and a background reload has no request to take the host from",
        )
    webhooks = [url for kind, url in settings.purge if kind == "webhook"]
    if settings.purge_secret and not webhooks:
        raise ConfigError("FEEDSVC_PURGE_SECRET", "signs webhook purges, but FEEDSVC_PURGE "
                          "names no webhook:<url>: it would be used for nothing")
    if webhooks and not settings.base_url:
        raise ConfigError("FEEDSVC_PURGE", "webhook purges send absolute URLs, which need "
                          "FEEDSVC_BASE_URL (a purge runs with no request to take the host "
                          "from)")
    if settings.purge and settings.shared_max_age is None:
        settings = replace(settings, shared_max_age=86400)  # purged on change: keep a day
    if settings.hub == "builtin" and not settings.base_url:
        raise ConfigError(
            "FEEDSVC_HUB",
            "the built-in hub needs FEEDSVC_BASE_URL: topics and the hub's own URL are "
            "public URLs, and deliveries run with no request to take the host from",
        )
    if not (settings.hub_lease_min_seconds <= settings.hub_lease_seconds
            <= settings.hub_lease_max_seconds):
        raise ConfigError(
            "FEEDSVC_HUB_LEASE_SECONDS",
            f"the default lease ({settings.hub_lease_seconds} s) must lie between "
            f"FEEDSVC_HUB_LEASE_MIN_SECONDS ({settings.hub_lease_min_seconds}) and "
            f"FEEDSVC_HUB_LEASE_MAX_SECONDS ({settings.hub_lease_max_seconds})",
        )
    return settings


#: FEEDSVC_* variables that are no setting of the app: the TOML file's name, and what
#: deploy/gunicorn.conf.py reads (FEEDSVC_PRELOAD it sets for its workers).
OTHER_VARIABLES = frozenset({
    "FEEDSVC_CONFIG", "FEEDSVC_PRELOAD", "FEEDSVC_BIND", "FEEDSVC_WORKERS",
    "FEEDSVC_MAX_WORKERS", "FEEDSVC_THREADS", "FEEDSVC_TIMEOUT", "FEEDSVC_ACCESS_LOG",
    "FEEDSVC_LOG_LEVEL",
})


def _refuse_unknown_variables(environ: Mapping[str, str]) -> None:
    """A misspelt variable (FEEDSVC_FEED_SZE) is refused, as an unknown TOML key is:
    ignored, the service would run on the default without a word."""
    known = {_env_name(name) for name in _CONVERTERS} | OTHER_VARIABLES
    unknown = sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else "README \"Configuration\" lists them"
        raise ConfigError(unknown[0], f"unknown setting; {hint}")


def _one_database(settings: Settings) -> Settings:
    """FEEDSVC_LEDGER_PATH is the SQLite URL's shorthand: given both, they must agree."""
    url, path = settings.database_url, settings.ledger_path
    if url is None:
        return settings
    if url.dialect == "sqlite":
        if path is not None and Path(path) != url.path:
            raise ConfigError("FEEDSVC_DATABASE_URL", f"{url.redacted} and FEEDSVC_LEDGER_PATH "
                              f"{path} name two different files: set one of them")
        return replace(settings, ledger_path=url.path)
    if path is not None:
        raise ConfigError("FEEDSVC_DATABASE_URL", f"{url.redacted} is PostgreSQL, but "
                          f"FEEDSVC_LEDGER_PATH {path} names a SQLite file: set one of them")
    return settings


def require_articles_folder(path: Path) -> None:
    """The articles folder must be a folder this process can reach; else the ConfigError.

    ``is_dir()`` raises PermissionError for a folder under one the service user
    may not enter: that was a traceback under gunicorn.
    """
    try:
        if path.is_dir():
            return
        there = path.exists()
    except OSError as exc:
        raise ConfigError("FEEDSVC_ARTICLES_DIR",
                          f"{path} cannot be reached: {exc.strerror}") from None
    raise ConfigError("FEEDSVC_ARTICLES_DIR", f"{path} is a file, not a folder" if there
                      else f"{path} is not a folder that exists")


#: What ``feedsvc serve`` on a loopback address trusts when nothing is set.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def require_host_policy(settings: Settings) -> None:
    """Refuse to serve the public with links made from whatever ``Host`` a client sends.

    Without either setting, every new ``Host`` header is a new set of links,
    so a new render and a new cache entry: one client with random hosts took
    a worker from 33,102 to 170 requests/s and grew nginx's cache by 164 MB
    in 20 s. Called where the service starts for real (``wsgi.py``).
    """
    if settings.base_url is None and not settings.trusted_hosts:
        raise ConfigError(
            "FEEDSVC_TRUSTED_HOSTS",
            "set FEEDSVC_BASE_URL (links then never depend on the request) or "
            "FEEDSVC_TRUSTED_HOSTS (the host names this service answers for, e.g. "
            "news.example.org): with neither, any Host header a client sends makes "
            "new links, renders and cache entries",
        )
