"""feedsvc: publish a folder of plain-text articles as Atom, RSS and JSON feeds."""

from .errors import ArticleError, ConfigError, FeedsvcError, LedgerError

__version__ = "0.1.0"
__all__ = ["ArticleError", "ConfigError", "FeedsvcError", "LedgerError", "create_app"]


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see feedsvc.web.create_app
    """Build the Flask app; imported lazily so the pure core never imports Flask."""
    from .web import create_app as _create_app

    return _create_app(*args, **kwargs)
