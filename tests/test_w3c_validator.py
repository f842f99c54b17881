"""The W3C Feed Validator over every Atom and RSS document we make (issue #12 part 1).

Skipped unless FEEDVALIDATOR_DIR names a checkout of github ``w3c/feedvalidator``
(not on PyPI; see tests/w3c_feedvalidator.py and README "Validating the feeds").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import w3c_feedvalidator
from tests.conftest import BUNDLED
from tests.test_text_fields import write_corpus

pytestmark = pytest.mark.skipif(
    w3c_feedvalidator.available() is None,
    reason="FEEDVALIDATOR_DIR does not name a w3c/feedvalidator checkout",
)

#: What the validator says of plain text that merely looks like markup (a title
#: "<b>Bold</b>" given as type="text"): a heuristic on the words, not a fault.
MARKUP_LOOKALIKE = {"ContainsHTML", "ContainsUndeclaredHTML"}


def _report(results: dict[str, list[w3c_feedvalidator.Event]]) -> str:
    return "\n".join(w3c_feedvalidator.summary(path, events) + "".join(
        f"\n    {event.message}" for event in events) for path, events in results.items())


def test_the_bundled_articles_validate_without_errors_or_warnings(make_app) -> None:
    results = w3c_feedvalidator.validate_app(make_app(BUNDLED))
    assert results
    assert not any(results.values()), _report(results)


def _only_archive(path: str, results: dict) -> bool:
    """Whether ``path`` is archive 1 of a feed that has no archive 2."""
    return "/archive/1/" in path and path.replace("/archive/1/", "/archive/2/") not in results


def _unexpected(results: dict, allowed: set[str]) -> dict:
    """Events other than ``allowed`` kinds, and ArchiveIncomplete on a lone archive.

    RFC 5005 gives the only archive of a feed no prev-archive or next-archive
    link (the current feed is no archive), which the validator flags as
    ArchiveIncomplete.
    """
    out = {}
    for path, events in results.items():
        left = [e for e in events if e.kind not in allowed and not (
            e.kind == "ArchiveIncomplete" and _only_archive(path, results))]
        if left:
            out[path] = left
    return out


def test_archives_of_the_bundled_articles_validate(make_app) -> None:
    results = w3c_feedvalidator.validate_app(make_app(BUNDLED, feed_size=3))
    assert any("/archive/2/" in path for path in results)
    unexpected = _unexpected(results, set())
    assert not unexpected, _report(unexpected)


def test_the_markup_corpus_validates_without_errors(make_app, tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    write_corpus(folder)
    results = w3c_feedvalidator.validate_app(make_app(folder, feed_size=2))
    assert any("/archive/" in path for path in results)
    errors = {path: [e for e in events if e.level == "error"] for path, events in results.items()}
    assert not any(errors.values()), _report(errors)
    others = _unexpected(results, MARKUP_LOOKALIKE)
    assert not others, _report(others)
    # a feed whose text has no markup-like words at all has no warning at all
    clean = results["/authors/ingrid-halvorsen/feed.rss"] + results[
        "/authors/ingrid-halvorsen/feed.atom"]
    assert clean == [], _report({"ingrid": clean})
