"""The registry of output formats: one record a format, everything else derives.

Like reader's ``mount_parser_by_mime_type``: a format is registered once, with
its name (the URL extension), media type, renderer and whether a browser
opening its URL gets the HTML preview; the routes, the fast path's URL map,
content types, ``<link type>`` values, page links and the export all read
this table. Adding a format is its name in :data:`FormatName` plus one
:func:`register_format` call next to its renderer (render.py registers the
built-in three).

Pure: no HTTP, no Flask. The built-in records are registered by
:mod:`feedsvc.render`, which the accessors below import on first use (not
at import time: render imports the model, which imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from .model import FeedDocument, Site

#: Every format's name; also its URL extension (``/feed.atom``).
FormatName = Literal["atom", "rss", "json"]

#: The names, in the order pages and OPML list them.
FEED_FORMATS: tuple[FormatName, ...] = get_args(FormatName)

Renderer = Callable[["FeedDocument", "Site", str], bytes]


@dataclass(frozen=True, slots=True)
class Format:
    """One output format of every feed document."""

    name: FormatName
    #: The bare media type, for ``<link type>`` and Accept matching.
    media_type: str
    #: A FeedDocument, the site and the base URL in; the document's bytes out.
    renderer: Renderer
    #: What people call it, on pages and in the preview ("Atom", "JSON Feed").
    label: str
    #: Whether a browser (Accept names text/html and no feed type) gets the
    #: HTML preview at this format's URLs instead of the feed's bytes.
    preview: bool = True

    @property
    def extension(self) -> str:
        """The URL and file extension; the name, so URLs and names never drift apart."""
        return self.name

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (once per name)."""
    if fmt.name not in FEED_FORMATS:
        raise ValueError(f"format {fmt.name!r} is not in FormatName {FEED_FORMATS}")
    old = _FORMATS.get(fmt.name)
    if old is not None and old.media_type != fmt.media_type:  # same one again: a reload
        raise ValueError(f"format {fmt.name!r} is registered already as {old.media_type}")
    _FORMATS[fmt.name] = fmt
    return fmt


def _registry() -> dict[str, Format]:
    if len(_FORMATS) < len(FEED_FORMATS):
        from . import render  # noqa: F401  (registers the built-in formats)
    return _FORMATS


def get_format(name: str) -> Format | None:
    """The record of format ``name``; None for a name no format has."""
    return _registry().get(name)


def formats() -> Iterator[Format]:
    """Every registered format, in :data:`FEED_FORMATS` order."""
    registry = _registry()
    return (registry[name] for name in FEED_FORMATS if name in registry)


def content_types() -> dict[str, str]:
    """Format name -> ``Content-Type`` header value."""
    return {fmt.name: fmt.content_type for fmt in formats()}


def media_types() -> dict[str, str]:
    """Format name -> bare media type (``<link type=...>``)."""
    return {fmt.name: fmt.media_type for fmt in formats()}


_MEDIA: tuple[int, frozenset[str]] = (0, frozenset())


def feed_media_types() -> frozenset[str]:
    """Every format's bare media type, one set kept until the registry changes.

    Asked on every feed request (feedsvc.http.wants_preview): the same
    object each time, so it also serves as a cheap, hashable cache key.
    """
    global _MEDIA
    registry = _registry()
    count, types = _MEDIA
    if count != len(registry):
        types = frozenset(fmt.media_type for fmt in registry.values())
        _MEDIA = (len(registry), types)
    return types


def extension_regex() -> str:
    """A regex matching exactly the registered extensions (routes, fast path)."""
    return "(?:" + "|".join(fmt.extension for fmt in formats()) + ")"

