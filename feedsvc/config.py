"""Settings: a TOML file and environment variables, the variables winning.

Every setting has one name in three places: the environment variable
(``FEEDSVC_FEED_SIZE``), the TOML key (``feed_size``) and the attribute of
:class:`Settings`. An invalid value raises :class:`ConfigError` naming the
environment variable, so the operator knows exactly what to fix.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

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


def _to_url(name: str, value: Any, base: Path) -> str:
    text = _to_text(name, value, base)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            _env_name(name),
            f"expected an absolute http(s) URL such as https://example.org, got {text!r}",
        )
    if parts.query or parts.fragment:
        raise ConfigError(_env_name(name), f"must not have a query or fragment: {text!r}")
    return text.rstrip("/")


def _to_url_list(name: str, value: Any, base: Path) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(_to_url(name, item, base) for item in items if str(item).strip())


def _to_language(name: str, value: Any, base: Path) -> str:
    text = _to_text(name, value, base)
    if not all(part.isalnum() and part.isascii() for part in text.split("-")):
        raise ConfigError(
            _env_name(name), f"expected a language tag such as en or pt-BR, got {text!r}"
        )
    return text


def _to_bool(name: str, value: Any, base: Path) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(_env_name(name), f"expected true or false, got {value!r}")


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
    if not path.is_file():
        raise ConfigError(_env_name(name), f"no such file: {path}")
    return path


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting with its default; relative paths are resolved at load time."""

    articles_dir: Path = field(default_factory=lambda: Path.cwd() / "articles")
    base_url: str | None = None
    ledger_path: Path | None = None  # default: <instance folder>/ledger.sqlite3
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


_CONVERTERS: dict[str, Callable[[str, Any, Path], Any]] = {
    "articles_dir": _to_path,
    "base_url": _to_url,
    "ledger_path": _to_path,
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
}
assert set(_CONVERTERS) == {f.name for f in fields(Settings)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("FEEDSVC_CONFIG", f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("FEEDSVC_CONFIG", f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("FEEDSVC_CONFIG", f"cannot read {path}: {exc.strerror}") from None
    data = data.get("feedsvc", data) if isinstance(data.get("feedsvc"), dict) else data
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

    config_file = overrides.pop("config", None) or environ.get("FEEDSVC_CONFIG")
    if config_file:
        config_path = _to_path("config", config_file, cwd)
        for key, value in _read_toml(config_path).items():
            raw[key] = (value, config_path.parent)
    for name in _CONVERTERS:
        if _env_name(name) in environ:
            raw[name] = (environ[_env_name(name)], cwd)
    for name, value in overrides.items():
        if name not in _CONVERTERS:
            raise ConfigError(name, f"unknown setting; known: {', '.join(sorted(_CONVERTERS))}")
        raw[name] = (value, cwd)

    values: dict[str, Any] = {}
    for name, (value, base) in raw.items():
        if value is None:
            continue
        if isinstance(value, str) and not value.strip() and name in ("base_url", "websub_hubs",
                                                                       "stats_allow"):
            continue  # an empty variable means "not set", as shells and compose files use it
        values[name] = _CONVERTERS[name](name, value, base)
    defaults = Settings(articles_dir=cwd / "articles")
    settings = replace(defaults, **values)
    if settings.websub_hubs and not settings.base_url:
        raise ConfigError(
            "FEEDSVC_WEBSUB_HUBS",
            "hubs need FEEDSVC_BASE_URL: a ping names the feed's public URL, "
            "and a background reload has no request to take the host from",
        )
    return settings
