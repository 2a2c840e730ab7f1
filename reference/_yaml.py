"""YAML from untrusted files: the safe loader without aliases.

``yaml.safe_load`` constructs no objects, but it expands aliases: nine lines of nested ``*a``
references ("billion laughs") become gigabytes of lists. Release files (card front matter,
configs/*.yaml, docker/environment.yaml) have no use for aliases, so a document that uses one is
refused, with the line, before anything is expanded.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["NoAliasLoader", "safe_load"]


class NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses any alias (``*name``) with a ``ComposerError`` at its line."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in a release file", event.start_mark
            )
        return super().compose_node(parent, index)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` without aliases.

    >>> safe_load("a: 1\\nb: [x, y]")
    {'a': 1, 'b': ['x', 'y']}
    >>> safe_load("a: &x [1]\\nb: *x")
    Traceback (most recent call last):
    ...
    yaml.composer.ComposerError: aliases (*name) are not accepted in a release file
      in "<unicode string>", line 2, column 4:
        b: *x
           ^
    """
    return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - NoAliasLoader is a SafeLoader
