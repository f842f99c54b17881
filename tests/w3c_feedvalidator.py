"""Run the W3C Feed Validator (github ``w3c/feedvalidator``) over feeds we produce.

The validator is not a dependency: it is not on PyPI, so it is brought in by
hand and named by ``FEEDVALIDATOR_DIR`` (the folder holding its ``src/``)::

    git clone https://github.com/w3c/feedvalidator /opt/feedvalidator
    pip install html5lib rdflib            # its dependencies besides lxml
    FEEDVALIDATOR_DIR=/opt/feedvalidator python3 -m pytest -q tests/test_w3c_validator.py
    FEEDVALIDATOR_DIR=/opt/feedvalidator python3 tests/w3c_feedvalidator.py [articles folder]

The second form prints a line per document (errors, warnings, and the names
of the warning types) for every feed the folder produces, archives included.
Events are filtered as the online validator does ("AA": errors and warnings,
no informational notes).
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Event:
    """One validator finding: ``level`` is "error" or "warning"."""

    level: str
    kind: str  # the validator's class name, e.g. "DuplicateUpdated"
    line: int
    message: str


def available() -> str | None:
    """The validator's ``src`` folder when FEEDVALIDATOR_DIR names one, else None."""
    root = os.environ.get("FEEDVALIDATOR_DIR")
    if not root:
        return None
    src = Path(root) / "src"
    return str(src) if (src / "feedvalidator" / "__init__.py").is_file() else None


def validate(body: bytes, url: str, content_type: str) -> list[Event]:
    """Validate one document as if fetched from ``url`` with ``content_type``.

    ``url`` matters: the validator checks the feed's self link against it.
    """
    src = available()
    if src is None:
        raise RuntimeError("FEEDVALIDATOR_DIR does not name a w3c/feedvalidator checkout")
    if src not in sys.path:
        sys.path.insert(0, src)
    import feedvalidator
    from feedvalidator import compatibility
    from feedvalidator.formatter.text_plain import Formatter
    from feedvalidator.logging import Error

    try:
        result = feedvalidator.validateStream(
            io.BytesIO(body), contentType=content_type, base=url
        )
        events = result["loggedEvents"]
    except feedvalidator.logging.ValidationFailure as failure:
        events = [failure.event]
    events = compatibility.AA(events)
    messages = Formatter(events)
    return [
        Event(
            "error" if isinstance(event, Error) else "warning",
            type(event).__name__,
            int(event.params.get("line", 0) or 0),
            text,
        )
        for event, text in zip(events, messages, strict=True)
    ]


def validate_app(app) -> dict[str, list[Event]]:
    """Every Atom and RSS document an app serves (archives too), validated."""
    from feedsvc.render import CONTENT_TYPES
    from tests.feedcheck import feed_paths

    client = app.test_client()
    base_url = app.extensions["feedsvc"].settings.base_url
    results = {}
    for path in feed_paths(app):
        fmt = path.rsplit(".", 1)[1]
        if fmt in ("atom", "rss"):  # the validator knows no JSON Feed
            results[path] = validate(client.get(path).data, base_url + path, CONTENT_TYPES[fmt])
    return results


def summary(path: str, events: list[Event]) -> str:
    """One line: ``/feed.atom: 0 errors, 2 warnings ['DuplicateUpdated']``."""
    errors = [e for e in events if e.level == "error"]
    kinds = sorted({e.kind for e in events if e.level == "warning"})
    return f"{path}: {len(errors)} errors, {len(events) - len(errors)} warnings {kinds or ''}"


def main(argv: list[str]) -> int:
    """``[articles folder] [feed size]``: validate every feed of the folder via the app.

    The folder defaults to the bundled articles; a small feed size (say 3)
    makes archives, so that they are validated too. Exit status 1 on errors.
    """
    import tempfile

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from feedsvc.web import create_app

    folder = Path(argv[0]) if argv else root / "articles"
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "articles_dir": str(folder),
            "ledger_path": str(Path(tmp) / "ledger.sqlite3"),
            "base_url": "https://news.example.org",
            "reload_interval": 0,
        }
        if len(argv) > 1:
            config["feed_size"] = int(argv[1])
        app = create_app(config, instance_path=Path(tmp) / "instance")
        for path, events in validate_app(app).items():
            print(summary(path, events))
            for event in events:
                print(f"    {event.level}: {event.message}")
            failed = failed or any(e.level == "error" for e in events)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
