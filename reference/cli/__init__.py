"""``vla-release``: merge, reshard, inspect; card lint; manifest."""

from ._main import build_parser, main

__all__ = [
    "build_parser",
    "main",
]
