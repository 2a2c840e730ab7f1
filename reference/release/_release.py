"""A candidate release on disk: its parts, discovered lazily from the documented layout."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from ..errors import LayoutError
from ._manifest import MANIFEST, read_manifest

__all__ = ["Release", "PARTS", "Part"]


@dataclass(frozen=True)
class Part:
    name: str
    path: str
    required: bool
    what: str


PARTS: Final[dict[str, Part]] = {
    p.name: p
    for p in (
        Part("manifest", MANIFEST, True, "manifest: name, version, date, files with sha256, tokenizer checksum"),
        Part("model", "model", True, "inference checkpoint as a Hugging Face directory"),
        Part("checkpoint", "checkpoint", False, "the Megatron training checkpoint"),
        Part("golden", "golden", False, "the golden eval set"),
        Part("configs", "configs", False, "the config matrix"),
        Part("docker", "docker", False, "the environment (Dockerfile, environment record)"),
        Part("scripts", "scripts", False, "launch scripts"),
        Part("examples", "examples", False, "inference examples"),
    )
}


class Release:
    """A release directory (see docs/release-format.md). Nothing here writes into it.

    Example:
        >>> r = Release(Path("golden/dense"))  # doctest: +SKIP
        >>> r.label                            # doctest: +SKIP
        'VLA-Driver-Tiny-Dense v1.0.0'
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def part(self, name: str) -> Path | None:
        """The path of part ``name`` if it exists, else None."""
        path = self.root / PARTS[name].path
        return path if path.exists() else None

    def require(self, name: str) -> Path:
        """The path of a part, or a LayoutError naming where it should be."""
        path = self.part(name)
        if path is None:
            p = PARTS[name]
            raise LayoutError(f"missing {p.what}", path=self.root / p.path, fix=f"add {p.path} to the release")
        return path

    @cached_property
    def manifest(self) -> dict[str, Any]:
        self.require("manifest")
        return read_manifest(self.root)

    @property
    def name(self) -> str:
        try:
            return str(self.manifest.get("name") or self.root.name)
        except Exception:  # noqa: BLE001 - a broken manifest must not hide the verdict line
            return self.root.name

    @property
    def version(self) -> str:
        try:
            return str(self.manifest.get("version") or "?")
        except Exception:  # noqa: BLE001
            return "?"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def not_a_release(self) -> str | None:
        """What the directory is when it is not a release at all (neither ``release.json`` nor
        ``model/``), else None: a directory that is a release with parts missing is judged part
        by part instead.

        Example:
            >>> Release(Path("golden/dense/model")).not_a_release()  # doctest: +SKIP
            'a Hugging Face model directory (config.json at its top)'
        """
        if self.part("manifest") is not None or self.part("model") is not None:
            return None
        if (self.root / "config.json").is_file():
            return "a Hugging Face model directory (config.json at its top)"
        if (self.root / "latest_checkpointed_iteration.txt").is_file() or any(self.root.glob("iter_*")):
            return "a Megatron checkpoint directory (iter_*/ at its top)"
        return "a directory with no part of a release"
