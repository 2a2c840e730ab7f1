"""Locate a file beside a processor config: a local directory, or a Hub repository through its cache."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from transformers.utils.hub import cached_file

from .._fs import inside
from .errors import CodebookError

__all__ = ["hub_kwargs", "resolve_file", "CodebookLoader"]

# the from_pretrained kwargs that say where and how to fetch files
_HUB_KEYS: Final = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def hub_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``from_pretrained`` kwargs that :func:`resolve_file` needs."""
    return {k: kwargs[k] for k in _HUB_KEYS if k in kwargs and kwargs[k] is not None}


def resolve_file(pretrained: str | os.PathLike[str], filename: str, kwargs: Mapping[str, Any]) -> Path:
    """The local path of ``filename`` in ``pretrained`` (a directory or a Hub id).

    Raises:
        CodebookError: the file is not there.
    """
    if Path(pretrained).is_file():  # from_pretrained("dir/processor_config.json"): look beside it
        pretrained = str(Path(pretrained).parent)
    if Path(pretrained).is_dir():  # a local directory: the codebook is its own file, never one outside it
        local = inside(Path(pretrained), filename)
        if local is None:
            raise CodebookError(
                f"the config names a codebook outside the model directory: {filename!r}",
                path=Path(pretrained),
                fix="ship the codebook in the model directory and name it by its file name",
            )
    try:
        found = cached_file(str(pretrained), filename, _raise_exceptions_for_missing_entries=False, **kwargs)
    except OSError as e:
        raise CodebookError(f"cannot fetch {filename} ({e})", path=str(pretrained), fix="check the path or id") from e
    if found is None:
        raise CodebookError(
            f"{filename} is missing",
            path=Path(pretrained) / filename,
            fix="ship the codebook file beside processor_config.json (save_pretrained writes it)",
        )
    return Path(found)


class CodebookLoader:
    """``from_pretrained`` that also loads the codebook the loaded config names.

    Mixed into the image, video and audio processors; each defines ``_load_codebook_from``.
    """

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        # transformers' signature: (pretrained_model_name_or_path, cache_dir=..., ..., **kwargs)
        loaded = super().from_pretrained(*args, **kwargs)  # type: ignore[misc]
        pretrained = args[0] if args else kwargs["pretrained_model_name_or_path"]
        loaded._load_codebook_from(
            pretrained, {k: v for k, v in kwargs.items() if k != "pretrained_model_name_or_path"}
        )
        return loaded
