"""The operator's optional topics file: display names and aliases for topics.

A TOML file of one table per topic, keyed by the topic's slug::

    [topics.ukraine]
    name = "Ukraine"
    aliases = ["ukrainian", "kyiv"]

An alias is folded into its topic everywhere (feeds, pages, counts), so
``kyiv`` articles appear in the ``ukraine`` feed and no ``kyiv`` feed exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import read_toml_file
from .errors import ConfigError
from .model import TopicRef
from .text import slugify

SETTING = "FEEDSVC_TOPICS_FILE"


@dataclass(frozen=True, slots=True)
class TopicCatalog:
    """Canonical slugs by alias, and display names by canonical slug."""

    names: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve(self, ref: TopicRef) -> TopicRef:
        """The topic ``ref`` stands for after aliases and display names apply."""
        slug = self.aliases.get(ref.slug, ref.slug)
        name = self.names.get(slug)
        if name is None:
            name = ref.name if slug == ref.slug else slug.replace("-", " ").capitalize()
        if slug == ref.slug and name == ref.name:
            return ref
        return TopicRef(slug=slug, name=name, kind=ref.kind)


def load_topic_catalog(path: Path | None) -> TopicCatalog:
    """Read and check the topics file; no file configured means no overrides."""
    if path is None:
        return TopicCatalog()
    data = read_toml_file(path, SETTING)

    table = data.get("topics", {})
    extra = sorted(set(data) - {"topics"})
    if extra or not isinstance(table, dict):
        raise ConfigError(SETTING, f"{path}: expected only [topics.<slug>] tables, found {extra}")
    names: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for key, spec in table.items():
        slug = slugify(key)
        if not slug or not isinstance(spec, dict):
            raise ConfigError(SETTING, f"{path}: [topics.{key}] must be a table with a usable slug")
        unknown = sorted(set(spec) - {"name", "aliases"})
        if unknown:
            raise ConfigError(SETTING, f"{path}: [topics.{key}] has unknown key(s) {unknown}")
        name = spec.get("name")
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(SETTING, f"{path}: [topics.{key}] name must be non-empty text")
            names[slug] = name.strip()
        alias_list = spec.get("aliases", [])
        if not isinstance(alias_list, list) or not all(isinstance(a, str) for a in alias_list):
            raise ConfigError(SETTING, f"{path}: [topics.{key}] aliases must be a list of text")
        for alias in alias_list:
            alias_slug = slugify(alias)
            if not alias_slug or alias_slug == slug:
                continue
            if aliases.get(alias_slug, slug) != slug:
                raise ConfigError(
                    SETTING, f"{path}: alias {alias!r} is given to both "
                    f"{aliases[alias_slug]!r} and {slug!r}"
                )
            aliases[alias_slug] = slug
    clash = sorted(set(aliases) & {slugify(key) for key in table})
    if clash:
        raise ConfigError(SETTING, f"{path}: {clash} are both topics and aliases of other topics")
    return TopicCatalog(names=names, aliases=aliases)
