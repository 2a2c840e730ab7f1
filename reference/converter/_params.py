"""Typed, checked access to hyperparameters (Megatron's arguments or a config.json), and the
relations every model's satisfy."""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from ..errors import LayoutError
from ._model import Arch

__all__ = ["Params", "check_relations", "MAX_DIM", "MAX_COUNT"]

# Bounds on hyperparameters read from a release: beyond them no real model lies, and a value
# past them (1e30 experts, say) would make the converter enumerate or allocate without end.
MAX_DIM: Final = 2**31 - 1  # a width, a vocabulary, a context length
MAX_COUNT: Final = 100_000  # layers and experts, which the converter enumerates


class Params:
    """Typed, checked access to hyperparameters: Megatron's arguments (hyphen or underscore
    names) or a config.json. A value of the wrong type, not finite, or out of range is a
    LayoutError naming the file and the key."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        source: Path,
        *,
        noun: str = "argument",
        fix: str | None = None,
        prefix: str = "",
    ) -> None:
        self._raw = {k.replace("-", "_"): v for k, v in raw.items()}
        self.source = source
        self._noun = noun
        self._prefix = prefix  # before each key named in an error: where a nested object sits
        self._fix = fix or "record the training arguments (Megatron writes them as 'args' or arguments.json)"
        self.assumed: list[builtins.str] = []

    def get(self, name: str, default: Any = None) -> Any:
        value = self._raw.get(name, default)
        return default if value is None else value

    def has(self, name: str) -> bool:
        return self._raw.get(name) is not None

    def assume(self, names: tuple[builtins.str, ...], default: Any, meaning: builtins.str) -> None:
        """Note that none of ``names`` (an argument and its older spellings) is recorded, so the
        function is computed with Megatron's ``default`` for it, which ``meaning`` spells out."""
        if not any(self.has(n) for n in names):
            self.assumed.append(
                f"{names[0]} is not recorded: assumed {default!r} (Megatron's default), {meaning}; "
                f"if the run used another value, add {names[0]} to the arguments (arguments.json)"
            )

    @property
    def raw(self) -> Mapping[str, Any]:
        return self._raw

    def _bad(self, name: str, value: Any, expected: str) -> LayoutError:
        key = self._prefix + name
        return LayoutError(f"{self._noun} {key!r} is {value!r}, expected {expected}", path=self.source, key=key)

    def _missing(self, name: str) -> LayoutError:
        key = self._prefix + name
        return LayoutError(f"required {self._noun} {key!r} is missing", path=self.source, key=key, fix=self._fix)

    def int(self, name: str, default: int | None = None, *, minimum: int = 1, maximum: int = MAX_DIM) -> int:
        value = self.get(name, default)
        if value is None:
            raise self._missing(name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or int(value) != value
        ):
            raise self._bad(name, value, "an integer")
        if not minimum <= int(value) <= maximum:
            raise self._bad(name, value, f"an integer from {minimum} to {maximum}")
        return int(value)

    def float(self, name: str, default: float | None, *, positive: bool = False) -> float:
        value = self.get(name, default)
        if value is None:
            raise self._missing(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._bad(name, value, "a finite number")
        if positive and value <= 0:
            raise self._bad(name, value, "a number above 0")
        if value < 0:
            raise self._bad(name, value, "a number of at least 0")
        return float(value)

    def bool(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, value, "true or false")
        return value

    def str(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise self._bad(name, value, "a string")
        return value

    def ints(self, name: builtins.str, *, below: builtins.int) -> list[builtins.int]:
        """A list of integers from 0 to ``below - 1`` (absent: empty)."""
        value = self.get(name, [])
        if not (isinstance(value, list) and all(type(v) is int and 0 <= v < below for v in value)):
            raise self._bad(name, value, f"a list of integers from 0 to {below - 1}")
        return list(value)


def check_relations(arch: Arch, *, source: Path, key: Callable[[str], str]) -> None:
    """What every model's hyperparameters satisfy together; ``key`` names a field's argument
    or config key in the LayoutError.

    Example:
        >>> arch = Arch(num_layers=1, hidden_size=8, ffn_hidden_size=8, num_attention_heads=4,
        ...     num_query_groups=3, kv_channels=2, padded_vocab_size=8)
        >>> try:
        ...     check_relations(arch, source=Path("args"), key=str)
        ... except LayoutError as e:
        ...     print(e)
        4 attention heads do not split into 3 query groups [args:num_query_groups]
    """
    heads, groups = arch.num_attention_heads, arch.num_query_groups
    if heads % groups:
        raise LayoutError(
            f"{heads} attention heads do not split into {groups} query groups", path=source, key=key("num_query_groups")
        )
    if arch.num_experts and not 1 <= arch.moe_router_topk <= arch.num_experts:
        raise LayoutError(
            f"top-{arch.moe_router_topk} routing over {arch.num_experts} experts",
            path=source,
            key=key("moe_router_topk"),
        )
