"""The HTML preview of a feed document: what a browser opening a feed URL sees.

Browsers are dropping XSLT, so the ``<?xml-stylesheet?>`` view of Atom and
RSS is going away; instead the web layer serves this page at the feed's own
URL to clients that ask for HTML and name no feed type. It is one more
representation of a :class:`~feedsvc.model.FeedDocument`, rendered here in
the core like the feeds (pure: same inputs, same bytes, so a stable ETag),
from ``templates/feed_preview.html`` with autoescaping, and cached per feed
version by the publisher like every other render.

The templates of the pages and of the preview see the same globals
(:func:`template_globals`): the URL layout (``urls``) and the format records.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from . import urls
from .collection import FeedRef
from .formats import Format, formats, get_format
from .model import Entry, FeedDocument, Site

if TYPE_CHECKING:
    from .render import FragmentCache

#: The kind of an entry's preview list item in the fragment cache (beside the formats).
PREVIEW_ITEM = "preview-item"
#: RFC 5005 links of a document, as the preview labels them.
ARCHIVE_LABELS = {"current": "Current feed", "next-archive": "Newer entries",
                  "prev-archive": "Older entries"}


class _Formats:
    """The registered formats, read afresh each time a template loops over them."""

    def __iter__(self) -> Iterator[Format]:
        return formats()


def template_globals() -> dict[str, Any]:
    """What every template may use: the URL layout and the formats (pages and preview)."""
    return {
        "urls": urls,
        "formats": _Formats(),
        "topic_ref": lambda slug: FeedRef("topic", slug),
        "author_ref": lambda slug: FeedRef("author", slug),
        "archive_labels": ARCHIVE_LABELS,
        "audience_ref": _audience_ref,
    }


def _audience_ref(key: str) -> FeedRef:
    from .audience import feed_ref

    return feed_ref(key)


@functools.cache
def _environment() -> Environment:
    # Flask's settings for its own templates outside debug mode: autoescape .html, and
    # no auto_reload (Jinja's default stats each template file at every render: a
    # preview stated three, and a 2,000-article build 27,000 times).
    env = Environment(loader=PackageLoader("feedsvc", "templates"),
                      autoescape=select_autoescape(["html"]), auto_reload=False)
    env.globals.update(template_globals())
    return env


def render_preview(doc: FeedDocument, fmt: str, site: Site, base_url: str,
                   fragments: FragmentCache | None = None) -> bytes:
    """The preview page of ``doc`` as served at its ``fmt`` URL, UTF-8 bytes.

    The format matters: the subscribe box shows that format's URL and the
    archive links stay within it. Raises ValueError for an unknown format.
    Each entry's list item is the same in every preview that shows it (a
    topic's, an author's, the site's, in each format): with ``fragments``
    it is rendered once per entry version and base URL and kept there, as
    the feeds' entries are; the items were four fifths of a preview's time.
    """
    record = get_format(fmt)
    if record is None:
        raise ValueError(f"unknown feed format {fmt!r}")
    env = _environment()
    item = env.get_template("_preview_entry.html")

    def entry_item(entry: Entry) -> Markup:
        def make() -> bytes:
            return item.render(entry=entry, base_url=base_url).encode("utf-8")

        made = make() if fragments is None else fragments.remember(
            entry, PREVIEW_ITEM, base_url, make)
        return Markup(made.decode("utf-8"))

    html = env.get_template("feed_preview.html").render(
        doc=doc, fmt=record, site=site, base_url=base_url, feed_ref=None,
        entry_item=entry_item)
    return html.encode("utf-8")
