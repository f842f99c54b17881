"""One small hierarchy of errors, each carrying what it is about.

Modelled on lemon24/reader: a report or a log line can say exactly which
file or setting failed and why, without parsing a message.
"""

from __future__ import annotations


class FeedsvcError(Exception):
    """Base of every error feedsvc raises on purpose."""


class ArticleError(FeedsvcError):
    """A file that cannot be published as an article.

    ``path`` is the file's path relative to the articles folder (POSIX form),
    ``reason`` a short sentence, ``line`` the 1-based line it concerns if any.
    """

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


class ConfigError(FeedsvcError):
    """An invalid setting; names the setting so the operator can find it."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"{setting}: {reason}")


class LedgerError(FeedsvcError):
    """The ledger of ids and dates could not be read or written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"ledger {path}: {reason}")


class LeaseLost(FeedsvcError):
    """The writer lease was lost mid-pass (it expired, or the database ended the
    writer's session): another process may hold it now, so this one must not write."""
